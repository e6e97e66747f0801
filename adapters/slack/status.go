package slack

import (
	"context"
	"strings"
	"time"

	slackgo "github.com/slack-go/slack"

	"github.com/nightona/nightona/transcript"
)

// The assistant thread status ("is running npm test…") shows under the thread while Claude
// works. Slack clears it after two minutes and whenever the app posts in the thread, so it is
// set again then.

const (
	// statusRefresh is how often a status that has not changed is set again.
	statusRefresh = 60 * time.Second
	// statusMaxWait: a status later than this is no longer worth setting.
	statusMaxWait = 2 * time.Second
)

// threadStatus is what the thread status says about the transcript ("" when nothing runs).
func threadStatus(t *transcript.Transcript) string {
	if !t.Running() {
		return ""
	}
	if len(t.Pending()) > 0 {
		return "is waiting for an approval…"
	}
	var turn *transcript.Turn
	for _, tr := range t.Turns {
		if !tr.Done && tr.Prompt != nil {
			turn = tr
			break
		}
	}
	if turn == nil || len(turn.Items) == 0 {
		return "is thinking…"
	}
	last := turn.Items[len(turn.Items)-1]
	switch last.Kind {
	case transcript.KindTool:
		if last.Tool.State != transcript.ToolRunning {
			return "is thinking…"
		}
		return toolStatus(last.Tool)
	case transcript.KindText:
		if last.Streaming {
			return "is writing…"
		}
	case transcript.KindStatus:
		switch {
		case strings.HasPrefix(last.Text, "Starting a sandbox"):
			return "is starting a sandbox…"
		case strings.HasPrefix(last.Text, "Waking"):
			return "is waking the sandbox…"
		}
	}
	return "is thinking…"
}

func toolStatus(t *transcript.Tool) string {
	what := clip(transcript.FirstLine(t.Summary), 60)
	switch t.Name {
	case "Bash":
		if what != "" {
			return "is running " + what + "…"
		}
		return "is running a command…"
	case "Edit", "MultiEdit", "Write", "NotebookEdit":
		return "is editing " + what + "…"
	case "Read":
		return "is reading " + what + "…"
	case "Grep", "Glob":
		return "is searching the code…"
	case "WebFetch", "WebSearch":
		return "is looking on the web…"
	case "Task", "Agent":
		return "is delegating a task…"
	case "TodoWrite":
		return "is planning…"
	}
	return "is using " + t.Name + "…"
}

// showStatus sets the thread status when it changed, or when Slack may have cleared it.
func (r *renderer) showStatus(ctx context.Context, want string) {
	r.statusMu.Lock()
	same := want == r.status
	stale := time.Since(r.statusAt) > statusRefresh || r.posted
	r.statusMu.Unlock()
	if same && (want == "" || !stale) {
		return
	}
	r.setStatus(ctx, want)
}

// keepStatus sets the status again before Slack clears it while a long tool call runs
// without news.
func (r *renderer) keepStatus(ctx context.Context) {
	t := time.NewTicker(statusRefresh / 4)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		r.statusMu.Lock()
		cur, at := r.status, r.statusAt
		r.statusMu.Unlock()
		if cur != "" && time.Since(at) > statusRefresh {
			r.setStatus(ctx, cur)
		}
	}
}

func (r *renderer) setStatus(ctx context.Context, status string) {
	key := "status:" + r.th.Team
	if r.a.missing(ctx, key) {
		return
	}
	err := r.a.doWithin(ctx, "assistant.threads.setStatus", r.th.Team, "", statusMaxWait, func(ctx context.Context) error {
		return r.a.api.SetAssistantThreadsStatusContext(ctx, slackgo.AssistantThreadsSetStatusParameters{
			ChannelID: r.th.Channel, ThreadTS: r.th.TS, Status: status,
		})
	})
	switch {
	case err == nil:
	case unsupported(err):
		r.a.setMissing(ctx, key, slackError(err))
		return
	default:
		// A status is a nicety: the next change or refresh tries again.
		r.log.Debug("could not set the thread status", "err", err)
		return
	}
	r.statusMu.Lock()
	r.status, r.statusAt, r.posted = status, time.Now(), false
	r.statusMu.Unlock()
}
