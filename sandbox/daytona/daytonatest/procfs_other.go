//go:build !linux

package daytonatest

// Without /proc the fake cannot tell zombies from live processes nor map sockets to
// processes: groups count as alive while kill(0) finds them, no ports are reported, and
// processes that left their group are not found.

func liveMembers(int) (int, bool) { return 0, false }

func markedPIDs(map[string]bool) []int { return nil }

func listeningPorts([]int) []int { return nil }
