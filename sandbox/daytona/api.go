package daytona

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/nightona/nightona/sandbox"
)

// apiSandbox is the part of Daytona's Sandbox (and SandboxListItem) we read. Fields the spec
// marks required but we do not need are left out, so that a server that drops one does not
// break us.
type apiSandbox struct {
	ID              string            `json:"id"`
	Name            string            `json:"name"`
	State           string            `json:"state"`
	DesiredState    string            `json:"desiredState"`
	ErrorReason     string            `json:"errorReason"`
	Recoverable     bool              `json:"recoverable"`
	Labels          map[string]string `json:"labels"`
	Public          bool              `json:"public"`
	CreatedAt       string            `json:"createdAt"`
	ToolboxProxyURL string            `json:"toolboxProxyUrl"`
}

func (s *apiSandbox) created() time.Time {
	t, err := time.Parse(time.RFC3339Nano, s.CreatedAt)
	if err != nil {
		return time.Time{}
	}
	return t
}

// createBody is CreateSandbox. Zero fields are left out: Daytona applies its own defaults.
type createBody struct {
	Name                string            `json:"name,omitempty"`
	Snapshot            string            `json:"snapshot,omitempty"`
	Env                 map[string]string `json:"env,omitempty"`
	Labels              map[string]string `json:"labels,omitempty"`
	Public              bool              `json:"public"`
	Target              string            `json:"target,omitempty"`
	CPU                 int               `json:"cpu,omitempty"`
	Memory              int               `json:"memory,omitempty"`
	Disk                int               `json:"disk,omitempty"`
	AutoStopInterval    *int              `json:"autoStopInterval,omitempty"`
	AutoArchiveInterval *int              `json:"autoArchiveInterval,omitempty"`
	AutoDeleteInterval  *int              `json:"autoDeleteInterval,omitempty"`
}

type previewURL struct {
	URL   string `json:"url"`
	Token string `json:"token"`
}

// api is the Daytona REST API: the calls the provider makes, each with its retry rule. An
// API key belongs to one organization, so X-Daytona-Organization-ID (for JWT callers only) is
// not sent, and the region goes in CreateSandbox.target: the spec has no X-Daytona-Target.
type api struct {
	c    *client
	base string // e.g. https://app.daytona.io/api
}

func (a *api) path(parts ...string) string {
	u := a.base
	for _, p := range parts {
		u += "/" + url.PathEscape(p)
	}
	return u
}

// createTimeout bounds one POST /sandbox: Daytona may take half a minute to answer it.
const createTimeout = 90 * time.Second

func (a *api) create(ctx context.Context, body createBody) (*apiSandbox, error) {
	var s apiSandbox
	err := a.c.call(ctx, request{op: "create sandbox", method: http.MethodPost, url: a.path("sandbox"),
		json: body, mode: retryUnsent, timeout: createTimeout}, &s)
	if err != nil {
		return nil, err
	}
	return &s, nil
}

func (a *api) get(ctx context.Context, idOrName string) (*apiSandbox, error) {
	var s apiSandbox
	err := a.c.call(ctx, request{op: "get sandbox " + idOrName, method: http.MethodGet, url: a.path("sandbox", idOrName)}, &s)
	if err != nil {
		return nil, err
	}
	return &s, nil
}

// list returns the sandboxes carrying all the labels, following the cursor to the end.
func (a *api) list(ctx context.Context, labels map[string]string) ([]apiSandbox, error) {
	filter, err := json.Marshal(labels)
	if err != nil {
		return nil, err
	}
	var out []apiSandbox
	cursor := ""
	for page := 0; page < 1000; page++ {
		q := url.Values{"labels": {string(filter)}, "limit": {"200"}}
		if cursor != "" {
			q.Set("cursor", cursor)
		}
		var resp struct {
			Items      []apiSandbox `json:"items"`
			NextCursor *string      `json:"nextCursor"`
		}
		if err := a.c.call(ctx, request{op: "list sandboxes", method: http.MethodGet, url: a.path("sandbox"), query: q}, &resp); err != nil {
			return nil, err
		}
		out = append(out, resp.Items...)
		if resp.NextCursor == nil || *resp.NextCursor == "" || *resp.NextCursor == cursor {
			return out, nil
		}
		cursor = *resp.NextCursor
	}
	return out, nil
}

// lifecycle posts start, stop or archive. These change a state towards a target, so sending
// one twice does no harm beyond a conflict we handle: they are retried like reads.
func (a *api) lifecycle(ctx context.Context, id, action string) error {
	return a.c.call(ctx, request{op: action + " sandbox " + id, method: http.MethodPost, url: a.path("sandbox", id, action),
		timeout: createTimeout}, nil)
}

func (a *api) delete(ctx context.Context, id string) error {
	return a.c.call(ctx, request{op: "delete sandbox " + id, method: http.MethodDelete, url: a.path("sandbox", id)}, nil)
}

func (a *api) setLabels(ctx context.Context, id string, labels map[string]string) error {
	if labels == nil {
		labels = map[string]string{}
	}
	return a.c.call(ctx, request{op: "set labels of sandbox " + id, method: http.MethodPut, url: a.path("sandbox", id, "labels"),
		json: map[string]any{"labels": labels}}, nil)
}

func (a *api) preview(ctx context.Context, id string, port int) (*previewURL, error) {
	var p previewURL
	err := a.c.call(ctx, request{op: "get preview URL of port " + strconv.Itoa(port) + " of sandbox " + id, method: http.MethodGet,
		url: a.path("sandbox", id, "ports", strconv.Itoa(port), "preview-url")}, &p)
	if err != nil {
		return nil, err
	}
	if p.URL == "" {
		return nil, &APIError{Op: "get preview URL of sandbox " + id, Message: "Daytona answered without a URL", kind: sandbox.ErrUnavailable}
	}
	return &p, nil
}

func (a *api) signedPreview(ctx context.Context, id string, port int, seconds int) (string, error) {
	var p previewURL
	err := a.c.call(ctx, request{op: "get signed preview URL of port " + strconv.Itoa(port) + " of sandbox " + id, method: http.MethodGet,
		url:   a.path("sandbox", id, "ports", strconv.Itoa(port), "signed-preview-url"),
		query: url.Values{"expiresInSeconds": {strconv.Itoa(seconds)}}}, &p)
	if err != nil {
		return "", err
	}
	return p.URL, nil
}

func (a *api) toolboxProxyURL(ctx context.Context, id string) (string, error) {
	var p struct {
		URL string `json:"url"`
	}
	if err := a.c.call(ctx, request{op: "get toolbox URL of sandbox " + id, method: http.MethodGet,
		url: a.path("sandbox", id, "toolbox-proxy-url")}, &p); err != nil {
		return "", err
	}
	return p.URL, nil
}

// isConflict reports a refusal because the sandbox is busy changing state ("State change in
// progress", "Sandbox is not stopped"): waiting and looking again is the answer.
func isConflict(err error) bool {
	var e *APIError
	return errors.As(err, &e) && (e.StatusCode == http.StatusConflict ||
		(e.StatusCode == http.StatusBadRequest && e.kind == nil))
}
