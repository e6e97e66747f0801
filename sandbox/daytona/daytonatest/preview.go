package daytonatest

import (
	"fmt"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// servePreview reverse-proxies <URL>/preview/<sandboxId>/<port>/... and
// <URL>/preview/signed/<token>/... to 127.0.0.1:<port>, HTTP and WebSocket alike. Daytona
// serves previews on https://<port>-<sandboxId>.<proxy domain>; the fake puts sandbox and
// port in the path instead, and strips them before proxying.
func (s *Server) servePreview(w http.ResponseWriter, r *http.Request) {
	rest := strings.TrimPrefix(r.URL.Path, "/preview/")
	var (
		sb   *sandbox
		port int
		tail string
	)
	if tok, ok := strings.CutPrefix(rest, "signed/"); ok {
		tok, tail, _ = strings.Cut(tok, "/")
		s.mu.Lock()
		su := s.signed[tok]
		if su != nil && time.Now().Before(su.expires) {
			sb, port = s.sandboxes[su.sandboxID], su.port
		}
		s.mu.Unlock()
		if sb == nil {
			s.previewDenied(w, r, tok, "unauthorized: authentication failed: Invalid or expired token")
			return
		}
	} else {
		id, after, _ := strings.Cut(rest, "/")
		rawPort, t, _ := strings.Cut(after, "/")
		tail = t
		p, err := strconv.Atoi(rawPort)
		if err != nil || p < 1 || p > 65535 {
			toolboxError(w, r, r.URL.Path, http.StatusBadRequest, fmt.Sprintf("bad request: invalid port '%s': must be numeric", rawPort))
			return
		}
		port = p
		s.mu.Lock()
		sb = s.sandboxes[id]
		public, token := false, ""
		if sb != nil {
			public, token = sb.public, sb.authToken
		}
		s.mu.Unlock()
		if sb == nil && !s.cfg.PreviewAuthRedirect {
			// Nothing to authenticate against and nothing to proxy to: like a stopped
			// sandbox, not like a wrong token (the app behind it may answer 401 itself).
			toolboxError(w, r, r.URL.Path, http.StatusBadGateway, "bad gateway: no sandbox "+id)
			return
		}
		if !public {
			if msg := s.authenticate(r, sb != nil, token); msg != "" {
				s.previewDenied(w, r, id, msg)
				return
			}
		}
	}
	s.mu.Lock()
	started := sb.state == stateStarted && s.sandboxes[sb.id] == sb
	if started {
		sb.lastActivity = time.Now()
	}
	s.mu.Unlock()
	if !started {
		toolboxError(w, r, r.URL.Path, http.StatusBadGateway, "bad gateway: sandbox "+sb.id+" is not started")
		return
	}
	target := fmt.Sprintf("127.0.0.1:%d", port)
	proxy := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out.URL.Scheme = "http"
			pr.Out.URL.Host = target
			pr.Out.URL.Path = "/" + tail
			pr.Out.URL.RawPath = ""
			pr.Out.Host = target
			pr.Out.Header.Set("X-Forwarded-Host", r.Host)
			pr.SetXForwarded()
		},
		Transport: s.proxy,
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			toolboxError(w, r, r.URL.Path, http.StatusBadGateway, "bad gateway: "+err.Error())
		},
	}
	proxy.ServeHTTP(w, r)
}

// previewDenied answers a preview request that failed authentication: 401 with the proxy's
// error body, or, with Config.PreviewAuthRedirect, what Daytona's proxy really does: a 307
// to its login page (which answers 200 with HTML, as an identity provider's page would).
func (s *Server) previewDenied(w http.ResponseWriter, r *http.Request, idOrToken, msg string) {
	if !s.cfg.PreviewAuthRedirect {
		toolboxError(w, r, r.URL.Path, http.StatusUnauthorized, msg)
		return
	}
	http.Redirect(w, r, s.URL+previewLoginPath+"?sandbox="+url.QueryEscape(idOrToken), http.StatusTemporaryRedirect)
}

// previewLoginPath stands for the identity provider's login page the proxy redirects to.
const previewLoginPath = "/preview-login"

// servePreviewLogin answers the login page a denied preview request is redirected to.
func servePreviewLogin(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	_, _ = w.Write([]byte("<!doctype html><title>Sign in</title><p>daytonatest: the preview proxy sent you to log in.</p>\n"))
}
