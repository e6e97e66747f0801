package relay

// topLevelString returns the value of a top-level string field of a JSON object, without
// decoding the object, and whether it was found. The line must be valid JSON (json.Valid):
// the scan trusts its structure. Escaped characters in the value are returned as they are
// written, which is fine for the plain ASCII values looked for here ("type", "subtype").
//
// Most of what Claude Code prints (stream_event deltas, assistant and user messages) needs no
// more than its type, so the relay decodes in full only the few kinds of line it acts on.
func topLevelString(line []byte, key string) ([]byte, bool) {
	i := skipSpace(line, 0)
	if i >= len(line) || line[i] != '{' {
		return nil, false
	}
	i++
	for {
		i = skipSpace(line, i)
		if i >= len(line) || line[i] != '"' {
			return nil, false
		}
		kStart := i + 1
		i = skipString(line, i)
		k := line[kStart : i-1]
		i = skipSpace(line, i)
		if i >= len(line) || line[i] != ':' {
			return nil, false
		}
		i = skipSpace(line, i+1)
		if string(k) == key {
			if i < len(line) && line[i] == '"' {
				end := skipString(line, i)
				return line[i+1 : end-1], true
			}
			return nil, false
		}
		i = skipValue(line, i)
		i = skipSpace(line, i)
		if i >= len(line) || line[i] != ',' {
			return nil, false
		}
		i++
	}
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// skipString returns the index just past the string starting at b[i] == '"'.
func skipString(b []byte, i int) int {
	for i++; i < len(b); i++ {
		switch b[i] {
		case '\\':
			i++
		case '"':
			return i + 1
		}
	}
	return len(b)
}

// skipValue returns the index just past the value starting at b[i].
func skipValue(b []byte, i int) int {
	if i >= len(b) {
		return i
	}
	switch b[i] {
	case '"':
		return skipString(b, i)
	case '{', '[':
		depth := 0
		for ; i < len(b); i++ {
			switch b[i] {
			case '"':
				i = skipString(b, i) - 1
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return i + 1
				}
			}
		}
		return len(b)
	default: // number, true, false, null
		for i < len(b) && b[i] != ',' && b[i] != '}' && b[i] != ']' && b[i] != ' ' && b[i] != '\n' {
			i++
		}
		return i
	}
}
