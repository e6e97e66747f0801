// Package web serves Nightona's browser side: the local chat console (a chat surface of its
// own when no Slack or Discord is configured), the session pages that chat threads link to
// (a live transcript beside the app's preview, reached by signed, expiring links), and the
// admin dashboard (reached by one-time login links, or from the bot's own machine). Its
// assets are embedded, so the bot needs no build step.
package web

import (
	"embed"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"log/slog"
	"mime"
	"net"
	"net/http"
	"strings"

	"github.com/go-chi/chi/v5"

	"github.com/nightona/nightona/session"
)

//go:embed static
var static embed.FS

// assets are the pages' scripts, styles and HTML.
func assets() fs.FS {
	sub, err := fs.Sub(static, "static")
	if err != nil {
		panic(err) // the folder is embedded above
	}
	return sub
}

// MountAssets serves the pages' scripts and styles under /assets/. They hold no data, so they
// need no login: the session page's reviewers load them as the console does.
func MountAssets(r chi.Router) {
	r.Handle("/assets/*", http.StripPrefix("/assets/", http.FileServerFS(assets())))
}

// servePage serves one of the embedded HTML pages with the headers every page gets.
func servePage(w http.ResponseWriter, r *http.Request, name string) {
	pageHeaders(w)
	w.Header().Set("Cache-Control", "no-cache")
	http.ServeFileFS(w, r, assets(), name)
}

// pageHeaders keeps pages from being framed by other sites, from running anything but their
// own scripts, and from telling the preview's site which page framed it (its URL may carry a
// signature).
func pageHeaders(w http.ResponseWriter) {
	h := w.Header()
	h.Set("Content-Security-Policy", "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; frame-src http: https:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")
	h.Set("X-Frame-Options", "DENY")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
}

// isLocal reports whether the request comes from this machine and names it by a loopback
// host (a foreign site cannot, even through DNS rebinding).
func isLocal(r *http.Request) bool {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return false
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return false
	}
	name := r.Host
	if h, _, err := net.SplitHostPort(r.Host); err == nil {
		name = h
	}
	name = strings.TrimSuffix(strings.ToLower(name), ".")
	if name == "localhost" || strings.HasSuffix(name, ".localhost") {
		return true
	}
	ip := net.ParseIP(strings.Trim(name, "[]"))
	return ip != nil && ip.IsLoopback()
}

// apiError is an error with the status and code the API answers with.
type apiError struct {
	status int
	code   string
	msg    string
}

func (e *apiError) Error() string { return e.msg }

// handle adapts a handler that returns an error; errors are translated to JSON here, once.
func handle(log *slog.Logger, h func(http.ResponseWriter, *http.Request) error) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		err := h(w, r)
		if err == nil {
			return
		}
		var ae *apiError
		switch {
		case errors.As(err, &ae):
		case errors.Is(err, session.ErrPromptTooLarge):
			ae = &apiError{http.StatusRequestEntityTooLarge, "prompt_too_large", "Your prompt is too long: " + strings.TrimPrefix(err.Error(), session.ErrPromptTooLarge.Error()+": ") + ". Shorten it or split it into several messages."}
		case errors.Is(err, session.ErrEmptyPrompt):
			ae = &apiError{http.StatusBadRequest, "empty_prompt", "The prompt is empty."}
		case errors.Is(err, session.ErrBadSetting):
			ae = &apiError{http.StatusBadRequest, "bad_setting", strings.TrimPrefix(err.Error(), session.ErrBadSetting.Error()+": ")}
		case errors.Is(err, session.ErrStoreDown):
			ae = &apiError{http.StatusServiceUnavailable, "store_down", "Nightona can't reach its session store (Redis) right now, so this was not done. It usually comes back within a minute: try again then."}
		case errors.Is(err, session.ErrUnavailable):
			ae = &apiError{http.StatusServiceUnavailable, "unavailable", strings.TrimPrefix(err.Error(), session.ErrUnavailable.Error()+": ")}
		case errors.Is(err, session.ErrForbidden):
			ae = &apiError{http.StatusForbidden, "forbidden", strings.TrimPrefix(err.Error(), session.ErrForbidden.Error()+": ")}
		case errors.Is(err, session.ErrNoSuchRequest):
			ae = &apiError{http.StatusConflict, "no_such_request", "This permission request was already answered, withdrawn or timed out."}
		case errors.Is(err, session.ErrNotFound):
			ae = &apiError{http.StatusNotFound, "not_found", "This thread has no session."}
		default:
			log.Error("console request failed", "method", r.Method, "path", r.URL.Path, "err", err)
			ae = &apiError{http.StatusInternalServerError, "internal", "Something went wrong on the bot's side; its log says what. Try again in a moment."}
		}
		writeJSON(w, ae.status, map[string]string{"error": ae.msg, "code": ae.code})
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// decodeBody reads a JSON body. Requiring the JSON content type keeps other sites out: a
// cross-site form cannot send it without a CORS preflight, which the console never allows.
func decodeBody(r *http.Request, v any) error {
	mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if mt != "application/json" {
		return &apiError{http.StatusUnsupportedMediaType, "bad_request", "Send JSON with Content-Type: application/json."}
	}
	body := http.MaxBytesReader(nil, r.Body, 4<<20)
	if err := json.NewDecoder(body).Decode(v); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return &apiError{http.StatusRequestEntityTooLarge, "prompt_too_large", "The request is over 4 MiB."}
		}
		if errors.Is(err, io.EOF) {
			return nil
		}
		return &apiError{http.StatusBadRequest, "bad_request", "The request body is not valid JSON."}
	}
	return nil
}
