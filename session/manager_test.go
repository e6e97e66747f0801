package session_test

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nightona/nightona/internal/fakeagent"
	"github.com/nightona/nightona/internal/testenv"
	"github.com/nightona/nightona/redisstore"
	"github.com/nightona/nightona/sandbox"
	"github.com/nightona/nightona/sandbox/local"
	"github.com/nightona/nightona/session"
)

func TestMain(m *testing.M) {
	if os.Getenv(fakeagent.EnvVar) != "" {
		fakeagent.Main()
	}
	if os.Getenv(farmEnv) != "" {
		relayFarm()
		return
	}
	testenv.Main(m)
}

type env struct {
	store    *redisstore.Store
	provider *local.Provider
	mgr      *session.Manager
	stop     func()
}

// newEnv runs a manager on a real Redis and local sandboxes whose agent is the stand-in CLI.
// firstTurn sends the thread's first prompt, as user, and waits for its turn to end; it
// returns the session's id.
func (e *env) firstTurn(t *testing.T, thread, user, text string) string {
	t.Helper()
	sub, err := e.mgr.Submit(context.Background(), thread, user, text)
	if err != nil {
		t.Fatal(err)
	}
	e.waitFor(t, sub.Session.ID, "the first turn", results(1))
	return sub.Session.ID
}

func newEnv(t *testing.T, cfg session.Config) *env {
	t.Helper()
	return newEnvWith(t, cfg, nil)
}

func newEnvWith(t *testing.T, cfg session.Config, tweak func(*local.Config)) *env {
	t.Helper()
	return newEnvWrapped(t, cfg, tweak, nil)
}

// newEnvWrapped is newEnvWith with the manager's provider wrapped by wrap (nil: not wrapped).
func newEnvWrapped(t *testing.T, cfg session.Config, tweak func(*local.Config), wrap func(sandbox.Provider) sandbox.Provider) *env {
	t.Helper()
	rdb, err := redisstore.Open(testenv.RedisURL(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rdb.Close() })
	st := redisstore.New(rdb, redisstore.Config{Prefix: testenv.Prefix(t)})
	lc := local.Config{
		Dir: t.TempDir(), RelayBinary: testenv.RelayBinary(t), Claude: os.Args[0],
		Env: []string{fakeagent.EnvVar + "=1"},
	}
	if tweak != nil {
		tweak(&lc)
	}
	prov, err := local.New(lc)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.RelayReconnect == 0 {
		cfg.RelayReconnect = time.Second
	}
	cfg.StopSandboxesOnShutdown = true
	var p sandbox.Provider = prov
	if wrap != nil {
		p = wrap(prov)
	}
	mgr, err := session.NewManager(st, p, cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = mgr.Run(ctx); close(done) }()
	e := &env{store: st, provider: prov, mgr: mgr}
	stopped := false
	e.stop = func() {
		if !stopped {
			stopped = true
			cancel()
			<-done
			prov.Close()
		}
	}
	t.Cleanup(e.stop)
	return e
}

func (e *env) events(t *testing.T, id string) []session.Event {
	t.Helper()
	evs, err := e.store.Read(context.Background(), id, 0, 10000, 0)
	if err != nil {
		t.Fatal(err)
	}
	return evs
}

func (e *env) waitFor(t *testing.T, id, what string, cond func([]session.Event) bool) []session.Event {
	t.Helper()
	var evs []session.Event
	testenv.WaitFor(t, 20*time.Second, what, func() bool {
		evs = e.events(t, id)
		return cond(evs)
	})
	return evs
}

func count(evs []session.Event, kind, typ string) int {
	n := 0
	for _, ev := range evs {
		if ev.Kind == kind && (typ == "" || field(ev.Data, "type") == typ || field(ev.Data, "event") == typ || field(ev.Data, "code") == typ) {
			n++
		}
	}
	return n
}

func field(data []byte, name string) string {
	var m map[string]any
	_ = json.Unmarshal(data, &m)
	s, _ := m[name].(string)
	return s
}

func results(n int) func([]session.Event) bool {
	return func(evs []session.Event) bool { return count(evs, session.KindAgent, "result") >= n }
}

func assertSeqs(t *testing.T, evs []session.Event) {
	t.Helper()
	for i, ev := range evs {
		if ev.Seq != int64(i+1) {
			t.Fatalf("event %d has seq %d: the log has a gap or a duplicate", i, ev.Seq)
		}
	}
}

func TestFirstPromptStartsSandboxSecondReusesIt(t *testing.T) {
	e := newEnv(t, session.Config{})
	ctx := context.Background()
	sub, err := e.mgr.Submit(ctx, "web:t1", "web:alice", "echo hello")
	if err != nil {
		t.Fatal(err)
	}
	if sub.Seq != 1 || sub.Session.Owner != "web:alice" || sub.Queued {
		t.Fatalf("submitted %+v", sub)
	}
	id := sub.Session.ID
	evs := e.waitFor(t, id, "first result", results(1))
	if evs[0].Kind != session.KindPrompt || field(evs[0].Data, "text") != "echo hello" {
		t.Fatalf("first event %+v, want the prompt", evs[0])
	}
	if count(evs, session.KindStatus, "") < 2 {
		t.Fatalf("no sandbox progress shown: %v", evs)
	}
	testenv.WaitFor(t, 5*time.Second, "idle state", func() bool {
		s, _ := e.store.Get(ctx, id)
		return s.State == session.StateIdle
	})
	s1, _ := e.store.Get(ctx, id)
	if s1.SandboxID == "" || s1.Provider != "local" || s1.ClaudeSessionID == "" || s1.Usage.Turns != 1 {
		t.Fatalf("session after a turn: %+v", s1)
	}

	sub2, err := e.mgr.Submit(ctx, "web:t1", "web:bob", "echo again")
	if err != nil {
		t.Fatal(err)
	}
	if sub2.Session.ID != id {
		t.Fatal("second prompt in the thread made a new session")
	}
	evs = e.waitFor(t, id, "second result", results(2))
	assertSeqs(t, evs)
	s2, _ := e.store.Get(ctx, id)
	if s2.SandboxID != s1.SandboxID || s2.ClaudeSessionID != s1.ClaudeSessionID || s2.Owner != "web:alice" {
		t.Fatalf("second turn changed the sandbox, Claude session or owner: %+v vs %+v", s2, s1)
	}
	if n := count(evs, session.KindStatus, ""); n != 2 {
		t.Fatalf("%d status events: the second prompt should not start anything", n)
	}
}

func TestPromptLimits(t *testing.T) {
	e := newEnv(t, session.Config{MaxPromptBytes: 100})
	ctx := context.Background()
	_, err := e.mgr.Submit(ctx, "web:big", "web:a", strings.Repeat("x", 101))
	if !errors.Is(err, session.ErrPromptTooLarge) || !strings.Contains(err.Error(), "101 bytes") || !strings.Contains(err.Error(), "limit is 100 bytes") {
		t.Fatalf("oversized prompt: %v, want ErrPromptTooLarge naming the size and the limit", err)
	}
	if _, err := e.mgr.Submit(ctx, "web:big", "web:a", " \n\t"); !errors.Is(err, session.ErrEmptyPrompt) {
		t.Fatalf("empty prompt: %v", err)
	}
	if _, err := e.store.ByThread(ctx, "web:big"); !errors.Is(err, session.ErrNotFound) {
		t.Fatal("a refused prompt created a session")
	}
}

func TestUnavailableCLI(t *testing.T) {
	e := newEnv(t, session.Config{Unavailable: "the Claude Code CLI is not installed; run `make tools`"})
	_, err := e.mgr.Submit(context.Background(), "web:x", "web:a", "echo hi")
	if !errors.Is(err, session.ErrUnavailable) || !strings.Contains(err.Error(), "make tools") {
		t.Fatalf("submit with no CLI: %v", err)
	}
	if err := e.mgr.Ready(context.Background()); err == nil {
		t.Fatal("ready without a CLI")
	}
}

func TestRelayDeathEndsTurnAndNextPromptRecovers(t *testing.T) {
	e := newEnv(t, session.Config{})
	ctx := context.Background()
	sub, err := e.mgr.Submit(ctx, "web:die", "web:a", "slow:200:50")
	if err != nil {
		t.Fatal(err)
	}
	id := sub.Session.ID
	e.waitFor(t, id, "the turn to stream", func(evs []session.Event) bool { return count(evs, session.KindAgent, "assistant") >= 3 })
	sess, _ := e.store.Get(ctx, id)
	sb, err := e.provider.Get(ctx, sess.SandboxID)
	if err != nil {
		t.Fatal(err)
	}
	pid := relayPID(t, sb)
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	evs := e.waitFor(t, id, "the turn to end with an error", func(evs []session.Event) bool {
		return count(evs, session.KindError, session.CodeRelayLost) == 1
	})
	if count(evs, session.KindAgent, "result") != 0 {
		t.Fatal("the killed turn has a result")
	}
	testenv.WaitFor(t, 5*time.Second, "stopped state", func() bool {
		s, _ := e.store.Get(ctx, id)
		return s.State == session.StateStopped
	})

	if _, err := e.mgr.Submit(ctx, "web:die", "web:a", "echo back"); err != nil {
		t.Fatal(err)
	}
	evs = e.waitFor(t, id, "a turn on a fresh relay", results(1))
	assertSeqs(t, evs)
	if n := count(evs, session.KindStatus, ""); n < 4 {
		t.Fatalf("%d status events: waking the sandbox was not shown", n)
	}
	// The fresh relay resumed Claude's conversation.
	var resumed string
	for _, ev := range evs {
		if ev.Kind == session.KindNotice && field(ev.Data, "event") == "agent_started" {
			resumed = field(ev.Data, "resume")
		}
	}
	if resumed == "" || resumed != sess.ClaudeSessionID {
		t.Fatalf("fresh relay resumed %q, want %q", resumed, sess.ClaudeSessionID)
	}
}

func TestAgentCrashEndsTurn(t *testing.T) {
	e := newEnv(t, session.Config{})
	ctx := context.Background()
	sub, err := e.mgr.Submit(ctx, "web:crash", "web:a", "crash")
	if err != nil {
		t.Fatal(err)
	}
	evs := e.waitFor(t, sub.Session.ID, "an agent_exited error", func(evs []session.Event) bool {
		return count(evs, session.KindError, session.CodeAgentExited) == 1
	})
	for _, ev := range evs {
		if ev.Kind == session.KindError && !strings.Contains(field(ev.Data, "message"), "exit status 3") {
			t.Fatalf("error %s does not name the exit status", ev.Data)
		}
	}
	if _, err := e.mgr.Submit(ctx, "web:crash", "web:a", "echo fine"); err != nil {
		t.Fatal(err)
	}
	e.waitFor(t, sub.Session.ID, "the next turn", results(1))
}

func TestQueuedPromptsRunInOrder(t *testing.T) {
	e := newEnv(t, session.Config{})
	ctx := context.Background()
	first, err := e.mgr.Submit(ctx, "web:q", "web:a", "slow:10:30")
	if err != nil {
		t.Fatal(err)
	}
	e.waitFor(t, first.Session.ID, "the first turn to run", func(evs []session.Event) bool { return count(evs, session.KindAgent, "assistant") >= 1 })
	second, err := e.mgr.Submit(ctx, "web:q", "web:a", "echo second")
	if err != nil {
		t.Fatal(err)
	}
	if !second.Queued {
		t.Fatal("a prompt during a turn was not reported as queued")
	}
	evs := e.waitFor(t, first.Session.ID, "both turns", results(2))
	var order []string
	for _, ev := range evs {
		if ev.Kind == session.KindAgent && field(ev.Data, "type") == "result" {
			order = append(order, field(ev.Data, "result"))
		}
	}
	if order[0] != "slow done" || order[1] != "second" {
		t.Fatalf("results in order %v", order)
	}
}

func TestShutdownDrainsRunningTurn(t *testing.T) {
	e := newEnv(t, session.Config{DrainTimeout: 20 * time.Second})
	ctx := context.Background()
	sub, err := e.mgr.Submit(ctx, "web:drain", "web:a", "slow:20:50")
	if err != nil {
		t.Fatal(err)
	}
	e.waitFor(t, sub.Session.ID, "the turn to start", func(evs []session.Event) bool { return count(evs, session.KindAgent, "assistant") >= 1 })
	e.stop()
	evs := e.events(t, sub.Session.ID)
	if count(evs, session.KindAgent, "result") != 1 || count(evs, session.KindError, "") != 0 {
		t.Fatalf("after a drained shutdown: %d results, %d errors; want the turn finished", count(evs, session.KindAgent, "result"), count(evs, session.KindError, ""))
	}
	s, _ := e.store.Get(ctx, sub.Session.ID)
	if s.State != session.StateStopped {
		t.Fatalf("state after shutdown %q, want stopped", s.State)
	}
	if _, err := e.mgr.Submit(ctx, "web:drain", "web:a", "echo late"); !errors.Is(err, session.ErrUnavailable) {
		t.Fatalf("submit after shutdown: %v", err)
	}
}

func TestShutdownPastDrainEndsTurnWithNote(t *testing.T) {
	e := newEnv(t, session.Config{DrainTimeout: 200 * time.Millisecond})
	ctx := context.Background()
	sub, err := e.mgr.Submit(ctx, "web:cut", "web:a", "slow:1000:50")
	if err != nil {
		t.Fatal(err)
	}
	e.waitFor(t, sub.Session.ID, "the turn to start", func(evs []session.Event) bool { return count(evs, session.KindAgent, "assistant") >= 1 })
	e.stop()
	evs := e.events(t, sub.Session.ID)
	if count(evs, session.KindError, session.CodeShutdown) != 1 {
		t.Fatalf("a turn cut by shutdown has no note: %d shutdown errors", count(evs, session.KindError, session.CodeShutdown))
	}
}

func TestReconcileDeletesOrphanedSandboxes(t *testing.T) {
	e := newEnv(t, session.Config{})
	ctx := context.Background()
	orphan, err := e.provider.Create(ctx, sandbox.Spec{Labels: map[string]string{session.LabelSession: "ses_gone"}})
	if err != nil {
		t.Fatal(err)
	}
	foreign, err := e.provider.Create(ctx, sandbox.Spec{Labels: map[string]string{"other": "x"}})
	if err != nil {
		t.Fatal(err)
	}
	mgr, err := session.NewManager(e.store, e.provider, session.Config{})
	if err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { _ = mgr.Run(rctx); close(done) }()
	testenv.WaitFor(t, 10*time.Second, "the orphan to be deleted", func() bool {
		_, err := e.provider.Get(ctx, orphan.ID)
		return errors.Is(err, sandbox.ErrNotFound)
	})
	cancel()
	<-done
	if _, err := e.provider.Get(ctx, foreign.ID); err != nil {
		t.Fatalf("a sandbox that is not a session's was deleted: %v", err)
	}
}

func relayPID(t *testing.T, sb *sandbox.Sandbox) int {
	t.Helper()
	pid, err := local.RelayPID(filepath.Dir(sb.Workspace))
	if err != nil {
		t.Fatal(err)
	}
	return pid
}

func TestDecideByOwnerAndAdminOnly(t *testing.T) {
	e := newEnv(t, session.Config{Admins: []string{"slack:UADMIN"}})
	ctx := context.Background()
	id, req := askPermission(t, e, "web:perm", "slack:UOWNER")
	if err := e.mgr.Decide(ctx, "web:perm", req, "slack:USTRANGER", true, ""); !errors.Is(err, session.ErrForbidden) {
		t.Fatalf("a stranger's decision: %v, want ErrForbidden", err)
	}
	if err := e.mgr.Decide(ctx, "web:perm", req, "slack:UOWNER", false, "not now"); err != nil {
		t.Fatalf("the owner's decision: %v", err)
	}
	evs := e.waitFor(t, id, "the turn to end", results(1))
	var dec session.Decision
	for _, ev := range evs {
		if ev.Kind == session.KindDecision {
			_ = json.Unmarshal(ev.Data, &dec)
		}
	}
	if dec.RequestID != req || dec.Behavior != "deny" || dec.User != "slack:UOWNER" || dec.Message != "not now" {
		t.Fatalf("decision event %+v", dec)
	}
	if got := lastResultText(evs); got != "deny" {
		t.Fatalf("the agent got %q, want deny", got)
	}
	if err := e.mgr.Decide(ctx, "web:perm", req, "slack:UOWNER", true, ""); !errors.Is(err, session.ErrNoSuchRequest) {
		t.Fatalf("answering twice: %v, want ErrNoSuchRequest", err)
	}

	// An admin may answer someone else's request.
	if _, err := e.mgr.Submit(ctx, "web:perm", "slack:UOWNER", "ask:Write"); err != nil {
		t.Fatal(err)
	}
	evs = e.waitFor(t, id, "a second request", func(evs []session.Event) bool {
		return count(evs, session.KindAgent, "control_request") == 2
	})
	for _, ev := range evs {
		if field(ev.Data, "type") == "control_request" {
			req = field(ev.Data, "request_id")
		}
	}
	if err := e.mgr.Decide(ctx, "web:perm", req, "slack:UADMIN", true, ""); err != nil {
		t.Fatalf("an admin's decision: %v", err)
	}
	evs = e.waitFor(t, id, "the second turn", results(2))
	if got := lastResultText(evs); got != "allow" {
		t.Fatalf("the agent got %q, want allow", got)
	}
}

func TestPreviewReadyIsAnnounced(t *testing.T) {
	e := newEnvWith(t, session.Config{}, func(c *local.Config) {
		c.DevCommand = `exec node -e "require('http').createServer((q,s)=>s.end('app')).listen(process.env.PORT)"`
	})
	sub, err := e.mgr.Submit(context.Background(), "web:pv", "web:a", "echo hi")
	if err != nil {
		t.Fatal(err)
	}
	evs := e.waitFor(t, sub.Session.ID, "the preview to be announced", func(evs []session.Event) bool {
		return count(evs, session.KindStatus, "") >= 3 && containsStage(evs, session.StagePreviewReady)
	})
	var st session.Status
	for _, ev := range evs {
		if ev.Kind == session.KindStatus && field(ev.Data, "stage") == session.StagePreviewReady {
			_ = json.Unmarshal(ev.Data, &st)
		}
	}
	if !strings.HasPrefix(st.URL, "http://localhost:") || !strings.Contains(st.Message, st.URL) {
		t.Fatalf("preview status %+v", st)
	}
	s, _ := e.store.Get(context.Background(), sub.Session.ID)
	if s.PreviewURL != st.URL {
		t.Fatalf("session preview URL %q, want %q", s.PreviewURL, st.URL)
	}
}

func containsStage(evs []session.Event, stage string) bool {
	for _, ev := range evs {
		if ev.Kind == session.KindStatus && field(ev.Data, "stage") == stage {
			return true
		}
	}
	return false
}

func lastResultText(evs []session.Event) string {
	for i := len(evs) - 1; i >= 0; i-- {
		if evs[i].Kind == session.KindAgent && field(evs[i].Data, "type") == "result" {
			return field(evs[i].Data, "result")
		}
	}
	return ""
}

// initModels lists the model each system/init line of the log names: the stand-in agent
// reports the model it was started with or switched to.
func initModels(evs []session.Event) []string {
	var out []string
	for _, ev := range evs {
		if ev.Kind == session.KindAgent && field(ev.Data, "type") == "system" && field(ev.Data, "subtype") == "init" {
			out = append(out, field(ev.Data, "model"))
		}
	}
	return out
}

func TestSettingsOfANewSessionAndChanges(t *testing.T) {
	e := newEnv(t, session.Config{})
	ctx := context.Background()
	if _, err := e.mgr.SubmitWith(ctx, "web:set", "web:owner", "echo hi", session.Settings{Model: "--help"}); !errors.Is(err, session.ErrBadSetting) {
		t.Fatalf("a flag as a model: %v, want ErrBadSetting", err)
	}
	if _, err := e.mgr.SubmitWith(ctx, "web:set", "web:owner", "echo hi", session.Settings{PermissionMode: "yolo"}); !errors.Is(err, session.ErrBadSetting) {
		t.Fatalf("an unknown mode: %v, want ErrBadSetting", err)
	}
	sub, err := e.mgr.SubmitWith(ctx, "web:set", "web:owner", "echo one", session.Settings{Model: "claude-sonnet-4-5", PermissionMode: "plan"})
	if err != nil {
		t.Fatal(err)
	}
	id := sub.Session.ID
	evs := e.waitFor(t, id, "the first turn", results(1))
	if ms := initModels(evs); len(ms) != 1 || ms[0] != "claude-sonnet-4-5" {
		t.Fatalf("the agent ran with models %v, want the session's claude-sonnet-4-5", ms)
	}
	s, err := e.mgr.Get(ctx, id)
	if err != nil || s.Model != "claude-sonnet-4-5" || s.PermissionMode != "plan" {
		t.Fatalf("session %+v %v: settings not kept", s, err)
	}
	// Settings given for a thread that has a session change nothing.
	if _, err := e.mgr.SubmitWith(ctx, "web:set", "web:owner", "echo two", session.Settings{Model: "opus"}); err != nil {
		t.Fatal(err)
	}
	evs = e.waitFor(t, id, "the second turn", results(2))
	if ms := initModels(evs); ms[len(ms)-1] != "claude-sonnet-4-5" {
		t.Fatalf("models %v: a later prompt's settings changed the session", ms)
	}
	if err := e.mgr.SetModel(ctx, "web:set", "web:someone", "opus"); !errors.Is(err, session.ErrForbidden) {
		t.Fatalf("a stranger changing the model: %v, want ErrForbidden", err)
	}
	if err := e.mgr.SetModel(ctx, "web:set", "web:owner", "claude-haiku-4-5"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.mgr.Submit(ctx, "web:set", "web:owner", "echo three"); err != nil {
		t.Fatal(err)
	}
	evs = e.waitFor(t, id, "the third turn", results(3))
	if ms := initModels(evs); ms[len(ms)-1] != "claude-haiku-4-5" {
		t.Fatalf("models %v: the running agent did not switch", ms)
	}
	// The session keeps its model through a stop and a wake (a new relay and agent).
	if err := e.mgr.Stop(ctx, "web:set", "web:owner"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.mgr.Submit(ctx, "web:set", "web:owner", "echo four"); err != nil {
		t.Fatal(err)
	}
	evs = e.waitFor(t, id, "the fourth turn", results(4))
	if ms := initModels(evs); ms[len(ms)-1] != "claude-haiku-4-5" {
		t.Fatalf("models %v: the model was lost over a wake", ms)
	}
}

// askPermission starts a turn in thread, as owner, in which Claude asks to use Bash, and
// returns the session and the permission request once it is in the log.
func askPermission(t *testing.T, e *env, thread, owner string) (id, req string) {
	t.Helper()
	sub, err := e.mgr.Submit(context.Background(), thread, owner, "ask:Bash")
	if err != nil {
		t.Fatal(err)
	}
	id = sub.Session.ID
	evs := e.waitFor(t, id, "a permission request", func(evs []session.Event) bool {
		return count(evs, session.KindAgent, "control_request") == 1
	})
	for _, ev := range evs {
		if field(ev.Data, "type") == "control_request" {
			req = field(ev.Data, "request_id")
		}
	}
	return id, req
}

// gated holds the creation of sandboxes until open is closed: a sandbox that takes its time.
type gated struct {
	sandbox.Provider
	open chan struct{}
}

func (g *gated) Create(ctx context.Context, spec sandbox.Spec) (*sandbox.Sandbox, error) {
	select {
	case <-g.open:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return g.Provider.Create(ctx, spec)
}

func (g *gated) Unwrap() sandbox.Provider { return g.Provider }

// TestStopWhileTheSandboxStarts: a Stop pressed while the thread's sandbox comes up withdraws
// the prompt; Claude never gets it, and the next prompt runs as usual.
func TestStopWhileTheSandboxStarts(t *testing.T) {
	gate := make(chan struct{})
	e := newEnvWrapped(t, session.Config{}, nil, func(p sandbox.Provider) sandbox.Provider { return &gated{Provider: p, open: gate} })
	ctx := context.Background()
	sub, err := e.mgr.Submit(ctx, "web:early", "web:a", "echo never")
	if err != nil {
		t.Fatal(err)
	}
	id := sub.Session.ID
	e.waitFor(t, id, "the sandbox to be starting", func(evs []session.Event) bool { return containsStage(evs, session.StageSandboxStarting) })
	if err := e.mgr.Interrupt(ctx, "web:early", ""); err != nil {
		t.Fatalf("Stop while the sandbox starts: %v", err)
	}
	close(gate)
	e.waitFor(t, id, "the prompt withdrawn", func(evs []session.Event) bool { return cancelledPrompt(evs, sub.PromptID) })
	if _, err := e.mgr.Submit(ctx, "web:early", "web:a", "echo after"); err != nil {
		t.Fatal(err)
	}
	evs := e.waitFor(t, id, "the next turn", results(1))
	if n, got := count(evs, session.KindAgent, "result"), lastResultText(evs); n != 1 || got != "after" {
		t.Fatalf("%d turns ran, the last answering %q: want only the one after the Stop", n, got)
	}
}

// TestStopTheMomentAPromptIsSent: whenever a Stop comes after the prompt (before the driver
// took it, while it went to the relay, or once Claude began), the turn does not run to its end.
func TestStopTheMomentAPromptIsSent(t *testing.T) {
	e := newEnv(t, session.Config{})
	id := e.firstTurn(t, "web:quick", "web:a", "echo up")
	stopsRightAfter(t, e, e.mgr, "web:quick", id, 5)
}

// TestStopNamesItsTurn: a Stop that names its prompt stops that prompt's turn and no other: a
// queued one is withdrawn while another turn runs, and one pressed after its turn ended leaves
// the next turn alone.
func TestStopNamesItsTurn(t *testing.T) {
	e := newEnv(t, session.Config{})
	ctx := context.Background()
	a, err := e.mgr.Submit(ctx, "web:named", "web:a", "slow:100:50")
	if err != nil {
		t.Fatal(err)
	}
	id := a.Session.ID
	e.waitFor(t, id, "the first turn to stream", func(evs []session.Event) bool {
		return count(evs, session.KindAgent, "assistant") >= 3
	})
	b, err := e.mgr.Submit(ctx, "web:named", "web:a", "slow:30:50")
	if err != nil {
		t.Fatal(err)
	}
	c, err := e.mgr.Submit(ctx, "web:named", "web:a", "echo c")
	if err != nil {
		t.Fatal(err)
	}
	if !b.Queued || !c.Queued {
		t.Fatalf("queued: %v %v, want both behind the running turn", b.Queued, c.Queued)
	}

	// The last queued prompt's Stop withdraws it at once; the running turn goes on.
	if err := e.mgr.Interrupt(ctx, "web:named", c.PromptID); err != nil {
		t.Fatal(err)
	}
	evs := e.waitFor(t, id, "the queued prompt withdrawn", func(evs []session.Event) bool { return cancelledPrompt(evs, c.PromptID) })
	if n := count(evs, session.KindAgent, "result"); n != 0 || cancelledPrompt(evs, b.PromptID) {
		t.Fatalf("%d turns ended and the other queued prompt withdrawn=%v: the Stop reached more than its prompt", n, cancelledPrompt(evs, b.PromptID))
	}

	// The running turn's Stop ends it; the next queued prompt then runs.
	if err := e.mgr.Interrupt(ctx, "web:named", a.PromptID); err != nil {
		t.Fatal(err)
	}
	evs = e.waitFor(t, id, "the first turn to be stopped", results(1))
	if got := lastResultText(evs); got == "slow done" {
		t.Fatal("the first turn ran to its end after its Stop")
	}
	before := count(evs, session.KindAgent, "assistant")
	e.waitFor(t, id, "the next turn to stream", func(evs []session.Event) bool {
		return count(evs, session.KindAgent, "assistant") >= before+2
	})

	// A Stop for the turn that ended, late, leaves the one now running alone.
	if err := e.mgr.Interrupt(ctx, "web:named", a.PromptID); err != nil {
		t.Fatal(err)
	}
	evs = e.waitFor(t, id, "the next turn to end", results(2))
	if got := lastResultText(evs); got != "slow done" {
		t.Fatalf("the turn after got %q: a late Stop for the turn before stopped it", got)
	}
	if n := count(evs, session.KindAgent, "result"); n != 2 {
		t.Fatalf("%d turns ran, want 2 (the third was withdrawn)", n)
	}
}

// stopsRightAfter sends n slow prompts to thread on e, each stopped through stopper right
// away, and checks that none ran to its end.
func stopsRightAfter(t *testing.T, e *env, stopper *session.Manager, thread, id string, n int) {
	t.Helper()
	ctx := context.Background()
	withdrawn, interrupted := 0, 0
	for i := 0; i < n; i++ {
		before := count(e.events(t, id), session.KindAgent, "result")
		sub, err := e.mgr.Submit(ctx, thread, "web:a", "slow:200:50")
		if err != nil {
			t.Fatal(err)
		}
		// Every other Stop names its prompt, as the chat buttons do.
		target := ""
		if i%2 == 1 {
			target = sub.PromptID
		}
		if err := stopper.Interrupt(ctx, thread, target); err != nil {
			t.Fatalf("Stop %d: %v", i, err)
		}
		evs := e.waitFor(t, id, "the stopped turn to end", func(evs []session.Event) bool {
			return cancelledPrompt(evs, sub.PromptID) || count(evs, session.KindAgent, "result") > before
		})
		if cancelledPrompt(evs, sub.PromptID) {
			withdrawn++
			continue
		}
		interrupted++
		if got := lastResultText(evs); got == "slow done" {
			t.Fatalf("Stop %d came right after the prompt, and the turn ran to its end", i)
		}
	}
	t.Logf("%d Stops right after a prompt: %d withdrew it, %d interrupted its turn", n, withdrawn, interrupted)
}

// cancelledPrompt reports whether the log says the prompt was withdrawn.
func cancelledPrompt(evs []session.Event, promptID string) bool {
	for _, ev := range evs {
		if ev.Kind == session.KindStatus && field(ev.Data, "stage") == session.StagePromptCancelled && field(ev.Data, "prompt_id") == promptID {
			return true
		}
	}
	return false
}
