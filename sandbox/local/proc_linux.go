package local

import (
	"os/exec"
	"syscall"

	"github.com/nightona/nightona/internal/procfs"
)

const termSignal = syscall.SIGTERM

// setProcAttrs starts the relay in a process group of its own, which the agent and its tools
// join. An attached relay is killed by the kernel when the bot dies; a detached one leads a
// session of its own and outlives it.
func setProcAttrs(cmd *exec.Cmd, detached bool) {
	if detached {
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
		return
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}

func signalPID(pid int, sig syscall.Signal) error { return syscall.Kill(pid, sig) }

// killGroup kills every process of the group led by pid.
func killGroup(pid int) {
	if pid > 0 {
		_ = syscall.Kill(-pid, syscall.SIGKILL)
	}
}

// processAlive reports whether pid runs and carries the sandbox's marker, so that a pid the
// system has since given to another program is not taken for the relay.
func processAlive(pid int, marker string) bool {
	if pid <= 0 || syscall.Kill(pid, 0) != nil {
		return false
	}
	p, ok := procfs.Stat(pid)
	return ok && p.Live() && procfs.HasEnv(pid, marker) // a zombie waiting to be reaped runs nothing
}

// killLeftovers kills every process that carries the sandbox's marker in its environment: the
// relay, Claude Code, the tools it ran and the dev server with whatever that started, in
// whatever process group they ended up. Processes inherit the marker from the relay, and a
// process outside the sandbox never has it, so nothing else is touched. It returns how many
// it killed.
func killLeftovers(marker string) int {
	killed := 0
	for _, p := range procfs.Marked(marker) {
		if syscall.Kill(p.PID, syscall.SIGKILL) == nil {
			killed++
		}
	}
	return killed
}

// setGroup runs a command in a process group of its own, so that a timeout stops it whole.
func setGroup(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
}
