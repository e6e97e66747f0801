package web

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"net/url"
	"strconv"
	"time"
)

// Link errors.
var (
	// ErrLinkExpired: the link was good but its time is up.
	ErrLinkExpired = errors.New("link expired")
	// ErrLinkInvalid: the link was not made by this bot (tampered with, or cut short).
	ErrLinkInvalid = errors.New("link invalid")
)

// Links makes and checks the signed, expiring links chat threads carry to companion pages.
// Every replica given the same secret makes and accepts the same links.
type Links struct {
	secret []byte
	base   string
	ttl    time.Duration
	now    func() time.Time
}

// NewLinks returns links under base (the bot's public URL) that last ttl.
func NewLinks(secret []byte, base string, ttl time.Duration) *Links {
	return &Links{secret: secret, base: base, ttl: ttl, now: time.Now}
}

// Session returns a link to the session's companion page.
func (l *Links) Session(id string) string {
	exp := strconv.FormatInt(l.now().Add(l.ttl).Unix(), 10)
	return l.base + "/s/" + url.PathEscape(id) + "?exp=" + exp + "&sig=" + l.sign("session", id, exp)
}

// CheckSession checks the exp and sig of a session link.
func (l *Links) CheckSession(id, exp, sig string) error {
	got, err := base64.RawURLEncoding.DecodeString(sig)
	if err != nil || !hmac.Equal(got, l.mac("session", id, exp)) {
		return ErrLinkInvalid
	}
	n, err := strconv.ParseInt(exp, 10, 64)
	if err != nil {
		return ErrLinkInvalid
	}
	if l.now().After(time.Unix(n, 0)) {
		return ErrLinkExpired
	}
	return nil
}

func (l *Links) sign(parts ...string) string {
	return base64.RawURLEncoding.EncodeToString(l.mac(parts...))
}

func (l *Links) mac(parts ...string) []byte {
	h := hmac.New(sha256.New, l.secret)
	for _, p := range parts {
		h.Write([]byte(p))
		h.Write([]byte{0})
	}
	return h.Sum(nil)
}
