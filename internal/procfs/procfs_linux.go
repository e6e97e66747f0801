//go:build linux

package procfs

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
)

func supported() bool {
	_, err := os.Stat("/proc/self/stat")
	return err == nil
}

func stat(pid int) (Proc, bool) {
	data, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return Proc{}, false
	}
	// The command name is in parentheses and may itself hold spaces and parentheses:
	// the fields that follow come after the last ')'.
	i := bytes.LastIndexByte(data, ')')
	if i < 0 {
		return Proc{}, false
	}
	f := bytes.Fields(data[i+1:])
	if len(f) < 3 || len(f[0]) == 0 {
		return Proc{}, false
	}
	pgrp, err := strconv.Atoi(string(f[2]))
	if err != nil {
		return Proc{}, false
	}
	return Proc{PID: pid, State: f[0][0], Pgrp: pgrp}, true
}

func hasEnv(pid int, entries map[string]bool) bool {
	env, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "environ"))
	if err != nil {
		return false
	}
	for _, kv := range bytes.Split(env, []byte{0}) {
		if entries[string(kv)] {
			return true
		}
	}
	return false
}

func all() []Proc {
	dir, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	out := make([]Proc, 0, len(dir))
	for _, e := range dir {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if p, ok := stat(pid); ok {
			out = append(out, p)
		}
	}
	return out
}

func marked(entries []string) []Proc {
	if len(entries) == 0 {
		return nil
	}
	want := make(map[string]bool, len(entries))
	for _, e := range entries {
		want[e] = true
	}
	self := os.Getpid()
	var out []Proc
	for _, p := range all() {
		if p.PID != self && p.Live() && hasEnv(p.PID, want) {
			out = append(out, p)
		}
	}
	return out
}
