//go:build unix

package daytonatest

import (
	"errors"
	"os"
	"os/exec"
	"strconv"
	"syscall"
)

var (
	sigTerm os.Signal = syscall.SIGTERM
	sigKill os.Signal = syscall.SIGKILL
)

// setGroup makes the command the leader of a new process group, so that it and everything it
// spawns can be signalled at once.
func setGroup(cmd *exec.Cmd) {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setpgid = true
}

// signalPgid signals the whole process group.
func signalPgid(pgid int, sig os.Signal) {
	if s, ok := sig.(syscall.Signal); ok {
		_ = syscall.Kill(-pgid, s)
	}
}

// signalPID signals one process.
func signalPID(pid int, sig os.Signal) {
	if s, ok := sig.(syscall.Signal); ok {
		_ = syscall.Kill(pid, s)
	}
}

// groupAlive reports whether the process group has a member left that is not a zombie:
// orphans whose reaper is slow must not make a killed group look alive.
func groupAlive(pgid int) bool {
	err := syscall.Kill(-pgid, 0)
	if err != nil && !errors.Is(err, syscall.EPERM) {
		return false
	}
	if n, ok := liveMembers(pgid); ok {
		return n > 0
	}
	return true
}

// mkfifo makes a named pipe, which session commands write their output to.
func mkfifo(path string) error {
	return syscall.Mkfifo(path, 0o600)
}

// unblockFIFO releases a reader blocked opening the pipe for reading: opening it for
// writing and closing it again gives that reader an immediate end of file.
func unblockFIFO(path string) {
	f, err := os.OpenFile(path, os.O_WRONLY|syscall.O_NONBLOCK, 0)
	if err == nil {
		_ = f.Close()
	}
}

// fileOwner is the numeric owner and group of a file, as the daemon reports them.
func fileOwner(fi os.FileInfo) (uid, gid string) {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return strconv.FormatUint(uint64(st.Uid), 10), strconv.FormatUint(uint64(st.Gid), 10)
	}
	return "0", "0"
}
