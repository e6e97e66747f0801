package daytonatest

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// A session is what the daemon makes it: one long-lived shell reading commands from its
// stdin. Commands run one after another in that shell (a command still running, async or
// not, holds up the next one), and what they change in the shell (cd, export) stays. Each
// command's stdout and stderr go through named pipes into a log whose lines carry the
// daemon's stream markers.

// Stream markers the daemon puts before each line of a session command's log.
var (
	stdoutPrefix = []byte{0x01, 0x01, 0x01}
	stderrPrefix = []byte{0x02, 0x02, 0x02}
)

// shellSession is one session of a sandbox.
type shellSession struct {
	s     *Server
	id    string
	dir   string // pipes, scripts and exit codes; outside the sandbox's folder
	group *procGroup
	stdin io.WriteCloser

	mu    sync.Mutex // guards cmds, order and writes to stdin
	cmds  map[string]*sessionCmd
	order []string

	gone     chan struct{} // closed when the session is deleted or its sandbox stops
	goneOnce sync.Once
}

// sessionCmd is one command of a session.
type sessionCmd struct {
	id, command string
	dir         string
	readers     sync.WaitGroup

	mu       sync.Mutex
	log      []byte
	exit     *int
	changed  chan struct{} // closed and replaced when the log grows or the command ends
	finished chan struct{} // closed once the exit code is known and the output drained
}

// serveSession answers the /process/session operations.
func (s *Server) serveSession(w http.ResponseWriter, r *http.Request, v *validation, sb *sandbox, path string) {
	sessionID, cmdID := v.params["sessionId"], v.params["commandId"]
	fail := func(status int, msg string) { toolboxError(w, r, path, status, msg) }
	var ss *shellSession
	if sessionID != "" {
		s.mu.Lock()
		ss = sb.sessions[sessionID]
		s.mu.Unlock()
	}
	op := v.operationID()
	if ss == nil && sessionID != "" {
		if op == "SessionExecuteCommand" {
			// The daemon wraps this one into an error its middleware does not recognise.
			fail(http.StatusInternalServerError, "failed to execute command: not found: session not found")
			return
		}
		fail(http.StatusNotFound, "not found: session not found")
		return
	}
	switch op {
	case "ListSessions":
		s.mu.Lock()
		list := make([]*shellSession, 0, len(sb.sessions))
		for _, ss := range sb.sessions {
			list = append(list, ss)
		}
		s.mu.Unlock()
		out := []map[string]any{}
		for _, ss := range list {
			out = append(out, ss.dto())
		}
		writeJSON(w, http.StatusOK, out)
	case "CreateSession":
		var req struct {
			SessionID string `json:"sessionId"`
		}
		if err := decodeJSON(r, &req); err != nil || req.SessionID == "" {
			fail(http.StatusBadRequest, fmt.Sprintf("invalid body request: sessionId is required (%v)", err))
			return
		}
		status, msg := s.createSession(sb, req.SessionID)
		if status != http.StatusCreated {
			fail(status, msg)
			return
		}
		w.WriteHeader(http.StatusCreated)
	case "GetSession":
		writeJSON(w, http.StatusOK, ss.dto())
	case "DeleteSession":
		s.mu.Lock()
		if sb.sessions[sessionID] == ss {
			delete(sb.sessions, sessionID)
		}
		s.mu.Unlock()
		ss.abandon()
		killGroups([]*procGroup{ss.group}, s.cfg.KillGrace)
		w.WriteHeader(http.StatusNoContent)
	case "SessionExecuteCommand":
		var req struct {
			Command  string `json:"command"`
			RunAsync bool   `json:"runAsync"`
			Async    bool   `json:"async"`
		}
		if err := decodeJSON(r, &req); err != nil || strings.TrimSpace(req.Command) == "" {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		mode := logMode(r.Header)
		c, err := ss.exec(req.Command)
		if err != nil {
			fail(http.StatusInternalServerError, "failed to execute command: bad request: "+err.Error())
			return
		}
		if req.RunAsync || req.Async {
			writeJSON(w, http.StatusAccepted, map[string]any{"cmdId": c.id})
			return
		}
		select {
		case <-c.finished:
		case <-ss.gone:
			fail(http.StatusInternalServerError, "failed to execute command: bad request: session cancelled")
			return
		case <-ss.group.done:
			// The command ran exit in the session's shell. The daemon would wait forever;
			// a test is better served by an answer.
			s.log.Warn("session shell exited during a command", "session", ss.id, "command", req.Command)
			fail(http.StatusInternalServerError, "daytonatest: the session's shell exited (did the command run exit?); Daytona's daemon would never answer")
			return
		case <-r.Context().Done():
			return
		}
		logs, exit := c.snapshot()
		resp := map[string]any{"cmdId": c.id, "exitCode": exit}
		switch mode {
		case logsCombined:
			resp["output"] = string(stripMarkers(logs))
		case logsRaw:
			resp["output"] = string(logs)
		case logsJSON:
			stdout, stderr := demux(logs)
			resp["output"], resp["stdout"], resp["stderr"] = string(logs), string(stdout), string(stderr)
		}
		writeJSON(w, http.StatusOK, resp)
	case "GetSessionCommand":
		c := ss.command(cmdID)
		if c == nil {
			fail(http.StatusNotFound, "not found: command not found")
			return
		}
		writeJSON(w, http.StatusOK, c.dto())
	case "GetSessionCommandLogs":
		c := ss.command(cmdID)
		if c == nil {
			fail(http.StatusNotFound, "not found: command not found")
			return
		}
		if r.URL.Query().Get("follow") == "true" {
			if r.Header.Get("Upgrade") != "" {
				fail(http.StatusNotImplemented, "daytonatest: WebSocket log streaming is not implemented by the fake; use follow=true over plain HTTP")
				return
			}
			s.followLogs(w, r, ss, c)
			return
		}
		logs, _ := c.snapshot()
		switch logMode(r.Header) {
		case logsCombined:
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			_, _ = w.Write(stripMarkers(logs))
		case logsRaw:
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			_, _ = w.Write(logs)
		case logsJSON:
			stdout, stderr := demux(logs)
			writeJSON(w, http.StatusOK, map[string]string{"output": string(logs), "stdout": string(stdout), "stderr": string(stderr)})
		}
	}
}

// createSession starts the session's shell in the sandbox's work dir.
func (s *Server) createSession(sb *sandbox, id string) (int, string) {
	s.mu.Lock()
	_, exists := sb.sessions[id]
	s.mu.Unlock()
	if exists {
		return http.StatusConflict, "conflict: session already exists"
	}
	if err := os.MkdirAll(filepath.Join(s.root, "sessions"), 0o755); err != nil {
		return http.StatusInternalServerError, err.Error()
	}
	dir, err := os.MkdirTemp(filepath.Join(s.root, "sessions"), "session-")
	if err != nil {
		return http.StatusInternalServerError, err.Error()
	}
	cmd := exec.Command("sh")
	cmd.Dir = sb.workDir
	cmd.Env = envFor(sb, nil)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return http.StatusInternalServerError, err.Error()
	}
	g, err := s.spawn(sb, cmd)
	if err != nil {
		_ = os.RemoveAll(dir)
		return http.StatusBadRequest, "bad request: " + err.Error()
	}
	ss := &shellSession{s: s, id: id, dir: dir, group: g, stdin: stdin, cmds: map[string]*sessionCmd{}, gone: make(chan struct{})}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, exists := sb.sessions[id]; exists || sb.state != stateStarted {
		go killGroups([]*procGroup{g}, 0)
		return http.StatusConflict, "conflict: session already exists"
	}
	sb.sessions[id] = ss
	return http.StatusCreated, ""
}

func (ss *shellSession) dto() map[string]any {
	ss.mu.Lock()
	ids := append([]string(nil), ss.order...)
	ss.mu.Unlock()
	cmds := []map[string]any{}
	for _, id := range ids {
		if c := ss.command(id); c != nil {
			cmds = append(cmds, c.dto())
		}
	}
	return map[string]any{"sessionId": ss.id, "commands": cmds}
}

func (ss *shellSession) command(id string) *sessionCmd {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return ss.cmds[id]
}

// exec hands a command to the session's shell. The shell sources it (so cd and export
// stay), with stdin from /dev/null, stdout and stderr into the command's pipes, and writes
// its exit code to a file afterwards.
func (ss *shellSession) exec(command string) (*sessionCmd, error) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	select {
	case <-ss.gone:
		return nil, fmt.Errorf("session cancelled")
	default:
	}
	c := &sessionCmd{id: randomUUID(), command: command, changed: make(chan struct{}), finished: make(chan struct{})}
	c.dir = filepath.Join(ss.dir, c.id)
	if err := os.Mkdir(c.dir, 0o700); err != nil {
		return nil, fmt.Errorf("failed to create log directory: %w", err)
	}
	script, out, errp, exit := filepath.Join(c.dir, "cmd.sh"), filepath.Join(c.dir, "stdout.pipe"), filepath.Join(c.dir, "stderr.pipe"), filepath.Join(c.dir, "exit_code")
	if err := os.WriteFile(script, []byte(command+"\n"), 0o600); err != nil {
		return nil, fmt.Errorf("failed to write command file: %w", err)
	}
	for _, p := range []string{out, errp} {
		if err := mkfifo(p); err != nil {
			return nil, fmt.Errorf("failed to create output pipe: %w", err)
		}
	}
	c.readers.Add(2)
	go c.read(out, stdoutPrefix)
	go c.read(errp, stderrPrefix)
	go ss.watch(c, exit)
	line := fmt.Sprintf("{ . %s; } </dev/null >%s 2>%s; echo \"$?\" >%s\n", shQuote(script), shQuote(out), shQuote(errp), shQuote(exit))
	if _, err := io.WriteString(ss.stdin, line); err != nil {
		unblockFIFO(out)
		unblockFIFO(errp)
		return nil, fmt.Errorf("failed to write command: %w", err)
	}
	ss.cmds[c.id] = c
	ss.order = append(ss.order, c.id)
	return c, nil
}

// read copies one output stream into the log a line at a time, each line behind its marker,
// as the daemon's labelling does.
func (c *sessionCmd) read(path string, prefix []byte) {
	defer c.readers.Done()
	// Blocks until the shell opens the pipe for writing (or abandon releases it).
	f, err := os.Open(path)
	if err != nil {
		return
	}
	defer f.Close()
	br := bufio.NewReader(f)
	for {
		line, err := br.ReadBytes('\n')
		if len(line) > 0 {
			if line[len(line)-1] != '\n' {
				line = append(line, '\n')
			}
			c.mu.Lock()
			c.log = append(append(c.log, prefix...), line...)
			close(c.changed)
			c.changed = make(chan struct{})
			c.mu.Unlock()
		}
		if err != nil {
			return
		}
	}
}

// watch reports the exit code once the output is drained: like the daemon, a command whose
// background children keep its output open is not done until they close it.
func (ss *shellSession) watch(c *sessionCmd, exitPath string) {
	c.readers.Wait()
	for {
		if data, err := os.ReadFile(exitPath); err == nil {
			if n, err := strconv.Atoi(strings.TrimSpace(string(data))); err == nil {
				c.mu.Lock()
				c.exit = &n
				close(c.finished)
				close(c.changed)
				c.changed = make(chan struct{})
				c.mu.Unlock()
				return
			}
		}
		select {
		case <-ss.gone:
			return
		case <-ss.group.done:
			// The shell is gone (a command ran exit): no exit code will come.
			if _, err := os.Stat(exitPath); err != nil {
				return
			}
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// snapshot returns the log so far and the exit code (nil while running).
func (c *sessionCmd) snapshot() ([]byte, *int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]byte(nil), c.log...), c.exit
}

func (c *sessionCmd) dto() map[string]any {
	_, exit := c.snapshot()
	d := map[string]any{"id": c.id, "command": c.command}
	if exit != nil {
		d["exitCode"] = *exit
	}
	return d
}

// abandon marks the session gone and, in the background, releases readers still waiting
// for a shell that will never open their pipes, then removes the session's files. The
// caller kills the shell.
func (ss *shellSession) abandon() {
	ss.goneOnce.Do(func() {
		close(ss.gone)
		_ = ss.stdin.Close()
		ss.mu.Lock()
		cmds := make([]*sessionCmd, 0, len(ss.cmds))
		for _, c := range ss.cmds {
			cmds = append(cmds, c)
		}
		ss.mu.Unlock()
		ss.s.bg.Add(1)
		go func() {
			defer ss.s.bg.Done()
			deadline := time.Now().Add(5 * time.Second)
			for _, c := range cmds {
				done := make(chan struct{})
				go func() { c.readers.Wait(); close(done) }()
				for waiting := true; waiting && time.Now().Before(deadline); {
					unblockFIFO(filepath.Join(c.dir, "stdout.pipe"))
					unblockFIFO(filepath.Join(c.dir, "stderr.pipe"))
					select {
					case <-done:
						waiting = false
					case <-time.After(20 * time.Millisecond):
					}
				}
			}
			_ = os.RemoveAll(ss.dir)
		}()
	})
}

// followLogs streams a command's output as the runner does for follow=true over plain HTTP:
// the combined output without markers, until the command ends.
func (s *Server) followLogs(w http.ResponseWriter, r *http.Request, ss *shellSession, c *sessionCmd) {
	w.Header().Set("Content-Type", "application/octet-stream")
	w.WriteHeader(http.StatusOK)
	flusher, _ := w.(http.Flusher)
	sent := 0
	for {
		c.mu.Lock()
		chunk, changed, exit := c.log[sent:], c.changed, c.exit
		sent = len(c.log)
		c.mu.Unlock()
		if len(chunk) > 0 {
			if _, err := w.Write(stripMarkers(chunk)); err != nil {
				return
			}
			if flusher != nil {
				flusher.Flush()
			}
		}
		if exit != nil {
			return
		}
		select {
		case <-changed:
		case <-ss.gone:
			return
		case <-r.Context().Done():
			return
		case <-s.ctx.Done():
			return
		}
	}
}

// Log formats, chosen by the client's X-Daytona-SDK-Version as the daemon does.
const (
	logsCombined = iota // plain text, markers removed: no SDK version, or one before 0.27
	logsRaw             // plain text with markers, for the client to split: 0.27 to 0.166
	logsJSON            // {output, stdout, stderr}: 0.167 and later, and dev builds
)

func logMode(h http.Header) int {
	v := h.Get("X-Daytona-SDK-Version")
	if v == "" {
		if h.Get("X-Daytona-Split-Output") == "true" {
			return logsRaw
		}
		return logsCombined
	}
	if strings.Contains(v, "dev") {
		return logsJSON
	}
	ver, ok := parseVersion(v)
	switch {
	case !ok:
		return logsCombined
	case ver < 27_000:
		return logsCombined
	case ver < 167_000:
		return logsRaw
	default:
		return logsJSON
	}
}

// parseVersion turns "major.minor.patch[-pre]" into one comparable number.
func parseVersion(v string) (int, bool) {
	v, _, _ = strings.Cut(strings.TrimPrefix(v, "v"), "-")
	parts := strings.Split(v, ".")
	if len(parts) == 0 || len(parts) > 3 {
		return 0, false
	}
	n := 0
	for i := 0; i < 3; i++ {
		x := 0
		if i < len(parts) {
			var err error
			if x, err = strconv.Atoi(parts[i]); err != nil || x < 0 || x > 999 {
				return 0, false
			}
		}
		n = n*1000 + x
	}
	return n, true
}

func stripMarkers(b []byte) []byte {
	return bytes.ReplaceAll(bytes.ReplaceAll(b, stdoutPrefix, nil), stderrPrefix, nil)
}

// demux splits a marked log into its streams.
func demux(b []byte) (stdout, stderr []byte) {
	for len(b) > 0 {
		var dst *[]byte
		switch {
		case bytes.HasPrefix(b, stdoutPrefix):
			dst, b = &stdout, b[len(stdoutPrefix):]
		case bytes.HasPrefix(b, stderrPrefix):
			dst, b = &stderr, b[len(stderrPrefix):]
		default:
			b = b[1:]
			continue
		}
		end := len(b)
		if i := bytes.Index(b, stdoutPrefix); i >= 0 {
			end = i
		}
		if i := bytes.Index(b, stderrPrefix); i >= 0 && i < end {
			end = i
		}
		*dst = append(*dst, b[:end]...)
		b = b[end:]
	}
	return stdout, stderr
}

// shQuote quotes a string for sh.
func shQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
