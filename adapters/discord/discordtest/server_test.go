package discordtest_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/nightona/nightona/adapters/discord/discordtest"
)

func call(t *testing.T, s *discordtest.Server, method, path, token string, body any) (*http.Response, map[string]any) {
	t.Helper()
	var r io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		r = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, "https://discord.com/api/v10"+path, r)
	if token != "" {
		req.Header.Set("Authorization", "Bot "+token)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := s.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&out)
	return resp, out
}

func TestRESTShapes(t *testing.T) {
	s := discordtest.New(discordtest.Config{RouteLimit: 3, RouteWindow: time.Second})
	defer s.Close()
	_, ch := s.AddGuild("g", "general")

	if resp, out := call(t, s, "GET", "/gateway/bot", "wrong", nil); resp.StatusCode != 401 || out["message"] != "401: Unauthorized" {
		t.Fatalf("a wrong token: %d %v", resp.StatusCode, out)
	}
	resp, out := call(t, s, "POST", "/channels/"+ch.ID+"/messages", s.Token(), map[string]any{"content": "hi"})
	if resp.StatusCode != 200 || out["content"] != "hi" || resp.Header.Get("X-RateLimit-Limit") != "3" ||
		resp.Header.Get("X-RateLimit-Remaining") != "2" || resp.Header.Get("X-RateLimit-Bucket") == "" || resp.Header.Get("X-RateLimit-Reset-After") == "" {
		t.Fatalf("a post: %d %v %v", resp.StatusCode, out, resp.Header)
	}
	msgID := out["id"].(string)
	call(t, s, "POST", "/channels/"+ch.ID+"/messages", s.Token(), map[string]any{"content": "two"})
	call(t, s, "POST", "/channels/"+ch.ID+"/messages", s.Token(), map[string]any{"content": "two and a half"})
	resp, out = call(t, s, "POST", "/channels/"+ch.ID+"/messages", s.Token(), map[string]any{"content": "three"})
	if resp.StatusCode != 429 || out["retry_after"].(float64) <= 0 || out["global"] != false || resp.Header.Get("Retry-After") == "" ||
		resp.Header.Get("X-RateLimit-Scope") != "user" {
		t.Fatalf("over the bucket: %d %v %v", resp.StatusCode, out, resp.Header)
	}
	if resp, _ := call(t, s, "POST", "/channels/"+ch.ID+"/messages", s.Token(), map[string]any{"content": "early"}); resp.StatusCode != 429 || len(s.Early()) != 1 {
		t.Fatalf("a call during the hold: %d, early %d", resp.StatusCode, len(s.Early()))
	}

	s.Storm(discordtest.Storm{N: 1, Global: true, RetryAfter: 100 * time.Millisecond})
	resp, out = call(t, s, "GET", "/channels/"+ch.ID, s.Token(), nil)
	if resp.StatusCode != 429 || out["global"] != true || resp.Header.Get("X-RateLimit-Global") != "true" {
		t.Fatalf("a global storm: %d %v", resp.StatusCode, out)
	}
	time.Sleep(1100 * time.Millisecond) // the bucket's window and the global hold pass

	long := strings.Repeat("é", 2001)
	if resp, out := call(t, s, "PATCH", "/channels/"+ch.ID+"/messages/"+msgID, s.Token(), map[string]any{"content": long}); resp.StatusCode != 400 || out["code"].(float64) != 50035 {
		t.Fatalf("2,001 characters: %d %v", resp.StatusCode, out)
	}
	if resp, out := call(t, s, "PATCH", "/channels/"+ch.ID+"/messages/"+msgID, s.Token(), map[string]any{"content": ""}); resp.StatusCode != 400 || out["code"].(float64) != 50006 {
		t.Fatalf("an empty message: %d %v", resp.StatusCode, out)
	}
	bad := []map[string]any{{"type": 1, "components": []map[string]any{{"type": 2, "style": 5, "label": "x", "custom_id": "y"}}}}
	if resp, _ := call(t, s, "PATCH", "/channels/"+ch.ID+"/messages/"+msgID, s.Token(), map[string]any{"components": bad}); resp.StatusCode != 400 {
		t.Fatalf("a link button with a custom id: %d", resp.StatusCode)
	}

	user := s.AddUser("u")
	m := s.Say(ch.ID, user.ID, "<@"+s.Bot().ID+"> start")
	resp, out = call(t, s, "POST", "/channels/"+ch.ID+"/messages/"+m.ID+"/threads", s.Token(), map[string]any{"name": "start"})
	if resp.StatusCode != 201 || out["id"] != m.ID || out["parent_id"] != ch.ID || out["type"].(float64) != 11 {
		t.Fatalf("a thread from a message: %d %v", resp.StatusCode, out)
	}
	if resp, out := call(t, s, "POST", "/channels/"+ch.ID+"/messages/"+m.ID+"/threads", s.Token(), map[string]any{"name": "again"}); resp.StatusCode != 400 || out["code"].(float64) != 160004 {
		t.Fatalf("a second thread from one message: %d %v", resp.StatusCode, out)
	}
	resp, first := call(t, s, "POST", "/channels/"+m.ID+"/messages", s.Token(), map[string]any{"content": "once", "nonce": "n1", "enforce_nonce": true})
	_, again := call(t, s, "POST", "/channels/"+m.ID+"/messages", s.Token(), map[string]any{"content": "once", "nonce": "n1", "enforce_nonce": true})
	if resp.StatusCode != 200 || first["id"] != again["id"] || len(s.BotMessages(m.ID)) != 1 {
		t.Fatalf("a post repeated with its nonce made a second message: %v %v", first, again)
	}
}

func TestGatewayShapes(t *testing.T) {
	s := discordtest.New(discordtest.Config{HeartbeatInterval: 200 * time.Millisecond})
	defer s.Close()
	_, ch := s.AddGuild("g", "general")
	ws, _, err := websocket.DefaultDialer.Dial(strings.Replace(s.URL(), "http", "ws", 1)+"/gateway?v=10&encoding=json", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	read := func() (op int, typ string, d map[string]any, seq int64) {
		t.Helper()
		_ = ws.SetReadDeadline(time.Now().Add(5 * time.Second))
		var f struct {
			Op int            `json:"op"`
			T  *string        `json:"t"`
			S  *int64         `json:"s"`
			D  map[string]any `json:"d"`
		}
		if err := ws.ReadJSON(&f); err != nil {
			t.Fatal(err)
		}
		if f.T != nil {
			typ = *f.T
		}
		if f.S != nil {
			seq = *f.S
		}
		return f.Op, typ, f.D, seq
	}
	if op, _, d, _ := read(); op != 10 || d["heartbeat_interval"].(float64) != 200 {
		t.Fatalf("HELLO: %d %v", op, d)
	}
	_ = ws.WriteJSON(map[string]any{"op": 2, "d": map[string]any{"token": s.Token(), "intents": discordtest.IntentGuildMessages,
		"properties": map[string]string{"os": "linux", "browser": "x", "device": "x"}}})
	op, typ, d, seq := read()
	if op != 0 || typ != "READY" || seq != 1 || d["session_id"] == "" || !strings.HasSuffix(d["resume_gateway_url"].(string), "/gateway/resume") {
		t.Fatalf("READY: %d %s %d %v", op, typ, seq, d)
	}
	if _, typ, _, _ := read(); typ != "GUILD_CREATE" {
		t.Fatalf("after READY: %s", typ)
	}
	_ = ws.WriteJSON(map[string]any{"op": 1, "d": 2})
	if op, _, _, _ := read(); op != 11 {
		t.Fatalf("heartbeat answered with op %d", op)
	}
	u := s.AddUser("u")
	s.Say(ch.ID, u.ID, "no mention")
	_, typ, d, _ = read()
	if typ != "MESSAGE_CREATE" || d["content"] != "" {
		t.Fatalf("without the message-content intent, content is blank: %s %v", typ, d["content"])
	}
	if st := s.GatewayStats(); st.Identifies != 1 || st.Heartbeats != 1 || st.Intents != discordtest.IntentGuildMessages {
		t.Fatalf("stats %+v", st)
	}
}
