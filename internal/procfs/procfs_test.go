package procfs_test

import (
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"github.com/nightona/nightona/internal/procfs"
)

func TestMarkedFindsProcessesInOtherGroups(t *testing.T) {
	if !procfs.Supported() {
		t.Skip("no /proc here")
	}
	marker := "PROCFS_TEST_MARKER=" + time.Now().Format(time.RFC3339Nano)
	// A process in a session (and group) of its own, as a daemon would be.
	cmd := exec.Command("sleep", "30")
	cmd.Env = append(os.Environ(), marker)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	pid := cmd.Process.Pid

	var found []procfs.Proc
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if found = procfs.Marked(marker); len(found) == 1 {
			break
		}
	}
	if len(found) != 1 || found[0].PID != pid || found[0].Pgrp != pid || !found[0].Live() {
		t.Fatalf("Marked found %+v, want the one process %d leading its own group", found, pid)
	}
	if !procfs.HasEnv(pid, marker) || procfs.HasEnv(pid, marker+"x") || procfs.HasEnv(os.Getpid(), marker) {
		t.Fatal("HasEnv does not match the exact entry of the right process")
	}
	if p, ok := procfs.Stat(pid); !ok || p.Pgrp != pid {
		t.Fatalf("Stat: %+v %v", p, ok)
	}
	if len(procfs.Marked("PROCFS_TEST_MARKER=nobody")) != 0 {
		t.Fatal("Marked found a process for a marker nobody has")
	}

	// A zombie is not live.
	_ = cmd.Process.Signal(syscall.SIGKILL)
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if p, ok := procfs.Stat(pid); ok && !p.Live() {
			break
		}
	}
	if got := procfs.Marked(marker); len(got) != 0 {
		t.Fatalf("Marked found a killed process: %+v", got)
	}
}
