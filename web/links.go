package web

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Link errors.
var (
	// ErrLinkExpired: the link was good but its time is up.
	ErrLinkExpired = errors.New("link expired")
	// ErrLinkInvalid: the link was not made by this bot (tampered with, or cut short).
	ErrLinkInvalid = errors.New("link invalid")
	// ErrLinkUsed: a one-time link that was used already.
	ErrLinkUsed = errors.New("link already used")
)

// DashboardLoginTTL is how long a dashboard login link lasts: it is sent to one admin, in
// private, to be clicked now.
const DashboardLoginTTL = 15 * time.Minute

// Once is what one-time links need of a shared store: Once reports true the first time it
// sees key (within ttl), on any replica, and false ever after. *redisstore.Store has it.
// Safe for concurrent use.
type Once interface {
	Once(ctx context.Context, key string, ttl time.Duration) (bool, error)
}

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
	return l.check(sig, exp, "session", id, exp)
}

// DashboardLogin returns a one-time link that logs user (an admin, as "<platform>:<id>") into
// the admin dashboard. It lasts DashboardLoginTTL and works once, on any replica. Send it to
// the admin privately: whoever opens it first is logged in as them.
func (l *Links) DashboardLogin(user string) string {
	exp := strconv.FormatInt(l.now().Add(DashboardLoginTTL).Unix(), 10)
	var b [16]byte
	_, _ = rand.Read(b[:]) // never fails: crypto/rand.Read crashes the program instead
	nonce := base64.RawURLEncoding.EncodeToString(b[:])
	q := url.Values{"user": {user}, "exp": {exp}, "nonce": {nonce}, "sig": {l.sign("dashboard-login", user, exp, nonce)}}
	return l.base + "/admin/login?" + q.Encode()
}

// UseDashboardLogin checks a dashboard login link's query and uses it up: it returns the
// user the link logs in, or ErrLinkInvalid, ErrLinkExpired or ErrLinkUsed. Other errors are
// the store's.
func (l *Links) UseDashboardLogin(ctx context.Context, once Once, q url.Values) (string, error) {
	user, exp, nonce := q.Get("user"), q.Get("exp"), q.Get("nonce")
	if err := l.check(q.Get("sig"), exp, "dashboard-login", user, exp, nonce); err != nil {
		return "", err
	}
	n, _ := strconv.ParseInt(exp, 10, 64)
	first, err := once.Once(ctx, "web:dashboard-login:"+nonce, time.Unix(n, 0).Sub(l.now())+time.Minute)
	if err != nil {
		return "", fmt.Errorf("use a dashboard login link: %w", err)
	}
	if !first {
		return "", ErrLinkUsed
	}
	return user, nil
}

// A pass is what a browser keeps, in a cookie, after it opened a link: who or what it is for
// and until when, signed. Session pages and the dashboard take passes instead of links so that
// their API and WebSocket never see the link, and the address bar loses the signature.
func (l *Links) pass(purpose, subject string, until time.Time) string {
	exp := strconv.FormatInt(until.Unix(), 10)
	return base64.RawURLEncoding.EncodeToString([]byte(subject)) + "." + exp + "." + l.sign("pass", purpose, subject, exp)
}

// checkPass returns the subject of a pass for purpose, or ErrLinkInvalid / ErrLinkExpired.
func (l *Links) checkPass(purpose, pass string) (string, error) {
	parts := strings.Split(pass, ".")
	if len(parts) != 3 {
		return "", ErrLinkInvalid
	}
	subject, err := base64.RawURLEncoding.DecodeString(parts[0])
	if err != nil {
		return "", ErrLinkInvalid
	}
	if err := l.check(parts[2], parts[1], "pass", purpose, string(subject), parts[1]); err != nil {
		return "", err
	}
	return string(subject), nil
}

// check verifies sig over parts and that exp (Unix seconds) has not passed.
func (l *Links) check(sig, exp string, parts ...string) error {
	got, err := base64.RawURLEncoding.DecodeString(sig)
	if err != nil || !hmac.Equal(got, l.mac(parts...)) {
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
