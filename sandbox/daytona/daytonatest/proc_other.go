//go:build !unix

package daytonatest

import (
	"errors"
	"os"
	"os/exec"
)

// Without process groups only the leader can be killed; sessions need named pipes and are
// not supported.

var (
	sigTerm = os.Interrupt
	sigKill = os.Kill
)

func setGroup(*exec.Cmd) {}

func signalPgid(pgid int, sig os.Signal) {
	if p, err := os.FindProcess(pgid); err == nil {
		_ = p.Signal(sig)
	}
}

func signalPID(pid int, sig os.Signal) { signalPgid(pid, sig) }

func groupAlive(int) bool { return false }

func mkfifo(string) error { return errors.New("named pipes are not supported on this platform") }

func unblockFIFO(string) {}

func fileOwner(os.FileInfo) (uid, gid string) { return "0", "0" }
