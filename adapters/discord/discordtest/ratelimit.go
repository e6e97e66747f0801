package discordtest

import (
	"encoding/json"
	"fmt"
	"hash/fnv"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Storm makes the fake answer requests with 429 Too Many Requests, the way Discord does when
// a bucket or the global limit is exceeded, whatever the client's pace.
type Storm struct {
	// Method and Route pick the requests ("" matches any): Route as in Call.Route, for
	// instance "/channels/{id}/messages/{id}".
	Method, Route string
	// N is how many matching requests get a 429.
	N int
	// RetryAfter is the wait each 429 asks for. Default 200 ms.
	RetryAfter time.Duration
	// Global makes them global rate limits (every route is held), else the bucket's.
	Global bool
}

type limits struct {
	cfg     Config
	buckets map[string]*window // by bucket hash and top-level resource
	global  window
	holds   map[string]time.Time // by bucket key, or "global"; from the 429s given
	storms  []*Storm
}

type window struct {
	start time.Time
	count int
}

func newLimits(cfg Config) *limits {
	return &limits{cfg: cfg, buckets: map[string]*window{}, holds: map[string]time.Time{}}
}

// Storm injects 429s.
func (s *Server) Storm(st Storm) {
	if st.RetryAfter <= 0 {
		st.RetryAfter = 200 * time.Millisecond
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.limits.storms = append(s.limits.storms, &st)
}

// StormLeft returns how many injected 429s are still to be given.
func (s *Server) StormLeft() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, st := range s.limits.storms {
		n += st.N
	}
	return n
}

// Early returns the requests that came while a 429 still held their bucket (or all of them):
// the client did not wait the retry_after it was given.
func (s *Server) Early() []Call {
	var out []Call
	for _, c := range s.Calls() {
		if c.Early {
			out = append(out, c)
		}
	}
	return out
}

// Limited returns how many requests were answered 429.
func (s *Server) Limited() int {
	n := 0
	for _, c := range s.Calls() {
		if c.Status == http.StatusTooManyRequests {
			n++
		}
	}
	return n
}

// BucketHash is the X-RateLimit-Bucket the fake gives a route.
func BucketHash(method, route string) string {
	h := fnv.New64a()
	h.Write([]byte(method + " " + route))
	return fmt.Sprintf("%016x", h.Sum64())
}

// template turns a path below /api/v{n} into its route (ids replaced) and its top-level
// resource, the way Discord computes rate-limit buckets.
func template(path string) (route, major string) {
	orig := strings.Split(strings.Trim(path, "/"), "/")
	parts := make([]string, len(orig))
	for i, p := range orig {
		parts[i] = p
		switch {
		case i == 2 && (orig[0] == "interactions" || orig[0] == "webhooks"):
			parts[i] = "{token}"
		case isID(p):
			parts[i] = "{id}"
			if i == 1 && (orig[0] == "channels" || orig[0] == "guilds" || orig[0] == "webhooks") {
				major = p
			}
		}
	}
	if len(orig) >= 3 && orig[0] == "webhooks" {
		major += "/" + orig[2]
	}
	return "/" + strings.Join(parts, "/"), major
}

func isID(s string) bool {
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

// exemptFromGlobal: interaction responses and their webhooks do not count against the bot's
// global limit.
func exemptFromGlobal(route string) bool {
	return strings.HasPrefix(route, "/interactions/") || strings.HasPrefix(route, "/webhooks/")
}

// limit decides whether a request goes through. It sets the rate-limit headers and, for a
// 429, writes the answer and returns false. Call with s.mu held.
func (l *limits) limit(w http.ResponseWriter, c *Call) bool {
	now := c.At
	hash := BucketHash(c.Method, c.Route)
	key := hash + ":" + c.Major
	global := !exemptFromGlobal(c.Route)

	// A request while a 429 still holds: the client did not wait.
	if until, ok := l.holds["global"]; ok && global && now.Before(until) {
		c.Early = true
		return l.refuse(w, c, until.Sub(now), true, hash)
	}
	if until, ok := l.holds[key]; ok && now.Before(until) {
		c.Early = true
		return l.refuse(w, c, until.Sub(now), false, hash)
	}
	for _, st := range l.storms {
		if st.N > 0 && (st.Method == "" || st.Method == c.Method) && (st.Route == "" || st.Route == c.Route) {
			st.N--
			if st.Global {
				l.holds["global"] = now.Add(st.RetryAfter)
			} else {
				l.holds[key] = now.Add(st.RetryAfter)
			}
			return l.refuse(w, c, st.RetryAfter, st.Global, hash)
		}
	}
	if global {
		if now.Sub(l.global.start) >= time.Second {
			l.global = window{start: now}
		}
		if l.global.count >= l.cfg.GlobalLimit {
			until := l.global.start.Add(time.Second)
			l.holds["global"] = until
			return l.refuse(w, c, until.Sub(now), true, hash)
		}
		l.global.count++
	}
	b := l.buckets[key]
	if b == nil || now.Sub(b.start) >= l.cfg.RouteWindow {
		b = &window{start: now}
		l.buckets[key] = b
	}
	reset := b.start.Add(l.cfg.RouteWindow)
	if b.count >= l.cfg.RouteLimit {
		l.holds[key] = reset
		return l.refuse(w, c, reset.Sub(now), false, hash)
	}
	b.count++
	h := w.Header()
	h.Set("X-RateLimit-Limit", strconv.Itoa(l.cfg.RouteLimit))
	h.Set("X-RateLimit-Remaining", strconv.Itoa(l.cfg.RouteLimit-b.count))
	h.Set("X-RateLimit-Reset", fmt.Sprintf("%.3f", float64(reset.UnixMilli())/1000))
	h.Set("X-RateLimit-Reset-After", fmt.Sprintf("%.3f", reset.Sub(now).Seconds()))
	h.Set("X-RateLimit-Bucket", hash)
	return true
}

func (l *limits) refuse(w http.ResponseWriter, c *Call, after time.Duration, global bool, hash string) bool {
	h := w.Header()
	h.Set("Retry-After", strconv.Itoa(int(math.Ceil(after.Seconds()))))
	h.Set("X-RateLimit-Limit", strconv.Itoa(l.cfg.RouteLimit))
	h.Set("X-RateLimit-Remaining", "0")
	h.Set("X-RateLimit-Reset-After", fmt.Sprintf("%.3f", after.Seconds()))
	h.Set("X-RateLimit-Bucket", hash)
	scope := "user"
	if global {
		scope = "global"
		h.Set("X-RateLimit-Global", "true")
	}
	h.Set("X-RateLimit-Scope", scope)
	h.Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusTooManyRequests)
	_ = json.NewEncoder(w).Encode(map[string]any{
		"message": "You are being rate limited.", "retry_after": math.Round(after.Seconds()*1000) / 1000, "global": global,
	})
	c.Status = http.StatusTooManyRequests
	return false
}
