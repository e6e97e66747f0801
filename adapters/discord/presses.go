package discord

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"sync/atomic"
	"time"

	"github.com/bwmarrin/discordgo"
)

// Stop and the answers to permission requests reach Claude only through the replica that
// drives the session, while Discord hands an interaction to any replica (any Gateway session,
// or whichever one the load balancer picks for HTTP). A replica that does not show the
// session leaves the press in Redis; the one that shows it looks for presses while a turn
// runs, takes each once and carries it out, answering the user through the interaction's
// webhook. A press nobody takes in handover is carried out where it was made.

const (
	// pressPoll is how often the showing replica looks for presses left for it.
	pressPoll = 300 * time.Millisecond
	// handover is how long a press waits for the showing replica.
	handover = 4 * time.Second
	pressTTL = 30 * time.Second
	keyPress = "discord:press:"
	keyTaken = "discord:press-taken:"
	// typingEvery renews the typing indicator, which Discord shows for ten seconds.
	typingEvery = 8 * time.Second
)

// press is a Stop or a permission answer left for the replica that shows the session.
type press struct {
	Interaction string `json:"interaction"`
	AppID       string `json:"app_id"`
	Token       string `json:"token"`
	User        string `json:"user"`
	Stop        bool   `json:"stop,omitempty"`
	RequestID   string `json:"request_id,omitempty"`
	Allow       bool   `json:"allow,omitempty"`
	// Decided is the edit that shows the decision on the clicked message.
	Decided json.RawMessage `json:"decided,omitempty"`
}

func pressKey(sessionID string, p *press) string {
	if p.Stop {
		return keyPress + sessionID + ":stop"
	}
	return keyPress + sessionID + ":decide:" + p.RequestID
}

// leave hands a press to the replica that shows the session, and answers the interaction
// with a deferral: the outcome shows on the clicked message, or in a reply only the user sees.
func (a *Adapter) leave(ctx context.Context, ix *incoming, thread, sessionID string, p *press) *discordgo.InteractionResponse {
	appID, _ := a.ids()
	if appID == "" {
		appID = ix.AppID
	}
	p.Interaction, p.AppID, p.Token, p.User = ix.ID, appID, ix.Token, ix.user
	b, _ := json.Marshal(p)
	if err := a.store.Put(ctx, pressKey(sessionID, p), b, pressTTL); err != nil {
		return tell(userMessage(a.log, err))
	}
	a.log.Info("left a press for the replica that shows the session", "thread", thread, "stop", p.Stop, "request", p.RequestID)
	a.background(func(ctx context.Context) {
		<-ix.answered
		if sleep(ctx, handover) != nil {
			return
		}
		if first, err := a.store.Once(ctx, keyTaken+p.Interaction, time.Hour); err == nil && first {
			// No replica shows the session: carry it out here, which says why it cannot be.
			a.carryOut(ctx, thread, p)
		}
	})
	return &discordgo.InteractionResponse{Type: discordgo.InteractionResponseDeferredMessageUpdate}
}

// carryOut does a press and answers the user through the interaction's webhook.
func (a *Adapter) carryOut(ctx context.Context, thread string, p *press) {
	var err error
	if p.Stop {
		err = a.sessions.Interrupt(ctx, thread)
	} else {
		err = a.sessions.Decide(ctx, thread, p.RequestID, p.User, p.Allow, "")
	}
	token := url.PathEscape(p.Token)
	switch {
	case err != nil:
		text := userMessage(a.log, err)
		err = a.api.followup(ctx, p.AppID, p.Token, &message{Content: &text, AllowedMentions: noMentions, Flags: discordgo.MessageFlagsEphemeral})
	case p.Decided != nil:
		err = a.api.do(ctx, http.MethodPatch, "/webhooks/"+p.AppID+"/"+token+"/messages/@original", p.Decided, nil)
	}
	if err != nil {
		a.log.Warn("could not answer a press carried out for another replica", "thread", thread, "err", err)
	}
}

// presses is what the showing replica watches for: whether a turn runs, and the permission
// requests waiting for an answer. The thread's sink sets it as it shows the transcript.
type presses struct {
	running atomic.Bool
	pending atomic.Value // []string
}

// watchPresses takes the presses left for this replica while it shows the session, and
// keeps Discord's typing indicator on in the thread while a turn runs.
func (a *Adapter) watchPresses(ctx context.Context, thread, sessionID string, w *presses) {
	t := time.NewTicker(pressPoll)
	defer t.Stop()
	var typed time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if !w.running.Load() {
			continue
		}
		// The indicator lasts ten seconds.
		if time.Since(typed) > typingEvery {
			typed = time.Now()
			if p, ok := parseKey(thread); ok {
				if err := a.api.typing(ctx, p.ChannelID); err != nil {
					a.log.Debug("could not show the typing indicator", "thread", thread, "err", err)
				}
			}
		}
		keys := []string{keyPress + sessionID + ":stop"}
		pending, _ := w.pending.Load().([]string)
		for _, req := range pending {
			keys = append(keys, keyPress+sessionID+":decide:"+req)
		}
		for _, k := range keys {
			b, err := a.store.Fetch(ctx, k)
			if err != nil || b == nil {
				continue
			}
			var p press
			if json.Unmarshal(b, &p) != nil {
				continue
			}
			if first, err := a.store.Once(ctx, keyTaken+p.Interaction, time.Hour); err != nil || !first {
				continue
			}
			a.log.Info("carrying out a press left by another replica", "thread", thread, "stop", p.Stop, "request", p.RequestID)
			a.carryOut(ctx, thread, &p)
		}
	}
}
