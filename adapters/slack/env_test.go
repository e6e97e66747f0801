package slack

import (
	"context"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nightona/nightona/adapters/slack/slacktest"
	"github.com/nightona/nightona/internal/fakeagent"
	"github.com/nightona/nightona/internal/testenv"
	"github.com/nightona/nightona/redisstore"
	"github.com/nightona/nightona/sandbox/local"
	"github.com/nightona/nightona/session"
)

func TestMain(m *testing.M) {
	if os.Getenv(fakeagent.EnvVar) != "" {
		fakeagent.Main()
	}
	testenv.Main(m)
}

const (
	owner    = "U0OWNER"
	stranger = "U0OTHER"
	admin    = "U0ADMIN"
	channel  = "C0GENERAL"
)

// env is the adapter in a bot: a real session manager on a real Redis, with local sandboxes
// whose agent is the stand-in CLI, and the Slack fake in place of Slack.
type env struct {
	t     *testing.T
	fake  *slacktest.Server
	store *redisstore.Store
	mgr   *session.Manager
	a     *Adapter
	stop  func()
	logs  *testenv.Buffer
}

type envOptions struct {
	fake    slacktest.Config
	adapter func(*Config)
	session func(*session.Config)
	// noFollow leaves the adapter out of the manager's followers: the test calls Follow.
	noFollow bool
}

func newEnv(t *testing.T, o envOptions) *env {
	t.Helper()
	fake := slacktest.New(o.fake)
	rdb, err := redisstore.Open(testenv.RedisURL(t))
	if err != nil {
		t.Fatal(err)
	}
	store := redisstore.New(rdb, redisstore.Config{Prefix: testenv.Prefix(t)})
	prov, err := local.New(local.Config{Dir: t.TempDir(), RelayBinary: testenv.RelayBinary(t), Claude: os.Args[0],
		Env: []string{fakeagent.EnvVar + "=1"}})
	if err != nil {
		t.Fatal(err)
	}
	logs := &testenv.Buffer{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	scfg := session.Config{Logger: log, Admins: []string{"slack:" + admin}, RelayReconnect: time.Second, StopSandboxesOnShutdown: true}
	if o.session != nil {
		o.session(&scfg)
	}
	mgr, err := session.NewManager(store, prov, scfg)
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{Logger: log, BotToken: fake.Config().BotToken, AppToken: fake.Config().AppToken, APIURL: fake.APIURL,
		Links: testLinks{}, UpdateEvery: 200 * time.Millisecond}
	if o.adapter != nil {
		o.adapter(&cfg)
	}
	a, err := New(mgr, store, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if !o.noFollow {
		mgr.AddFollower(a)
	}
	mctx, stopMgr := context.WithCancel(context.Background())
	actx, stopAdapter := context.WithCancel(context.Background())
	mdone, adone := make(chan struct{}), make(chan error, 1)
	go func() { _ = mgr.Run(mctx); close(mdone) }()
	go func() { adone <- a.Run(actx) }()
	e := &env{t: t, fake: fake, store: store, mgr: mgr, a: a, logs: logs}
	var once sync.Once
	e.stop = func() {
		once.Do(func() {
			stopMgr()
			<-mdone
			stopAdapter()
			if err := <-adone; err != nil {
				t.Errorf("adapter Run: %v", err)
			}
			fake.Close()
			prov.Close()
			rdb.Close()
		})
	}
	t.Cleanup(func() {
		e.stop()
		if t.Failed() {
			t.Logf("logs:\n%s", logs.String())
		}
	})
	if cfg.AppToken != "" && !fake.WaitConnected(1, 10*time.Second) {
		t.Fatal("the adapter did not connect over Socket Mode")
	}
	return e
}

type testLinks struct{}

func (testLinks) DashboardLogin(user string) string {
	return "https://nightona.example/admin/login?user=" + user + "&sig=x"
}

func (testLinks) Session(id string) string {
	return "https://nightona.example/s/" + id + "?exp=1&sig=x"
}

// mention posts a person's message that mentions the bot in channel and delivers its
// app_mention over Socket Mode; it returns the thread's ts.
func (e *env) mention(ch, user, text string) string {
	e.t.Helper()
	text = "<@" + e.fake.Config().BotUserID + "> " + text
	ts := e.fake.PostUserMessage(ch, user, text, "")
	_, envelope := e.fake.SendEvent(e.fake.AppMention(ch, user, text, ts, ""))
	e.acked(envelope)
	return ts
}

// reply posts a reply in a thread and delivers its message event.
func (e *env) reply(ch, user, text, threadTS string) {
	e.t.Helper()
	ts := e.fake.PostUserMessage(ch, user, text, threadTS)
	_, envelope := e.fake.SendEvent(e.fake.MessageEvent("channel", ch, user, text, ts, threadTS))
	e.acked(envelope)
}

// acked checks that an envelope was acknowledged within Slack's 3 seconds, on its first
// delivery.
func (e *env) acked(envelope string) slacktest.Ack {
	e.t.Helper()
	ack, ok := e.fake.WaitAck(envelope, 3*time.Second)
	if !ok {
		e.t.Fatalf("envelope %s was not acknowledged within 3 s", envelope)
	}
	if ack.Attempt != 0 {
		e.t.Fatalf("envelope %s was acknowledged only on retry %d", envelope, ack.Attempt)
	}
	return ack
}

// content is what the bot's messages in a thread say, in order.
func (e *env) content(ch, ts string) string {
	var b strings.Builder
	for _, m := range e.fake.BotMessages(ch, ts) {
		b.WriteString(m.Content())
		b.WriteString("\n---\n")
	}
	return b.String()
}

// waitContent waits until the bot's messages in the thread contain every one of want.
func (e *env) waitContent(ch, ts string, timeout time.Duration, want ...string) string {
	e.t.Helper()
	var got string
	defer func() {
		if e.t.Failed() {
			e.t.Logf("the thread shows:\n%s", got)
		}
	}()
	testenv.WaitFor(e.t, timeout, "the thread to show "+strings.Join(want, ", "), func() bool {
		got = e.content(ch, ts)
		for _, w := range want {
			if !strings.Contains(got, w) {
				return false
			}
		}
		return true
	})
	return got
}

// press presses the button actionID of the bot message in the thread that has it, as user,
// over Socket Mode.
func (e *env) press(ch, ts, user, actionID string) {
	e.t.Helper()
	e.pressOn(e.withButton(ch, ts, actionID), user, actionID)
}

// withButton waits for the bot message in the thread that has the button actionID.
func (e *env) withButton(ch, ts, actionID string) slacktest.Message {
	e.t.Helper()
	var msg slacktest.Message
	testenv.WaitFor(e.t, 10*time.Second, "a message with the button "+actionID, func() bool {
		for _, m := range e.fake.BotMessages(ch, ts) {
			if m.Button(actionID) != nil {
				msg = m
				return true
			}
		}
		return false
	})
	return msg
}

// pressOn presses the button actionID of msg as it was (a message someone still sees, say), as
// user, over Socket Mode.
func (e *env) pressOn(msg slacktest.Message, user, actionID string) {
	e.t.Helper()
	e.acked(e.fake.SendInteraction(e.fake.BlockAction(user, msg, actionID)))
}

// noStop waits for the thread's Stop to go once its turn has ended (in stream mode the message
// that holds it is deleted just after the footer lands).
func (e *env) noStop(ch, ts string) {
	e.t.Helper()
	testenv.WaitFor(e.t, 10*time.Second, "the Stop to go", func() bool {
		for _, m := range e.fake.BotMessages(ch, ts) {
			if m.Button(actionStop) != nil {
				return false
			}
		}
		return true
	})
}

// session returns the thread's session.
func (e *env) session(ch, ts string) *session.Session {
	e.t.Helper()
	s, err := e.mgr.Session(context.Background(), thread{Team: e.fake.Config().TeamID, Channel: ch, TS: ts}.key())
	if err != nil {
		e.t.Fatal(err)
	}
	return s
}

// ephemeral waits for an ephemeral message to user that contains want.
func (e *env) ephemeral(user, want string) slacktest.Message {
	e.t.Helper()
	var found slacktest.Message
	testenv.WaitFor(e.t, 10*time.Second, "an ephemeral message to "+user+" saying "+want, func() bool {
		for _, m := range e.fake.Ephemerals(user) {
			if strings.Contains(m.Text, want) {
				found = m
				return true
			}
		}
		return false
	})
	return found
}

func calls(fake *slacktest.Server, method string) int { return len(fake.Calls(method)) }
