package daytonatest

import (
	"os"
	"os/exec"
	"time"
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
