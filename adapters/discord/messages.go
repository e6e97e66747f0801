package discord

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"regexp"
	"strings"
	"unicode/utf8"

	"github.com/bwmarrin/discordgo"

	"github.com/nightona/nightona/session"
)

// Message types the bot reads: what people type, and their replies.
var promptTypes = map[discordgo.MessageType]bool{discordgo.MessageTypeDefault: true, discordgo.MessageTypeReply: true}

// onMessage takes a message from the Gateway: a mention of the bot in a channel opens a thread
// from it and starts a session there; a message in a thread with a session, or in a DM,
// continues it. Everything else is none of the bot's business.
func (a *Adapter) onMessage(ctx context.Context, m *discordgo.Message) {
	_, botID := a.ids()
	if m.Author == nil || m.Author.Bot || m.Author.ID == botID || m.WebhookID != "" || !promptTypes[m.Type] {
		return
	}
	dm := m.GuildID == ""
	mentioned := false
	for _, u := range m.Mentions {
		if u != nil && u.ID == botID {
			mentioned = true
		}
	}
	log := a.log.With("channel", m.ChannelID, "message", m.ID)
	thread := ""
	if dm {
		thread = dmKey(m.ChannelID)
	} else {
		var err error
		if thread, err = a.threadOf(ctx, m.ChannelID); err != nil {
			log.Warn("could not look up the channel's session", "err", err)
			if mentioned {
				a.reply(ctx, m, session.ErrStoreDown)
			}
			return
		}
		if thread == "" && !mentioned {
			return // a message between people
		}
	}
	// Every replica holding a Gateway session gets every message: the first takes it.
	if first, err := a.store.Once(ctx, keyMessage+m.ID, deliveryTTL); err == nil && !first {
		return
	}
	text := promptText(m, botID)
	if strings.TrimSpace(text) == "" {
		if mentioned {
			a.reply(ctx, m, session.ErrEmptyPrompt)
		}
		return
	}
	if thread == "" {
		var err error
		if thread, err = a.openThread(ctx, m, text); err != nil {
			log.Warn("could not open a thread for a mention", "err", err)
			a.reply(ctx, m, err)
			return
		}
	}
	if err := a.remember(ctx, placeOf(thread), thread); err != nil {
		log.Warn("could not remember the thread's session", "thread", thread, "err", err)
	}
	sub, err := a.sessions.SubmitWith(ctx, thread, user(m.Author.ID), text, a.sessionSettings(ctx, thread))
	if err != nil {
		log.Info("prompt refused", "thread", thread, "err", err)
		p, _ := parseKey(thread)
		if p.ChannelID != m.ChannelID {
			// The thread is new: say it there, where the session would have been.
			a.say(ctx, p.ChannelID, err)
			return
		}
		a.reply(ctx, m, err)
		return
	}
	log.Info("prompt submitted", "thread", thread, "session_id", sub.Session.ID, "queued", sub.Queued)
}

func placeOf(thread string) string {
	p, _ := parseKey(thread)
	return p.ChannelID
}

// openThread makes the session's place for a mention: a thread started from the message in a
// text channel, or the thread the mention is in.
func (a *Adapter) openThread(ctx context.Context, m *discordgo.Message, text string) (string, error) {
	ch, err := a.api.channel(ctx, m.ChannelID)
	if err != nil {
		return "", err
	}
	if ch.IsThread() {
		return threadKey(m.GuildID, ch.ParentID, ch.ID), nil
	}
	if ch.Type != discordgo.ChannelTypeGuildText && ch.Type != discordgo.ChannelTypeGuildNews {
		return "", errNotHere
	}
	th, err := a.api.startThread(ctx, m.ChannelID, m.ID, threadName(text))
	if apiCode(err) == codeThreadExists {
		// A retry after a lost answer, or another replica: the thread has the message's id.
		th, err = a.api.channel(ctx, m.ID)
	}
	if err != nil {
		return "", err
	}
	return threadKey(m.GuildID, m.ChannelID, th.ID), nil
}

var mentionRE = regexp.MustCompile(`<@!?(\d+)>`)

// promptText is what a message asks of Claude: its text without the bot's mention, with the
// links of its attachments.
func promptText(m *discordgo.Message, botID string) string {
	text := mentionRE.ReplaceAllStringFunc(m.Content, func(s string) string {
		if mentionRE.FindStringSubmatch(s)[1] == botID {
			return ""
		}
		return s
	})
	text = strings.TrimSpace(text)
	for _, at := range m.Attachments {
		if at != nil && at.URL != "" {
			text += "\n\nAttached: " + at.Filename + " " + at.URL
		}
	}
	return strings.TrimSpace(text)
}

// threadName names a thread after its first prompt: its first line, within Discord's 100
// characters.
func threadName(text string) string {
	name := strings.TrimSpace(mentionRE.ReplaceAllString(text, ""))
	if i := strings.IndexByte(name, '\n'); i >= 0 {
		name = strings.TrimSpace(name[:i])
	}
	if utf8.RuneCountInString(name) > 90 {
		r := []rune(name)
		name = strings.TrimSpace(string(r[:89])) + "…"
	}
	if name == "" {
		name = "Nightona session"
	}
	return name
}

// reply answers a message with what went wrong, as a reply to it.
func (a *Adapter) reply(ctx context.Context, m *discordgo.Message, err error) {
	text := userMessage(a.log, err)
	fail := false
	_, sendErr := a.api.send(ctx, m.ChannelID, &message{
		Content: &text, AllowedMentions: noMentions,
		Reference: &discordgo.MessageReference{MessageID: m.ID, ChannelID: m.ChannelID, GuildID: m.GuildID, FailIfNotExists: &fail},
		Nonce:     nonce("reply", m.ID), EnforceNonce: true,
	})
	if sendErr != nil {
		a.log.Warn("could not tell a user what went wrong", "channel", m.ChannelID, "err", sendErr, "problem", err)
	}
}

// say posts what went wrong in a channel.
func (a *Adapter) say(ctx context.Context, channelID string, err error) {
	text := userMessage(a.log, err)
	if _, sendErr := a.api.send(ctx, channelID, &message{Content: &text, AllowedMentions: noMentions}); sendErr != nil {
		a.log.Warn("could not tell a user what went wrong", "channel", channelID, "err", sendErr, "problem", err)
	}
}

// nonce makes a message nonce (at most 25 characters) from parts: the same parts give the
// same nonce, so a retried post is recognised.
func nonce(parts ...string) string {
	h := sha256.Sum256([]byte(strings.Join(parts, "\x00")))
	return hex.EncodeToString(h[:])[:25]
}

// onThreadDeleted closes the session of a thread someone deleted: its sandbox goes; its record
// and log stay for the bot's retention time.
func (a *Adapter) onThreadDeleted(ctx context.Context, channelID string) {
	thread, err := a.threadOf(ctx, channelID)
	if err != nil || thread == "" {
		return
	}
	if first, err := a.store.Once(ctx, keyMessage+"thread-delete:"+channelID, deliveryTTL); err == nil && !first {
		return
	}
	sess, err := a.sessions.Session(ctx, thread)
	if err != nil {
		return
	}
	if err := a.sessions.Close(ctx, thread, sess.Owner); err != nil {
		a.log.Warn("could not close the session of a deleted thread", "thread", thread, "err", err)
		return
	}
	a.log.Info("the thread was deleted; its session is closed", "thread", thread, "session_id", sess.ID)
}
