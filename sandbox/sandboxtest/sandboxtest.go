// Package sandboxtest is the conformance suite every sandbox.Provider passes: run it from the
// provider's tests with a provider whose relays can run.
package sandboxtest

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/nightona/nightona/relay"
	"github.com/nightona/nightona/sandbox"
)

// Run runs the suite against the provider newProvider makes (one per subtest).
func Run(t *testing.T, newProvider func(t *testing.T) sandbox.Provider) {
	t.Run("Lifecycle", func(t *testing.T) { testLifecycle(t, newProvider(t)) })
	t.Run("ListByLabel", func(t *testing.T) { testList(t, newProvider(t)) })
	t.Run("NotFound", func(t *testing.T) { testNotFound(t, newProvider(t)) })
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return c
}

// RelayAnswers checks that the endpoint's relay speaks the protocol with the token and refuses
// a connection without it.
func RelayAnswers(t *testing.T, ep *sandbox.Endpoint) {
	t.Helper()
	if ep == nil {
		t.Fatal("no relay endpoint")
	}
	u := strings.Replace(ep.URL, "http", "ws", 1) + relay.StreamPath
	hdr := http.Header{}
	for k, v := range ep.Header {
		hdr[k] = v
	}
	if _, resp, err := websocket.DefaultDialer.Dial(u, hdr); err == nil || resp == nil || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("relay without a token: err %v resp %v, want 401", err, resp)
	}
	hdr.Set("Authorization", "Bearer "+ep.Token)
	ws, _, err := websocket.DefaultDialer.Dial(u, hdr)
	if err != nil {
		t.Fatalf("relay with its token: %v", err)
	}
	defer ws.Close()
	var hello relay.Hello
	if err := ws.ReadJSON(&hello); err != nil || hello.Type != relay.TypeHello || hello.Protocol != relay.ProtocolVersion {
		t.Fatalf("hello %+v err %v", hello, err)
	}
}

func relayGone(t *testing.T, ep *sandbox.Endpoint) {
	t.Helper()
	c := relay.NewClient(relay.Endpoint{URL: ep.URL, Token: ep.Token, Header: ep.Header}, relay.ClientConfig{ReconnectTimeout: 300 * time.Millisecond})
	err := c.Run(ctx(t), relay.Cursor{}, relay.Handlers{OnEvent: func(relay.Event) error { return nil }})
	if !errors.Is(err, relay.ErrUnreachable) {
		t.Fatalf("relay of a stopped sandbox: %v, want unreachable", err)
	}
}

func testLifecycle(t *testing.T, p sandbox.Provider) {
	labels := map[string]string{"nightona.thread": "web:conformance", "nightona.session": "s1"}
	sb, err := p.Create(ctx(t), sandbox.Spec{Labels: labels})
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	t.Cleanup(func() { _ = p.Delete(context.Background(), sb.ID) })
	if sb.ID == "" || sb.State != sandbox.StateStarted || sb.CreatedAt.IsZero() {
		t.Fatalf("created %+v, want an id, started, a creation time", sb)
	}
	if !sandbox.MatchLabels(sb.Labels, labels) {
		t.Fatalf("labels %v, want %v", sb.Labels, labels)
	}
	RelayAnswers(t, sb.Relay)

	got, err := p.Get(ctx(t), sb.ID)
	if err != nil || got.State != sandbox.StateStarted || got.Relay == nil || got.Relay.URL != sb.Relay.URL {
		t.Fatalf("get: %+v %v", got, err)
	}

	if err := p.Stop(ctx(t), sb.ID); err != nil {
		t.Fatalf("stop: %v", err)
	}
	got, err = p.Get(ctx(t), sb.ID)
	if err != nil || got.State != sandbox.StateStopped || got.Relay != nil {
		t.Fatalf("after stop: %+v %v, want stopped with no relay", got, err)
	}
	relayGone(t, sb.Relay)

	started, err := p.Start(ctx(t), sb.ID)
	if err != nil {
		t.Fatalf("start: %v", err)
	}
	if started.State != sandbox.StateStarted {
		t.Fatalf("after start: %+v", started)
	}
	RelayAnswers(t, started.Relay)
	if started.Relay.Token == sb.Relay.Token {
		t.Fatal("a restarted relay kept its old token")
	}
	again, err := p.Start(ctx(t), sb.ID)
	if err != nil || again.Relay.URL != started.Relay.URL || again.Relay.Token != started.Relay.Token {
		t.Fatalf("starting a started sandbox changed it: %+v %v", again, err)
	}

	if err := p.Delete(ctx(t), sb.ID); err != nil {
		t.Fatalf("delete: %v", err)
	}
	if _, err := p.Get(ctx(t), sb.ID); !errors.Is(err, sandbox.ErrNotFound) {
		t.Fatalf("get after delete: %v, want ErrNotFound", err)
	}
	relayGone(t, started.Relay)
	if err := p.Delete(ctx(t), sb.ID); err != nil {
		t.Fatalf("deleting twice: %v", err)
	}
}

func testList(t *testing.T, p sandbox.Provider) {
	a, err := p.Create(ctx(t), sandbox.Spec{Labels: map[string]string{"team": "a", "n": "1"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Delete(context.Background(), a.ID) })
	b, err := p.Create(ctx(t), sandbox.Spec{Labels: map[string]string{"team": "b", "n": "2"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Delete(context.Background(), b.ID) })
	got, err := p.List(ctx(t), map[string]string{"team": "b"})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].ID != b.ID {
		t.Fatalf("list team=b: %+v, want only %s", got, b.ID)
	}
	all, err := p.List(ctx(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	ids := map[string]bool{}
	for _, s := range all {
		ids[s.ID] = true
	}
	if !ids[a.ID] || !ids[b.ID] {
		t.Fatalf("list all: %v, want both", ids)
	}
}

func testNotFound(t *testing.T, p sandbox.Provider) {
	for name, err := range map[string]error{
		"get":   func() error { _, err := p.Get(ctx(t), "no-such-sandbox"); return err }(),
		"start": func() error { _, err := p.Start(ctx(t), "no-such-sandbox"); return err }(),
		"stop":  p.Stop(ctx(t), "no-such-sandbox"),
	} {
		if !errors.Is(err, sandbox.ErrNotFound) {
			t.Errorf("%s of an unknown sandbox: %v, want ErrNotFound", name, err)
		}
	}
	if err := p.Delete(ctx(t), "no-such-sandbox"); err != nil {
		t.Errorf("delete of an unknown sandbox: %v, want nil", err)
	}
}
