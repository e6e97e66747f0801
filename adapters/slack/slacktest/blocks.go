package slacktest

import (
	"encoding/json"
	"regexp"
	"strings"
	"unicode/utf8"
)

// ValidateBlocks checks blocks (a JSON array) against the Block Kit limits Slack enforces and
// returns the error Slack would answer ("invalid_blocks"), or "" when they are fine.
func ValidateBlocks(raw []byte) string { return string(validateBlocks(raw)) }

// validateBlocks checks blocks against the Block Kit limits Slack enforces, answering
// invalid_blocks as Slack does when one is broken.
func validateBlocks(raw json.RawMessage) errResp {
	var blocks []map[string]any
	if err := json.Unmarshal(raw, &blocks); err != nil {
		return "invalid_blocks_format"
	}
	if len(blocks) > 50 {
		return "invalid_blocks"
	}
	markdown := 0
	actionIDs := map[string]bool{}
	for _, b := range blocks {
		switch b["type"] {
		case "section":
			t, ok := b["text"].(map[string]any)
			if !ok && b["fields"] == nil {
				return "invalid_blocks"
			}
			if ok && !textOK(t, 3000) {
				return "invalid_blocks"
			}
			if acc, ok := b["accessory"].(map[string]any); ok && !elementOK(acc, actionIDs) {
				return "invalid_blocks"
			}
		case "context":
			els, _ := b["elements"].([]any)
			if len(els) == 0 || len(els) > 10 {
				return "invalid_blocks"
			}
			for _, e := range els {
				t, ok := e.(map[string]any)
				if !ok || (t["type"] != "image" && !textOK(t, 3000)) {
					return "invalid_blocks"
				}
			}
		case "actions":
			els, _ := b["elements"].([]any)
			if len(els) == 0 || len(els) > 25 {
				return "invalid_blocks"
			}
			for _, e := range els {
				em, ok := e.(map[string]any)
				if !ok || !elementOK(em, actionIDs) {
					return "invalid_blocks"
				}
			}
		case "markdown":
			t, _ := b["text"].(string)
			if t == "" {
				return "invalid_blocks"
			}
			markdown += utf8.RuneCountInString(t)
		case "header":
			t, ok := b["text"].(map[string]any)
			if !ok || t["type"] != "plain_text" || !textOK(t, 150) {
				return "invalid_blocks"
			}
		case "divider", "rich_text", "image":
		default:
			return "invalid_blocks"
		}
	}
	if markdown > 12000 {
		return "invalid_blocks"
	}
	return ""
}

func textOK(t map[string]any, max int) bool {
	s, _ := t["text"].(string)
	switch t["type"] {
	case "mrkdwn", "plain_text":
	default:
		return false
	}
	return s != "" && utf8.RuneCountInString(s) <= max
}

func elementOK(e map[string]any, actionIDs map[string]bool) bool {
	if e["type"] != "button" {
		return true
	}
	t, ok := e["text"].(map[string]any)
	if !ok || t["type"] != "plain_text" || !textOK(t, 75) {
		return false
	}
	id, _ := e["action_id"].(string)
	if id != "" {
		if actionIDs[id] || len(id) > 255 {
			return false
		}
		actionIDs[id] = true
	}
	if v, _ := e["value"].(string); len(v) > 2000 {
		return false
	}
	if u, ok := e["url"].(string); ok && (len(u) > 3000 || !strings.Contains(u, "://")) {
		return false
	}
	switch e["style"] {
	case nil, "primary", "danger":
	default:
		return false
	}
	return true
}

// blockText writes the text of blocks as a person reads it, one block a line.
func blockText(b *strings.Builder, raw json.RawMessage) {
	var blocks []map[string]any
	_ = json.Unmarshal(raw, &blocks)
	for _, bl := range blocks {
		switch bl["type"] {
		case "markdown":
			s, _ := bl["text"].(string)
			b.WriteString(s + "\n")
		case "section", "header":
			if t, ok := bl["text"].(map[string]any); ok {
				s, _ := t["text"].(string)
				b.WriteString(s + "\n")
			}
		case "context":
			els, _ := bl["elements"].([]any)
			for _, e := range els {
				if t, ok := e.(map[string]any); ok {
					s, _ := t["text"].(string)
					b.WriteString(s + " ")
				}
			}
			b.WriteString("\n")
		case "actions":
			els, _ := bl["elements"].([]any)
			for _, e := range els {
				if em, ok := e.(map[string]any); ok {
					if t, ok := em["text"].(map[string]any); ok {
						s, _ := t["text"].(string)
						b.WriteString("[" + s + "] ")
					}
				}
			}
			b.WriteString("\n")
		}
	}
}

// mrkdwnLink is a link in mrkdwn, <url|label>, as Slack's clients find it in a message.
var mrkdwnLink = regexp.MustCompile(`<([^|<>]+)\|([^<>]*)>`)

// Links returns the links in a mrkdwn text as a client shows them: by label, with the
// URL's &amp;, &lt; and &gt; read back as the characters they stand for.
func Links(mrkdwn string) map[string]string {
	out := map[string]string{}
	for _, m := range mrkdwnLink.FindAllStringSubmatch(mrkdwn, -1) {
		out[unescape(m[2])] = unescape(m[1])
	}
	return out
}

var unescaper = strings.NewReplacer("&lt;", "<", "&gt;", ">", "&amp;", "&")

func unescape(s string) string { return unescaper.Replace(s) }
