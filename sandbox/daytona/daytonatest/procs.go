package daytonatest

import (
	"os"
	"os/exec"
	"time"

	"github.com/nightona/nightona/internal/procfs"
)

// procGroup is a process a sandbox runs, in a process group of its own, with everything it
// spawned: commands that background a server leave it in the group after the shell exits,
// so the group, not the leader, is what lives and gets killed.
type procGroup struct {
	cmd  *exec.Cmd
	pgid int
	done chan struct{} // closed once the leader was waited for
	// exit is the leader's exit code, valid after done; -1 when killed by a signal.
	exit int
	err  error
}

// startGroup starts cmd as the leader of a new process group and reaps it in the background.
func startGroup(cmd *exec.Cmd) (*procGroup, error) {
	setGroup(cmd)
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	g := &procGroup{cmd: cmd, pgid: cmd.Process.Pid, done: make(chan struct{})}
	go func() {
		g.err = cmd.Wait()
		g.exit = -1
		if cmd.ProcessState != nil {
			g.exit = cmd.ProcessState.ExitCode()
		}
		close(g.done)
	}()
	return g, nil
}

// alive reports whether any process of the group is left.
func (g *procGroup) alive() bool {
	select {
	case <-g.done:
		return groupAlive(g.pgid)
	default:
		return true
	}
}

// killGroups ends process groups the way a container stop does: SIGTERM to each group, then
// SIGKILL to those still alive after grace (at once when grace is 0). It returns once they
// are gone, or after a bound for processes that escaped into other groups.
func killGroups(groups []*procGroup, grace time.Duration) {
	if len(groups) == 0 {
		return
	}
	sig := sigTerm
	if grace <= 0 {
		sig = sigKill
	}
	for _, g := range groups {
		signalGroup(g, sig)
	}
	if grace > 0 && !waitGone(groups, grace) {
		for _, g := range groups {
			signalGroup(g, sigKill)
		}
	}
	waitGone(groups, 2*time.Second)
}

// remains is what a sandbox leaving "started" leaves to kill: its process groups, and its id,
// which every process it ran inherits in DAYTONA_SANDBOX_ID. The id finds the processes that
// left their group (a dev server that a relay runs in a group of its own, say): a container
// stop ends those too.
type remains struct {
	groups []*procGroup
	marker string // "DAYTONA_SANDBOX_ID=<id>"; "" for nothing to find
}

// killRemains ends what sandboxes leave the way a container stop does: SIGTERM to each group
// and each process that carries a sandbox's marker, then SIGKILL to those still alive after
// grace (at once when grace is 0). It returns once they are gone, or after a bound.
func killRemains(rs []remains, grace time.Duration) {
	var groups []*procGroup
	markers := map[string]bool{}
	for _, r := range rs {
		groups = append(groups, r.groups...)
		if r.marker != "" {
			markers[r.marker] = true
		}
	}
	if len(groups) == 0 && len(markers) == 0 {
		return
	}
	signal := func(sig os.Signal) {
		for _, g := range groups {
			signalGroup(g, sig)
		}
		for _, p := range procfs.Marked(keys(markers)...) {
			signalPID(p.PID, sig)
		}
	}
	gone := func(d time.Duration) bool {
		deadline := time.Now().Add(d)
		return waitGone(groups, d) && waitUnmarked(markers, time.Until(deadline))
	}
	if grace <= 0 {
		signal(sigKill)
	} else {
		signal(sigTerm)
		if !gone(grace) {
			signal(sigKill)
		}
	}
	gone(2 * time.Second)
}

// waitUnmarked polls until no process carries one of the markers, and reports whether that
// happened within d.
func waitUnmarked(markers map[string]bool, d time.Duration) bool {
	if len(markers) == 0 {
		return true
	}
	deadline := time.Now().Add(d)
	for len(procfs.Marked(keys(markers)...)) > 0 {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
	return true
}

// liveMembers counts the group's processes that are not zombies; ok is false without /proc,
// where processes that left their group are not found either.
func liveMembers(pgid int) (int, bool) {
	if !procfs.Supported() {
		return 0, false
	}
	n := 0
	for _, p := range procfs.All() {
		if p.Pgrp == pgid && p.Live() {
			n++
		}
	}
	return n, true
}

func keys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

// signalGroup signals every process of the group, unless the group is already gone (its
// id could have been reused by an unrelated process by now).
func signalGroup(g *procGroup, sig os.Signal) {
	if !g.alive() {
		return
	}
	signalPgid(g.pgid, sig)
}

// waitGone polls until no process of the groups is left, and reports whether that happened
// within d.
func waitGone(groups []*procGroup, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for {
		gone := true
		for _, g := range groups {
			if g.alive() {
				gone = false
				break
			}
		}
		if gone {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
}
