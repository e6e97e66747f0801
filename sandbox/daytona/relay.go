package daytona

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/nightona/nightona/relay"
	"github.com/nightona/nightona/sandbox"
)

// PreviewTokenHeader carries a private sandbox's preview token to Daytona's preview proxy.
const PreviewTokenHeader = "X-Daytona-Preview-Token"

// relaySession is the toolbox session the relay runs in.
const relaySession = "nightona-relay"

// bakedRelay is where a snapshot may install nightona-relay; it is used when it is the same
// build as Config.RelayBinary.
const bakedRelay = "/usr/local/bin/nightona-relay"

// relayInfo is how to reach a sandbox's relay and its dev server.
type relayInfo struct {
	ep        sandbox.Endpoint
	devURL    string
	devHeader http.Header
}

func (r *relayInfo) fill(sb *sandbox.Sandbox) {
	ep := r.ep
	ep.Header = r.ep.Header.Clone()
	sb.Relay = &ep
	if r.devURL != "" {
		sb.PreviewURL = r.devURL
		sb.PreviewHeader = r.devHeader.Clone()
	}
}

func (b *box) setRelay(r *relayInfo) {
	b.mu.Lock()
	b.relay = r
	b.mu.Unlock()
}

func (b *box) cachedRelay() *relayInfo {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.relay
}

func previewHeader(public bool, token string) http.Header {
	if public || token == "" {
		return nil
	}
	return http.Header{PreviewTokenHeader: {token}}
}

// layout is where Nightona's files are in a sandbox.
type layout struct {
	dir, ws, devDir                  string
	relay, relayNew, token, pid, run string
}

func (p *Provider) layout(home string) layout {
	home = strings.TrimRight(home, "/")
	dir := home + "/.nightona"
	ws := p.cfg.Workspace
	if !strings.HasPrefix(ws, "/") {
		ws = home + "/" + ws
	}
	dev := p.cfg.DevDir
	switch {
	case dev == "":
		dev = ws
	case !strings.HasPrefix(dev, "/"):
		dev = ws + "/" + dev
	}
	return layout{dir: dir, ws: ws, devDir: dev, relay: dir + "/nightona-relay", relayNew: dir + "/nightona-relay.new",
		token: dir + "/token", pid: dir + "/relay.pid", run: dir + "/run-relay.sh"}
}

// toolboxFor returns the toolbox of a sandbox; s may be nil when the caller has not fetched it.
func (p *Provider) toolboxFor(ctx context.Context, b *box, s *apiSandbox, id string) (*toolbox, error) {
	b.mu.Lock()
	base := b.toolbox
	b.mu.Unlock()
	if base == "" {
		proxy := ""
		if s != nil {
			proxy = s.ToolboxProxyURL
		}
		if proxy == "" {
			var err error
			if proxy, err = p.api.toolboxProxyURL(ctx, id); err != nil {
				return nil, err
			}
		}
		if proxy == "" {
			return nil, &APIError{Op: "find the toolbox of sandbox " + id, Message: "Daytona gave no toolbox URL", kind: sandbox.ErrUnavailable}
		}
		base = strings.TrimRight(proxy, "/") + "/" + url.PathEscape(id)
		b.mu.Lock()
		b.toolbox = base
		b.mu.Unlock()
	}
	return &toolbox{c: p.cl, base: base, id: id}, nil
}

// homeOf returns the sandbox user's home folder. patient keeps asking while the toolbox is not
// up yet, as it may not be the moment a sandbox has started.
func (p *Provider) homeOf(ctx context.Context, b *box, tb *toolbox, patient bool) (string, error) {
	b.mu.Lock()
	home := b.home
	b.mu.Unlock()
	if home != "" {
		return home, nil
	}
	w := p.newWaiter()
	for {
		home, err := tb.homeDir(ctx)
		if err == nil {
			b.mu.Lock()
			b.home = home
			b.mu.Unlock()
			return home, nil
		}
		if !patient || !(errors.Is(err, sandbox.ErrUnavailable) || errors.Is(err, sandbox.ErrNotFound)) {
			return "", err
		}
		if w.wait(ctx) != nil {
			return "", err
		}
	}
}

// liveRelay returns the sandbox's relay if it answers with its token, or nil. What is cached
// is tried first; when that fails the preview URL (its token changes with every start) and the
// relay token (another replica may have restarted the relay) are fetched again.
func (p *Provider) liveRelay(ctx context.Context, b *box, s *apiSandbox) *relayInfo {
	port, _ := strconv.Atoi(s.Labels[labelRelayPort])
	if port == 0 {
		return nil
	}
	if info := b.cachedRelay(); info != nil && p.answers(ctx, info.ep) == nil {
		return info
	}
	info, err := p.loadRelay(ctx, b, s, port)
	if err != nil {
		p.log.Debug("relay endpoint unknown", "sandbox_id", s.ID, "err", err)
		b.setRelay(nil)
		return nil
	}
	if err := p.answers(ctx, info.ep); err != nil {
		p.log.Debug("relay does not answer", "sandbox_id", s.ID, "err", err)
		b.setRelay(nil)
		return nil
	}
	b.setRelay(info)
	return info
}

// loadRelay finds a running relay from the sandbox alone: port from the labels, preview URLs
// from Daytona, token from the token file.
func (p *Provider) loadRelay(ctx context.Context, b *box, s *apiSandbox, port int) (*relayInfo, error) {
	tb, err := p.toolboxFor(ctx, b, s, s.ID)
	if err != nil {
		return nil, err
	}
	home, err := p.homeOf(ctx, b, tb, false)
	if err != nil {
		return nil, err
	}
	tok, err := tb.download(ctx, p.layout(home).token)
	if err != nil {
		return nil, err
	}
	token := strings.TrimSpace(string(tok))
	if token == "" {
		return nil, errors.New("the relay's token file is empty")
	}
	info, err := p.previews(ctx, s, port, labelPort(s, labelDevPort))
	if err != nil {
		return nil, err
	}
	info.ep.Token = token
	return info, nil
}

func labelPort(s *apiSandbox, key string) int {
	n, _ := strconv.Atoi(s.Labels[key])
	return n
}

// previews fetches the preview URLs of the relay's and the dev server's ports.
func (p *Provider) previews(ctx context.Context, s *apiSandbox, relayPort, devPort int) (*relayInfo, error) {
	pv, err := p.api.preview(ctx, s.ID, relayPort)
	if err != nil {
		return nil, err
	}
	info := &relayInfo{ep: sandbox.Endpoint{URL: strings.TrimRight(pv.URL, "/"), Header: previewHeader(s.Public, pv.Token)}}
	if devPort != 0 {
		dv, err := p.api.preview(ctx, s.ID, devPort)
		if err != nil {
			return nil, err
		}
		info.devURL, info.devHeader = dv.URL, previewHeader(s.Public, dv.Token)
	}
	return info, nil
}

var errTokenRefused = errors.New("the relay refused its token")

// answers checks that the relay answers /healthz through the preview proxy (with the relay's
// own JSON, not a page of the proxy's) and takes the token: its stream endpoint refuses a
// wrong token with 401 before anything else, and answers a right one with 400 to a request
// that is not a WebSocket upgrade.
func (p *Provider) answers(ctx context.Context, ep sandbox.Endpoint) error {
	get := func(path string, auth bool) (int, []byte, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, ep.URL+path, nil)
		if err != nil {
			return 0, nil, err
		}
		for k, v := range ep.Header {
			req.Header[k] = v
		}
		if auth {
			req.Header.Set("Authorization", "Bearer "+ep.Token)
		}
		resp, err := p.probe.Do(req)
		if err != nil {
			return 0, nil, err
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		return resp.StatusCode, body, err
	}
	code, body, err := get("/healthz", false)
	if err != nil {
		return err
	}
	var health struct {
		OK       bool `json:"ok"`
		Protocol int  `json:"protocol"`
	}
	if code != http.StatusOK || json.Unmarshal(body, &health) != nil || !health.OK {
		return fmt.Errorf("the relay's /healthz answered %d through the preview proxy, not the relay's health", code)
	}
	code, _, err = get(relay.StreamPath, true)
	switch {
	case err != nil:
		return err
	case code == http.StatusUnauthorized:
		return errTokenRefused
	case code >= 300 && code != http.StatusBadRequest && code != http.StatusUpgradeRequired:
		return fmt.Errorf("the relay's stream endpoint answered %d", code)
	}
	return nil
}

// startRelay (re)starts the relay in a started sandbox and waits until it answers. Called
// with b.ops held.
func (p *Provider) startRelay(ctx context.Context, b *box, s *apiSandbox) (*relayInfo, error) {
	tb, err := p.toolboxFor(ctx, b, s, s.ID)
	if err != nil {
		return nil, err
	}
	home, err := p.homeOf(ctx, b, tb, true)
	if err != nil {
		return nil, err
	}
	l := p.layout(home)

	res, err := tb.execute(ctx, "prepare the relay", prepareScript(l), "", time.Minute)
	if err != nil {
		return nil, err
	}
	if res.ExitCode != 0 {
		return nil, fmt.Errorf("%w: preparing the relay failed (status %d): %s", sandbox.ErrFailed, res.ExitCode, tail(res.Result, 5))
	}
	b.mu.Lock()
	fresh := b.fresh
	b.mu.Unlock()
	if fresh {
		if err := p.fillWorkspace(ctx, tb, l.ws); err != nil {
			return nil, err
		}
		b.mu.Lock()
		b.fresh = false
		b.mu.Unlock()
	}
	bin := p.installedRelay(res.Result)
	uploaded := bin == ""
	if uploaded {
		data, err := os.ReadFile(p.relayPath)
		if err != nil {
			return nil, fmt.Errorf("%w: read the relay binary: %v", sandbox.ErrUnavailable, err)
		}
		if err := tb.upload(ctx, l.relayNew, data); err != nil {
			return nil, err
		}
	}

	relayPort, err := p.pickPort(ctx, tb, labelPort(s, labelRelayPort), 0)
	if err != nil {
		return nil, err
	}
	devPort := 0
	if p.cfg.DevCommand != "" {
		if devPort = p.cfg.DevPort; devPort == 0 {
			if devPort, err = p.pickPort(ctx, tb, labelPort(s, labelDevPort), relayPort); err != nil {
				return nil, err
			}
		}
	}
	mode := s.Labels[labelPermissionMode]
	if mode == "" {
		mode = p.cfg.PermissionMode
	}
	token := randomHex(32)
	if err := tb.upload(ctx, l.token, []byte(token+"\n")); err != nil {
		return nil, err
	}
	if uploaded {
		bin = l.relay
	}
	if err := tb.upload(ctx, l.run, []byte(p.runScript(l, bin, relayPort, devPort, mode, s.Labels[labelModel]))); err != nil {
		return nil, err
	}
	install := "chmod 600 " + shellQuote(l.token) + " && chmod 700 " + shellQuote(l.run)
	if uploaded {
		// Uploaded beside the old binary and moved over it: writing onto a binary that is
		// still running fails ("text file busy").
		install += " && chmod 755 " + shellQuote(l.relayNew) + " && mv -f " + shellQuote(l.relayNew) + " " + shellQuote(l.relay)
	}
	if res, err := tb.execute(ctx, "install the relay", install, "", time.Minute); err != nil {
		return nil, err
	} else if res.ExitCode != 0 {
		return nil, fmt.Errorf("%w: installing the relay failed (status %d): %s", sandbox.ErrFailed, res.ExitCode, tail(res.Result, 5))
	}

	if err := p.recordPorts(ctx, s, relayPort, devPort, mode); err != nil {
		return nil, err
	}
	cmdID, err := tb.startSession(ctx, relaySession, "sh "+shellQuote(l.run))
	if err != nil {
		return nil, err
	}
	info, err := p.previews(ctx, s, relayPort, devPort)
	if err != nil {
		return nil, err
	}
	info.ep.Token = token
	start := time.Now()
	if err := p.awaitRelay(ctx, tb, cmdID, info.ep); err != nil {
		return nil, err
	}
	b.setRelay(info)
	p.log.Info("relay started", "sandbox_id", s.ID, "port", relayPort, "dev_port", devPort, "uploaded", uploaded,
		"answered_in", time.Since(start).Round(time.Millisecond))
	return info, nil
}

// installedRelay returns the path of a relay binary in the sandbox that is the same build as
// ours, from the prepare script's "relay <sha256> <path>" lines, or "".
func (p *Provider) installedRelay(out string) string {
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) == 3 && f[0] == "relay" && f[1] == p.relaySum {
			return f[2]
		}
	}
	return ""
}

// stopOld stops the relay an earlier start left, if it still runs: the pid file names it, and
// the process must still be a relay (pids are reused after a restart of the sandbox). SIGTERM
// lets it end a running turn; after 10 s it is killed.
func stopOld(l layout) string {
	return `pidf=` + shellQuote(l.pid) + `
if [ -f "$pidf" ]; then
  pid=$(cat "$pidf")
  if [ -n "$pid" ] && tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -q nightona-relay; then
    kill -TERM "$pid" 2>/dev/null
    i=0
    while kill -0 "$pid" 2>/dev/null && [ "$i" -lt 50 ]; do sleep 0.2; i=$((i+1)); done
    kill -KILL "$pid" 2>/dev/null
  fi
  rm -f "$pidf"
fi
`
}

// prepareScript makes the folders, stops an old relay and reports the relay binaries present.
func prepareScript(l layout) string {
	return `mkdir -p ` + shellQuote(l.dir) + ` ` + shellQuote(l.ws) + ` && chmod 700 ` + shellQuote(l.dir) + ` || exit 1
` + stopOld(l) + `for f in ` + shellQuote(l.relay) + ` ` + bakedRelay + `; do
  if [ -f "$f" ] && command -v sha256sum >/dev/null; then echo "relay $(sha256sum "$f" | cut -d' ' -f1) $f"; fi
done
exit 0
`
}

// runScript is the relay's start script. The token comes from its file into the environment,
// never onto a command line; the relay drops it from what Claude Code inherits. Everything
// else the relay and Claude Code need (ANTHROPIC_API_KEY...) is in the sandbox's environment.
func (p *Provider) runScript(l layout, bin string, port, devPort int, mode, model string) string {
	args := []string{shellQuote(bin), "-addr", "0.0.0.0:" + strconv.Itoa(port), "-dir", shellQuote(l.ws),
		"-agent", shellQuote(p.cfg.Claude), "-permission-mode", shellQuote(mode)}
	if model != "" {
		args = append(args, "-model", shellQuote(model))
	}
	if p.cfg.AllowBypass {
		args = append(args, "-allow-bypass")
	}
	if devPort != 0 {
		args = append(args, "-dev-command", shellQuote(p.cfg.DevCommand), "-dev-port", strconv.Itoa(devPort),
			"-dev-dir", shellQuote(l.devDir))
	}
	var sb strings.Builder
	sb.WriteString("#!/bin/sh\n# Written by Nightona at every start of the relay.\n")
	sb.WriteString("cd " + shellQuote(l.ws) + " || exit 1\n")
	sb.WriteString("echo $$ > " + shellQuote(l.pid) + "\n")
	sb.WriteString("NIGHTONA_RELAY_TOKEN=$(cat " + shellQuote(l.token) + ") || exit 1\nexport NIGHTONA_RELAY_TOKEN\n")
	if p.cfg.AllowBypass {
		// Claude Code refuses bypassPermissions as root unless told it runs in a sandbox.
		sb.WriteString("IS_SANDBOX=1\nexport IS_SANDBOX\n")
	}
	sb.WriteString("exec " + strings.Join(args, " ") + "\n")
	return sb.String()
}

// fillWorkspace copies the template into a new sandbox's workspace and commits it, so that
// Claude Code sees a project and its edits have a base.
func (p *Provider) fillWorkspace(ctx context.Context, tb *toolbox, ws string) error {
	var dirs []string
	files := map[string][]byte{}
	err := fs.WalkDir(p.cfg.Template, ".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || path == "." {
			return err
		}
		if d.IsDir() {
			dirs = append(dirs, shellQuote(ws+"/"+path))
			return nil
		}
		data, err := fs.ReadFile(p.cfg.Template, path)
		files[path] = data
		return err
	})
	if err != nil {
		return fmt.Errorf("%w: read the workspace template: %v", sandbox.ErrUnavailable, err)
	}
	if len(dirs) > 0 {
		if res, err := tb.execute(ctx, "make the template's folders", "mkdir -p "+strings.Join(dirs, " "), "", time.Minute); err != nil {
			return err
		} else if res.ExitCode != 0 {
			return fmt.Errorf("%w: making the template's folders failed: %s", sandbox.ErrFailed, tail(res.Result, 3))
		}
	}
	for path, data := range files {
		if err := tb.upload(ctx, ws+"/"+path, data); err != nil {
			return err
		}
	}
	// Without git the workspace is just a folder: not worth failing the sandbox for.
	commit := "command -v git >/dev/null || exit 0; cd " + shellQuote(ws) + " && git init -q && git add -A && " +
		"git -c user.name=Nightona -c user.email=nightona@localhost commit -q -m Template --allow-empty"
	if res, err := tb.execute(ctx, "commit the template", commit, "", time.Minute); err != nil {
		return err
	} else if res.ExitCode != 0 {
		p.log.Warn("could not make the workspace a git repository", "output", tail(res.Result, 3))
	}
	return nil
}

// pickPort returns prefer while it is free, else a free port in 3000-9999 other than avoid.
func (p *Provider) pickPort(ctx context.Context, tb *toolbox, prefer, avoid int) (int, error) {
	if prefer != 0 {
		if used, err := tb.portInUse(ctx, prefer); err == nil && !used {
			return prefer, nil
		}
	}
	for range 20 {
		port := 3000 + rand.N(7000)
		if port == avoid || port == prefer {
			continue
		}
		used, err := tb.portInUse(ctx, port)
		if err != nil {
			return 0, err
		}
		if !used {
			return port, nil
		}
	}
	return 0, fmt.Errorf("%w: no free port found in 3000-9999 in sandbox %s", sandbox.ErrFailed, tb.id)
}

// recordPorts keeps the ports and the permission mode as labels, where every replica finds
// them.
func (p *Provider) recordPorts(ctx context.Context, s *apiSandbox, relayPort, devPort int, mode string) error {
	next := map[string]string{}
	for k, v := range s.Labels {
		next[k] = v
	}
	next[labelRelayPort] = strconv.Itoa(relayPort)
	delete(next, labelDevPort)
	if devPort != 0 {
		next[labelDevPort] = strconv.Itoa(devPort)
	}
	next[labelPermissionMode] = mode
	next[LabelManaged] = "true"
	if sandbox.MatchLabels(s.Labels, next) && len(s.Labels) == len(next) {
		return nil
	}
	if err := p.api.setLabels(ctx, s.ID, next); err != nil {
		return err
	}
	s.Labels = next
	return nil
}

// awaitRelay waits until the relay answers, and fails early when its process has ended. The
// error carries the end of the relay's output.
func (p *Provider) awaitRelay(ctx context.Context, tb *toolbox, cmdID string, ep sandbox.Endpoint) error {
	pause := 100 * time.Millisecond
	checked := time.Now()
	var last error
	for {
		if last = p.answers(ctx, ep); last == nil {
			return nil
		}
		if time.Since(checked) > 2*time.Second {
			checked = time.Now()
			if done, code, err := tb.commandExited(ctx, relaySession, cmdID); err == nil && done {
				return p.relayFailed(ctx, tb, cmdID, fmt.Sprintf("the relay exited with status %d", code))
			}
		}
		t := time.NewTimer(pause)
		select {
		case <-ctx.Done():
			t.Stop()
			if errors.Is(ctx.Err(), context.Canceled) && !errors.Is(context.Cause(ctx), errStartTimeout) {
				return ctx.Err()
			}
			return p.relayFailed(ctx, tb, cmdID, "the relay did not answer in time ("+last.Error()+")")
		case <-t.C:
		}
		pause = min(pause*2, time.Second)
	}
}

func (p *Provider) relayFailed(ctx context.Context, tb *toolbox, cmdID, why string) error {
	lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if out, err := tb.commandLog(lctx, relaySession, cmdID); err == nil && strings.TrimSpace(out) != "" {
		why += "; its output ends: " + tail(out, 10)
	} else if err != nil {
		why += "; its output could not be read: " + err.Error()
	} else {
		why += "; it printed nothing"
	}
	return fmt.Errorf("%w: %s", sandbox.ErrStartTimeout, why)
}

// stopRelay asks the relay to stop before its sandbox is stopped. It is a courtesy: failing
// it only means the relay is killed with the sandbox.
func (p *Provider) stopRelay(ctx context.Context, b *box, s *apiSandbox) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	tb, err := p.toolboxFor(ctx, b, s, s.ID)
	if err == nil {
		var home string
		if home, err = p.homeOf(ctx, b, tb, false); err == nil {
			_, err = tb.execute(ctx, "stop the relay", stopOld(p.layout(home)), "", 20*time.Second)
		}
	}
	if err != nil {
		p.log.Warn("could not stop the relay before stopping its sandbox", "sandbox_id", s.ID, "err", err)
	}
	b.setRelay(nil)
}
