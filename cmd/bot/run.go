package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/go-chi/chi/v5/middleware"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/sync/errgroup"

	"github.com/nightona/nightona/redisstore"
	"github.com/nightona/nightona/sandbox"
	"github.com/nightona/nightona/sandbox/pool"
	"github.com/nightona/nightona/scriptedmodel"
	"github.com/nightona/nightona/session"
	"github.com/nightona/nightona/web"
)

// consoleUser is who prompts and acts from the web console and the local dashboard.
const consoleUser = "web:local"

// version is set at build time (-ldflags "-X main.version=...").
var version = "dev"

// run wires the bot from its configuration and runs it until ctx ends, then drains: running
// turns get NIGHTONA_DRAIN_TIMEOUT to finish while the console keeps streaming them.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	cfg, err := loadConfig(getenv)
	if len(args) > 0 {
		switch args[0] {
		case "-version", "--version", "version":
			fmt.Fprintln(stdout, "nightona", version)
			return nil
		case "console-login":
			return printConsoleLogin(cfg, err, stdout)
		}
		return fmt.Errorf("unexpected arguments %q: the bot is configured by environment variables (see the README)", args)
	}
	if err != nil {
		return err
	}
	log := newLogger(cfg, stderr)

	// Redis: the one given, or one inside this process.
	redisURL, redisDesc := cfg.RedisURL, "REDIS_URL"
	if redisURL == "" {
		emb, err := redisstore.StartEmbedded()
		if err != nil {
			return err
		}
		defer emb.Close()
		redisURL, redisDesc = emb.URL(), "embedded, in-process (state lives as long as the process)"
		log.Info("no REDIS_URL: using an embedded Redis; sessions live as long as this process")
	}
	rdb, err := redisstore.Open(redisURL)
	if err != nil {
		return fmt.Errorf("REDIS_URL: %w", err)
	}
	defer rdb.Close()
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	if err := rdb.Ping(pctx).Err(); err != nil {
		log.Error("Redis does not answer; prompts will fail until it does", "err", err)
	}
	cancel()
	store := redisstore.New(rdb, redisstore.Config{Prefix: cfg.RedisPrefix})
	defer store.Shutdown()

	// Claude Code and the relay.
	// Local sandboxes run the CLI of this machine; cloud ones their snapshot's own.
	claude, claudeProblem := "claude", ""
	if cfg.Sandbox == "local" {
		var claudeVersion string
		claude, claudeVersion, claudeProblem = findClaude(ctx, cfg, getenv)
		if claudeProblem != "" {
			log.Error("Claude Code is not usable; prompts will be refused until it is", "problem", claudeProblem)
		} else {
			log.Info("Claude Code found", "path", claude, "version", claudeVersion)
		}
	}
	relayBin, err := findRelay(cfg)
	if err != nil {
		return err
	}

	// The model: Anthropic's API with a key, else the offline scripted model.
	sandboxEnv := map[string]string{
		"DISABLE_TELEMETRY":                        "1",
		"DISABLE_AUTOUPDATER":                      "1",
		"DISABLE_ERROR_REPORTING":                  "1",
		"CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
	}
	if cfg.PermissionMode == "bypassPermissions" {
		sandboxEnv["IS_SANDBOX"] = "1" // the CLI refuses bypass as root without it
	}
	mode, modelDesc := "anthropic", "Anthropic API (ANTHROPIC_API_KEY)"
	var model *scriptedmodel.Model
	var modelLn net.Listener
	if cfg.AnthropicKey != "" {
		sandboxEnv["ANTHROPIC_API_KEY"] = cfg.AnthropicKey
		if cfg.AnthropicURL != "" {
			sandboxEnv["ANTHROPIC_BASE_URL"] = cfg.AnthropicURL
		}
	} else {
		modelLn, err = net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return fmt.Errorf("start the scripted model: %w", err)
		}
		model = scriptedmodel.New(scriptedmodel.Config{Logger: log.With("component", "scriptedmodel")})
		sandboxEnv["ANTHROPIC_BASE_URL"] = "http://" + modelLn.Addr().String()
		sandboxEnv["ANTHROPIC_API_KEY"] = "offline-scripted-model"
		mode, modelDesc = "offline", "offline scripted model (no ANTHROPIC_API_KEY set)"
	}

	provider, err := newSandboxes(cfg, relayBin, claude, log)
	if err != nil {
		return err
	}
	defer provider.close()
	// The pool hands out ready sandboxes made like the sessions' own (same env and mode).
	warm := pool.New(provider.Provider, pool.Config{
		Size: cfg.PoolSize, MaxAge: cfg.PoolMaxAge, Claimer: store,
		Spec:   sandbox.Spec{Env: sandboxEnv, PermissionMode: cfg.PermissionMode},
		Logger: log,
	})

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	mgr, err := session.NewManager(store, warm, session.Config{
		Logger:                  log.With("component", "session"),
		MaxPromptBytes:          cfg.MaxPromptBytes,
		PermissionMode:          cfg.PermissionMode,
		SandboxEnv:              sandboxEnv,
		DrainTimeout:            cfg.DrainTimeout,
		ReplicaID:               cfg.ReplicaID,
		LeaseTTL:                cfg.LeaseTTL,
		IdleTimeout:             cfg.IdleTimeout,
		StartTimeout:            cfg.StartTimeout,
		ClosedRetention:         cfg.Retention,
		StopSandboxesOnShutdown: provider.stopOnShutdown,
		Unavailable:             claudeProblem,
		Metrics:                 session.NewMetrics(reg),
		// The console's user is the operator: only this machine, or who has the login link
		// the operator hands out, reaches the console.
		Admins: append(slices.Clone(cfg.Admins), consoleUser),
	})
	if err != nil {
		return err
	}

	var scenarios []web.Scenario
	if model != nil {
		for _, s := range scriptedmodel.Scenarios() {
			scenarios = append(scenarios, web.Scenario{Keyword: s.Keyword, Summary: s.Summary})
		}
	}
	console, err := web.NewConsole(mgr, web.ConsoleConfig{
		User:   consoleUser,
		Logger: log.With("component", "console"),
		Secret: cfg.Secret,
		Info: web.Info{Mode: mode, Provider: provider.Name(), MaxPromptBytes: cfg.MaxPromptBytes,
			Scenarios: scenarios, Version: version},
	})
	if err != nil {
		return err
	}

	var draining atomic.Bool
	r := chi.NewRouter()
	r.Use(middleware.Recoverer)
	r.Get("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintln(w, `{"ok":true}`)
	})
	r.Get("/readyz", readyHandler(&draining, mgr))
	r.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	web.MountAssets(r)
	console.Mount(r)

	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return fmt.Errorf("listen on NIGHTONA_ADDR %s: %w", cfg.Addr, err)
	}
	publicURL := cfg.PublicURL
	if publicURL == "" {
		publicURL = strings.TrimRight(localURL(ln.Addr()), "/")
	}
	links := web.NewLinks(cfg.Secret, publicURL, cfg.LinkTTL)
	platforms, err := chats(cfg, chatDeps{
		Log: log, Manager: mgr, Store: store, Registry: reg, PublicURL: publicURL, Getenv: getenv,
		Links: links,
	})
	if err != nil {
		ln.Close()
		return err
	}
	for _, p := range platforms {
		mgr.AddFollower(p)
		p.Mount(r)
	}
	companion := web.NewCompanion(mgr, links, web.CompanionConfig{Logger: log.With("component", "companion")})
	companion.Mount(r)
	dashboard, err := web.NewDashboard(mgr, links, web.DashboardConfig{
		Logger: log.With("component", "dashboard"), Once: store, Secret: cfg.Secret, LocalUser: consoleUser,
		Health: health(store, redisDesc, provider.Name(), claudeProblem, modelDesc, platforms),
	})
	if err != nil {
		ln.Close()
		return err
	}
	dashboard.Mount(r)
	srv := &http.Server{Handler: r, ReadHeaderTimeout: 10 * time.Second, ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}
	consoleURL := localURL(ln.Addr())
	banner(stdout, consoleURL, modelDesc, redisDesc, provider.desc)
	if cfg.SecretRandom {
		log.Info("no NIGHTONA_SECRET: using a random one, so links and logins last as long as this process")
	}

	g, gctx := errgroup.WithContext(ctx)
	mgrDone := make(chan struct{})
	g.Go(func() error {
		defer close(mgrDone)
		return mgr.Run(gctx)
	})
	g.Go(func() error { return warm.Run(gctx) })
	// Chat platforms hold their connections until the sessions have drained, so that the last
	// state of every thread lands.
	chatCtx, stopChats := context.WithCancel(context.Background())
	defer stopChats()
	for _, p := range platforms {
		g.Go(func() error {
			err := p.Run(chatCtx)
			if err != nil && chatCtx.Err() == nil {
				return fmt.Errorf("%s: %w", p.Name(), err)
			}
			return nil
		})
	}
	g.Go(func() error {
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("http server: %w", err)
		}
		return nil
	})
	modelCtx, stopModel := context.WithCancel(context.Background())
	defer stopModel()
	if model != nil {
		g.Go(func() error {
			if err := model.Serve(modelCtx, modelLn); err != nil && modelCtx.Err() == nil {
				return fmt.Errorf("scripted model: %w", err)
			}
			return nil
		})
	}
	g.Go(func() error {
		<-gctx.Done()
		draining.Store(true)
		log.Info("shutting down: draining running turns", "timeout", cfg.DrainTimeout)
		<-mgrDone // the HTTP server keeps streaming transcripts while turns finish
		stopChats()
		console.Close()
		companion.Close()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		err := srv.Shutdown(sctx)
		stopModel() // last: draining turns still talk to it
		return err
	})
	err = g.Wait()
	if err == nil || errors.Is(err, context.Canceled) {
		log.Info("stopped")
		return nil
	}
	return err
}

func newLogger(cfg *config, w io.Writer) *slog.Logger {
	opts := &slog.HandlerOptions{Level: cfg.LogLevel}
	if cfg.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

func readyHandler(draining *atomic.Bool, mgr *session.Manager) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		if draining.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintln(w, `{"ready":false,"reason":"shutting down"}`)
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		if err := mgr.Ready(ctx); err != nil {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintf(w, "{\"ready\":false,\"reason\":%q}\n", err.Error())
			return
		}
		fmt.Fprintln(w, `{"ready":true}`)
	}
}

// findClaude returns the Claude Code CLI to use and its version, or a problem users can act on:
// $NIGHTONA_CLAUDE, `claude` on PATH, or the copy `make tools` installs in the data folder.
func findClaude(ctx context.Context, cfg *config, getenv func(string) string) (path, version, problem string) {
	candidates := []string{cfg.Claude}
	if cfg.Claude == "" {
		if p, err := lookPath("claude", getenv("PATH")); err == nil {
			candidates = append(candidates, p)
		}
		candidates = append(candidates, filepath.Join(cfg.DataDir, "tools", "bin", "claude"))
	}
	for _, c := range candidates {
		if c == "" {
			continue
		}
		if st, err := os.Stat(c); err != nil || st.IsDir() {
			if cfg.Claude != "" {
				return c, "", fmt.Sprintf("NIGHTONA_CLAUDE=%s does not exist", c)
			}
			continue
		}
		abs, _ := filepath.Abs(c)
		vctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		out, err := exec.CommandContext(vctx, abs, "--version").Output()
		cancel()
		if err != nil {
			return abs, "", fmt.Sprintf("the Claude Code CLI at %s does not run (%v); reinstall it with `make tools`", abs, err)
		}
		return abs, strings.TrimSpace(string(out)), ""
	}
	return "claude", "", "the Claude Code CLI is not installed: run `make tools` (or `make run`, which installs it), or set NIGHTONA_CLAUDE"
}

func lookPath(name, path string) (string, error) {
	for _, dir := range filepath.SplitList(path) {
		p := filepath.Join(dir, name)
		if st, err := os.Stat(p); err == nil && !st.IsDir() && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", exec.ErrNotFound
}

// findRelay returns the relay binary: $NIGHTONA_RELAY_BIN, or nightona-relay beside this
// program, or on PATH.
func findRelay(cfg *config) (string, error) {
	if cfg.RelayBinary != "" {
		return cfg.RelayBinary, nil
	}
	if exe, err := os.Executable(); err == nil {
		p := filepath.Join(filepath.Dir(exe), "nightona-relay")
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	if p, err := exec.LookPath("nightona-relay"); err == nil {
		return p, nil
	}
	return "", errors.New("the relay binary nightona-relay was not found beside the bot or on PATH: build it with `make build`, or set NIGHTONA_RELAY_BIN")
}

// localURL is the URL to print for a listener: localhost for loopback and unspecified hosts.
func localURL(addr net.Addr) string {
	host, port, _ := net.SplitHostPort(addr.String())
	ip := net.ParseIP(host)
	if ip == nil || ip.IsLoopback() || ip.IsUnspecified() {
		host = "localhost"
	}
	return "http://" + net.JoinHostPort(host, port) + "/"
}

// printConsoleLogin prints the link that lets a browser on another machine into the console.
// It needs the secret the running bot uses, so NIGHTONA_SECRET must be set.
func printConsoleLogin(cfg *config, cfgErr error, stdout io.Writer) error {
	if cfgErr != nil {
		return cfgErr
	}
	if cfg.SecretRandom {
		return errors.New("console-login needs NIGHTONA_SECRET: the bot signs the login with it, so set the same value for the bot and for this command")
	}
	console, err := web.NewConsole(nil, web.ConsoleConfig{Secret: cfg.Secret})
	if err != nil {
		return err
	}
	base := cfg.PublicURL
	if base == "" {
		base = "http://localhost:8080"
	}
	fmt.Fprintln(stdout, console.LoginURL(base))
	return nil
}

func banner(w io.Writer, consoleURL string, model, redis, sandboxes string) {
	fmt.Fprintf(w, "Nightona %s is running.\n", version)
	fmt.Fprintf(w, "  Web console: %s (open to this machine; `nightona console-login` prints a link for others)\n", consoleURL)
	fmt.Fprintf(w, "  Model:       %s\n", model)
	fmt.Fprintf(w, "  Sandboxes:   %s\n", sandboxes)
	fmt.Fprintf(w, "  Redis:       %s\n", redis)
}
