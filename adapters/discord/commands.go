package discord

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/bwmarrin/discordgo"

	"github.com/nightona/nightona/relay"
	"github.com/nightona/nightona/session"
	"github.com/nightona/nightona/transcript"
)

// commandName is the bot's one application command; what it does is a sub command.
const commandName = "nightona"

// command is /nightona as registered with Discord.
func command() *discordgo.ApplicationCommand {
	var modes []*discordgo.ApplicationCommandOptionChoice
	for _, m := range relay.PermissionModes {
		modes = append(modes, &discordgo.ApplicationCommandOptionChoice{Name: m, Value: m})
	}
	sub := func(name, desc string, opts ...*discordgo.ApplicationCommandOption) *discordgo.ApplicationCommandOption {
		return &discordgo.ApplicationCommandOption{Type: discordgo.ApplicationCommandOptionSubCommand, Name: name, Description: desc, Options: opts}
	}
	str := func(name, desc string, choices ...*discordgo.ApplicationCommandOptionChoice) *discordgo.ApplicationCommandOption {
		return &discordgo.ApplicationCommandOption{Type: discordgo.ApplicationCommandOptionString, Name: name, Description: desc, Choices: choices}
	}
	return &discordgo.ApplicationCommand{
		Name:             commandName,
		Type:             discordgo.ChatApplicationCommand,
		Description:      "Nightona: Claude Code in your threads",
		Contexts:         &[]discordgo.InteractionContextType{discordgo.InteractionContextGuild, discordgo.InteractionContextBotDM},
		IntegrationTypes: &[]discordgo.ApplicationIntegrationType{discordgo.ApplicationIntegrationGuildInstall},
		Options: []*discordgo.ApplicationCommandOption{
			sub("help", "How to use Nightona"),
			sub("status", "This thread's session: state, settings, usage and links"),
			sub("list", "Every session on this server (admins)"),
			sub("stop", "Stop this thread's sandbox; the next message wakes it"),
			sub("destroy", "Delete this thread's session and its sandbox"),
			sub("usage", "Turns and cost on a day",
				str("scope", "Whose usage (default: yours)",
					&discordgo.ApplicationCommandOptionChoice{Name: "me", Value: "me"},
					&discordgo.ApplicationCommandOptionChoice{Name: "this channel", Value: "channel"},
					&discordgo.ApplicationCommandOptionChoice{Name: "everyone (admins)", Value: "all"}),
				str("day", "A day as YYYY-MM-DD, in UTC (default: today)")),
			sub("dashboard", "A link, for you alone, to the admin dashboard (admins)"),
			sub("config", "This channel's settings for new sessions (admins change them)",
				str("permission_mode", "Claude Code's permission mode for new sessions", modes...),
				str("model", "Claude's model for new sessions: sonnet, opus, a full name, or default")),
		},
	}
}

func (a *Adapter) registerCommands(ctx context.Context) error {
	if err := a.api.overwriteCommands(ctx, a.cfg.AppID, []*discordgo.ApplicationCommand{command()}); err != nil {
		return err
	}
	a.log.Info("registered /nightona")
	return nil
}

// command answers /nightona.
func (a *Adapter) command(ctx context.Context, ix *incoming) *discordgo.InteractionResponse {
	i, raw, u := ix.Interaction, ix.raw, ix.user
	data := i.ApplicationCommandData()
	if data.Name != commandName || len(data.Options) == 0 {
		return tell("I don't know that command.")
	}
	sub := data.Options[0]
	opt := func(name string) string {
		for _, o := range sub.Options {
			if o.Name == name {
				if s, ok := o.Value.(string); ok {
					return strings.TrimSpace(s)
				}
			}
		}
		return ""
	}
	switch sub.Name {
	case "help":
		return tell(helpText)
	case "status":
		return a.status(ctx, i, raw, u)
	case "list":
		return a.list(ctx, u)
	case "stop":
		thread, sess, err := a.sessionHere(ctx, i.ChannelID)
		if err != nil {
			return tell(userMessage(a.log, err))
		}
		if !a.mayManage(sess, u) {
			return a.refusal(sess, "stop it")
		}
		return a.answer(ix, false, func(ctx context.Context) reply {
			if err := a.sessions.Stop(ctx, thread, u); err != nil {
				return reply{content: userMessage(a.log, err)}
			}
			return reply{content: "⏹️ " + mention(u) + " stopped this thread's sandbox. The next message here wakes it, with the conversation as it was."}
		})
	case "destroy":
		_, sess, err := a.sessionHere(ctx, i.ChannelID)
		if err != nil {
			return tell(userMessage(a.log, err))
		}
		if !a.mayManage(sess, u) {
			return a.refusal(sess, "destroy it")
		}
		return now(reply{ephemeral: true,
			content: "Destroy this thread's session? Its sandbox, its files and the conversation are deleted for good.",
			components: []discordgo.MessageComponent{discordgo.ActionsRow{Components: []discordgo.MessageComponent{
				discordgo.Button{Label: "Destroy", Style: discordgo.DangerButton, CustomID: idDestroy + "yes"},
				discordgo.Button{Label: "Keep it", Style: discordgo.SecondaryButton, CustomID: idDestroy + "no"},
			}}}})
	case "usage":
		return a.usage(ctx, i, raw, u, opt("scope"), opt("day"))
	case "config":
		return a.config(ctx, i, raw, u, opt("permission_mode"), opt("model"))
	case "dashboard":
		if !a.sessions.IsAdmin(u) {
			return tell("Only admins can open the dashboard. Ask one of them (`NIGHTONA_ADMINS`) to add you.")
		}
		if a.cfg.DashboardLink == nil {
			return tell("The dashboard is not available on this bot.")
		}
		return tell("[Open the admin dashboard](" + a.cfg.DashboardLink(u) + ") (the link works once, within 15 minutes; only you see it).")
	}
	return tell("I don't know `/nightona " + sub.Name + "`. Try `/nightona help`.")
}

const helpText = `**Nightona runs Claude Code for this server.**
• Mention me in a channel with a request (` + "`@Nightona add a dark mode toggle`" + `): I open a thread, give it its own sandbox with the app, and show Claude's work there as it happens.
• Reply in the thread to continue the same conversation in the same sandbox. DMs work too.
• **Stop** ends the running turn; **Approve** / **Deny** answer Claude's requests (the person who started the session, or an admin). **Open preview** shows the app once it runs; **Companion** shows the session live.
` + "`/nightona status`" + ` this thread's session · ` + "`/nightona stop`" + ` stop its sandbox · ` + "`/nightona destroy`" + ` delete it
` + "`/nightona usage`" + ` turns and cost · ` + "`/nightona config`" + ` this channel's permission mode and model · ` + "`/nightona list`" + ` every session and ` + "`/nightona dashboard`" + ` the admin dashboard (admins)`

// channelHere is the channel part of thread keys for where an interaction came from: the
// thread's parent channel, the channel itself, or the DM.
func (a *Adapter) channelHere(ctx context.Context, i *discordgo.Interaction, raw []byte) (string, error) {
	if i.GuildID == "" {
		return platform + ":dm:" + i.ChannelID, nil
	}
	if thread, err := a.threadOf(ctx, i.ChannelID); err == nil && thread != "" {
		return session.ChannelOf(thread), nil
	}
	var x struct {
		Channel *struct {
			Type     discordgo.ChannelType `json:"type"`
			ParentID string                `json:"parent_id"`
		} `json:"channel"`
	}
	_ = json.Unmarshal(raw, &x)
	if x.Channel == nil {
		ch, err := a.api.channel(ctx, i.ChannelID)
		if err != nil {
			return "", err
		}
		x.Channel = &struct {
			Type     discordgo.ChannelType `json:"type"`
			ParentID string                `json:"parent_id"`
		}{ch.Type, ch.ParentID}
	}
	switch x.Channel.Type {
	case discordgo.ChannelTypeGuildPublicThread, discordgo.ChannelTypeGuildPrivateThread, discordgo.ChannelTypeGuildNewsThread:
		return platform + ":" + i.GuildID + ":" + x.Channel.ParentID, nil
	}
	return platform + ":" + i.GuildID + ":" + i.ChannelID, nil
}

// channelMention writes a channel key for people: a link to the channel, or "this DM".
func channelMention(channel string) string {
	parts := strings.Split(channel, ":")
	if len(parts) == 3 && parts[1] != "dm" {
		return "<#" + parts[2] + ">"
	}
	return "this DM"
}

func (a *Adapter) status(ctx context.Context, i *discordgo.Interaction, raw []byte, u string) *discordgo.InteractionResponse {
	_, sess, err := a.sessionHere(ctx, i.ChannelID)
	if err != nil && err != session.ErrNotFound {
		return tell(userMessage(a.log, err))
	}
	if sess == nil {
		channel, err := a.channelHere(ctx, i, raw)
		if err != nil {
			return tell(userMessage(a.log, err))
		}
		s, err := a.settings(ctx, channel)
		if err != nil {
			return tell(userMessage(a.log, fmt.Errorf("%w: %v", session.ErrStoreDown, err)))
		}
		return tell("No session here. Mention me with a request to start one.\n" + settingsLine(channel, s))
	}
	var b strings.Builder
	fmt.Fprintf(&b, "**Session** `%s` · %s · started by %s <t:%d:R>\n", sess.ID, stateWord(sess.State), mention(sess.Owner), sess.CreatedAt.Unix())
	fmt.Fprintf(&b, "Model **%s** · permission mode **%s**\n", or(sess.Model, "default"), or(sess.PermissionMode, "default"))
	fmt.Fprintf(&b, "%s · %s · %s of Claude's time\n", transcript.Turns(sess.Usage.Turns), transcript.Money(sess.Usage.CostUSD), transcript.Duration(sess.Usage.DurationMS))
	var row []discordgo.MessageComponent
	if linkOK(sess.PreviewURL) {
		row = append(row, discordgo.Button{Label: "Open preview", Style: discordgo.LinkButton, URL: sess.PreviewURL})
	}
	if a.cfg.CompanionLink != nil {
		if l := a.cfg.CompanionLink(sess.ID); linkOK(l) {
			row = append(row, discordgo.Button{Label: "Companion", Style: discordgo.LinkButton, URL: l})
		}
	}
	r := reply{content: strings.TrimSpace(b.String()), ephemeral: true}
	if len(row) > 0 {
		r.components = []discordgo.MessageComponent{discordgo.ActionsRow{Components: row}}
	}
	return now(r)
}

func stateWord(s session.State) string {
	return map[session.State]string{
		session.StateNew: "🆕 new", session.StateStarting: "🚀 starting", session.StateIdle: "🟢 idle",
		session.StateRunning: "⏳ running", session.StateStopped: "💤 stopped", session.StateFailed: "❌ failed",
		session.StateClosed: "🔒 closed",
	}[s]
}

func or(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func (a *Adapter) list(ctx context.Context, u string) *discordgo.InteractionResponse {
	if !a.sessions.IsAdmin(u) {
		return tell("🔒 Only admins can list every session. `/nightona status` shows this thread's.")
	}
	all, err := a.sessions.List(ctx)
	if err != nil {
		return tell(userMessage(a.log, err))
	}
	var mine []*session.Session
	for _, s := range all {
		if _, ok := parseKey(s.Thread); ok {
			mine = append(mine, s)
		}
	}
	if len(mine) == 0 {
		return tell("No sessions yet.")
	}
	slices.SortFunc(mine, func(x, y *session.Session) int { return y.UpdatedAt.Compare(x.UpdatedAt) })
	var b strings.Builder
	fmt.Fprintf(&b, "**%d sessions**, latest first:\n", len(mine))
	const show = 15
	for _, s := range mine[:min(len(mine), show)] {
		p, _ := parseKey(s.Thread)
		where := "<#" + p.ChannelID + ">"
		if p.GuildID == "" {
			where = "a DM"
		}
		fmt.Fprintf(&b, "%s %s · %s · %s · %s · <t:%d:R>\n", stateWord(s.State), where, mention(s.Owner),
			transcript.Turns(s.Usage.Turns), transcript.Money(s.Usage.CostUSD), s.UpdatedAt.Unix())
	}
	if len(mine) > show {
		fmt.Fprintf(&b, "-# and %d more.", len(mine)-show)
	}
	return tell(strings.TrimSpace(b.String()))
}

func (a *Adapter) usage(ctx context.Context, i *discordgo.Interaction, raw []byte, u, scope, day string) *discordgo.InteractionResponse {
	when := time.Now().UTC()
	if day != "" {
		t, err := time.Parse(time.DateOnly, day)
		if err != nil {
			return tell("⚠️ Give the day as YYYY-MM-DD, like " + when.Format(time.DateOnly) + ".")
		}
		when = t
	}
	var who, key string
	switch cmp.Or(scope, "me") {
	case "me":
		scope, key, who = "user", u, mention(u)
	case "channel":
		channel, err := a.channelHere(ctx, i, raw)
		if err != nil {
			return tell(userMessage(a.log, err))
		}
		scope, key, who = "channel", channel, channelMention(channel)
	case "all":
		if !a.sessions.IsAdmin(u) {
			return tell("🔒 Only admins can see everyone's usage.")
		}
		scope, who = "all", "everyone"
	default:
		return tell("⚠️ The scope is me, channel or all.")
	}
	us, err := a.sessions.Usage(ctx, scope, key, when)
	if err != nil {
		return tell(userMessage(a.log, err))
	}
	var b strings.Builder
	fmt.Fprintf(&b, "**Usage of %s on %s** (UTC)\n%s · %s · %s in, %s out tokens · %s of Claude's time",
		who, when.Format(time.DateOnly), transcript.Turns(us.Turns), transcript.Money(us.CostUSD), tokens(us.InputTokens), tokens(us.OutputTokens),
		transcript.Duration(us.DurationMS))
	if scope == "all" {
		for _, by := range []struct {
			scope, title string
			name         func(string) string
		}{{"user", "Top users", mention}, {"channel", "Top channels", channelName}} {
			all, err := a.sessions.UsageBy(ctx, by.scope, when)
			if err != nil {
				return tell(userMessage(a.log, err))
			}
			if top := session.ByCost(all, topUsage); len(top) > 0 {
				fmt.Fprintf(&b, "\n**%s**", by.title)
				for _, k := range top {
					fmt.Fprintf(&b, "\n- %s: %s · %s", by.name(k.Key), transcript.Turns(k.Usage.Turns), transcript.Money(k.Usage.CostUSD))
				}
			}
		}
	}
	return tell(b.String())
}

// topUsage is how many users and channels `/nightona usage scope:all` names.
const topUsage = 5

// channelName writes a channel key of any platform: <#id> for a Discord channel, "a DM" for
// a Discord DM, the key itself for another platform's.
func channelName(channel string) string {
	if strings.HasPrefix(channel, platform+":") {
		if m := channelMention(channel); m != "this DM" {
			return m
		}
		return "a DM"
	}
	return channel
}

func tokens(n int64) string {
	switch {
	case n >= 1_000_000:
		return fmt.Sprintf("%.1fM", float64(n)/1e6)
	case n >= 1000:
		return fmt.Sprintf("%.1fk", float64(n)/1e3)
	}
	return fmt.Sprint(n)
}

func settingsLine(channel string, s Settings) string {
	line := fmt.Sprintf("New sessions in %s start in permission mode **%s** with model **%s**.", channelMention(channel),
		or(s.PermissionMode, "default (the bot's)"), or(s.Model, "default (the bot's)"))
	if s.By != "" {
		line += fmt.Sprintf("\n-# Set by %s <t:%d:R>.", mention(s.By), s.At.Unix())
	}
	return line
}

func (a *Adapter) config(ctx context.Context, i *discordgo.Interaction, raw []byte, u, mode, model string) *discordgo.InteractionResponse {
	channel, err := a.channelHere(ctx, i, raw)
	if err != nil {
		return tell(userMessage(a.log, err))
	}
	s, err := a.settings(ctx, channel)
	if err != nil {
		return tell(userMessage(a.log, fmt.Errorf("%w: %v", session.ErrStoreDown, err)))
	}
	if mode == "" && model == "" {
		return tell(settingsLine(channel, s) + "\n-# Admins change them with `/nightona config permission_mode:… model:…`.")
	}
	if !a.sessions.IsAdmin(u) {
		return tell("🔒 Only admins can change this channel's settings.\n" + settingsLine(channel, s))
	}
	if mode != "" {
		if !slices.Contains(relay.PermissionModes, mode) {
			return tell("⚠️ The permission mode is one of " + strings.Join(relay.PermissionModes, ", ") + ".")
		}
		s.PermissionMode = mode
	}
	switch {
	case model == "default":
		s.Model = ""
	case model != "":
		if !relay.ValidModel(model) {
			return tell("⚠️ `" + strings.ReplaceAll(model, "`", "") + "` is not a model name: try sonnet, opus, haiku or a full name like claude-sonnet-4-5.")
		}
		s.Model = model
	}
	s.By, s.At = u, time.Now().UTC()
	if err := a.saveSettings(ctx, channel, s); err != nil {
		return tell(userMessage(a.log, fmt.Errorf("%w: %v", session.ErrStoreDown, err)))
	}
	a.log.Info("channel settings changed", "channel", channel, "by", u, "permission_mode", s.PermissionMode, "model", s.Model)
	return now(reply{content: "⚙️ " + settingsLine(channel, s) + "\n-# Sessions already running keep their own settings."})
}
