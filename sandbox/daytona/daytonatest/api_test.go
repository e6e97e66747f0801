package daytonatest

import (
	"encoding/json"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestLifecycle(t *testing.T) {
	t.Parallel()
	s := New(t, Config{CreateDelay: 150 * time.Millisecond, StartDelay: 100 * time.Millisecond,
		StopDelay: 100 * time.Millisecond, ArchiveDelay: 100 * time.Millisecond})
	c := newClient(t, s)

	created := c.create(map[string]any{
		"snapshot": "custom", "env": map[string]string{"A": "1"}, "labels": map[string]string{"k": "v"},
		"public": true, "autoStopInterval": 0, "autoArchiveInterval": 60, "autoDeleteInterval": -1, "target": "eu",
	})
	if created.State != stateCreating || created.DesiredState != stateStarted {
		t.Fatalf("create answered state %q desired %q, want creating/started", created.State, created.DesiredState)
	}
	if created.Name != created.ID || created.Snapshot != "custom" || created.Env["A"] != "1" || !created.Public ||
		created.AutoStop != 0 || created.ToolboxURL != s.ToolboxURL {
		t.Fatalf("create answered %+v", created)
	}
	id := created.ID
	if _, seen := c.waitStates(id, stateStarted); !slices.Equal(seen, []string{stateCreating, stateStarted}) {
		t.Fatalf("states while creating: %v", seen)
	}
	info := s.Sandboxes()
	if len(info) != 1 || info[0].ID != id || info[0].State != stateStarted || info[0].Labels["k"] != "v" ||
		info[0].Env["A"] != "1" || !info[0].Public || info[0].Snapshot != "custom" {
		t.Fatalf("Sandboxes() = %+v", info)
	}
	home := info[0].Home
	if fi, err := os.Stat(info[0].WorkDir); err != nil || !fi.IsDir() || !strings.HasPrefix(info[0].WorkDir, home) {
		t.Fatalf("workspace %q: %v", info[0].WorkDir, err)
	}

	// Stop answers at once while the sandbox is still stopping; start waits until started.
	var sb sandboxResp
	if status, data := c.api("POST", "/sandbox/"+id+"/stop", nil, &sb); status != http.StatusOK || sb.State != stateStopping {
		t.Fatalf("stop: %d %s", status, data)
	}
	c.waitState(id, stateStopped)
	if status, data := c.api("POST", "/sandbox/"+id+"/archive", nil, &sb); status != http.StatusOK || sb.State != stateArchiving {
		t.Fatalf("archive: %d %s", status, data)
	}
	c.waitState(id, stateArchived)
	// Starting an archived sandbox restores it; the answer does not wait for that.
	if status, data := c.api("POST", "/sandbox/"+id+"/start", nil, &sb); status != http.StatusOK || sb.State != stateRestoring {
		t.Fatalf("start from archived: %d %s", status, data)
	}
	c.waitState(id, stateStarted)
	c.api("POST", "/sandbox/"+id+"/stop", nil, nil)
	c.waitState(id, stateStopped)
	if status, data := c.api("POST", "/sandbox/"+id+"/start", nil, &sb); status != http.StatusOK || sb.State != stateStarted {
		t.Fatalf("start: %d %s, want started once answered", status, data)
	}
	if _, err := os.Stat(info[0].WorkDir); err != nil {
		t.Fatalf("workspace lost across stop, archive and start: %v", err)
	}

	if status, data := c.api("DELETE", "/sandbox/"+id, nil, &sb); status != http.StatusOK || sb.State != stateDestroying {
		t.Fatalf("delete: %d %s", status, data)
	}
	eventually(t, "sandbox gone", func() bool {
		status, _ := c.api("GET", "/sandbox/"+id, nil, nil)
		return status == http.StatusNotFound
	})
	eventually(t, "folder removed", func() bool { _, err := os.Stat(home); return os.IsNotExist(err) })
	if len(s.Sandboxes()) != 0 {
		t.Fatalf("Sandboxes() after delete = %+v", s.Sandboxes())
	}
	reqs := s.Requests()
	for _, want := range []string{"POST /api/sandbox", "POST /api/sandbox/" + id + "/start", "DELETE /api/sandbox/" + id} {
		if !slices.Contains(reqs, want) {
			t.Errorf("Requests() lacks %q: %v", want, reqs)
		}
	}
}

func TestListByLabels(t *testing.T) {
	t.Parallel()
	s := New(t, Config{})
	c := newClient(t, s)
	a := c.started(map[string]any{"labels": map[string]string{"app": "x", "env": "dev"}})
	b := c.started(map[string]any{"labels": map[string]string{"app": "x", "env": "prod"}})
	c.started(map[string]any{"labels": map[string]string{"app": "y"}})

	list := func(query string) []string {
		t.Helper()
		var out struct {
			Items []struct {
				ID    string `json:"id"`
				State string `json:"state"`
			} `json:"items"`
			NextCursor *string `json:"nextCursor"`
		}
		if status, data := c.api("GET", "/sandbox"+query, nil, &out); status != http.StatusOK {
			t.Fatalf("list %s: %d %s", query, status, data)
		}
		var ids []string
		for _, it := range out.Items {
			ids = append(ids, it.ID)
		}
		slices.Sort(ids)
		return ids
	}
	labels := func(m map[string]string) string {
		data, _ := json.Marshal(m)
		return "?labels=" + url.QueryEscape(string(data))
	}
	both := []string{a.ID, b.ID}
	slices.Sort(both)
	tests := []struct {
		name, query string
		want        []string
	}{
		{"one label", labels(map[string]string{"app": "x"}), both},
		{"two labels", labels(map[string]string{"app": "x", "env": "prod"}), []string{b.ID}},
		{"no match", labels(map[string]string{"app": "z"}), nil},
		{"state filter", "?states=stopped", nil},
		{"id prefix", "?id=" + strings.ToUpper(a.ID[:8]), []string{a.ID}},
	}
	for _, tt := range tests {
		if got := list(tt.query); !slices.Equal(got, tt.want) {
			t.Errorf("%s: got %v, want %v", tt.name, got, tt.want)
		}
	}
	if got := list(""); len(got) != 3 {
		t.Errorf("all: %v", got)
	}

	// Pages of one, following nextCursor.
	seen := map[string]bool{}
	cursor := ""
	for range 4 {
		var page struct {
			Items []struct {
				ID string `json:"id"`
			} `json:"items"`
			NextCursor *string `json:"nextCursor"`
		}
		c.api("GET", "/sandbox?limit=1"+cursor, nil, &page)
		for _, it := range page.Items {
			seen[it.ID] = true
		}
		if page.NextCursor == nil {
			break
		}
		cursor = "&cursor=" + url.QueryEscape(*page.NextCursor)
	}
	if len(seen) != 3 {
		t.Errorf("paging saw %d sandboxes, want 3", len(seen))
	}

	status, data := c.api("GET", "/sandbox?labels=notjson", nil, nil)
	if e := decodeAPIError(t, data); status != http.StatusBadRequest || e.Message != "Invalid labels JSON format" {
		t.Errorf("bad labels: %d %s", status, data)
	}

	// Labels are replaced, not merged.
	var got struct {
		Labels map[string]string `json:"labels"`
	}
	if status, data := c.api("PUT", "/sandbox/"+a.ID+"/labels", map[string]any{"labels": map[string]string{"session": "s1"}}, &got); status != http.StatusOK || len(got.Labels) != 1 || got.Labels["session"] != "s1" {
		t.Fatalf("replace labels: %d %s", status, data)
	}
	if ids := list(labels(map[string]string{"session": "s1"})); !slices.Equal(ids, []string{a.ID}) {
		t.Errorf("after relabel: %v", ids)
	}
}

func TestCreateErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		cfg     Config
		before  int // sandboxes created first
		body    map[string]any
		status  int
		message string
	}{
		{"quota", Config{Quota: 2}, 2, map[string]any{}, http.StatusBadRequest, "Total CPU limit exceeded. Maximum allowed: 2."},
		{"snapshot missing", Config{Snapshots: []string{"base"}}, 0, map[string]any{"snapshot": "nope"}, http.StatusBadRequest,
			"Snapshot nope not found. Did you add it through the Daytona Dashboard?"},
		{"resources with a snapshot", Config{}, 0, map[string]any{"cpu": 2}, http.StatusBadRequest, "Cannot specify Sandbox resources when using a snapshot"},
		{"negative auto-stop", Config{}, 0, map[string]any{"autoStopInterval": -1}, http.StatusBadRequest, "Auto-stop interval must be non-negative"},
		{"name taken", Config{}, 0, map[string]any{"name": "taken"}, http.StatusConflict, "Sandbox with name taken already exists"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := New(t, tt.cfg)
			c := newClient(t, s)
			for range tt.before {
				c.create(map[string]any{})
			}
			if tt.name == "name taken" {
				c.create(map[string]any{"name": "taken"})
			}
			status, data := c.api("POST", "/sandbox", tt.body, nil)
			e := decodeAPIError(t, data)
			if status != tt.status || e.StatusCode != tt.status || !strings.HasPrefix(e.Message, tt.message) ||
				e.Error != http.StatusText(tt.status) || e.Path != "/api/sandbox" {
				t.Fatalf("got %d %s, want %d %q", status, data, tt.status, tt.message)
			}
		})
	}

	t.Run("listed snapshot and build info", func(t *testing.T) {
		t.Parallel()
		s := New(t, Config{Snapshots: []string{"base"}, DefaultSnapshot: "dflt"})
		c := newClient(t, s)
		if sb := c.create(map[string]any{"snapshot": "base"}); sb.Snapshot != "base" {
			t.Errorf("snapshot %q", sb.Snapshot)
		}
		if sb := c.create(map[string]any{}); sb.Snapshot != "dflt" {
			t.Errorf("default snapshot %q", sb.Snapshot)
		}
		var sb struct {
			CPU       int            `json:"cpu"`
			BuildInfo map[string]any `json:"buildInfo"`
		}
		status, data := c.api("POST", "/sandbox", map[string]any{"buildInfo": map[string]any{"dockerfileContent": "FROM alpine"}, "cpu": 2}, &sb)
		if status != http.StatusOK || sb.CPU != 2 || sb.BuildInfo["snapshotRef"] == nil {
			t.Errorf("build info create: %d %s", status, data)
		}
	})
}

func TestWrongState(t *testing.T) {
	t.Parallel()
	s := New(t, Config{CreateDelay: time.Hour, KillGrace: 50 * time.Millisecond})
	c := newClient(t, s)
	creating := c.create(map[string]any{}).ID
	started := c.create(map[string]any{}).ID
	s.SetState(started, stateStarted, "")
	stopped := c.create(map[string]any{}).ID
	s.SetState(stopped, stateStopped, "")
	failed := c.create(map[string]any{}).ID
	s.SetState(failed, stateError, "disk on fire")

	tests := []struct {
		method, path string
		status       int
		message      string
	}{
		{"POST", "/sandbox/" + started + "/archive", http.StatusBadRequest, "Sandbox is not stopped"},
		{"POST", "/sandbox/" + stopped + "/stop", http.StatusBadRequest, "Sandbox is not in a stoppable state"},
		{"POST", "/sandbox/" + creating + "/stop", http.StatusConflict, "Sandbox state change in progress"},
		{"POST", "/sandbox/" + creating + "/start", http.StatusConflict, "Sandbox state change in progress"},
		{"DELETE", "/sandbox/" + creating, http.StatusConflict, "Sandbox state change in progress"},
		{"POST", "/sandbox/" + failed + "/start", http.StatusBadRequest, "Sandbox is in an errored state"},
		{"POST", "/sandbox/" + failed + "/stop", http.StatusBadRequest, "Sandbox is in an errored state"},
		{"GET", "/sandbox/nope", http.StatusNotFound, "Sandbox with ID or name nope not found"},
		{"POST", "/sandbox/nope/start", http.StatusNotFound, "Sandbox with ID or name nope not found"},
		{"DELETE", "/sandbox/nope", http.StatusNotFound, "Sandbox with ID or name nope not found"},
		{"GET", "/sandbox/nope/ports/3000/preview-url", http.StatusNotFound, "Sandbox with ID or name nope not found"},
		{"GET", "/sandbox/" + started + "/ports/70000/preview-url", http.StatusBadRequest, "Invalid port"},
		{"GET", "/sandbox/" + started + "/ports/3000/signed-preview-url?expiresInSeconds=0", http.StatusBadRequest,
			"expiresInSeconds must be between 1 second and 24 hours"},
	}
	for _, tt := range tests {
		status, data := c.api(tt.method, tt.path, nil, nil)
		if e := decodeAPIError(t, data); status != tt.status || e.Message != tt.message {
			t.Errorf("%s %s: %d %s, want %d %q", tt.method, tt.path, status, data, tt.status, tt.message)
		}
	}

	var sb sandboxResp
	c.api("GET", "/sandbox/"+failed, nil, &sb)
	if sb.State != stateError || sb.ErrorReason != "disk on fire" {
		t.Errorf("errored sandbox reads %+v", sb)
	}
	// An errored sandbox can still be deleted; starting one that is started is a no-op.
	if status, data := c.api("DELETE", "/sandbox/"+failed, nil, nil); status != http.StatusOK {
		t.Errorf("delete errored: %d %s", status, data)
	}
	if status, _ := c.api("POST", "/sandbox/"+started+"/start", nil, &sb); status != http.StatusOK || sb.State != stateStarted {
		t.Errorf("start started: %d %+v", status, sb)
	}
	// Toolbox calls on a sandbox that is not started fail as the runner fails them.
	status, data := c.tool(stopped, "GET", "/work-dir", nil, nil)
	if e := decodeToolboxError(t, data); status != http.StatusBadRequest || e.Message != msgNotStarted {
		t.Errorf("toolbox on stopped: %d %s", status, data)
	}
}

func TestAuth(t *testing.T) {
	t.Parallel()
	s := New(t, Config{})
	c := newClient(t, s)
	id := c.started(map[string]any{}).ID
	anon := &client{t: t, s: s}
	wrong := &client{t: t, s: s, header: http.Header{"Authorization": {"Bearer nope"}}}

	for _, cl := range []*client{anon, wrong} {
		status, data := cl.api("GET", "/sandbox", nil, nil)
		if e := decodeAPIError(t, data); status != http.StatusUnauthorized || e.Message != "Invalid credentials" {
			t.Errorf("API with %v: %d %s", cl.header, status, data)
		}
	}
	status, data := anon.tool(id, "GET", "/work-dir", nil, nil)
	if e := decodeToolboxError(t, data); status != http.StatusUnauthorized || e.Message != msgNoAuth || e.Code != "UNAUTHORIZED" {
		t.Errorf("toolbox without credentials: %d %s", status, data)
	}
	status, data = wrong.tool(id, "GET", "/work-dir", nil, nil)
	if e := decodeToolboxError(t, data); status != http.StatusUnauthorized || !strings.Contains(e.Message, "Bearer token is invalid") {
		t.Errorf("toolbox with a wrong key: %d %s", status, data)
	}
	// The proxy also takes the sandbox's preview token for the toolbox.
	var pv struct {
		Token string `json:"token"`
	}
	c.api("GET", "/sandbox/"+id+"/ports/3000/preview-url", nil, &pv)
	if status, data := anon.do("GET", s.ToolboxURL+"/"+id+"/work-dir", nil, http.Header{previewTokenHeader: {pv.Token}}); status != http.StatusOK {
		t.Errorf("toolbox with the preview token: %d %s", status, data)
	}
	// A sandbox the key cannot see is an authentication failure at the proxy, not a 404.
	if status, data := c.tool("nope", "GET", "/work-dir", nil, nil); status != http.StatusUnauthorized {
		t.Errorf("toolbox of an unknown sandbox: %d %s", status, data)
	}
}

func TestValidation(t *testing.T) {
	t.Parallel()
	rec := &recorder{TB: t}
	s := New(rec, Config{})
	c := newClient(t, s)
	id := c.started(map[string]any{})
	tests := []struct {
		name         string
		do           func() (int, []byte)
		status       int
		report       []string
		toolboxShape bool
	}{
		{"wrong type", func() (int, []byte) {
			return c.api("POST", "/sandbox", map[string]any{"autoStopInterval": "soon"}, nil)
		}, http.StatusBadRequest, []string{"POST /api/sandbox", "autoStopInterval"}, false},
		{"labels not strings", func() (int, []byte) {
			return c.api("PUT", "/sandbox/"+id.ID+"/labels", map[string]any{"labels": map[string]any{"a": 1}}, nil)
		}, http.StatusBadRequest, []string{"PUT", "/labels"}, false},
		{"missing required body field", func() (int, []byte) {
			return c.api("PUT", "/sandbox/"+id.ID+"/labels", map[string]any{}, nil)
		}, http.StatusBadRequest, []string{"labels"}, false},
		{"query type", func() (int, []byte) {
			return c.api("GET", "/sandbox/"+id.ID+"/ports/3000/signed-preview-url?expiresInSeconds=abc", nil, nil)
		}, http.StatusBadRequest, []string{"expiresInSeconds"}, false},
		{"no such operation", func() (int, []byte) {
			return c.api("POST", "/sandboxes", map[string]any{}, nil)
		}, http.StatusNotFound, []string{"POST /api/sandboxes", "no operation"}, false},
		{"toolbox required field", func() (int, []byte) {
			return c.tool(id.ID, "POST", "/process/execute", map[string]any{"cwd": "/"}, nil)
		}, http.StatusBadRequest, []string{"POST /toolbox/" + id.ID + "/process/execute", "command"}, true},
		{"toolbox required query", func() (int, []byte) {
			return c.tool(id.ID, "POST", "/files/folder?path=x", nil, nil)
		}, http.StatusBadRequest, []string{"mode"}, true},
	}
	for _, tt := range tests {
		before := len(rec.reports())
		status, data := tt.do()
		if status != tt.status {
			t.Errorf("%s: status %d %s, want %d", tt.name, status, data, tt.status)
		}
		if tt.status == http.StatusBadRequest {
			if tt.toolboxShape {
				decodeToolboxError(t, data)
			} else {
				decodeAPIError(t, data)
			}
		}
		reports := rec.reports()[before:]
		if len(reports) != 1 || !containsAll(reports[0], tt.report...) {
			t.Errorf("%s: reports %q, want one with %q", tt.name, reports, tt.report)
		}
	}
	// The same check guards the fake's own answers.
	v, err := s.api.match(mustRequest(t, "GET", s.APIURL+"/sandbox/x"), "/sandbox/x")
	if err != nil {
		t.Fatal(err)
	}
	if err := v.checkResponse(t.Context(), http.StatusOK, http.Header{"Content-Type": {"application/json"}}, []byte(`{"id":"x"}`)); err == nil {
		t.Error("a Sandbox without its required fields passed the response check")
	}
}

func mustRequest(t *testing.T, method, url string) *http.Request {
	t.Helper()
	r, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestFailNextAndSetState(t *testing.T) {
	t.Parallel()
	s := New(t, Config{})
	c := newClient(t, s)
	id := c.started(map[string]any{}).ID
	s.FailNext("POST", "/stop", http.StatusServiceUnavailable, "runner unavailable")
	s.FailNext("", "/work-dir", http.StatusBadGateway, "daemon down")

	status, data := c.api("POST", "/sandbox/"+id+"/stop", nil, nil)
	if e := decodeAPIError(t, data); status != http.StatusServiceUnavailable || e.Message != "runner unavailable" {
		t.Errorf("injected API fault: %d %s", status, data)
	}
	status, data = c.tool(id, "GET", "/work-dir", nil, nil)
	if e := decodeToolboxError(t, data); status != http.StatusBadGateway || e.Message != "daemon down" {
		t.Errorf("injected toolbox fault: %d %s", status, data)
	}
	// Each fault fails one request.
	if status, data := c.tool(id, "GET", "/work-dir", nil, nil); status != http.StatusOK {
		t.Errorf("after the fault: %d %s", status, data)
	}
	if status, data := c.api("POST", "/sandbox/"+id+"/stop", nil, nil); status != http.StatusOK {
		t.Errorf("after the fault: %d %s", status, data)
	}
	c.waitState(id, stateStopped)
	s.SetState(id, stateError, "runner lost")
	if info := s.Sandboxes(); info[0].State != stateError || info[0].ErrorReason != "runner lost" {
		t.Errorf("after SetState: %+v", info)
	}
	s.SetState(id, stateDestroyed, "")
	if status, _ := c.api("GET", "/sandbox/"+id, nil, nil); status != http.StatusNotFound {
		t.Errorf("destroyed sandbox answers %d", status)
	}
}
