package discord

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/nightona/nightona/session"
)

func TestUserMessage(t *testing.T) {
	var logged bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logged, nil))
	cases := []struct {
		err  error
		want string
	}{
		{fmt.Errorf("%w: it is 40000 bytes and the limit is 32768 bytes", session.ErrPromptTooLarge), "too long for me (it is 40000 bytes and the limit is 32768 bytes)"},
		{session.ErrEmptyPrompt, "Tell me what to do"},
		{fmt.Errorf("%w: the Claude Code CLI is not installed", session.ErrUnavailable), "can't take prompts right now: the Claude Code CLI is not installed"},
		{fmt.Errorf("submit prompt: %w", session.ErrStoreDown), "store isn't answering"},
		{fmt.Errorf("%w: only the person who started this session or an admin may stop it", session.ErrForbidden), "Sorry, only the person who started this session or an admin may stop it."},
		{fmt.Errorf("%w: unknown permission mode \"yolo\"", session.ErrBadSetting), "Unknown permission mode"},
		{session.ErrNotFound, "no Nightona session here"},
		{session.ErrNoSuchRequest, "already answered"},
		{&APIError{Status: 403, Code: codeMissingPermissions, Message: "Missing Permissions"}, "missing a permission"},
		{errNotHere, "text channels"},
	}
	for _, c := range cases {
		if got := userMessage(log, c.err); !strings.Contains(got, c.want) {
			t.Errorf("userMessage(%v) = %q, want it to say %q", c.err, got, c.want)
		}
	}
	// An error nobody planned for shows a reference, not its text; the log has the text.
	secret := errors.New("dial tcp 10.0.0.7:6379: token=abc123 refused")
	got := userMessage(log, secret)
	if strings.Contains(got, "10.0.0.7") || strings.Contains(got, "abc123") || !strings.Contains(got, "reference `") {
		t.Fatalf("an unknown error shown as %q", got)
	}
	ref := got[strings.Index(got, "`")+1:]
	ref = ref[:strings.Index(ref, "`")]
	if !strings.Contains(logged.String(), ref) || !strings.Contains(logged.String(), "10.0.0.7") {
		t.Fatalf("the log does not tie reference %s to the error: %s", ref, logged.String())
	}
}
