package slack

import (
	"context"
	"errors"
	"strings"
	"unicode/utf8"

	slackgo "github.com/slack-go/slack"

	"github.com/nightona/nightona/transcript"
)

// Stream mode: a turn is one streamed message (chat.startStream, chat.appendStream,
// chat.stopStream) that grows as Claude writes: its text as markdown, each tool call as a task
// card whose status follows the call, progress as short lines. Stop sits in a small message
// below it while the turn runs; the footer and the preview and companion buttons end the
// streamed message when the turn does.

const (
	// maxStreamChars is how much one streamed message takes before the answer goes on in a
	// new one (a Slack message holds 40,000 characters).
	maxStreamChars = 30000
	// maxAppendChars is the markdown of one call (Slack takes 12,000).
	maxAppendChars = 11000
	// maxTaskText bounds a task card's details and output.
	maxTaskText = 1200
)

// errFallback: the workspace or channel has no streaming; the turn is shown in update mode.
var errFallback = errors.New("streaming unavailable")

// streamState is what a turn's streamed messages show.
type streamState struct {
	// TS are the turn's streamed messages, oldest first; the last one streams while Open.
	TS   []string `json:"ts"`
	Open bool     `json:"open,omitempty"`
	// Sent is, per segment, what has been appended: bytes of markdown, or a task's state.
	Sent []sent `json:"sent,omitempty"`
	// Chars is how many characters the open message holds.
	Chars int `json:"chars,omitempty"`
	// Ended is set once the footer landed.
	Ended bool `json:"ended,omitempty"`
}

type sent struct {
	N    int    `json:"n,omitempty"`
	Task string `json:"t,omitempty"`
}

// segment is a piece of a streamed answer: markdown that can only grow, or a task card that
// changes in place.
type segment struct {
	markdown string
	task     *slackgo.TaskUpdateChunk
}

// streamSegments renders a turn for streaming. Markdown (not mrkdwn): Slack renders it.
func streamSegments(turn *transcript.Turn) []segment {
	var out []segment
	for _, it := range turn.Items {
		switch it.Kind {
		case transcript.KindText:
			out = append(out, segment{markdown: it.Text})
		case transcript.KindTool:
			out = append(out, segment{task: taskChunk(it.Tool)})
		case transcript.KindStatus:
			out = append(out, segment{markdown: "_" + oneLine(it.Text, 300) + "_"})
		case transcript.KindNotice:
			out = append(out, segment{markdown: "ℹ️ _" + oneLine(it.Text, 300) + "_"})
		case transcript.KindError:
			out = append(out, segment{markdown: "⚠️ **" + oneLine(it.Text, 1000) + "**"})
		}
	}
	return out
}

// taskChunk is a tool call as a task card.
func taskChunk(t *transcript.Tool) *slackgo.TaskUpdateChunk {
	title := t.Name
	if t.Summary != "" {
		title += ": " + oneLine(t.Summary, 120)
	}
	c := slackgo.NewTaskUpdateChunk(t.ID, title)
	switch t.State {
	case transcript.ToolRunning:
		c.Status = slackgo.TaskCardStatusInProgress
	case transcript.ToolDone:
		c.Status = slackgo.TaskCardStatusComplete
	default:
		c.Status = slackgo.TaskCardStatusError
	}
	if t.Diff != "" && t.State != transcript.ToolDenied {
		c.Details = clipLines(t.Diff, maxTaskText)
	}
	switch t.State {
	case transcript.ToolDenied:
		c.Output = "Denied."
	case transcript.ToolStopped:
		c.Output = "Stopped."
	case transcript.ToolDone, transcript.ToolFailed:
		if t.Name == "Bash" || t.State == transcript.ToolFailed {
			c.Output = transcript.Trim(t.Output, 8, maxTaskText)
		}
	}
	return &c
}

// pending is a chunk to send and what it marks sent.
type pending struct {
	chunk slackgo.StreamChunk
	chars int
	seg   int
	mark  sent
}

// showStream brings a turn's streamed messages up to date.
func (r *renderer) showStream(ctx context.Context, turn *transcript.Turn, ts *turnState, v view) error {
	st := ts.Stream
	if st == nil {
		st = &streamState{}
		ts.Stream = st
	}
	if st.Ended {
		return nil
	}
	var todo []pending
	for i, seg := range streamSegments(turn) {
		if i >= len(st.Sent) {
			st.Sent = append(st.Sent, sent{})
		}
		s := st.Sent[i]
		if seg.task != nil {
			mark := string(seg.task.Status) + "|" + hashOf(seg.task)
			if s.Task != mark {
				todo = append(todo, pending{chunk: *seg.task, seg: i, mark: sent{Task: mark}})
			}
			continue
		}
		if len(seg.markdown) <= s.N {
			continue
		}
		from := s.N
		for from < len(seg.markdown) && !utf8.RuneStart(seg.markdown[from]) {
			from++ // the text changed under us: go on from a whole character
		}
		// A new piece of text is set apart from what came before it.
		sep := ""
		if s.N == 0 && i > 0 {
			sep = "\n\n"
		}
		end := from
		for k, piece := range splitRunes(seg.markdown[from:], maxAppendChars-len(sep)) {
			end += len(piece)
			if k == 0 {
				piece = sep + piece
			}
			todo = append(todo, pending{chunk: slackgo.NewMarkdownTextChunk(piece), chars: utf8.RuneCountInString(piece), seg: i, mark: sent{N: end}})
		}
	}
	for len(todo) > 0 {
		batch, chars := nextBatch(todo)
		if st.Open && st.Chars+chars > maxStreamChars {
			// A long answer goes on in a new message.
			if err := r.a.stopStream(ctx, r.th, st.TS[len(st.TS)-1], nil); err != nil && slackError(err) != "message_not_in_streaming_state" {
				return err
			}
			st.Open = false
		}
		chunks := make([]slackgo.StreamChunk, len(batch))
		for i, p := range batch {
			chunks[i] = p.chunk
		}
		if !st.Open {
			msgTS, err := r.a.startStream(ctx, r.th, recipient(turn, r.sess.Owner), chunks)
			if unsupported(err) && len(st.TS) == 0 {
				why := slackError(err)
				key := "stream:" + r.th.Team
				if why == "channel_type_not_supported" {
					key += ":" + r.th.Channel
				}
				r.a.setMissing(ctx, key, why)
				return errFallback
			}
			if err != nil {
				return err
			}
			st.TS, st.Open, st.Chars = append(st.TS, msgTS), true, 0
			r.markPosted()
			r.save(ctx)
		} else {
			err := r.a.appendStream(ctx, r.th, st.TS[len(st.TS)-1], chunks)
			if slackError(err) == "message_not_in_streaming_state" {
				st.Open = false // Slack closed it: the rest goes in a new one
				continue
			}
			if err != nil {
				return err
			}
		}
		st.Chars += chars
		for _, p := range batch {
			st.Sent[p.seg] = p.mark
		}
		todo = todo[len(batch):]
	}
	if len(st.TS) == 0 {
		if turn.Done {
			return errFallback // it ended with nothing to stream: its footer goes in a message
		}
		return nil // nothing to show yet
	}
	if !turn.Done {
		return r.showControls(ctx, ts, turn, v)
	}
	// The turn ended: the footer and the buttons end the streamed message, and Stop goes.
	tail := turnTail(turn, v)
	if st.Open {
		err := r.a.stopStream(ctx, r.th, st.TS[len(st.TS)-1], tail)
		switch {
		case slackError(err) == "message_not_in_streaming_state":
			st.Open = false
		case err != nil:
			return err
		default:
			st.Open, st.Ended = false, true
		}
	}
	if !st.Ended {
		// Slack closed the stream before the end: the footer comes in a message of its own.
		if _, err := r.a.post(ctx, r.th, payload{Text: turnText(turn), Blocks: tail}); err != nil {
			return err
		}
		st.Ended = true
	}
	r.save(ctx)
	if ts.Controls != nil {
		if err := r.a.remove(ctx, r.th, ts.Controls.TS); err != nil {
			return err
		}
		ts.Controls = nil
	}
	return nil
}

// showControls keeps the message with Stop (and the preview, once it is up) below the
// streamed answer while the turn runs.
func (r *renderer) showControls(ctx context.Context, ts *turnState, turn *transcript.Turn, v view) error {
	p := renderControls(turn, v)
	h := hashOf(p)
	switch {
	case ts.Controls == nil:
		msgTS, err := r.a.post(ctx, r.th, p)
		if err != nil {
			return err
		}
		ts.Controls = &part{TS: msgTS, Hash: h}
		r.markPosted()
		r.save(ctx)
	case ts.Controls.Hash != h:
		if err := r.a.update(ctx, r.th, ts.Controls.TS, p); err != nil {
			return err
		}
		ts.Controls.Hash = h
	}
	return nil
}

// nextBatch takes the chunks of one call: up to maxAppendChars of markdown and 20 chunks.
func nextBatch(todo []pending) ([]pending, int) {
	chars := 0
	for i, p := range todo {
		if i > 0 && (chars+p.chars > maxAppendChars || i >= 20) {
			return todo[:i], chars
		}
		chars += p.chars
	}
	return todo, chars
}

// recipient is the user a streamed answer is for: the turn's prompter.
func recipient(turn *transcript.Turn, owner string) string {
	u := owner
	if turn.Prompt != nil && strings.HasPrefix(turn.Prompt.User, "slack:") {
		u = turn.Prompt.User
	}
	return strings.TrimPrefix(u, "slack:")
}

// splitRunes cuts s into pieces of at most max runes.
func splitRunes(s string, max int) []string {
	var out []string
	for utf8.RuneCountInString(s) > max {
		i, n := 0, 0
		for n < max {
			_, size := utf8.DecodeRuneInString(s[i:])
			i += size
			n++
		}
		out = append(out, s[:i])
		s = s[i:]
	}
	return append(out, s)
}

func (a *Adapter) startStream(ctx context.Context, th thread, user string, chunks []slackgo.StreamChunk) (string, error) {
	var ts string
	err := a.do(ctx, "chat.startStream", th.Team, th.Channel, func(ctx context.Context) error {
		var err error
		_, ts, err = a.api.StartStreamContext(ctx, th.Channel, slackgo.MsgOptionTS(th.TS),
			slackgo.MsgOptionRecipientTeamID(th.Team), slackgo.MsgOptionRecipientUserID(user),
			slackgo.MsgOptionTaskDisplayMode(slackgo.TaskDisplayModeTimeline), slackgo.MsgOptionChunks(chunks...))
		return err
	})
	return ts, err
}

func (a *Adapter) appendStream(ctx context.Context, th thread, ts string, chunks []slackgo.StreamChunk) error {
	return a.do(ctx, "chat.appendStream", th.Team, th.Channel, func(ctx context.Context) error {
		_, _, err := a.api.AppendStreamContext(ctx, th.Channel, ts, slackgo.MsgOptionChunks(chunks...))
		return err
	})
}

func (a *Adapter) stopStream(ctx context.Context, th thread, ts string, blocks []slackgo.Block) error {
	return a.do(ctx, "chat.stopStream", th.Team, th.Channel, func(ctx context.Context) error {
		opts := []slackgo.MsgOption{}
		if len(blocks) > 0 {
			opts = append(opts, slackgo.MsgOptionBlocks(blocks...))
		}
		_, _, err := a.api.StopStreamContext(ctx, th.Channel, ts, opts...)
		return err
	})
}
