package discord

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/nightona/nightona/adapters/discord/discordtest"
	"github.com/nightona/nightona/internal/testenv"
	"github.com/nightona/nightona/redisstore"
)

func TestRouteOf(t *testing.T) {
	cases := []struct{ method, path, route, major string }{
		{"POST", "/channels/123456789012345678/messages", "/channels/{id}/messages", "123456789012345678"},
		{"PATCH", "/channels/1234567890123/messages/9876543210987", "/channels/{id}/messages/{id}", "1234567890123"},
		{"POST", "/channels/1234567890123/messages/9876543210987/threads", "/channels/{id}/messages/{id}/threads", "1234567890123"},
		{"POST", "/interactions/1234567890123/aW50ZXJhY3Rpb24/callback", "/interactions/{id}/{token}/callback", ""},
		{"PATCH", "/webhooks/1234567890123/aW50ZXJh/messages/@original", "/webhooks/{id}/{token}/messages/@original", "1234567890123/aW50ZXJh"},
		{"GET", "/gateway/bot", "/gateway/bot", ""},
		{"PUT", "/applications/1234567890123/commands", "/applications/{id}/commands", ""},
	}
	for _, c := range cases {
		r := routeOf(c.method, c.path)
		if r.path != c.route || r.major != c.major {
			t.Errorf("routeOf(%s %s) = %s %q, want %s %q", c.method, c.path, r.path, r.major, c.route, c.major)
		}
	}
	if routeOf("POST", "/interactions/1/t/callback").global() || !routeOf("POST", "/channels/1/messages").global() {
		t.Fatal("interaction answers are outside the global limit; the rest is inside")
	}
}

// replicas are REST clients of two bot replicas: their own limiters, one Redis.
func replicas(t *testing.T, fake *discordtest.Server) (*rest, *rest) {
	t.Helper()
	rdb, err := redisstore.Open(testenv.RedisURL(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rdb.Close() })
	store := redisstore.New(rdb, redisstore.Config{Prefix: testenv.Prefix(t)})
	mk := func() *rest {
		log := slog.New(slog.DiscardHandler)
		m := newMetrics(nil)
		return &rest{base: DefaultAPIURL, token: fake.Token(), agent: "test", client: fake.Client(), log: log, metrics: m,
			limiter: newLimiter(store, 45, log, m)}
	}
	return mk(), mk()
}

// TestLimitsShared: a 429 one replica gets holds the other too, for its retry_after; a bucket
// one replica spends makes the other wait for its reset, so neither meets a 429 at all.
func TestLimitsShared(t *testing.T) {
	fake := discordtest.New(discordtest.Config{RouteLimit: 2, RouteWindow: 800 * time.Millisecond})
	defer fake.Close()
	_, ch := fake.AddGuild("g", "c")
	a, b := replicas(t, fake)
	ctx := context.Background()

	// Spend the bucket from both replicas: the third call waits for the reset, no 429.
	text := "x"
	start := time.Now()
	for i, c := range []*rest{a, b, a} {
		if _, err := c.send(ctx, ch.ID, &message{Content: &text}); err != nil {
			t.Fatalf("post %d: %v", i, err)
		}
	}
	if fake.Limited() != 0 {
		t.Fatalf("%d calls met a 429: the spent bucket was not shared", fake.Limited())
	}
	if took := time.Since(start); took < 500*time.Millisecond {
		t.Fatalf("three posts on a bucket of two per 800 ms took %v", took)
	}

	// A global 429 to one replica holds the other.
	fake.Storm(discordtest.Storm{N: 1, Global: true, RetryAfter: 700 * time.Millisecond})
	done := make(chan error, 1)
	go func() { _, err := a.channel(ctx, ch.ID); done <- err }()
	testenv.WaitFor(t, 5*time.Second, "the 429", func() bool { return fake.Limited() == 1 })
	start = time.Now()
	if _, err := b.channel(ctx, ch.ID); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took < 400*time.Millisecond {
		t.Fatalf("the other replica went after %v, inside the global retry_after", took)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if early := fake.Early(); len(early) > 0 {
		t.Fatalf("calls inside a retry_after: %+v", early)
	}
}

// TestConcurrentCalls: calls on one route from many goroutines, as a replica's sessions and
// interactions make them, learn its bucket while others wait on it (run with -race); every one
// lands.
func TestConcurrentCalls(t *testing.T) {
	fake := discordtest.New(discordtest.Config{RouteLimit: 5, RouteWindow: 200 * time.Millisecond})
	defer fake.Close()
	_, ch := fake.AddGuild("g", "c")
	a, _ := replicas(t, fake)
	ctx := context.Background()
	var wg sync.WaitGroup
	errs := make(chan error, 20)
	for range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			text := "x"
			if _, err := a.send(ctx, ch.ID, &message{Content: &text}); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if n := len(fake.Messages(ch.ID)); n != 20 {
		t.Fatalf("%d messages posted, want 20", n)
	}
}

// TestRESTErrors: Discord's errors come back typed, with their JSON code.
func TestRESTErrors(t *testing.T) {
	fake := discordtest.New(discordtest.Config{})
	defer fake.Close()
	a, _ := replicas(t, fake)
	_, err := a.channel(context.Background(), "1234567890123456")
	if apiCode(err) != codeUnknownChannel {
		t.Fatalf("an unknown channel: %v", err)
	}
	bad := *a
	bad.token = "wrong"
	_, err = bad.channel(context.Background(), "1234567890123456")
	var apiErr *APIError
	if !errors.As(err, &apiErr) || apiErr.Status != http.StatusUnauthorized || apiErr.Message != "401: Unauthorized" {
		t.Fatalf("a wrong token: %v", err)
	}
}
