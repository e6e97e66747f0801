package discordtest

import (
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"strconv"
	"time"
)

// Interaction types and callback types (Discord's numbers).
const (
	InteractionPing      = 1
	InteractionCommand   = 2
	InteractionComponent = 3

	CallbackPong           = 1
	CallbackMessage        = 4
	CallbackDeferred       = 5
	CallbackDeferredUpdate = 6
	CallbackUpdate         = 7
)

// How long Discord waits for an interaction's first answer, and how long its token lasts.
const (
	answerWindow = 3 * time.Second
	tokenLife    = 15 * time.Minute
)

// Interaction is one interaction a user made, and what the bot answered.
type Interaction struct {
	ID, Token string
	Type      int
	ChannelID string
	GuildID   string
	User      User
	// Message is the message a clicked button is on.
	Message *Message
	Data    json.RawMessage
	Created time.Time
	// Response is the first answer (the callback), nil until the bot gives it.
	Response *Response
	// Replies are the messages only the user sees (ephemeral answers and follow-ups), and
	// Followups the ids of public follow-ups, in order.
	Replies   []Message
	Followups []string
	// original is the message @original names: the reply, or the clicked message.
	original string
	channel  *Channel
	appID    string
}

// Response is an interaction callback.
type Response struct {
	Type int
	Data struct {
		Content    string      `json:"content"`
		Flags      int         `json:"flags"`
		Embeds     []Embed     `json:"embeds"`
		Components []Component `json:"components"`
	}
	At time.Time
	// Late is set when it came after Discord's three seconds.
	Late bool
}

// Ephemeral reports whether the answer is for the user's eyes only.
func (r *Response) Ephemeral() bool { return r.Data.Flags&flagEphemeral != 0 }

// JSON is the interaction as Discord sends it: the body of an HTTP interaction, or the data
// of INTERACTION_CREATE.
func (ix *Interaction) JSON() []byte {
	out := map[string]any{
		"id": ix.ID, "application_id": ix.appID, "type": ix.Type, "token": ix.Token, "version": 1,
		"channel_id": ix.ChannelID, "locale": "en-US", "entitlements": []any{}, "app_permissions": "562949953421311",
	}
	if ix.Data != nil {
		out["data"] = ix.Data
	}
	if ix.channel != nil {
		out["channel"] = map[string]any{"id": ix.channel.ID, "type": ix.channel.Type, "guild_id": ix.channel.GuildID,
			"parent_id": ix.channel.ParentID, "name": ix.channel.Name}
	}
	if ix.GuildID != "" {
		out["guild_id"] = ix.GuildID
		out["guild_locale"] = "en-US"
		out["context"] = 0
		out["member"] = map[string]any{"user": ix.User, "roles": []string{}, "permissions": "2248473465835073",
			"joined_at": ix.Created.UTC().Format(time.RFC3339), "deaf": false, "mute": false}
	} else if ix.Type != InteractionPing {
		out["context"] = 1
		out["user"] = ix.User
	}
	if ix.Message != nil {
		out["message"] = ix.Message
	}
	return mustJSON(out)
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

func (s *Server) newInteraction(typ int, userID, channelID string) *Interaction {
	ix := &Interaction{ID: s.newID(), Token: "aW50ZXJhY3Rpb246" + randomToken(), Type: typ, ChannelID: channelID,
		User: s.users[userID], Created: time.Now(), appID: s.cfg.AppID}
	if ch := s.channels[channelID]; ch != nil {
		ix.GuildID = ch.GuildID
		c := *ch
		ix.channel = &c
	}
	s.ix[ix.ID] = ix
	s.ixTokens[ix.Token] = ix
	return ix
}

// NewPing makes the PING Discord sends to check an interactions endpoint.
func (s *Server) NewPing() *Interaction {
	s.mu.Lock()
	defer s.mu.Unlock()
	ix := &Interaction{ID: s.newID(), Token: randomToken(), Type: InteractionPing, Created: time.Now(), appID: s.cfg.AppID}
	return ix
}

// NewClick makes (without sending) a user's click on a button of a message.
func (s *Server) NewClick(userID string, m Message, customID string) *Interaction {
	s.mu.Lock()
	defer s.mu.Unlock()
	ix := s.newInteraction(InteractionComponent, userID, m.ChannelID)
	cur := s.findMessage(m.ChannelID, m.ID)
	if cur != nil {
		c := copyMessage(cur)
		ix.Message = &c
	} else {
		ix.Message = &m
	}
	ix.original = m.ID
	ix.Data = mustJSON(map[string]any{"custom_id": customID, "component_type": ComponentButton})
	return ix
}

// NewCommand makes (without sending) a user's /name sub command with string options.
func (s *Server) NewCommand(userID, channelID, name, sub string, options map[string]string) *Interaction {
	s.mu.Lock()
	defer s.mu.Unlock()
	ix := s.newInteraction(InteractionCommand, userID, channelID)
	var subOpts []map[string]any
	keys := make([]string, 0, len(options))
	for k := range options {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		subOpts = append(subOpts, map[string]any{"name": k, "type": 3, "value": options[k]})
	}
	id := ""
	for _, raw := range s.commands {
		var c struct{ ID, Name string }
		_ = json.Unmarshal(raw, &c)
		if c.Name == name {
			id = c.ID
		}
	}
	ix.Data = mustJSON(map[string]any{"id": id, "name": name, "type": 1,
		"options": []any{map[string]any{"name": sub, "type": 1, "options": subOpts}}})
	return ix
}

// Send dispatches an interaction over the Gateway (INTERACTION_CREATE), as Discord does
// for apps without an interactions endpoint URL.
func (s *Server) Send(ix *Interaction) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ix.Created = time.Now()
	s.gw.dispatch("INTERACTION_CREATE", json.RawMessage(ix.JSON()))
	s.notify()
}

// Click is NewClick and Send.
func (s *Server) Click(userID string, m Message, customID string) *Interaction {
	ix := s.NewClick(userID, m, customID)
	s.Send(ix)
	return ix
}

// Command is NewCommand and Send.
func (s *Server) Command(userID, channelID, name, sub string, options map[string]string) *Interaction {
	ix := s.NewCommand(userID, channelID, name, sub, options)
	s.Send(ix)
	return ix
}

// Interaction returns the current state of an interaction.
func (s *Server) Interaction(id string) Interaction {
	s.mu.Lock()
	defer s.mu.Unlock()
	ix := s.ix[id]
	if ix == nil {
		return Interaction{}
	}
	c := *ix
	c.Replies = slices.Clone(ix.Replies)
	if ix.Response != nil {
		r := *ix.Response
		c.Response = &r
	}
	return c
}

// WaitResponse waits for the bot's first answer to an interaction.
func (s *Server) WaitResponse(ctx context.Context, id string) (*Response, error) {
	var r *Response
	err := s.WaitFor(ctx, func() bool {
		r = s.Interaction(id).Response
		return r != nil
	})
	if err != nil {
		return nil, errors.New("discordtest: no answer to interaction " + id)
	}
	return r, nil
}

// Sign signs an HTTP interaction the way Discord does: Ed25519 over the timestamp and body.
// It returns the X-Signature-Ed25519 and X-Signature-Timestamp headers' values.
func Sign(key ed25519.PrivateKey, at time.Time, body []byte) (signature, timestamp string) {
	timestamp = strconv.FormatInt(at.Unix(), 10)
	return hex.EncodeToString(ed25519.Sign(key, append([]byte(timestamp), body...))), timestamp
}

// Answered records the answer a bot gave an HTTP interaction in its HTTP response, so that
// follow-ups and @original work as they do for callbacks.
func (s *Server) Answered(id string, body []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	ix := s.ix[id]
	if ix == nil {
		return errors.New("discordtest: unknown interaction " + id)
	}
	if err := s.respond(ix, body); err != nil {
		return errors.New(err.Message)
	}
	return nil
}

func (s *Server) callback(r *http.Request, c *Call) (int, any, *apiError) {
	ix := s.ix[r.PathValue("id")]
	if ix == nil || ix.Token != r.PathValue("token") {
		return 0, nil, errUnknownIx
	}
	if err := s.respond(ix, c.Body); err != nil {
		return 0, nil, err
	}
	return http.StatusNoContent, nil, nil
}

// respond applies an interaction's first answer. Call with s.mu held.
func (s *Server) respond(ix *Interaction, body []byte) *apiError {
	if ix.Response != nil {
		return errAcknowledged
	}
	now := time.Now()
	if now.Sub(ix.Created) > answerWindow+time.Second { // a second of grace for slow test machines
		return errUnknownIx
	}
	var resp Response
	var raw struct {
		Type int             `json:"type"`
		Data json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal(body, &raw); err != nil {
		return errorOf(http.StatusBadRequest, 50109, "The request body contains invalid JSON.")
	}
	resp.Type, resp.At = raw.Type, now
	resp.Late = now.Sub(ix.Created) > answerWindow
	if raw.Data != nil {
		if err := json.Unmarshal(raw.Data, &resp.Data); err != nil {
			return errorOf(http.StatusBadRequest, 50109, "The request body contains invalid JSON.")
		}
	}
	ch := s.channels[ix.ChannelID]
	switch resp.Type {
	case CallbackMessage, CallbackDeferred:
		if ch == nil {
			return errUnknownChannel
		}
		m := s.newBotMessage(ch)
		if raw.Data != nil {
			b, err := decodeMessage(raw.Data)
			if err != nil {
				return err
			}
			b.apply(m)
		}
		if resp.Type == CallbackDeferred {
			m.Flags |= flagLoading
		}
		if err := validate(m); err != nil {
			return err
		}
		ix.original = m.ID
		if resp.Data.Flags&flagEphemeral != 0 {
			m.Ephemeral = true
			m.Versions = append(m.Versions, m.Content)
			ix.Replies = append(ix.Replies, *m)
		} else {
			s.addMessage(ch, m)
		}
	case CallbackDeferredUpdate:
		if ix.Type != InteractionComponent {
			return errorOf(http.StatusBadRequest, 40004, "Interaction callback type 6 is only for components.")
		}
	case CallbackUpdate:
		if ix.Type != InteractionComponent {
			return errorOf(http.StatusBadRequest, 40004, "Interaction callback type 7 is only for components.")
		}
		if m := s.findMessage(ix.ChannelID, ix.original); m != nil {
			if _, _, err := s.edit(m, raw.Data); err != nil {
				return err
			}
			break
		}
		// A button on an ephemeral message: that copy is the one to update.
		m := s.findEphemeral(ix.original)
		if m == nil {
			return errUnknownMessage
		}
		b, err := decodeMessage(raw.Data)
		if err != nil {
			return err
		}
		b.apply(m)
		m.Edits++
		m.Versions = append(m.Versions, m.Content)
	case CallbackPong:
		if ix.Type != InteractionPing {
			return errorOf(http.StatusBadRequest, 40004, "PONG answers PING only.")
		}
	default:
		return invalidForm("type", "BASE_TYPE_CHOICES", "Value must be one of {1, 4, 5, 6, 7, 8, 9, 10, 12}.")
	}
	ix.Response = &resp
	return nil
}

// findEphemeral finds an ephemeral reply by id. Call with s.mu held.
func (s *Server) findEphemeral(id string) *Message {
	for _, ix := range s.ix {
		for i := range ix.Replies {
			if ix.Replies[i].ID == id {
				return &ix.Replies[i]
			}
		}
	}
	return nil
}

// webhookIx finds the interaction a webhook route's token names.
func (s *Server) webhookIx(r *http.Request) (*Interaction, *apiError) {
	ix := s.ixTokens[r.PathValue("token")]
	if ix == nil || r.PathValue("app") != s.cfg.AppID || time.Since(ix.Created) > tokenLife {
		return nil, errUnknownWebhook
	}
	if ix.Response == nil {
		return nil, errUnknownWebhook // nothing to follow up before the first answer
	}
	return ix, nil
}

// originalMessage returns @original: the public message, or the user's own copy.
func (s *Server) originalMessage(ix *Interaction) *Message {
	for i := range ix.Replies {
		if ix.Replies[i].ID == ix.original {
			return &ix.Replies[i]
		}
	}
	if ix.original == "" {
		return nil
	}
	return s.findMessage(ix.ChannelID, ix.original)
}

func (s *Server) getOriginal(r *http.Request, c *Call) (int, any, *apiError) {
	ix, err := s.webhookIx(r)
	if err != nil {
		return 0, nil, err
	}
	m := s.originalMessage(ix)
	if m == nil {
		return 0, nil, errUnknownMessage
	}
	return http.StatusOK, m, nil
}

func (s *Server) patchOriginal(r *http.Request, c *Call) (int, any, *apiError) {
	ix, err := s.webhookIx(r)
	if err != nil {
		return 0, nil, err
	}
	m := s.originalMessage(ix)
	if m == nil {
		return 0, nil, errUnknownMessage
	}
	if m.Ephemeral {
		b, err := decodeMessage(c.Body)
		if err != nil {
			return 0, nil, err
		}
		next := copyMessage(m)
		b.apply(&next)
		next.Flags &^= flagLoading
		if err := validate(&next); err != nil {
			return 0, nil, err
		}
		next.Edits++
		next.Versions = append(next.Versions, next.Content)
		*m = next
		return http.StatusOK, m, nil
	}
	return s.edit(m, c.Body)
}

func (s *Server) followup(r *http.Request, c *Call) (int, any, *apiError) {
	ix, err := s.webhookIx(r)
	if err != nil {
		return 0, nil, err
	}
	ch := s.channels[ix.ChannelID]
	if ch == nil {
		return 0, nil, errUnknownChannel
	}
	b, err := decodeMessage(c.Body)
	if err != nil {
		return 0, nil, err
	}
	m := s.newBotMessage(ch)
	b.apply(m)
	if err := validate(m); err != nil {
		return 0, nil, err
	}
	if b.Flags != nil && *b.Flags&flagEphemeral != 0 {
		m.Ephemeral = true
		m.Versions = append(m.Versions, m.Content)
		ix.Replies = append(ix.Replies, *m)
	} else {
		s.addMessage(ch, m)
		ix.Followups = append(ix.Followups, m.ID)
	}
	return http.StatusOK, m, nil
}

func (s *Server) patchFollowup(r *http.Request, c *Call) (int, any, *apiError) {
	ix, err := s.webhookIx(r)
	if err != nil {
		return 0, nil, err
	}
	for i := range ix.Replies {
		if ix.Replies[i].ID == r.PathValue("message") {
			b, err := decodeMessage(c.Body)
			if err != nil {
				return 0, nil, err
			}
			b.apply(&ix.Replies[i])
			return http.StatusOK, ix.Replies[i], nil
		}
	}
	m := s.findMessage(ix.ChannelID, r.PathValue("message"))
	if m == nil {
		return 0, nil, errUnknownMessage
	}
	return s.edit(m, c.Body)
}
