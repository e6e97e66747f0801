package slack

import (
	"context"
	"encoding/json"
	"errors"
	"strings"

	slackgo "github.com/slack-go/slack"

	"github.com/nightona/nightona/session"
)

// Buttons: Stop interrupts the running turn; Approve and Deny answer a permission request.
// Only the session's owner or an admin may press them; anyone else is told so, privately. The
// thread shows the outcome (the turn stopped, the request replaced by the decision and who
// made it) through the session's log, like everything else.

// SlackInteraction handles an interaction payload (the JSON Slack posts as payload). It returns
// at once, with the work started after; the result is the body of the answer (nil: empty).
func (a *Adapter) SlackInteraction(ctx context.Context, payload []byte) []byte {
	var cb slackgo.InteractionCallback
	if err := json.Unmarshal(payload, &cb); err != nil {
		a.metrics.events.WithLabelValues("interaction", "malformed").Inc()
		return nil
	}
	a.interact(cb)
	return nil
}

func (a *Adapter) interact(cb slackgo.InteractionCallback) {
	if cb.Type != slackgo.InteractionTypeBlockActions || len(cb.ActionCallback.BlockActions) == 0 {
		a.metrics.events.WithLabelValues("interaction", "ignored").Inc()
		return
	}
	act := cb.ActionCallback.BlockActions[0]
	team := cb.Team.ID
	if team == "" {
		team = cb.User.TeamID
	}
	channel := cb.Channel.ID
	if channel == "" {
		channel = cb.Container.ChannelID
	}
	here := thread{Team: team, Channel: channel, TS: cb.Container.ThreadTs}
	if here.TS == "" {
		here.TS = cb.Message.ThreadTimestamp
	}
	user := cb.User.ID
	switch act.ActionID {
	case actionStop, actionApprove, actionDeny:
	default:
		a.metrics.events.WithLabelValues("interaction", "ignored").Inc()
		return // link buttons: Slack opens them itself
	}
	// The value is the thread's key, then the permission request's id (Approve, Deny) or the
	// turn's prompt id (Stop; none on buttons posted before Stop named its turn).
	key, ref, _ := strings.Cut(act.Value, "|")
	th, ok := parseThread(key)
	if !ok || th.Team != team || th.Channel != channel {
		a.metrics.events.WithLabelValues("interaction", "malformed").Inc()
		return
	}
	a.metrics.events.WithLabelValues("interaction", act.ActionID).Inc()
	a.goWork(func(ctx context.Context) {
		err := a.pressButton(ctx, th, here, user, act.ActionID, ref)
		if err == nil {
			return
		}
		if !knownError(err) {
			a.log.Error("a button did not work", "action", act.ActionID, attrThread, key, "err", err)
		}
		a.tell(ctx, here, user, a.refusal(ctx, th, act.ActionID, err))
	})
}

func denyMessage(action string) string {
	if action == actionDeny {
		return "A reviewer denied this in Slack."
	}
	return ""
}

// pressButton carries out Stop (of the turn of prompt ref), Approve or Deny (of request ref)
// for the session's owner or an admin. The session manager takes it to the replica that
// drives the session, whichever this is.
func (a *Adapter) pressButton(ctx context.Context, th, here thread, user, action, ref string) error {
	sess, err := a.sessions.Session(ctx, th.key())
	if err != nil {
		return err
	}
	u := userKey(user)
	if sess.Owner != u && !a.sessions.IsAdmin(u) {
		return session.ErrForbidden
	}
	if action == actionStop {
		return a.sessions.Interrupt(ctx, th.key(), ref)
	}
	return a.sessions.Decide(ctx, th.key(), ref, u, action == actionApprove, denyMessage(action))
}

// refusal says why a button did not work.
func (a *Adapter) refusal(ctx context.Context, th thread, action string, err error) string {
	if !errors.Is(err, session.ErrForbidden) {
		return userMessage(err)
	}
	owner := "the person who started this session"
	if sess, err := a.sessions.Session(ctx, th.key()); err == nil {
		owner = mention(sess.Owner) + ", who started this session,"
	}
	what := "answer Claude's requests here"
	if action == actionStop {
		what = "stop it"
	}
	return "Sorry, only " + owner + " or an admin can " + what + "."
}
