//go:build !linux

package local

import (
	"os/exec"
	"syscall"
)

const termSignal = syscall.SIGTERM

func setProcAttrs(cmd *exec.Cmd, detached bool) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: !detached, Setsid: detached}
}

func signalPID(pid int, sig syscall.Signal) error { return syscall.Kill(pid, sig) }

func killGroup(pid int) {
	if pid > 0 {
		_ = syscall.Kill(-pid, syscall.SIGKILL)
	}
}

// processAlive cannot check the marker without /proc: a live pid is taken for the relay.
func processAlive(pid int, _ string) bool { return pid > 0 && syscall.Kill(pid, 0) == nil }

// killLeftovers is Linux-only: elsewhere what a killed bot's relay left is found by nobody.
func killLeftovers(string) int { return 0 }

func setGroup(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
}
