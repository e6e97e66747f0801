package daytonatest

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// Sandbox states, as in the spec's SandboxState enum (only those the fake moves through).
const (
	stateCreating    = "creating"
	stateStarting    = "starting"
	stateStarted     = "started"
	stateStopping    = "stopping"
	stateStopped     = "stopped"
	stateArchiving   = "archiving"
	stateArchived    = "archived"
	stateRestoring   = "restoring"
	stateDestroying  = "destroying"
	stateDestroyed   = "destroyed"
	stateError       = "error"
	stateBuildFailed = "build_failed"
)

// Daytona's defaults for a sandbox made from its default snapshot, and its region.
const (
	defaultCPU         = 1
	defaultMemory      = 1
	defaultDisk        = 3
	defaultAutoStop    = 15
	defaultAutoArchive = 7 * 24 * 60
	maxAutoArchive     = 30 * 24 * 60
	defaultTarget      = "us"
	osUser             = "daytona"
	daemonVersion      = "0.190.0-daytonatest"
	// waitStarted bounds how long start holds its response for the sandbox to be started,
	// as the API's controller does.
	waitStarted = 30 * time.Second
)

// desiredFor is the desired state that matches a settled state ("" for the others).
func desiredFor(state string) string {
	switch state {
	case stateStarted, stateStopped, stateArchived, stateDestroyed, "paused":
		return state
	}
	return ""
}

// transitional reports a state Daytona answers "state change in progress" (409) in.
func transitional(state string) bool {
	switch state {
	case stateCreating, stateStarting, stateStopping, stateArchiving, stateRestoring, stateDestroying,
		"pending_build", "building_snapshot", "pulling_snapshot", "resizing", "snapshotting", "forking",
		"pausing", "resuming", "unknown":
		return true
	}
	return false
}

// sandbox is one sandbox; all fields are guarded by Server.mu.
type sandbox struct {
	id, name, snapshot, target string
	env, labels                map[string]string
	public                     bool
	cpu, gpu, memory, disk     int
	autoStop, autoArchive      int
	autoDelete                 int
	networkBlockAll            bool
	networkAllowList           string
	domainAllowList            string
	buildInfo                  *buildInfo

	state, desired string
	errorReason    string
	recoverable    bool
	created        time.Time
	updated        time.Time
	lastActivity   time.Time
	authToken      string // the preview token; regenerated on every start
	// gen counts transitions: a delayed step applies only if no other began since.
	gen int

	home, workDir string
	procs         []*procGroup
	sessions      map[string]*shellSession
}

// buildInfo is what a declarative-build create carried.
type buildInfo struct {
	Dockerfile  string
	SnapshotRef string
	Created     time.Time
}

// lookupLocked finds a live sandbox by id or name.
func (s *Server) lookupLocked(idOrName string) *sandbox {
	if sb, ok := s.sandboxes[idOrName]; ok {
		return sb
	}
	for _, sb := range s.sandboxes {
		if sb.name == idOrName {
			return sb
		}
	}
	return nil
}

// sortedLocked lists the sandboxes ordered by a SandboxListSortField, ties broken by id.
func (s *Server) sortedLocked(field string, desc bool) []*sandbox {
	out := make([]*sandbox, 0, len(s.sandboxes))
	for _, sb := range s.sandboxes {
		out = append(out, sb)
	}
	key := func(sb *sandbox) string {
		switch field {
		case "name":
			return sb.name
		case "cpu":
			return fmt.Sprintf("%08d", sb.cpu)
		case "memoryGib":
			return fmt.Sprintf("%08d", sb.memory)
		case "diskGib":
			return fmt.Sprintf("%08d", sb.disk)
		case "createdAt":
			return sb.created.Format(time.RFC3339Nano)
		default:
			return sb.lastActivity.Format(time.RFC3339Nano)
		}
	}
	slices.SortFunc(out, func(a, b *sandbox) int {
		c := strings.Compare(key(a), key(b))
		if c == 0 {
			c = strings.Compare(a.id, b.id)
		}
		if desc {
			return -c
		}
		return c
	})
	return out
}

// info is the test's view of the sandbox.
func (sb *sandbox) info() Info {
	alive := 0
	for _, g := range sb.procs {
		if g.alive() {
			alive++
		}
	}
	return Info{
		ID: sb.id, Name: sb.name, State: sb.state, Snapshot: sb.snapshot,
		Labels: cloneMap(sb.labels), Env: cloneMap(sb.env), Public: sb.public,
		Home: sb.home, WorkDir: sb.workDir, ErrorReason: sb.errorReason,
		AutoStop: sb.autoStop, AutoArchive: sb.autoArchive, AutoDelete: sb.autoDelete,
		CPU: sb.cpu, Memory: sb.memory, Disk: sb.disk,
		Processes: alive,
	}
}

// detach takes the sandbox's processes and sessions away from it, for killing: a sandbox
// that leaves "started" keeps none.
func (sb *sandbox) detach() ([]*procGroup, []*shellSession) {
	procs := sb.procs
	sb.procs = nil
	var sessions []*shellSession
	for _, ss := range sb.sessions {
		sessions = append(sessions, ss)
	}
	sb.sessions = map[string]*shellSession{}
	return procs, sessions
}

// takeProcs detaches everything and returns what is left to kill; the sessions' readers are
// released once their shells die.
func (sb *sandbox) takeProcs() remains {
	procs, sessions := sb.detach()
	for _, ss := range sessions {
		ss.abandon()
	}
	return remains{groups: procs, marker: "DAYTONA_SANDBOX_ID=" + sb.id}
}

// sandboxDTO is the spec's Sandbox schema.
type sandboxDTO struct {
	ID                  string            `json:"id"`
	OrganizationID      string            `json:"organizationId"`
	Name                string            `json:"name"`
	Snapshot            string            `json:"snapshot,omitempty"`
	User                string            `json:"user"`
	Env                 map[string]string `json:"env"`
	Labels              map[string]string `json:"labels"`
	Public              bool              `json:"public"`
	NetworkBlockAll     bool              `json:"networkBlockAll"`
	NetworkAllowList    string            `json:"networkAllowList,omitempty"`
	DomainAllowList     string            `json:"domainAllowList,omitempty"`
	Target              string            `json:"target"`
	CPU                 int               `json:"cpu"`
	GPU                 int               `json:"gpu"`
	Memory              int               `json:"memory"`
	Disk                int               `json:"disk"`
	State               string            `json:"state"`
	DesiredState        string            `json:"desiredState,omitempty"`
	ErrorReason         string            `json:"errorReason,omitempty"`
	Recoverable         bool              `json:"recoverable"`
	BackupState         string            `json:"backupState"`
	AutoStopInterval    int               `json:"autoStopInterval"`
	AutoArchiveInterval int               `json:"autoArchiveInterval"`
	AutoDeleteInterval  int               `json:"autoDeleteInterval"`
	Volumes             []any             `json:"volumes"`
	BuildInfo           *buildInfoDTO     `json:"buildInfo,omitempty"`
	CreatedAt           string            `json:"createdAt"`
	UpdatedAt           string            `json:"updatedAt"`
	LastActivityAt      string            `json:"lastActivityAt"`
	SandboxClass        string            `json:"sandboxClass"`
	DaemonVersion       string            `json:"daemonVersion"`
	RunnerID            string            `json:"runnerId"`
	ToolboxProxyURL     string            `json:"toolboxProxyUrl"`
}

// buildInfoDTO is the spec's BuildInfo schema.
type buildInfoDTO struct {
	DockerfileContent string   `json:"dockerfileContent"`
	ContextHashes     []string `json:"contextHashes"`
	CreatedAt         string   `json:"createdAt"`
	UpdatedAt         string   `json:"updatedAt"`
	SnapshotRef       string   `json:"snapshotRef"`
}

// listItemDTO is the spec's SandboxListItem schema (no env, volumes or build info).
type listItemDTO struct {
	ID                  string            `json:"id"`
	OrganizationID      string            `json:"organizationId"`
	Name                string            `json:"name"`
	Target              string            `json:"target"`
	RunnerID            string            `json:"runnerId"`
	SandboxClass        string            `json:"sandboxClass"`
	State               string            `json:"state"`
	DesiredState        string            `json:"desiredState,omitempty"`
	Snapshot            string            `json:"snapshot,omitempty"`
	User                string            `json:"user"`
	ErrorReason         string            `json:"errorReason,omitempty"`
	Recoverable         bool              `json:"recoverable"`
	Public              bool              `json:"public"`
	CPU                 int               `json:"cpu"`
	GPU                 int               `json:"gpu"`
	Memory              int               `json:"memory"`
	Disk                int               `json:"disk"`
	Labels              map[string]string `json:"labels"`
	BackupState         string            `json:"backupState"`
	AutoStopInterval    int               `json:"autoStopInterval"`
	AutoArchiveInterval int               `json:"autoArchiveInterval"`
	AutoDeleteInterval  int               `json:"autoDeleteInterval"`
	CreatedAt           string            `json:"createdAt"`
	UpdatedAt           string            `json:"updatedAt"`
	LastActivityAt      string            `json:"lastActivityAt"`
	DaemonVersion       string            `json:"daemonVersion"`
	ToolboxProxyURL     string            `json:"toolboxProxyUrl"`
}

// dtoLocked renders the sandbox as the API returns it.
func (s *Server) dtoLocked(sb *sandbox) sandboxDTO {
	d := sandboxDTO{
		ID: sb.id, OrganizationID: s.OrganizationID, Name: sb.name, Snapshot: sb.snapshot,
		User: osUser, Env: nonNil(sb.env), Labels: nonNil(sb.labels), Public: sb.public,
		NetworkBlockAll: sb.networkBlockAll, NetworkAllowList: sb.networkAllowList,
		DomainAllowList: sb.domainAllowList, Target: sb.target,
		CPU: sb.cpu, GPU: sb.gpu, Memory: sb.memory, Disk: sb.disk,
		State: sb.state, DesiredState: sb.desired, ErrorReason: sb.errorReason,
		Recoverable: sb.recoverable, BackupState: "None",
		AutoStopInterval: sb.autoStop, AutoArchiveInterval: sb.autoArchive, AutoDeleteInterval: sb.autoDelete,
		Volumes:   []any{},
		CreatedAt: isoTime(sb.created), UpdatedAt: isoTime(sb.updated), LastActivityAt: isoTime(sb.lastActivity),
		SandboxClass: "container", DaemonVersion: daemonVersion, RunnerID: "daytonatest-runner",
		ToolboxProxyURL: s.ToolboxURL,
	}
	if bi := sb.buildInfo; bi != nil {
		d.BuildInfo = &buildInfoDTO{
			DockerfileContent: bi.Dockerfile, ContextHashes: []string{},
			CreatedAt: isoTime(bi.Created), UpdatedAt: isoTime(bi.Created), SnapshotRef: bi.SnapshotRef,
		}
	}
	return d
}

// listItemLocked renders the sandbox as the list returns it.
func (s *Server) listItemLocked(sb *sandbox) listItemDTO {
	return listItemDTO{
		ID: sb.id, OrganizationID: s.OrganizationID, Name: sb.name, Target: sb.target,
		RunnerID: "daytonatest-runner", SandboxClass: "container", State: sb.state, DesiredState: sb.desired,
		Snapshot: sb.snapshot, User: osUser, ErrorReason: sb.errorReason, Recoverable: sb.recoverable,
		Public: sb.public, CPU: sb.cpu, GPU: sb.gpu, Memory: sb.memory, Disk: sb.disk,
		Labels: nonNil(sb.labels), BackupState: "None",
		AutoStopInterval: sb.autoStop, AutoArchiveInterval: sb.autoArchive, AutoDeleteInterval: sb.autoDelete,
		CreatedAt: isoTime(sb.created), UpdatedAt: isoTime(sb.updated), LastActivityAt: isoTime(sb.lastActivity),
		DaemonVersion: daemonVersion, ToolboxProxyURL: s.ToolboxURL,
	}
}

// makeFolders gives a new sandbox its HOME and workspace.
func (s *Server) makeFolders(sb *sandbox) error {
	home, err := os.MkdirTemp(s.root, "sandbox-")
	if err != nil {
		return fmt.Errorf("daytonatest: create sandbox folder: %w", err)
	}
	sb.home = home
	sb.workDir = filepath.Join(home, "workspace")
	if err := os.Mkdir(sb.workDir, 0o755); err != nil {
		return fmt.Errorf("daytonatest: create workspace folder: %w", err)
	}
	return nil
}

// moveLocked puts the sandbox in a transitional state now and in final after d, unless
// another transition begins meanwhile. Processes, if any, are killed first: the final state
// is reached only once they are gone.
func (s *Server) moveLocked(sb *sandbox, via, desired string, d time.Duration, procs remains, grace time.Duration, final func()) {
	sb.gen++
	gen := sb.gen
	sb.state, sb.desired = via, desired
	sb.updated = time.Now()
	s.notifyLocked()
	start := time.Now()
	s.goKill(procs, grace, func() {
		if sb.gen != gen {
			return
		}
		// The kill took part of the delay already.
		s.after(d-time.Since(start), func() {
			if sb.gen != gen {
				return
			}
			final()
			sb.updated = time.Now()
			s.notifyLocked()
		})
	})
}

// settle is a final step that puts the sandbox in state.
func settle(sb *sandbox, state string) func() {
	return func() {
		sb.state = state
		if d := desiredFor(state); d != "" {
			sb.desired = d
		}
		if state == stateStarted {
			sb.lastActivity = time.Now()
		}
	}
}

// destroyLocked removes the sandbox and its folder: it is gone from the API from now on.
func (s *Server) destroyLocked(sb *sandbox) {
	sb.state, sb.desired = stateDestroyed, stateDestroyed
	delete(s.sandboxes, sb.id)
	for tok, su := range s.signed {
		if su.sandboxID == sb.id {
			delete(s.signed, tok)
		}
	}
	home := sb.home
	s.notifyLocked()
	// Removal can take a moment for a big workspace; nothing refers to the folder anymore.
	s.bg.Add(1)
	go func() {
		defer s.bg.Done()
		if err := os.RemoveAll(home); err != nil {
			s.log.Warn("remove sandbox folder", "id", sb.id, "err", err)
		}
	}()
}

// startLocked begins starting a stopped (or archiving) sandbox, or restoring an archived
// one, with a new preview token.
func (s *Server) startLocked(sb *sandbox) {
	sb.authToken = randomToken(32)
	if sb.state == stateArchived {
		s.moveLocked(sb, stateRestoring, stateStarted, s.cfg.ArchiveDelay+s.cfg.StartDelay, remains{}, 0, settle(sb, stateStarted))
		return
	}
	s.moveLocked(sb, stateStarting, stateStarted, s.cfg.StartDelay, remains{}, 0, settle(sb, stateStarted))
}

// stopLocked begins stopping (or, for an ephemeral sandbox, deleting) a started one.
func (s *Server) stopLocked(sb *sandbox, force bool) {
	grace := s.cfg.KillGrace
	if force {
		grace = 0
	}
	if sb.autoDelete == 0 {
		// Daytona deletes ephemeral sandboxes (autoDeleteInterval 0) when they stop.
		s.deleteLocked(sb, grace)
		return
	}
	procs := sb.takeProcs()
	s.moveLocked(sb, stateStopping, stateStopped, s.cfg.StopDelay, procs, grace, settle(sb, stateStopped))
}

// deleteLocked begins destroying a sandbox.
func (s *Server) deleteLocked(sb *sandbox, grace time.Duration) {
	procs := sb.takeProcs()
	s.moveLocked(sb, stateDestroying, stateDestroyed, s.cfg.StopDelay, procs, grace, func() { s.destroyLocked(sb) })
}

// archiveLocked begins archiving a stopped sandbox; its folder stays.
func (s *Server) archiveLocked(sb *sandbox) {
	s.moveLocked(sb, stateArchiving, stateArchived, s.cfg.ArchiveDelay, remains{}, 0, settle(sb, stateArchived))
}

// waitSettled waits (without s.mu) until the sandbox has left the state via, as the API's
// start does before it answers, for at most 30s.
func (s *Server) waitSettled(ctx context.Context, sb *sandbox, via string) {
	s.waitFor(ctx, waitStarted, func() bool { return sb.state != via })
}

func cloneMap(m map[string]string) map[string]string {
	if m == nil {
		return nil
	}
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

func nonNil(m map[string]string) map[string]string {
	if m == nil {
		return map[string]string{}
	}
	return m
}
