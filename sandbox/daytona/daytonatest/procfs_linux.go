//go:build linux

package daytonatest

import (
	"bufio"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// procStat reads a process's state letter and process group from /proc/<pid>/stat.
func procStat(pid string) (state byte, pgrp int, ok bool) {
	data, err := os.ReadFile(filepath.Join("/proc", pid, "stat"))
	if err != nil {
		return 0, 0, false
	}
	// The command name is in parentheses and may itself hold spaces and parentheses.
	s := string(data)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, 0, false
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 3 {
		return 0, 0, false
	}
	pgrp, err = strconv.Atoi(f[2])
	if err != nil || len(f[0]) == 0 {
		return 0, 0, false
	}
	return f[0][0], pgrp, true
}

// groupPIDs lists the processes of the given groups that are not zombies.
func groupPIDs(pgids map[int]bool) ([]string, bool) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil, false
	}
	var pids []string
	for _, e := range entries {
		name := e.Name()
		if name[0] < '0' || name[0] > '9' {
			continue
		}
		state, pgrp, ok := procStat(name)
		if ok && state != 'Z' && state != 'X' && pgids[pgrp] {
			pids = append(pids, name)
		}
	}
	return pids, true
}

// markedPIDs lists the live processes whose environment holds one of the markers
// ("NAME=value" entries).
func markedPIDs(markers map[string]bool) []int {
	if len(markers) == 0 {
		return nil
	}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	self := os.Getpid()
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		if state, _, ok := procStat(e.Name()); !ok || state == 'Z' || state == 'X' {
			continue
		}
		env, err := os.ReadFile(filepath.Join("/proc", e.Name(), "environ"))
		if err != nil {
			continue
		}
		for _, kv := range strings.Split(string(env), "\x00") {
			if markers[kv] {
				pids = append(pids, pid)
				break
			}
		}
	}
	return pids
}

// liveMembers counts the group's processes that are not zombies; ok is false without /proc.
func liveMembers(pgid int) (int, bool) {
	pids, ok := groupPIDs(map[int]bool{pgid: true})
	return len(pids), ok
}

// listeningPorts lists the TCP ports the processes of the groups listen on, as the daemon's
// port detector would see them inside a container of their own.
func listeningPorts(pgids []int) []int {
	want := map[int]bool{}
	for _, p := range pgids {
		want[p] = true
	}
	pids, _ := groupPIDs(want)
	inodes := map[string]bool{}
	for _, pid := range pids {
		fds, err := os.ReadDir(filepath.Join("/proc", pid, "fd"))
		if err != nil {
			continue
		}
		for _, fd := range fds {
			link, err := os.Readlink(filepath.Join("/proc", pid, "fd", fd.Name()))
			if err == nil && strings.HasPrefix(link, "socket:[") {
				inodes[strings.TrimSuffix(strings.TrimPrefix(link, "socket:["), "]")] = true
			}
		}
	}
	var ports []int
	for _, table := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		f, err := os.Open(table)
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(f)
		sc.Scan() // header
		for sc.Scan() {
			// sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
			fields := strings.Fields(sc.Text())
			if len(fields) < 10 || fields[3] != "0A" || !inodes[fields[9]] {
				continue
			}
			_, hexPort, _ := strings.Cut(fields[1], ":")
			if p, err := strconv.ParseUint(hexPort, 16, 16); err == nil && !slices.Contains(ports, int(p)) {
				ports = append(ports, int(p))
			}
		}
		_ = f.Close()
	}
	slices.Sort(ports)
	return ports
}
