package daytona

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nightona/nightona/sandbox"
)

const testKey = "dtn_secret_key_0123456789abcdef"

// unitProvider is a provider on handler, with fast retries.
func unitProvider(t *testing.T, h http.Handler) (*Provider, *httptest.Server) {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	bin := filepath.Join(t.TempDir(), "nightona-relay")
	if err := os.WriteFile(bin, []byte("not really a relay"), 0o755); err != nil {
		t.Fatal(err)
	}
	p, err := New(Config{APIURL: srv.URL + "/api", APIKey: testKey, RelayBinary: bin,
		RetryMinWait: 5 * time.Millisecond, RetryMaxWait: 20 * time.Millisecond, PollInterval: 5 * time.Millisecond,
		StartTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return p, srv
}

func apiErr(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{"statusCode": status, "error": http.StatusText(status), "message": msg,
		"path": "/api/x", "timestamp": "2026-01-01T00:00:00.000Z"})
}

func sandboxJSON(id, state string) map[string]any {
	return map[string]any{"id": id, "name": id, "state": state, "labels": map[string]string{"a": "b", LabelManaged: "true"},
		"createdAt": "2026-01-02T03:04:05.000Z", "toolboxProxyUrl": "http://toolbox.invalid/toolbox", "public": false}
}

func noKey(t *testing.T, err error) {
	t.Helper()
	if err != nil && strings.Contains(err.Error(), testKey) {
		t.Fatalf("the API key leaked into an error: %v", err)
	}
}

func TestRetryAfterOn429(t *testing.T) {
	var n atomic.Int32
	var first, second time.Time
	p, _ := unitProvider(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer "+testKey {
			t.Errorf("authorization %q", r.Header.Get("Authorization"))
		}
		if n.Add(1) == 1 {
			first = time.Now()
			w.Header().Set("Retry-After", "1")
			apiErr(w, http.StatusTooManyRequests, "ThrottlerException: Too Many Requests")
			return
		}
		second = time.Now()
		_ = json.NewEncoder(w).Encode(sandboxJSON("sb1", "stopped"))
	}))
	sb, err := p.Get(context.Background(), "sb1")
	if err != nil || sb.State != sandbox.StateStopped || sb.Labels["a"] != "b" || sb.Labels[LabelManaged] != "" {
		t.Fatalf("get: %+v %v", sb, err)
	}
	if n.Load() != 2 {
		t.Fatalf("%d requests, want 2", n.Load())
	}
	if d := second.Sub(first); d < 900*time.Millisecond {
		t.Fatalf("retried after %v, want the 1 s Retry-After honoured", d)
	}
}

func TestRateLimitThatPersistsIsUnavailable(t *testing.T) {
	var n atomic.Int32
	p, _ := unitProvider(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		apiErr(w, http.StatusTooManyRequests, "Too Many Requests")
	}))
	_, err := p.Get(context.Background(), "sb1")
	if !errors.Is(err, sandbox.ErrUnavailable) || !strings.Contains(err.Error(), "rate limiting") {
		t.Fatalf("err %v, want ErrUnavailable saying rate limiting", err)
	}
	if n.Load() != 5 {
		t.Fatalf("%d attempts, want 1 + 4 retries", n.Load())
	}
}

func TestServiceUnavailableThenSuccess(t *testing.T) {
	var n atomic.Int32
	p, _ := unitProvider(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if n.Add(1) <= 2 {
			apiErr(w, http.StatusServiceUnavailable, "Service Unavailable")
			return
		}
		_ = json.NewEncoder(w).Encode(sandboxJSON("sb1", "started"))
	}))
	if _, err := p.api.get(context.Background(), "sb1"); err != nil || n.Load() != 3 {
		t.Fatalf("err %v after %d requests, want success on the third", err, n.Load())
	}
}

func TestNotFound(t *testing.T) {
	p, _ := unitProvider(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		apiErr(w, http.StatusNotFound, "Sandbox with ID or name nope not found")
	}))
	_, err := p.Get(context.Background(), "nope")
	if !errors.Is(err, sandbox.ErrNotFound) || !strings.Contains(err.Error(), "get sandbox nope") {
		t.Fatalf("get: %v, want ErrNotFound naming the operation", err)
	}
	if err := p.Delete(context.Background(), "nope"); err != nil {
		t.Fatalf("delete of a missing sandbox: %v", err)
	}
	if err := p.Stop(context.Background(), "nope"); !errors.Is(err, sandbox.ErrNotFound) {
		t.Fatalf("stop: %v", err)
	}
}

func TestDestroyedIsNotFound(t *testing.T) {
	p, _ := unitProvider(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = json.NewEncoder(w).Encode(sandboxJSON("sb1", "destroying"))
	}))
	if _, err := p.Get(context.Background(), "sb1"); !errors.Is(err, sandbox.ErrNotFound) {
		t.Fatalf("get of a destroying sandbox: %v", err)
	}
}

func TestCreateErrors(t *testing.T) {
	for name, tc := range map[string]struct {
		status int
		msg    string
		want   error
	}{
		"quota":         {http.StatusForbidden, "Total CPU limit exceeded. Maximum allowed: 10.\nTo increase, upgrade your tier.", sandbox.ErrQuota},
		"quota as 400":  {http.StatusBadRequest, "Total memory limit exceeded. Maximum allowed: 20GiB.", sandbox.ErrQuota},
		"per sandbox":   {http.StatusForbidden, "CPU request 8 exceeds maximum allowed per sandbox (4).", sandbox.ErrQuota},
		"snapshot":      {http.StatusBadRequest, "Snapshot nightona not found. Did you add it through the Daytona Dashboard?", sandbox.ErrSnapshotMissing},
		"snapshot busy": {http.StatusBadRequest, "Snapshot nightona is pending", sandbox.ErrSnapshotMissing},
		"bad key":       {http.StatusUnauthorized, "Unauthorized", sandbox.ErrUnavailable},
	} {
		t.Run(name, func(t *testing.T) {
			var n atomic.Int32
			p, _ := unitProvider(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				n.Add(1)
				apiErr(w, tc.status, tc.msg)
			}))
			_, err := p.Create(context.Background(), sandbox.Spec{})
			if !errors.Is(err, tc.want) {
				t.Fatalf("create: %v, want %v", err, tc.want)
			}
			if n.Load() != 1 {
				t.Fatalf("%d requests: a refusal must not be retried", n.Load())
			}
			if strings.Contains(err.Error(), "\n") || !strings.Contains(err.Error(), "create sandbox") {
				t.Fatalf("message %q: want one line naming the operation", err)
			}
			noKey(t, err)
		})
	}
}

func TestAPIKeyNeverInErrors(t *testing.T) {
	p, _ := unitProvider(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// A misbehaving proxy that echoes the request back.
		apiErr(w, http.StatusBadRequest, "bad request with header "+r.Header.Get("Authorization"))
	}))
	_, err := p.Get(context.Background(), "sb1")
	if err == nil || !strings.Contains(err.Error(), "[redacted]") {
		t.Fatalf("err %v, want the echoed key redacted", err)
	}
	noKey(t, err)
	_, err = p.List(context.Background(), map[string]string{"x": "y"})
	noKey(t, err)
	// Nor in transport errors.
	p.cl.http = &http.Client{Transport: failing{err: errors.New("proxy said: " + testKey)}}
	_, err = p.Get(context.Background(), "sb1")
	if !errors.Is(err, sandbox.ErrUnavailable) {
		t.Fatalf("transport failure: %v, want ErrUnavailable", err)
	}
	noKey(t, err)
}

type failing struct{ err error }

func (f failing) RoundTrip(*http.Request) (*http.Response, error) { return nil, f.err }

// refuseFirst fails the first n requests as a refused connection, then passes them on.
type refuseFirst struct {
	n    atomic.Int32
	next http.RoundTripper
}

func (r *refuseFirst) RoundTrip(req *http.Request) (*http.Response, error) {
	if r.n.Add(-1) >= 0 {
		return nil, &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connection refused")}
	}
	return r.next.RoundTrip(req)
}

// TestCreateIsNeverRepeatedBlindly: POST /sandbox is retried when the server clearly did not
// get it, and after an ambiguous failure only once a lookup by name shows nothing was made.
func TestCreateIsNeverRepeatedBlindly(t *testing.T) {
	t.Run("refused connection is retried", func(t *testing.T) {
		var posts atomic.Int32
		p, _ := unitProvider(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method == http.MethodPost {
				posts.Add(1)
				_ = json.NewEncoder(w).Encode(sandboxJSON("sb1", "creating"))
				return
			}
			apiErr(w, http.StatusTeapot, "stop here")
		}))
		rt := &refuseFirst{next: http.DefaultTransport}
		rt.n.Store(2)
		p.cl.http = &http.Client{Transport: rt}
		s, err := p.createSandbox(context.Background(), p.createBody(sandbox.Spec{}))
		if err != nil || s.ID != "sb1" || posts.Load() != 1 {
			t.Fatalf("create %+v %v after %d posts", s, err, posts.Load())
		}
	})
	t.Run("500 is not retried without a lookup", func(t *testing.T) {
		var mu sync.Mutex
		var log []string
		made := map[string]bool{}
		p, _ := unitProvider(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			mu.Lock()
			defer mu.Unlock()
			log = append(log, r.Method+" "+r.URL.Path)
			switch r.Method {
			case http.MethodPost:
				var body createBody
				_ = json.NewDecoder(r.Body).Decode(&body)
				if len(log) == 1 {
					made[body.Name] = true // made it, then failed to say so
					apiErr(w, http.StatusInternalServerError, "Internal server error")
					return
				}
				t.Errorf("a second POST /sandbox although the first made the sandbox")
			case http.MethodGet:
				name := strings.TrimPrefix(r.URL.Path, "/api/sandbox/")
				if made[name] {
					_ = json.NewEncoder(w).Encode(sandboxJSON("sb-made", "creating"))
					return
				}
				apiErr(w, http.StatusNotFound, "Sandbox not found")
			}
		}))
		s, err := p.createSandbox(context.Background(), p.createBody(sandbox.Spec{}))
		if err != nil || s.ID != "sb-made" {
			t.Fatalf("create: %+v %v (requests %v)", s, err, log)
		}
	})
	t.Run("500 with nothing made is posted again", func(t *testing.T) {
		var posts atomic.Int32
		p, _ := unitProvider(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			switch r.Method {
			case http.MethodPost:
				if posts.Add(1) == 1 {
					apiErr(w, http.StatusBadGateway, "Bad Gateway")
					return
				}
				_ = json.NewEncoder(w).Encode(sandboxJSON("sb2", "creating"))
			case http.MethodGet:
				apiErr(w, http.StatusNotFound, "Sandbox not found")
			}
		}))
		s, err := p.createSandbox(context.Background(), p.createBody(sandbox.Spec{}))
		if err != nil || s.ID != "sb2" || posts.Load() != 2 {
			t.Fatalf("create %+v %v after %d posts", s, err, posts.Load())
		}
	})
}

func TestErrorStateGivesErrFailed(t *testing.T) {
	var deleted atomic.Bool
	p, _ := unitProvider(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.Method == http.MethodPost:
			_ = json.NewEncoder(w).Encode(sandboxJSON("sb1", "creating"))
		case r.Method == http.MethodDelete:
			deleted.Store(true)
			_ = json.NewEncoder(w).Encode(sandboxJSON("sb1", "destroying"))
		default:
			s := sandboxJSON("sb1", "error")
			s["errorReason"] = "Failed to pull snapshot image"
			_ = json.NewEncoder(w).Encode(s)
		}
	}))
	_, err := p.Create(context.Background(), sandbox.Spec{})
	if !errors.Is(err, sandbox.ErrFailed) || !strings.Contains(err.Error(), "Failed to pull snapshot image") {
		t.Fatalf("create: %v, want ErrFailed with the reason", err)
	}
	if !deleted.Load() {
		t.Fatal("the failed sandbox was not deleted")
	}
	sb, err := p.Get(context.Background(), "sb1")
	if err != nil || sb.State != sandbox.StateError || sb.Reason != "Failed to pull snapshot image" {
		t.Fatalf("get: %+v %v", sb, err)
	}
}

func TestStartTimesOut(t *testing.T) {
	p, _ := unitProvider(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost {
			return // accepted; the sandbox never gets anywhere
		}
		_ = json.NewEncoder(w).Encode(sandboxJSON("sb1", "starting"))
	}))
	p.cfg.StartTimeout = 200 * time.Millisecond
	_, err := p.Start(context.Background(), "sb1")
	if !errors.Is(err, sandbox.ErrStartTimeout) || !strings.Contains(err.Error(), "still starting") {
		t.Fatalf("start: %v, want ErrStartTimeout saying where it got stuck", err)
	}
}

func TestListSendsLabelsAsJSON(t *testing.T) {
	var got map[string]string
	p, _ := unitProvider(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = json.Unmarshal([]byte(r.URL.Query().Get("labels")), &got)
		cursor := r.URL.Query().Get("cursor")
		items := []any{sandboxJSON("sb1", "started")}
		next := any("c2")
		if cursor == "c2" {
			items, next = []any{sandboxJSON("sb2", "stopped"), sandboxJSON("sb3", "destroyed")}, nil
		}
		_ = json.NewEncoder(w).Encode(map[string]any{"items": items, "nextCursor": next})
	}))
	list, err := p.List(context.Background(), map[string]string{"a": "b"})
	if err != nil || len(list) != 2 || list[1].ID != "sb2" {
		t.Fatalf("list: %+v %v, want both pages without the destroyed one", list, err)
	}
	if got["a"] != "b" || got[LabelManaged] != "true" {
		t.Fatalf("labels filter %v", got)
	}
}

func TestMapState(t *testing.T) {
	for state, want := range map[string]sandbox.State{
		"started": sandbox.StateStarted, "stopped": sandbox.StateStopped, "archived": sandbox.StateArchived,
		"creating": sandbox.StateCreating, "pulling_snapshot": sandbox.StateCreating, "starting": sandbox.StateStarting,
		"restoring": sandbox.StateStarting, "stopping": sandbox.StateStopping, "archiving": sandbox.StateArchiving,
		"error": sandbox.StateError, "build_failed": sandbox.StateError,
	} {
		if got, gone := mapState(&apiSandbox{State: state}); got != want || gone {
			t.Errorf("%s: %s %v, want %s", state, got, gone, want)
		}
	}
	if _, gone := mapState(&apiSandbox{State: "destroyed"}); !gone {
		t.Error("destroyed is not gone")
	}
	if got, _ := mapState(&apiSandbox{State: "resizing", DesiredState: "stopped"}); got != sandbox.StateStopping {
		t.Errorf("resizing towards stopped: %s", got)
	}
}

func TestErrorMessage(t *testing.T) {
	for body, want := range map[string]string{
		`{"statusCode":400,"message":["snapshot must be a string","cpu must be an integer"],"error":"Bad Request"}`: "snapshot must be a string; cpu must be an integer",
		`{"statusCode":404,"message":"Sandbox not found","code":"NOT_FOUND"}`:                                       "Sandbox not found",
		`{"error":"session not found"}`: "session not found",
		"plain\ntext":                   "plain text",
		"<html><body>502</body></html>": "",
	} {
		if got := errorMessage([]byte(body)); got != want {
			t.Errorf("%s: %q, want %q", body, got, want)
		}
	}
}

func TestInWorkspace(t *testing.T) {
	l := layout{ws: "/home/daytona/workspace"}
	for rel, want := range map[string]string{
		"a.txt": "/home/daytona/workspace/a.txt", "src/app.js": "/home/daytona/workspace/src/app.js",
		"src/../b": "/home/daytona/workspace/b", "../etc/passwd": "", "/etc/passwd": "", "": "", ".": "",
	} {
		got, err := inWorkspace(l, rel)
		if (want == "") != (err != nil) || got != want {
			t.Errorf("%q: %q %v, want %q", rel, got, err, want)
		}
	}
}

// daemonSplit is the toolbox daemon's command splitting (apps/daemon/pkg/toolbox/process/
// execute): spaces separate, ' and " group, there are no escapes, and no shell is involved.
func daemonSplit(command string) []string {
	var args []string
	var cur strings.Builder
	var quote rune
	for _, r := range command {
		switch {
		case (r == '"' || r == '\'') && quote == 0:
			quote = r
		case r == quote:
			quote = 0
		case r == ' ' && quote == 0:
			if cur.Len() > 0 {
				args = append(args, cur.String())
				cur.Reset()
			}
		default:
			cur.WriteRune(r)
		}
	}
	if cur.Len() > 0 {
		args = append(args, cur.String())
	}
	return args
}

// TestExecuteEncoding runs a script full of quotes as the daemon would run our command.
func TestExecuteEncoding(t *testing.T) {
	var sent string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var body struct {
			Command string `json:"command"`
		}
		_ = json.NewDecoder(r.Body).Decode(&body)
		sent = body.Command
		args := daemonSplit(body.Command)
		out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
		code := 0
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			code = ee.ExitCode()
		}
		_ = json.NewEncoder(w).Encode(map[string]any{"exitCode": code, "result": string(out)})
	}))
	defer srv.Close()
	tb := &toolbox{c: &client{http: srv.Client(), key: testKey, timeout: 5 * time.Second}, base: srv.URL, id: "sb1"}
	script := `x="it's a \"test\""; printf '%s|%s\n' "$x" 'a  b'
echo $((6*7)) # comment
exit 3`
	res, err := tb.execute(context.Background(), "test", script, "", 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if res.ExitCode != 3 || res.Result != "it's a \"test\"|a  b\n42\n" {
		t.Fatalf("ran %q: status %d output %q", sent, res.ExitCode, res.Result)
	}
	// A real shell parses the command the same way.
	out, err := exec.Command("sh", "-c", sent).CombinedOutput()
	if !bytes.Equal(out, []byte(res.Result)) {
		t.Fatalf("through sh -c: %q %v", out, err)
	}
}

func TestSessionLogFormats(t *testing.T) {
	for name, tc := range map[string]struct{ ctype, body string }{
		"json": {"application/json", `{"output":"\u0001\u0001\u0001line one\n\u0002\u0002\u0002boom\n","stdout":"line one\n","stderr":"boom\n"}`},
		"text": {"text/plain", "line one\nboom\n"},
	} {
		t.Run(name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", tc.ctype)
				_, _ = io.WriteString(w, tc.body)
			}))
			defer srv.Close()
			tb := &toolbox{c: &client{http: srv.Client(), key: testKey, timeout: 5 * time.Second}, base: srv.URL, id: "sb1"}
			out, err := tb.commandLog(context.Background(), "s", "c")
			if err != nil || tail(out, 10) != "line one | boom" {
				t.Fatalf("%q %v", out, err)
			}
		})
	}
}

func TestTimers(t *testing.T) {
	p, _ := unitProvider(t, http.NotFoundHandler())
	b := p.createBody(sandbox.Spec{AutoArchive: 90 * time.Second, AutoDelete: -1})
	if *b.AutoStopInterval != 60 || *b.AutoArchiveInterval != 2 || *b.AutoDeleteInterval != -1 {
		t.Fatalf("timers %d %d %d", *b.AutoStopInterval, *b.AutoArchiveInterval, *b.AutoDeleteInterval)
	}
	b = p.createBody(sandbox.Spec{AutoStop: -1})
	if *b.AutoStopInterval != 0 || b.AutoArchiveInterval != nil || b.AutoDeleteInterval != nil {
		t.Fatalf("off/default timers %v %v %v", *b.AutoStopInterval, b.AutoArchiveInterval, b.AutoDeleteInterval)
	}
	if b.Labels[LabelManaged] != "true" || b.Labels[labelPermissionMode] != "acceptEdits" || !strings.HasPrefix(b.Name, "nightona-") {
		t.Fatalf("body %+v", b)
	}
}

func TestNewValidates(t *testing.T) {
	if _, err := New(Config{RelayBinary: "/bin/sh"}); !errors.Is(err, sandbox.ErrUnavailable) {
		t.Fatalf("no key: %v", err)
	}
	if _, err := New(Config{APIKey: testKey, RelayBinary: "/no/such/relay"}); !errors.Is(err, sandbox.ErrUnavailable) {
		t.Fatalf("missing relay binary: %v", err)
	}
}
