//go:build !linux

package procfs

func supported() bool { return false }

func stat(int) (Proc, bool) { return Proc{}, false }

func hasEnv(int, map[string]bool) bool { return false }

func all() []Proc { return nil }

func marked([]string) []Proc { return nil }
