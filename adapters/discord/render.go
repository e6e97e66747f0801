package discord

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/bwmarrin/discordgo"

	"github.com/nightona/nightona/transcript"
)

// Discord's limits that shape the rendering.
const (
	maxContent = 2000 // characters in a message
	maxURL     = 512  // characters in a link button's url
	// maxBody leaves room under maxContent for the status line under a turn's last message.
	maxBody = maxContent - 200
)

// Colours of the result embed, Discord's own green, yellow and red.
const (
	colorDone    = 0x57F287
	colorStopped = 0xFEE75C
	colorFailed  = 0xED4245
)

// Custom ids of the bot's buttons. A request or prompt id follows the last colon.
const (
	idStop    = "nightona:stop:"
	idAllow   = "nightona:allow:"
	idDeny    = "nightona:deny:"
	idCancel  = "nightona:cancel:"
	idDestroy = "nightona:destroy:"
)

// spec is one message of a thread as it should look. Key names it within its turn: "s<segment>.<part>"
// for the turn's text, "p<request id>" for a permission request.
type spec struct {
	Key        string                       `json:"key"`
	Content    string                       `json:"content,omitempty"`
	Embeds     []*discordgo.MessageEmbed    `json:"embeds,omitempty"`
	Components []discordgo.MessageComponent `json:"components,omitempty"`
}

// hash identifies what a message shows, to tell whether it needs an edit.
func (s spec) hash() string {
	b, _ := json.Marshal(struct {
		C string
		E []*discordgo.MessageEmbed
		K []discordgo.MessageComponent
	}{s.Content, s.Embeds, s.Components})
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:8])
}

// payload is the message to post or edit to. Edits set every field, so what a message no
// longer has (buttons, an embed) goes.
func (s spec) payload() *message {
	content := s.Content
	embeds := s.Embeds
	if embeds == nil {
		embeds = []*discordgo.MessageEmbed{}
	}
	components := s.Components
	if components == nil {
		components = []discordgo.MessageComponent{}
	}
	return &message{Content: &content, Embeds: &embeds, Components: &components, AllowedMentions: noMentions}
}

// view is what a rendering needs besides the transcript.
type view struct {
	// Owner started the session ("discord:<id>"): permission requests say who may answer.
	Owner string
	// Companion is the link to the session's companion page ("" for none).
	Companion string
}

// turnState is where a turn is, for what its last message shows.
type turnState int

const (
	turnStatus    turnState = iota // no prompt: what happened between turns
	turnRunning                    // Claude is on it
	turnQueued                     // waits for the turn before it
	turnCancelled                  // withdrawn before it ran
	turnDone                       // ended: a result, or an error
	turnNotRun                     // ended by an error before it ran
)

// render lays a transcript out as Discord messages, turn by turn.
func render(t *transcript.Transcript, v view) [][]spec {
	// The latest turn, cancelled ones aside, carries the preview and companion links.
	latest, running := -1, -1
	for i, tr := range t.Turns {
		if tr.Prompt == nil || tr.Prompt.Cancelled {
			continue
		}
		latest = i
		if running < 0 && !tr.Done {
			running = i
		}
	}
	out := make([][]spec, len(t.Turns))
	for i, tr := range t.Turns {
		st := stateOf(tr, i, running)
		out[i] = renderTurn(tr, st, v)
		if i == latest || st == turnRunning || st == turnQueued {
			addButtons(out[i], tr, st, t.PreviewURL, v, i == latest)
		}
	}
	return out
}

func stateOf(tr *transcript.Turn, i, running int) turnState {
	switch {
	case tr.Prompt == nil:
		return turnStatus
	case tr.Prompt.Cancelled:
		return turnCancelled
	case !tr.Done && i == running:
		return turnRunning
	case !tr.Done:
		return turnQueued
	case tr.Result == nil && len(tr.Items) == 0:
		return turnNotRun
	}
	return turnDone
}

// renderTurn writes one turn: its text and tool lines in messages of at most maxBody
// characters, a message of its own for each permission request, and on the last message the
// turn's state (a status line, or the result embed).
func renderTurn(tr *transcript.Turn, st turnState, v view) []spec {
	var specs []spec
	var blocks []block
	segment := 0
	flush := func() {
		body := joinBlocks(blocks)
		blocks = nil
		if strings.TrimSpace(body) == "" {
			segment++
			return
		}
		for j, part := range transcript.Split(body, maxBody) {
			specs = append(specs, spec{Key: fmt.Sprintf("s%d.%d", segment, j), Content: part})
		}
		segment++
	}
	status := ""
	for _, it := range tr.Items {
		switch it.Kind {
		case transcript.KindText:
			if s := strings.TrimSpace(it.Text); s != "" {
				blocks = append(blocks, block{text: s})
			}
		case transcript.KindTool:
			blocks = append(blocks, block{text: toolLine(it.Tool), line: true})
		case transcript.KindNotice:
			blocks = append(blocks, block{text: "-# ℹ️ " + oneLine(it.Text, 300), line: true})
		case transcript.KindError:
			blocks = append(blocks, block{text: "⚠️ " + strings.TrimSpace(it.Text)})
		case transcript.KindStatus:
			if st == turnStatus {
				blocks = append(blocks, block{text: statusBlock(it.Text), line: true})
			}
			status = it.Text
		case transcript.KindPermission:
			flush()
			specs = append(specs, permissionSpec(it.Permission, v))
		}
	}
	flush()
	if len(specs) == 0 {
		specs = append(specs, spec{Key: "s0.0"})
	}
	last := &specs[len(specs)-1]
	if footer := footerLine(tr, st, status); footer != "" {
		if last.Content != "" {
			last.Content += "\n"
		}
		last.Content += footer
	}
	if st == turnDone {
		last.Embeds = []*discordgo.MessageEmbed{resultEmbed(tr)}
	}
	return specs
}

// block is a piece of a turn's text: lines (tools, notices) sit under one another, other
// blocks get a blank line between them.
type block struct {
	text string
	line bool
}

func joinBlocks(blocks []block) string {
	var b strings.Builder
	for i, bl := range blocks {
		if i > 0 {
			if bl.line && blocks[i-1].line {
				b.WriteString("\n")
			} else {
				b.WriteString("\n\n")
			}
		}
		b.WriteString(bl.text)
	}
	return b.String()
}

// footerLine is the small line under a turn's last message that says where the turn is.
func footerLine(tr *transcript.Turn, st turnState, status string) string {
	switch st {
	case turnRunning:
		for _, it := range tr.Items {
			if it.Kind == transcript.KindPermission && it.Permission.State == transcript.PermPending {
				return "-# ⏸️ Waiting for an answer to the request above."
			}
		}
		if status == "" || !lastIsStatus(tr) {
			return "-# ⏳ Working…"
		}
		return "-# ⏳ " + oneLine(status, 150)
	case turnQueued:
		return "-# 🕒 Queued: this starts when the turn before it ends."
	case turnCancelled:
		return "-# ✖️ Cancelled before it started."
	case turnNotRun:
		return "-# ✖️ Not run: the turn before it ended with an error."
	}
	return ""
}

// lastIsStatus: the latest thing in the turn is a status (the sandbox is starting), so the
// status line says it rather than "Working…".
func lastIsStatus(tr *transcript.Turn) bool {
	for i := len(tr.Items) - 1; i >= 0; i-- {
		switch tr.Items[i].Kind {
		case transcript.KindStatus:
			return true
		case transcript.KindNotice:
			continue
		}
		return false
	}
	return false
}

// toolLine writes a tool call in one line: its state, its name and what it works on, and for
// edits how many lines changed.
func toolLine(t *transcript.Tool) string {
	icon := map[string]string{
		transcript.ToolRunning: "⏳", transcript.ToolDone: "✅", transcript.ToolFailed: "❌",
		transcript.ToolDenied: "🚫", transcript.ToolStopped: "⏹️",
	}[t.State]
	if icon == "" {
		icon = "•"
	}
	line := icon + " **" + escapeMarkdown(t.Name) + "**"
	if t.Summary != "" {
		line += " " + code(oneLine(t.Summary, 120))
	}
	if plus, minus := diffStat(t.Diff); plus+minus > 0 {
		line += fmt.Sprintf(" (+%d −%d)", plus, minus)
	}
	switch t.State {
	case transcript.ToolFailed:
		if out := lastLine(t.Output); out != "" {
			line += " — " + code(oneLine(out, 120))
		}
	case transcript.ToolDenied:
		line += " — denied"
	case transcript.ToolStopped:
		line += " — stopped"
	}
	return line
}

// diffStat counts a tool's added and removed lines from its short diff, "… N more lines"
// markers included.
func diffStat(diff string) (plus, minus int) {
	for _, l := range strings.Split(diff, "\n") {
		n := 1
		if i := strings.Index(l, "… "); i >= 0 && strings.HasSuffix(l, " more lines") {
			n, _ = strconv.Atoi(strings.TrimSuffix(l[i+len("… "):], " more lines"))
		}
		switch {
		case strings.HasPrefix(l, "+"):
			plus += n
		case strings.HasPrefix(l, "-"):
			minus += n
		}
	}
	return plus, minus
}

// permissionSpec is a permission request's own message: what Claude asks, and either the
// Approve and Deny buttons or what became of it and who decided.
func permissionSpec(p *transcript.Permission, v view) spec {
	s := spec{Key: "p" + p.RequestID}
	s.Content = permissionText(p, v)
	if p.State == transcript.PermPending {
		s.Components = []discordgo.MessageComponent{discordgo.ActionsRow{Components: []discordgo.MessageComponent{
			discordgo.Button{Label: "Approve", Style: discordgo.SuccessButton, CustomID: idAllow + p.RequestID},
			discordgo.Button{Label: "Deny", Style: discordgo.DangerButton, CustomID: idDeny + p.RequestID},
		}}}
	}
	return s
}

func permissionText(p *transcript.Permission, v view) string {
	var b strings.Builder
	b.WriteString("🔐 **Claude asks to use " + escapeMarkdown(p.Tool) + "**")
	if p.Summary != "" {
		b.WriteString("\n" + code(oneLine(p.Summary, 300)))
	}
	by := ""
	if p.DecidedBy != "" {
		by = " by " + mention(p.DecidedBy)
	}
	switch p.State {
	case transcript.PermPending:
		who := "the person who started this session"
		if v.Owner != "" {
			who = mention(v.Owner)
		}
		b.WriteString("\n-# Only " + who + " or an admin can answer.")
	case transcript.PermAllowed:
		b.WriteString("\n✅ Approved" + by)
	case transcript.PermDenied:
		b.WriteString("\n🚫 Denied" + by)
	case transcript.PermTimedOut:
		b.WriteString("\n⌛ Nobody answered in time, so Claude was told no.")
	case transcript.PermWithdrawn:
		b.WriteString("\n↩️ Withdrawn: the turn ended before an answer.")
	}
	if p.Message != "" && p.State != transcript.PermPending {
		b.WriteString("\n-# " + oneLine(p.Message, 200))
	}
	return b.String()
}

// resultEmbed is how a turn ended: the outcome, and its duration, API turns and cost.
func resultEmbed(tr *transcript.Turn) *discordgo.MessageEmbed {
	r := tr.Result
	if r == nil {
		return &discordgo.MessageEmbed{Title: "❌ Ended with an error", Color: colorFailed}
	}
	e := &discordgo.MessageEmbed{Title: "✅ Done", Color: colorDone}
	switch r.Outcome {
	case "interrupted":
		e.Title, e.Color = "⏹️ Stopped", colorStopped
	case "failed":
		e.Title, e.Color = "❌ Failed", colorFailed
	}
	e.Fields = []*discordgo.MessageEmbedField{
		{Name: "Duration", Value: transcript.Duration(r.DurationMS), Inline: true},
		{Name: "Turns", Value: strconv.FormatInt(r.NumTurns, 10), Inline: true},
		{Name: "Cost", Value: transcript.Money(r.CostUSD), Inline: true},
	}
	return e
}

// addButtons puts the turn's buttons on its last message: Stop while it runs, Cancel while it
// waits, and on the latest turn the preview (once it answers) and the companion page.
func addButtons(specs []spec, tr *transcript.Turn, st turnState, preview string, v view, latest bool) {
	var row []discordgo.MessageComponent
	switch st {
	case turnRunning:
		row = append(row, discordgo.Button{Label: "Stop", Style: discordgo.DangerButton, CustomID: idStop + tr.Prompt.ID,
			Emoji: &discordgo.ComponentEmoji{Name: "⏹️"}})
	case turnQueued:
		row = append(row, discordgo.Button{Label: "Cancel", Style: discordgo.SecondaryButton, CustomID: idCancel + tr.Prompt.ID})
	}
	if latest {
		if linkOK(preview) {
			row = append(row, discordgo.Button{Label: "Open preview", Style: discordgo.LinkButton, URL: preview,
				Emoji: &discordgo.ComponentEmoji{Name: "🌐"}})
		}
		if linkOK(v.Companion) {
			row = append(row, discordgo.Button{Label: "Companion", Style: discordgo.LinkButton, URL: v.Companion,
				Emoji: &discordgo.ComponentEmoji{Name: "📜"}})
		}
	}
	if len(row) == 0 {
		return
	}
	last := &specs[len(specs)-1]
	last.Components = append(last.Components, discordgo.ActionsRow{Components: row})
}

// linkOK: Discord takes http and https links of at most 512 characters in link buttons.
func linkOK(u string) bool {
	if u == "" || utf8.RuneCountInString(u) > maxURL {
		return false
	}
	p, err := url.Parse(u)
	return err == nil && (p.Scheme == "http" || p.Scheme == "https") && p.Host != ""
}

// statusBlock writes a status between turns: a small line, and any detail (a crashed dev
// server's output) in a code block.
func statusBlock(text string) string {
	first, rest, _ := strings.Cut(strings.TrimSpace(text), "\n")
	out := "-# " + statusIcon(first) + oneLine(first, 300)
	if rest = strings.TrimSpace(rest); rest != "" {
		out += "\n```\n" + strings.ReplaceAll(transcript.Trim(rest, 15, 1200), "```", "ˋˋˋ") + "\n```"
	}
	return out
}

func statusIcon(s string) string {
	switch {
	case strings.HasPrefix(s, "Preview ready"):
		return "🌐 "
	case strings.Contains(s, "stopped"), strings.Contains(s, "closed"):
		return "💤 "
	}
	return "ℹ️ "
}

// oneLine keeps a text's first line, at most n characters.
func oneLine(s string, n int) string {
	s = transcript.FirstLine(s)
	if utf8.RuneCountInString(s) > n {
		r := []rune(s)
		s = string(r[:n-1]) + "…"
	}
	return s
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		s = s[i+1:]
	}
	return strings.TrimSpace(s)
}

// code writes s as inline code, whatever backticks it holds.
func code(s string) string {
	if !strings.Contains(s, "`") {
		return "`" + s + "`"
	}
	return "`` " + strings.ReplaceAll(s, "``", "`\u200b`") + " ``"
}

var markdownEscaper = strings.NewReplacer(`\`, `\\`, `*`, `\*`, `_`, `\_`, "`", "\\`", `~`, `\~`, `|`, `\|`, `>`, `\>`)

func escapeMarkdown(s string) string { return markdownEscaper.Replace(s) }
