// Package daytona runs sandboxes on Daytona (https://daytona.io): one Daytona sandbox per chat
// thread, made from a snapshot that has Claude Code (see snapshot/README.md), with the relay
// uploaded and started in it and reached through Daytona's preview proxy.
//
// # The relay in a sandbox
//
// Everything of Nightona's lives in ~/.nightona in the sandbox: the relay binary (uploaded when
// its SHA-256 differs from Config.RelayBinary's, or taken from /usr/local/bin/nightona-relay
// when a snapshot bakes in the same build), the script that starts it, its token file (mode
// 0600) and its pid file. The workspace is ~/workspace unless Config.Workspace says otherwise
// (a snapshot that ships its app in /app sets Workspace to "/app").
//
// Every start of the relay gets a fresh token, written to the token file and read from there
// by the start script, so it never appears on a command line, in the toolbox's session list or
// in a label. The relay listens on a port chosen free in 3000-9999 (the range Daytona
// previews), the dev server on another; both ports are kept as sandbox labels
// (nightona.relay-port, nightona.dev-port), as is the permission mode. A bot replica that did
// not start the relay therefore finds it from the sandbox alone: the port from the labels, the
// preview URL and its token from Daytona (the preview token changes with every start of the
// sandbox, so it is fetched again, never kept across starts), and the relay token by
// downloading the token file through the toolbox. What the provider remembers is only a cache,
// checked against the relay on every Get.
//
// The relay runs in a toolbox process session, since the toolbox's plain execute waits for the
// output of anything left running. It is up when its /healthz answers through the preview
// proxy and its stream endpoint takes the token.
//
// # Own client or Daytona's
//
// The package talks to Daytona with a small client of its own on net/http rather than the
// generated clients (github.com/daytonaio/daytona/libs/api-client-go and
// toolbox-api-client-go). Those add no third-party modules, but they are 4.7 MB of generated
// code for some twenty calls, and on the merits they fall short where this provider needs
// care: their models refuse a response that lacks any field the spec marks required (the
// Sandbox model alone has fourteen), so a server that drops one we never read breaks every
// call; they have no retries and return one generic error type, where we need retry rules per
// call (POST /sandbox must never be repeated blindly) and errors mapped to the sandbox
// sentinels with Daytona's own message; their upload takes an *os.File; and their debug mode
// dumps requests with the Authorization header. The client here reads only the fields it uses,
// retries by rule and keeps the API key out of every error.
package daytona

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/nightona/nightona/sandbox"
)

// Config configures the provider. Zero fields take their defaults.
type Config struct {
	// APIURL is Daytona's API. Default https://app.daytona.io/api.
	APIURL string
	// APIKey is a Daytona API key. Required.
	APIKey string
	// Target is the region sandboxes are made in ("us", "eu"). Default: the organization's.
	Target string
	// Snapshot is what sandboxes are made from when a Spec names none. Default: Daytona's
	// default snapshot, which lacks Claude Code: build and register ours (snapshot/README.md).
	Snapshot string
	// RelayBinary is a static linux/amd64 nightona-relay on this machine, uploaded into
	// sandboxes that lack it. Required.
	RelayBinary string
	// Claude is the Claude Code CLI inside the sandbox. Default "claude".
	Claude string
	// Workspace is the workspace folder in the sandbox, absolute or relative to the home
	// folder. Default "workspace".
	Workspace string
	// Template holds files copied into the workspace of every new sandbox (made a git
	// repository when the snapshot has git), as local sandboxes start from a template. Nil:
	// the workspace starts as the snapshot has it.
	Template fs.FS
	// DevCommand is the app's dev server command, run by the relay. Empty: none.
	DevCommand string
	// DevDir is the dev server's folder, absolute or relative to the workspace. Default: the
	// workspace.
	DevDir string
	// DevPort is the dev server's port. 0: a free one in 3000-9999, kept while it stays free.
	DevPort int
	// PermissionMode is Claude Code's permission mode when a Spec names none. Default acceptEdits.
	PermissionMode string
	// AllowBypass lets the relay switch to bypassPermissions (and sets IS_SANDBOX=1 for it).
	AllowBypass bool
	// Env is added to every sandbox's environment (a Spec's Env wins).
	Env map[string]string
	// Public makes every sandbox's previews reachable without a token. The relay still
	// requires its own token.
	Public bool
	// AutoStop, AutoArchive and AutoDelete are Daytona's timers for sandboxes whose Spec sets
	// none (negative: off). AutoStop defaults to 60 minutes, longer than the bot's own idle
	// stop, so that Daytona stops only what a dead bot left running; AutoArchive and
	// AutoDelete default to Daytona's (7 days; never).
	AutoStop, AutoArchive, AutoDelete time.Duration
	// Resources for sandboxes whose Spec asks for none. Daytona takes a snapshot's own
	// resources and may ignore these.
	Resources sandbox.Resources
	// StartTimeout bounds Create and Start, from the request to a relay that answers. Default
	// 3 minutes: POST /sandbox alone may take half a minute.
	StartTimeout time.Duration
	// StopTimeout bounds Stop and Archive. Default 2 minutes.
	StopTimeout time.Duration
	// RequestTimeout bounds one HTTP request (creating a sandbox and commands take longer).
	// Default 30 s.
	RequestTimeout time.Duration
	// PollInterval is the first pause while waiting for a state; pauses grow to 5 s.
	// Default 500 ms.
	PollInterval time.Duration
	// Retries is how often a failed request that may be retried is tried again. Default 4;
	// negative: never.
	Retries int
	// RetryMinWait and RetryMaxWait bound the exponential backoff between retries (with
	// jitter), unless the server asks for a wait with Retry-After. Defaults 500 ms and 10 s.
	RetryMinWait, RetryMaxWait time.Duration
	// HTTPClient sends the requests. Default: one with connect, TLS and idle timeouts (whole
	// requests are bounded per call).
	HTTPClient *http.Client
	// Logger receives the provider's logs; nil discards them.
	Logger *slog.Logger
}

// Labels the provider keeps on sandboxes for itself. They are not reported in
// sandbox.Sandbox.Labels and SetLabels keeps them.
const (
	// LabelManaged marks the sandboxes Nightona made, so that List never reports (and
	// session cleanup never deletes) the account's other sandboxes.
	LabelManaged        = "nightona.managed"
	labelRelayPort      = "nightona.relay-port"
	labelDevPort        = "nightona.dev-port"
	labelPermissionMode = "nightona.permission-mode"
	labelModel          = "nightona.model"
)

func internalLabel(k string) bool {
	return k == LabelManaged || k == labelRelayPort || k == labelDevPort || k == labelPermissionMode || k == labelModel
}

// Provider runs Daytona sandboxes. Use New. It is safe for concurrent use, and several
// providers (bot replicas) may share the sandboxes of one account.
type Provider struct {
	cfg   Config
	log   *slog.Logger
	api   *api
	cl    *client
	probe *http.Client

	relaySum  string // SHA-256 of the relay binary, hex
	relayPath string

	mu    sync.Mutex
	boxes map[string]*box
}

var (
	_ sandbox.Provider  = (*Provider)(nil)
	_ sandbox.Archiver  = (*Provider)(nil)
	_ sandbox.Waiter    = (*Provider)(nil)
	_ sandbox.Processes = (*Provider)(nil)
	_ sandbox.Previews  = (*Provider)(nil)
)

// box is what this provider knows of one sandbox. ops serialises lifecycle operations on it
// within this provider; mu guards the cache below it.
type box struct {
	ops sync.Mutex

	mu      sync.Mutex
	toolbox string // {toolboxProxyUrl}/{id}
	home    string
	relay   *relayInfo // the last relay seen answering
	// fresh: made by this provider and not yet given the template.
	fresh bool
}

// New checks the configuration and fills in the defaults. It makes no request: Daytona is
// first asked when a sandbox is.
func New(cfg Config) (*Provider, error) {
	if cfg.APIKey == "" {
		return nil, fmt.Errorf("%w: daytona: an API key is required (set DAYTONA_API_KEY)", sandbox.ErrUnavailable)
	}
	if cfg.RelayBinary == "" {
		return nil, errors.New("daytona: RelayBinary is required")
	}
	if cfg.APIURL == "" {
		cfg.APIURL = "https://app.daytona.io/api"
	}
	cfg.APIURL = strings.TrimRight(cfg.APIURL, "/")
	if cfg.Claude == "" {
		cfg.Claude = "claude"
	}
	if cfg.Workspace == "" {
		cfg.Workspace = "workspace"
	}
	if cfg.PermissionMode == "" {
		cfg.PermissionMode = "acceptEdits"
	}
	if cfg.AutoStop == 0 {
		cfg.AutoStop = time.Hour
	}
	if cfg.StartTimeout <= 0 {
		cfg.StartTimeout = 3 * time.Minute
	}
	if cfg.StopTimeout <= 0 {
		cfg.StopTimeout = 2 * time.Minute
	}
	if cfg.RequestTimeout <= 0 {
		cfg.RequestTimeout = 30 * time.Second
	}
	if cfg.PollInterval <= 0 {
		cfg.PollInterval = 500 * time.Millisecond
	}
	if cfg.Retries == 0 {
		cfg.Retries = 4
	}
	if cfg.Retries < 0 {
		cfg.Retries = 0
	}
	if cfg.RetryMinWait <= 0 {
		cfg.RetryMinWait = 500 * time.Millisecond
	}
	if cfg.RetryMaxWait <= 0 {
		cfg.RetryMaxWait = 10 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{Transport: defaultTransport()}
	}
	sum, err := fileSum(cfg.RelayBinary)
	if err != nil {
		return nil, fmt.Errorf("%w: daytona: relay binary %s: %v (run `make build`)", sandbox.ErrUnavailable, cfg.RelayBinary, err)
	}
	cl := &client{http: cfg.HTTPClient, key: cfg.APIKey, log: cfg.Logger, retries: cfg.Retries,
		minWait: cfg.RetryMinWait, maxWait: cfg.RetryMaxWait, timeout: cfg.RequestTimeout}
	return &Provider{
		cfg: cfg, log: cfg.Logger, cl: cl, api: &api{c: cl, base: cfg.APIURL},
		// Probes of the relay carry no API key and go where the preview proxy is; they share
		// the transport but each is bounded on its own. They never follow a redirect: Daytona's
		// proxy answers a wrong or stale preview token with 307 to a login page that answers
		// 200, which must not pass for a relay.
		probe: &http.Client{Transport: cfg.HTTPClient.Transport, Timeout: 5 * time.Second,
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }},
		relaySum:  sum,
		relayPath: cfg.RelayBinary,
		boxes:     map[string]*box{},
	}, nil
}

func defaultTransport() http.RoundTripper {
	return &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		TLSHandshakeTimeout:   10 * time.Second,
		IdleConnTimeout:       90 * time.Second,
		MaxIdleConnsPerHost:   16,
		ExpectContinueTimeout: time.Second,
		ForceAttemptHTTP2:     true,
	}
}

func fileSum(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// Name implements sandbox.Provider.
func (p *Provider) Name() string { return "daytona" }

func (p *Provider) box(id string) *box {
	p.mu.Lock()
	defer p.mu.Unlock()
	b, ok := p.boxes[id]
	if !ok {
		b = &box{}
		p.boxes[id] = b
	}
	return b
}

func (p *Provider) forget(id string) {
	p.mu.Lock()
	delete(p.boxes, id)
	p.mu.Unlock()
}

// report turns Daytona's view of a sandbox into ours (without the relay).
func report(s *apiSandbox) *sandbox.Sandbox {
	labels := map[string]string{}
	for k, v := range s.Labels {
		if !internalLabel(k) {
			labels[k] = v
		}
	}
	st, _ := mapState(s)
	out := &sandbox.Sandbox{ID: s.ID, State: st, Labels: labels, CreatedAt: s.created()}
	if st == sandbox.StateError {
		out.Reason = s.ErrorReason
		if out.Reason == "" {
			out.Reason = "Daytona reports the sandbox as " + s.State
		}
	}
	return out
}

// mapState maps Daytona's states to ours; gone is true for a sandbox being or already deleted.
// States in between (resizing, snapshotting, unknown...) count as on their way to the desired
// state.
func mapState(s *apiSandbox) (st sandbox.State, gone bool) {
	switch s.State {
	case "started":
		return sandbox.StateStarted, false
	case "stopped", "paused":
		return sandbox.StateStopped, false
	case "archived":
		return sandbox.StateArchived, false
	case "creating", "pending_build", "building_snapshot", "pulling_snapshot":
		return sandbox.StateCreating, false
	case "starting", "restoring", "resuming":
		return sandbox.StateStarting, false
	case "stopping", "pausing":
		return sandbox.StateStopping, false
	case "archiving":
		return sandbox.StateArchiving, false
	case "error", "build_failed":
		return sandbox.StateError, false
	case "destroying", "destroyed":
		return "", true
	}
	switch s.DesiredState {
	case "stopped", "paused":
		return sandbox.StateStopping, false
	case "archived":
		return sandbox.StateArchiving, false
	case "destroyed":
		return "", true
	}
	return sandbox.StateStarting, false
}

// getSandbox is api.get with deleted sandboxes reported as not found.
func (p *Provider) getSandbox(ctx context.Context, id string) (*apiSandbox, error) {
	s, err := p.api.get(ctx, id)
	if err != nil {
		return nil, err
	}
	if _, gone := mapState(s); gone {
		return nil, fmt.Errorf("daytona: sandbox %s is deleted: %w", id, sandbox.ErrNotFound)
	}
	return s, nil
}

// Get implements sandbox.Provider. Relay is set only when the relay answers with its token.
func (p *Provider) Get(ctx context.Context, id string) (*sandbox.Sandbox, error) {
	s, err := p.getSandbox(ctx, id)
	if err != nil {
		return nil, err
	}
	sb := report(s)
	if sb.State == sandbox.StateStarted {
		if info := p.liveRelay(ctx, p.box(id), s); info != nil {
			info.fill(sb)
		}
	}
	return sb, nil
}

// Create implements sandbox.Provider. It returns once the relay answers; when it cannot, it
// deletes what it made, since the caller never learns the sandbox's id.
func (p *Provider) Create(ctx context.Context, spec sandbox.Spec) (*sandbox.Sandbox, error) {
	ctx, cancel := p.startContext(ctx)
	defer cancel()
	body := p.createBody(spec)
	s, err := p.createSandbox(ctx, body)
	if err != nil {
		return nil, p.startError(ctx, "", err) // the error names the operation
	}
	p.log.Info("sandbox created", "sandbox_id", s.ID, "name", body.Name, "snapshot", body.Snapshot)
	b := p.box(s.ID)
	b.ops.Lock()
	defer b.ops.Unlock()
	b.mu.Lock()
	b.fresh = p.cfg.Template != nil
	b.mu.Unlock()
	sb, err := p.bringUp(ctx, b, s.ID)
	if err != nil {
		p.discard(s.ID)
		return nil, p.startError(ctx, "create sandbox "+s.ID, err)
	}
	return sb, nil
}

func (p *Provider) createBody(spec sandbox.Spec) createBody {
	env := map[string]string{}
	for k, v := range p.cfg.Env {
		env[k] = v
	}
	for k, v := range spec.Env {
		env[k] = v
	}
	labels := map[string]string{}
	for k, v := range spec.Labels {
		if !internalLabel(k) {
			labels[k] = v
		}
	}
	labels[LabelManaged] = "true"
	mode := spec.PermissionMode
	if mode == "" {
		mode = p.cfg.PermissionMode
	}
	labels[labelPermissionMode] = mode
	if spec.Model != "" {
		labels[labelModel] = spec.Model
	}
	res := spec.Resources
	if res == (sandbox.Resources{}) {
		res = p.cfg.Resources
	}
	snap := spec.Snapshot
	if snap == "" {
		snap = p.cfg.Snapshot
	}
	return createBody{
		// A name of our choosing makes creation idempotent: Daytona refuses a second sandbox
		// of the same name, and a sandbox can be looked up by it (see createSandbox).
		Name:     "nightona-" + randomHex(8),
		Snapshot: snap, Env: env, Labels: labels, Public: spec.Public || p.cfg.Public, Target: p.cfg.Target,
		CPU: res.CPU, Memory: res.MemoryGB, Disk: res.DiskGB,
		AutoStopInterval:    minutes(spec.AutoStop, p.cfg.AutoStop, 0),
		AutoArchiveInterval: minutes(spec.AutoArchive, p.cfg.AutoArchive, 0),
		AutoDeleteInterval:  minutes(spec.AutoDelete, p.cfg.AutoDelete, -1),
	}
}

// minutes converts a timer to Daytona's minutes: the Spec's, else the Config's; nil (Daytona's
// default) when neither sets one; off when negative (0 for auto-stop, which disables it, and
// for auto-archive, which means Daytona's longest; -1 for auto-delete).
func minutes(spec, def time.Duration, off int) *int {
	d := spec
	if d == 0 {
		d = def
	}
	if d == 0 {
		return nil
	}
	m := off
	if d > 0 {
		m = int((d + time.Minute - 1) / time.Minute)
	}
	return &m
}

// createSandbox posts the sandbox. When the answer is lost after the request went out, the
// server may or may not have made it: it is looked up by its name, and posted again only when
// it is not there (a duplicate would then be refused as a name conflict, not made).
func (p *Provider) createSandbox(ctx context.Context, body createBody) (*apiSandbox, error) {
	s, err := p.api.create(ctx, body)
	if err == nil || !ambiguous(err) {
		return s, err
	}
	if ctx.Err() != nil {
		// Out of time with the outcome unknown: whatever was made is nobody's.
		p.discardName(body.Name)
		return nil, err
	}
	p.log.Warn("creating a sandbox: the answer was lost; looking it up by name", "name", body.Name, "err", err)
	if got, gerr := p.api.get(ctx, body.Name); gerr == nil {
		return got, nil
	} else if !errors.Is(gerr, sandbox.ErrNotFound) {
		return nil, err
	}
	s, err2 := p.api.create(ctx, body)
	var e *APIError
	if errors.As(err2, &e) && e.StatusCode == http.StatusConflict {
		return p.api.get(ctx, body.Name)
	}
	return s, err2
}

// ambiguous reports an error after which the server may have acted on the request.
func ambiguous(err error) bool {
	var e *APIError
	if !errors.As(err, &e) {
		return false
	}
	switch {
	case e.StatusCode == 0:
		return !errors.Is(err, context.Canceled)
	case e.StatusCode == http.StatusConflict:
		return true
	case e.StatusCode >= 500 && e.StatusCode != http.StatusServiceUnavailable:
		return true
	}
	return false
}

// discard deletes a sandbox Create could not finish, without the caller's context: the
// caller may have given up, and the sandbox would otherwise cost money unseen.
func (p *Provider) discard(id string) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := p.api.delete(ctx, id); err != nil && !errors.Is(err, sandbox.ErrNotFound) {
		p.log.Error("could not delete a sandbox whose creation failed; delete it by hand", "sandbox_id", id, "err", err)
		return
	}
	p.forget(id)
	p.log.Info("deleted a sandbox whose creation failed", "sandbox_id", id)
}

// discardName deletes the sandbox of that name if there is one.
func (p *Provider) discardName(name string) {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if s, err := p.api.get(ctx, name); err == nil {
		p.discard(s.ID)
	}
}

// Start implements sandbox.Provider.
func (p *Provider) Start(ctx context.Context, id string) (*sandbox.Sandbox, error) {
	ctx, cancel := p.startContext(ctx)
	defer cancel()
	b := p.box(id)
	b.ops.Lock()
	defer b.ops.Unlock()
	sb, err := p.bringUp(ctx, b, id)
	if err != nil {
		return nil, p.startError(ctx, "start sandbox "+id, err)
	}
	return sb, nil
}

// bringUp starts the sandbox if it is not, and the relay if it does not answer. Called with
// b.ops held.
func (p *Provider) bringUp(ctx context.Context, b *box, id string) (*sandbox.Sandbox, error) {
	s, started, err := p.ensureStarted(ctx, id)
	if err != nil {
		return nil, err
	}
	if !started {
		if info := p.liveRelay(ctx, b, s); info != nil {
			sb := report(s)
			info.fill(sb)
			return sb, nil
		}
	}
	b.setRelay(nil) // a start changes the preview token; a dead relay's token is no use
	info, err := p.startRelay(ctx, b, s)
	if err != nil {
		return nil, err
	}
	sb := report(s)
	info.fill(sb)
	return sb, nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
