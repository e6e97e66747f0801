package daytonatest

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Messages of the API's errors, as its sandbox service words them.
const (
	msgInProgress  = "Sandbox state change in progress"
	msgErrored     = "Sandbox is in an errored state"
	msgUpgradeTier = "To increase concurrency limits, upgrade your organization's Tier by visiting https://app.daytona.io/dashboard/limits."
)

// httpErr is an API error: its status and message.
type httpErr struct {
	status  int
	message string
}

func (e *httpErr) Error() string { return e.message }

func notFound(idOrName string) *httpErr {
	return &httpErr{http.StatusNotFound, fmt.Sprintf("Sandbox with ID or name %s not found", idOrName)}
}

// serveAPI answers a REST API request: credentials, then the spec, then a queued fault, then
// the operation.
func (s *Server) serveAPI(w http.ResponseWriter, r *http.Request) {
	if bearer(r) != s.APIKey {
		apiError(w, r, http.StatusUnauthorized, "Invalid credentials")
		return
	}
	path := strings.TrimPrefix(r.URL.Path, "/api")
	v, err := s.api.match(r, path)
	if errors.Is(err, errNoRoute) {
		s.failf("%s %s is no operation of Daytona's API spec", r.Method, r.URL.Path)
		apiError(w, r, http.StatusNotFound, fmt.Sprintf("Cannot %s %s", r.Method, r.URL.Path))
		return
	}
	if err != nil {
		s.failf("%s %s does not match Daytona's API spec: %v", r.Method, r.URL.RequestURI(), err)
		apiError(w, r, http.StatusBadRequest, err.Error())
		return
	}
	if f, ok := s.takeFault(r.Method, path); ok {
		apiError(w, r, f.status, f.message)
		return
	}
	cw := &captureWriter{ResponseWriter: w, limit: 1 << 20}
	status, body, herr := s.dispatchAPI(r, v)
	if herr != nil {
		apiError(cw, r, herr.status, herr.message)
		return
	}
	if body == nil {
		cw.WriteHeader(status)
	} else {
		writeJSON(cw, status, body)
	}
	if err := v.checkResponse(r.Context(), cw.status, cw.Header(), cw.body.Bytes()); err != nil {
		s.failf("the fake's answer to %s %s does not match Daytona's API spec: %v", r.Method, r.URL.Path, err)
	}
}

// bearer is the request's bearer token.
func bearer(r *http.Request) string {
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok {
		return ""
	}
	return strings.TrimSpace(tok)
}

// dispatchAPI runs the operation; it returns the status and JSON body (nil for none) or an
// error to answer.
func (s *Server) dispatchAPI(r *http.Request, v *validation) (int, any, *httpErr) {
	p := v.params
	switch op := v.operationID(); op {
	case "createSandbox":
		return s.createSandbox(r)
	case "listSandboxes":
		return s.listSandboxes(r)
	case "getSandbox":
		return s.withSandbox(p["sandboxIdOrName"], func(sb *sandbox) (any, *httpErr) { return s.dtoLocked(sb), nil })
	case "deleteSandbox":
		return s.withSandbox(p["sandboxIdOrName"], func(sb *sandbox) (any, *httpErr) {
			if transitional(sb.state) {
				return nil, &httpErr{http.StatusConflict, msgInProgress}
			}
			s.deleteLocked(sb, s.cfg.KillGrace)
			return s.dtoLocked(sb), nil
		})
	case "startSandbox":
		return s.startSandbox(r, p["sandboxIdOrName"])
	case "stopSandbox":
		force := r.URL.Query().Get("force") == "true"
		return s.withSandbox(p["sandboxIdOrName"], func(sb *sandbox) (any, *httpErr) {
			if err := checkSettled(sb); err != nil {
				return nil, err
			}
			if sb.state != stateStarted {
				return nil, &httpErr{http.StatusBadRequest, "Sandbox is not in a stoppable state"}
			}
			s.stopLocked(sb, force)
			return s.dtoLocked(sb), nil
		})
	case "archiveSandbox":
		return s.withSandbox(p["sandboxIdOrName"], func(sb *sandbox) (any, *httpErr) {
			if err := checkSettled(sb); err != nil {
				return nil, err
			}
			if sb.state != stateStopped {
				return nil, &httpErr{http.StatusBadRequest, "Sandbox is not stopped"}
			}
			if sb.autoDelete == 0 {
				return nil, &httpErr{http.StatusBadRequest, "Ephemeral sandboxes cannot be archived"}
			}
			s.archiveLocked(sb)
			return s.dtoLocked(sb), nil
		})
	case "replaceLabels":
		var body struct {
			Labels map[string]string `json:"labels"`
		}
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
			return 0, nil, &httpErr{http.StatusBadRequest, "invalid labels body: " + err.Error()}
		}
		return s.withSandbox(p["sandboxIdOrName"], func(sb *sandbox) (any, *httpErr) {
			sb.labels = nonNil(body.Labels)
			sb.updated = time.Now()
			return map[string]any{"labels": sb.labels}, nil
		})
	case "updatePublicStatus":
		public := p["isPublic"] == "true"
		return s.withSandbox(p["sandboxIdOrName"], func(sb *sandbox) (any, *httpErr) {
			sb.public = public
			return s.dtoLocked(sb), nil
		})
	case "setAutostopInterval", "setAutoArchiveInterval", "setAutoDeleteInterval":
		return s.setInterval(op, p["sandboxIdOrName"], p["interval"])
	case "getToolboxProxyUrl":
		return s.withSandbox(p["sandboxId"], func(*sandbox) (any, *httpErr) {
			return map[string]any{"url": s.ToolboxURL}, nil
		})
	case "getPortPreviewUrl":
		port, err := strconv.ParseFloat(p["port"], 64)
		if err != nil || port < 1 || port > 65535 || port != float64(int(port)) {
			return 0, nil, &httpErr{http.StatusBadRequest, "Invalid port"}
		}
		return s.withSandbox(p["sandboxIdOrName"], func(sb *sandbox) (any, *httpErr) {
			return map[string]any{
				"sandboxId": sb.id,
				"url":       fmt.Sprintf("%s/preview/%s/%d", s.URL, sb.id, int(port)),
				"token":     sb.authToken,
			}, nil
		})
	case "getSignedPortPreviewUrl":
		return s.signPreview(r, p["sandboxIdOrName"], p["port"])
	case "expireSignedPortPreviewUrl":
		port, _ := strconv.Atoi(p["port"])
		status, _, herr := s.withSandbox(p["sandboxIdOrName"], func(sb *sandbox) (any, *httpErr) {
			if su := s.signed[p["token"]]; su != nil && su.sandboxID == sb.id && su.port == port {
				delete(s.signed, p["token"])
			}
			return nil, nil
		})
		return status, nil, herr
	default:
		s.log.Warn("API operation not implemented by the fake", "operation", op, "method", r.Method, "path", r.URL.Path)
		return 0, nil, &httpErr{http.StatusNotImplemented, "daytonatest: operation " + op + " is not implemented by the fake"}
	}
}

// withSandbox runs f on the sandbox named by idOrName with s.mu held; 404 when there is none.
func (s *Server) withSandbox(idOrName string, f func(sb *sandbox) (any, *httpErr)) (int, any, *httpErr) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sb := s.lookupLocked(idOrName)
	if sb == nil {
		return 0, nil, notFound(idOrName)
	}
	body, err := f(sb)
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, body, nil
}

// checkSettled refuses operations on errored sandboxes and sandboxes changing state, in the
// order the API's sandbox service checks them.
func checkSettled(sb *sandbox) *httpErr {
	if sb.state == stateError || sb.state == stateBuildFailed {
		return &httpErr{http.StatusBadRequest, msgErrored}
	}
	if transitional(sb.state) {
		return &httpErr{http.StatusConflict, msgInProgress}
	}
	return nil
}

// createRequest is the spec's CreateSandbox schema.
type createRequest struct {
	Name                *string           `json:"name"`
	Snapshot            *string           `json:"snapshot"`
	User                *string           `json:"user"`
	Env                 map[string]string `json:"env"`
	Labels              map[string]string `json:"labels"`
	Public              bool              `json:"public"`
	NetworkBlockAll     bool              `json:"networkBlockAll"`
	NetworkAllowList    string            `json:"networkAllowList"`
	DomainAllowList     string            `json:"domainAllowList"`
	Target              string            `json:"target"`
	CPU                 int               `json:"cpu"`
	GPU                 int               `json:"gpu"`
	GPUType             []string          `json:"gpuType"`
	Memory              int               `json:"memory"`
	Disk                int               `json:"disk"`
	AutoStopInterval    *int              `json:"autoStopInterval"`
	AutoArchiveInterval *int              `json:"autoArchiveInterval"`
	AutoDeleteInterval  *int              `json:"autoDeleteInterval"`
	BuildInfo           *struct {
		DockerfileContent string `json:"dockerfileContent"`
	} `json:"buildInfo"`
}

// createSandbox answers POST /sandbox. Like the API, it answers with the sandbox still
// "creating": the client polls until it is started.
func (s *Server) createSandbox(r *http.Request) (int, any, *httpErr) {
	var req createRequest
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		return 0, nil, &httpErr{http.StatusBadRequest, "invalid sandbox body: " + err.Error()}
	}
	snapshot := s.cfg.DefaultSnapshot
	if req.Snapshot != nil && *req.Snapshot != "" {
		snapshot = *req.Snapshot
	}
	// The checks below run in the API controller's and sandbox service's order.
	if req.BuildInfo != nil {
		if req.Snapshot != nil && *req.Snapshot != "" {
			return 0, nil, &httpErr{http.StatusBadRequest, "Cannot specify a snapshot when using a build info entry"}
		}
	} else {
		if req.CPU != 0 || req.GPU != 0 || req.Memory != 0 || req.Disk != 0 {
			return 0, nil, &httpErr{http.StatusBadRequest, "Cannot specify Sandbox resources when using a snapshot"}
		}
		if len(req.GPUType) > 0 {
			return 0, nil, &httpErr{http.StatusBadRequest, "Cannot specify GPU type when creating sandbox from snapshot. GPU type is inherited from snapshot."}
		}
		if snapshot != s.cfg.DefaultSnapshot && s.cfg.Snapshots != nil && !slices.Contains(s.cfg.Snapshots, snapshot) {
			return 0, nil, &httpErr{http.StatusBadRequest, fmt.Sprintf("Snapshot %s not found. Did you add it through the Daytona Dashboard?", snapshot)}
		}
	}
	now := time.Now()
	sb := &sandbox{
		id: randomUUID(), snapshot: snapshot, target: defaultTarget,
		env: nonNil(req.Env), labels: nonNil(req.Labels), public: req.Public,
		cpu: defaultCPU, memory: defaultMemory, disk: defaultDisk,
		autoStop: defaultAutoStop, autoArchive: defaultAutoArchive, autoDelete: -1,
		networkBlockAll: req.NetworkBlockAll, networkAllowList: req.NetworkAllowList, domainAllowList: req.DomainAllowList,
		created: now, updated: now, lastActivity: now,
		authToken: randomToken(32), sessions: map[string]*shellSession{},
	}
	if req.Target != "" {
		sb.target = req.Target
	}
	if bi := req.BuildInfo; bi != nil {
		sum := sha256.Sum256([]byte(bi.DockerfileContent))
		sb.snapshot = ""
		sb.buildInfo = &buildInfo{Dockerfile: bi.DockerfileContent, SnapshotRef: "daytonatest/build:" + hex.EncodeToString(sum[:6]), Created: now}
		sb.cpu, sb.gpu, sb.memory, sb.disk = orDefault(req.CPU, defaultCPU), req.GPU, orDefault(req.Memory, defaultMemory), orDefault(req.Disk, defaultDisk)
	}
	if v := req.AutoStopInterval; v != nil {
		if *v < 0 {
			return 0, nil, &httpErr{http.StatusBadRequest, "Auto-stop interval must be non-negative"}
		}
		sb.autoStop = *v
	}
	if v := req.AutoArchiveInterval; v != nil {
		if *v < 0 {
			return 0, nil, &httpErr{http.StatusBadRequest, "Auto-archive interval must be non-negative"}
		}
		sb.autoArchive = *v
		if *v == 0 {
			sb.autoArchive = maxAutoArchive
		}
	}
	if v := req.AutoDeleteInterval; v != nil {
		sb.autoDelete = *v
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cfg.Quota > 0 && len(s.sandboxes) >= s.cfg.Quota {
		return 0, nil, &httpErr{http.StatusBadRequest, fmt.Sprintf("Total CPU limit exceeded. Maximum allowed: %d.\n%s", s.cfg.Quota, msgUpgradeTier)}
	}
	sb.name = sb.id
	if req.Name != nil && *req.Name != "" {
		if s.lookupLocked(*req.Name) != nil {
			return 0, nil, &httpErr{http.StatusConflict, fmt.Sprintf("Sandbox with name %s already exists", *req.Name)}
		}
		sb.name = *req.Name
	}
	if err := s.makeFolders(sb); err != nil {
		return 0, nil, &httpErr{http.StatusInternalServerError, err.Error()}
	}
	s.sandboxes[sb.id] = sb
	s.moveLocked(sb, stateCreating, stateStarted, s.cfg.CreateDelay, remains{}, 0, settle(sb, stateStarted))
	s.log.Info("sandbox created", "id", sb.id, "snapshot", sb.snapshot, "home", sb.home)
	return http.StatusOK, s.dtoLocked(sb), nil
}

func orDefault(v, def int) int {
	if v == 0 {
		return def
	}
	return v
}

// startSandbox answers POST /sandbox/{id}/start: like the API it holds the answer until the
// sandbox is started (up to 30s), except when restoring from an archive.
func (s *Server) startSandbox(r *http.Request, idOrName string) (int, any, *httpErr) {
	s.mu.Lock()
	sb := s.lookupLocked(idOrName)
	if sb == nil {
		s.mu.Unlock()
		return 0, nil, notFound(idOrName)
	}
	switch {
	case sb.state == stateStarted:
		defer s.mu.Unlock()
		return http.StatusOK, s.dtoLocked(sb), nil
	case sb.state == stateError || sb.state == stateBuildFailed:
		s.mu.Unlock()
		return 0, nil, &httpErr{http.StatusBadRequest, msgErrored}
	case sb.state == stateArchiving:
		// The API lets a start overtake an archive that has not finished.
	case transitional(sb.state):
		s.mu.Unlock()
		return 0, nil, &httpErr{http.StatusConflict, msgInProgress}
	case sb.state != stateStopped && sb.state != stateArchived:
		s.mu.Unlock()
		return 0, nil, &httpErr{http.StatusBadRequest, "Sandbox is not in valid state"}
	}
	s.startLocked(sb)
	via := sb.state
	s.mu.Unlock()
	if via == stateStarting {
		s.waitSettled(r.Context(), sb, via)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if sb.state == stateError || sb.state == stateBuildFailed {
		return 0, nil, &httpErr{http.StatusBadRequest, "Sandbox failed to start: " + sb.errorReason}
	}
	return http.StatusOK, s.dtoLocked(sb), nil
}

// setInterval answers the autostop, autoarchive and autodelete operations.
func (s *Server) setInterval(op, idOrName, raw string) (int, any, *httpErr) {
	f, err := strconv.ParseFloat(raw, 64)
	if err != nil {
		return 0, nil, &httpErr{http.StatusBadRequest, "Validation failed (numeric string is expected)"}
	}
	n := int(f)
	return s.withSandbox(idOrName, func(sb *sandbox) (any, *httpErr) {
		switch op {
		case "setAutostopInterval":
			if n < 0 {
				return nil, &httpErr{http.StatusBadRequest, "Auto-stop interval must be non-negative"}
			}
			sb.autoStop = n
		case "setAutoArchiveInterval":
			if n < 0 {
				return nil, &httpErr{http.StatusBadRequest, "Auto-archive interval must be non-negative"}
			}
			if n == 0 {
				n = maxAutoArchive
			}
			sb.autoArchive = n
		default:
			sb.autoDelete = n
		}
		sb.updated = time.Now()
		return s.dtoLocked(sb), nil
	})
}

// signedURL is a signed preview URL's token: the port of one sandbox until it expires.
type signedURL struct {
	sandboxID string
	port      int
	expires   time.Time
}

// signPreview answers GET /sandbox/{id}/ports/{port}/signed-preview-url.
func (s *Server) signPreview(r *http.Request, idOrName, rawPort string) (int, any, *httpErr) {
	port, err := strconv.Atoi(rawPort)
	if err != nil || port < 1 || port > 65535 {
		return 0, nil, &httpErr{http.StatusBadRequest, "Invalid port"}
	}
	expires := 60
	if raw := r.URL.Query().Get("expiresInSeconds"); raw != "" {
		if expires, err = strconv.Atoi(raw); err != nil {
			return 0, nil, &httpErr{http.StatusBadRequest, "expiresInSeconds must be an integer"}
		}
	}
	if expires < 1 || expires > 24*60*60 {
		return 0, nil, &httpErr{http.StatusBadRequest, "expiresInSeconds must be between 1 second and 24 hours"}
	}
	return s.withSandbox(idOrName, func(sb *sandbox) (any, *httpErr) {
		token := randomToken(16)
		s.signed[token] = &signedURL{sandboxID: sb.id, port: port, expires: time.Now().Add(time.Duration(expires) * time.Second)}
		return map[string]any{
			"sandboxId": sb.id,
			"port":      port,
			"token":     token,
			"url":       s.URL + "/preview/signed/" + token,
		}, nil
	})
}

// listSandboxes answers GET /sandbox with the filters, order and cursor pages of the spec.
func (s *Server) listSandboxes(r *http.Request) (int, any, *httpErr) {
	q := r.URL.Query()
	var labels map[string]string
	if raw := q.Get("labels"); raw != "" {
		if err := json.Unmarshal([]byte(raw), &labels); err != nil {
			return 0, nil, &httpErr{http.StatusBadRequest, "Invalid labels JSON format"}
		}
	}
	limit := 100
	if raw := q.Get("limit"); raw != "" {
		if f, err := strconv.ParseFloat(raw, 64); err == nil {
			limit = int(f)
		}
	}
	var after string
	if raw := q.Get("cursor"); raw != "" {
		var c struct {
			ID string `json:"id"`
		}
		data, err := base64.StdEncoding.DecodeString(raw)
		if err != nil || json.Unmarshal(data, &c) != nil {
			return 0, nil, &httpErr{http.StatusBadRequest, "Invalid cursor"}
		}
		after = c.ID
	}
	states, snapshots := q["states"], q["snapshots"]

	s.mu.Lock()
	defer s.mu.Unlock()
	items := []listItemDTO{}
	var next *string
	skipping := after != ""
	for _, sb := range s.sortedLocked(q.Get("sort"), q.Get("order") != "asc") {
		if skipping {
			skipping = sb.id != after
			continue
		}
		if !matches(sb, q, labels, states, snapshots) {
			continue
		}
		if len(items) == limit {
			c, _ := json.Marshal(map[string]string{"id": items[len(items)-1].ID})
			enc := base64.StdEncoding.EncodeToString(c)
			next = &enc
			break
		}
		items = append(items, s.listItemLocked(sb))
	}
	return http.StatusOK, map[string]any{"items": items, "nextCursor": next}, nil
}

// matches applies the list filters the fake supports.
func matches(sb *sandbox, q map[string][]string, labels map[string]string, states, snapshots []string) bool {
	for k, v := range labels {
		if sb.labels[k] != v {
			return false
		}
	}
	if len(states) > 0 && !slices.Contains(states, sb.state) {
		return false
	}
	if len(snapshots) > 0 && !slices.Contains(snapshots, sb.snapshot) {
		return false
	}
	first := func(k string) string {
		if v := q[k]; len(v) > 0 {
			return v[0]
		}
		return ""
	}
	if p := first("id"); p != "" && !strings.HasPrefix(strings.ToLower(sb.id), strings.ToLower(p)) {
		return false
	}
	if p := first("name"); p != "" && !strings.HasPrefix(strings.ToLower(sb.name), strings.ToLower(p)) {
		return false
	}
	if p := first("isPublic"); p != "" && (p == "true") != sb.public {
		return false
	}
	return true
}
