package discordtest

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"time"
	"unicode/utf8"
)

// apiError is Discord's JSON error body.
type apiError struct {
	status  int
	Code    int            `json:"code"`
	Message string         `json:"message"`
	Errors  map[string]any `json:"errors,omitempty"`
}

func errorOf(status, code int, msg string) *apiError {
	return &apiError{status: status, Code: code, Message: msg}
}

// invalidForm is Discord's 50035 answer, naming the field and the rule it broke.
func invalidForm(field, code, msg string) *apiError {
	e := errorOf(http.StatusBadRequest, 50035, "Invalid Form Body")
	e.Errors = map[string]any{field: map[string]any{"_errors": []any{map[string]string{"code": code, "message": msg}}}}
	return e
}

var (
	errUnauthorized   = errorOf(http.StatusUnauthorized, 0, "401: Unauthorized")
	errUnknownChannel = errorOf(http.StatusNotFound, 10003, "Unknown Channel")
	errUnknownMessage = errorOf(http.StatusNotFound, 10008, "Unknown Message")
	errUnknownIx      = errorOf(http.StatusNotFound, 10062, "Unknown interaction")
	errUnknownWebhook = errorOf(http.StatusNotFound, 10015, "Unknown Webhook")
	errAcknowledged   = errorOf(http.StatusBadRequest, 40060, "Interaction has already been acknowledged.")
	errEmptyMessage   = errorOf(http.StatusBadRequest, 50006, "Cannot send an empty message")
	errNotAuthor      = errorOf(http.StatusForbidden, 50005, "Cannot edit a message authored by another user")
	errChannelType    = errorOf(http.StatusBadRequest, 50024, "Cannot execute action on this channel type")
	errThreadExists   = errorOf(http.StatusBadRequest, 160004, "A thread has already been created for this message")
)

// handler answers one API request with the server's lock held: a status and a body to encode
// (nil for none), or an error.
type handler func(r *http.Request, c *Call) (int, any, *apiError)

func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	api := func(pattern string, auth bool, h handler) {
		method, path, _ := strings.Cut(pattern, " ")
		mux.HandleFunc(method+" /api/{version}"+path, s.serve(auth, h))
	}
	api("GET /gateway", false, s.getGateway)
	api("GET /gateway/bot", true, s.getGateway)
	api("GET /users/@me", true, s.getMe)
	api("GET /channels/{channel}", true, s.getChannel)
	api("POST /channels/{channel}/messages", true, s.postMessage)
	api("GET /channels/{channel}/messages/{message}", true, s.getMessage)
	api("PATCH /channels/{channel}/messages/{message}", true, s.patchMessage)
	api("DELETE /channels/{channel}/messages/{message}", true, s.deleteMessage)
	api("POST /channels/{channel}/messages/{message}/threads", true, s.startThread)
	api("POST /channels/{channel}/typing", true, s.typing)
	api("PUT /channels/{channel}/messages/{message}/reactions/{emoji}/@me", true, s.react)
	api("POST /interactions/{id}/{token}/callback", false, s.callback)
	api("GET /webhooks/{app}/{token}/messages/@original", false, s.getOriginal)
	api("PATCH /webhooks/{app}/{token}/messages/@original", false, s.patchOriginal)
	api("POST /webhooks/{app}/{token}", false, s.followup)
	api("PATCH /webhooks/{app}/{token}/messages/{message}", false, s.patchFollowup)
	api("PUT /applications/{app}/commands", true, s.putCommands)
	api("GET /applications/{app}/commands", true, s.getCommands)
	mux.HandleFunc("GET /gateway", s.gw.serve(false))
	mux.HandleFunc("GET /gateway/resume", s.gw.serve(true))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusNotFound, errorOf(http.StatusNotFound, 0, "404: Not Found"))
	})
	return mux
}

func (s *Server) serve(auth bool, h handler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(io.LimitReader(r.Body, 10<<20))
		r.Body = io.NopCloser(bytes.NewReader(body))
		path := strings.TrimPrefix(r.URL.Path, "/api/"+r.PathValue("version"))
		route, major := template(path)
		c := &Call{At: time.Now(), Method: r.Method, Path: path, Route: route, Major: major, Body: body}

		s.mu.Lock()
		defer func() {
			s.calls = append(s.calls, *c)
			s.notify()
			s.mu.Unlock()
		}()
		if auth && r.Header.Get("Authorization") != "Bot "+s.cfg.Token {
			c.Status = http.StatusUnauthorized
			writeJSON(w, c.Status, errUnauthorized)
			return
		}
		if !s.limits.limit(w, c) {
			return
		}
		status, out, err := h(r, c)
		if err != nil {
			c.Status = err.status
			writeJSON(w, err.status, err)
			return
		}
		c.Status = status
		if out == nil {
			w.WriteHeader(status)
			return
		}
		writeJSON(w, status, out)
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func (s *Server) getGateway(r *http.Request, c *Call) (int, any, *apiError) {
	url := "ws" + strings.TrimPrefix(s.http.URL, "http") + "/gateway"
	if strings.HasSuffix(c.Path, "/bot") {
		return http.StatusOK, map[string]any{"url": url, "shards": 1, "session_start_limit": map[string]int{
			"total": 1000, "remaining": 999, "reset_after": 14400000, "max_concurrency": 1}}, nil
	}
	return http.StatusOK, map[string]string{"url": url}, nil
}

func (s *Server) getMe(r *http.Request, c *Call) (int, any, *apiError) {
	return http.StatusOK, s.bot, nil
}

func (s *Server) getChannel(r *http.Request, c *Call) (int, any, *apiError) {
	ch := s.channels[r.PathValue("channel")]
	if ch == nil {
		return 0, nil, errUnknownChannel
	}
	return http.StatusOK, ch, nil
}

// messageBody is what a message create or edit may carry.
type messageBody struct {
	Content          *string          `json:"content"`
	Embeds           *[]Embed         `json:"embeds"`
	Components       *[]Component     `json:"components"`
	AllowedMentions  json.RawMessage  `json:"allowed_mentions"`
	MessageReference *MessageRef      `json:"message_reference"`
	Flags            *int             `json:"flags"`
	Attachments      *json.RawMessage `json:"attachments"`
	Nonce            json.RawMessage  `json:"nonce"`
	EnforceNonce     bool             `json:"enforce_nonce"`
}

func decodeMessage(body []byte) (*messageBody, *apiError) {
	var b messageBody
	if len(body) == 0 {
		return &b, nil
	}
	if err := json.Unmarshal(body, &b); err != nil {
		return nil, errorOf(http.StatusBadRequest, 50109, "The request body contains invalid JSON.")
	}
	return &b, nil
}

// apply writes a create or edit into m: only the fields the body has change.
func (b *messageBody) apply(m *Message) {
	if b.Content != nil {
		m.Content = *b.Content
	}
	if b.Embeds != nil {
		m.Embeds = *b.Embeds
	}
	if b.Components != nil {
		m.Components = *b.Components
	}
	if b.AllowedMentions != nil {
		m.AllowedMentions = b.AllowedMentions
	}
	if b.Flags != nil {
		m.Flags = *b.Flags &^ flagEphemeral
	}
	if m.Embeds == nil {
		m.Embeds = []Embed{}
	}
	if m.Components == nil {
		m.Components = []Component{}
	}
}

const (
	flagEphemeral = 1 << 6
	flagLoading   = 1 << 7
)

func (s *Server) postMessage(r *http.Request, c *Call) (int, any, *apiError) {
	ch := s.channels[r.PathValue("channel")]
	if ch == nil {
		return 0, nil, errUnknownChannel
	}
	b, err := decodeMessage(c.Body)
	if err != nil {
		return 0, nil, err
	}
	nonce := strings.Trim(string(b.Nonce), `"`)
	if len(nonce) > 25 {
		return 0, nil, invalidForm("nonce", "BASE_TYPE_MAX_LENGTH", "Must be 25 or fewer in length.")
	}
	if b.EnforceNonce && nonce != "" {
		// The same author's message with this nonce in the past few minutes is the answer:
		// a retried post makes nothing new.
		for _, old := range s.messages[ch.ID] {
			if old.Author.ID == s.bot.ID && old.nonce == nonce && time.Since(old.created) < 5*time.Minute {
				return http.StatusOK, old, nil
			}
		}
	}
	m := s.newBotMessage(ch)
	m.nonce = nonce
	b.apply(m)
	if b.MessageReference != nil {
		if ref := s.findMessage(ch.ID, b.MessageReference.MessageID); ref == nil {
			if b.MessageReference.FailIfNotExists == nil || *b.MessageReference.FailIfNotExists {
				return 0, nil, invalidForm("message_reference", "MESSAGE_REFERENCE_UNKNOWN_MESSAGE", "Unknown message")
			}
		} else {
			m.Type = 19 // REPLY
			m.MessageReference = &MessageRef{MessageID: ref.ID, ChannelID: ch.ID, GuildID: ch.GuildID}
		}
	}
	if err := validate(m); err != nil {
		return 0, nil, err
	}
	s.addMessage(ch, m)
	return http.StatusOK, m, nil
}

func (s *Server) newBotMessage(ch *Channel) *Message {
	return &Message{
		ID: s.newID(), ChannelID: ch.ID, GuildID: ch.GuildID, Author: s.bot, created: time.Now(),
		Timestamp: time.Now().UTC().Format(time.RFC3339Nano), Mentions: []User{}, MentionRoles: []string{},
		Attachments: []any{}, Embeds: []Embed{}, Components: []Component{},
	}
}

func (s *Server) addMessage(ch *Channel, m *Message) {
	m.Versions = append(m.Versions, m.Content)
	m.Mentions = s.mentions(m.Content)
	s.messages[ch.ID] = append(s.messages[ch.ID], m)
	ch.MessageCount++
	if ch.ThreadMetadata != nil && ch.ThreadMetadata.Archived && !ch.ThreadMetadata.Locked {
		ch.ThreadMetadata.Archived = false // a new message unarchives a thread
	}
	s.gw.dispatchMessage("MESSAGE_CREATE", m)
}

func (s *Server) getMessage(r *http.Request, c *Call) (int, any, *apiError) {
	m := s.findMessage(r.PathValue("channel"), r.PathValue("message"))
	if m == nil || m.Deleted {
		return 0, nil, errUnknownMessage
	}
	return http.StatusOK, m, nil
}

func (s *Server) patchMessage(r *http.Request, c *Call) (int, any, *apiError) {
	if s.channels[r.PathValue("channel")] == nil {
		return 0, nil, errUnknownChannel
	}
	m := s.findMessage(r.PathValue("channel"), r.PathValue("message"))
	if m == nil || m.Deleted {
		return 0, nil, errUnknownMessage
	}
	if m.Author.ID != s.bot.ID {
		return 0, nil, errNotAuthor
	}
	return s.edit(m, c.Body)
}

func (s *Server) edit(m *Message, body []byte) (int, any, *apiError) {
	b, err := decodeMessage(body)
	if err != nil {
		return 0, nil, err
	}
	next := copyMessage(m)
	b.apply(&next)
	next.Flags &^= flagLoading
	if err := validate(&next); err != nil {
		return 0, nil, err
	}
	now := time.Now().UTC().Format(time.RFC3339Nano)
	next.EditedTimestamp = &now
	next.Edits++
	next.Versions = append(next.Versions, next.Content)
	next.Mentions = s.mentions(next.Content)
	*m = next
	s.gw.dispatchMessage("MESSAGE_UPDATE", m)
	return http.StatusOK, m, nil
}

func (s *Server) deleteMessage(r *http.Request, c *Call) (int, any, *apiError) {
	m := s.findMessage(r.PathValue("channel"), r.PathValue("message"))
	if m == nil || m.Deleted {
		return 0, nil, errUnknownMessage
	}
	m.Deleted = true
	s.gw.dispatch("MESSAGE_DELETE", map[string]string{"id": m.ID, "channel_id": m.ChannelID, "guild_id": m.GuildID})
	return http.StatusNoContent, nil, nil
}

func (s *Server) startThread(r *http.Request, c *Call) (int, any, *apiError) {
	ch := s.channels[r.PathValue("channel")]
	if ch == nil {
		return 0, nil, errUnknownChannel
	}
	if ch.Type != ChannelText {
		return 0, nil, errChannelType
	}
	m := s.findMessage(ch.ID, r.PathValue("message"))
	if m == nil || m.Deleted {
		return 0, nil, errUnknownMessage
	}
	if m.Thread != nil {
		return 0, nil, errThreadExists
	}
	var b struct {
		Name                string `json:"name"`
		AutoArchiveDuration int    `json:"auto_archive_duration"`
	}
	if err := json.Unmarshal(c.Body, &b); err != nil {
		return 0, nil, errorOf(http.StatusBadRequest, 50109, "The request body contains invalid JSON.")
	}
	if n := utf8.RuneCountInString(b.Name); n < 1 || n > 100 {
		return 0, nil, invalidForm("name", "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 100 in length.")
	}
	switch b.AutoArchiveDuration {
	case 0:
		b.AutoArchiveDuration = 4320 // the channel's default, here three days
	case 60, 1440, 4320, 10080:
	default:
		return 0, nil, invalidForm("auto_archive_duration", "BASE_TYPE_CHOICES", "Value must be one of {60, 1440, 4320, 10080}.")
	}
	// A thread started from a message has the message's id.
	th := &Channel{ID: m.ID, Type: ChannelPublicThread, GuildID: ch.GuildID, ParentID: ch.ID, Name: b.Name,
		OwnerID: s.bot.ID, AutoArchive: b.AutoArchiveDuration,
		ThreadMetadata: &ThreadMetadata{AutoArchiveDuration: b.AutoArchiveDuration, ArchiveTimestamp: time.Now().UTC().Format(time.RFC3339Nano)}}
	s.channels[th.ID] = th
	m.Thread = th
	created := *th
	s.gw.dispatch("THREAD_CREATE", struct {
		Channel
		NewlyCreated bool `json:"newly_created"`
	}{created, true})
	s.gw.dispatchMessage("MESSAGE_UPDATE", m)
	return http.StatusCreated, th, nil
}

func (s *Server) typing(r *http.Request, c *Call) (int, any, *apiError) {
	if s.channels[r.PathValue("channel")] == nil {
		return 0, nil, errUnknownChannel
	}
	return http.StatusNoContent, nil, nil
}

func (s *Server) react(r *http.Request, c *Call) (int, any, *apiError) {
	m := s.findMessage(r.PathValue("channel"), r.PathValue("message"))
	if m == nil || m.Deleted {
		return 0, nil, errUnknownMessage
	}
	return http.StatusNoContent, nil, nil
}

func (s *Server) putCommands(r *http.Request, c *Call) (int, any, *apiError) {
	if r.PathValue("app") != s.cfg.AppID {
		return 0, nil, errorOf(http.StatusForbidden, 50001, "Missing Access")
	}
	var cmds []map[string]any
	if err := json.Unmarshal(c.Body, &cmds); err != nil {
		return 0, nil, errorOf(http.StatusBadRequest, 50109, "The request body contains invalid JSON.")
	}
	if err := validateCommands(cmds); err != nil {
		return 0, nil, err
	}
	s.commands = nil
	for _, cmd := range cmds {
		cmd["id"] = s.newID()
		cmd["application_id"] = s.cfg.AppID
		cmd["version"] = s.newID()
		raw, _ := json.Marshal(cmd)
		s.commands = append(s.commands, raw)
	}
	return http.StatusOK, cmds, nil
}

func (s *Server) getCommands(r *http.Request, c *Call) (int, any, *apiError) {
	out := s.commands
	if out == nil {
		out = []json.RawMessage{}
	}
	return http.StatusOK, out, nil
}
