//go:build !linux

package relay

import (
	"os"
	"os/exec"
	"syscall"
)

var (
	termSignal os.Signal = syscall.SIGTERM
	killSignal os.Signal = os.Kill
)

func setProcAttrs(*exec.Cmd) {}

func signalProc(cmd *exec.Cmd, sig os.Signal) {
	if cmd.Process != nil {
		_ = cmd.Process.Signal(sig)
	}
}
