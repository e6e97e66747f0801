package relay

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"time"

	"github.com/nightona/nightona/internal/procfs"
)

// PreviewConfig says how to run the app's dev server, the one the sandbox's preview URL shows.
type PreviewConfig struct {
	// Command runs under sh -c, in Dir. Empty: no dev server.
	Command string
	// Port is where it serves; it is given to the command as PORT.
	Port int
	// Dir is its working folder. Default: the relay's.
	Dir string
	// Env is its environment; nil means the relay's own.
	Env []string
	// MaxBackoff bounds the wait before restarting it after a crash. Default 30 s; the wait
	// starts at 1 s and doubles.
	MaxBackoff time.Duration
	// ProbeInterval is how often the port is tried until it answers. Default 250 ms.
	ProbeInterval time.Duration
}

// previewSupervisor keeps the dev server running: it starts it, reports it ready once its port
// answers HTTP, and restarts it with backoff when it dies, reporting each step as a notice.
type previewSupervisor struct {
	cfg     PreviewConfig
	log     *slog.Logger
	publish func(RelayNotice)

	mu       sync.Mutex
	st       string
	restarts int
}

func newPreviewSupervisor(cfg PreviewConfig, log *slog.Logger, publish func(RelayNotice)) *previewSupervisor {
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = 30 * time.Second
	}
	if cfg.ProbeInterval <= 0 {
		cfg.ProbeInterval = 250 * time.Millisecond
	}
	return &previewSupervisor{cfg: cfg, log: log.With("component", "preview"), publish: publish}
}

func (p *previewSupervisor) state() PreviewState {
	p.mu.Lock()
	defer p.mu.Unlock()
	return PreviewState{Enabled: true, State: p.st, Port: p.cfg.Port}
}

func (p *previewSupervisor) set(n RelayNotice) {
	p.mu.Lock()
	p.st = n.State
	n.Restarts = p.restarts
	p.mu.Unlock()
	n.Event, n.Port = EventPreview, p.cfg.Port
	p.publish(n)
}

// devMarker is put in the dev server's environment, and so in that of everything it starts:
// the next relay finds by it what a relay that was killed left running.
func (p *previewSupervisor) devMarker() string {
	return "NIGHTONA_DEV_SERVER=" + strconv.Itoa(p.cfg.Port)
}

// endStrays kills the dev server a previous relay left, if one did: a relay killed outright
// (out of memory, say) cannot stop its dev server, whose processes the kernel hands to init
// still holding the port. Without this the new one could not listen, and the preview would
// show the old code.
func (p *previewSupervisor) endStrays() {
	strays := procfs.Marked(p.devMarker())
	if len(strays) == 0 {
		return
	}
	for _, s := range strays {
		killPID(s.PID)
	}
	p.log.Warn("ended the dev server a previous relay left running", "processes", len(strays))
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if len(procfs.Marked(p.devMarker())) == 0 {
			return
		}
	}
}

// run supervises the dev server until ctx ends, then stops it.
func (p *previewSupervisor) run(ctx context.Context) {
	p.endStrays()
	backoff := time.Second
	for {
		started := time.Now()
		code, logTail := p.once(ctx)
		if ctx.Err() != nil {
			p.set(RelayNotice{State: PreviewStopped})
			return
		}
		if time.Since(started) > time.Minute {
			backoff = time.Second // it ran a good while: this is a new failure, not a loop
		}
		p.mu.Lock()
		p.restarts++
		p.mu.Unlock()
		c := code
		p.log.Warn("dev server exited; restarting", "code", code, "in", backoff)
		p.set(RelayNotice{State: PreviewCrashed, Code: &c, Log: logTail})
		select {
		case <-ctx.Done():
			p.set(RelayNotice{State: PreviewStopped})
			return
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, p.cfg.MaxBackoff)
	}
}

// once runs the dev server until it exits or ctx ends, and returns its exit status and last
// output.
func (p *previewSupervisor) once(ctx context.Context) (int, string) {
	cmd := exec.Command("sh", "-c", p.cfg.Command)
	cmd.Dir = p.cfg.Dir
	env := p.cfg.Env
	if env == nil {
		env = os.Environ()
	}
	cmd.Env = append(env[:len(env):len(env)], "PORT="+strconv.Itoa(p.cfg.Port), p.devMarker())
	out := newTailBuffer(8 << 10)
	cmd.Stdout, cmd.Stderr = out, out
	setGroupAttrs(cmd)
	p.set(RelayNotice{State: PreviewStarting})
	if err := cmd.Start(); err != nil {
		return -1, err.Error()
	}
	exited := make(chan struct{})
	var waitErr error
	go func() { waitErr = cmd.Wait(); close(exited) }()

	probeCtx, stopProbe := context.WithCancel(ctx)
	defer stopProbe()
	go p.probe(probeCtx, exited)

	select {
	case <-exited:
	case <-ctx.Done():
		killGroup(cmd, termSignal)
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			killGroup(cmd, killSignal)
			<-exited
		}
	}
	killGroup(cmd, killSignal) // whatever it left running in its group
	code := 0
	var ee *exec.ExitError
	if errors.As(waitErr, &ee) {
		code = ee.ExitCode()
	} else if waitErr != nil {
		code = -1
	}
	return code, out.String()
}

// probe tries the port until it answers HTTP (any status), then reports the server ready.
func (p *previewSupervisor) probe(ctx context.Context, exited <-chan struct{}) {
	client := &http.Client{Timeout: 2 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error {
		return http.ErrUseLastResponse
	}}
	url := "http://127.0.0.1:" + strconv.Itoa(p.cfg.Port) + "/"
	t := time.NewTicker(p.cfg.ProbeInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-exited:
			return
		case <-t.C:
		}
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		resp, err := client.Do(req)
		if err != nil {
			continue
		}
		resp.Body.Close()
		p.log.Info("dev server ready", "port", p.cfg.Port, "status", resp.StatusCode)
		p.set(RelayNotice{State: PreviewReady})
		return
	}
}
