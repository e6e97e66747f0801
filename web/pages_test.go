package web

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/gorilla/websocket"

	"github.com/nightona/nightona/internal/testenv"
	"github.com/nightona/nightona/redisstore"
	"github.com/nightona/nightona/session"
)

func TestMain(m *testing.M) { testenv.Main(m) }

var testKey = []byte("0123456789abcdef0123456789abcdef")

// fakeSessions is a session manager with one log per session, kept in memory.
type fakeSessions struct {
	mu       sync.Mutex
	sessions map[string]*session.Session
	logs     map[string][]session.Event
	calls    []string
	admins   []string
	usage    map[string]session.Usage // "scope/key"
}

var _ Admin = (*fakeSessions)(nil)
var _ CompanionSessions = (*fakeSessions)(nil)

func newFake() *fakeSessions {
	f := &fakeSessions{sessions: map[string]*session.Session{}, logs: map[string][]session.Event{}, admins: []string{"slack:UADMIN"},
		usage: map[string]session.Usage{"all/": {Turns: 4, CostUSD: 0.8}, "user/slack:U1": {Turns: 3, CostUSD: 0.3}, "user/slack:U9": {Turns: 1, CostUSD: 0.5}, "channel/slack:T1:C1": {Turns: 3, CostUSD: 0.3}}}
	now := time.Now()
	f.sessions["ses_1"] = &session.Session{ID: "ses_1", Thread: "slack:T1:C1:1.1", Owner: "slack:U1", State: session.StateIdle,
		PreviewURL: "http://preview.example/", RelayID: "r_secret", Fence: 7, CreatedAt: now.Add(-time.Hour), UpdatedAt: now, LastSeq: 5,
		Usage: session.Usage{Turns: 3, CostUSD: 0.3}}
	f.sessions["ses_2"] = &session.Session{ID: "ses_2", Thread: "discord:G:T", Owner: "discord:9", State: session.StateStopped, CreatedAt: now}
	for i := int64(1); i <= 5; i++ {
		f.logs["ses_1"] = append(f.logs["ses_1"], session.Event{Seq: i, Kind: session.KindStatus, Data: json.RawMessage(fmt.Sprintf(`{"stage":"s%d"}`, i))})
	}
	return f
}

func (f *fakeSessions) Get(_ context.Context, id string) (*session.Session, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	s, ok := f.sessions[id]
	if !ok {
		return nil, session.ErrNotFound
	}
	c := *s
	return &c, nil
}

func (f *fakeSessions) Events(ctx context.Context, id string, after int64, max int, block time.Duration) ([]session.Event, error) {
	f.mu.Lock()
	var out []session.Event
	for _, e := range f.logs[id] {
		if e.Seq > after && len(out) < max {
			out = append(out, e)
		}
	}
	f.mu.Unlock()
	if len(out) == 0 && block > 0 {
		select {
		case <-ctx.Done():
		case <-time.After(min(block, 50*time.Millisecond)):
		}
	}
	return out, nil
}

func (f *fakeSessions) List(context.Context) ([]*session.Session, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []*session.Session
	for _, s := range f.sessions {
		c := *s
		out = append(out, &c)
	}
	return out, nil
}

func (f *fakeSessions) record(call string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, call)
}

func (f *fakeSessions) Stop(_ context.Context, thread, user string) error {
	f.record("stop " + thread + " " + user)
	return nil
}

func (f *fakeSessions) Destroy(_ context.Context, thread, user string) error {
	if user == "web:local" {
		return fmt.Errorf("%w: only the person who started this session or an admin may destroy it", session.ErrForbidden)
	}
	f.record("destroy " + thread + " " + user)
	return nil
}

func (f *fakeSessions) Usage(_ context.Context, scope, key string, _ time.Time) (session.Usage, error) {
	if scope == "all" {
		key = ""
	}
	return f.usage[scope+"/"+key], nil
}

func (f *fakeSessions) UsageBy(_ context.Context, scope string, _ time.Time) (map[string]session.Usage, error) {
	out := map[string]session.Usage{}
	for k, u := range f.usage {
		if s, key, _ := strings.Cut(k, "/"); s == scope {
			out[key] = u
		}
	}
	return out, nil
}

func (f *fakeSessions) IsAdmin(user string) bool {
	for _, a := range f.admins {
		if a == user {
			return true
		}
	}
	return false
}

type waker struct{ f *fakeSessions }

func (w waker) Wake(_ context.Context, thread, user string) error {
	w.f.record("wake " + thread + " " + user)
	return nil
}

// site is the pages on a test server, with a client that keeps cookies and does not follow
// redirects.
type site struct {
	t      *testing.T
	url    string
	links  *Links
	client *http.Client
	fake   *fakeSessions
	now    time.Time
}

func newSite(t *testing.T, dash DashboardConfig) *site {
	t.Helper()
	f := newFake()
	s := &site{t: t, fake: f, now: time.Now()}
	s.links = NewLinks(testKey, "", time.Hour)
	s.links.now = func() time.Time { return s.now }
	r := chi.NewRouter()
	MountAssets(r)
	c := NewCompanion(f, s.links, CompanionConfig{FollowBlock: 50 * time.Millisecond})
	c.Mount(r)
	t.Cleanup(c.Close)
	if dash.Once == nil {
		dash.Once = redisOnce(t)
	}
	dash.Secret = testKey
	d, err := NewDashboard(f, s.links, dash)
	if err != nil {
		t.Fatal(err)
	}
	d.Mount(r)
	srv := httptest.NewServer(r)
	t.Cleanup(srv.Close)
	s.url = srv.URL
	jar := newJar(t)
	s.client = &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	return s
}

// do makes a request as a browser on another machine (a Host that is not loopback's).
func (s *site) do(method, path string, body io.Reader, ctype string) (*http.Response, string) {
	s.t.Helper()
	req, err := http.NewRequest(method, s.url+path, body)
	if err != nil {
		s.t.Fatal(err)
	}
	req.Host = "nightona.test"
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	resp, err := s.client.Do(req)
	if err != nil {
		s.t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return resp, string(data)
}

func (s *site) get(path string) (*http.Response, string) { return s.do(http.MethodGet, path, nil, "") }

// path returns the path and query of a link made by s.links.
func path(link string) string {
	u, _ := url.Parse(link)
	return u.RequestURI()
}

func TestSessionPageAccess(t *testing.T) {
	s := newSite(t, DashboardConfig{})
	link := path(s.links.Session("ses_1"))

	// Without the link: nothing, by id or otherwise.
	for _, p := range []string{"/s/ses_1/", "/s/ses_1/api/session", "/s/ses_1/api/events"} {
		if resp, _ := s.get(p); resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("GET %s without a pass: %d", p, resp.StatusCode)
		}
	}
	tampered := strings.Replace(link, "sig=", "sig=A", 1)
	resp, body := s.get(tampered)
	if resp.StatusCode != http.StatusForbidden || !strings.Contains(body, "This link is not valid") || resp.Header.Get("Set-Cookie") != "" {
		t.Errorf("tampered link: %d %q", resp.StatusCode, body)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/html") {
		t.Errorf("tampered link answered %s, want a page", ct)
	}
	if resp, _ := s.get(strings.Replace(link, "ses_1", "ses_2", 1)); resp.StatusCode != http.StatusForbidden {
		t.Errorf("ses_1's link for ses_2: %d", resp.StatusCode)
	}

	// The link opens the page and leaves the signature behind.
	resp, _ = s.get(link)
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/s/ses_1/" {
		t.Fatalf("the link: %d to %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	ck := resp.Cookies()
	if len(ck) != 1 || ck[0].Path != "/s/ses_1/" || !ck[0].HttpOnly || ck[0].SameSite != http.SameSiteLaxMode || ck[0].MaxAge <= 0 || ck[0].MaxAge > 3601 {
		t.Fatalf("pass cookie %+v", ck)
	}
	resp, body = s.get("/s/ses_1/")
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, "session.js") {
		t.Fatalf("the page: %d", resp.StatusCode)
	}
	if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "frame-ancestors 'none'") || resp.Header.Get("Referrer-Policy") != "no-referrer" {
		t.Errorf("page headers %v", resp.Header)
	}
	resp, body = s.get("/s/ses_1/api/session")
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, `"preview_url":"http://preview.example/"`) || strings.Contains(body, "r_secret") || strings.Contains(body, "fence") {
		t.Fatalf("session API: %d %s", resp.StatusCode, body)
	}
	// The pass is for ses_1's path only; a forged cookie for ses_2 is refused.
	if resp, _ := s.get("/s/ses_2/api/session"); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("ses_1's pass on ses_2: %d", resp.StatusCode)
	}
	req, _ := http.NewRequest(http.MethodGet, s.url+"/s/ses_2/api/session", nil)
	req.AddCookie(&http.Cookie{Name: passCookie, Value: ck[0].Value})
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("ses_1's pass sent to ses_2: %v %v", resp.StatusCode, err)
	}

	// When the link's time is up, the link and the pass end.
	s.now = s.now.Add(time.Hour + time.Minute)
	if resp, body := s.get("/s/ses_1/api/session"); resp.StatusCode != http.StatusUnauthorized || !strings.Contains(body, "no_pass") {
		t.Errorf("an old pass: %d %s", resp.StatusCode, body)
	}
	resp, body = s.get(link)
	if resp.StatusCode != http.StatusGone || !strings.Contains(body, "This link has expired") {
		t.Errorf("an expired link: %d %q", resp.StatusCode, body)
	}
}

func TestSessionPageStream(t *testing.T) {
	s := newSite(t, DashboardConfig{})
	resp, _ := s.get(path(s.links.Session("ses_1")))
	cookie := resp.Cookies()[0]
	dial := func(after int) *websocket.Conn {
		u := strings.Replace(s.url, "http", "ws", 1) + fmt.Sprintf("/s/ses_1/api/events?after=%d", after)
		ws, resp, err := websocket.DefaultDialer.Dial(u, http.Header{"Cookie": {cookie.Name + "=" + cookie.Value}})
		if err != nil {
			t.Fatalf("dial: %v %v", err, resp)
		}
		t.Cleanup(func() { ws.Close() })
		return ws
	}
	read := func(ws *websocket.Conn) map[string]any {
		var m map[string]any
		_ = ws.SetReadDeadline(time.Now().Add(5 * time.Second))
		if err := ws.ReadJSON(&m); err != nil {
			t.Fatal(err)
		}
		return m
	}
	ws := dial(2)
	if m := read(ws); m["type"] != "session" || m["session"].(map[string]any)["relay_id"] != nil {
		t.Fatalf("first frame %v", m)
	}
	for want := 3.0; want <= 5; want++ {
		if m := read(ws); m["type"] != "event" || m["seq"] != want {
			t.Fatalf("frame %v, want event %v", m, want)
		}
	}
	s.fake.mu.Lock()
	delete(s.fake.sessions, "ses_1")
	s.fake.mu.Unlock()
	if m := read(ws); m["type"] != "gone" {
		t.Fatalf("after the session went: %v", m)
	}
	// Without the pass, no stream.
	u := strings.Replace(s.url, "http", "ws", 1) + "/s/ses_1/api/events"
	if _, resp, err := websocket.DefaultDialer.Dial(u, nil); err == nil || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("a stream without a pass: %v", err)
	}
}

func TestDashboardLogin(t *testing.T) {
	s := newSite(t, DashboardConfig{})
	if resp, body := s.get("/admin"); resp.StatusCode != http.StatusUnauthorized || !strings.Contains(body, "/nightona dashboard") {
		t.Fatalf("the dashboard without a login: %d %q", resp.StatusCode, body)
	}
	if resp, body := s.get("/admin/api/overview"); resp.StatusCode != http.StatusUnauthorized || !strings.Contains(body, "no_login") {
		t.Fatalf("the API without a login: %d %q", resp.StatusCode, body)
	}
	// A link for someone who is not an admin logs nobody in.
	if resp, _ := s.get(path(s.links.DashboardLogin("slack:U1"))); resp.StatusCode != http.StatusForbidden || len(resp.Cookies()) != 0 {
		t.Fatalf("a non-admin's link: %d", resp.StatusCode)
	}
	login := path(s.links.DashboardLogin("slack:UADMIN"))
	if resp, _ := s.get(strings.Replace(login, "UADMIN", "U1", 1)); resp.StatusCode != http.StatusForbidden {
		t.Fatalf("a link changed to another user: %d", resp.StatusCode)
	}
	resp, _ := s.get(login)
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/admin" {
		t.Fatalf("the login link: %d", resp.StatusCode)
	}
	if resp, body := s.get("/admin"); resp.StatusCode != http.StatusOK || !strings.Contains(body, "admin.js") {
		t.Fatalf("the dashboard after login: %d", resp.StatusCode)
	}
	// Once only, even in another browser.
	other := &http.Client{Jar: newJar(t), CheckRedirect: s.client.CheckRedirect}
	s.client, other = other, s.client
	if resp, body := s.get(login); resp.StatusCode != http.StatusGone || !strings.Contains(body, "already used") {
		t.Fatalf("the login link a second time: %d %q", resp.StatusCode, body)
	}
	s.client = other

	var ov struct {
		User     string
		CanWake  bool `json:"can_wake"`
		Sessions []sessionRow
		Usage    struct {
			All      session.Usage
			Users    []session.KeyUsage
			Channels []session.KeyUsage
		}
		Health []Check
	}
	resp, body := s.get("/admin/api/overview")
	if err := json.Unmarshal([]byte(body), &ov); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("overview: %d %s", resp.StatusCode, body)
	}
	if ov.User != "slack:UADMIN" || ov.CanWake || len(ov.Sessions) != 2 || ov.Sessions[0].ID != "ses_2" {
		t.Fatalf("overview %+v", ov)
	}
	row := ov.Sessions[1]
	if row.Owner != "slack:U1" || row.Platform != "slack" || row.Channel != "slack:T1:C1" || row.AgeSeconds < 3599 || row.Usage.CostUSD != 0.3 || !strings.Contains(row.Link, "/s/ses_1?exp=") {
		t.Fatalf("row %+v", row)
	}
	// Users are listed most expensive first, whether or not a session of theirs is left.
	if ov.Usage.All.Turns != 4 || len(ov.Usage.Users) != 2 || ov.Usage.Users[0].Key != "slack:U9" || ov.Usage.Users[1].Key != "slack:U1" || len(ov.Usage.Channels) != 1 {
		t.Fatalf("usage %+v", ov.Usage)
	}

	// Actions act as the admin, and want JSON (a cross-site form cannot send it).
	if resp, _ := s.do(http.MethodPost, "/admin/api/sessions/ses_1/stop", strings.NewReader("{}"), "text/plain"); resp.StatusCode != http.StatusUnsupportedMediaType {
		t.Fatalf("a form post: %d", resp.StatusCode)
	}
	for _, a := range []string{"stop", "destroy"} {
		if resp, body := s.do(http.MethodPost, "/admin/api/sessions/ses_1/"+a, strings.NewReader("{}"), "application/json"); resp.StatusCode != http.StatusAccepted {
			t.Fatalf("%s: %d %s", a, resp.StatusCode, body)
		}
	}
	if resp, body := s.do(http.MethodPost, "/admin/api/sessions/ses_2/wake", strings.NewReader("{}"), "application/json"); resp.StatusCode != http.StatusNotImplemented || !strings.Contains(body, "no_wake") {
		t.Fatalf("wake without a waker: %d %s", resp.StatusCode, body)
	}
	if resp, _ := s.do(http.MethodPost, "/admin/api/sessions/ses_9/stop", strings.NewReader("{}"), "application/json"); resp.StatusCode != http.StatusNotFound {
		t.Fatalf("stop of no session: %d", resp.StatusCode)
	}
	if got := strings.Join(s.fake.calls, "; "); got != "stop slack:T1:C1:1.1 slack:UADMIN; destroy slack:T1:C1:1.1 slack:UADMIN" {
		t.Fatalf("calls: %s", got)
	}
	s.now = s.now.Add(DashboardLoginTTL + time.Minute)
	if resp, body := s.get(path(s.links.DashboardLogin("slack:UADMIN"))); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("a fresh link later: %d %s", resp.StatusCode, body)
	}
	old := path(s.links.DashboardLogin("slack:UADMIN"))
	s.now = s.now.Add(DashboardLoginTTL + time.Second)
	if resp, _ := s.get(old); resp.StatusCode != http.StatusGone {
		t.Fatalf("an expired login link: %d", resp.StatusCode)
	}
}

// The operator, on the bot's machine, gets in as the console's user.
func TestDashboardLocal(t *testing.T) {
	health := HealthFunc(func(ctx context.Context) []Check {
		if _, ok := ctx.Deadline(); !ok {
			t.Error("health checked without a deadline")
		}
		return []Check{{Name: "Redis", Kind: "store", OK: true}}
	})
	s := newSite(t, DashboardConfig{Health: health})
	s.fake.admins = nil
	s.fake.mu.Lock()
	s.fake.sessions["ses_2"].Thread = "web:th_1"
	s.fake.mu.Unlock()
	local := &http.Client{}
	post := func(p string) (int, string) {
		resp, err := local.Post(s.url+p, "application/json", strings.NewReader("{}"))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	resp, err := local.Get(s.url + "/admin/api/overview")
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("overview from this machine: %v %v", resp, err)
	}
	var ov struct {
		User   string
		Health []Check
	}
	_ = json.NewDecoder(resp.Body).Decode(&ov)
	resp.Body.Close()
	if ov.User != "web:local" || len(ov.Health) != 1 || ov.Health[0].Name != "Redis" {
		t.Fatalf("overview %+v", ov)
	}
	// The manager decides what the operator may do to others' sessions.
	if status, body := post("/admin/api/sessions/ses_1/destroy"); status != http.StatusForbidden || !strings.Contains(body, "admin") {
		t.Fatalf("destroying another's session as web:local: %d %s", status, body)
	}

	// With a waker, Wake is offered and used.
	s2 := newSite(t, DashboardConfig{})
	s2.fake.mu.Lock()
	s2.fake.admins = nil
	s2.fake.mu.Unlock()
	d, _ := NewDashboard(s2.fake, s2.links, DashboardConfig{Once: onceFunc(func() bool { return true }), Secret: testKey, Waker: waker{s2.fake}})
	r := chi.NewRouter()
	d.Mount(r)
	srv := httptest.NewServer(r)
	defer srv.Close()
	resp, err = local.Post(srv.URL+"/admin/api/sessions/ses_2/wake", "application/json", strings.NewReader("{}"))
	if err != nil || resp.StatusCode != http.StatusAccepted {
		t.Fatalf("wake: %v %v", resp, err)
	}
	resp.Body.Close()
	if got := strings.Join(s2.fake.calls, "; "); got != "wake discord:G:T web:local" {
		t.Fatalf("calls: %s", got)
	}
}

type onceFunc func() bool

func (f onceFunc) Once(context.Context, string, time.Duration) (bool, error) { return f(), nil }

// redisOnce is the Once of a real Redis, under a key prefix of the test's own.
func redisOnce(t *testing.T) Once {
	t.Helper()
	rdb, err := redisstore.Open(testenv.RedisURL(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rdb.Close() })
	return redisstore.New(rdb, redisstore.Config{Prefix: testenv.Prefix(t)})
}

func newJar(t *testing.T) http.CookieJar {
	t.Helper()
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	return jar
}
