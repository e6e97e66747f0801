// Command nightona-relay runs inside a sandbox: it serves the relay protocol on a WebSocket and
// runs Claude Code in the workspace. See package relay for the protocol.
//
//	NIGHTONA_RELAY_TOKEN=... nightona-relay -addr 0.0.0.0:4040 -dir /workspace -- --model sonnet
//
// Arguments after -- are passed to Claude Code.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"github.com/nightona/nightona/relay"
)

func main() {
	if os.Getenv("GOGC") == "" {
		// One relay runs in every sandbox, beside the app: memory matters more to it than the
		// CPU of collecting a small heap more often.
		debug.SetGCPercent(50)
	}
	if os.Getenv("GOMAXPROCS") == "" {
		// The relay moves lines from a pipe to sockets. On one P the goroutine that reads a line
		// hands it to the one that writes it on the same thread; with more, an idle thread is
		// woken to take it, which costs more than the work. One P also leaves the sandbox's
		// cores to Claude Code and the app.
		runtime.GOMAXPROCS(1)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "nightona-relay:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("nightona-relay", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("addr", "0.0.0.0:4040", "listen address (port 0 picks a free port)")
	dir := fs.String("dir", "", "workspace folder Claude Code runs in (default: the current folder)")
	agent := fs.String("agent", "claude", "the Claude Code CLI to run")
	mode := fs.String("permission-mode", "", "Claude Code permission mode (default, acceptEdits, plan, bypassPermissions)")
	model := fs.String("model", "", "Claude Code model or alias (empty: Claude Code's default)")
	allowBypass := fs.Bool("allow-bypass", false, "let the permission mode be switched to bypassPermissions")
	permTimeout := fs.Duration("permission-timeout", 10*time.Minute, "deny a permission request nobody answers within this time")
	origins := fs.String("allowed-origins", "", "comma-separated Origins browsers may connect from")
	bufEvents := fs.Int("buffer-events", 10000, "events the replay buffer keeps")
	bufBytes := fs.Int("buffer-bytes", 64<<20, "bytes the replay buffer keeps")
	devCommand := fs.String("dev-command", "", "the app's dev server command (run with sh -c; empty: none)")
	devPort := fs.Int("dev-port", 3000, "the port the dev server serves on (given to it as PORT)")
	devDir := fs.String("dev-dir", "", "the dev server's folder (default: -dir)")
	prestart := fs.Bool("prestart", false, "start Claude Code at once, so that the first prompt does not wait for it to load")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		return fmt.Errorf("-log-level: %w", err)
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))

	token := getenv("NIGHTONA_RELAY_TOKEN")
	if token == "" {
		return errors.New("NIGHTONA_RELAY_TOKEN is not set: the relay never runs without a token")
	}
	var allowed []string
	for _, o := range strings.Split(*origins, ",") {
		if o = strings.TrimSpace(o); o != "" {
			allowed = append(allowed, o)
		}
	}
	env := agentEnv(os.Environ())
	if *devDir == "" {
		*devDir = *dir
	}
	var preview relay.PreviewConfig
	if *devCommand != "" {
		if *devPort < 1 || *devPort > 65535 {
			return fmt.Errorf("-dev-port %d is not a port", *devPort)
		}
		preview = relay.PreviewConfig{Command: *devCommand, Port: *devPort, Dir: *devDir, Env: env}
	}
	srv, err := relay.NewServer(relay.Config{
		Token:  token,
		Logger: log,
		Agent: relay.AgentConfig{
			Command:        *agent,
			Args:           fs.Args(),
			Dir:            *dir,
			Env:            env,
			PermissionMode: *mode,
			Model:          *model,
			AllowBypass:    *allowBypass,
		},
		Preview:           preview,
		AllowedOrigins:    allowed,
		PermissionTimeout: *permTimeout,
		BufferEvents:      *bufEvents,
		BufferBytes:       *bufBytes,
	})
	if err != nil {
		return err
	}

	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return fmt.Errorf("listen %s: %w", *addr, err)
	}
	// The first stdout line tells a supervisor which port was taken.
	fmt.Fprintf(stdout, "listening %s\n", ln.Addr())
	log.Info("relay listening", "addr", ln.Addr().String(), "relay_id", srv.ID())

	hs := &http.Server{Handler: srv, ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()

	runCtx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = srv.Run(runCtx); close(done) }()
	if *prestart {
		if err := srv.Prestart(); err != nil {
			log.Warn("could not start Claude Code ahead of the first prompt", "err", err)
		}
	}

	select {
	case <-ctx.Done():
	case err := <-errc:
		cancel()
		<-done
		return fmt.Errorf("serve: %w", err)
	}
	log.Info("relay stopping")
	// Interrupt and flush first, while clients are still connected to read the end of the turn.
	cancel()
	<-done
	sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer scancel()
	_ = hs.Shutdown(sctx)
	return nil
}

// agentEnv is the relay's environment without its own token: Claude Code and the tools it runs
// have no business with it.
func agentEnv(env []string) []string {
	out := make([]string, 0, len(env))
	for _, kv := range env {
		if strings.HasPrefix(kv, "NIGHTONA_RELAY_TOKEN=") {
			continue
		}
		out = append(out, kv)
	}
	return out
}
