package daytonatest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Messages of the proxy's and runner's errors.
const (
	msgNotStarted = "bad request: no IP address found. Is the Sandbox started?"
	msgNoAuth     = "unauthorized: missing authentication: provide a preview access token (via header, query parameter, or cookie) or use an API key or JWT"
)

// Preview-token carriers the proxy accepts (header and query parameter).
const (
	previewTokenHeader = "X-Daytona-Preview-Token"
	previewTokenQuery  = "DAYTONA_SANDBOX_AUTH_KEY"
)

// authenticate checks a request to the toolbox or a private preview the way Daytona's proxy
// does: the API key as a bearer token, or the sandbox's preview token in the header or query.
// Credentials it used are removed, so the sandbox's process never sees them; a bearer token
// that is not the API key stays (it may be the app's own). It returns "" when the request may
// pass, else the 401 message.
func (s *Server) authenticate(r *http.Request, known bool, previewToken string) string {
	var failed []string
	if tok := bearer(r); tok != "" {
		if known && tok == s.APIKey {
			r.Header.Del("Authorization")
			return ""
		}
		failed = append(failed, "Bearer token is invalid")
	}
	if tok := r.Header.Get(previewTokenHeader); tok != "" {
		r.Header.Del(previewTokenHeader)
		if known && tok == previewToken {
			return ""
		}
		failed = append(failed, "Auth key header is invalid")
	}
	q := r.URL.Query()
	if tok := q.Get(previewTokenQuery); tok != "" {
		if known && tok == previewToken {
			q.Del(previewTokenQuery)
			r.URL.RawQuery = q.Encode()
			return ""
		}
		failed = append(failed, "Auth key query parameter is invalid")
	}
	if len(failed) == 0 {
		return msgNoAuth
	}
	return "unauthorized: authentication failed: " + strings.Join(failed, ",")
}

// serveToolbox answers <ToolboxURL>/<sandboxId>/<path>: the proxy's checks, the spec, a
// queued fault, the sandbox's state, then the daemon's operation.
func (s *Server) serveToolbox(w http.ResponseWriter, r *http.Request) {
	id, rest, ok := strings.Cut(strings.TrimPrefix(r.URL.Path, "/toolbox/"), "/")
	if !ok || id == "" {
		toolboxError(w, r, r.URL.Path, http.StatusNotFound, "not found: not found")
		return
	}
	path := "/" + rest
	s.mu.Lock()
	sb := s.sandboxes[id]
	var token string
	if sb != nil {
		token = sb.authToken
	}
	s.mu.Unlock()
	if msg := s.authenticate(r, sb != nil, token); msg != "" {
		toolboxError(w, r, r.URL.Path, http.StatusUnauthorized, msg)
		return
	}
	v, err := s.toolbox.match(r, path)
	if errors.Is(err, errNoRoute) {
		s.failf("%s %s (toolbox path %s) is no operation of Daytona's toolbox spec", r.Method, r.URL.Path, path)
		http.Error(w, "404 page not found", http.StatusNotFound)
		return
	}
	if err != nil {
		s.failf("%s %s (toolbox path %s) does not match Daytona's toolbox spec: %v", r.Method, r.URL.Path+query(r), path, err)
		toolboxError(w, r, path, http.StatusBadRequest, "bad request: "+err.Error())
		return
	}
	if f, ok := s.takeFault(r.Method, path); ok {
		toolboxError(w, r, path, f.status, f.message)
		return
	}
	s.mu.Lock()
	started := sb.state == stateStarted && s.sandboxes[id] == sb
	if started {
		sb.lastActivity = time.Now()
	}
	s.mu.Unlock()
	if !started {
		toolboxError(w, r, r.URL.Path, http.StatusBadRequest, msgNotStarted)
		return
	}
	cw := &captureWriter{ResponseWriter: w, limit: 1 << 20}
	s.dispatchToolbox(cw, r, v, sb, path)
	if err := v.checkResponse(r.Context(), cw.status, cw.Header(), cw.body.Bytes()); err != nil {
		s.failf("the fake's answer to %s %s (toolbox path %s) does not match Daytona's toolbox spec: %v", r.Method, r.URL.Path, path, err)
	}
}

func query(r *http.Request) string {
	if r.URL.RawQuery == "" {
		return ""
	}
	return "?" + r.URL.RawQuery
}

// dispatchToolbox runs a daemon operation. Errors mostly come as the daemon makes them: a
// bare status (gin's AbortWithError leaves the body empty) or the JSON error body.
func (s *Server) dispatchToolbox(w http.ResponseWriter, r *http.Request, v *validation, sb *sandbox, path string) {
	q := r.URL.Query()
	fail := func(status int, msg string) { toolboxError(w, r, path, status, msg) }
	switch op := v.operationID(); op {
	case "GetUserHomeDir":
		writeJSON(w, http.StatusOK, map[string]string{"dir": sb.home})
	case "GetWorkDir":
		writeJSON(w, http.StatusOK, map[string]string{"dir": sb.workDir})
	case "GetVersion":
		writeJSON(w, http.StatusOK, map[string]string{"version": daemonVersion})
	case "ListFiles":
		dir := q.Get("path")
		if dir == "" {
			dir = sb.workDir
		}
		s.withPath(w, r, sb, dir, func(p string) {
			entries, err := os.ReadDir(p)
			if err != nil {
				w.WriteHeader(statusOf(err))
				return
			}
			out := []fileInfo{}
			for _, e := range entries {
				if fi, err := statInfo(filepath.Join(p, e.Name())); err == nil {
					out = append(out, fi)
				}
			}
			writeJSON(w, http.StatusOK, out)
		})
	case "GetFileInfo":
		s.withPath(w, r, sb, q.Get("path"), func(p string) {
			fi, err := statInfo(p)
			if err != nil {
				w.WriteHeader(statusOf(err))
				return
			}
			writeJSON(w, http.StatusOK, fi)
		})
	case "DownloadFile":
		s.withPath(w, r, sb, q.Get("path"), func(p string) { download(w, r, p) })
	case "UploadFile":
		s.withPath(w, r, sb, q.Get("path"), func(p string) { upload(w, r, p) })
	case "CreateFolder":
		s.withPath(w, r, sb, q.Get("path"), func(p string) {
			perm, ok := parseMode(q.Get("mode"), 0o755)
			if !ok {
				w.WriteHeader(http.StatusBadRequest)
				return
			}
			if err := os.MkdirAll(p, perm); err != nil {
				w.WriteHeader(http.StatusBadRequest)
				return
			}
			w.WriteHeader(http.StatusCreated)
		})
	case "SetFilePermissions":
		s.withPath(w, r, sb, q.Get("path"), func(p string) { setPermissions(w, p, q.Get("mode"), q.Get("owner"), q.Get("group")) })
	case "DeleteFile":
		s.withPath(w, r, sb, q.Get("path"), func(p string) {
			fi, err := os.Stat(p)
			switch {
			case err != nil:
				w.WriteHeader(statusOf(err))
			case fi.IsDir() && q.Get("recursive") != "true":
				fail(http.StatusBadRequest, "bad request: cannot delete directory without recursive flag")
			case os.RemoveAll(p) != nil:
				w.WriteHeader(http.StatusBadRequest)
			default:
				w.WriteHeader(http.StatusNoContent)
			}
		})
	case "MoveFile":
		s.withPath(w, r, sb, q.Get("source"), func(src string) {
			s.withPath(w, r, sb, q.Get("destination"), func(dst string) {
				if err := os.Rename(src, dst); err != nil {
					w.WriteHeader(statusOf(err))
					return
				}
				w.WriteHeader(http.StatusOK)
			})
		})
	case "ExecuteCommand":
		s.execute(w, r, sb, path)
	case "ListSessions", "CreateSession", "GetSession", "DeleteSession", "SessionExecuteCommand",
		"GetSessionCommand", "GetSessionCommandLogs":
		s.serveSession(w, r, v, sb, path)
	case "GetPorts":
		s.mu.Lock()
		var pgids []int
		for _, g := range sb.procs {
			pgids = append(pgids, g.pgid)
		}
		s.mu.Unlock()
		ports := listeningPorts(pgids)
		if ports == nil {
			ports = []int{}
		}
		writeJSON(w, http.StatusOK, map[string]any{"ports": ports})
	case "IsPortInUse":
		port, err := strconv.Atoi(v.params["port"])
		if err != nil || port < 3000 || port > 9999 {
			// The daemon only answers for ports 3000-9999, the range previews are meant for.
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		writeJSON(w, http.StatusOK, map[string]bool{"isInUse": portInUse(port)})
	default:
		s.log.Warn("toolbox operation not implemented by the fake", "operation", op, "method", r.Method, "path", path)
		fail(http.StatusNotImplemented, "daytonatest: toolbox operation "+op+" is not implemented by the fake")
	}
}

// portInUse tries to listen on the port: if that fails, something holds it.
func portInUse(port int) bool {
	l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		return true
	}
	_ = l.Close()
	return false
}

// withPath resolves a path of the sandbox (relative ones against its work dir) and runs f on
// it. Paths outside the sandbox's folder are refused: the sandbox's filesystem is a folder of
// this machine, and a test must not write over the machine's files.
func (s *Server) withPath(w http.ResponseWriter, r *http.Request, sb *sandbox, p string, f func(string)) {
	if p == "" {
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	abs := p
	if !filepath.IsAbs(abs) {
		abs = filepath.Join(sb.workDir, abs)
	}
	abs = filepath.Clean(abs)
	if abs != sb.home && !strings.HasPrefix(abs, sb.home+string(filepath.Separator)) {
		s.log.Warn("toolbox path outside the sandbox folder refused", "path", p, "home", sb.home)
		toolboxError(w, r, r.URL.Path, http.StatusForbidden,
			fmt.Sprintf("daytonatest: path %s is outside the sandbox's folder %s (its HOME)", p, sb.home))
		return
	}
	f(abs)
}

// statusOf maps a file error to the daemon's status.
func statusOf(err error) int {
	switch {
	case errors.Is(err, os.ErrNotExist):
		return http.StatusNotFound
	case errors.Is(err, os.ErrPermission):
		return http.StatusForbidden
	default:
		return http.StatusBadRequest
	}
}

// fileInfo is the spec's FileInfo schema.
type fileInfo struct {
	Name        string    `json:"name"`
	Size        int64     `json:"size"`
	Mode        string    `json:"mode"`
	ModTime     string    `json:"modTime"`
	ModifiedAt  time.Time `json:"modifiedAt"`
	IsDir       bool      `json:"isDir"`
	Owner       string    `json:"owner"`
	Group       string    `json:"group"`
	Permissions string    `json:"permissions"`
}

func statInfo(p string) (fileInfo, error) {
	fi, err := os.Stat(p)
	if err != nil {
		return fileInfo{}, err
	}
	uid, gid := fileOwner(fi)
	return fileInfo{
		Name: fi.Name(), Size: fi.Size(), Mode: fi.Mode().String(),
		ModTime: fi.ModTime().String(), ModifiedAt: fi.ModTime(), IsDir: fi.IsDir(),
		Owner: uid, Group: gid, Permissions: fmt.Sprintf("%04o", fi.Mode().Perm()),
	}, nil
}

// parseMode reads an octal mode; empty gives def.
func parseMode(raw string, def os.FileMode) (os.FileMode, bool) {
	if raw == "" {
		return def, true
	}
	n, err := strconv.ParseUint(raw, 8, 32)
	if err != nil {
		return 0, false
	}
	return os.FileMode(n), true
}

// download sends a file as the daemon does.
func download(w http.ResponseWriter, r *http.Request, p string) {
	fi, err := os.Stat(p)
	if err != nil {
		w.WriteHeader(statusOf(err))
		return
	}
	if fi.IsDir() {
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Disposition", fmt.Sprintf(`attachment; filename=%q`, filepath.Base(p)))
	http.ServeFile(w, r, p)
}

// upload saves the multipart "file" part at p, making missing folders as gin does.
func upload(w http.ResponseWriter, r *http.Request, p string) {
	f, _, err := r.FormFile("file")
	if err != nil {
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	defer f.Close()
	if err := os.MkdirAll(filepath.Dir(p), 0o750); err != nil {
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	out, err := os.Create(p)
	if err != nil {
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	_, err = io.Copy(out, f)
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	w.WriteHeader(http.StatusOK)
}

// setPermissions changes mode and ownership as the daemon does.
func setPermissions(w http.ResponseWriter, p, mode, owner, group string) {
	if _, err := os.Stat(p); err != nil {
		w.WriteHeader(statusOf(err))
		return
	}
	if mode != "" {
		m, ok := parseMode(mode, 0)
		if !ok || os.Chmod(p, m) != nil {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
	}
	if owner != "" || group != "" {
		uid, gid := -1, -1
		var err error
		if owner != "" {
			if uid, err = strconv.Atoi(owner); err != nil {
				w.WriteHeader(http.StatusBadRequest) // the fake resolves numeric ids only
				return
			}
		}
		if group != "" {
			if gid, err = strconv.Atoi(group); err != nil {
				w.WriteHeader(http.StatusBadRequest)
				return
			}
		}
		if os.Lchown(p, uid, gid) != nil {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
	}
	w.WriteHeader(http.StatusOK)
}

// envFor is a sandbox process's environment: the sandbox's env, its HOME, this machine's
// PATH, the variables Daytona's runner sets, then the request's own.
func envFor(sb *sandbox, extra map[string]string) []string {
	var env []string
	add := func(m map[string]string) {
		keys := make([]string, 0, len(m))
		for k := range m {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			env = append(env, k+"="+m[k])
		}
	}
	add(sb.env)
	env = append(env, "HOME="+sb.home, "PATH="+os.Getenv("PATH"),
		"DAYTONA_SANDBOX_ID="+sb.id, "DAYTONA_SANDBOX_SNAPSHOT="+sb.snapshot, "DAYTONA_SANDBOX_USER="+osUser)
	add(extra)
	return env
}

// spawn starts cmd as a process group of the sandbox, if it is still started.
func (s *Server) spawn(sb *sandbox, cmd *exec.Cmd) (*procGroup, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if sb.state != stateStarted || s.sandboxes[sb.id] != sb || s.closed.Load() {
		return nil, errors.New("sandbox is not started")
	}
	g, err := startGroup(cmd)
	if err != nil {
		return nil, err
	}
	live := sb.procs[:0]
	for _, old := range sb.procs {
		if old.alive() {
			live = append(live, old)
		}
	}
	sb.procs = append(live, g)
	return g, nil
}

// execute answers POST /process/execute: sh -c in the work dir (or cwd), combined output,
// and a timeout only when the request sets one (the spec's "defaults to 10 seconds" is not
// what the daemon does).
func (s *Server) execute(w http.ResponseWriter, r *http.Request, sb *sandbox, path string) {
	var req struct {
		Command string            `json:"command"`
		Cwd     *string           `json:"cwd"`
		Envs    map[string]string `json:"envs"`
		Timeout *int              `json:"timeout"`
	}
	if err := decodeJSON(r, &req); err != nil {
		toolboxError(w, r, path, http.StatusBadRequest, "bad request: invalid request body: "+err.Error())
		return
	}
	if strings.TrimSpace(req.Command) == "" {
		toolboxError(w, r, path, http.StatusBadRequest, "bad request: command cannot be empty or whitespace-only")
		return
	}
	for k := range req.Envs {
		if !validEnvKey(k) {
			toolboxError(w, r, path, http.StatusBadRequest, fmt.Sprintf("bad request: invalid environment variable name: '%s'", k))
			return
		}
	}
	cmd := exec.Command("sh", "-c", req.Command)
	cmd.Dir = sb.workDir
	if req.Cwd != nil && *req.Cwd != "" {
		cmd.Dir = *req.Cwd
		if !filepath.IsAbs(cmd.Dir) {
			cmd.Dir = filepath.Join(sb.workDir, cmd.Dir)
		}
	}
	cmd.Env = envFor(sb, req.Envs)
	// An os.Pipe, not a buffer: the answer waits for the output to end, as the daemon's does,
	// but a kill of the group must be able to end that wait.
	pr, pw, err := os.Pipe()
	if err != nil {
		writeJSON(w, http.StatusOK, map[string]any{"exitCode": -1, "result": err.Error()})
		return
	}
	cmd.Stdout, cmd.Stderr = pw, pw
	g, err := s.spawn(sb, cmd)
	_ = pw.Close()
	if err != nil {
		_ = pr.Close()
		writeJSON(w, http.StatusOK, map[string]any{"exitCode": -1, "result": err.Error()})
		return
	}
	var out bytes.Buffer
	outDone := make(chan struct{})
	go func() {
		defer close(outDone)
		_, _ = io.Copy(&out, pr)
		_ = pr.Close()
	}()
	var timedOut <-chan time.Time
	if req.Timeout != nil && *req.Timeout > 0 {
		t := time.NewTimer(time.Duration(*req.Timeout) * time.Second)
		defer t.Stop()
		timedOut = t.C
	}
	for outCh, exitCh := outDone, g.done; outCh != nil || exitCh != nil; {
		select {
		case <-outCh:
			outCh = nil
		case <-exitCh:
			exitCh = nil
		case <-timedOut:
			killGroups([]*procGroup{g}, 0)
			toolboxError(w, r, path, http.StatusRequestTimeout, "request timeout: command execution timeout")
			return
		case <-r.Context().Done():
			return // the process runs on, as it does in the daemon
		case <-s.ctx.Done():
			return
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"exitCode": g.exit, "result": out.String()})
}

// validEnvKey is the daemon's rule for variable names: [A-Za-z_][A-Za-z0-9_]*.
func validEnvKey(k string) bool {
	if k == "" {
		return false
	}
	for i, c := range k {
		letter := c == '_' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
		if !letter && (i == 0 || c < '0' || c > '9') {
			return false
		}
	}
	return true
}

// decodeJSON reads a JSON body.
func decodeJSON(r *http.Request, v any) error {
	return json.NewDecoder(r.Body).Decode(v)
}
