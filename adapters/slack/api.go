package slack

import (
	"context"
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	slackgo "github.com/slack-go/slack"
)

// slackAPI lists the Web API methods the adapter calls; *slackgo.Client has them. Errors are
// slack-go's: slackgo.SlackErrorResponse for ok:false answers, *slackgo.RateLimitedError for
// 429s.
type slackAPI interface {
	AuthTestContext(ctx context.Context) (*slackgo.AuthTestResponse, error)
	PostMessageContext(ctx context.Context, channelID string, options ...slackgo.MsgOption) (string, string, error)
	UpdateMessageContext(ctx context.Context, channelID, timestamp string, options ...slackgo.MsgOption) (string, string, string, error)
	DeleteMessageContext(ctx context.Context, channel, messageTimestamp string) (string, string, error)
	PostEphemeralContext(ctx context.Context, channelID, userID string, options ...slackgo.MsgOption) (string, error)
	StartStreamContext(ctx context.Context, channelID string, options ...slackgo.MsgOption) (string, string, error)
	AppendStreamContext(ctx context.Context, channelID, timestamp string, options ...slackgo.MsgOption) (string, string, error)
	StopStreamContext(ctx context.Context, channelID, timestamp string, options ...slackgo.MsgOption) (string, string, error)
	SetAssistantThreadsStatusContext(ctx context.Context, params slackgo.AssistantThreadsSetStatusParameters) error
}

var _ slackAPI = (*slackgo.Client)(nil)

// rate is a budget: calls a second, and how many may go at once after a quiet spell.
type rate struct {
	perSec float64
	burst  int
}

// limit is a method's budgets, per workspace and (for the methods that write into a channel)
// per channel. Slack's tiers: 1 is 1+/min, 2 is 20+/min, 3 is 50+/min, 4 is 100+/min, per
// method per workspace; chat.postMessage allows about one message a second per channel.
type limit struct {
	team, channel rate
}

var limits = map[string]limit{
	"auth.test":                   {team: rate{100.0 / 60, 10}},
	"chat.postMessage":            {team: rate{5, 20}, channel: rate{1, 3}},
	"chat.update":                 {team: rate{50.0 / 60, 5}, channel: rate{1, 3}},
	"chat.delete":                 {team: rate{50.0 / 60, 5}},
	"chat.postEphemeral":          {team: rate{100.0 / 60, 10}},
	"chat.startStream":            {team: rate{20.0 / 60, 3}},
	"chat.appendStream":           {team: rate{100.0 / 60, 10}, channel: rate{2, 4}},
	"chat.stopStream":             {team: rate{20.0 / 60, 3}},
	"assistant.threads.setStatus": {team: rate{50.0 / 60, 5}},
}

// errSkipped: a call worth making only at once (a thread status) was left out because its
// budget was spent.
var errSkipped = errors.New("skipped: over budget")

// do makes one Web API call within its budgets: it waits for a slot in the method's
// workspace and channel budgets (shared by every replica), and on a 429 holds the budget for
// the Retry-After Slack gave, for every replica, and tries again, until the call is answered
// otherwise or ctx ends.
func (a *Adapter) do(ctx context.Context, method, team, channel string, f func(ctx context.Context) error) error {
	return a.doWithin(ctx, method, team, channel, -1, f)
}

// doWithin is do for calls that are dropped (errSkipped) rather than made later than
// maxWait; maxWait < 0 waits as long as needed.
func (a *Adapter) doWithin(ctx context.Context, method, team, channel string, maxWait time.Duration, f func(ctx context.Context) error) error {
	lim := limits[method]
	teamKey := "slack:" + method + ":" + team
	chanKey := teamKey + ":" + channel
	for {
		wait := a.take(ctx, teamKey, lim.team)
		if lim.channel.perSec > 0 && channel != "" {
			wait = max(wait, a.take(ctx, chanKey, lim.channel))
		}
		if maxWait >= 0 && wait > maxWait {
			a.metrics.calls.WithLabelValues(method, "skipped").Inc()
			return errSkipped
		}
		if wait > 0 {
			a.metrics.waited.WithLabelValues(method).Observe(wait.Seconds())
			if err := sleep(ctx, wait); err != nil {
				return err
			}
		}
		err := f(ctx)
		var rl *slackgo.RateLimitedError
		if errors.As(err, &rl) {
			d := max(rl.RetryAfter, time.Second)
			a.metrics.calls.WithLabelValues(method, "rate_limited").Inc()
			a.log.Warn("Slack rate limit; holding the method's budget", attrMethod, method, "team", team, "retry_after", d)
			if herr := a.store.Hold(ctx, teamKey, d); herr != nil {
				// Without Redis, this replica still waits itself.
				if err := sleep(ctx, d); err != nil {
					return err
				}
			}
			if maxWait >= 0 {
				return errSkipped
			}
			continue
		}
		a.metrics.calls.WithLabelValues(method, outcome(err)).Inc()
		return err
	}
}

func (a *Adapter) take(ctx context.Context, key string, r rate) time.Duration {
	if r.perSec <= 0 {
		return 0
	}
	d, err := a.store.Take(ctx, key, r.perSec, r.burst)
	if err != nil {
		return 0 // Redis is away: Slack's own 429s still hold us back
	}
	return d
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

func outcome(err error) string {
	if err == nil {
		return "ok"
	}
	var se slackgo.SlackErrorResponse
	if errors.As(err, &se) {
		return se.Err
	}
	return "error"
}

// slackError returns Slack's error code for an ok:false answer, "" otherwise.
func slackError(err error) string {
	var se slackgo.SlackErrorResponse
	if errors.As(err, &se) {
		return se.Err
	}
	return ""
}

// unsupported reports whether an error says the method or feature is not there for this
// workspace, token or channel (rather than that this one call failed).
func unsupported(err error) bool {
	switch slackError(err) {
	case "unknown_method", "not_allowed", "not_allowed_token_type", "method_deprecated", "deprecated_endpoint",
		"missing_scope", "access_denied", "channel_type_not_supported", "feature_not_enabled", "not_supported",
		"team_not_allowed", "no_permission":
		return true
	}
	return false
}

func blocksOpt(p payload) slackgo.MsgOption {
	return slackgo.MsgOptionCompose(slackgo.MsgOptionText(p.Text, false), slackgo.MsgOptionBlocks(p.Blocks...))
}

// post posts p as a reply in th and returns its ts.
func (a *Adapter) post(ctx context.Context, th thread, p payload) (string, error) {
	var ts string
	err := a.do(ctx, "chat.postMessage", th.Team, th.Channel, func(ctx context.Context) error {
		var err error
		_, ts, err = a.api.PostMessageContext(ctx, th.Channel, blocksOpt(p), slackgo.MsgOptionTS(th.TS))
		return err
	})
	return ts, err
}

// update replaces the message ts of th with p.
func (a *Adapter) update(ctx context.Context, th thread, ts string, p payload) error {
	return a.do(ctx, "chat.update", th.Team, th.Channel, func(ctx context.Context) error {
		_, _, _, err := a.api.UpdateMessageContext(ctx, th.Channel, ts, blocksOpt(p))
		return err
	})
}

// remove deletes the bot's message ts of th.
func (a *Adapter) remove(ctx context.Context, th thread, ts string) error {
	err := a.do(ctx, "chat.delete", th.Team, th.Channel, func(ctx context.Context) error {
		_, _, err := a.api.DeleteMessageContext(ctx, th.Channel, ts)
		return err
	})
	if slackError(err) == "message_not_found" {
		return nil
	}
	return err
}

// ephemeral shows text to user only, in th's thread when th.TS is set.
func (a *Adapter) ephemeral(ctx context.Context, th thread, user, text string) error {
	opts := []slackgo.MsgOption{slackgo.MsgOptionText(text, false)}
	if th.TS != "" {
		opts = append(opts, slackgo.MsgOptionTS(th.TS))
	}
	return a.do(ctx, "chat.postEphemeral", th.Team, th.Channel, func(ctx context.Context) error {
		_, err := a.api.PostEphemeralContext(ctx, th.Channel, user, opts...)
		return err
	})
}

// metrics are the adapter's Prometheus metrics.
type metrics struct {
	calls  *prometheus.CounterVec
	waited *prometheus.HistogramVec
	events *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		calls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nightona_slack_api_calls_total", Help: "Slack Web API calls, by method and outcome (ok, rate_limited, skipped, or Slack's error code).",
		}, []string{"method", "outcome"}),
		waited: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "nightona_slack_budget_wait_seconds", Help: "Time Slack Web API calls waited for their shared rate budget.",
			Buckets: []float64{.05, .1, .25, .5, 1, 2, 5, 10, 30, 60},
		}, []string{"method"}),
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nightona_slack_events_total", Help: "Slack events, commands and interactions received, by kind and outcome.",
		}, []string{"kind", "outcome"}),
	}
	if reg != nil {
		m.calls = register(reg, m.calls)
		m.waited = register(reg, m.waited)
		m.events = register(reg, m.events)
	}
	return m
}

// register registers c, or returns the collector registered before under its name (a second
// adapter on the same registry).
func register[C prometheus.Collector](reg prometheus.Registerer, c C) C {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if old, ok := are.ExistingCollector.(C); ok {
				return old
			}
		}
	}
	return c
}
