package daytonatest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"mime/multipart"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// client talks to a fake over raw HTTP, as a provider would.
type client struct {
	t      testing.TB
	s      *Server
	header http.Header // added to every request
}

func newClient(t testing.TB, s *Server) *client {
	return &client{t: t, s: s, header: http.Header{"Authorization": {"Bearer " + s.APIKey}}}
}

// do sends a request and returns the status and body.
func (c *client) do(method, url string, body io.Reader, header http.Header) (int, []byte) {
	c.t.Helper()
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		c.t.Fatalf("new request: %v", err)
	}
	for k, v := range c.header {
		req.Header[k] = v
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		c.t.Fatalf("read %s %s: %v", method, url, err)
	}
	return resp.StatusCode, data
}

// json sends v as a JSON body (nil for none) and decodes the answer into out (if not nil).
func (c *client) json(method, url string, v, out any) (int, []byte) {
	c.t.Helper()
	var body io.Reader
	hdr := http.Header{}
	if v != nil {
		data, err := json.Marshal(v)
		if err != nil {
			c.t.Fatalf("encode: %v", err)
		}
		body = bytes.NewReader(data)
		hdr.Set("Content-Type", "application/json")
	}
	status, data := c.do(method, url, body, hdr)
	if out != nil && status < 300 && len(data) > 0 {
		if err := json.Unmarshal(data, out); err != nil {
			c.t.Fatalf("%s %s: decode %q: %v", method, url, data, err)
		}
	}
	return status, data
}

func (c *client) api(method, path string, v, out any) (int, []byte) {
	c.t.Helper()
	return c.json(method, c.s.APIURL+path, v, out)
}

func (c *client) tool(id, method, path string, v, out any) (int, []byte) {
	c.t.Helper()
	return c.json(method, c.s.ToolboxURL+"/"+id+path, v, out)
}

// sandboxResp is the part of the Sandbox schema the tests look at.
type sandboxResp struct {
	ID           string            `json:"id"`
	Name         string            `json:"name"`
	State        string            `json:"state"`
	DesiredState string            `json:"desiredState"`
	ErrorReason  string            `json:"errorReason"`
	Snapshot     string            `json:"snapshot"`
	Labels       map[string]string `json:"labels"`
	Env          map[string]string `json:"env"`
	Public       bool              `json:"public"`
	AutoStop     int               `json:"autoStopInterval"`
	ToolboxURL   string            `json:"toolboxProxyUrl"`
}

// create creates a sandbox and returns the answer as it came.
func (c *client) create(body map[string]any) sandboxResp {
	c.t.Helper()
	var sb sandboxResp
	if status, data := c.api("POST", "/sandbox", body, &sb); status != http.StatusOK {
		c.t.Fatalf("create: %d %s", status, data)
	}
	return sb
}

// started creates a sandbox and polls until it is started.
func (c *client) started(body map[string]any) sandboxResp {
	c.t.Helper()
	sb := c.create(body)
	return c.waitState(sb.ID, stateStarted)
}

// waitState polls GET /sandbox/{id} until the sandbox is in state and returns the states seen
// on the way in order (without repeats).
func (c *client) waitState(id, state string) sandboxResp {
	c.t.Helper()
	sb, _ := c.waitStates(id, state)
	return sb
}

func (c *client) waitStates(id, state string) (sandboxResp, []string) {
	c.t.Helper()
	var seen []string
	deadline := time.Now().Add(10 * time.Second)
	for {
		var sb sandboxResp
		status, data := c.api("GET", "/sandbox/"+id, nil, &sb)
		if status != http.StatusOK {
			c.t.Fatalf("get %s: %d %s", id, status, data)
		}
		if len(seen) == 0 || seen[len(seen)-1] != sb.State {
			seen = append(seen, sb.State)
		}
		if sb.State == state {
			return sb, seen
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("sandbox %s: states %v, never %s", id, seen, state)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// upload sends a file to the sandbox with the toolbox's multipart upload.
func (c *client) upload(id, path string, content []byte) (int, []byte) {
	c.t.Helper()
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	fw, err := mw.CreateFormFile("file", "upload")
	if err != nil {
		c.t.Fatal(err)
	}
	_, _ = fw.Write(content)
	_ = mw.Close()
	return c.do("POST", c.s.ToolboxURL+"/"+id+"/files/upload?path="+path, &buf,
		http.Header{"Content-Type": {mw.FormDataContentType()}})
}

// apiErrorBody is the API's error body.
type apiErrorBody struct {
	Path       string `json:"path"`
	Timestamp  string `json:"timestamp"`
	StatusCode int    `json:"statusCode"`
	Error      string `json:"error"`
	Message    string `json:"message"`
}

func decodeAPIError(t testing.TB, data []byte) apiErrorBody {
	t.Helper()
	var e apiErrorBody
	if err := json.Unmarshal(data, &e); err != nil || e.StatusCode == 0 || e.Error == "" || e.Path == "" || e.Timestamp == "" {
		t.Fatalf("not the API's error body: %s (%v)", data, err)
	}
	return e
}

// toolboxErrorBody is the body of the proxy's and daemon's errors.
type toolboxErrorBody struct {
	StatusCode int    `json:"statusCode"`
	Message    string `json:"message"`
	Code       string `json:"code"`
	Path       string `json:"path"`
	Method     string `json:"method"`
}

func decodeToolboxError(t testing.TB, data []byte) toolboxErrorBody {
	t.Helper()
	var e toolboxErrorBody
	if err := json.Unmarshal(data, &e); err != nil || e.StatusCode == 0 || e.Code == "" || e.Method == "" {
		t.Fatalf("not the toolbox's error body: %s (%v)", data, err)
	}
	return e
}

// freePort finds a port in 3000-9999 (the daemon's preview range) that nothing listens on.
func freePort(t testing.TB) int {
	t.Helper()
	for range 200 {
		p := 3000 + rand.IntN(7000)
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
		if err == nil {
			_ = l.Close()
			return p
		}
	}
	t.Fatal("no free port in 3000-9999")
	return 0
}

// eventually retries f until it returns true or the time is up.
func eventually(t testing.TB, what string, f func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !f() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// recorder stands in for the test given to New where a test expects the fake to report a
// broken request: it keeps those reports instead of failing.
type recorder struct {
	testing.TB
	mu     sync.Mutex
	errors []string
}

func (r *recorder) Errorf(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.errors = append(r.errors, fmt.Sprintf(format, args...))
}

func (r *recorder) reports() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.errors...)
}

func containsAll(s string, subs ...string) bool {
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			return false
		}
	}
	return true
}
