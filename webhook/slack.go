package webhook

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/go-chi/chi/v5"
)

// SlackHandler handles Slack's callbacks once they are verified (the Slack adapter). Its
// methods are called concurrently.
type SlackHandler interface {
	// SlackEvent handles the body of an Events API event_callback. It is called after the
	// delivery was acknowledged, once per event id, and may take its time.
	SlackEvent(ctx context.Context, body []byte)
	// SlackCommand answers a slash command (the form Slack posted) within 3 seconds: the
	// JSON it returns is the answer's body (nil: an empty 200).
	SlackCommand(ctx context.Context, form url.Values) []byte
	// SlackInteraction handles an interaction payload (the JSON of the payload field) and
	// returns at once; what it returns is the answer's body (nil: an empty 200).
	SlackInteraction(ctx context.Context, payload []byte) []byte
}

// Deduper remembers deliveries across replicas (the Redis store). Once reports whether key is
// seen for the first time in ttl; an error means the store did not answer.
type Deduper interface {
	Once(ctx context.Context, key string, ttl time.Duration) (bool, error)
}

// SlackConfig configures Slack's callbacks. Zero fields take their defaults.
type SlackConfig struct {
	Logger *slog.Logger
	// SigningSecret is the app's signing secret (Basic Information in the app's settings).
	// Required.
	SigningSecret string
	// Tolerance is how far a request's timestamp may be from now. Default 5 minutes, as Slack
	// advises.
	Tolerance time.Duration
	// EventKey is the key an event id is remembered under. Default "slack:event:<id>".
	EventKey func(eventID string) string
	// EventTTL is how long event ids are remembered. Default 1 hour (Slack retries for
	// about one).
	EventTTL time.Duration
	// WorkTimeout bounds the work of one event after its acknowledgement. Default 2 minutes.
	WorkTimeout time.Duration
	// Now is the clock. Default time.Now.
	Now func() time.Time
}

// maxBody bounds a callback's body; Slack's are a few kilobytes.
const maxBody = 1 << 20

// Slack serves POST /slack/events, /slack/commands and /slack/interactivity.
type Slack struct {
	h   SlackHandler
	d   Deduper
	cfg SlackConfig
	log *slog.Logger

	mu     sync.Mutex
	closed bool
	wg     sync.WaitGroup
	base   context.Context
	cancel context.CancelFunc
}

// NewSlack returns Slack's callbacks for h.
func NewSlack(h SlackHandler, d Deduper, cfg SlackConfig) (*Slack, error) {
	if h == nil || d == nil {
		return nil, errors.New("slack webhooks: a handler and a deduper are required")
	}
	if cfg.SigningSecret == "" {
		return nil, errors.New("slack webhooks: a signing secret is required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Tolerance <= 0 {
		cfg.Tolerance = 5 * time.Minute
	}
	if cfg.EventKey == nil {
		cfg.EventKey = func(id string) string { return "slack:event:" + id }
	}
	if cfg.EventTTL <= 0 {
		cfg.EventTTL = time.Hour
	}
	if cfg.WorkTimeout <= 0 {
		cfg.WorkTimeout = 2 * time.Minute
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	base, cancel := context.WithCancel(context.Background())
	return &Slack{h: h, d: d, cfg: cfg, log: cfg.Logger.With("platform", "slack"), base: base, cancel: cancel}, nil
}

// Mount adds the routes to r.
func (s *Slack) Mount(r chi.Router) {
	r.Post("/slack/events", s.serve(s.events))
	r.Post("/slack/commands", s.serve(s.commands))
	r.Post("/slack/interactivity", s.serve(s.interactivity))
}

// Close stops taking callbacks (they are answered 503, for Slack to deliver again, to another
// replica) and waits until the work of the events taken so far ends or ctx does.
func (s *Slack) Close(ctx context.Context) error {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	defer s.cancel()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// httpError is an answer other than 200.
type httpError struct {
	status int
	msg    string
}

func (e *httpError) Error() string { return e.msg }

// serve reads and verifies a callback, runs f on its body, and turns f's error into the status.
func (s *Slack) serve(f func(w http.ResponseWriter, r *http.Request, body []byte) error) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		err := s.handle(w, r, f)
		if err == nil {
			return
		}
		var he *httpError
		if !errors.As(err, &he) {
			he = &httpError{http.StatusInternalServerError, "internal error"}
			s.log.Error("slack callback failed", "path", r.URL.Path, "err", err)
		}
		if he.status == http.StatusServiceUnavailable {
			w.Header().Set("Retry-After", "5")
		}
		http.Error(w, he.msg, he.status)
	}
}

func (s *Slack) handle(w http.ResponseWriter, r *http.Request, f func(w http.ResponseWriter, r *http.Request, body []byte) error) error {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	if err != nil {
		return &httpError{http.StatusRequestEntityTooLarge, "body too large"}
	}
	if err := s.verify(r.Header, body); err != nil {
		s.log.Warn("refused a Slack callback", "path", r.URL.Path, "remote", r.RemoteAddr, "why", err.Error())
		return &httpError{http.StatusUnauthorized, "invalid signature"}
	}
	s.mu.Lock()
	closed := s.closed
	s.mu.Unlock()
	if closed {
		return &httpError{http.StatusServiceUnavailable, "shutting down"}
	}
	return f(w, r, body)
}

// verify checks Slack's signature of the request: v0=HMAC-SHA256(secret, "v0:<ts>:<body>"),
// with a timestamp within the tolerance of now (so a captured request cannot be replayed).
func (s *Slack) verify(h http.Header, body []byte) error {
	tsHeader := h.Get("X-Slack-Request-Timestamp")
	sig := h.Get("X-Slack-Signature")
	if tsHeader == "" || sig == "" {
		return errors.New("no signature")
	}
	if err := checkTimestamp(tsHeader, s.cfg.Now(), s.cfg.Tolerance); err != nil {
		return err
	}
	got, err := hex.DecodeString(strings.TrimPrefix(sig, "v0="))
	if err != nil || !strings.HasPrefix(sig, "v0=") {
		return errors.New("malformed signature")
	}
	mac := hmac.New(sha256.New, []byte(s.cfg.SigningSecret))
	mac.Write([]byte("v0:" + tsHeader + ":"))
	mac.Write(body)
	if !hmac.Equal(got, mac.Sum(nil)) {
		return errors.New("wrong signature")
	}
	return nil
}

func (s *Slack) events(w http.ResponseWriter, r *http.Request, body []byte) error {
	var env struct {
		Type      string `json:"type"`
		Challenge string `json:"challenge"`
		EventID   string `json:"event_id"`
		Event     struct {
			Type string `json:"type"`
		} `json:"event"`
	}
	if err := json.Unmarshal(body, &env); err != nil {
		return &httpError{http.StatusBadRequest, "malformed body"}
	}
	switch env.Type {
	case "url_verification":
		w.Header().Set("Content-Type", "application/json")
		return json.NewEncoder(w).Encode(map[string]string{"challenge": env.Challenge})
	case "app_rate_limited":
		s.log.Warn("Slack is dropping this app's events: over the Events API limit")
	case "event_callback":
		retry := r.Header.Get("X-Slack-Retry-Num")
		if env.EventID != "" {
			first, err := s.d.Once(r.Context(), s.cfg.EventKey(env.EventID), s.cfg.EventTTL)
			if err != nil {
				// Better a rare duplicate than a lost prompt.
				s.log.Warn("could not check for a repeated delivery; handling it", "event_id", env.EventID, "err", err)
			} else if !first {
				s.log.Info("dropping a delivery already handled", "event_id", env.EventID, "retry", retry, "reason", r.Header.Get("X-Slack-Retry-Reason"))
				w.WriteHeader(http.StatusOK)
				return nil
			}
		}
		s.spawn(func(ctx context.Context) { s.h.SlackEvent(ctx, body) })
	}
	w.WriteHeader(http.StatusOK)
	return nil
}

// spawn runs an event's work after the acknowledgement, tracked for Close.
func (s *Slack) spawn(f func(ctx context.Context)) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		ctx, cancel := context.WithTimeout(s.base, s.cfg.WorkTimeout)
		defer cancel()
		f(ctx)
	}()
}

func (s *Slack) commands(w http.ResponseWriter, r *http.Request, body []byte) error {
	form, err := url.ParseQuery(string(body))
	if err != nil {
		return &httpError{http.StatusBadRequest, "malformed form"}
	}
	if form.Get("ssl_check") == "1" { // Slack checking the certificate
		w.WriteHeader(http.StatusOK)
		return nil
	}
	writeJSON(w, s.h.SlackCommand(r.Context(), form))
	return nil
}

func (s *Slack) interactivity(w http.ResponseWriter, r *http.Request, body []byte) error {
	form, err := url.ParseQuery(string(body))
	if err != nil || form.Get("payload") == "" {
		return &httpError{http.StatusBadRequest, "malformed form"}
	}
	writeJSON(w, s.h.SlackInteraction(r.Context(), []byte(form.Get("payload"))))
	return nil
}

func writeJSON(w http.ResponseWriter, body []byte) {
	if len(body) == 0 {
		w.WriteHeader(http.StatusOK)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Write(body)
}
