package main

import (
	"debug/elf"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/nightona/nightona/sandbox"
	"github.com/nightona/nightona/sandbox/daytona"
	"github.com/nightona/nightona/sandbox/local"
)

// sandboxes is the provider the configuration names, with a line for the banner and what to
// do when the bot stops.
type sandboxes struct {
	sandbox.Provider
	desc  string
	close func()
	// stopOnShutdown: sandboxes die with the bot (attached local ones), so their turns are
	// ended cleanly first.
	stopOnShutdown bool
}

func newSandboxes(cfg *config, relayBin, claude string, log *slog.Logger) (*sandboxes, error) {
	log = log.With("component", "sandbox", "provider", cfg.Sandbox)
	switch cfg.Sandbox {
	case "daytona":
		if err := checkLinuxStatic(relayBin); err != nil {
			return nil, err
		}
		// New workspaces start from the template, as local ones do, unless the snapshot
		// brings its own app (DAYTONA_WORKSPACE names where).
		var tmpl fs.FS
		switch {
		case cfg.Workspace != "":
		case cfg.Template != "":
			tmpl = os.DirFS(cfg.Template)
		default:
			tmpl = local.Starter()
		}
		p, err := daytona.New(daytona.Config{
			APIURL: cfg.DaytonaURL, APIKey: cfg.DaytonaKey, Target: cfg.DaytonaTarget,
			Snapshot: cfg.Snapshot, RelayBinary: relayBin, DevCommand: cfg.DevCommand,
			Workspace: cfg.Workspace, Template: tmpl,
			PermissionMode: cfg.PermissionMode, AllowBypass: cfg.PermissionMode == "bypassPermissions",
			Logger: log,
		})
		if err != nil {
			return nil, err
		}
		snap := cfg.Snapshot
		if snap == "" {
			snap = "Daytona's default snapshot, which lacks Claude Code: set DAYTONA_SNAPSHOT"
		}
		return &sandboxes{Provider: p, close: func() {},
			desc: fmt.Sprintf("Daytona at %s, from %s (they outlive the bot)", cfg.DaytonaURL, snap)}, nil
	default:
		dir := filepath.Join(cfg.DataDir, "sandboxes")
		p, err := local.New(local.Config{
			Dir: dir, RelayBinary: relayBin, Claude: claude, Template: cfg.Template,
			PermissionMode: cfg.PermissionMode, DevCommand: cfg.DevCommand, Detached: cfg.Detach,
			Logger: log,
		})
		if err != nil {
			return nil, err
		}
		mode := "stopped with the bot"
		if cfg.Detach {
			mode = "outlive the bot, for a restarted bot or another replica to carry on"
		}
		return &sandboxes{Provider: p, close: func() { _ = p.Close() }, stopOnShutdown: !cfg.Detach,
			desc: fmt.Sprintf("local, in %s (%s)", dir, mode)}, nil
	}
}

// checkLinuxStatic makes sure the relay can run in a cloud sandbox: a statically linked
// linux/amd64 executable, which `make build` makes.
func checkLinuxStatic(path string) error {
	f, err := elf.Open(path)
	if err != nil {
		return fmt.Errorf("the relay %s is not a Linux executable (%v): Daytona sandboxes need a static linux/amd64 build; `make build` makes one, or set NIGHTONA_RELAY_BIN", path, err)
	}
	defer f.Close()
	if f.Machine != elf.EM_X86_64 {
		return fmt.Errorf("the relay %s is built for %s: Daytona sandboxes need linux/amd64 (CGO_ENABLED=0 GOOS=linux GOARCH=amd64 go build ./cmd/relay)", path, f.Machine)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return fmt.Errorf("the relay %s is dynamically linked: build it with CGO_ENABLED=0 so that it runs in any sandbox image", path)
		}
	}
	return nil
}
