package daytona

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/nightona/nightona/sandbox"
)

// APIError is a request Daytona (its API or a sandbox's toolbox) refused or did not answer. It
// unwraps to the sandbox sentinel error it amounts to, when there is one.
type APIError struct {
	// Op names what was being done ("create sandbox", "start sandbox 1234").
	Op string
	// StatusCode is the HTTP status, 0 when no answer came.
	StatusCode int
	// Message is Daytona's own explanation, or the transport error.
	Message string
	kind    error
}

func (e *APIError) Error() string {
	var b strings.Builder
	b.WriteString("daytona: ")
	b.WriteString(e.Op)
	b.WriteString(": ")
	if e.kind != nil {
		b.WriteString(e.kind.Error())
		if e.Message != "" {
			b.WriteString(": ")
		}
	}
	b.WriteString(e.Message)
	if e.StatusCode != 0 {
		fmt.Fprintf(&b, " (HTTP %d)", e.StatusCode)
	}
	return b.String()
}

// Unwrap returns the sandbox sentinel error (sandbox.ErrQuota, ...) or nil.
func (e *APIError) Unwrap() error { return e.kind }

// retryMode says when a request may be sent again.
type retryMode int

const (
	// retrySafe: the request may be repeated whatever became of the last attempt (reads,
	// replacing writes, deletes): retry on transport errors, 429 and 5xx.
	retrySafe retryMode = iota
	// retryUnsent: the request must not be repeated if the server may have acted on it (POST
	// /sandbox): retry only when it clearly did not, that is when no connection was made, or
	// it answered 429 or 503 (refused before doing anything).
	retryUnsent
)

// request is one call of the Daytona API or a toolbox.
type request struct {
	op     string
	method string
	url    string
	query  url.Values
	json   any                        // body, encoded as JSON
	body   func() (io.Reader, string) // body and content type, made afresh for every attempt
	header http.Header
	mode   retryMode
	// timeout bounds one attempt (default Config.RequestTimeout).
	timeout time.Duration
}

// response is what came back with a 2xx status.
type response struct {
	status int
	header http.Header
	body   []byte
}

// client sends requests with the API key, retries what may be retried and turns failures into
// APIErrors.
type client struct {
	http    *http.Client
	key     string
	log     *slog.Logger
	retries int
	minWait time.Duration
	maxWait time.Duration
	timeout time.Duration
}

// maxBody bounds what is read of a response: the largest thing we download is a log tail or a
// token file, and an endless body must not exhaust the bot's memory.
const maxBody = 16 << 20

func (c *client) do(ctx context.Context, r request) (*response, error) {
	var last error
	for attempt := 0; ; attempt++ {
		resp, again, wait, err := c.once(ctx, r)
		if err == nil {
			return resp, nil
		}
		last = err
		if !again || attempt >= c.retries {
			return nil, last
		}
		if wait <= 0 {
			wait = c.backoff(attempt)
		}
		if dl, ok := ctx.Deadline(); ok && time.Until(dl) < wait {
			return nil, last // waiting would outlast the caller: say why now
		}
		c.log.Debug("retrying daytona request", "op", r.op, "attempt", attempt+1, "wait", wait, "err", err)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, last
		case <-t.C:
		}
	}
}

// backoff is exponential with full jitter, so replicas that failed together do not retry
// together.
func (c *client) backoff(attempt int) time.Duration {
	d := c.minWait << attempt
	if d > c.maxWait || d <= 0 {
		d = c.maxWait
	}
	return d/2 + rand.N(d/2+1)
}

// once sends one attempt. again says whether a retry may help; wait is what the server asked
// for (Retry-After), or 0.
func (c *client) once(ctx context.Context, r request) (resp *response, again bool, wait time.Duration, err error) {
	timeout := r.timeout
	if timeout <= 0 {
		timeout = c.timeout
	}
	actx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	u := r.url
	if len(r.query) > 0 {
		u += "?" + r.query.Encode()
	}
	var body io.Reader
	ctype := ""
	switch {
	case r.json != nil:
		b, jerr := json.Marshal(r.json)
		if jerr != nil {
			return nil, false, 0, &APIError{Op: r.op, Message: jerr.Error()}
		}
		body, ctype = bytes.NewReader(b), "application/json"
	case r.body != nil:
		body, ctype = r.body()
	}
	req, err := http.NewRequestWithContext(actx, r.method, u, body)
	if err != nil {
		return nil, false, 0, &APIError{Op: r.op, Message: err.Error()}
	}
	for k, v := range r.header {
		req.Header[k] = v
	}
	req.Header.Set("Authorization", "Bearer "+c.key)
	req.Header.Set("Accept", "application/json")
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	hr, err := c.http.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil, false, 0, c.transportError(r.op, ctx.Err())
		}
		unsent := notSent(err)
		return nil, r.mode == retrySafe || unsent, 0, c.transportError(r.op, err)
	}
	defer hr.Body.Close()
	data, rerr := io.ReadAll(io.LimitReader(hr.Body, maxBody))
	if hr.StatusCode >= 200 && hr.StatusCode < 300 {
		if rerr != nil {
			// The server acted; only what it said got lost. A retry is safe only for safe calls.
			return nil, r.mode == retrySafe, 0, c.transportError(r.op, rerr)
		}
		return &response{status: hr.StatusCode, header: hr.Header, body: data}, false, 0, nil
	}
	apiErr := c.statusError(r.op, hr.StatusCode, data)
	switch {
	case hr.StatusCode == http.StatusTooManyRequests:
		// Quota refusals come as 403 or 400 on Daytona; a 429 is rate limiting and passes.
		return nil, !errors.Is(apiErr, sandbox.ErrQuota), retryAfter(hr.Header), apiErr
	case hr.StatusCode == http.StatusServiceUnavailable:
		return nil, true, retryAfter(hr.Header), apiErr
	case hr.StatusCode >= 500:
		return nil, r.mode == retrySafe, retryAfter(hr.Header), apiErr
	}
	return nil, false, 0, apiErr
}

// maxRetryAfter caps how long a Retry-After may make us wait between two attempts: beyond it
// the caller is better served by the error.
const maxRetryAfter = 30 * time.Second

func retryAfter(h http.Header) time.Duration {
	v := strings.TrimSpace(h.Get("Retry-After"))
	if v == "" {
		return 0
	}
	var d time.Duration
	if s, err := strconv.Atoi(v); err == nil {
		d = time.Duration(s) * time.Second
	} else if t, err := http.ParseTime(v); err == nil {
		d = time.Until(t)
	}
	if d <= 0 {
		return 0
	}
	return min(d, maxRetryAfter)
}

// notSent reports whether err means the request never reached the server, so that even a
// request that must not be repeated can be sent again.
func notSent(err error) bool {
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) {
		return true
	}
	var opErr *net.OpError
	return errors.As(err, &opErr) && opErr.Op == "dial"
}

func (c *client) transportError(op string, err error) error {
	if errors.Is(err, context.Canceled) {
		return &APIError{Op: op, Message: "cancelled", kind: context.Canceled}
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return &APIError{Op: op, Message: "no answer in time", kind: context.DeadlineExceeded}
	}
	return &APIError{Op: op, Message: "Daytona is unreachable: " + c.redact(err.Error()), kind: sandbox.ErrUnavailable}
}

// statusError turns an error answer into an APIError that names the sentinel it amounts to.
func (c *client) statusError(op string, status int, body []byte) *APIError {
	msg := c.redact(errorMessage(body))
	if msg == "" {
		msg = http.StatusText(status)
	}
	e := &APIError{Op: op, StatusCode: status, Message: msg}
	lower := strings.ToLower(msg)
	switch {
	case isQuota(lower) && status != http.StatusNotFound:
		e.kind = sandbox.ErrQuota
	case isSnapshotMissing(lower) && (status == http.StatusBadRequest || status == http.StatusNotFound || status == http.StatusUnprocessableEntity):
		e.kind = sandbox.ErrSnapshotMissing
	case status == http.StatusNotFound:
		e.kind = sandbox.ErrNotFound
	case status == http.StatusUnauthorized:
		e.kind = sandbox.ErrUnavailable
		e.Message = "Daytona refused the API key (check DAYTONA_API_KEY): " + msg
	case status == http.StatusForbidden:
		e.kind = sandbox.ErrUnavailable
		e.Message = "Daytona refused the request (is the account or organization suspended, or the key missing a permission?): " + msg
	case status == http.StatusTooManyRequests:
		e.kind = sandbox.ErrUnavailable
		e.Message = "Daytona is rate limiting requests, try again shortly: " + msg
	case status >= 500:
		e.kind = sandbox.ErrUnavailable
		e.Message = "Daytona failed: " + msg
	}
	return e
}

// isQuota recognises Daytona's quota refusals: "Total CPU limit exceeded. Maximum allowed: 10",
// "Memory request 8GB exceeds maximum allowed per sandbox (4GB)", "Sandbox quota exceeded".
func isQuota(lower string) bool {
	return strings.Contains(lower, "quota") || strings.Contains(lower, "limit exceeded") ||
		strings.Contains(lower, "exceeds maximum allowed")
}

// isSnapshotMissing recognises "Snapshot nightona not found. Did you add it through the Daytona
// Dashboard?" and "Snapshot nightona is build_failed" (one that exists but cannot be used).
func isSnapshotMissing(lower string) bool {
	if !strings.Contains(lower, "snapshot") {
		return false
	}
	return strings.Contains(lower, "not found") || strings.Contains(lower, "does not exist") ||
		strings.Contains(lower, " is ")
}

// errorMessage extracts the explanation from an error body: Daytona's API answers
// {"statusCode":400,"message":"...","error":"Bad Request"} (message sometimes a list), the
// toolbox {"message":"..."} or {"error":"..."}; anything else is taken as text.
func errorMessage(body []byte) string {
	var v struct {
		Message json.RawMessage `json:"message"`
		Error   json.RawMessage `json:"error"`
	}
	if json.Unmarshal(body, &v) == nil {
		for _, raw := range []json.RawMessage{v.Message, v.Error} {
			if s := jsonText(raw); s != "" {
				return clean(s)
			}
		}
	}
	return clean(string(body))
}

func jsonText(raw json.RawMessage) string {
	if len(raw) == 0 {
		return ""
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	var list []string
	if json.Unmarshal(raw, &list) == nil {
		return strings.Join(list, "; ")
	}
	return ""
}

// clean makes a message fit one line of chat: Daytona's quota messages carry a second line of
// advice, and an HTML error page is no use to anyone.
func clean(s string) string {
	if strings.HasPrefix(strings.TrimSpace(s), "<") {
		return ""
	}
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > 400 {
		s = s[:400] + "…"
	}
	return s
}

// redact removes the API key from text that came from elsewhere: a server or proxy that echoes
// the request must not put it into an error that ends up in chat.
func (c *client) redact(s string) string {
	if c.key == "" {
		return s
	}
	return strings.ReplaceAll(s, c.key, "[redacted]")
}

// getJSON, postJSON and friends: the calls with a JSON answer.
func (c *client) call(ctx context.Context, r request, out any) error {
	resp, err := c.do(ctx, r)
	if err != nil {
		return err
	}
	if out == nil || len(bytes.TrimSpace(resp.body)) == 0 {
		return nil
	}
	if err := json.Unmarshal(resp.body, out); err != nil {
		return &APIError{Op: r.op, StatusCode: resp.status, Message: "unreadable answer: " + err.Error()}
	}
	return nil
}
