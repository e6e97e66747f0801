//go:build linux

package daytonatest

import (
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// startServer runs the node server in a session of the sandbox and waits until it listens.
func startServer(t *testing.T, c *client, id string, port int) {
	t.Helper()
	c.tool(id, "POST", "/process/session", map[string]any{"sessionId": "srv"}, nil)
	var r struct {
		CmdID string `json:"cmdId"`
	}
	if status, data := c.tool(id, "POST", "/process/session/srv/exec", map[string]any{"command": nodeServer(port), "runAsync": true}, &r); status != http.StatusAccepted {
		t.Fatalf("start server: %d %s", status, data)
	}
	eventually(t, "node server listening", func() bool {
		_, logs := c.tool(id, "GET", "/process/session/srv/command/"+r.CmdID+"/logs", nil, nil)
		return strings.Contains(string(logs), "listening")
	})
}

type previewURL struct {
	SandboxID string `json:"sandboxId"`
	URL       string `json:"url"`
	Token     string `json:"token"`
}

func TestPreview(t *testing.T) {
	t.Parallel()
	s := New(t, Config{KillGrace: 100 * time.Millisecond})
	c := newClient(t, s)
	anon := &client{t: t, s: s}
	id := c.started(map[string]any{}).ID
	port := freePort(t)
	startServer(t, c, id, port)

	var pv previewURL
	if status, data := c.api("GET", fmt.Sprintf("/sandbox/%s/ports/%d/preview-url", id, port), nil, &pv); status != http.StatusOK || pv.SandboxID != id || pv.Token == "" {
		t.Fatalf("preview-url: %d %s", status, data)
	}
	tests := []struct {
		name, path string
		header     http.Header
		status     int
		body       string
	}{
		{"no token", "/", nil, http.StatusUnauthorized, ""},
		{"wrong token", "/", http.Header{previewTokenHeader: {"nope"}}, http.StatusUnauthorized, ""},
		{"token header", "/", http.Header{previewTokenHeader: {pv.Token}}, http.StatusOK, "hi / auth= token="},
		{"no trailing slash", "", http.Header{previewTokenHeader: {pv.Token}}, http.StatusOK, "hi / auth= token="},
		{"path and query", "/a/b?x=1", http.Header{previewTokenHeader: {pv.Token}}, http.StatusOK, "hi /a/b?x=1 auth= token="},
		{"token query", "/q?" + previewTokenQuery + "=" + pv.Token, nil, http.StatusOK, "hi /q auth= token="},
		// The app's own bearer token passes through; the API key is used up by the proxy.
		{"app bearer", "/", http.Header{previewTokenHeader: {pv.Token}, "Authorization": {"Bearer app"}}, http.StatusOK, "hi / auth=Bearer app token="},
		{"API key", "/", http.Header{"Authorization": {"Bearer " + s.APIKey}}, http.StatusOK, "hi / auth= token="},
	}
	for _, tt := range tests {
		status, data := anon.do("GET", pv.URL+tt.path, nil, tt.header)
		if status != tt.status || (tt.body != "" && string(data) != tt.body) {
			t.Errorf("%s: %d %q, want %d %q", tt.name, status, data, tt.status, tt.body)
		}
		if status == http.StatusUnauthorized {
			decodeToolboxError(t, data)
		}
	}

	// A start makes a new token; the old one stops working.
	c.api("POST", "/sandbox/"+id+"/stop", nil, nil)
	c.waitState(id, stateStopped)
	if status, _ := anon.do("GET", pv.URL+"/", nil, http.Header{previewTokenHeader: {pv.Token}}); status != http.StatusBadGateway {
		t.Errorf("preview of a stopped sandbox: %d, want 502", status)
	}
	if l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port)); err != nil {
		t.Errorf("the server still holds its port after stop: %v", err)
	} else {
		_ = l.Close()
	}
	c.api("POST", "/sandbox/"+id+"/start", nil, nil)
	var pv2 previewURL
	c.api("GET", fmt.Sprintf("/sandbox/%s/ports/%d/preview-url", id, port), nil, &pv2)
	if pv2.Token == pv.Token || pv2.URL != pv.URL {
		t.Fatalf("after restart: %+v, before %+v", pv2, pv)
	}
	if status, _ := anon.do("GET", pv.URL+"/", nil, http.Header{previewTokenHeader: {pv.Token}}); status != http.StatusUnauthorized {
		t.Errorf("old token after restart: %d, want 401", status)
	}
	if status, _ := anon.do("GET", pv.URL+"/", nil, http.Header{previewTokenHeader: {pv2.Token}}); status != http.StatusBadGateway {
		t.Errorf("new token, nothing listening: %d, want 502", status)
	}
	startServer(t, c, id, port)
	if status, data := anon.do("GET", pv.URL+"/", nil, http.Header{previewTokenHeader: {pv2.Token}}); status != http.StatusOK {
		t.Errorf("new token: %d %s", status, data)
	}

	// Signed URLs need no header, until they expire or are expired.
	var signed struct {
		URL   string `json:"url"`
		Token string `json:"token"`
		Port  int    `json:"port"`
	}
	c.api("GET", fmt.Sprintf("/sandbox/%s/ports/%d/signed-preview-url?expiresInSeconds=1", id, port), nil, &signed)
	if status, data := anon.do("GET", signed.URL+"/x", nil, nil); status != http.StatusOK || string(data) != "hi /x auth= token=" || signed.Port != port {
		t.Errorf("signed URL: %d %q", status, data)
	}
	var long struct {
		URL   string `json:"url"`
		Token string `json:"token"`
	}
	c.api("GET", fmt.Sprintf("/sandbox/%s/ports/%d/signed-preview-url", id, port), nil, &long)
	if status, data := c.api("POST", fmt.Sprintf("/sandbox/%s/ports/%d/signed-preview-url/%s/expire", id, port, long.Token), nil, nil); status != http.StatusOK {
		t.Errorf("expire: %d %s", status, data)
	}
	if status, _ := anon.do("GET", long.URL+"/", nil, nil); status != http.StatusUnauthorized {
		t.Errorf("expired by request: %d, want 401", status)
	}
	time.Sleep(1100 * time.Millisecond)
	if status, _ := anon.do("GET", signed.URL+"/x", nil, nil); status != http.StatusUnauthorized {
		t.Errorf("signed URL after expiry: %d, want 401", status)
	}
}

func TestPreviewPublicAndWebSocket(t *testing.T) {
	t.Parallel()
	s := New(t, Config{})
	c := newClient(t, s)
	id := c.started(map[string]any{"public": true}).ID

	// Any server on a 127.0.0.1 port is the sandbox's as far as previews go.
	up := websocket.Upgrader{}
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/ws" {
			fmt.Fprintf(w, "plain %s", r.URL.Path)
			return
		}
		ws, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer ws.Close()
		for {
			mt, msg, err := ws.ReadMessage()
			if err != nil {
				return
			}
			_ = ws.WriteMessage(mt, append([]byte("echo "), msg...))
		}
	}))
	t.Cleanup(app.Close)
	port := app.Listener.Addr().(*net.TCPAddr).Port

	var pv previewURL
	c.api("GET", fmt.Sprintf("/sandbox/%s/ports/%d/preview-url", id, port), nil, &pv)
	if status, data := (&client{t: t, s: s}).do("GET", pv.URL+"/page", nil, nil); status != http.StatusOK || string(data) != "plain /page" {
		t.Errorf("public preview without a token: %d %q", status, data)
	}
	ws, resp, err := websocket.DefaultDialer.Dial(strings.Replace(pv.URL, "http", "ws", 1)+"/ws", nil)
	if err != nil {
		t.Fatalf("websocket through the preview: %v (%v)", err, resp)
	}
	defer ws.Close()
	if err := ws.WriteMessage(websocket.TextMessage, []byte("ping")); err != nil {
		t.Fatal(err)
	}
	if _, msg, err := ws.ReadMessage(); err != nil || string(msg) != "echo ping" {
		t.Errorf("websocket echo: %q %v", msg, err)
	}
}

func TestPreviewAuthRedirect(t *testing.T) {
	t.Parallel()
	s := New(t, Config{PreviewAuthRedirect: true})
	c := newClient(t, s)
	id := c.started(map[string]any{}).ID
	var pv previewURL
	c.api("GET", fmt.Sprintf("/sandbox/%s/ports/3000/preview-url", id), nil, &pv)

	noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := noFollow.Get(pv.URL + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusTemporaryRedirect || !strings.Contains(resp.Header.Get("Location"), previewLoginPath) {
		t.Errorf("denied preview: %d %q, want 307 to the login page", resp.StatusCode, resp.Header.Get("Location"))
	}
	// A client that follows redirects lands on a page that answers 200: the trap the real
	// proxy sets for health probes.
	if status, data := (&client{t: t, s: s}).do("GET", pv.URL+"/healthz", nil, nil); status != http.StatusOK || !strings.Contains(string(data), "log in") {
		t.Errorf("followed: %d %q", status, data)
	}
}

func TestPreviewOfDeletedSandbox(t *testing.T) {
	t.Parallel()
	s := New(t, Config{})
	c := newClient(t, s)
	id := c.started(map[string]any{}).ID
	var pv previewURL
	c.api("GET", fmt.Sprintf("/sandbox/%s/ports/3000/preview-url", id), nil, &pv)
	c.api("DELETE", "/sandbox/"+id, nil, nil)
	eventually(t, "sandbox gone", func() bool { return len(s.Sandboxes()) == 0 })
	if status, data := (&client{t: t, s: s}).do("GET", pv.URL+"/", nil, http.Header{previewTokenHeader: {pv.Token}}); status != http.StatusBadGateway {
		t.Errorf("preview of a deleted sandbox: %d %s, want 502", status, data)
	}
}
