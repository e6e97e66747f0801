package slacktest

import (
	"bytes"
	"encoding/json"
	"io"
	"math"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// errResp is an ok:false answer.
type errResp string

// serveAPI answers a Web API call the way Slack does: HTTP 200 with {"ok":...} for everything
// but rate limits (HTTP 429 with Retry-After).
func (s *Server) serveAPI(w http.ResponseWriter, r *http.Request) {
	method := r.PathValue("method")
	call := Call{Method: method, At: time.Now(), Params: map[string]any{}}
	token := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
	if r.Method != http.MethodPost && r.Method != http.MethodGet {
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, 4<<20))
	if err != nil {
		return
	}
	ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	switch {
	case ct == "application/json":
		call.JSON = true
		if len(bytes.TrimSpace(body)) == 0 {
			break
		}
		if err := json.Unmarshal(body, &call.Params); err != nil {
			s.answer(w, &call, nil, "invalid_json")
			return
		}
	case r.Method == http.MethodGet:
		for k, v := range r.URL.Query() {
			call.Params[k] = v[0]
		}
	default:
		form, err := url.ParseQuery(string(body))
		if err != nil {
			s.answer(w, &call, nil, "invalid_form_data")
			return
		}
		for k, v := range r.URL.Query() { // slack-go puts some arguments in the query
			form[k] = v
		}
		for k, v := range form {
			call.Params[k] = v[0]
		}
	}
	if token == "" {
		token = call.Str("token")
	}
	delete(call.Params, "token")

	s.mu.Lock()
	limiter := s.limiter
	s.mu.Unlock()
	if limiter != nil {
		if d := limiter(call); d > 0 {
			secs := int(math.Ceil(d.Seconds()))
			w.Header().Set("Retry-After", strconv.Itoa(secs))
			call.Status, call.Error = http.StatusTooManyRequests, "ratelimited"
			s.record(call)
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusTooManyRequests)
			w.Write([]byte(`{"ok":false,"error":"ratelimited"}`))
			return
		}
	}

	want := s.cfg.BotToken
	if method == "apps.connections.open" {
		want = s.cfg.AppToken
	}
	switch {
	case token == "":
		s.answer(w, &call, nil, "not_authed")
		return
	case token != want:
		if method == "apps.connections.open" && token == s.cfg.BotToken || method != "apps.connections.open" && token == s.cfg.AppToken {
			s.answer(w, &call, nil, "not_allowed_token_type")
		} else {
			s.answer(w, &call, nil, "invalid_auth")
		}
		return
	}
	s.mu.Lock()
	out, e := s.dispatch(&call)
	s.mu.Unlock()
	s.answer(w, &call, out, e)
}

func (s *Server) answer(w http.ResponseWriter, call *Call, out map[string]any, e errResp) {
	if out == nil {
		out = map[string]any{}
	}
	if e != "" {
		out = map[string]any{"ok": false, "error": string(e)}
		call.Error = string(e)
	} else {
		out["ok"] = true
	}
	call.Status = http.StatusOK
	s.record(*call)
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(out)
}

func (s *Server) record(c Call) {
	s.mu.Lock()
	s.calls = append(s.calls, c)
	s.mu.Unlock()
}

// dispatch runs a method with s.mu held.
func (s *Server) dispatch(c *Call) (map[string]any, errResp) {
	switch c.Method {
	case "auth.test":
		return map[string]any{"url": "https://test-team.slack.com/", "team": s.cfg.TeamName, "user": "nightona",
			"team_id": s.cfg.TeamID, "user_id": s.cfg.BotUserID, "bot_id": s.cfg.BotID}, ""
	case "apps.connections.open":
		u := strings.Replace(s.URL, "http", "ws", 1) + "link/?ticket=" + strconv.FormatInt(time.Now().UnixNano(), 36)
		return map[string]any{"url": u}, ""
	case "chat.postMessage":
		return s.postMessage(c)
	case "chat.update":
		return s.update(c)
	case "chat.delete":
		m, e := s.find(c.Str("channel"), c.Str("ts"))
		if e != "" {
			return nil, e
		}
		m.Deleted = true
		return map[string]any{"channel": m.Channel, "ts": m.TS}, ""
	case "chat.postEphemeral":
		return s.postEphemeral(c)
	case "chat.startStream", "chat.appendStream", "chat.stopStream":
		if s.cfg.NoStreaming {
			return nil, "unknown_method"
		}
		return s.stream(c)
	case "assistant.threads.setStatus":
		if s.cfg.NoAssistantStatus {
			return nil, "unknown_method"
		}
		if c.Str("channel_id") == "" || c.Str("thread_ts") == "" {
			return nil, "invalid_arguments"
		}
		if _, e := s.find(c.Str("channel_id"), c.Str("thread_ts")); e != "" {
			return nil, "thread_not_found"
		}
		s.statuses = append(s.statuses, Status{Channel: c.Str("channel_id"), ThreadTS: c.Str("thread_ts"), Status: c.Str("status"), At: c.At})
		return map[string]any{}, ""
	}
	return nil, "unknown_method"
}

func (s *Server) find(channel, ts string) (*Message, errResp) {
	if channel == "" {
		return nil, "channel_not_found"
	}
	for _, m := range s.msgs[channel] {
		if m.TS == ts && !m.Deleted {
			return m, ""
		}
	}
	return nil, "message_not_found"
}

// content reads a message's text and blocks and checks them against Slack's limits.
func content(c *Call) (text string, blocks json.RawMessage, e errResp) {
	text = c.Str("text")
	if raw := c.Str("blocks"); raw != "" {
		blocks = json.RawMessage(raw)
		if e := validateBlocks(blocks); e != "" {
			return "", nil, e
		}
	}
	if utf8.RuneCountInString(text) > 40000 {
		return "", nil, "msg_too_long"
	}
	return text, blocks, ""
}

func (s *Server) postMessage(c *Call) (map[string]any, errResp) {
	ch := c.Str("channel")
	if ch == "" {
		return nil, "channel_not_found"
	}
	text, blocks, e := content(c)
	if e != "" {
		return nil, e
	}
	if text == "" && len(blocks) == 0 {
		return nil, "no_text"
	}
	thread := c.Str("thread_ts")
	if thread != "" {
		if _, e := s.find(ch, thread); e != "" {
			return nil, "thread_not_found"
		}
	}
	m := &Message{Channel: ch, TS: s.newTS(), ThreadTS: thread, User: s.cfg.BotUserID, Text: text, Blocks: blocks}
	s.msgs[ch] = append(s.msgs[ch], m)
	return map[string]any{"channel": ch, "ts": m.TS, "message": map[string]any{"text": text, "ts": m.TS, "user": m.User}}, ""
}

func (s *Server) update(c *Call) (map[string]any, errResp) {
	m, e := s.find(c.Str("channel"), c.Str("ts"))
	if e != "" {
		return nil, e
	}
	if m.User != s.cfg.BotUserID {
		return nil, "cant_update_message"
	}
	text, blocks, e := content(c)
	if e != "" {
		return nil, e
	}
	if text == "" && len(blocks) == 0 {
		return nil, "no_text"
	}
	m.Text = text
	if _, ok := c.Params["blocks"]; ok {
		m.Blocks = blocks
	}
	m.Updates++
	return map[string]any{"channel": m.Channel, "ts": m.TS, "text": text}, ""
}

func (s *Server) postEphemeral(c *Call) (map[string]any, errResp) {
	ch, user := c.Str("channel"), c.Str("user")
	if ch == "" {
		return nil, "channel_not_found"
	}
	if user == "" {
		return nil, "user_not_found"
	}
	text, blocks, e := content(c)
	if e != "" {
		return nil, e
	}
	if text == "" && len(blocks) == 0 {
		return nil, "no_text"
	}
	m := &Message{Channel: ch, TS: s.newTS(), ThreadTS: c.Str("thread_ts"), User: s.cfg.BotUserID, Text: text, Blocks: blocks, To: user, Ephemeral: true}
	s.ephemeral = append(s.ephemeral, m)
	return map[string]any{"message_ts": m.TS}, ""
}

// stream runs chat.startStream, chat.appendStream and chat.stopStream.
func (s *Server) stream(c *Call) (map[string]any, errResp) {
	ch := c.Str("channel")
	var m *Message
	switch c.Method {
	case "chat.startStream":
		thread := c.Str("thread_ts")
		if ch == "" {
			return nil, "channel_not_found"
		}
		if thread == "" {
			return nil, "invalid_arguments"
		}
		if _, e := s.find(ch, thread); e != "" {
			return nil, "thread_not_found"
		}
		if !strings.HasPrefix(ch, "D") {
			if c.Str("recipient_user_id") == "" {
				return nil, "missing_recipient_user_id"
			}
			if c.Str("recipient_team_id") == "" {
				return nil, "missing_recipient_team_id"
			}
		}
		m = &Message{Channel: ch, TS: s.newTS(), ThreadTS: thread, User: s.cfg.BotUserID, Streaming: true, Streamed: true, started: time.Now()}
		if e := appendChunks(m, c); e != "" {
			return nil, e
		}
		s.msgs[ch] = append(s.msgs[ch], m)
		return map[string]any{"channel": ch, "ts": m.TS}, ""
	}
	m, e := s.find(ch, c.Str("ts"))
	if e != "" {
		return nil, e
	}
	if s.cfg.StreamLifetime > 0 && time.Since(m.started) > s.cfg.StreamLifetime {
		m.Streaming = false
	}
	if !m.Streaming {
		return nil, "message_not_in_streaming_state"
	}
	if c.Method == "chat.appendStream" && c.Str("markdown_text") == "" && c.Str("chunks") == "" {
		return nil, "no_text"
	}
	if e := appendChunks(m, c); e != "" {
		return nil, e
	}
	m.Appends++
	if c.Method == "chat.stopStream" {
		if raw := c.Str("blocks"); raw != "" {
			if e := validateBlocks(json.RawMessage(raw)); e != "" {
				return nil, e
			}
			m.StreamBlocks = json.RawMessage(raw)
		}
		m.Streaming = false
	}
	return map[string]any{"channel": m.Channel, "ts": m.TS}, ""
}

// appendChunks adds a streaming call's markdown_text and chunks to m.
func appendChunks(m *Message, c *Call) errResp {
	md := c.Str("markdown_text")
	if utf8.RuneCountInString(md) > 12000 {
		return "msg_too_long"
	}
	if raw := c.Str("chunks"); raw != "" {
		var chunks []struct {
			Type    string          `json:"type"`
			Text    string          `json:"text"`
			ID      string          `json:"id"`
			Title   string          `json:"title"`
			Status  string          `json:"status"`
			Details string          `json:"details"`
			Output  string          `json:"output"`
			Blocks  json.RawMessage `json:"blocks"`
		}
		if err := json.Unmarshal([]byte(raw), &chunks); err != nil {
			return "invalid_chunks"
		}
		total := 0
		for _, ch := range chunks {
			switch ch.Type {
			case "markdown_text":
				total += utf8.RuneCountInString(ch.Text)
			case "task_update":
				if ch.ID == "" || ch.Title == "" {
					return "invalid_chunks"
				}
				switch ch.Status {
				case "", "pending", "in_progress", "complete", "error":
				default:
					return "invalid_chunks"
				}
			case "plan_update", "blocks":
			default:
				return "invalid_chunks"
			}
		}
		if total > 12000 {
			return "msg_too_long"
		}
		for _, ch := range chunks {
			switch ch.Type {
			case "markdown_text":
				m.Stream += ch.Text
			case "task_update":
				found := false
				for i := range m.Tasks {
					if m.Tasks[i].ID == ch.ID {
						m.Tasks[i] = Task{ID: ch.ID, Title: ch.Title, Status: ch.Status, Details: ch.Details, Output: ch.Output}
						found = true
					}
				}
				if !found {
					m.Tasks = append(m.Tasks, Task{ID: ch.ID, Title: ch.Title, Status: ch.Status, Details: ch.Details, Output: ch.Output})
				}
			}
		}
	}
	m.Stream += md
	return ""
}
