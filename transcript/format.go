package transcript

import (
	"encoding/json"
	"fmt"
	"path"
	"strings"
	"unicode/utf8"
)

// summarize writes a tool call in one line, and for edits and writes a short diff.
func summarize(tool string, input json.RawMessage) (summary, diff string) {
	var in map[string]any
	_ = json.Unmarshal(input, &in)
	str := func(k string) string { s, _ := in[k].(string); return s }
	switch tool {
	case "Write":
		return shortPath(str("file_path")), prefixLines("+", str("content"), 12)
	case "Edit":
		return shortPath(str("file_path")), prefixLines("-", str("old_string"), 8) + prefixLines("+", str("new_string"), 8)
	case "MultiEdit":
		var d strings.Builder
		if edits, ok := in["edits"].([]any); ok {
			for _, e := range edits {
				if m, ok := e.(map[string]any); ok {
					o, _ := m["old_string"].(string)
					n, _ := m["new_string"].(string)
					d.WriteString(prefixLines("-", o, 4) + prefixLines("+", n, 4))
				}
			}
		}
		return shortPath(str("file_path")), d.String()
	case "Read", "NotebookEdit":
		return shortPath(str("file_path") + str("notebook_path")), ""
	case "Bash":
		return FirstLine(str("command")), ""
	case "Grep", "Glob":
		return str("pattern"), ""
	case "WebFetch":
		return str("url"), ""
	case "WebSearch":
		return str("query"), ""
	case "Task", "Agent":
		return str("description"), ""
	}
	for _, k := range []string{"command", "file_path", "path", "url", "query", "description", "prompt"} {
		if s := str(k); s != "" {
			return FirstLine(s), ""
		}
	}
	return "", ""
}

// shortPath keeps the last two parts of a path: enough to know the file in a chat line.
func shortPath(p string) string {
	if p == "" {
		return ""
	}
	dir, file := path.Split(p)
	parent := path.Base(strings.TrimSuffix(dir, "/"))
	if parent == "." || parent == "/" || parent == "" {
		return file
	}
	return parent + "/" + file
}

func prefixLines(prefix, s string, max int) string {
	if s == "" {
		return ""
	}
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	var b strings.Builder
	for i, l := range lines {
		if i == max {
			fmt.Fprintf(&b, "%s… %d more lines\n", prefix, len(lines)-max)
			break
		}
		b.WriteString(prefix + " " + l + "\n")
	}
	return b.String()
}

// FirstLine returns s's first line, with an ellipsis when more follows.
func FirstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return strings.TrimSpace(s[:i]) + " …"
	}
	return s
}

// Trim keeps the last maxLines lines of s (a command's output is read from its end) and at
// most maxBytes, saying what it left out.
func Trim(s string, maxLines, maxBytes int) string {
	s = strings.TrimRight(s, "\n")
	lines := strings.Split(s, "\n")
	cut := 0
	if len(lines) > maxLines {
		cut = len(lines) - maxLines
		lines = lines[cut:]
	}
	out := strings.Join(lines, "\n")
	if len(out) > maxBytes {
		start := len(out) - maxBytes
		for start < len(out) && !utf8.RuneStart(out[start]) {
			start++
		}
		out = out[start:]
		if i := strings.IndexByte(out, '\n'); i >= 0 && i < len(out)-1 {
			out = out[i+1:]
		}
		cut = -1
	}
	switch {
	case cut > 0:
		return fmt.Sprintf("… %d earlier lines\n%s", cut, out)
	case cut < 0:
		return "… (earlier output cut)\n" + out
	}
	return out
}

// Split cuts markdown into pieces of at most max bytes, at paragraph or line ends where it can,
// and never inside a code fence without closing it: a fence cut in two is closed at the end of
// one piece and reopened (with its language) at the start of the next.
func Split(s string, max int) []string {
	if max < 32 {
		max = 32
	}
	var pieces []string
	for len(s) > max {
		cut := cutPoint(s, max)
		piece := s[:cut]
		rest := strings.TrimLeft(s[cut:], "\n")
		if lang, open := openFence(piece); open {
			// Leave room to close the fence here and reopen it there.
			closing := "\n```"
			if len(piece)+len(closing) > max {
				cut = cutPoint(s, max-len(closing))
				piece, rest = s[:cut], strings.TrimLeft(s[cut:], "\n")
				lang, open = openFence(piece)
			}
			if open {
				piece += closing
				rest = "```" + lang + "\n" + rest
			}
		}
		pieces = append(pieces, piece)
		s = rest
	}
	if s != "" || len(pieces) == 0 {
		pieces = append(pieces, s)
	}
	return pieces
}

// cutPoint picks where to cut s, at most max bytes in: a blank line, else a line end, else a
// space, else a rune boundary.
func cutPoint(s string, max int) int {
	window := s[:max]
	for _, sep := range []string{"\n\n", "\n", " "} {
		if i := strings.LastIndex(window, sep); i > max/2 {
			return i + len(sep)
		}
	}
	i := max
	for i > 0 && !utf8.RuneStart(s[i]) {
		i--
	}
	return i
}

// openFence reports whether s ends inside a ``` code fence, and that fence's language.
func openFence(s string) (lang string, open bool) {
	for _, line := range strings.Split(s, "\n") {
		t := strings.TrimSpace(line)
		if strings.HasPrefix(t, "```") {
			if open {
				open, lang = false, ""
			} else {
				open, lang = true, strings.TrimSpace(strings.TrimPrefix(t, "```"))
			}
		}
	}
	return lang, open
}

// Turns writes a count of turns: "1 turn", "3 turns".
func Turns(n int64) string {
	if n == 1 {
		return "1 turn"
	}
	return fmt.Sprintf("%d turns", n)
}

// Money writes a cost in dollars the way a footer shows it.
func Money(usd float64) string {
	switch {
	case usd == 0:
		return "$0"
	case usd < 0.01:
		return fmt.Sprintf("$%.4f", usd)
	}
	return fmt.Sprintf("$%.2f", usd)
}

// Duration writes milliseconds the way a footer shows them.
func Duration(ms int64) string {
	switch {
	case ms < 1000:
		return fmt.Sprintf("%d ms", ms)
	case ms < 60000:
		return fmt.Sprintf("%.1f s", float64(ms)/1000)
	}
	return fmt.Sprintf("%dm %02ds", ms/60000, ms%60000/1000)
}
