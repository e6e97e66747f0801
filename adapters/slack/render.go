package slack

import (
	"fmt"
	"strings"
	"unicode/utf8"

	slackgo "github.com/slack-go/slack"

	"github.com/nightona/nightona/transcript"
)

// Rendering: a turn of the transcript as Block Kit messages. Pure functions of the transcript
// and a view, so that golden files pin the payloads.

// Block Kit limits, with a margin (Slack: 50 blocks a message, 3,000 characters a section or
// context element, 12,000 characters of markdown blocks a message).
const (
	maxBlocks       = 46
	maxMarkdown     = 11000
	maxSectionText  = 2900
	maxContextLines = 12
	maxParts        = 10 // messages a turn may take; past it the rest is on the companion page
	maxOutputLines  = 12
	maxOutputBytes  = 1500
	maxSummary      = 200
)

// Action ids of the buttons.
const (
	actionStop    = "nightona_stop"
	actionApprove = "nightona_approve"
	actionDeny    = "nightona_deny"
	actionPreview = "nightona_preview"
	actionLink    = "nightona_transcript"
)

// view is what a rendering needs besides the transcript.
type view struct {
	// Thread is the thread's key, which the buttons carry.
	Thread string
	// Link is the companion page of the session ("" for none).
	Link string
	// Preview is the app's preview URL while its dev server answers.
	Preview string
	// Owner is the session's owner (a user key).
	Owner string
}

// payload is one message: its notification text and its blocks.
type payload struct {
	Text   string          `json:"text"`
	Blocks []slackgo.Block `json:"blocks"`
}

// unit is what one item of a turn becomes: blocks that stay in one message, or a line.
type unit struct {
	blocks   []slackgo.Block
	markdown int // characters of markdown blocks
	line     string
}

// renderTurn returns the messages of a turn in update mode: Claude's text as markdown, tool
// calls and progress as compact lines, edits as short diffs, command output trimmed, then the
// footer and the buttons on the last message.
func renderTurn(turn *transcript.Turn, v view) []payload {
	var parts [][]slackgo.Block
	var cur []slackgo.Block
	md := 0
	add := func(blocks []slackgo.Block, markdown int) {
		if len(cur) > 0 && (len(cur)+len(blocks) > maxBlocks || md+markdown > maxMarkdown) {
			parts, cur, md = append(parts, cur), nil, 0
		}
		cur = append(cur, blocks...)
		md += markdown
	}
	// Lines in a row (tool calls, progress) share one context block.
	var lines []string
	size := 0
	flush := func() {
		if len(lines) > 0 {
			add([]slackgo.Block{contextBlock(strings.Join(lines, "\n"))}, 0)
			lines, size = nil, 0
		}
	}
	for _, u := range turnUnits(turn, v) {
		if u.line != "" {
			if len(lines) >= maxContextLines || size+len(u.line)+1 > maxSectionText {
				flush()
			}
			lines = append(lines, u.line)
			size += len(u.line) + 1
			continue
		}
		flush()
		add(u.blocks, u.markdown)
	}
	flush()
	tail := turnTail(turn, v)
	if len(cur) == 0 && len(parts) == 0 && !turn.Done { // a turn just begun shows that it was seen
		cur = append(cur, contextBlock("_Working on it…_"))
	}
	add(tail, 0)
	parts = append(parts, cur)
	if len(parts) > maxParts {
		keep := parts[:maxParts-1]
		more := contextBlock(fmt.Sprintf(":scissors: The rest of this answer (%d more messages) is on the %s.", len(parts)-len(keep), companion(v.Link, "companion page")))
		parts = append(keep, append([]slackgo.Block{more}, tail...))
	}
	out := make([]payload, len(parts))
	text := turnText(turn)
	for i, blocks := range parts {
		out[i] = payload{Text: text, Blocks: blocks}
	}
	return out
}

// turnUnits renders a turn's items. Permission requests are left out: they are messages of
// their own (renderPermission), so that their buttons notify the owner.
func turnUnits(turn *transcript.Turn, v view) []unit {
	var out []unit
	for _, it := range turn.Items {
		switch it.Kind {
		case transcript.KindText:
			if strings.TrimSpace(it.Text) == "" {
				continue
			}
			for _, piece := range transcript.Split(it.Text, maxMarkdown) {
				out = append(out, unit{blocks: []slackgo.Block{slackgo.NewMarkdownBlock("", piece)}, markdown: utf8.RuneCountInString(piece)})
			}
		case transcript.KindTool:
			out = append(out, toolUnits(it.Tool, v)...)
		case transcript.KindStatus:
			out = append(out, unit{line: statusEmoji(it.Text) + " _" + escape(oneLine(it.Text, 300)) + "_"})
		case transcript.KindNotice:
			out = append(out, unit{line: ":information_source: " + escape(oneLine(it.Text, 300))})
		case transcript.KindError:
			out = append(out, unit{blocks: []slackgo.Block{sectionBlock(":warning: *" + escape(clip(it.Text, maxSectionText-20)) + "*")}})
		}
	}
	if len(turn.Items) == 0 && turn.Done && turn.Prompt != nil && !turn.Prompt.Cancelled && turn.Result == nil {
		out = append(out, unit{line: ":heavy_minus_sign: _Not run: the turn before it ended with an error. Send it again to retry._"})
	}
	return out
}

func toolUnits(t *transcript.Tool, v view) []unit {
	line := toolLine(t)
	var detail string
	switch {
	case t.Diff != "" && t.State != transcript.ToolDenied:
		detail = "```\n" + escape(clipLines(t.Diff, maxSectionText-200)) + "```"
	case t.Name == "Bash" && strings.TrimSpace(t.Output) != "" && (t.State == transcript.ToolDone || t.State == transcript.ToolFailed):
		out := transcript.Trim(t.Output, maxOutputLines, maxOutputBytes)
		detail = "```\n" + escape(out) + "\n```"
		if out != strings.TrimRight(t.Output, "\n") && v.Link != "" {
			detail += "\n" + mrkdwnLink(v.Link, "Full output on the companion page")
		}
	case t.State == transcript.ToolFailed && strings.TrimSpace(t.Output) != "":
		detail = "```\n" + escape(transcript.Trim(t.Output, 4, 600)) + "\n```"
	}
	if detail == "" {
		return []unit{{line: line}}
	}
	return []unit{{blocks: []slackgo.Block{contextBlock(line), sectionBlock(detail)}}}
}

// toolLine is a tool call in one line: its state, its name and what it works on.
func toolLine(t *transcript.Tool) string {
	s := toolEmoji(t.State) + " *" + escape(t.Name) + "*"
	if t.Summary != "" {
		s += " " + code(t.Summary)
	}
	switch t.State {
	case transcript.ToolFailed:
		s += " _failed_"
	case transcript.ToolDenied:
		s += " _denied_"
	case transcript.ToolStopped:
		s += " _stopped_"
	}
	return s
}

func toolEmoji(state string) string {
	switch state {
	case transcript.ToolRunning:
		return ":hourglass_flowing_sand:"
	case transcript.ToolDone:
		return ":white_check_mark:"
	case transcript.ToolFailed:
		return ":x:"
	case transcript.ToolDenied:
		return ":no_entry_sign:"
	}
	return ":black_square_for_stop:"
}

func statusEmoji(text string) string {
	if strings.HasPrefix(text, "Preview ready") {
		return ":globe_with_meridians:"
	}
	return ":gear:"
}

// turnTail is the end of a turn's last message: the footer once it ended, and the buttons.
func turnTail(turn *transcript.Turn, v view) []slackgo.Block {
	var out []slackgo.Block
	if f := footer(turn); f != "" {
		out = append(out, contextBlock(f))
	}
	if b := buttons(turn, v); b != nil {
		out = append(out, b)
	}
	return out
}

// footer is how the turn ended: its outcome, duration, turns and cost.
func footer(turn *transcript.Turn) string {
	r := turn.Result
	if r == nil {
		if turn.Prompt != nil && turn.Prompt.Cancelled {
			return ":heavy_multiplication_x: Cancelled before it started"
		}
		return ""
	}
	var s string
	switch r.Outcome {
	case "done":
		s = ":white_check_mark: Done"
	case "interrupted":
		s = ":black_square_for_stop: Stopped"
	default:
		s = ":x: Failed"
	}
	s += " in " + transcript.Duration(r.DurationMS)
	if r.NumTurns > 0 {
		s += fmt.Sprintf(" · %d %s", r.NumTurns, plural(r.NumTurns, "turn", "turns"))
	}
	s += " · " + transcript.Money(r.CostUSD)
	return s
}

// buttons are Stop while the turn runs, Open preview once the dev server answers, and the
// companion page.
func buttons(turn *transcript.Turn, v view) slackgo.Block {
	var els []slackgo.BlockElement
	if turn.Prompt == nil {
		// Between turns (the preview came up, the sandbox stopped): only the preview.
		if v.Preview != "" {
			p := slackgo.NewButtonBlockElement(actionPreview, "", plain("Open preview"))
			p.URL = v.Preview
			return slackgo.NewActionBlock("", p)
		}
		return nil
	}
	running := !turn.Done
	if running {
		els = append(els, stopButton(v, turn))
	}
	if v.Preview != "" {
		p := slackgo.NewButtonBlockElement(actionPreview, "", plain("Open preview"))
		p.URL = v.Preview
		if !running {
			p.Style = slackgo.StylePrimary
		}
		els = append(els, p)
	}
	if v.Link != "" {
		label := "Transcript"
		if running {
			label = "Live view"
		}
		l := slackgo.NewButtonBlockElement(actionLink, "", plain(label))
		l.URL = v.Link
		els = append(els, l)
	}
	if len(els) == 0 {
		return nil
	}
	return slackgo.NewActionBlock("", els...)
}

// turnText is a turn's notification text: the start of Claude's answer, or what is going on.
func turnText(turn *transcript.Turn) string {
	for _, it := range turn.Items {
		if it.Kind == transcript.KindText && strings.TrimSpace(it.Text) != "" {
			return oneLine(it.Text, 150)
		}
	}
	if turn.Result != nil {
		return strings.TrimPrefix(footer(turn), ":white_check_mark: ")
	}
	for _, it := range turn.Items {
		if it.Kind == transcript.KindError {
			return oneLine(it.Text, 150)
		}
	}
	switch {
	case turn.Prompt != nil && turn.Prompt.Cancelled:
		return "Cancelled before it started"
	case turn.Done:
		return "Not run"
	}
	return "Working on it…"
}

// renderPermission is the message of a permission request: what Claude wants to do, with
// Approve and Deny while it waits, then the decision and who made it.
func renderPermission(p *transcript.Permission, v view) payload {
	what := "*" + escape(p.Tool) + "*"
	if p.Summary != "" {
		what += " " + code(p.Summary)
	}
	var blocks []slackgo.Block
	var text string
	switch p.State {
	case transcript.PermPending:
		text = "Claude wants to use " + p.Tool + ": approve or deny"
		blocks = append(blocks, sectionBlock(":lock: "+mention(v.Owner)+" Claude wants to use "+what))
		approve := slackgo.NewButtonBlockElement(actionApprove, v.Thread+"|"+p.RequestID, plain("Approve"))
		approve.Style = slackgo.StylePrimary
		deny := slackgo.NewButtonBlockElement(actionDeny, v.Thread+"|"+p.RequestID, plain("Deny"))
		deny.Style = slackgo.StyleDanger
		blocks = append(blocks, slackgo.NewActionBlock("", approve, deny),
			contextBlock("Only "+mention(v.Owner)+", who started this session, or an admin can answer."))
	case transcript.PermAllowed:
		text = p.Tool + " approved"
		blocks = append(blocks, sectionBlock(":white_check_mark: "+what+" — approved by "+mention(p.DecidedBy)))
	case transcript.PermDenied:
		text = p.Tool + " denied"
		s := ":no_entry: " + what + " — denied"
		if p.DecidedBy != "" {
			s += " by " + mention(p.DecidedBy)
		}
		if p.Message != "" {
			s += "\n>" + escape(oneLine(p.Message, 300))
		}
		blocks = append(blocks, sectionBlock(s))
	case transcript.PermTimedOut:
		text = p.Tool + ": no answer in time"
		blocks = append(blocks, sectionBlock(":hourglass: "+what+" — nobody answered in time, so Claude was told no."))
	default:
		text = p.Tool + ": no longer needed"
		blocks = append(blocks, sectionBlock(":heavy_minus_sign: "+what+" — no longer needed: the turn ended."))
	}
	return payload{Text: text, Blocks: blocks}
}

// stopButton stops the turn: its value names the thread and the turn's prompt, so a press
// that comes as the turn ends does not stop the one after it.
func stopButton(v view, turn *transcript.Turn) *slackgo.ButtonBlockElement {
	value := v.Thread
	if turn.Prompt != nil {
		value += "|" + turn.Prompt.ID
	}
	stop := slackgo.NewButtonBlockElement(actionStop, value, plain("Stop"))
	stop.Style = slackgo.StyleDanger
	return stop
}

// renderControls is the message that holds Stop while a streamed answer is written (the
// streamed message can take buttons only when it ends).
func renderControls(turn *transcript.Turn, v view) payload {
	els := []slackgo.BlockElement{stopButton(v, turn)}
	if v.Preview != "" {
		p := slackgo.NewButtonBlockElement(actionPreview, "", plain("Open preview"))
		p.URL = v.Preview
		els = append(els, p)
	}
	if v.Link != "" {
		l := slackgo.NewButtonBlockElement(actionLink, "", plain("Live view"))
		l.URL = v.Link
		els = append(els, l)
	}
	return payload{Text: "Working on it…", Blocks: []slackgo.Block{slackgo.NewActionBlock("", els...)}}
}

func sectionBlock(mrkdwn string) *slackgo.SectionBlock {
	return slackgo.NewSectionBlock(slackgo.NewTextBlockObject(slackgo.MarkdownType, mrkdwn, false, false), nil, nil)
}

func contextBlock(mrkdwn string) *slackgo.ContextBlock {
	return slackgo.NewContextBlock("", slackgo.NewTextBlockObject(slackgo.MarkdownType, mrkdwn, false, false))
}

func plain(s string) *slackgo.TextBlockObject {
	return slackgo.NewTextBlockObject(slackgo.PlainTextType, s, false, false)
}

// code writes s as inline code in mrkdwn, on one line.
func code(s string) string {
	s = strings.ReplaceAll(oneLine(s, maxSummary), "`", "'")
	return "`" + escape(s) + "`"
}

// companion links to the companion page, or names it when there is no link.
func companion(link, label string) string {
	if link == "" {
		return label
	}
	return mrkdwnLink(link, label)
}

// mrkdwnLink writes a link in mrkdwn. Slack reads &, < and > as entities inside
// a link as everywhere else, so a URL with a query string is escaped too.
func mrkdwnLink(url, label string) string {
	return "<" + escape(url) + "|" + escape(label) + ">"
}

// oneLine keeps s's first line, at most max runes, with an ellipsis when it cut.
func oneLine(s string, max int) string {
	s = transcript.FirstLine(s)
	return clip(s, max)
}

// clip keeps at most max runes of s, with an ellipsis when it cut.
func clip(s string, max int) string {
	if utf8.RuneCountInString(s) <= max {
		return s
	}
	r := []rune(s)
	return string(r[:max-1]) + "…"
}

// clipLines keeps whole lines of s up to max bytes, saying how many it left out.
func clipLines(s string, max int) string {
	if len(s) <= max {
		return s
	}
	lines := strings.SplitAfter(s, "\n")
	var b strings.Builder
	for i, l := range lines {
		if b.Len()+len(l) > max-40 {
			fmt.Fprintf(&b, "… %d more lines\n", len(lines)-i)
			break
		}
		b.WriteString(l)
	}
	return b.String()
}

func plural(n int64, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}
