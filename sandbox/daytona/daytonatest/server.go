// Package daytonatest is a fake Daytona for tests: an httptest server that speaks Daytona's
// REST API (under /api), the in-sandbox toolbox API through a toolbox proxy (under /toolbox)
// and serves port previews (under /preview), checking every request against Daytona's own
// OpenAPI definitions, which it embeds.
//
// Sandboxes are stateful and move through Daytona's states with configurable delays. Their
// toolbox runs for real on this machine: each sandbox is a folder (its HOME, with a workspace
// folder in it), its commands are child processes of the test in process groups of their own,
// and its previews are reverse-proxied to 127.0.0.1 ports. Stopping, archiving or deleting a
// sandbox kills its processes; Close kills everything.
//
// Where the specs say too little the fake follows the Daytona sources the specs were built
// from (the API's NestJS exception filter, the proxy and the daemon); see spec/README.md.
package daytonatest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Config tunes a fake. Zero values take the defaults noted.
type Config struct {
	// CreateDelay, StartDelay, StopDelay and ArchiveDelay are the time a sandbox spends in the
	// transitional state (creating, starting, stopping, archiving); 50ms each by default,
	// negative for none. Deleting spends StopDelay in destroying; restoring an archived
	// sandbox takes ArchiveDelay+StartDelay.
	CreateDelay, StartDelay, StopDelay, ArchiveDelay time.Duration
	// Quota caps the sandboxes that are not destroyed; 0 is no limit. Past it, create answers
	// Daytona's quota error (400, "Total CPU limit exceeded. Maximum allowed: <Quota>...").
	Quota int
	// Snapshots lists the snapshots that exist; nil accepts any name. A create naming another
	// one fails like Daytona's "Snapshot ... not found".
	Snapshots []string
	// DefaultSnapshot is used when a create names none; it always exists. Default
	// "daytonaio/sandbox".
	DefaultSnapshot string
	// PreviewAuthRedirect makes a preview request that fails authentication (no or a wrong
	// token, an unknown or deleted sandbox, an expired signed URL) get what Daytona's proxy
	// answers: 307 to a login page that answers 200. By default it gets 401 with the proxy's
	// error body instead (502 for a sandbox that does not exist), which a program can act on
	// more easily but Daytona never sends.
	PreviewAuthRedirect bool
	// KillGrace is how long processes get between SIGTERM and SIGKILL; default 1s.
	KillGrace time.Duration
	// Logger receives the fake's log; default: the test's log.
	Logger *slog.Logger
}

// Server is a running fake Daytona.
type Server struct {
	// URL is the server's root, e.g. http://127.0.0.1:12345.
	URL string
	// APIURL is the REST API base (Daytona Cloud's https://app.daytona.io/api), no trailing
	// slash.
	APIURL string
	// ToolboxURL is the toolbox proxy URL that sandboxes report; toolbox calls go to
	// ToolboxURL/<sandboxId>/<toolbox path>.
	ToolboxURL string
	// APIKey must be sent as "Authorization: Bearer <APIKey>" to the API and the toolbox.
	APIKey string
	// OrganizationID is the organization every sandbox belongs to.
	OrganizationID string

	tb      testing.TB
	cfg     Config
	log     *slog.Logger
	hs      *httptest.Server
	api     *spec
	toolbox *spec
	root    string // holds every sandbox's folder and the session pipes
	proxy   *http.Transport

	ctx    context.Context // cancelled by Close: ends delays and waits
	cancel context.CancelFunc
	bg     sync.WaitGroup // transitions and kills still running
	once   sync.Once

	closed atomic.Bool // set first thing in Close; nothing logs or fails the test after

	mu        sync.Mutex
	sandboxes map[string]*sandbox
	signed    map[string]*signedURL
	requests  []string
	faults    []fault
	changed   chan struct{} // closed and replaced whenever a sandbox changes state
}

// fault is a queued FailNext.
type fault struct {
	method, suffix string
	status         int
	message        string
}

// Info is what the fake holds of one sandbox.
type Info struct {
	ID, Name, State, Snapshot string
	Labels, Env               map[string]string
	Public                    bool
	// Home is the sandbox's folder (its HOME); WorkDir is the workspace folder in it.
	Home, WorkDir string
	ErrorReason   string
	// AutoStop, AutoArchive and AutoDelete are the intervals in minutes as Daytona keeps them.
	AutoStop, AutoArchive, AutoDelete int
	CPU, Memory, Disk                 int
	// Processes counts the process groups of the sandbox that are still alive.
	Processes int
}

// New starts a fake Daytona; it is closed when the test ends.
func New(tb testing.TB, cfg Config) *Server {
	tb.Helper()
	api, err := loadSpec("api", apiSpecYAML)
	if err != nil {
		tb.Fatalf("daytonatest: %v", err)
	}
	toolbox, err := loadSpec("toolbox", toolboxSpecYAML)
	if err != nil {
		tb.Fatalf("daytonatest: %v", err)
	}
	for _, d := range []*time.Duration{&cfg.CreateDelay, &cfg.StartDelay, &cfg.StopDelay, &cfg.ArchiveDelay} {
		switch {
		case *d == 0:
			*d = 50 * time.Millisecond
		case *d < 0:
			*d = 0
		}
	}
	if cfg.DefaultSnapshot == "" {
		cfg.DefaultSnapshot = "daytonaio/sandbox"
	}
	if cfg.KillGrace <= 0 {
		cfg.KillGrace = time.Second
	}
	s := &Server{
		APIKey:         "dtn_" + randomHex(24),
		OrganizationID: randomUUID(),
		tb:             tb,
		cfg:            cfg,
		api:            api,
		toolbox:        toolbox,
		root:           tb.TempDir(),
		proxy:          &http.Transport{Proxy: nil, MaxIdleConnsPerHost: 4},
		sandboxes:      map[string]*sandbox{},
		signed:         map[string]*signedURL{},
		changed:        make(chan struct{}),
	}
	s.log = cfg.Logger
	if s.log == nil {
		s.log = slog.New(slog.NewTextHandler(&tbWriter{s: s}, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.hs = httptest.NewServer(s)
	s.URL = s.hs.URL
	s.APIURL = s.URL + "/api"
	s.ToolboxURL = s.URL + "/toolbox"
	tb.Cleanup(s.Close)
	return s
}

// Close kills every sandbox's processes and stops the server. It is safe to call twice.
func (s *Server) Close() {
	s.once.Do(func() {
		s.closed.Store(true)
		s.mu.Lock()
		var all []remains
		for _, sb := range s.sandboxes {
			all = append(all, sb.takeProcs())
		}
		s.mu.Unlock()
		s.cancel()
		killRemains(all, 0)
		s.hs.Close()
		s.bg.Wait()
		s.proxy.CloseIdleConnections()
	})
}

// ServeHTTP routes a request to the API, the toolbox proxy or the preview proxy.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.requests = append(s.requests, r.Method+" "+r.URL.Path)
	s.mu.Unlock()
	switch {
	case r.URL.Path == "/api" || strings.HasPrefix(r.URL.Path, "/api/"):
		s.serveAPI(w, r)
	case strings.HasPrefix(r.URL.Path, "/toolbox/"):
		s.serveToolbox(w, r)
	case strings.HasPrefix(r.URL.Path, "/preview/"):
		s.servePreview(w, r)
	case r.URL.Path == previewLoginPath:
		servePreviewLogin(w, r)
	default:
		http.NotFound(w, r)
	}
}

// Requests returns "METHOD /path" (no query) of every request so far, in order: API calls
// start with /api, toolbox calls with /toolbox/<id>, previews with /preview.
func (s *Server) Requests() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.requests...)
}

// FailNext makes the next request whose method is method ("" for any) and whose path, after
// /api or /toolbox/<id>, ends with pathSuffix answer status with Daytona's error body and
// message instead of being served. Calls queue up; each fails one request.
func (s *Server) FailNext(method, pathSuffix string, status int, message string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = append(s.faults, fault{method: method, suffix: pathSuffix, status: status, message: message})
}

// takeFault removes and returns the first queued fault matching the request.
func (s *Server) takeFault(method, path string) (fault, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, f := range s.faults {
		if (f.method == "" || strings.EqualFold(f.method, method)) && strings.HasSuffix(path, f.suffix) {
			s.faults = append(s.faults[:i], s.faults[i+1:]...)
			return f, true
		}
	}
	return fault{}, false
}

// Sandboxes returns the sandboxes that exist now (not destroyed), oldest first.
func (s *Server) Sandboxes() []Info {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Info, 0, len(s.sandboxes))
	for _, sb := range s.sortedLocked("createdAt", false) {
		out = append(out, sb.info())
	}
	return out
}

// SetState forces a sandbox into state, as a platform fault would: "error" with reason as
// its errorReason, "destroyed" to make it vanish, or any other state of Daytona's enum. A
// transition under way is abandoned; leaving "started" kills the sandbox's processes.
func (s *Server) SetState(id, state, reason string) {
	s.mu.Lock()
	sb := s.lookupLocked(id)
	if sb == nil {
		s.mu.Unlock()
		s.tb.Errorf("daytonatest: SetState(%q, %q): no such sandbox", id, state)
		return
	}
	sb.gen++
	var procs remains
	if state != stateStarted {
		procs = sb.takeProcs()
	}
	if state == stateDestroyed {
		s.destroyLocked(sb)
	} else {
		sb.state = state
		sb.errorReason = ""
		if state == stateError || state == stateBuildFailed {
			sb.errorReason = reason
			sb.recoverable = false
		}
		if d := desiredFor(state); d != "" {
			sb.desired = d
		}
		sb.updated = time.Now()
		s.notifyLocked()
	}
	s.mu.Unlock()
	s.log.Info("sandbox state forced", "id", id, "state", state, "reason", reason)
	s.goKill(procs, s.cfg.KillGrace, nil)
}

// notifyLocked wakes everything waiting for a state change.
func (s *Server) notifyLocked() {
	close(s.changed)
	s.changed = make(chan struct{})
}

// waitFor waits until cond (called with s.mu held) holds, ctx ends or timeout passes, and
// reports whether cond held.
func (s *Server) waitFor(ctx context.Context, timeout time.Duration, cond func() bool) bool {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		s.mu.Lock()
		ok, ch := cond(), s.changed
		s.mu.Unlock()
		if ok {
			return true
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return false
		case <-s.ctx.Done():
			return false
		case <-deadline.C:
			return false
		}
	}
}

// after runs f (with s.mu held) once d has passed, unless the fake closes first.
func (s *Server) after(d time.Duration, f func()) {
	s.bg.Add(1)
	go func() {
		defer s.bg.Done()
		if d > 0 {
			t := time.NewTimer(d)
			defer t.Stop()
			select {
			case <-t.C:
			case <-s.ctx.Done():
				return
			}
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		if !s.closed.Load() {
			f()
		}
	}()
}

// goKill kills what a sandbox left in the background and then runs done (with s.mu held),
// so that a transition completes only once its processes are gone.
func (s *Server) goKill(procs remains, grace time.Duration, done func()) {
	if len(procs.groups) == 0 && procs.marker == "" && done == nil {
		return
	}
	s.bg.Add(1)
	go func() {
		defer s.bg.Done()
		killRemains([]remains{procs}, grace)
		if done != nil {
			s.mu.Lock()
			defer s.mu.Unlock()
			if !s.closed.Load() {
				done()
			}
		}
	}()
}

// apiError writes the body of the API's NestJS exception filter:
// {path, timestamp, statusCode, error, message}.
func apiError(w http.ResponseWriter, r *http.Request, status int, message string) {
	writeJSON(w, status, map[string]any{
		"path":       r.URL.RequestURI(),
		"timestamp":  isoTime(time.Now()),
		"statusCode": status,
		"error":      http.StatusText(status),
		"message":    message,
	})
}

// toolboxError writes the body of Daytona's Go services (proxy, runner, daemon):
// {statusCode, message, code, timestamp, path, method}.
func toolboxError(w http.ResponseWriter, r *http.Request, path string, status int, message string) {
	code := strings.ToUpper(strings.ReplaceAll(http.StatusText(status), " ", "_"))
	writeJSON(w, status, map[string]any{
		"statusCode": status,
		"message":    message,
		"code":       code,
		"timestamp":  time.Now().UTC().Format(time.RFC3339Nano),
		"path":       path,
		"method":     r.Method,
	})
}

// writeJSON writes v as the JSON body.
func writeJSON(w http.ResponseWriter, status int, v any) {
	data, err := json.Marshal(v)
	if err != nil {
		http.Error(w, "daytonatest: encode response: "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write(data)
}

// isoTime formats like JavaScript's Date.toISOString, as the API does.
func isoTime(t time.Time) string {
	return t.UTC().Format("2006-01-02T15:04:05.000Z")
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// randomUUID returns a version 4 UUID, the form of Daytona's sandbox ids.
func randomUUID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b)
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

// randomToken returns n lowercase letters and digits, the form of preview tokens.
func randomToken(n int) string {
	const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
	b := make([]byte, n)
	_, _ = rand.Read(b)
	for i := range b {
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	return string(b)
}

// tbWriter sends log lines to the test's log until the fake closes: logging to a finished
// test panics.
type tbWriter struct{ s *Server }

func (w *tbWriter) Write(p []byte) (int, error) {
	if !w.s.closed.Load() {
		w.s.tb.Logf("daytonatest: %s", strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}

// failf reports a request that breaks the spec: the test fails, the client gets an error.
func (s *Server) failf(format string, args ...any) {
	if !s.closed.Load() {
		s.tb.Errorf("daytonatest: "+format, args...)
	}
}

// ensure the fake satisfies http.Handler.
var _ http.Handler = (*Server)(nil)
