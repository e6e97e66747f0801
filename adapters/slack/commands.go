package slack

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"slices"
	"sort"
	"strings"
	"time"

	slackgo "github.com/slack-go/slack"

	"github.com/nightona/nightona/relay"
	"github.com/nightona/nightona/session"
	"github.com/nightona/nightona/transcript"
)

// /nightona: help, status, list, stop, destroy, usage, config and dashboard. Replies are shown only to
// the person who typed the command; what takes longer than Slack's 3 seconds (stopping or
// destroying a sandbox) is answered at once and reported through the response URL when done.

// commandTimeout is how long a command may take before it must have answered.
const commandTimeout = 2500 * time.Millisecond

// command is a /nightona invocation.
type command struct {
	Team, Channel, User, Text, ResponseURL, ThreadTS string
}

const helpText = "*Nightona* runs Claude Code for this channel. Mention me with a request to start a session in a thread; reply in the thread to go on.\n" +
	"`/nightona help` this help\n" +
	"`/nightona status [session]` a session: this thread's, this channel's, or one named by id or thread link\n" +
	"`/nightona list` every active session (admins)\n" +
	"`/nightona stop [session]` stop a session's sandbox; the next message wakes it (its owner or an admin)\n" +
	"`/nightona destroy <session>` delete a session, its sandbox and its history (its owner or an admin)\n" +
	"`/nightona usage [me|channel|@user|all]` what Claude cost today (others' and everyone's: admins)\n" +
	"`/nightona config` this channel's settings; `config mode <mode>`, `config model <model>`, `config reset` change them (admins)\n" +
	"`/nightona dashboard` a link, for you alone, to the admin dashboard (admins)"

// SlackCommand answers a slash command Slack posted over HTTP (its form fields) within
// Slack's 3 seconds. It returns the JSON body of the HTTP answer.
func (a *Adapter) SlackCommand(ctx context.Context, form url.Values) []byte {
	cmd := command{Team: form.Get("team_id"), Channel: form.Get("channel_id"), User: form.Get("user_id"),
		Text: form.Get("text"), ResponseURL: form.Get("response_url"), ThreadTS: form.Get("thread_ts")}
	return a.answerCommand(ctx, cmd)
}

func (a *Adapter) answerCommand(ctx context.Context, cmd command) []byte {
	ctx, cancel := context.WithTimeout(ctx, commandTimeout)
	defer cancel()
	text := a.runCommand(ctx, cmd)
	if ctx.Err() != nil && text == "" {
		text = "That took too long; try again in a moment."
	}
	a.metrics.events.WithLabelValues("command", "answered").Inc()
	b, _ := json.Marshal(commandReply(text))
	return b
}

func commandReply(text string) map[string]any {
	return map[string]any{"response_type": "ephemeral", "text": text}
}

func (a *Adapter) runCommand(ctx context.Context, cmd command) string {
	args := strings.Fields(cmd.Text)
	if len(args) == 0 {
		return helpText
	}
	user := userKey(cmd.User)
	admin := a.sessions.IsAdmin(user)
	sub, args := strings.ToLower(args[0]), args[1:]
	switch sub {
	case "help":
		return helpText
	case "status":
		sess, problem := a.target(ctx, cmd, args)
		if problem != "" {
			return problem
		}
		return a.describe(ctx, sess)
	case "list":
		if !admin {
			return "Only admins can list every session. `/nightona status` shows this channel's."
		}
		return a.list(ctx)
	case "stop", "destroy":
		if sub == "destroy" && len(args) == 0 && cmd.ThreadTS == "" {
			return "Name the session to destroy: `/nightona destroy <session id or thread link>` (`/nightona status` shows this channel's)."
		}
		sess, problem := a.target(ctx, cmd, args)
		if problem != "" {
			return problem
		}
		if sess.Owner != user && !admin {
			return fmt.Sprintf("Only %s, who started session `%s`, or an admin can %s it.", mention(sess.Owner), sess.ID, sub)
		}
		a.later(cmd, func(ctx context.Context) string {
			var err error
			if sub == "stop" {
				err = a.sessions.Stop(ctx, sess.Thread, user)
			} else {
				err = a.sessions.Destroy(ctx, sess.Thread, user)
			}
			if err != nil {
				if !knownError(err) {
					a.log.Error("slash command failed", "command", sub, attrSession, sess.ID, "err", err)
				}
				return userMessage(err)
			}
			if sub == "stop" {
				return fmt.Sprintf("Session `%s` is stopped. A new message in its thread wakes it.", sess.ID)
			}
			return fmt.Sprintf("Session `%s` is destroyed. A new mention in its thread starts afresh.", sess.ID)
		})
		if sub == "stop" {
			return fmt.Sprintf("Stopping session `%s`…", sess.ID)
		}
		return fmt.Sprintf("Destroying session `%s`…", sess.ID)
	case "usage":
		return a.usage(ctx, cmd, args, admin)
	case "config":
		return a.config(ctx, cmd, args, admin)
	case "dashboard":
		if !admin {
			return "Only admins can open the dashboard. Ask one of them (`NIGHTONA_ADMINS`) to add you."
		}
		if a.cfg.Links == nil {
			return "The dashboard is not available on this bot."
		}
		return mrkdwnLink(a.cfg.Links.DashboardLogin(user), "Open the admin dashboard") + " (the link works once, within 15 minutes; it is shown to you alone)."
	}
	return fmt.Sprintf("I don't know `/nightona %s`.\n\n%s", escape(strings.Join(append([]string{sub}, args...), " ")), helpText)
}

// later runs f after the command was answered and sends what it says to the response URL.
func (a *Adapter) later(cmd command, f func(ctx context.Context) string) {
	a.goWork(func(ctx context.Context) {
		text := f(ctx)
		if cmd.ResponseURL == "" {
			a.tell(ctx, thread{Team: cmd.Team, Channel: cmd.Channel}, cmd.User, text)
			return
		}
		msg := &slackgo.WebhookMessage{ResponseType: "ephemeral", Text: text}
		if err := slackgo.PostWebhookCustomHTTPContext(ctx, cmd.ResponseURL, a.cfg.HTTPClient, msg); err != nil {
			a.log.Warn("could not answer a slash command", "err", err)
		}
	})
}

// permalinkRE reads a thread's link: …/archives/C123/p1712345678000100, maybe with
// ?thread_ts=1712345678.000100.
var permalinkRE = regexp.MustCompile(`/archives/([A-Z0-9]+)/p(\d{10})(\d{6})(?:\?[^\s>|]*)?`)

// target finds the session a command is about: one named by id or thread link, the thread's
// the command was typed in, or the only one of the channel.
func (a *Adapter) target(ctx context.Context, cmd command, args []string) (*session.Session, string) {
	if len(args) > 0 {
		arg := strings.Trim(args[0], "<>")
		if i := strings.IndexByte(arg, '|'); i >= 0 {
			arg = arg[:i]
		}
		if m := permalinkRE.FindStringSubmatch(arg); m != nil {
			ts := m[2] + "." + m[3]
			if u, err := url.Parse(arg); err == nil && u.Query().Get("thread_ts") != "" {
				ts = u.Query().Get("thread_ts")
			}
			return a.sessionOf(ctx, thread{Team: cmd.Team, Channel: m[1], TS: ts}.key())
		}
		sess, err := a.sessions.Get(ctx, arg)
		if err != nil || !strings.HasPrefix(sess.Thread, "slack:"+cmd.Team+":") || sess.State == session.StateClosed {
			if err != nil && !errors.Is(err, session.ErrNotFound) {
				return nil, userMessage(err)
			}
			return nil, fmt.Sprintf("There is no session `%s` in this workspace. `/nightona status` lists this channel's.", escape(arg))
		}
		return sess, ""
	}
	if cmd.ThreadTS != "" {
		return a.sessionOf(ctx, thread{Team: cmd.Team, Channel: cmd.Channel, TS: cmd.ThreadTS}.key())
	}
	all, err := a.sessions.List(ctx)
	if err != nil {
		return nil, userMessage(err)
	}
	prefix := thread{Team: cmd.Team, Channel: cmd.Channel}.channelKey() + ":"
	var here []*session.Session
	for _, s := range all {
		if strings.HasPrefix(s.Thread, prefix) && s.State != session.StateClosed {
			here = append(here, s)
		}
	}
	switch len(here) {
	case 0:
		return nil, "There is no Nightona session in this channel. Mention me with a request to start one."
	case 1:
		return here[0], ""
	}
	sortSessions(here)
	var b strings.Builder
	fmt.Fprintf(&b, "This channel has %d sessions; name one by id or thread link:\n", len(here))
	for _, s := range here[:min(len(here), 15)] {
		b.WriteString(a.line(ctx, s) + "\n")
	}
	return nil, b.String()
}

func (a *Adapter) sessionOf(ctx context.Context, key string) (*session.Session, string) {
	sess, err := a.sessions.Session(ctx, key)
	if errors.Is(err, session.ErrNotFound) || err == nil && sess.State == session.StateClosed {
		return nil, "That thread has no Nightona session."
	}
	if err != nil {
		return nil, userMessage(err)
	}
	return sess, ""
}

// describe is a session in a few lines.
func (a *Adapter) describe(ctx context.Context, s *session.Session) string {
	var b strings.Builder
	fmt.Fprintf(&b, "*Session* `%s` — %s\n", s.ID, stateWords(s.State))
	fmt.Fprintf(&b, "Started by %s %s ago", mention(s.Owner), ago(s.CreatedAt))
	if th, ok := parseThread(s.Thread); ok {
		if link := permalink(a.workspaceURL(ctx), th); link != "" {
			fmt.Fprintf(&b, " in <%s|this thread>", link)
		} else {
			fmt.Fprintf(&b, " in <#%s>", th.Channel)
		}
	}
	b.WriteString("\n")
	fmt.Fprintf(&b, "Permission mode *%s*, model *%s*\n", orDefault(s.PermissionMode, "bot default"), orDefault(s.Model, "default"))
	u := s.Usage
	fmt.Fprintf(&b, "%d %s, %s, %s", u.Turns, plural(u.Turns, "turn", "turns"), transcript.Money(u.CostUSD), transcript.Duration(u.DurationMS))
	if s.PreviewURL != "" {
		fmt.Fprintf(&b, " · <%s|Open preview>", s.PreviewURL)
	}
	if a.cfg.Links != nil {
		fmt.Fprintf(&b, " · <%s|Transcript>", a.cfg.Links.Session(s.ID))
	}
	return b.String()
}

// line is a session in one line, for lists.
func (a *Adapter) line(ctx context.Context, s *session.Session) string {
	where := ""
	if th, ok := parseThread(s.Thread); ok {
		if link := permalink(a.workspaceURL(ctx), th); link != "" {
			where = fmt.Sprintf(" <%s|thread>", link)
		} else {
			where = fmt.Sprintf(" in <#%s>", th.Channel)
		}
	}
	return fmt.Sprintf("• `%s` %s, by %s, %s%s, %s", s.ID, stateWords(s.State), mention(s.Owner), ago(s.UpdatedAt)+" ago", where, transcript.Money(s.Usage.CostUSD))
}

func (a *Adapter) list(ctx context.Context) string {
	all, err := a.sessions.List(ctx)
	if err != nil {
		return userMessage(err)
	}
	var active []*session.Session
	for _, s := range all {
		if strings.HasPrefix(s.Thread, "slack:") && s.State.Active() {
			active = append(active, s)
		}
	}
	if len(active) == 0 {
		return "No session is active right now."
	}
	sortSessions(active)
	var b strings.Builder
	fmt.Fprintf(&b, "*%d active %s*\n", len(active), plural(int64(len(active)), "session", "sessions"))
	for i, s := range active {
		if i == 30 {
			fmt.Fprintf(&b, "…and %d more.", len(active)-i)
			break
		}
		b.WriteString(a.line(ctx, s) + "\n")
	}
	return b.String()
}

var userArg = regexp.MustCompile(`^<@([A-Z0-9]+)(?:\|[^>]*)?>$`)

func (a *Adapter) usage(ctx context.Context, cmd command, args []string, admin bool) string {
	now := time.Now()
	type row struct{ label, scope, key string }
	me := row{"You", "user", userKey(cmd.User)}
	channel := row{"This channel", "channel", thread{Team: cmd.Team, Channel: cmd.Channel}.channelKey()}
	var rows []row
	switch {
	case len(args) == 0:
		rows = []row{me, channel}
	case args[0] == "me":
		rows = []row{me}
	case args[0] == "channel":
		rows = []row{channel}
	case args[0] == "all":
		if !admin {
			return "Only admins can see everyone's usage."
		}
		rows = []row{{"Everyone", "all", ""}}
	default:
		m := userArg.FindStringSubmatch(args[0])
		if m == nil {
			return "Usage: `/nightona usage [me|channel|@user|all]`.\n\n" + helpText
		}
		if m[1] != cmd.User && !admin {
			return "Only admins can see someone else's usage."
		}
		rows = []row{{"<@" + m[1] + ">", "user", userKey(m[1])}}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "*Usage today* (%s UTC)\n", now.UTC().Format("Jan 2"))
	for _, r := range rows {
		u, err := a.sessions.Usage(ctx, r.scope, r.key, now)
		if err != nil {
			return userMessage(err)
		}
		fmt.Fprintf(&b, "%s: %d %s, %s, %s of work, %s tokens in and %s out\n", r.label, u.Turns, plural(u.Turns, "turn", "turns"),
			transcript.Money(u.CostUSD), transcript.Duration(u.DurationMS), count(u.InputTokens), count(u.OutputTokens))
		if r.scope == "all" {
			for _, by := range []struct {
				scope, title string
				name         func(string) string
			}{{"user", "Top users", mention}, {"channel", "Top channels", channelMention}} {
				all, err := a.sessions.UsageBy(ctx, by.scope, now)
				if err != nil {
					return userMessage(err)
				}
				if top := session.ByCost(all, topUsage); len(top) > 0 {
					fmt.Fprintf(&b, "*%s*\n", by.title)
					for _, k := range top {
						fmt.Fprintf(&b, "• %s: %d %s, %s\n", by.name(k.Key), k.Usage.Turns, plural(k.Usage.Turns, "turn", "turns"), transcript.Money(k.Usage.CostUSD))
					}
				}
			}
		}
	}
	return b.String()
}

// topUsage is how many users and channels `/nightona usage all` names.
const topUsage = 5

func (a *Adapter) config(ctx context.Context, cmd command, args []string, admin bool) string {
	s, err := a.channelSettings(ctx, cmd.Team, cmd.Channel)
	if err != nil {
		return userMessage(fmt.Errorf("%w: %v", session.ErrStoreDown, err))
	}
	show := func(prefix string) string {
		who := ""
		if s.By != "" {
			who = fmt.Sprintf(" (set by %s)", mention(s.By))
		}
		return fmt.Sprintf("%sNew sessions in this channel start with permission mode *%s* and model *%s*%s.\nAdmins change them with `/nightona config mode <%s>`, `/nightona config model <name>` and `/nightona config reset`.",
			prefix, orDefault(s.PermissionMode, "bot default"), orDefault(s.Model, "default"), who, strings.Join(relay.PermissionModes, "|"))
	}
	if len(args) == 0 {
		return show("")
	}
	if !admin {
		return "Only admins can change this channel's settings.\n" + show("")
	}
	key := strings.ToLower(args[0])
	switch {
	case key == "reset" && len(args) == 1:
		s = channelSettings{}
	case (key == "mode" || key == "permission_mode" || key == "permission-mode") && len(args) == 2:
		mode := args[1]
		i := slices.IndexFunc(relay.PermissionModes, func(m string) bool { return strings.EqualFold(m, mode) })
		if i < 0 {
			return fmt.Sprintf("%q is not a permission mode; use one of %s.", mode, strings.Join(relay.PermissionModes, ", "))
		}
		s.PermissionMode = relay.PermissionModes[i]
	case key == "model" && len(args) == 2:
		if !relay.ValidModel(args[1]) {
			return fmt.Sprintf("%q is not a model name; try sonnet, opus, haiku or a full name like claude-sonnet-4-5.", args[1])
		}
		s.Model = args[1]
	default:
		return "Usage: `/nightona config`, `/nightona config mode <mode>`, `/nightona config model <model>` or `/nightona config reset`.\n\n" + helpText
	}
	if s != (channelSettings{}) {
		s.By, s.At = userKey(cmd.User), time.Now().UTC()
	}
	if err := a.saveChannelSettings(ctx, cmd.Team, cmd.Channel, s); err != nil {
		return userMessage(fmt.Errorf("%w: %v", session.ErrStoreDown, err))
	}
	return show("Saved. ")
}

func sortSessions(ss []*session.Session) {
	sort.Slice(ss, func(i, j int) bool { return ss[i].UpdatedAt.After(ss[j].UpdatedAt) })
}

func stateWords(s session.State) string {
	switch s {
	case session.StateNew, session.StateStarting:
		return "starting"
	case session.StateIdle:
		return "idle"
	case session.StateRunning:
		return "working"
	case session.StateStopped:
		return "stopped"
	case session.StateFailed:
		return "failed to start"
	}
	return string(s)
}

func ago(t time.Time) string {
	d := time.Since(t)
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh", int(d.Hours()))
	}
	return fmt.Sprintf("%dd", int(d.Hours()/24))
}

func count(n int64) string {
	switch {
	case n >= 1_000_000:
		return fmt.Sprintf("%.1fM", float64(n)/1e6)
	case n >= 10_000:
		return fmt.Sprintf("%dk", n/1000)
	case n >= 1000:
		return fmt.Sprintf("%.1fk", float64(n)/1000)
	}
	return fmt.Sprint(n)
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
