// Package discordtest is a stand-in for Discord in tests: its REST API (bot-token checks,
// rate-limit headers per bucket and the global limit, 429s on demand, channels, messages,
// threads, interaction callbacks and follow-up webhooks, application commands) and its Gateway
// (hello, identify and READY, heartbeats and acks, dispatches, resume, dropped connections),
// shaped the way Discord documents them (discord.com/developers/docs, API v10).
//
// Tests act as Discord's users through it (Say, Click, Command) and read back what the bot
// did (Messages, Calls, Response). It keeps everything in memory and is safe for concurrent
// use.
package discordtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"
)

// Config configures a Server. Zero fields take their defaults.
type Config struct {
	// Token is the bot token the API accepts ("Bot <token>"). Default "test-bot-token".
	Token string
	// AppID is the application's id (also the bot user's). Default: a new snowflake.
	AppID string
	// BotName is the bot user's name. Default "Nightona".
	BotName string
	// HeartbeatInterval is what HELLO asks of clients. Default 41.25 s, as Discord sends.
	HeartbeatInterval time.Duration
	// RouteLimit requests per RouteWindow are allowed per bucket (a route and its top-level
	// resource). Default 5 per 5 s: what Discord allows for posting messages to a channel.
	RouteLimit  int
	RouteWindow time.Duration
	// GlobalLimit requests per second are allowed in all (interaction routes aside).
	// Default 50.
	GlobalLimit int
}

// Snowflake epoch: the first second of 2015, as Discord's ids count from.
const discordEpoch = 1420070400000

// Server is a fake Discord. Create it with New; Close it when done.
type Server struct {
	cfg  Config
	http *httptest.Server
	bot  User

	mu       sync.Mutex
	changed  chan struct{} // closed and replaced whenever anything changes
	lastID   int64
	users    map[string]User
	guilds   map[string]*guild
	channels map[string]*Channel
	messages map[string][]*Message // by channel, oldest first
	calls    []Call
	commands []json.RawMessage
	ix       map[string]*Interaction // by id
	ixTokens map[string]*Interaction // by token
	limits   *limits
	gw       *gateway
}

type guild struct {
	ID   string
	Name string
}

// User is a Discord user.
type User struct {
	ID            string `json:"id"`
	Username      string `json:"username"`
	GlobalName    string `json:"global_name,omitempty"`
	Discriminator string `json:"discriminator"`
	Bot           bool   `json:"bot,omitempty"`
}

// Channel types (Discord's numbers).
const (
	ChannelText          = 0
	ChannelDM            = 1
	ChannelPublicThread  = 11
	ChannelPrivateThread = 12
)

// Channel is a guild text channel, a thread or a DM.
type Channel struct {
	ID             string          `json:"id"`
	Type           int             `json:"type"`
	GuildID        string          `json:"guild_id,omitempty"`
	ParentID       string          `json:"parent_id,omitempty"`
	Name           string          `json:"name,omitempty"`
	OwnerID        string          `json:"owner_id,omitempty"`
	Recipients     []User          `json:"recipients,omitempty"`
	ThreadMetadata *ThreadMetadata `json:"thread_metadata,omitempty"`
	MessageCount   int             `json:"message_count,omitempty"`
	// AutoArchive is what the thread was created with (minutes).
	AutoArchive int `json:"-"`
}

// ThreadMetadata is a thread's archive settings.
type ThreadMetadata struct {
	Archived            bool   `json:"archived"`
	AutoArchiveDuration int    `json:"auto_archive_duration"`
	ArchiveTimestamp    string `json:"archive_timestamp"`
	Locked              bool   `json:"locked"`
}

// Message is a message as the fake keeps it: its current state, and how it got there.
type Message struct {
	ID               string      `json:"id"`
	ChannelID        string      `json:"channel_id"`
	GuildID          string      `json:"guild_id,omitempty"`
	Author           User        `json:"author"`
	Content          string      `json:"content"`
	Timestamp        string      `json:"timestamp"`
	EditedTimestamp  *string     `json:"edited_timestamp"`
	Mentions         []User      `json:"mentions"`
	MentionRoles     []string    `json:"mention_roles"`
	Attachments      []any       `json:"attachments"`
	Embeds           []Embed     `json:"embeds"`
	Components       []Component `json:"components"`
	Type             int         `json:"type"`
	Flags            int         `json:"flags,omitempty"`
	MessageReference *MessageRef `json:"message_reference,omitempty"`
	Thread           *Channel    `json:"thread,omitempty"`
	// AllowedMentions is what the last write asked for (raw), nil when it said nothing.
	AllowedMentions json.RawMessage `json:"-"`
	// Edits counts the edits the message had; Versions holds its content after each write,
	// the first post included.
	Edits    int      `json:"-"`
	Versions []string `json:"-"`
	// Deleted is set when the message was deleted (it stays here for tests to see).
	Deleted bool `json:"-"`
	// Ephemeral marks an interaction's reply only its user sees.
	Ephemeral bool `json:"-"`

	nonce   string
	created time.Time
}

// MessageRef is a reply's reference to the message it answers.
type MessageRef struct {
	MessageID       string `json:"message_id,omitempty"`
	ChannelID       string `json:"channel_id,omitempty"`
	GuildID         string `json:"guild_id,omitempty"`
	FailIfNotExists *bool  `json:"fail_if_not_exists,omitempty"`
}

// Embed is a rich embed.
type Embed struct {
	Title       string       `json:"title,omitempty"`
	Description string       `json:"description,omitempty"`
	URL         string       `json:"url,omitempty"`
	Color       int          `json:"color,omitempty"`
	Fields      []EmbedField `json:"fields,omitempty"`
	Footer      *struct {
		Text string `json:"text"`
	} `json:"footer,omitempty"`
	Timestamp string `json:"timestamp,omitempty"`
}

// EmbedField is a field of an embed.
type EmbedField struct {
	Name   string `json:"name"`
	Value  string `json:"value"`
	Inline bool   `json:"inline,omitempty"`
}

// Component types and button styles (Discord's numbers).
const (
	ComponentActionRow = 1
	ComponentButton    = 2
	ButtonPrimary      = 1
	ButtonSecondary    = 2
	ButtonSuccess      = 3
	ButtonDanger       = 4
	ButtonLink         = 5
)

// Component is an action row or a button.
type Component struct {
	Type       int         `json:"type"`
	Style      int         `json:"style,omitempty"`
	Label      string      `json:"label,omitempty"`
	CustomID   string      `json:"custom_id,omitempty"`
	URL        string      `json:"url,omitempty"`
	Disabled   bool        `json:"disabled,omitempty"`
	Emoji      *Emoji      `json:"emoji,omitempty"`
	Components []Component `json:"components,omitempty"`
}

// Emoji is a button's emoji.
type Emoji struct {
	Name string `json:"name,omitempty"`
	ID   string `json:"id,omitempty"`
}

// Buttons lists the message's buttons, row by row.
func (m *Message) Buttons() []Component {
	var out []Component
	for _, row := range m.Components {
		out = append(out, row.Components...)
	}
	return out
}

// Button returns the message's button with this custom id, or with this label for link
// buttons, or nil.
func (m *Message) Button(idOrLabel string) *Component {
	for _, b := range m.Buttons() {
		if b.CustomID == idOrLabel || (b.CustomID == "" && b.Label == idOrLabel) {
			return &b
		}
	}
	return nil
}

// ButtonLabeled returns the message's first button with this label, or nil.
func (m *Message) ButtonLabeled(label string) *Component {
	for _, b := range m.Buttons() {
		if b.Label == label {
			return &b
		}
	}
	return nil
}

// Call is one REST request the fake answered.
type Call struct {
	At     time.Time
	Method string
	// Path is the request's path below /api/v{n} ("/channels/1/messages").
	Path string
	// Route is the path with ids replaced ("/channels/{id}/messages"), top-level resource
	// kept in Major.
	Route  string
	Major  string
	Status int
	Body   []byte
	// Early is set for a request made while a 429 it was told about still held its bucket:
	// the client did not obey retry_after.
	Early bool
}

// New starts a fake Discord on a loopback port.
func New(cfg Config) *Server {
	if cfg.Token == "" {
		cfg.Token = "test-bot-token"
	}
	if cfg.BotName == "" {
		cfg.BotName = "Nightona"
	}
	if cfg.HeartbeatInterval <= 0 {
		cfg.HeartbeatInterval = 41250 * time.Millisecond
	}
	if cfg.RouteLimit <= 0 {
		cfg.RouteLimit = 5
	}
	if cfg.RouteWindow <= 0 {
		cfg.RouteWindow = 5 * time.Second
	}
	if cfg.GlobalLimit <= 0 {
		cfg.GlobalLimit = 50
	}
	s := &Server{
		cfg: cfg, changed: make(chan struct{}),
		users: map[string]User{}, guilds: map[string]*guild{}, channels: map[string]*Channel{},
		messages: map[string][]*Message{}, ix: map[string]*Interaction{}, ixTokens: map[string]*Interaction{},
	}
	s.limits = newLimits(cfg)
	if cfg.AppID == "" {
		s.cfg.AppID = s.newID()
	}
	s.bot = User{ID: s.cfg.AppID, Username: cfg.BotName, Discriminator: "0", Bot: true}
	s.users[s.bot.ID] = s.bot
	s.gw = newGateway(s)
	s.http = httptest.NewServer(s.routes())
	return s
}

// Close stops the server and drops every Gateway connection.
func (s *Server) Close() {
	s.gw.close()
	s.http.CloseClientConnections()
	s.http.Close()
}

// URL is the server's base URL (http://127.0.0.1:port).
func (s *Server) URL() string { return s.http.URL }

// APIURL is the REST API's base, as DISCORD_API_URL takes it.
func (s *Server) APIURL() string { return s.http.URL + "/api/v10" }

// Token is the bot token the fake accepts.
func (s *Server) Token() string { return s.cfg.Token }

// AppID is the application's id.
func (s *Server) AppID() string { return s.cfg.AppID }

// Bot is the bot's user.
func (s *Server) Bot() User { return s.bot }

// Client returns an HTTP client whose transport sends what is addressed to discord.com (the
// REST API) to this server instead: a bot given it talks to the fake without knowing.
func (s *Server) Client() *http.Client {
	return &http.Client{Transport: &rewrite{to: s.http.URL, base: http.DefaultTransport}, Timeout: 30 * time.Second}
}

type rewrite struct {
	to   string
	base http.RoundTripper
}

func (r *rewrite) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Host == "discord.com" || strings.HasSuffix(req.URL.Host, ".discord.com") {
		u, _ := url.Parse(r.to)
		req = req.Clone(req.Context())
		req.URL.Scheme, req.URL.Host = u.Scheme, u.Host
		req.Host = u.Host
	}
	return r.base.RoundTrip(req)
}

// newID returns a new snowflake: milliseconds since Discord's epoch and a counter, so ids
// grow with time as Discord's do.
func (s *Server) newID() string {
	id := (time.Now().UnixMilli() - discordEpoch) << 22
	if id <= s.lastID {
		id = s.lastID + 1
	}
	s.lastID = id
	return fmt.Sprint(id)
}

func randomToken() string {
	var b [24]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// notify wakes whoever waits for a change. Call with s.mu held.
func (s *Server) notify() {
	close(s.changed)
	s.changed = make(chan struct{})
}

// WaitFor waits until cond (called with the fake's lock released) holds, or ctx ends.
func (s *Server) WaitFor(ctx context.Context, cond func() bool) error {
	for {
		s.mu.Lock()
		ch := s.changed
		s.mu.Unlock()
		if cond() {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-ch:
		case <-time.After(50 * time.Millisecond): // conditions on time (a hold running out)
		}
	}
}

// AddUser adds a user who can speak in the fake's channels.
func (s *Server) AddUser(name string) User {
	s.mu.Lock()
	defer s.mu.Unlock()
	u := User{ID: s.newID(), Username: name, GlobalName: strings.ToUpper(name[:1]) + name[1:], Discriminator: "0"}
	s.users[u.ID] = u
	return u
}

// AddGuild adds a guild the bot is in, with one text channel, and returns both.
func (s *Server) AddGuild(name, channel string) (guildID string, ch Channel) {
	s.mu.Lock()
	g := &guild{ID: s.newID(), Name: name}
	s.guilds[g.ID] = g
	s.mu.Unlock()
	return g.ID, s.AddChannel(g.ID, channel)
}

// AddChannel adds a text channel to a guild.
func (s *Server) AddChannel(guildID, name string) Channel {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := &Channel{ID: s.newID(), Type: ChannelText, GuildID: guildID, Name: name}
	s.channels[c.ID] = c
	s.notify()
	return *c
}

// DM returns the DM channel between the bot and a user, creating it.
func (s *Server) DM(userID string) Channel {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range s.channels {
		if c.Type == ChannelDM && len(c.Recipients) == 1 && c.Recipients[0].ID == userID {
			return *c
		}
	}
	c := &Channel{ID: s.newID(), Type: ChannelDM, Recipients: []User{s.users[userID]}}
	s.channels[c.ID] = c
	return *c
}

// Channel returns a channel or thread by id.
func (s *Server) Channel(id string) (Channel, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.channels[id]
	if !ok {
		return Channel{}, false
	}
	return *c, true
}

// Threads returns the threads of a channel, oldest first.
func (s *Server) Threads(parentID string) []Channel {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Channel
	for _, c := range s.channels {
		if c.ParentID == parentID && (c.Type == ChannelPublicThread || c.Type == ChannelPrivateThread) {
			out = append(out, *c)
		}
	}
	slices.SortFunc(out, func(a, b Channel) int { return compareIDs(a.ID, b.ID) })
	return out
}

func compareIDs(a, b string) int {
	if len(a) != len(b) {
		return len(a) - len(b)
	}
	return strings.Compare(a, b)
}

// Messages returns the messages of a channel that are not deleted, oldest first (copies).
func (s *Server) Messages(channelID string) []Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Message
	for _, m := range s.messages[channelID] {
		if !m.Deleted {
			out = append(out, copyMessage(m))
		}
	}
	return out
}

// BotMessages returns the bot's messages in a channel, oldest first.
func (s *Server) BotMessages(channelID string) []Message {
	var out []Message
	for _, m := range s.Messages(channelID) {
		if m.Author.ID == s.bot.ID {
			out = append(out, m)
		}
	}
	return out
}

// Message returns one message by id (deleted ones too).
func (s *Server) Message(channelID, id string) (Message, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if m := s.findMessage(channelID, id); m != nil {
		return copyMessage(m), true
	}
	return Message{}, false
}

func (s *Server) findMessage(channelID, id string) *Message {
	for _, m := range s.messages[channelID] {
		if m.ID == id {
			return m
		}
	}
	return nil
}

func copyMessage(m *Message) Message {
	c := *m
	c.Embeds = slices.Clone(m.Embeds)
	c.Components = slices.Clone(m.Components)
	c.Versions = slices.Clone(m.Versions)
	c.Mentions = slices.Clone(m.Mentions)
	return c
}

// Calls returns the REST requests answered so far.
func (s *Server) Calls() []Call {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.calls)
}

// Commands returns the application commands last registered (bulk overwrite).
func (s *Server) Commands() []json.RawMessage {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.commands)
}

// Say posts a message as a user, the way the Discord client would, and dispatches
// MESSAGE_CREATE over the Gateway. Mentions written as <@id> are resolved.
func (s *Server) Say(channelID, userID, content string) Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	ch := s.channels[channelID]
	if ch == nil {
		panic("discordtest: no channel " + channelID)
	}
	m := &Message{
		ID: s.newID(), ChannelID: channelID, GuildID: ch.GuildID, Author: s.users[userID], Content: content,
		Timestamp: time.Now().UTC().Format(time.RFC3339Nano), Mentions: s.mentions(content),
		MentionRoles: []string{}, Attachments: []any{}, Embeds: []Embed{}, Components: []Component{},
		Versions: []string{content},
	}
	s.messages[channelID] = append(s.messages[channelID], m)
	ch.MessageCount++
	s.gw.dispatchMessage("MESSAGE_CREATE", m)
	s.notify()
	return copyMessage(m)
}

// mentions resolves the <@id> and <@!id> mentions of a text.
func (s *Server) mentions(content string) []User {
	out := []User{}
	for rest := content; ; {
		i := strings.Index(rest, "<@")
		if i < 0 {
			return out
		}
		rest = rest[i+2:]
		rest = strings.TrimPrefix(rest, "!")
		j := strings.IndexByte(rest, '>')
		if j < 0 {
			return out
		}
		if u, ok := s.users[rest[:j]]; ok && !slices.ContainsFunc(out, func(x User) bool { return x.ID == u.ID }) {
			out = append(out, u)
		}
		rest = rest[j:]
	}
}

// DeleteThread deletes a thread as a moderator would, dispatching THREAD_DELETE.
func (s *Server) DeleteThread(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ch := s.channels[id]
	if ch == nil {
		return
	}
	delete(s.channels, id)
	s.gw.dispatch("THREAD_DELETE", map[string]any{"id": ch.ID, "guild_id": ch.GuildID, "parent_id": ch.ParentID, "type": ch.Type})
	s.notify()
}
