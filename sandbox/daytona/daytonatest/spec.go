package daytonatest

import (
	"bytes"
	"context"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/gorillamux"
)

// The two definitions are verbatim copies of Daytona's own (see spec/README.md): the REST API
// and the in-sandbox toolbox API. Every request the fake serves is checked against them.
var (
	//go:embed spec/daytona-api.openapi.yaml
	apiSpecYAML []byte
	//go:embed spec/daytona-toolbox.openapi.yaml
	toolboxSpecYAML []byte
)

// spec is one loaded definition with its router.
type spec struct {
	name   string
	doc    *openapi3.T
	router routers.Router
}

// loadSpec parses a definition. It does not call doc.Validate: Daytona's generated examples do
// not validate against their own schemas, and the router and validators do not need it.
func loadSpec(name string, data []byte) (*spec, error) {
	doc, err := openapi3.NewLoader().LoadFromData(data)
	if err != nil {
		return nil, fmt.Errorf("load %s spec: %w", name, err)
	}
	// The servers listed (http://localhost:3000, /) would make the router match on host and
	// base path; the fake strips its own prefixes instead, so match on the path alone.
	doc.Servers = nil
	router, err := gorillamux.NewRouter(doc)
	if err != nil {
		return nil, fmt.Errorf("route %s spec: %w", name, err)
	}
	return &spec{name: name, doc: doc, router: router}, nil
}

// validation is one request matched against a spec: the route, its path parameters and the
// input later reused for the response check.
type validation struct {
	route  *routers.Route
	params map[string]string
	input  *openapi3filter.RequestValidationInput
}

// errNoRoute means the request names no operation of the spec.
var errNoRoute = errors.New("no such operation")

// match finds the operation of r with its path replaced by path (the part after the fake's
// prefix) and validates the request: parameters, body and content type. r.Body is replaced
// by an equivalent reader, so handlers can read it afterwards.
func (sp *spec) match(r *http.Request, path string) (*validation, error) {
	req := r.Clone(r.Context())
	req.URL.Path = path
	req.URL.RawPath = ""
	route, params, err := sp.router.FindRoute(req)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errNoRoute, err)
	}
	input := &openapi3filter.RequestValidationInput{
		Request:    req,
		PathParams: params,
		Route:      route,
		Options: &openapi3filter.Options{
			// The fake checks credentials itself, with Daytona's answers.
			AuthenticationFunc: openapi3filter.NoopAuthenticationFunc,
			// Defaults are the handlers' business; the request stays as the client sent it.
			SkipSettingDefaults:     true,
			SchemaValidationOptions: briefErrors(),
		},
	}
	err = openapi3filter.ValidateRequest(r.Context(), input)
	// ValidateRequest drained the shared body and left a fresh reader on the clone.
	r.Body = req.Body
	if r.Body == nil {
		r.Body = http.NoBody
	}
	v := &validation{route: route, params: params, input: input}
	if err != nil {
		return v, err
	}
	return v, nil
}

// operationID names the matched operation.
func (v *validation) operationID() string {
	if v == nil || v.route == nil || v.route.Operation == nil {
		return ""
	}
	return v.route.Operation.OperationID
}

// checkResponse validates a JSON response the fake produced. Other media types are skipped:
// the toolbox spec types plain-text logs as a JSON object, which the real daemon never sends.
func (v *validation) checkResponse(ctx context.Context, status int, header http.Header, body []byte) error {
	if v == nil || v.route == nil {
		return nil
	}
	mt, _, err := mime.ParseMediaType(header.Get("Content-Type"))
	if err != nil || mt != "application/json" {
		return nil
	}
	return openapi3filter.ValidateResponse(ctx, &openapi3filter.ResponseValidationInput{
		RequestValidationInput: v.input,
		Status:                 status,
		Header:                 header,
		Body:                   io.NopCloser(bytes.NewReader(body)),
		Options: &openapi3filter.Options{
			AuthenticationFunc:      openapi3filter.NoopAuthenticationFunc,
			SchemaValidationOptions: briefErrors(),
		},
	})
}

// briefErrors keeps the validator's messages to the point: by default they carry the whole
// schema and value, which for a Sandbox is a page of JSON in the test log.
func briefErrors() []openapi3.SchemaValidationOption {
	return []openapi3.SchemaValidationOption{openapi3.DisableSchemaErrorDetails()}
}

// captureWriter keeps what a handler wrote so the response can be checked against the spec
// after it was sent.
type captureWriter struct {
	http.ResponseWriter
	status int
	body   bytes.Buffer
	// limit bounds the copy kept for checking; downloads can be large and are not JSON.
	limit int
}

func (c *captureWriter) WriteHeader(status int) {
	if c.status == 0 {
		c.status = status
	}
	c.ResponseWriter.WriteHeader(status)
}

func (c *captureWriter) Write(p []byte) (int, error) {
	if c.status == 0 {
		c.status = http.StatusOK
	}
	if room := c.limit - c.body.Len(); room > 0 {
		c.body.Write(p[:min(room, len(p))])
	}
	return c.ResponseWriter.Write(p)
}

// Flush lets streaming handlers push output early.
func (c *captureWriter) Flush() {
	if f, ok := c.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}
