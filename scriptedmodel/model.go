// Package scriptedmodel is an offline stand-in for Anthropic's Messages API, faithful enough
// for the real Claude Code CLI to run whole turns against it: streamed text, tool calls and
// their round trips, API errors and retries, interrupted streams.
//
// Nothing is generated. A keyword in the human's latest prompt (see Scenarios) picks a script,
// and the number of assistant messages since that prompt picks the step within it, so the
// model keeps no conversation state (scenario:flaky aside, which counts attempts): a restarted
// CLI, --resume and --continue all work. With
// no keyword it answers with a short note that it is the offline model and how to use it.
//
// Requests with "stream": true get server-sent events paced like the real API's (text in
// several deltas, tool input in input_json_delta pieces); others get the same content as one
// JSON message, at once.
//
// Point the CLI at it with ANTHROPIC_BASE_URL and any non-empty ANTHROPIC_API_KEY.
package scriptedmodel

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Config configures a Model. The zero value is ready to use.
type Config struct {
	// Logger receives one line per request and notes on aborted streams; nil discards.
	Logger *slog.Logger
	// DeltaDelay is the pause between ordinary deltas of a streamed answer, so text visibly
	// streams. 0 means a default of a few milliseconds; a negative value means no pause.
	DeltaDelay time.Duration
	// RetryAfter is what scenario:ratelimit asks the client to wait (sent in whole seconds,
	// rounded up). 0 means one second.
	RetryAfter time.Duration
}

const (
	defaultDeltaDelay = 5 * time.Millisecond
	defaultRetryAfter = time.Second
	// maxBodyBytes is generous: the CLI's requests are ~50-80 KB at the start of a session and
	// grow with the history, but nothing legitimate comes near this.
	maxBodyBytes = 32 << 20
	// shutdownGrace is how long Serve lets in-flight answers finish before cutting them off.
	shutdownGrace = 5 * time.Second
	// maxFlakyKeys bounds the only state the model keeps; forgetting is harmless (a flaky
	// conversation just fails a few more times).
	maxFlakyKeys = 4096
)

// Model answers Messages API requests from scripts. It is safe for concurrent use.
type Model struct {
	log        *slog.Logger
	deltaDelay time.Duration
	retryAfter time.Duration
	grace      time.Duration
	maxBody    int64

	mu    sync.Mutex
	flaky map[string]int
}

// New returns a Model configured by cfg.
func New(cfg Config) *Model {
	m := &Model{
		log:        cfg.Logger,
		deltaDelay: cfg.DeltaDelay,
		retryAfter: cfg.RetryAfter,
		grace:      shutdownGrace,
		maxBody:    maxBodyBytes,
		flaky:      make(map[string]int),
	}
	if m.log == nil {
		m.log = slog.New(slog.DiscardHandler)
	}
	switch {
	case m.deltaDelay == 0:
		m.deltaDelay = defaultDeltaDelay
	case m.deltaDelay < 0:
		m.deltaDelay = 0
	}
	if m.retryAfter <= 0 {
		m.retryAfter = defaultRetryAfter
	}
	return m
}

// Serve answers HTTP on ln until ctx is cancelled, then shuts down: answers in flight get a
// few seconds to finish before their streams are cut. It returns nil after a clean shutdown.
func (m *Model) Serve(ctx context.Context, ln net.Listener) error {
	// Handlers run on a context of their own so a slow stream can be stopped after the grace
	// period without stopping it the moment shutdown begins.
	handlerCtx, stopHandlers := context.WithCancel(context.WithoutCancel(ctx))
	defer stopHandlers()
	srv := &http.Server{
		Handler:           m,
		ReadHeaderTimeout: 10 * time.Second,
		BaseContext:       func(net.Listener) context.Context { return handlerCtx },
		ErrorLog:          slog.NewLogLogger(m.log.Handler(), slog.LevelWarn),
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()

	select {
	case err := <-served:
		return fmt.Errorf("scriptedmodel: serve: %w", err)
	case <-ctx.Done():
	}
	graceCtx, cancel := context.WithTimeout(context.Background(), m.grace)
	defer cancel()
	err := srv.Shutdown(graceCtx)
	if err != nil {
		stopHandlers()
		_ = srv.Close()
		err = fmt.Errorf("scriptedmodel: shutdown: answers still running after %v were cut off: %w", m.grace, err)
	}
	if serveErr := <-served; !errors.Is(serveErr, http.ErrServerClosed) && err == nil {
		err = fmt.Errorf("scriptedmodel: serve: %w", serveErr)
	}
	return err
}

// ServeHTTP routes a request the way api.anthropic.com lays out its paths.
func (m *Model) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	reqID := newID("req_scripted")
	w.Header().Set("request-id", reqID)
	m.log.Debug("scriptedmodel: http request", "request_id", reqID, "method", r.Method, "uri", r.URL.RequestURI(),
		"user_agent", r.UserAgent(), "session", r.Header.Get("x-claude-code-session-id"),
		"retry_count", r.Header.Get("x-stainless-retry-count"), "anthropic_beta", r.Header.Get("anthropic-beta"))

	switch r.URL.Path {
	case "/", "/api/hello":
		// Connectivity probes: the CLI sends HEAD / now and then, and HEAD /api/hello before its
		// first request unless CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC is set.
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			m.methodNotAllowed(w, r, "GET, HEAD")
			return
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(http.StatusOK)
		if r.Method == http.MethodGet {
			_, _ = io.WriteString(w, "Nightona scripted model: POST /v1/messages\n")
		}
	case "/v1/messages", "/v1/messages/count_tokens":
		if r.Method != http.MethodPost {
			m.methodNotAllowed(w, r, "POST")
			return
		}
		if !authorized(r) {
			writeError(w, http.StatusUnauthorized, "authentication_error", "x-api-key header is required")
			return
		}
		if r.URL.Path == "/v1/messages" {
			m.messages(w, r, reqID)
		} else {
			m.countTokens(w, r)
		}
	default:
		writeError(w, http.StatusNotFound, "not_found_error", fmt.Sprintf("Not found: %s %s", r.Method, r.URL.Path))
	}
}

func (m *Model) methodNotAllowed(w http.ResponseWriter, r *http.Request, allow string) {
	w.Header().Set("Allow", allow)
	writeError(w, http.StatusMethodNotAllowed, "invalid_request_error", fmt.Sprintf("Method %s is not allowed on %s", r.Method, r.URL.Path))
}

// authorized accepts any non-empty key: the point is to fail like the real API when the
// caller forgot to send one, not to check it.
func authorized(r *http.Request) bool {
	if strings.TrimSpace(r.Header.Get("x-api-key")) != "" {
		return true
	}
	auth := r.Header.Get("Authorization")
	scheme, token, ok := strings.Cut(auth, " ")
	return ok && strings.EqualFold(scheme, "Bearer") && strings.TrimSpace(token) != ""
}

// readBody reads a request body within the size limit, answering the client itself when it
// cannot.
func (m *Model) readBody(w http.ResponseWriter, r *http.Request) ([]byte, bool) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, m.maxBody))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			writeError(w, http.StatusRequestEntityTooLarge, "request_too_large",
				fmt.Sprintf("Request exceeds the maximum size of %d bytes", tooBig.Limit))
		} else {
			writeError(w, http.StatusBadRequest, "invalid_request_error", "read request body: "+err.Error())
		}
		return nil, false
	}
	return body, true
}

func (m *Model) countTokens(w http.ResponseWriter, r *http.Request) {
	body, ok := m.readBody(w, r)
	if !ok {
		return
	}
	if !json.Valid(body) {
		writeError(w, http.StatusBadRequest, "invalid_request_error", "decode request: body is not valid JSON")
		return
	}
	writeJSON(w, http.StatusOK, map[string]int{"input_tokens": estimateTokens(len(body))})
}

func (m *Model) messages(w http.ResponseWriter, r *http.Request, reqID string) {
	body, ok := m.readBody(w, r)
	if !ok {
		return
	}
	req, msgs, err := decodeRequest(body)
	if err != nil {
		writeError(w, http.StatusBadRequest, "invalid_request_error", err.Error())
		return
	}
	conv := readConversation(req, msgs)
	rep := m.plan(conv, r.Header.Get("x-claude-code-session-id"))
	log := m.log.With("request_id", reqID, "scenario", rep.label, "stream", req.Stream, "cwd", conv.cwd)

	if rep.status != 0 {
		for k, vs := range rep.header {
			w.Header()[k] = vs
		}
		writeError(w, rep.status, rep.errType, rep.errMsg)
		log.Info("scriptedmodel: answered with an error", "status", rep.status, "type", rep.errType)
		return
	}
	msgID := newID("msg_scripted")
	for i := range rep.blocks {
		if rep.blocks[i].kind == "tool_use" {
			rep.blocks[i].id = newID("toolu_scripted")
		}
	}
	out := answer{id: msgID, model: req.Model, reply: &rep, inputTokens: estimateTokens(len(body))}
	if !req.Stream {
		writeJSON(w, http.StatusOK, out.message(true))
		log.Info("scriptedmodel: answered", "message_id", msgID, "stop_reason", rep.stopReason())
		return
	}
	sent, err := m.stream(r.Context(), w, &out)
	if err != nil {
		// Not an error of ours: the client went away, usually because the user interrupted.
		log.Info("scriptedmodel: stream aborted", "message_id", msgID, "deltas_sent", sent, "cause", err)
		return
	}
	log.Info("scriptedmodel: answered", "message_id", msgID, "stop_reason", rep.stopReason(), "deltas_sent", sent)
}

// apiError is Anthropic's error body.
type apiError struct {
	Type  string `json:"type"`
	Error struct {
		Type    string `json:"type"`
		Message string `json:"message"`
	} `json:"error"`
}

func writeError(w http.ResponseWriter, status int, typ, msg string) {
	var e apiError
	e.Type = "error"
	e.Error.Type = typ
	e.Error.Message = msg
	writeJSON(w, status, e)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	data, err := json.Marshal(v)
	if err != nil {
		// Every value written here is built from plain structs and maps of strings.
		panic(fmt.Sprintf("scriptedmodel: encode response: %v", err))
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(data)+1))
	w.WriteHeader(status)
	_, _ = w.Write(append(data, '\n'))
}

// newID makes ids that stay unique across restarts, which matters because the CLI keeps
// message ids in its session files and --resume brings them back.
func newID(prefix string) string {
	var b [12]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails on supported platforms
	return prefix + hex.EncodeToString(b[:])
}

// attempt counts the requests seen for key.
func (m *Model) attempt(key string) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.flaky) >= maxFlakyKeys {
		clear(m.flaky)
	}
	m.flaky[key]++
	return m.flaky[key]
}
