package web

import (
	"errors"
	"net/url"
	"strings"
	"testing"
	"time"
)

func TestSessionLinks(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	l := NewLinks([]byte("0123456789abcdef0123456789abcdef"), "https://bot.example", time.Hour)
	l.now = func() time.Time { return now }
	link := l.Session("ses_1")
	u, err := url.Parse(link)
	if err != nil || !strings.HasPrefix(link, "https://bot.example/s/ses_1?") {
		t.Fatalf("link %q", link)
	}
	exp, sig := u.Query().Get("exp"), u.Query().Get("sig")
	if err := l.CheckSession("ses_1", exp, sig); err != nil {
		t.Fatalf("a fresh link: %v", err)
	}
	for name, c := range map[string][3]string{
		"another session": {"ses_2", exp, sig},
		"a later expiry":  {"ses_1", "1900000000", sig},
		"a changed sig":   {"ses_1", exp, strings.ToUpper(sig)},
		"no sig":          {"ses_1", exp, ""},
	} {
		if err := l.CheckSession(c[0], c[1], c[2]); !errors.Is(err, ErrLinkInvalid) {
			t.Errorf("%s: %v, want ErrLinkInvalid", name, err)
		}
	}
	other := NewLinks([]byte("another secret, another bot.....!"), "https://bot.example", time.Hour)
	if err := other.CheckSession("ses_1", exp, sig); !errors.Is(err, ErrLinkInvalid) {
		t.Errorf("another secret accepted the link: %v", err)
	}
	now = now.Add(time.Hour + time.Second)
	if err := l.CheckSession("ses_1", exp, sig); !errors.Is(err, ErrLinkExpired) {
		t.Fatalf("an old link: %v, want ErrLinkExpired", err)
	}
}
