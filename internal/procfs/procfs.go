// Package procfs reads what Linux's /proc tells of processes: their state, their process
// group and their environment. Sandboxes use it to find every process they started, whatever
// group or session those moved to, by a marker the processes inherit in their environment.
// Elsewhere than Linux it finds nothing.
package procfs

// Proc is a process as /proc shows it.
type Proc struct {
	PID   int
	State byte // R, S, D, Z (zombie), X (dead)...
	Pgrp  int  // its process group
}

// Live reports whether the process runs: it is neither a zombie nor dead.
func (p Proc) Live() bool { return p.State != 'Z' && p.State != 'X' }

// Supported reports whether this system has a /proc to read.
func Supported() bool { return supported() }

// Stat reads one process; ok is false when it is gone (or unreadable).
func Stat(pid int) (p Proc, ok bool) { return stat(pid) }

// All lists the processes there are, zombies included.
func All() []Proc { return all() }

// Marked lists the live processes whose environment holds one of the entries ("NAME=value"),
// other than this process.
func Marked(entries ...string) []Proc { return marked(entries) }

// HasEnv reports whether the process's environment holds the entry ("NAME=value").
func HasEnv(pid int, entry string) bool { return hasEnv(pid, map[string]bool{entry: true}) }
