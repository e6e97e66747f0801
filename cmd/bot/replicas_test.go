package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nightona/nightona/internal/testenv"
	"github.com/nightona/nightona/sandbox/local"
	"github.com/nightona/nightona/scriptedmodel"
)

// process is a bot running as a process of its own, so that it can be killed with SIGKILL.
type process struct {
	*bot
	cmd *exec.Cmd
}

func startProcess(t *testing.T, env map[string]string, replica string) *process {
	t.Helper()
	cmd := exec.Command(testenv.BotBinary(t))
	cmd.Env = nil
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	cmd.Env = append(cmd.Env, "NIGHTONA_REPLICA_ID="+replica, "HOME="+os.Getenv("HOME"))
	stderr := &testenv.Buffer{}
	cmd.Stderr = stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &process{bot: &bot{t: t, dataDir: env["NIGHTONA_DATA_DIR"], stderr: stderr}, cmd: cmd}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("%s stderr:\n%s", replica, stderr.String())
		}
	})
	urls := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if m := consoleLine.FindStringSubmatch(sc.Text()); m != nil {
				urls <- m[1]
			}
		}
	}()
	select {
	case p.url = <-urls:
	case <-time.After(30 * time.Second):
		t.Fatalf("%s did not print its console URL; stderr:\n%s", replica, stderr.String())
	}
	return p
}

func (p *process) kill() {
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	_ = p.cmd.Wait()
}

// sharedEnv is what replicas of one deployment share: Redis, a key prefix, the model's API and
// (local sandboxes being on this machine) the data folder. Sandboxes are detached, as they are
// by default with an outside Redis. The scripted model runs in the test, as Anthropic's API
// runs outside the bot: a bot's own offline model would die with it.
func sharedEnv(t *testing.T, redisURL string) map[string]string {
	env := baseEnv(t)
	model := httptest.NewServer(scriptedmodel.New(scriptedmodel.Config{}))
	t.Cleanup(model.Close)
	env["ANTHROPIC_API_KEY"] = "test-key"
	env["ANTHROPIC_BASE_URL"] = model.URL
	env["REDIS_URL"] = redisURL
	env["NIGHTONA_LOCAL_DETACH"] = "true"
	env["NIGHTONA_LEASE_TTL"] = "2s"
	env["NIGHTONA_LOG_LEVEL"] = "debug"
	dir := env["NIGHTONA_DATA_DIR"]
	t.Cleanup(func() { killRelays(t, dir) })
	return env
}

// killRelays kills what detached sandboxes left running when a test ends: a provider with
// attached relays, starting on the folder, kills everything its sandboxes run.
func killRelays(t *testing.T, dataDir string) {
	if _, err := local.New(local.Config{Dir: filepath.Join(dataDir, "sandboxes"), RelayBinary: testenv.RelayBinary(t)}); err != nil {
		t.Errorf("clean up sandboxes: %v", err)
	}
}

// checkLog checks a thread's whole log, read afresh: sequence numbers from 1 without a gap,
// each relay event once and in order, exactly results turns, no error.
func checkLog(t *testing.T, b *bot, thread string, results int) []frame {
	t.Helper()
	f := b.follow(thread, 0)
	var all []frame
	n := 0
	all = f.until("the whole log", 30*time.Second, func(fr frame) bool {
		if isResult(fr) {
			n++
		}
		return n == results
	})
	assertContiguous(t, all, 1)
	last := map[string]int64{}
	for _, fr := range all {
		var ev struct {
			From *struct {
				RelayID string `json:"relay_id"`
				Seq     int64  `json:"seq"`
			} `json:"from"`
		}
		raw, _ := json.Marshal(fr)
		_ = json.Unmarshal(raw, &ev)
		if fr.Kind == "error" {
			t.Fatalf("error in the log: %s", fr.Data)
		}
		if ev.From == nil {
			continue
		}
		if prev, ok := last[ev.From.RelayID]; ok && ev.From.Seq != prev+1 {
			t.Fatalf("relay %s event %d follows %d in the log: missing or repeated", ev.From.RelayID, ev.From.Seq, prev)
		}
		last[ev.From.RelayID] = ev.From.Seq
	}
	return all
}

// TestReplicaKilledMidTurn runs two bot processes on one Redis, kills the one driving a
// streamed turn with SIGKILL, and checks that the other completes the turn within a lease
// period or so, logging every event once.
func TestReplicaKilledMidTurn(t *testing.T) {
	env := sharedEnv(t, testenv.RedisURL(t))
	a := startProcess(t, env, "replica-a")
	b := startProcess(t, env, "replica-b")
	thread := a.newThread()
	fb := b.follow(thread, 0) // the log is shared: b sees a's session
	a.prompt(thread, "scenario:slow:120:40 a long story")
	fb.until("the turn to stream", 60*time.Second, func(fr frame) bool {
		return fr.Kind == "agent" && bytes.Contains(fr.Data, []byte(`"text_delta"`))
	})
	if sess := b.session(thread); sess["state"] != "running" {
		t.Fatalf("state before the kill: %v", sess["state"])
	}
	for len(fb.frames) > 0 { // what a logged before it died
		<-fb.frames
	}
	killed := time.Now()
	a.kill()
	var resumed time.Duration
	rest := fb.until("b to complete the turn", 60*time.Second, func(fr frame) bool {
		if resumed == 0 && fr.Type == "event" {
			resumed = time.Since(killed) // the first event logged after the kill: b drives now
		}
		return isResult(fr)
	})
	if r := rest[len(rest)-1]; r.field("subtype") != "success" || !strings.Contains(r.field("result"), "word120") {
		t.Fatalf("result after the takeover: %s", r.Data)
	}
	t.Logf("takeover: b logged again %v after the driving replica was killed (lease 2s)", resumed.Round(10*time.Millisecond))
	if resumed > 3*time.Second {
		t.Fatalf("b took %v to take over, more than a lease period (2s) and its second of slack", resumed)
	}
	all := checkLog(t, b.bot, thread, 1)
	var deltas int
	for _, fr := range all {
		if fr.Kind == "agent" && bytes.Contains(fr.Data, []byte(`"text_delta"`)) {
			deltas++
		}
	}
	if deltas < 120 {
		t.Fatalf("%d text deltas in the log, want all 120", deltas)
	}
	// b drives the session now.
	b.prompt(thread, "scenario:recall and now?")
	next := fb.until("a turn on b", 60*time.Second, isResult)
	if r := next[len(next)-1].field("result"); !strings.Contains(r, "1. scenario:slow:120:40 a long story") {
		t.Fatalf("the conversation did not carry on: %q", r)
	}
}

// TestRestartedBotCarriesOn kills the only bot in the middle of a turn and starts it again:
// the new process takes the session over once the old lease runs out and completes the turn.
func TestRestartedBotCarriesOn(t *testing.T) {
	env := sharedEnv(t, testenv.RedisURL(t))
	a := startProcess(t, env, "replica-a")
	thread := a.newThread()
	fa := a.follow(thread, 0)
	a.prompt(thread, "scenario:slow:100:40 a story")
	fa.until("the turn to stream", 60*time.Second, func(fr frame) bool {
		return fr.Kind == "agent" && bytes.Contains(fr.Data, []byte(`"text_delta"`))
	})
	a.kill()
	a2 := startProcess(t, env, "replica-a2")
	f2 := a2.follow(thread, 0)
	f2.until("the turn to complete after the restart", 60*time.Second, isResult)
	checkLog(t, a2.bot, thread, 1)
}

// TestRedisRestartMidTurn stops Redis in the middle of a streamed turn and starts it again:
// prompts are refused with a clear message meanwhile, and the turn completes with every event
// logged once.
func TestRedisRestartMidTurn(t *testing.T) {
	rs := testenv.StartPersistentRedis(t)
	env := sharedEnv(t, rs.URL())
	env["NIGHTONA_LEASE_TTL"] = "30s"
	a := startProcess(t, env, "replica-a")
	thread := a.newThread()
	fa := a.follow(thread, 0)
	a.prompt(thread, "scenario:slow:80:50 a story")
	fa.until("the turn to stream", 60*time.Second, func(fr frame) bool {
		return fr.Kind == "agent" && bytes.Contains(fr.Data, []byte(`"text_delta"`))
	})
	rs.Stop()
	status, out := a.post("/api/threads/"+thread+"/prompts", map[string]string{"text": "hello?"})
	if status != http.StatusServiceUnavailable || out["code"] != "store_down" || !strings.Contains(out["error"].(string), "Redis") {
		t.Fatalf("a prompt while Redis is away: %d %v", status, out)
	}
	if status, _ := a.get("/readyz"); status != http.StatusServiceUnavailable {
		t.Fatalf("readyz while Redis is away: %d", status)
	}
	time.Sleep(2 * time.Second)
	if err := rs.Start(); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 20*time.Second, "readiness after Redis is back", func() bool {
		status, _ := a.get("/readyz")
		return status == http.StatusOK
	})
	checkLog(t, a.bot, thread, 1)
}
