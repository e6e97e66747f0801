//go:build linux

package daytonatest

import (
	"bufio"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/nightona/nightona/internal/procfs"
)

// listeningPorts lists the TCP ports the processes of the groups listen on, as the daemon's
// port detector would see them inside a container of their own.
func listeningPorts(pgids []int) []int {
	want := map[int]bool{}
	for _, p := range pgids {
		want[p] = true
	}
	var pids []string
	for _, p := range procfs.All() {
		if p.Live() && want[p.Pgrp] {
			pids = append(pids, strconv.Itoa(p.PID))
		}
	}
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
