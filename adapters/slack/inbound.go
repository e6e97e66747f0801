package slack

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/nightona/nightona/session"
)

// Events: a mention starts a session in the message's thread, replies in a thread that has a
// session continue it, and direct messages do both. Bot messages and edits are ignored, and
// so are people who may not prompt, with a word to them alone.

// eventCallback is what the adapter reads of an Events API event_callback.
type eventCallback struct {
	Type    string `json:"type"`
	TeamID  string `json:"team_id"`
	EventID string `json:"event_id"`
	Event   struct {
		Type        string          `json:"type"`
		Subtype     string          `json:"subtype"`
		User        string          `json:"user"`
		Text        string          `json:"text"`
		TS          string          `json:"ts"`
		ThreadTS    string          `json:"thread_ts"`
		Channel     string          `json:"channel"`
		ChannelType string          `json:"channel_type"`
		BotID       string          `json:"bot_id"`
		UserTeam    string          `json:"user_team"`
		Edited      json.RawMessage `json:"edited"`
	} `json:"event"`
	Authorizations []struct {
		UserID string `json:"user_id"`
		IsBot  bool   `json:"is_bot"`
	} `json:"authorizations"`
}

// SlackEvent handles the body of an Events API event_callback. It is called once the
// delivery was acknowledged and de-duplicated, and may take its time.
func (a *Adapter) SlackEvent(ctx context.Context, body []byte) {
	var cb eventCallback
	if err := json.Unmarshal(body, &cb); err != nil || cb.Type != "event_callback" {
		a.metrics.events.WithLabelValues("event", "malformed").Inc()
		return
	}
	ev := cb.Event
	bot := a.botUserID(ctx)
	if bot == "" {
		for _, au := range cb.Authorizations {
			if au.IsBot {
				bot = au.UserID
			}
		}
	}
	th := thread{Team: cb.TeamID, Channel: ev.Channel, TS: ev.ThreadTS}
	if th.TS == "" {
		th.TS = ev.TS
	}
	ignore := func(why string) {
		a.metrics.events.WithLabelValues(ev.Type, "ignored").Inc()
		a.log.Debug("event ignored", "type", ev.Type, "subtype", ev.Subtype, "why", why)
	}
	switch {
	case ev.Type != "app_mention" && ev.Type != "message":
		ignore("not an event Nightona uses")
		return
	case ev.BotID != "" || ev.User == "" || ev.User == bot:
		ignore("a bot's message")
		return
	case ev.Subtype != "" && ev.Subtype != "file_share" && ev.Subtype != "thread_broadcast":
		ignore("an edit, a deletion or a notice")
		return
	case len(ev.Edited) > 0 && string(ev.Edited) != "null":
		ignore("an edited message")
		return
	case ev.Channel == "" || th.Team == "" || th.TS == "":
		ignore("no channel or thread")
		return
	}
	if ev.Type == "message" && ev.ChannelType != "im" {
		// In channels, a message counts only as a reply in a thread that has a session; one
		// that mentions the bot comes again as app_mention and is taken from there.
		if ev.ThreadTS == "" || ev.ThreadTS == ev.TS || (bot != "" && strings.Contains(ev.Text, "<@"+bot+">")) {
			ignore("not a reply to a session")
			return
		}
		if _, err := a.sessions.Session(ctx, th.key()); err != nil {
			if !errors.Is(err, session.ErrNotFound) {
				a.log.Warn("could not look up a thread's session", attrThread, th.key(), "err", err)
			}
			ignore("a thread without a session")
			return
		}
	}
	a.metrics.events.WithLabelValues(ev.Type, "prompt").Inc()
	a.prompt(ctx, th, ev.User, ev.UserTeam, cleanText(ev.Text, bot))
}

// prompt submits a person's message to the thread's session, or tells them why not.
func (a *Adapter) prompt(ctx context.Context, th thread, user, userTeam, text string) {
	if ok, why := a.mayPrompt(th.Team, user, userTeam); !ok {
		a.tell(ctx, th, user, why)
		return
	}
	settings, err := a.channelSettings(ctx, th.Team, th.Channel)
	if err != nil {
		a.log.Warn("could not read the channel's settings; using the defaults", "err", err)
	}
	sub, err := a.sessions.SubmitWith(ctx, th.key(), userKey(user), text, session.Settings{
		PermissionMode: settings.PermissionMode, Model: settings.Model,
	})
	if err != nil {
		if !knownError(err) {
			a.log.Error("could not submit a prompt", attrThread, th.key(), "err", err)
		}
		a.tell(ctx, th, user, userMessage(err))
		return
	}
	if sub.Queued {
		msg := "Got it. Claude is still on the turn before this one; yours comes next."
		if sub.Ahead > 0 {
			msg = fmt.Sprintf("Got it. %d %s ahead of yours; Claude takes them in order.", sub.Ahead, plural(int64(sub.Ahead), "prompt is", "prompts are"))
		}
		a.tell(ctx, th, user, msg)
	}
}

// tell shows a short message to one person in the thread.
func (a *Adapter) tell(ctx context.Context, th thread, user, text string) {
	if err := a.ephemeral(ctx, th, user, text); err != nil {
		a.log.Warn("could not send an ephemeral message", attrThread, th.key(), "err", err)
	}
}

// mayPrompt says whether user may prompt, and if not, why (in words for them).
func (a *Adapter) mayPrompt(team, user, userTeam string) (bool, string) {
	if userTeam != "" && userTeam != team {
		return false, "Sorry, Nightona takes prompts only from members of this workspace."
	}
	if len(a.cfg.Prompters) == 0 || a.sessions.IsAdmin(userKey(user)) {
		return true, ""
	}
	for _, p := range a.cfg.Prompters {
		if strings.TrimPrefix(p, "slack:") == user {
			return true, ""
		}
	}
	return false, "Sorry, you are not on the list of people who may prompt Nightona. An admin can add you."
}

// knownError reports whether err is one the session package says to tell users about.
func knownError(err error) bool {
	for _, e := range []error{session.ErrPromptTooLarge, session.ErrEmptyPrompt, session.ErrUnavailable,
		session.ErrStoreDown, session.ErrForbidden, session.ErrBadSetting, session.ErrNotFound, session.ErrNoSuchRequest} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// userMessage says what went wrong in words for the person who asked, without internals.
func userMessage(err error) string {
	detail := func(sentinel error) string {
		s := err.Error()
		if i := strings.Index(s, sentinel.Error()+": "); i >= 0 {
			return s[i+len(sentinel.Error())+2:]
		}
		return ""
	}
	switch {
	case errors.Is(err, session.ErrPromptTooLarge):
		return "Your message is too long for Claude (" + detail(session.ErrPromptTooLarge) + "). Shorten it or split it into several messages."
	case errors.Is(err, session.ErrEmptyPrompt):
		return "Tell me what to do after the mention, for example: `@Nightona add a dark mode toggle`."
	case errors.Is(err, session.ErrUnavailable):
		if d := detail(session.ErrUnavailable); d != "" {
			return "Nightona can't run prompts right now: " + d
		}
		return "Nightona can't run prompts right now. Try again in a minute."
	case errors.Is(err, session.ErrStoreDown):
		return "Nightona's storage is not answering, so your message was not taken. Try again in a minute."
	case errors.Is(err, session.ErrForbidden):
		return "Sorry, " + detail(session.ErrForbidden) + "."
	case errors.Is(err, session.ErrBadSetting):
		return "This channel's Nightona settings are not valid (" + detail(session.ErrBadSetting) + "). An admin can fix them with `/nightona config`."
	case errors.Is(err, session.ErrNotFound):
		return "There is no Nightona session there (any more)."
	case errors.Is(err, session.ErrNoSuchRequest):
		return "That request was already answered, or is no longer waiting."
	}
	return "Something went wrong on Nightona's side, so that did not work. Try again; if it keeps failing, the bot's logs say why."
}

var (
	slackLink    = regexp.MustCompile(`<([^<>|]+)(?:\|([^<>]*))?>`)
	slackUnquote = strings.NewReplacer("&lt;", "<", "&gt;", ">", "&amp;", "&")
)

// cleanText turns a Slack message into a prompt: the bot's mention goes, links and mentions
// become plain text, and Slack's escapes are undone.
func cleanText(s, bot string) string {
	if bot != "" {
		s = strings.ReplaceAll(s, "<@"+bot+">", "")
	}
	s = slackLink.ReplaceAllStringFunc(s, func(m string) string {
		sub := slackLink.FindStringSubmatch(m)
		target, label := sub[1], sub[2]
		switch {
		case strings.HasPrefix(target, "@"): // a user
			return target
		case strings.HasPrefix(target, "#"): // a channel
			if label != "" {
				return "#" + label
			}
			return target
		case strings.HasPrefix(target, "!"): // @here, @channel, dates
			if label != "" {
				return label
			}
			return "@" + strings.TrimPrefix(target, "!")
		case strings.HasPrefix(target, "mailto:"):
			return strings.TrimPrefix(target, "mailto:")
		}
		return target
	})
	return strings.TrimSpace(slackUnquote.Replace(s))
}

// channelSettings are what sessions started in a channel begin with, set by /nightona config.
type channelSettings struct {
	PermissionMode string    `json:"permission_mode,omitempty"`
	Model          string    `json:"model,omitempty"`
	By             string    `json:"by,omitempty"`
	At             time.Time `json:"at,omitzero"`
}

func settingsKey(team, channel string) string { return "slack:settings:" + team + ":" + channel }

func (a *Adapter) channelSettings(ctx context.Context, team, channel string) (channelSettings, error) {
	var s channelSettings
	b, err := a.store.Fetch(ctx, settingsKey(team, channel))
	if err != nil || b == nil {
		return s, err
	}
	err = json.Unmarshal(b, &s)
	return s, err
}

func (a *Adapter) saveChannelSettings(ctx context.Context, team, channel string, s channelSettings) error {
	b, _ := json.Marshal(s)
	return a.store.Put(ctx, settingsKey(team, channel), b, 0)
}
