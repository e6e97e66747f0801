package webhook_test

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/nightona/nightona/internal/testenv"
	"github.com/nightona/nightona/redisstore"
	"github.com/nightona/nightona/webhook"
)

func TestMain(m *testing.M) { testenv.Main(m) }

const secret = "8f742231b10e8888abcd99yyyzzz85a5"

// recorder is a SlackHandler that records what it was given.
type recorder struct {
	mu           sync.Mutex
	events       [][]byte
	commands     []url.Values
	interactions [][]byte
	block        chan struct{} // when set, SlackEvent waits on it
	done         chan struct{}
}

func (h *recorder) SlackEvent(ctx context.Context, body []byte) {
	if h.block != nil {
		<-h.block
	}
	h.mu.Lock()
	h.events = append(h.events, body)
	h.mu.Unlock()
	if h.done != nil {
		h.done <- struct{}{}
	}
}

func (h *recorder) SlackCommand(ctx context.Context, form url.Values) []byte {
	h.mu.Lock()
	h.commands = append(h.commands, form)
	h.mu.Unlock()
	return []byte(`{"response_type":"ephemeral","text":"pong"}`)
}

func (h *recorder) SlackInteraction(ctx context.Context, payload []byte) []byte {
	h.mu.Lock()
	h.interactions = append(h.interactions, payload)
	h.mu.Unlock()
	return nil
}

func (h *recorder) counts() (int, int, int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.events), len(h.commands), len(h.interactions)
}

func newStore(t *testing.T) *redisstore.Store {
	t.Helper()
	rdb, err := redisstore.Open(testenv.RedisURL(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rdb.Close() })
	return redisstore.New(rdb, redisstore.Config{Prefix: testenv.Prefix(t)})
}

// replica is the webhooks of one bot replica, served over HTTP.
func replica(t *testing.T, h webhook.SlackHandler, d webhook.Deduper) (*webhook.Slack, string) {
	t.Helper()
	s, err := webhook.NewSlack(h, d, webhook.SlackConfig{SigningSecret: secret})
	if err != nil {
		t.Fatal(err)
	}
	r := chi.NewRouter()
	s.Mount(r)
	srv := httptest.NewServer(r)
	t.Cleanup(func() {
		srv.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = s.Close(ctx)
	})
	return s, srv.URL
}

// sign computes Slack's v0 signature of body at time at: an independent implementation of
// https://api.slack.com/authentication/verifying-requests-from-slack.
func sign(key string, at time.Time, body []byte) (string, string) {
	ts := strconv.FormatInt(at.Unix(), 10)
	mac := hmac.New(sha256.New, []byte(key))
	mac.Write([]byte("v0:" + ts + ":"))
	mac.Write(body)
	return ts, "v0=" + hex.EncodeToString(mac.Sum(nil))
}

type delivery struct {
	path, contentType string
	body              []byte
	at                time.Time
	key               string // signing key; "" for the right one
	headers           map[string]string
	unsigned          bool
}

func post(t *testing.T, base string, d delivery) (int, []byte, time.Duration) {
	t.Helper()
	if d.at.IsZero() {
		d.at = time.Now()
	}
	if d.key == "" {
		d.key = secret
	}
	if d.contentType == "" {
		d.contentType = "application/json"
	}
	req, _ := http.NewRequest(http.MethodPost, base+d.path, bytes.NewReader(d.body))
	req.Header.Set("Content-Type", d.contentType)
	if !d.unsigned {
		ts, sig := sign(d.key, d.at, d.body)
		req.Header.Set("X-Slack-Request-Timestamp", ts)
		req.Header.Set("X-Slack-Signature", sig)
	}
	for k, v := range d.headers {
		req.Header.Set(k, v)
	}
	start := time.Now()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b, time.Since(start)
}

func callback(eventID string) []byte {
	b, _ := json.Marshal(map[string]any{"type": "event_callback", "team_id": "T1", "event_id": eventID,
		"event": map[string]any{"type": "app_mention", "user": "U1", "text": "<@UBOT> hi", "channel": "C1", "ts": "1.000001"}})
	return b
}

func TestSlackURLVerification(t *testing.T) {
	h := &recorder{}
	_, base := replica(t, h, newStore(t))
	body := []byte(`{"token":"x","challenge":"3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P","type":"url_verification"}`)
	status, out, _ := post(t, base, delivery{path: "/slack/events", body: body})
	if status != http.StatusOK || !strings.Contains(string(out), `"challenge":"3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"`) {
		t.Fatalf("url_verification answered %d %s", status, out)
	}
	if e, _, _ := h.counts(); e != 0 {
		t.Fatal("url_verification reached the handler")
	}
}

// TestSlackRefusesBadSignatures: a wrong signature, a stale or future timestamp, missing
// headers: 401, and nothing done (not even remembering the event id).
func TestSlackRefusesBadSignatures(t *testing.T) {
	h := &recorder{done: make(chan struct{}, 10)}
	store := newStore(t)
	_, base := replica(t, h, store)
	cases := map[string]delivery{
		"wrong secret":     {key: "not-the-secret"},
		"stale timestamp":  {at: time.Now().Add(-6 * time.Minute)},
		"future timestamp": {at: time.Now().Add(6 * time.Minute)},
		"unsigned":         {unsigned: true},
		"signature of another body": {headers: func() map[string]string {
			ts, sig := sign(secret, time.Now(), []byte("other"))
			return map[string]string{"X-Slack-Request-Timestamp": ts, "X-Slack-Signature": sig}
		}()},
		"timestamp not a number": {headers: map[string]string{"X-Slack-Request-Timestamp": "yesterday"}},
	}
	for name, d := range cases {
		for _, path := range []string{"/slack/events", "/slack/commands", "/slack/interactivity"} {
			d := d
			d.path = path
			d.body = callback("EvBAD")
			if path != "/slack/events" {
				d.contentType = "application/x-www-form-urlencoded"
				d.body = []byte(url.Values{"payload": {"{}"}, "command": {"/nightona"}, "text": {"help"}}.Encode())
			}
			if status, _, _ := post(t, base, d); status != http.StatusUnauthorized {
				t.Errorf("%s on %s: %d, want 401", name, path, status)
			}
		}
	}
	if e, c, i := h.counts(); e+c+i != 0 {
		t.Fatalf("refused requests reached the handler: %d events, %d commands, %d interactions", e, c, i)
	}
	// The event id was not taken: the genuine delivery goes through.
	if status, _, _ := post(t, base, delivery{path: "/slack/events", body: callback("EvBAD")}); status != http.StatusOK {
		t.Fatalf("the genuine delivery: %d", status)
	}
	waitDone(t, h.done)
	// Within the tolerance, a slightly old request is fine.
	if status, _, _ := post(t, base, delivery{path: "/slack/events", body: callback("EvOLDISH"), at: time.Now().Add(-4 * time.Minute)}); status != http.StatusOK {
		t.Fatalf("a 4-minute-old request: %d", status)
	}
	waitDone(t, h.done)
}

func waitDone(t *testing.T, done chan struct{}) {
	t.Helper()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("the handler was not called")
	}
}

// TestSlackAcksAtOnceAndHandlesRetriesOnce: an event is acknowledged before its (slow) work is
// done, and Slack's retries of it, to this replica or another sharing Redis, are dropped.
func TestSlackAcksAtOnceAndHandlesRetriesOnce(t *testing.T) {
	store := newStore(t)
	h := &recorder{block: make(chan struct{}), done: make(chan struct{}, 10)}
	_, base1 := replica(t, h, store)
	_, base2 := replica(t, h, store)
	body := callback("Ev0001")
	status, _, took := post(t, base1, delivery{path: "/slack/events", body: body})
	if status != http.StatusOK || took > time.Second {
		t.Fatalf("first delivery: %d in %v, want 200 at once while the work waits", status, took)
	}
	for i, base := range []string{base1, base2, base2} {
		status, _, took := post(t, base, delivery{path: "/slack/events", body: body,
			headers: map[string]string{"X-Slack-Retry-Num": fmt.Sprint(i + 1), "X-Slack-Retry-Reason": "http_timeout"}})
		if status != http.StatusOK || took > time.Second {
			t.Fatalf("retry %d: %d in %v", i+1, status, took)
		}
	}
	close(h.block)
	waitDone(t, h.done)
	select {
	case <-h.done:
		t.Fatal("a retried delivery was handled again")
	case <-time.After(300 * time.Millisecond):
	}
	if e, _, _ := h.counts(); e != 1 {
		t.Fatalf("%d events handled, want 1", e)
	}
	// Another event is handled, on either replica.
	post(t, base2, delivery{path: "/slack/events", body: callback("Ev0002")})
	waitDone(t, h.done)
}

func TestSlackCommandsAndInteractivity(t *testing.T) {
	h := &recorder{}
	_, base := replica(t, h, newStore(t))
	form := url.Values{"command": {"/nightona"}, "text": {"status"}, "team_id": {"T1"}, "user_id": {"U1"}}
	status, out, _ := post(t, base, delivery{path: "/slack/commands", contentType: "application/x-www-form-urlencoded", body: []byte(form.Encode())})
	if status != http.StatusOK || string(out) != `{"response_type":"ephemeral","text":"pong"}` {
		t.Fatalf("command answered %d %s", status, out)
	}
	payload := `{"type":"block_actions","actions":[{"action_id":"nightona_stop"}]}`
	status, out, _ = post(t, base, delivery{path: "/slack/interactivity", contentType: "application/x-www-form-urlencoded",
		body: []byte(url.Values{"payload": {payload}}.Encode())})
	if status != http.StatusOK || len(out) != 0 {
		t.Fatalf("interaction answered %d %q", status, out)
	}
	status, _, _ = post(t, base, delivery{path: "/slack/commands", contentType: "application/x-www-form-urlencoded", body: []byte("ssl_check=1&token=x")})
	if status != http.StatusOK {
		t.Fatalf("ssl_check answered %d", status)
	}
	_, c, i := h.counts()
	h.mu.Lock()
	defer h.mu.Unlock()
	if c != 1 || i != 1 || h.commands[0].Get("text") != "status" || string(h.interactions[0]) != payload {
		t.Fatalf("handler got %d commands, %d interactions: %v %q", c, i, h.commands, h.interactions)
	}
}

// TestSlackCloseWaitsThenRefuses: Close lets the work of taken events finish, and later
// callbacks are answered 503 for Slack to deliver again elsewhere.
func TestSlackCloseWaitsThenRefuses(t *testing.T) {
	h := &recorder{block: make(chan struct{}), done: make(chan struct{}, 10)}
	s, base := replica(t, h, newStore(t))
	post(t, base, delivery{path: "/slack/events", body: callback("EvC1")})
	closed := make(chan error, 1)
	go func() { closed <- s.Close(context.Background()) }()
	select {
	case <-closed:
		t.Fatal("Close returned while an event's work was running")
	case <-time.After(200 * time.Millisecond):
	}
	close(h.block)
	waitDone(t, h.done)
	if err := <-closed; err != nil {
		t.Fatal(err)
	}
	if status, _, _ := post(t, base, delivery{path: "/slack/events", body: callback("EvC2")}); status != http.StatusServiceUnavailable {
		t.Fatalf("after Close: %d, want 503", status)
	}
}

func TestSlackRejectsHugeBodies(t *testing.T) {
	_, base := replica(t, &recorder{}, newStore(t))
	body := bytes.Repeat([]byte("x"), 2<<20)
	if status, _, _ := post(t, base, delivery{path: "/slack/events", body: body}); status != http.StatusRequestEntityTooLarge {
		t.Fatalf("a 2 MiB body: %d", status)
	}
}
