//go:build !linux

package local

import (
	"os/exec"
	"syscall"
)

const termSignal = syscall.SIGTERM

func setProcAttrs(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
}

func killGroup(pid int) {
	if pid > 0 {
		_ = syscall.Kill(-pid, syscall.SIGKILL)
	}
}

// killLeftovers is Linux-only: elsewhere what a killed bot's relay left is found by nobody.
func killLeftovers(string) int { return 0 }
