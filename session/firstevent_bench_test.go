package session_test

import (
	"context"
	"fmt"
	"maps"
	"net/http/httptest"
	"slices"
	"testing"
	"time"

	"github.com/nightona/nightona/internal/testenv"
	"github.com/nightona/nightona/redisstore"
	"github.com/nightona/nightona/sandbox"
	"github.com/nightona/nightona/sandbox/daytona"
	"github.com/nightona/nightona/sandbox/daytona/daytonatest"
	"github.com/nightona/nightona/sandbox/local"
	"github.com/nightona/nightona/sandbox/pool"
	"github.com/nightona/nightona/scriptedmodel"
	"github.com/nightona/nightona/session"
)

// firstEventProviders are the providers the first-event benchmark compares, by name; each
// returns a provider and the environment its sandboxes need to reach the scripted model.
var firstEventProviders = map[string]func(b *testing.B, modelURL string) sandbox.Provider{
	"local": func(b *testing.B, modelURL string) sandbox.Provider {
		p, err := local.New(local.Config{Dir: b.TempDir(), RelayBinary: testenv.RelayBinary(b), Claude: testenv.Claude(b)})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { p.Close() })
		return p
	},
	// Daytona as the fake plays it: the real relay and CLI run on this machine behind its
	// toolbox and preview proxy, and creating a sandbox takes the fake's CreateDelay (real
	// Daytona takes longer: the pool saves more there).
	"daytona": func(b *testing.B, modelURL string) sandbox.Provider {
		srv := daytonatest.New(b, daytonatest.Config{CreateDelay: time.Second})
		p, err := daytona.New(daytona.Config{APIURL: srv.APIURL, APIKey: srv.APIKey,
			RelayBinary: testenv.RelayBinary(b), Claude: testenv.Claude(b), PollInterval: 50 * time.Millisecond})
		if err != nil {
			b.Fatal(err)
		}
		return p
	},
}

// BenchmarkFirstEvent measures the time from a thread's first prompt to the first event Claude
// Code prints (its system/init line), with the real CLI against the scripted model, on each
// provider with and without a warm pool of one sandbox, and prints the ratio.
func BenchmarkFirstEvent(b *testing.B) {
	const rounds = 5
	model := httptest.NewServer(scriptedmodel.New(scriptedmodel.Config{}))
	defer model.Close()
	env := map[string]string{
		"ANTHROPIC_BASE_URL": model.URL, "ANTHROPIC_API_KEY": "test",
		"DISABLE_TELEMETRY": "1", "DISABLE_AUTOUPDATER": "1", "DISABLE_ERROR_REPORTING": "1",
		"CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
	}
	rdb, err := redisstore.Open(testenv.RedisURL(b))
	if err != nil {
		b.Fatal(err)
	}
	defer rdb.Close()
	for _, name := range slices.Sorted(maps.Keys(firstEventProviders)) {
		medians := map[bool]time.Duration{}
		for _, warm := range []bool{false, true} {
			prov := firstEventProviders[name](b, model.URL)
			st := redisstore.New(rdb, redisstore.Config{Prefix: testenv.Prefix(b)})
			size := 0
			if warm {
				size = 1
			}
			wp := pool.New(prov, pool.Config{Size: size, Spec: sandbox.Spec{Env: env, PermissionMode: "acceptEdits"},
				Interval: 100 * time.Millisecond, RefillDelay: 100 * time.Millisecond})
			mgr, err := session.NewManager(st, wp, session.Config{SandboxEnv: env, PermissionMode: "acceptEdits"})
			if err != nil {
				b.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{}, 2)
			go func() { _ = mgr.Run(ctx); done <- struct{}{} }()
			go func() { _ = wp.Run(ctx); done <- struct{}{} }()
			var times []time.Duration
			for r := 0; r < rounds; r++ {
				if warm {
					testenv.WaitFor(b, 60*time.Second, "a ready sandbox in the pool", func() bool {
						n, _, _ := wp.Status(ctx)
						return n == 1
					})
					// A pooled sandbox waits minutes, not milliseconds, for its prompt: let the
					// Claude Code it started ahead finish loading, as it will have in use.
					time.Sleep(2 * time.Second)
				}
				start := time.Now()
				sub, err := mgr.Submit(ctx, fmt.Sprintf("web:first%d", r), "web:bench", "scenario:text hi")
				if err != nil {
					b.Fatal(err)
				}
				var first time.Duration
				for after := int64(0); first == 0; {
					evs, err := mgr.Events(ctx, sub.Session.ID, after, 100, 30*time.Second)
					if err != nil || len(evs) == 0 {
						b.Fatalf("no agent event: %v", err)
					}
					for _, ev := range evs {
						after = ev.Seq
						if ev.Kind == session.KindAgent && first == 0 {
							first = time.Since(start)
						}
					}
				}
				times = append(times, first)
			}
			cancel()
			<-done
			<-done
			st.Shutdown()
			slices.Sort(times)
			medians[warm] = times[len(times)/2]
			label := "cold"
			if warm {
				label = "pooled"
			}
			b.ReportMetric(float64(medians[warm].Microseconds())/1000, name+"-"+label+"-ms")
		}
		fmt.Printf("first prompt to first agent event on %s: %v without a pool, %v with one (%.1fx faster)\n",
			name, medians[false].Round(time.Millisecond), medians[true].Round(time.Millisecond),
			float64(medians[false])/float64(medians[true]))
	}
	b.ReportMetric(0, "ns/op")
}
