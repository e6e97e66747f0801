package relay_test

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nightona/nightona/internal/testenv"
	"github.com/nightona/nightona/relay"
)

func previewNotices(c *collector) []relay.RelayNotice {
	return noticesOf(c.snapshot(), relay.EventPreview)
}

func hasState(ns []relay.RelayNotice, state string) bool {
	for _, n := range ns {
		if n.State == state {
			return true
		}
	}
	return false
}

func TestPreviewStartsAndAnswers(t *testing.T) {
	port, err := testenv.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	// A dev server that takes a moment to listen, as real ones do.
	cmd := `sleep 0.3; exec node -e "require('http').createServer((q,s)=>s.end('app')).listen(process.env.PORT)"`
	h := startRelay(t, relay.Config{Agent: fakeAgent(), Preview: relay.PreviewConfig{Command: cmd, Port: port}})
	c := collect(t, h.endpoint(), relay.Cursor{}, relay.ClientConfig{})
	testenv.WaitFor(t, 20*time.Second, "the dev server to be ready", func() bool { return hasState(previewNotices(c), relay.PreviewReady) })
	ns := previewNotices(c)
	if ns[0].State != relay.PreviewStarting || ns[0].Port != port {
		t.Fatalf("first preview notice %+v, want starting on %d", ns[0], port)
	}
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/", port))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	// A client connecting now learns the state from hello.
	late := collect(t, h.endpoint(), relay.Cursor{}, relay.ClientConfig{})
	testenv.WaitFor(t, 5*time.Second, "hello", func() bool { late.mu.Lock(); defer late.mu.Unlock(); return len(late.connects) > 0 })
	late.mu.Lock()
	st := late.connects[0].Hello.Preview
	late.mu.Unlock()
	if !st.Enabled || st.State != relay.PreviewReady || st.Port != port {
		t.Fatalf("hello's preview state %+v", st)
	}

	// Stopping the relay stops the dev server.
	h.cancel()
	<-h.done
	testenv.WaitFor(t, 10*time.Second, "the dev server to stop", func() bool {
		_, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/", port))
		return err != nil
	})
	testenv.WaitFor(t, 5*time.Second, "the stopped notice", func() bool { return hasState(previewNotices(c), relay.PreviewStopped) })
}

func TestPreviewCrashIsReportedAndRestarted(t *testing.T) {
	port, err := testenv.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	cmd := `echo "compiling..."; echo "Error: Cannot find module './App'" >&2; exit 4`
	h := startRelay(t, relay.Config{Agent: fakeAgent(), Preview: relay.PreviewConfig{Command: cmd, Port: port}})
	c := collect(t, h.endpoint(), relay.Cursor{}, relay.ClientConfig{})
	var crashes []relay.RelayNotice
	testenv.WaitFor(t, 15*time.Second, "two crashes", func() bool {
		crashes = nil
		for _, n := range previewNotices(c) {
			if n.State == relay.PreviewCrashed {
				crashes = append(crashes, n)
			}
		}
		return len(crashes) >= 2
	})
	first := crashes[0]
	if first.Code == nil || *first.Code != 4 || !strings.Contains(first.Log, "Cannot find module './App'") || !strings.Contains(first.Log, "compiling...") {
		t.Fatalf("crash notice %+v, want exit 4 with the last log lines", first)
	}
	if crashes[1].Restarts != 2 {
		t.Fatalf("second crash counts %d restarts", crashes[1].Restarts)
	}
}
