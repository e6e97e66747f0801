package pool_test

import (
	"context"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/nightona/nightona/internal/fakeagent"
	"github.com/nightona/nightona/internal/testenv"
	"github.com/nightona/nightona/sandbox"
	"github.com/nightona/nightona/sandbox/daytona"
	"github.com/nightona/nightona/sandbox/daytona/daytonatest"
	"github.com/nightona/nightona/sandbox/local"
	"github.com/nightona/nightona/sandbox/pool"
	"github.com/nightona/nightona/sandbox/sandboxtest"
)

func TestMain(m *testing.M) {
	if os.Getenv(fakeagent.EnvVar) != "" {
		fakeagent.Main()
	}
	testenv.Main(m)
}

func newLocal(t *testing.T) *local.Provider {
	t.Helper()
	p, err := local.New(local.Config{Dir: t.TempDir(), RelayBinary: testenv.RelayBinary(t), Claude: os.Args[0],
		Env: []string{fakeagent.EnvVar + "=1"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

func run(t *testing.T, p *pool.Pool) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = p.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
}

func waitReady(t *testing.T, p *pool.Pool, n int) {
	t.Helper()
	testenv.WaitFor(t, 20*time.Second, "the pool to fill", func() bool {
		r, _, err := p.Status(context.Background())
		return err == nil && r == n
	})
}

var spec = sandbox.Spec{Env: map[string]string{"A": "1"}, PermissionMode: "acceptEdits"}

func TestClaimAndRefill(t *testing.T) {
	prov := newLocal(t)
	p := pool.New(prov, pool.Config{Size: 2, Spec: spec, Interval: 100 * time.Millisecond, RefillDelay: time.Millisecond})
	run(t, p)
	waitReady(t, p, 2)
	pooled, _ := prov.List(context.Background(), map[string]string{pool.LabelPool: "1"})
	ids := map[string]bool{}
	for _, sb := range pooled {
		ids[sb.ID] = true
	}
	s := spec
	s.Labels = map[string]string{"nightona.session": "s1"}
	start := time.Now()
	sb, err := p.Create(context.Background(), s)
	if err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	if !ids[sb.ID] || sb.Labels["nightona.session"] != "s1" || sb.Labels[pool.LabelPool] != "" || sb.Relay == nil {
		t.Fatalf("claimed %+v, want one of the pooled sandboxes %v, relabelled, with its relay", sb, ids)
	}
	t.Logf("a pooled sandbox was handed out in %v", took)
	waitReady(t, p, 2) // refilled
	if got, _ := prov.List(context.Background(), map[string]string{"nightona.session": "s1"}); len(got) != 1 {
		t.Fatalf("the claimed sandbox is not listed as the session's: %v", got)
	}

	// Another spec is not served from the pool.
	other := sandbox.Spec{PermissionMode: "default", Labels: map[string]string{"nightona.session": "s2"}}
	sb2, err := p.Create(context.Background(), other)
	if err != nil {
		t.Fatal(err)
	}
	if ids[sb2.ID] {
		t.Fatal("a sandbox made with another spec came from the pool")
	}
	waitReady(t, p, 2)
}

func TestOldSandboxesAreRecycled(t *testing.T) {
	prov := newLocal(t)
	p := pool.New(prov, pool.Config{Size: 1, Spec: spec, MaxAge: 500 * time.Millisecond, Interval: 100 * time.Millisecond})
	run(t, p)
	waitReady(t, p, 1)
	first, _ := prov.List(context.Background(), map[string]string{pool.LabelPool: "1"})
	testenv.WaitFor(t, 10*time.Second, "the old sandbox to be replaced", func() bool {
		now, _ := prov.List(context.Background(), map[string]string{pool.LabelPool: "1"})
		return len(now) == 1 && now[0].ID != first[0].ID && now[0].State == sandbox.StateStarted
	})
	if _, err := prov.Get(context.Background(), first[0].ID); err == nil {
		t.Fatal("the recycled sandbox still exists")
	}
}

func TestEachSandboxIsHandedOutOnce(t *testing.T) {
	prov := newLocal(t)
	claims := &sharedClaimer{seen: map[string]bool{}}
	filler := pool.New(prov, pool.Config{Size: 3, Spec: spec, Interval: 50 * time.Millisecond, Claimer: claims})
	run(t, filler)
	waitReady(t, filler, 3)
	// Two replicas' pools over the same sandboxes, claiming at once.
	a := pool.New(prov, pool.Config{Size: 3, Spec: spec, Claimer: claims})
	b := pool.New(prov, pool.Config{Size: 3, Spec: spec, Claimer: claims})
	var mu sync.Mutex
	got := map[string]int{}
	var wg sync.WaitGroup
	for i, p := range []*pool.Pool{a, b, a, b} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := spec
			s.Labels = map[string]string{"nightona.session": string(rune('a' + i))}
			sb, err := p.Create(context.Background(), s)
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			got[sb.ID]++
			mu.Unlock()
		}()
	}
	wg.Wait()
	for id, n := range got {
		if n > 1 {
			t.Fatalf("sandbox %s was handed out %d times", id, n)
		}
	}
	if len(got) != 4 {
		t.Fatalf("%d sandboxes for 4 sessions", len(got))
	}
}

type sharedClaimer struct {
	mu   sync.Mutex
	seen map[string]bool
}

func (c *sharedClaimer) Claim(_ context.Context, id string) (bool, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.seen[id] {
		return false, nil
	}
	c.seen[id] = true
	return true, nil
}

// TestCapabilitiesOfTheWrappedProvider: a pool has what its provider has, found through
// sandbox.As, so sessions still sign previews and run processes through a pool.
func TestCapabilitiesOfTheWrappedProvider(t *testing.T) {
	prov := newLocal(t)
	p := pool.New(prov, pool.Config{Spec: spec})
	pv, ok := sandbox.As[sandbox.Previews](p)
	if !ok || pv != sandbox.Previews(prov) {
		t.Fatalf("As[Previews] of a pool = %v, %v; want the local provider", pv, ok)
	}
	if _, ok := sandbox.As[sandbox.Processes](p); !ok {
		t.Fatal("a pool of local sandboxes has no Processes")
	}
	if _, ok := sandbox.As[sandbox.Archiver](p); ok {
		t.Fatal("a pool of local sandboxes claims to archive, which local sandboxes cannot")
	}
}

// TestPoolOfDaytonaSandboxes: Daytona lists sandboxes without their relays, so the pool asks
// for each one before it counts it ready; a pooled Daytona sandbox is handed out with its relay.
func TestPoolOfDaytonaSandboxes(t *testing.T) {
	srv := daytonatest.New(t, daytonatest.Config{})
	prov, err := daytona.New(daytona.Config{APIURL: srv.APIURL, APIKey: srv.APIKey,
		RelayBinary: testenv.RelayBinary(t), Claude: os.Args[0], Env: map[string]string{fakeagent.EnvVar: "1"},
		PollInterval: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	p := pool.New(prov, pool.Config{Size: 1, Spec: spec, Interval: 100 * time.Millisecond, RefillDelay: time.Millisecond})
	run(t, p)
	waitReady(t, p, 1)
	s := spec
	s.Labels = map[string]string{"nightona.session": "d1"}
	sb, err := p.Create(context.Background(), s)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = prov.Delete(context.Background(), sb.ID) })
	if sb.Relay == nil || sb.Labels["nightona.session"] != "d1" {
		t.Fatalf("handed out %+v, want the pooled sandbox with its relay and the session's labels", sb)
	}
	sandboxtest.RelayAnswers(t, sb.Relay)
	if n := len(srv.Sandboxes()); n > 2 {
		t.Fatalf("%d sandboxes on Daytona: the pool made more than one to hand out and one to refill", n)
	}
	waitReady(t, p, 1)
}
