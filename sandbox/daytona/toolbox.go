package daytona

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// toolbox is the daemon inside one sandbox, reached through Daytona's toolbox proxy at
// {toolboxProxyUrl}/{sandboxId} with the same API key.
type toolbox struct {
	c    *client
	base string
	id   string
}

func (t *toolbox) url(path string) string { return t.base + path }

func (t *toolbox) op(what string) string { return what + " in sandbox " + t.id }

func (t *toolbox) homeDir(ctx context.Context) (string, error) {
	var r struct {
		Dir string `json:"dir"`
	}
	if err := t.c.call(ctx, request{op: t.op("find the home folder"), method: http.MethodGet, url: t.url("/user-home-dir")}, &r); err != nil {
		return "", err
	}
	if r.Dir == "" {
		return "", &APIError{Op: t.op("find the home folder"), Message: "the toolbox answered without a folder"}
	}
	return r.Dir, nil
}

// upload writes a file. The upload replaces the file whole, so repeating it is safe.
func (t *toolbox) upload(ctx context.Context, path string, data []byte) error {
	mk := func() (io.Reader, string) {
		var buf bytes.Buffer
		mw := multipart.NewWriter(&buf)
		fw, _ := mw.CreateFormFile("file", lastElem(path))
		_, _ = fw.Write(data)
		_ = mw.Close()
		return &buf, mw.FormDataContentType()
	}
	return t.c.call(ctx, request{op: t.op("upload " + path), method: http.MethodPost, url: t.url("/files/upload"),
		query: url.Values{"path": {path}}, body: mk, timeout: 5 * time.Minute}, nil)
}

func (t *toolbox) download(ctx context.Context, path string) ([]byte, error) {
	r, err := t.c.do(ctx, request{op: t.op("download " + path), method: http.MethodGet, url: t.url("/files/download"),
		query: url.Values{"path": {path}}})
	if err != nil {
		return nil, err
	}
	return r.body, nil
}

func (t *toolbox) mkdir(ctx context.Context, path string) error {
	return t.c.call(ctx, request{op: t.op("create folder " + path), method: http.MethodPost, url: t.url("/files/folder"),
		query: url.Values{"path": {path}, "mode": {"0755"}}}, nil)
}

func (t *toolbox) chmod(ctx context.Context, path string, mode uint32) error {
	return t.c.call(ctx, request{op: t.op("set the mode of " + path), method: http.MethodPost, url: t.url("/files/permissions"),
		query: url.Values{"path": {path}, "mode": {fmt.Sprintf("%04o", mode)}}}, nil)
}

func (t *toolbox) portInUse(ctx context.Context, port int) (bool, error) {
	var r struct {
		IsInUse bool `json:"isInUse"`
	}
	err := t.c.call(ctx, request{op: t.op("check port " + strconv.Itoa(port)), method: http.MethodGet,
		url: t.url("/port/" + strconv.Itoa(port) + "/in-use")}, &r)
	return r.IsInUse, err
}

// execResult is ExecuteResponse.
type execResult struct {
	ExitCode int    `json:"exitCode"`
	Result   string `json:"result"`
}

// execute runs a shell script and waits for it. The daemon does not run the command through a
// shell: it splits it at spaces and quotes (no escapes) and executes the parts. So the script
// travels base64-encoded, which has neither, inside `sh -c 'eval ...'`: that survives the
// daemon's splitting and a real shell's alike, whatever the script contains.
//
// The daemon waits for the command's output to close, so a script must not leave a process
// running in the background: long-lived processes go through sessions (startSession).
func (t *toolbox) execute(ctx context.Context, what, script, cwd string, timeout time.Duration) (*execResult, error) {
	enc := base64.StdEncoding.EncodeToString([]byte(script))
	body := map[string]any{
		"command": `sh -c 'eval "$(echo ` + enc + ` | base64 -d)"'`,
		"timeout": int((timeout + time.Second - 1) / time.Second),
	}
	if cwd != "" {
		body["cwd"] = cwd
	}
	var r execResult
	// Not retried after it was sent: a script may not be safe to run twice.
	err := t.c.call(ctx, request{op: t.op(what), method: http.MethodPost, url: t.url("/process/execute"), json: body,
		mode: retryUnsent, timeout: timeout + 30*time.Second}, &r)
	if err != nil {
		var e *APIError
		if errors.As(err, &e) && e.StatusCode == http.StatusRequestTimeout {
			e.Message = "the command did not finish within " + timeout.String()
		}
		return nil, err
	}
	return &r, nil
}

// startSession runs command in a fresh shell session of the daemon, without waiting for it:
// the way to keep a process running (the relay, an app). A session of the same name is
// deleted first, with whatever still runs in it, since a session runs its commands one after
// another and a new command would wait behind the old one forever. It returns the command's
// id, by which its output can be read.
func (t *toolbox) startSession(ctx context.Context, session, command string) (string, error) {
	if err := t.deleteSession(ctx, session); err != nil {
		return "", err
	}
	if err := t.c.call(ctx, request{op: t.op("create session " + session), method: http.MethodPost, url: t.url("/process/session"),
		json: map[string]string{"sessionId": session}, mode: retryUnsent}, nil); err != nil {
		return "", err
	}
	var r struct {
		CmdID string `json:"cmdId"`
	}
	if err := t.c.call(ctx, request{op: t.op("run in session " + session), method: http.MethodPost,
		url:  t.url("/process/session/" + url.PathEscape(session) + "/exec"),
		json: map[string]any{"command": command, "runAsync": true}, mode: retryUnsent}, &r); err != nil {
		return "", err
	}
	return r.CmdID, nil
}

func (t *toolbox) deleteSession(ctx context.Context, session string) error {
	err := t.c.call(ctx, request{op: t.op("delete session " + session), method: http.MethodDelete,
		url: t.url("/process/session/" + url.PathEscape(session))}, nil)
	var e *APIError
	if errors.As(err, &e) && (e.StatusCode == http.StatusNotFound || e.StatusCode == http.StatusBadRequest) {
		return nil // no such session: nothing to stop (older daemons answer 400)
	}
	return err
}

// commandExited reports whether a session command has ended, and with which status.
func (t *toolbox) commandExited(ctx context.Context, session, cmdID string) (bool, int, error) {
	var r struct {
		ExitCode *int `json:"exitCode"`
	}
	err := t.c.call(ctx, request{op: t.op("look at the command in session " + session), method: http.MethodGet,
		url: t.url("/process/session/" + url.PathEscape(session) + "/command/" + url.PathEscape(cmdID))}, &r)
	if err != nil {
		return false, 0, err
	}
	if r.ExitCode == nil {
		return false, 0, nil
	}
	return true, *r.ExitCode, nil
}

// commandLog returns what a session command printed. Depending on the headers a client sends
// the daemon answers JSON (stdout and stderr apart) or plain text; we send none of them and
// read both.
func (t *toolbox) commandLog(ctx context.Context, session, cmdID string) (string, error) {
	r, err := t.c.do(ctx, request{op: t.op("read the output of session " + session), method: http.MethodGet,
		url: t.url("/process/session/" + url.PathEscape(session) + "/command/" + url.PathEscape(cmdID) + "/logs")})
	if err != nil {
		return "", err
	}
	if strings.Contains(r.header.Get("Content-Type"), "json") {
		var v struct {
			Output string `json:"output"`
			Stdout string `json:"stdout"`
			Stderr string `json:"stderr"`
		}
		if json.Unmarshal(r.body, &v) == nil {
			if v.Output != "" {
				return stripPrefixes(v.Output), nil
			}
			return stripPrefixes(v.Stdout + v.Stderr), nil
		}
	}
	return stripPrefixes(string(r.body)), nil
}

// stripPrefixes removes the markers the daemon puts before stdout (\x01\x01\x01) and stderr
// (\x02\x02\x02) lines in its log files, should an answer carry them.
func stripPrefixes(s string) string {
	return strings.NewReplacer("\x01\x01\x01", "", "\x02\x02\x02", "").Replace(s)
}

// tail returns the last n lines of s, joined to fit one line of chat.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	out := strings.Join(lines, " | ")
	if len(out) > 1500 {
		out = "…" + out[len(out)-1500:]
	}
	return out
}

func lastElem(p string) string {
	if i := strings.LastIndexByte(p, '/'); i >= 0 {
		return p[i+1:]
	}
	return p
}

// shellQuote quotes s for a POSIX shell.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
