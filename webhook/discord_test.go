package webhook_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/nightona/nightona/internal/testenv"
	"github.com/nightona/nightona/redisstore"
	"github.com/nightona/nightona/webhook"
)

// interactions is a DiscordHandler that records what it was given.
type interactions struct {
	mu       sync.Mutex
	bodies   [][]byte
	deadline time.Duration
	fail     bool
}

func (h *interactions) Interaction(ctx context.Context, body []byte) ([]byte, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.bodies = append(h.bodies, body)
	if dl, ok := ctx.Deadline(); ok {
		h.deadline = time.Until(dl)
	}
	if h.fail {
		return nil, errors.New("the store is down")
	}
	return []byte(`{"type":4,"data":{"content":"pong","flags":64}}`), nil
}

func (h *interactions) count() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.bodies)
}

func discordStore(t *testing.T) *redisstore.Store {
	t.Helper()
	rdb, err := redisstore.Open(testenv.RedisURL(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rdb.Close() })
	return redisstore.New(rdb, redisstore.Config{Prefix: testenv.Prefix(t)})
}

func discordServer(t *testing.T, h webhook.DiscordHandler) (url string, key ed25519.PrivateKey) {
	t.Helper()
	pub, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	parsed, err := webhook.ParseDiscordKey(hex.EncodeToString(pub))
	if err != nil {
		t.Fatal(err)
	}
	d, err := webhook.NewDiscord(h, discordStore(t), webhook.DiscordConfig{PublicKey: parsed})
	if err != nil {
		t.Fatal(err)
	}
	r := chi.NewRouter()
	d.Mount(r)
	srv := httptest.NewServer(r)
	t.Cleanup(srv.Close)
	return srv.URL + "/discord/interactions", key
}

func signDiscord(key ed25519.PrivateKey, at time.Time, body []byte) (sig, ts string) {
	ts = strconv.FormatInt(at.Unix(), 10)
	return hex.EncodeToString(ed25519.Sign(key, append([]byte(ts), body...))), ts
}

func postInteraction(t *testing.T, url, sig, ts string, body []byte) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	if sig != "" {
		req.Header.Set("X-Signature-Ed25519", sig)
	}
	if ts != "" {
		req.Header.Set("X-Signature-Timestamp", ts)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(out)
}

func TestDiscordSignatures(t *testing.T) {
	_, otherKey, _ := ed25519.GenerateKey(rand.Reader)
	body := []byte(`{"id":"1","type":2,"token":"t","data":{"name":"nightona"}}`)
	cases := []struct {
		name   string
		sign   func(key ed25519.PrivateKey) (sig, ts string, body []byte)
		status int
	}{
		{"good", func(k ed25519.PrivateKey) (string, string, []byte) {
			s, ts := signDiscord(k, time.Now(), body)
			return s, ts, body
		}, http.StatusOK},
		{"signed by another key", func(k ed25519.PrivateKey) (string, string, []byte) {
			s, ts := signDiscord(otherKey, time.Now(), body)
			return s, ts, body
		}, http.StatusUnauthorized},
		{"body changed after signing", func(k ed25519.PrivateKey) (string, string, []byte) {
			s, ts := signDiscord(k, time.Now(), body)
			return s, ts, bytes.Replace(body, []byte(`"type":2`), []byte(`"type":3`), 1)
		}, http.StatusUnauthorized},
		{"timestamp changed after signing", func(k ed25519.PrivateKey) (string, string, []byte) {
			s, _ := signDiscord(k, time.Now(), body)
			return s, strconv.FormatInt(time.Now().Unix()+1, 10), body
		}, http.StatusUnauthorized},
		{"stale timestamp, signed", func(k ed25519.PrivateKey) (string, string, []byte) {
			s, ts := signDiscord(k, time.Now().Add(-10*time.Minute), body)
			return s, ts, body
		}, http.StatusUnauthorized},
		{"timestamp from the future, signed", func(k ed25519.PrivateKey) (string, string, []byte) {
			s, ts := signDiscord(k, time.Now().Add(10*time.Minute), body)
			return s, ts, body
		}, http.StatusUnauthorized},
		{"no signature", func(k ed25519.PrivateKey) (string, string, []byte) {
			_, ts := signDiscord(k, time.Now(), body)
			return "", ts, body
		}, http.StatusUnauthorized},
		{"malformed signature", func(k ed25519.PrivateKey) (string, string, []byte) {
			_, ts := signDiscord(k, time.Now(), body)
			return "zz", ts, body
		}, http.StatusUnauthorized},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h := &interactions{}
			url, key := discordServer(t, h)
			sig, ts, b := c.sign(key)
			status, out := postInteraction(t, url, sig, ts, b)
			if status != c.status {
				t.Fatalf("status %d (%s), want %d", status, out, c.status)
			}
			want := 0
			if c.status == http.StatusOK {
				want = 1
				if out != `{"type":4,"data":{"content":"pong","flags":64}}` {
					t.Fatalf("answer %q", out)
				}
			}
			if h.count() != want {
				t.Fatalf("the handler ran %d times, want %d", h.count(), want)
			}
		})
	}
}

func TestDiscordPingReplayAndDeadline(t *testing.T) {
	h := &interactions{}
	url, key := discordServer(t, h)

	ping := []byte(`{"id":"9","type":1,"application_id":"5","token":"t","version":1}`)
	sig, ts := signDiscord(key, time.Now(), ping)
	if status, out := postInteraction(t, url, sig, ts, ping); status != http.StatusOK || out != `{"type":1}` {
		t.Fatalf("PING: %d %q", status, out)
	}
	if h.count() != 0 {
		t.Fatal("a PING reached the handler")
	}

	body := []byte(`{"id":"10","type":3,"token":"t","data":{"custom_id":"nightona:stop","component_type":2}}`)
	sig, ts = signDiscord(key, time.Now(), body)
	if status, out := postInteraction(t, url, sig, ts, body); status != http.StatusOK {
		t.Fatalf("first delivery: %d %q", status, out)
	}
	if h.deadline <= 0 || h.deadline > 2500*time.Millisecond {
		t.Fatalf("the handler had %v to answer; Discord waits 3 s", h.deadline)
	}
	// The same signed request again, within the timestamp's tolerance: a replay.
	if status, _ := postInteraction(t, url, sig, ts, body); status != http.StatusUnauthorized {
		t.Fatalf("a replayed request answered %d, want 401", status)
	}
	if h.count() != 1 {
		t.Fatalf("the handler ran %d times, want once", h.count())
	}

	h.fail = true
	body = []byte(`{"id":"11","type":3,"token":"t","data":{"custom_id":"nightona:stop","component_type":2}}`)
	sig, ts = signDiscord(key, time.Now(), body)
	if status, out := postInteraction(t, url, sig, ts, body); status != http.StatusInternalServerError || bytes.Contains([]byte(out), []byte("store")) {
		t.Fatalf("a failing handler: %d %q (want 500, and no detail)", status, out)
	}
}

func TestParseDiscordKey(t *testing.T) {
	for _, bad := range []string{"", "abc", "zz" + string(make([]byte, 62)), hex.EncodeToString(make([]byte, 31))} {
		if _, err := webhook.ParseDiscordKey(bad); err == nil {
			t.Errorf("key %q accepted", bad)
		}
	}
	if _, err := webhook.ParseDiscordKey(hex.EncodeToString(make([]byte, 32))); err != nil {
		t.Fatal(err)
	}
}
