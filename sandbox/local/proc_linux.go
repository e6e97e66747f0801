package local

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
)

const termSignal = syscall.SIGTERM

// setProcAttrs gives the relay a process group of its own, which the agent and its tools join,
// and has the kernel kill the relay when the bot dies.
func setProcAttrs(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}

// killGroup kills every process of the group led by pid.
func killGroup(pid int) {
	if pid > 0 {
		_ = syscall.Kill(-pid, syscall.SIGKILL)
	}
}

// killLeftovers kills every process that carries the sandbox's marker in its environment: the
// relay, Claude Code, the tools it ran and the dev server with whatever that started, in
// whatever process group they ended up. Processes inherit the marker from the relay, and a
// process outside the sandbox never has it, so nothing else is touched. It returns how many
// it killed.
func killLeftovers(marker string) int {
	procs, err := os.ReadDir("/proc")
	if err != nil {
		return 0
	}
	needle := []byte("\x00" + marker + "\x00")
	self := os.Getpid()
	killed := 0
	for _, e := range procs {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		env, err := os.ReadFile(filepath.Join("/proc", e.Name(), "environ"))
		if err != nil || !bytes.Contains(append(append([]byte{0}, env...), 0), needle) {
			continue
		}
		if syscall.Kill(pid, syscall.SIGKILL) == nil {
			killed++
		}
	}
	return killed
}
