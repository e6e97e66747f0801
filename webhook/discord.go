package webhook

import (
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"time"

	"github.com/go-chi/chi/v5"
)

// DiscordHandler answers Discord's interactions once they are verified (the Discord adapter).
// It is called concurrently.
type DiscordHandler interface {
	// Interaction answers one interaction (the JSON Discord posted) and returns the body of
	// the interaction response. It must return within the deadline of ctx, well inside
	// Discord's 3 seconds, deferring work that takes longer and finishing it after.
	Interaction(ctx context.Context, body []byte) ([]byte, error)
}

// DiscordConfig configures Discord's interactions endpoint. Zero fields take their defaults.
type DiscordConfig struct {
	Logger *slog.Logger
	// PublicKey is the application's public key (General Information in the Developer
	// Portal), which Discord's Ed25519 signatures check against. Required.
	PublicKey ed25519.PublicKey
	// Tolerance is how far a request's timestamp may be from now. Default 5 minutes.
	Tolerance time.Duration
	// Deadline is how long the handler has to answer. Default 2.5 s: Discord gives up on an
	// answer after 3.
	Deadline time.Duration
	// Now is the clock. Default time.Now.
	Now func() time.Time
}

// Discord serves POST /discord/interactions: Discord's interactions endpoint.
type Discord struct {
	h   DiscordHandler
	d   Deduper
	cfg DiscordConfig
	log *slog.Logger
}

// ParseDiscordKey reads an application's public key as the Developer Portal shows it: 64
// hexadecimal characters.
func ParseDiscordKey(s string) (ed25519.PublicKey, error) {
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("a Discord public key is %d hexadecimal characters (General Information in the Developer Portal)", 2*ed25519.PublicKeySize)
	}
	return ed25519.PublicKey(b), nil
}

// NewDiscord returns Discord's interactions endpoint for h. d remembers the signatures seen,
// so that a captured request cannot be played again while its timestamp is fresh.
func NewDiscord(h DiscordHandler, d Deduper, cfg DiscordConfig) (*Discord, error) {
	if h == nil || d == nil {
		return nil, errors.New("discord webhooks: a handler and a deduper are required")
	}
	if len(cfg.PublicKey) != ed25519.PublicKeySize {
		return nil, errors.New("discord webhooks: an Ed25519 public key is required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Tolerance <= 0 {
		cfg.Tolerance = 5 * time.Minute
	}
	if cfg.Deadline <= 0 {
		cfg.Deadline = 2500 * time.Millisecond
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Discord{h: h, d: d, cfg: cfg, log: cfg.Logger.With("platform", "discord")}, nil
}

// Mount adds the route to r.
func (d *Discord) Mount(r chi.Router) {
	r.Post("/discord/interactions", d.ServeHTTP)
}

// ServeHTTP answers one interaction: 401 and nothing done when the signature is wrong or the
// timestamp stale, PONG to a PING, else the handler's answer.
func (d *Discord) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := d.cfg.Now()
	err := d.serve(w, r)
	if elapsed := d.cfg.Now().Sub(start); elapsed > 2500*time.Millisecond {
		d.log.Warn("a Discord interaction took long to answer; Discord gives up after 3 s", "took", elapsed)
	}
	if err == nil {
		return
	}
	var he *httpError
	if !errors.As(err, &he) {
		he = &httpError{http.StatusInternalServerError, "internal error"}
		d.log.Error("discord interaction failed", "err", err)
	}
	http.Error(w, he.msg, he.status)
}

func (d *Discord) serve(w http.ResponseWriter, r *http.Request) error {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	if err != nil {
		return &httpError{http.StatusRequestEntityTooLarge, "body too large"}
	}
	sig := r.Header.Get("X-Signature-Ed25519")
	if err := d.verify(sig, r.Header.Get("X-Signature-Timestamp"), body); err != nil {
		d.log.Warn("refused a Discord interaction", "remote", r.RemoteAddr, "why", err.Error())
		return &httpError{http.StatusUnauthorized, "invalid request signature"}
	}
	var head struct {
		Type int    `json:"type"`
		ID   string `json:"id"`
	}
	if err := json.Unmarshal(body, &head); err != nil {
		return &httpError{http.StatusBadRequest, "malformed body"}
	}
	if head.Type == 1 { // PING: Discord checking the endpoint
		writeJSON(w, []byte(`{"type":1}`))
		return nil
	}
	// A signature is good for one request: the same one again is a replay.
	if first, err := d.d.Once(r.Context(), "discord:signature:"+sig, 2*d.cfg.Tolerance); err != nil {
		d.log.Warn("could not check for a replayed interaction; answering it", "interaction", head.ID, "err", err)
	} else if !first {
		d.log.Warn("refused a replayed Discord interaction", "interaction", head.ID, "remote", r.RemoteAddr)
		return &httpError{http.StatusUnauthorized, "replayed request"}
	}
	ctx, cancel := context.WithTimeout(r.Context(), d.cfg.Deadline)
	defer cancel()
	out, err := d.h.Interaction(ctx, body)
	if err != nil {
		return fmt.Errorf("interaction %s: %w", head.ID, err)
	}
	writeJSON(w, out)
	return nil
}

// verify checks Discord's signature: Ed25519 over the timestamp and the body, with a timestamp
// within the tolerance of now.
func (d *Discord) verify(sigHex, ts string, body []byte) error {
	if sigHex == "" || ts == "" {
		return errors.New("no signature")
	}
	if err := checkTimestamp(ts, d.cfg.Now(), d.cfg.Tolerance); err != nil {
		return err
	}
	sig, err := hex.DecodeString(sigHex)
	if err != nil || len(sig) != ed25519.SignatureSize {
		return errors.New("malformed signature")
	}
	msg := make([]byte, 0, len(ts)+len(body))
	msg = append(append(msg, ts...), body...)
	if !ed25519.Verify(d.cfg.PublicKey, msg, sig) {
		return errors.New("wrong signature")
	}
	return nil
}
