package web

import (
	"errors"
	"html/template"
	"net/http"
)

// notice is a page that says why there is nothing to show, and what to do about it.
type notice struct {
	Status int
	Title  string
	Text   string
	Hint   string
}

var noticePage = template.Must(template.New("notice").Parse(`<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="color-scheme" content="light dark">
<meta name="robots" content="noindex">
<title>{{.Title}} · Nightona</title>
<link rel="stylesheet" href="/assets/base.css">
<link rel="stylesheet" href="/assets/notice.css">
</head>
<body>
<main class="notice" data-status="{{.Status}}">
  <div class="brand"><span class="brand-mark" aria-hidden="true"><svg viewBox="0 0 24 24"><path d="M15.5 4.5a7.5 7.5 0 1 0 4 10.2 6.2 6.2 0 0 1-4-10.2z"/></svg></span><span class="brand-name">Nightona</span></div>
  <h1 class="notice-title">{{.Title}}</h1>
  <p class="notice-text">{{.Text}}</p>
  {{if .Hint}}<p class="notice-hint">{{.Hint}}</p>{{end}}
</main>
</body>
</html>
`))

// showNotice writes n as an HTML page with its status.
func showNotice(w http.ResponseWriter, n notice) {
	pageHeaders(w)
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(n.Status)
	_ = noticePage.Execute(w, n)
}

// linkRefused says why a link does not open anything: 410 when it expired, 403 otherwise.
func linkRefused(w http.ResponseWriter, err error) {
	switch {
	case errors.Is(err, ErrLinkExpired):
		showNotice(w, notice{Status: http.StatusGone, Title: "This link has expired",
			Text: "Links to session pages last a limited time, and this one is past it.",
			Hint: "Ask for a fresh one in the chat thread: the bot posts a new link with its next message there."})
	case errors.Is(err, ErrLinkUsed):
		showNotice(w, notice{Status: http.StatusGone, Title: "This link was already used",
			Text: "Dashboard login links work once, and this one has been opened before.",
			Hint: "Ask the bot for a new one with /nightona dashboard."})
	default:
		showNotice(w, notice{Status: http.StatusForbidden, Title: "This link is not valid",
			Text: "The link is incomplete or has been changed, so it opens nothing.",
			Hint: "Copy the whole link from the chat again, or ask for a fresh one there."})
	}
}
