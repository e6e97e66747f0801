package discord

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"log/slog"
	"strings"

	"github.com/nightona/nightona/session"
)

// errNotHere: a mention somewhere the bot cannot open a thread (a voice or forum channel).
var errNotHere = errors.New("not a text channel")

// userMessage words an error for the person whose action caused it. It never shows a stack
// trace, a token or an internal address: errors it does not know are logged with a reference
// the message gives.
func userMessage(log *slog.Logger, err error) string {
	detail := func(sentinel error) string {
		s := err.Error()
		if i := strings.Index(s, sentinel.Error()+": "); i >= 0 {
			return strings.TrimSpace(s[i+len(sentinel.Error())+2:])
		}
		return ""
	}
	switch {
	case errors.Is(err, session.ErrPromptTooLarge):
		return "⚠️ That prompt is too long for me (" + detail(session.ErrPromptTooLarge) + "). Shorten it, or split it over a few messages."
	case errors.Is(err, session.ErrEmptyPrompt):
		return "👋 Tell me what to do: mention me with a request, like `@Nightona add a dark mode toggle`."
	case errors.Is(err, session.ErrUnavailable):
		if d := detail(session.ErrUnavailable); d != "" {
			return "⚠️ I can't take prompts right now: " + d
		}
		return "⚠️ I can't take prompts right now. Try again in a minute."
	case errors.Is(err, session.ErrStoreDown):
		return "⚠️ My session store isn't answering, so I can't do that now. Try again in a minute."
	case errors.Is(err, session.ErrForbidden):
		if d := detail(session.ErrForbidden); d != "" {
			return "🔒 Sorry, " + d + "."
		}
		return "🔒 Sorry, only the person who started this session or an admin may do that."
	case errors.Is(err, session.ErrBadSetting):
		return "⚠️ " + upperFirst(detail(session.ErrBadSetting))
	case errors.Is(err, session.ErrNotFound):
		return "There's no Nightona session here. Mention me in a channel to start one."
	case errors.Is(err, session.ErrNoSuchRequest):
		return "That request was already answered, withdrawn or timed out."
	case errors.Is(err, errNotHere):
		return "⚠️ I can only work in text channels, their threads, and DMs."
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		return "⚠️ That took too long. Try again in a minute."
	}
	switch apiCode(err) {
	case codeMissingAccess, codeMissingPermissions:
		return "⚠️ I'm missing a permission here: I need View Channel, Send Messages, Create Public Threads and Send Messages in Threads."
	}
	ref := reference()
	log.Error("an error shown to a user by reference", "ref", ref, "err", err)
	return "⚠️ Something went wrong on my side (reference `" + ref + "` in the bot's log). Try again, or tell an admin."
}

func upperFirst(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}

func reference() string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
