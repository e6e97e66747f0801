//go:build linux

package daytonatest

import (
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nightona/nightona/internal/procfs"
)

func TestToolboxFiles(t *testing.T) {
	t.Parallel()
	s := New(t, Config{})
	c := newClient(t, s)
	id := c.started(map[string]any{}).ID
	info := s.Sandboxes()[0]

	var dir struct {
		Dir string `json:"dir"`
	}
	if c.tool(id, "GET", "/user-home-dir", nil, &dir); dir.Dir != info.Home {
		t.Errorf("user-home-dir %q, want %q", dir.Dir, info.Home)
	}
	if c.tool(id, "GET", "/work-dir", nil, &dir); dir.Dir != info.WorkDir || dir.Dir != filepath.Join(info.Home, "workspace") {
		t.Errorf("work-dir %q, want %q", dir.Dir, info.WorkDir)
	}

	// Relative paths are relative to the work dir; missing folders are made.
	if status, data := c.upload(id, "app/hello.txt", []byte("hello\n")); status != http.StatusOK {
		t.Fatalf("upload: %d %s", status, data)
	}
	if got, err := os.ReadFile(filepath.Join(info.WorkDir, "app", "hello.txt")); err != nil || string(got) != "hello\n" {
		t.Fatalf("uploaded file: %q %v", got, err)
	}
	abs := url.QueryEscape(filepath.Join(info.WorkDir, "app", "hello.txt"))
	if status, data := c.do("GET", s.ToolboxURL+"/"+id+"/files/download?path="+abs, nil, nil); status != http.StatusOK || string(data) != "hello\n" {
		t.Errorf("download: %d %q", status, data)
	}
	if status, data := c.tool(id, "POST", "/files/permissions?path=app/hello.txt&mode=0600", nil, nil); status != http.StatusOK {
		t.Errorf("permissions: %d %s", status, data)
	}
	var fi struct {
		Name        string `json:"name"`
		Size        int    `json:"size"`
		IsDir       bool   `json:"isDir"`
		Permissions string `json:"permissions"`
	}
	if status, data := c.tool(id, "GET", "/files/info?path=app/hello.txt", nil, &fi); status != http.StatusOK ||
		fi.Name != "hello.txt" || fi.Size != 6 || fi.IsDir || fi.Permissions != "0600" {
		t.Errorf("info: %d %s", status, data)
	}
	if status, data := c.tool(id, "POST", "/files/folder?path=logs/today&mode=0700", nil, nil); status != http.StatusCreated {
		t.Errorf("folder: %d %s", status, data)
	}
	if fi, err := os.Stat(filepath.Join(info.WorkDir, "logs", "today")); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("folder made: %v %v", fi, err)
	}
	var list []struct {
		Name string `json:"name"`
	}
	if status, _ := c.tool(id, "GET", "/files", nil, &list); status != http.StatusOK || len(list) != 2 {
		t.Errorf("list: %d %+v", status, list)
	}

	tests := []struct {
		name, method, path string
		status             int
	}{
		{"missing file", "GET", "/files/info?path=nope", http.StatusNotFound},
		{"download a folder", "GET", "/files/download?path=app", http.StatusBadRequest},
		{"bad mode", "POST", "/files/permissions?path=app/hello.txt&mode=9x", http.StatusBadRequest},
		{"outside the sandbox", "GET", "/files/download?path=/etc/passwd", http.StatusForbidden},
		{"escape by dots", "GET", "/files/info?path=../../..", http.StatusForbidden},
	}
	for _, tt := range tests {
		if status, data := c.tool(id, tt.method, tt.path, nil, nil); status != tt.status {
			t.Errorf("%s: %d %s, want %d", tt.name, status, data, tt.status)
		}
	}
}

func TestExecute(t *testing.T) {
	t.Parallel()
	s := New(t, Config{})
	c := newClient(t, s)
	id := c.started(map[string]any{"env": map[string]string{"GREETING": "hi"}}).ID
	info := s.Sandboxes()[0]

	type result struct {
		ExitCode int    `json:"exitCode"`
		Result   string `json:"result"`
	}
	tests := []struct {
		name     string
		body     map[string]any
		exitCode int
		result   string
	}{
		{"env, stderr and exit code", map[string]any{"command": "echo $GREETING $EXTRA; echo oops >&2; exit 3", "envs": map[string]string{"EXTRA": "there"}},
			3, "hi there\noops\n"},
		{"work dir and HOME", map[string]any{"command": `pwd; echo "$HOME"`}, 0, info.WorkDir + "\n" + info.Home + "\n"},
		{"cwd", map[string]any{"command": "pwd", "cwd": info.Home}, 0, info.Home + "\n"},
		{"sandbox id", map[string]any{"command": "echo $DAYTONA_SANDBOX_ID"}, 0, id + "\n"},
	}
	for _, tt := range tests {
		var r result
		if status, data := c.tool(id, "POST", "/process/execute", tt.body, &r); status != http.StatusOK || r.ExitCode != tt.exitCode || r.Result != tt.result {
			t.Errorf("%s: %d %s, want exit %d %q", tt.name, status, data, tt.exitCode, tt.result)
		}
	}

	status, data := c.tool(id, "POST", "/process/execute", map[string]any{"command": "true", "envs": map[string]string{"1BAD": "x"}}, nil)
	if e := decodeToolboxError(t, data); status != http.StatusBadRequest || !strings.Contains(e.Message, "invalid environment variable name") {
		t.Errorf("bad env name: %d %s", status, data)
	}

	start := time.Now()
	status, data = c.tool(id, "POST", "/process/execute", map[string]any{"command": "sleep 30", "timeout": 1}, nil)
	if e := decodeToolboxError(t, data); status != http.StatusRequestTimeout || e.Message != "request timeout: command execution timeout" {
		t.Errorf("timeout: %d %s", status, data)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("timeout took %v", d)
	}
}

func TestSessions(t *testing.T) {
	t.Parallel()
	s := New(t, Config{KillGrace: 100 * time.Millisecond})
	c := newClient(t, s)
	id := c.started(map[string]any{}).ID
	info := s.Sandboxes()[0]

	if status, data := c.tool(id, "POST", "/process/session", map[string]any{"sessionId": "sh1"}, nil); status != http.StatusCreated {
		t.Fatalf("create session: %d %s", status, data)
	}
	status, data := c.tool(id, "POST", "/process/session", map[string]any{"sessionId": "sh1"}, nil)
	if e := decodeToolboxError(t, data); status != http.StatusConflict || e.Message != "conflict: session already exists" {
		t.Errorf("session twice: %d %s", status, data)
	}

	type execResp struct {
		CmdID    string  `json:"cmdId"`
		ExitCode *int    `json:"exitCode"`
		Output   *string `json:"output"`
		Stdout   *string `json:"stdout"`
		Stderr   *string `json:"stderr"`
	}
	// The shell keeps its state between commands.
	var r execResp
	c.tool(id, "POST", "/process/session/sh1/exec", map[string]any{"command": "mkdir -p sub && cd sub && export X=42"}, &r)
	if r.ExitCode == nil || *r.ExitCode != 0 {
		t.Fatalf("cd: %+v", r)
	}
	// Stdout and stderr are read apart, so their lines may interleave either way.
	status, data = c.tool(id, "POST", "/process/session/sh1/exec", map[string]any{"command": "pwd; echo $X; echo e >&2; false"}, &r)
	if status != http.StatusOK || r.ExitCode == nil || *r.ExitCode != 1 || r.Output == nil || r.Stdout != nil ||
		!containsAll(*r.Output, filepath.Join(info.WorkDir, "sub")+"\n", "42\n", "e\n") || len(*r.Output) != len(info.WorkDir)+10 {
		t.Errorf("exec without SDK version: %d %s", status, data)
	}
	// Newer SDKs get stdout and stderr apart.
	status, data = c.do("POST", s.ToolboxURL+"/"+id+"/process/session/sh1/exec", strings.NewReader(`{"command":"echo out; echo err >&2"}`),
		http.Header{"Content-Type": {"application/json"}, "X-Daytona-Sdk-Version": {"0.190.0"}})
	if status != http.StatusOK || !containsAll(string(data), `"stdout":"out\n"`, `"stderr":"err\n"`) {
		t.Errorf("exec with SDK version: %d %s", status, data)
	}

	// An async command answers at once; its exit code and logs come later.
	r = execResp{}
	c.tool(id, "POST", "/process/session/sh1/exec", map[string]any{"command": "echo begin; sleep 0.3; echo end; (exit 7)", "runAsync": true}, &r)
	if r.CmdID == "" || r.ExitCode != nil {
		t.Fatalf("async exec: %+v", r)
	}
	cmd := "/process/session/sh1/command/" + r.CmdID
	var got struct {
		ID       string `json:"id"`
		Command  string `json:"command"`
		ExitCode *int   `json:"exitCode"`
	}
	eventually(t, "async command done", func() bool {
		c.tool(id, "GET", cmd, nil, &got)
		return got.ExitCode != nil
	})
	if *got.ExitCode != 7 || !strings.HasPrefix(got.Command, "echo begin") {
		t.Errorf("command: %+v", got)
	}
	if status, data := c.tool(id, "GET", cmd+"/logs", nil, nil); status != http.StatusOK || string(data) != "begin\nend\n" {
		t.Errorf("logs: %d %q", status, data)
	}
	if status, data := c.do("GET", s.ToolboxURL+"/"+id+cmd+"/logs?follow=true", nil, nil); status != http.StatusOK || string(data) != "begin\nend\n" {
		t.Errorf("followed logs: %d %q", status, data)
	}
	var sess struct {
		SessionID string `json:"sessionId"`
		Commands  []any  `json:"commands"`
	}
	if c.tool(id, "GET", "/process/session/sh1", nil, &sess); sess.SessionID != "sh1" || len(sess.Commands) != 4 {
		t.Errorf("session: %+v", sess)
	}

	// Deleting the session kills what runs in it.
	c.tool(id, "POST", "/process/session/sh1/exec", map[string]any{"command": "echo $$ > shell.pid; sleep 300", "runAsync": true}, nil)
	pid := readPID(t, filepath.Join(info.WorkDir, "sub", "shell.pid"))
	if status, data := c.tool(id, "DELETE", "/process/session/sh1", nil, nil); status != http.StatusNoContent {
		t.Errorf("delete session: %d %s", status, data)
	}
	eventually(t, "session shell gone", func() bool { return !processAlive(pid) })
	if status, _ := c.tool(id, "GET", "/process/session/sh1", nil, nil); status != http.StatusNotFound {
		t.Errorf("deleted session answers %d", status)
	}
	if status, data := c.tool(id, "POST", "/process/session/nope/exec", map[string]any{"command": "true"}, nil); status != http.StatusInternalServerError {
		t.Errorf("exec in a missing session: %d %s", status, data)
	}
	// Commands are sourced into the session's shell: exit ends the session.
	c.tool(id, "POST", "/process/session", map[string]any{"sessionId": "dying"}, nil)
	if status, data := c.tool(id, "POST", "/process/session/dying/exec", map[string]any{"command": "exit 3"}, nil); status != http.StatusInternalServerError {
		t.Errorf("exit in a session: %d %s", status, data)
	}
}

func TestProcessesKilledOnStop(t *testing.T) {
	t.Parallel()
	s := New(t, Config{KillGrace: 200 * time.Millisecond})
	c := newClient(t, s)
	id := c.started(map[string]any{}).ID
	info := s.Sandboxes()[0]

	// A background process outlives the shell that started it, in the shell's group.
	if status, data := c.tool(id, "POST", "/process/execute", map[string]any{"command": "sleep 300 >/dev/null 2>&1 & echo $! > bg.pid"}, nil); status != http.StatusOK {
		t.Fatalf("execute: %d %s", status, data)
	}
	// One that ignores SIGTERM needs the SIGKILL after the grace.
	c.tool(id, "POST", "/process/session", map[string]any{"sessionId": "stubborn"}, nil)
	c.tool(id, "POST", "/process/session/stubborn/exec", map[string]any{"command": "trap '' TERM; echo $$ > fg.pid; while :; do sleep 1; done", "runAsync": true}, nil)
	// One that left for a session of its own, as a relay's dev server does: a container stop
	// ends it all the same.
	if status, data := c.tool(id, "POST", "/process/execute", map[string]any{"command": "setsid sh -c 'echo $$ > stray.pid; exec sleep 300' >/dev/null 2>&1 &"}, nil); status != http.StatusOK {
		t.Fatalf("execute: %d %s", status, data)
	}
	bg, fg := readPID(t, filepath.Join(info.WorkDir, "bg.pid")), readPID(t, filepath.Join(info.WorkDir, "fg.pid"))
	stray := readPID(t, filepath.Join(info.WorkDir, "stray.pid"))
	if !processAlive(stray) {
		t.Fatal("the stray process is not running")
	}
	if n := s.Sandboxes()[0].Processes; n != 2 {
		t.Errorf("live process groups %d, want 2", n)
	}

	c.api("POST", "/sandbox/"+id+"/stop", nil, nil)
	c.waitState(id, stateStopped)
	if processAlive(bg) || processAlive(fg) || processAlive(stray) {
		t.Fatalf("processes alive after stop: bg %v fg %v stray %v", processAlive(bg), processAlive(fg), processAlive(stray))
	}
	if n := s.Sandboxes()[0].Processes; n != 0 {
		t.Errorf("live process groups after stop: %d", n)
	}
	// The folder survives; sessions do not.
	c.api("POST", "/sandbox/"+id+"/start", nil, nil)
	if _, err := os.Stat(filepath.Join(info.WorkDir, "bg.pid")); err != nil {
		t.Errorf("file lost over stop/start: %v", err)
	}
	var sessions []any
	if c.tool(id, "GET", "/process/session", nil, &sessions); len(sessions) != 0 {
		t.Errorf("sessions after restart: %v", sessions)
	}
}

func TestPorts(t *testing.T) {
	t.Parallel()
	s := New(t, Config{})
	c := newClient(t, s)
	id := c.started(map[string]any{}).ID
	port := freePort(t)
	var inUse struct {
		IsInUse bool `json:"isInUse"`
	}
	if c.tool(id, "GET", fmt.Sprintf("/port/%d/in-use", port), nil, &inUse); inUse.IsInUse {
		t.Errorf("free port %d reported in use", port)
	}
	c.tool(id, "POST", "/process/session", map[string]any{"sessionId": "srv"}, nil)
	c.tool(id, "POST", "/process/session/srv/exec", map[string]any{"command": nodeServer(port), "runAsync": true}, nil)
	eventually(t, "server listening", func() bool {
		c.tool(id, "GET", fmt.Sprintf("/port/%d/in-use", port), nil, &inUse)
		return inUse.IsInUse
	})
	var ports struct {
		Ports []int `json:"ports"`
	}
	if c.tool(id, "GET", "/port", nil, &ports); len(ports.Ports) != 1 || ports.Ports[0] != port {
		t.Errorf("ports %v, want [%d]", ports.Ports, port)
	}
	if status, _ := c.tool(id, "GET", "/port/80/in-use", nil, nil); status != http.StatusBadRequest {
		t.Errorf("port outside 3000-9999: %d", status)
	}
}

// nodeServer is a command that serves HTTP on the port until killed: it answers with the
// path and what it saw of the credentials.
func nodeServer(port int) string {
	return fmt.Sprintf(`exec node -e 'require("http").createServer((q, s) => s.end("hi " + q.url + " auth=" + (q.headers.authorization || "") + " token=" + (q.headers["x-daytona-preview-token"] || ""))).listen(%d, "127.0.0.1", () => console.log("listening"))'`, port)
}

func readPID(t *testing.T, path string) int {
	t.Helper()
	var pid int
	eventually(t, "pid file "+path, func() bool {
		data, err := os.ReadFile(path)
		if err != nil {
			return false
		}
		pid, err = strconv.Atoi(strings.TrimSpace(string(data)))
		return err == nil
	})
	return pid
}

// processAlive reports whether pid runs (zombies count as gone).
func processAlive(pid int) bool {
	if syscall.Kill(pid, 0) != nil {
		return false
	}
	p, ok := procfs.Stat(pid)
	return ok && p.Live()
}
