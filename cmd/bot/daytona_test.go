package main

import (
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nightona/nightona/internal/testenv"
	"github.com/nightona/nightona/sandbox/daytona/daytonatest"
	"github.com/nightona/nightona/scriptedmodel"
)

// daytonaEnv is the bot's environment for Daytona sandboxes on a fake Daytona whose toolbox
// runs commands on this machine: the real relay and the real Claude Code CLI run there, the
// CLI against the scripted model as if it were Anthropic's API.
func daytonaEnv(t *testing.T, srv *daytonatest.Server) map[string]string {
	model := httptest.NewServer(scriptedmodel.New(scriptedmodel.Config{}))
	t.Cleanup(model.Close)
	// The sandbox's own `claude`, as the snapshot installs it: on the PATH its processes get.
	t.Setenv("PATH", filepath.Dir(testenv.Claude(t))+string(os.PathListSeparator)+os.Getenv("PATH"))
	env := baseEnv(t)
	delete(env, "NIGHTONA_CLAUDE")
	for k, v := range map[string]string{
		"NIGHTONA_SANDBOX":   "daytona",
		"DAYTONA_API_KEY":    srv.APIKey,
		"DAYTONA_API_URL":    srv.APIURL,
		"DAYTONA_SNAPSHOT":   "nightona",
		"ANTHROPIC_API_KEY":  "sk-ant-test",
		"ANTHROPIC_BASE_URL": model.URL,
	} {
		env[k] = v
	}
	return env
}

func lastError(frames []frame) string {
	for i := len(frames) - 1; i >= 0; i-- {
		if frames[i].Kind == "error" {
			return frames[i].field("message")
		}
	}
	return ""
}

// TestDaytonaEndToEnd: a first prompt gets a Daytona sandbox made from the snapshot, the relay
// uploaded and started in it streams the real CLI's turn, and the thread gets a preview link a
// browser can open without Daytona's token. A missing snapshot and a used-up quota are said
// in the thread with what to do, and the next prompt goes through.
func TestDaytonaEndToEnd(t *testing.T) {
	srv := daytonatest.New(t, daytonatest.Config{Snapshots: []string{"nightona"}, PreviewAuthRedirect: true})
	b := startBot(t, daytonaEnv(t, srv))
	if !strings.Contains(b.stdout.String(), "Sandboxes:   Daytona at "+srv.APIURL+", from nightona") {
		t.Fatalf("banner does not name the Daytona sandboxes:\n%s", b.stdout.String())
	}
	thread := b.newThread()
	f := b.follow(thread, 0)

	// The snapshot is not registered (yet): the thread says so and what to do.
	srv.FailNext("POST", "/sandbox", http.StatusBadRequest, "Snapshot nightona not found. Did you add it through the Daytona Dashboard?")
	b.prompt(thread, "scenario:text hello")
	frames := f.until("the snapshot error", 60*time.Second, func(fr frame) bool { return fr.Kind == "error" })
	if msg := lastError(frames); !strings.Contains(msg, "Snapshot nightona not found") || !strings.Contains(msg, "DAYTONA_SNAPSHOT") {
		t.Fatalf("snapshot error in the thread: %q", msg)
	}
	// The account's quota is used up: the thread says so.
	srv.FailNext("POST", "/sandbox", http.StatusBadRequest, "Total CPU limit exceeded. Maximum allowed: 10.")
	b.prompt(thread, "scenario:text hello")
	frames = f.until("the quota error", 60*time.Second, func(fr frame) bool { return fr.Kind == "error" })
	if msg := lastError(frames); !strings.Contains(msg, "quota") || !strings.Contains(msg, "Stop or destroy") {
		t.Fatalf("quota error in the thread: %q", msg)
	}
	if n := len(srv.Sandboxes()); n != 0 {
		t.Fatalf("%d sandboxes after two refused creates", n)
	}

	// Now it works: the real CLI writes a file in the Daytona sandbox's workspace.
	b.prompt(thread, "scenario:write make a file")
	turn := f.until("the result", 120*time.Second, isResult)
	if r := turn[len(turn)-1]; r.field("subtype") != "success" || !strings.Contains(r.field("result"), "created hello.txt") {
		t.Fatalf("result %s", r.Data)
	}
	boxes := srv.Sandboxes()
	if len(boxes) != 1 || boxes[0].Snapshot != "nightona" || boxes[0].Labels["nightona.thread"] != thread || boxes[0].Public {
		t.Fatalf("sandboxes %+v, want one private sandbox from the snapshot labelled with the thread", boxes)
	}
	got, err := os.ReadFile(filepath.Join(boxes[0].WorkDir, "hello.txt"))
	if err != nil || string(got) != "Hello, world!\n" {
		t.Fatalf("hello.txt in the sandbox: %q %v", got, err)
	}
	if sess := b.session(thread); sess["provider"] != "daytona" || sess["sandbox_id"] != boxes[0].ID {
		t.Fatalf("session %v", sess)
	}

	// The preview: a signed link anyone can open, since a browser cannot send Daytona's token.
	var preview string
	isPreview := func(fr frame) bool {
		if fr.Kind == "status" && fr.field("stage") == "preview_ready" {
			preview = fr.field("url")
		}
		return preview != ""
	}
	for _, fr := range turn {
		isPreview(fr) // the dev server may well be up before the turn ends
	}
	if preview == "" {
		f.until("the preview link", 60*time.Second, isPreview)
	}
	if !strings.Contains(preview, "/preview/signed/") {
		t.Fatalf("preview link %q is not a signed one", preview)
	}
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := noRedirect.Get(preview)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	// The workspace started from the starter app, whose dev server the relay runs.
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "<title>Starter app</title>") {
		t.Fatalf("opening the preview link: %d %q", resp.StatusCode, body)
	}
	// The relay's token never reached the bot's log.
	if strings.Contains(b.stderr.String(), "NIGHTONA_RELAY_TOKEN=") {
		t.Fatal("the relay token is in the bot's log")
	}
}

func TestDaytonaConfigErrors(t *testing.T) {
	for name, c := range map[string]struct {
		env  map[string]string
		want []string
	}{
		"no key":             {map[string]string{"NIGHTONA_SANDBOX": "daytona", "ANTHROPIC_API_KEY": "k"}, []string{"DAYTONA_API_KEY"}},
		"no model key":       {map[string]string{"DAYTONA_API_KEY": "dk"}, []string{"ANTHROPIC_API_KEY"}},
		"bad URL":            {map[string]string{"DAYTONA_API_KEY": "dk", "ANTHROPIC_API_KEY": "k", "DAYTONA_API_URL": "app.daytona.io"}, []string{"DAYTONA_API_URL"}},
		"local with the key": {map[string]string{"DAYTONA_API_KEY": "dk", "NIGHTONA_SANDBOX": "local"}, nil},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := loadConfig(func(k string) string { return c.env[k] })
			if c.want == nil {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			for _, w := range c.want {
				if err == nil || !strings.Contains(err.Error(), w) {
					t.Fatalf("error %v does not name %s", err, w)
				}
			}
			if strings.Contains(err.Error(), "dk") {
				t.Fatalf("the error shows the key: %v", err)
			}
		})
	}
}

func TestRelayMustBeStaticLinuxForDaytona(t *testing.T) {
	if err := checkLinuxStatic(testenv.RelayBinary(t)); err != nil {
		t.Fatalf("the test relay (CGO off, linux/amd64) refused: %v", err)
	}
	script := filepath.Join(t.TempDir(), "relay.sh")
	if err := os.WriteFile(script, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := checkLinuxStatic(script); err == nil || !strings.Contains(err.Error(), "make build") {
		t.Fatalf("a shell script as the relay: %v", err)
	}
}

// TestDaytonaSandboxTroubles: a sandbox that does not wake in time and one Daytona puts in an
// error state are each said in the thread with what to do, and the session goes on.
func TestDaytonaSandboxTroubles(t *testing.T) {
	srv := daytonatest.New(t, daytonatest.Config{StartDelay: 30 * time.Second, PreviewAuthRedirect: true})
	env := daytonaEnv(t, srv)
	// Long enough for the first sandbox to come up on a loaded machine, short of StartDelay.
	env["NIGHTONA_START_TIMEOUT"] = "10s"
	env["NIGHTONA_IDLE_TIMEOUT"] = "1s"
	env["NIGHTONA_DEV_COMMAND"] = "off"
	b := startBot(t, env)
	thread := b.newThread()
	f := b.follow(thread, 0)
	b.prompt(thread, "scenario:text hello")
	f.until("the first result", 60*time.Second, isResult)
	f.until("the idle sandbox to stop", 30*time.Second, func(fr frame) bool {
		return fr.Kind == "status" && fr.field("stage") == "sandbox_stopped"
	})

	// Waking takes the platform longer than NIGHTONA_START_TIMEOUT.
	b.prompt(thread, "scenario:text again")
	frames := f.until("the start timeout", 60*time.Second, func(fr frame) bool { return fr.Kind == "error" })
	if msg := lastError(frames); !strings.Contains(msg, "did not start in time") || !strings.Contains(msg, "Send your prompt again") {
		t.Fatalf("start timeout in the thread: %q", msg)
	}

	// Daytona reports the sandbox broken: the next prompt says so and gets a new sandbox.
	old := srv.Sandboxes()[0].ID
	srv.SetState(old, "error", "the runner lost its disk")
	b.prompt(thread, "scenario:text once more")
	frames = f.until("a result in a new sandbox", 120*time.Second, isResult)
	var told bool
	for _, fr := range frames {
		if fr.Kind == "status" && strings.Contains(fr.field("message"), "the runner lost its disk") {
			told = true
		}
	}
	if !told {
		t.Fatal("the thread was not told why the sandbox was replaced")
	}
	if r := frames[len(frames)-1]; r.field("subtype") != "success" {
		t.Fatalf("result in the new sandbox: %s", r.Data)
	}
	if sess := b.session(thread); sess["sandbox_id"] == old || sess["sandbox_id"] == "" {
		t.Fatalf("the session still has the broken sandbox %s: %v", old, sess)
	}
}
