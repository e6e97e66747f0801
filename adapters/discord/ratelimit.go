package discord

import (
	"context"
	"encoding/json"
	"log/slog"
	"math"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Budgets is where the rate limits every replica shares are kept (*redisstore.Store): Take
// reserves a call and says how long to wait before making it; Hold stops a budget for d (a
// 429's retry_after, or a bucket spent until its reset). Both are safe for concurrent use; an
// error means the store is away, and the call then goes without waiting.
type Budgets interface {
	Take(ctx context.Context, key string, rate float64, burst int) (time.Duration, error)
	Hold(ctx context.Context, key string, d time.Duration) error
}

// limiter paces REST calls by Discord's rate limits, shared by every replica through Budgets:
// the global limit (Config.GlobalRate a second), and each bucket's limit as its
// X-RateLimit-* headers tell it. A bucket spent to 0 is held until its reset; a 429 holds its
// bucket, or everything when it is global, for its retry_after.
type limiter struct {
	budgets Budgets
	global  float64
	log     *slog.Logger
	metrics *metrics

	mu      sync.Mutex
	buckets map[string]*bucket // by method and route
}

// bucket is what the headers taught about one route's limit.
type bucket struct {
	hash   string        // X-RateLimit-Bucket: routes that share a limit share it
	limit  int           // X-RateLimit-Limit
	window time.Duration // the longest X-RateLimit-Reset-After seen: the limit's period
}

// Budget keys in the store.
const (
	globalBudget = "discord:global"
	bucketBudget = "discord:bucket:"
)

func newLimiter(b Budgets, globalRate float64, log *slog.Logger, m *metrics) *limiter {
	return &limiter{budgets: b, global: globalRate, log: log, metrics: m, buckets: map[string]*bucket{}}
}

// route names a request's rate-limit route: the path with ids and tokens replaced, and its
// top-level resource (a channel, guild or webhook), which Discord limits separately.
type route struct {
	method string
	path   string // "/channels/{id}/messages/{id}"
	major  string
}

func routeOf(method, path string) route {
	path, _, _ = strings.Cut(path, "?")
	parts := strings.Split(strings.Trim(path, "/"), "/")
	major := ""
	for i, p := range parts {
		switch {
		case i == 2 && (parts[0] == "interactions" || parts[0] == "webhooks"):
			if parts[0] == "webhooks" {
				major += "/" + p
			}
			parts[i] = "{token}"
		case isSnowflake(p):
			if i == 1 && (parts[0] == "channels" || parts[0] == "guilds" || parts[0] == "webhooks") {
				major = p
			}
			parts[i] = "{id}"
		}
	}
	return route{method: method, path: "/" + strings.Join(parts, "/"), major: major}
}

func isSnowflake(s string) bool {
	if s == "" || len(s) > 20 {
		return false
	}
	for _, r := range s {
		if r < '0' || r > '9' {
			return false
		}
	}
	return true
}

func (r route) String() string { return r.method + " " + r.path }

// global reports whether the route counts against the bot's global limit: interaction
// answers and their webhooks do not.
func (r route) global() bool {
	return !strings.HasPrefix(r.path, "/interactions/") && !strings.HasPrefix(r.path, "/webhooks/")
}

// key is the route's budget: its bucket's when the headers named it, else its own; and what
// is known of the bucket (a copy: observe changes it under mu while calls wait).
func (l *limiter) key(r route) (string, bucket) {
	l.mu.Lock()
	defer l.mu.Unlock()
	var known bucket
	if b := l.buckets[r.String()]; b != nil {
		known = *b
	}
	if known.hash != "" {
		return bucketBudget + known.hash + ":" + r.major, known
	}
	return bucketBudget + r.String() + ":" + r.major, known
}

// wait blocks until the call may go: the global budget and the route's bucket both allow it.
func (l *limiter) wait(ctx context.Context, r route) error {
	var wait time.Duration
	if r.global() {
		d, err := l.budgets.Take(ctx, globalBudget, l.global, max(1, int(l.global/2)))
		if err == nil {
			wait = d
		}
	}
	key, b := l.key(r)
	// A bucket not learned yet still has its key looked at: a 429 may hold it.
	rate, burst := l.global, max(1, int(l.global))
	if b.limit > 0 && b.window > 0 {
		rate = float64(b.limit) / b.window.Seconds()
		burst = max(1, b.limit/2)
	}
	if d, err := l.budgets.Take(ctx, key, rate, burst); err == nil {
		wait = max(wait, d)
	}
	if wait <= 0 {
		return nil
	}
	l.metrics.waited.Observe(wait.Seconds())
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// observe learns from a response's rate-limit headers, and holds a bucket the response says
// is spent until it resets.
func (l *limiter) observe(ctx context.Context, r route, h http.Header) {
	hash := h.Get("X-RateLimit-Bucket")
	limit, _ := strconv.Atoi(h.Get("X-RateLimit-Limit"))
	remaining, errRem := strconv.Atoi(h.Get("X-RateLimit-Remaining"))
	resetAfter := seconds(h.Get("X-RateLimit-Reset-After"))
	if hash == "" && limit == 0 {
		return
	}
	l.mu.Lock()
	b := l.buckets[r.String()]
	if b == nil {
		b = &bucket{}
		l.buckets[r.String()] = b
	}
	b.hash = hash
	if limit > 0 {
		b.limit = limit
	}
	if resetAfter > b.window {
		b.window = resetAfter
	}
	l.mu.Unlock()
	if errRem == nil && remaining == 0 && resetAfter > 0 {
		key, _ := l.key(r)
		if err := l.budgets.Hold(ctx, key, resetAfter); err != nil {
			l.log.Debug("could not share a spent bucket with the other replicas", "route", r.String(), "err", err)
		}
	}
}

// limited handles a 429: it holds the bucket, or every route when the limit is global, for
// the retry_after Discord asks, and returns it.
func (l *limiter) limited(ctx context.Context, r route, h http.Header, body []byte) time.Duration {
	retry, global := retryAfter(h, body)
	scope := h.Get("X-RateLimit-Scope")
	key, _ := l.key(r)
	if global {
		key, scope = globalBudget, "global"
	}
	if scope == "" {
		scope = "user"
	}
	l.metrics.limited.WithLabelValues(scope).Inc()
	l.log.Info("rate limited by Discord; waiting", "route", r.String(), "scope", scope, "retry_after", retry)
	if err := l.budgets.Hold(ctx, key, retry); err != nil {
		l.log.Debug("could not share a rate limit with the other replicas", "route", r.String(), "err", err)
	}
	return retry
}

// retryAfter reads a 429: the body's retry_after (seconds, with fractions) and global flag,
// else the Retry-After header.
func retryAfter(h http.Header, body []byte) (time.Duration, bool) {
	var b struct {
		RetryAfter float64 `json:"retry_after"`
		Global     bool    `json:"global"`
	}
	_ = json.Unmarshal(body, &b)
	d := time.Duration(b.RetryAfter * float64(time.Second))
	if d <= 0 {
		d = seconds(h.Get("Retry-After"))
	}
	if d <= 0 {
		d = time.Second // a 429 with no wait named: be careful
	}
	global := b.Global || h.Get("X-RateLimit-Global") == "true" || h.Get("X-RateLimit-Scope") == "global"
	return d, global
}

func seconds(s string) time.Duration {
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || f < 0 || math.IsInf(f, 0) || math.IsNaN(f) {
		return 0
	}
	return time.Duration(f * float64(time.Second))
}
