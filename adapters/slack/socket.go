package slack

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"time"

	slackgo "github.com/slack-go/slack"
	"github.com/slack-go/slack/socketmode"
)

// Socket Mode: Slack pushes events, commands and interactions down a WebSocket the app opens,
// and each envelope is acknowledged within 3 seconds: events and interactions at once (the
// work is done after), slash commands with their reply.

// eventTTL is how long a delivered event's id is remembered to drop Slack's retries.
const eventTTL = time.Hour

func (a *Adapter) runSocket(ctx context.Context) error {
	sm := socketmode.New(a.client,
		socketmode.OptionPingInterval(a.cfg.PingInterval),
		socketmode.OptionLog(log.New(slogWriter{a.log}, "", 0)),
	)
	errc := make(chan error, 1)
	go func() { errc <- sm.RunContext(ctx) }()
	for {
		select {
		case err := <-errc:
			if ctx.Err() != nil {
				return nil
			}
			var se slackgo.SlackErrorResponse
			if errors.As(err, &se) {
				return fmt.Errorf("socket mode: SLACK_APP_TOKEN is not accepted by Slack (%s)", se.Err)
			}
			return fmt.Errorf("socket mode: %w", err)
		case evt := <-sm.Events:
			a.onSocketEvent(ctx, sm, evt)
		}
	}
}

func (a *Adapter) onSocketEvent(ctx context.Context, sm *socketmode.Client, evt socketmode.Event) {
	switch evt.Type {
	case socketmode.EventTypeConnecting:
		a.log.Debug("connecting to Slack over Socket Mode")
	case socketmode.EventTypeConnected:
		a.log.Info("Socket Mode connected")
	case socketmode.EventTypeConnectionError:
		a.log.Warn("Socket Mode connection failed; retrying", "err", fmt.Sprint(evt.Data))
	case socketmode.EventTypeInvalidAuth:
		a.log.Error("Slack refused SLACK_APP_TOKEN")
	case socketmode.EventTypeEventsAPI:
		req := evt.Request
		if req == nil {
			return
		}
		a.ack(ctx, sm, req.EnvelopeID, nil)
		body := []byte(req.Payload)
		var cb struct {
			EventID string `json:"event_id"`
		}
		_ = json.Unmarshal(body, &cb)
		if cb.EventID != "" && !a.first(ctx, cb.EventID) {
			a.metrics.events.WithLabelValues("event", "retry_dropped").Inc()
			a.log.Info("dropping a delivery already handled", "event_id", cb.EventID, "retry_attempt", req.RetryAttempt)
			return
		}
		a.goWork(func(ctx context.Context) { a.SlackEvent(ctx, body) })
	case socketmode.EventTypeSlashCommand:
		cmd, ok := evt.Data.(slackgo.SlashCommand)
		if !ok || evt.Request == nil {
			return
		}
		var thread struct {
			ThreadTS string `json:"thread_ts"`
		}
		_ = json.Unmarshal(evt.Request.Payload, &thread)
		envelope := evt.Request.EnvelopeID
		// Answered off the read loop: a slow command must not hold up other envelopes.
		a.goWork(func(ctx context.Context) {
			reply := a.answerCommand(ctx, command{Team: cmd.TeamID, Channel: cmd.ChannelID, User: cmd.UserID,
				Text: cmd.Text, ResponseURL: cmd.ResponseURL, ThreadTS: thread.ThreadTS})
			a.ack(ctx, sm, envelope, json.RawMessage(reply))
		})
	case socketmode.EventTypeInteractive:
		cb, ok := evt.Data.(slackgo.InteractionCallback)
		if !ok || evt.Request == nil {
			return
		}
		a.ack(ctx, sm, evt.Request.EnvelopeID, nil)
		a.interact(cb)
	case socketmode.EventTypeErrorBadMessage:
		a.log.Warn("Socket Mode sent a message that could not be read", "err", fmt.Sprint(evt.Data))
	}
}

func (a *Adapter) ack(ctx context.Context, sm *socketmode.Client, envelopeID string, payload any) {
	if err := sm.AckCtx(ctx, envelopeID, payload); err != nil {
		a.log.Warn("could not acknowledge a Socket Mode envelope", "envelope_id", envelopeID, "err", err)
	}
}

// first reports whether this is the first delivery of an event, across replicas. Without
// Redis it says yes: better a rare duplicate than a lost prompt.
func (a *Adapter) first(ctx context.Context, eventID string) bool {
	ok, err := a.store.Once(ctx, EventKey(eventID), eventTTL)
	if err != nil {
		a.log.Warn("could not check for a repeated delivery", "event_id", eventID, "err", err)
		return true
	}
	return ok
}

// EventKey is the key under which a delivered event's id is remembered, by either transport,
// so that Slack's retries are handled once.
func EventKey(eventID string) string { return "slack:event:" + eventID }

// slogWriter sends slack-go's log lines to the adapter's logger, at debug level.
type slogWriter struct{ log *slog.Logger }

func (w slogWriter) Write(p []byte) (int, error) {
	w.log.Debug(string(p), "component", "socketmode")
	return len(p), nil
}
