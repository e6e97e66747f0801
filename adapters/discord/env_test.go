package discord_test

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/nightona/nightona/adapters/discord"
	"github.com/nightona/nightona/adapters/discord/discordtest"
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

// env is a Discord adapter on a fake Discord, with a real Redis, a real session manager and
// local sandboxes whose agent is the stand-in CLI (fast; cmd/bot's tests run the real one).
type env struct {
	t       *testing.T
	fake    *discordtest.Server
	store   *redisstore.Store
	mgr     *session.Manager
	adapter *discord.Adapter
	guild   string
	channel discordtest.Channel
	owner   discordtest.User
	other   discordtest.User
	admin   discordtest.User
	stop    func()
	runErr  chan error
}

type envConfig struct {
	fake    discordtest.Config
	adapter discord.Config
	session session.Config
	prefix  string // a store prefix to share with another env
}

func newEnv(t *testing.T, c envConfig) *env {
	t.Helper()
	if c.fake.HeartbeatInterval == 0 {
		c.fake.HeartbeatInterval = 500 * time.Millisecond
	}
	if c.fake.RouteWindow == 0 {
		c.fake.RouteWindow = time.Second
	}
	fake := discordtest.New(c.fake)
	t.Cleanup(fake.Close)
	e := &env{t: t, fake: fake, runErr: make(chan error, 1)}
	e.guild, e.channel = fake.AddGuild("Acme", "general")
	e.owner, e.other, e.admin = fake.AddUser("olivia"), fake.AddUser("oscar"), fake.AddUser("ada")

	rdb, err := redisstore.Open(testenv.RedisURL(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rdb.Close() })
	if c.prefix == "" {
		c.prefix = testenv.Prefix(t)
	}
	e.store = redisstore.New(rdb, redisstore.Config{Prefix: c.prefix})
	prov, err := local.New(local.Config{
		Dir: t.TempDir(), RelayBinary: testenv.RelayBinary(t), Claude: os.Args[0],
		Env: []string{fakeagent.EnvVar + "=1"},
	})
	if err != nil {
		t.Fatal(err)
	}
	sc := c.session
	sc.RelayReconnect = time.Second
	sc.StopSandboxesOnShutdown = true
	sc.Admins = append(sc.Admins, "discord:"+e.admin.ID)
	e.mgr, err = session.NewManager(e.store, prov, sc)
	if err != nil {
		t.Fatal(err)
	}
	ac := c.adapter
	ac.Token = fake.Token()
	ac.AppID = fake.AppID()
	ac.HTTPClient = fake.Client() // the default API URL, discord.com, goes to the fake
	if ac.UpdateEvery == 0 {
		ac.UpdateEvery = 100 * time.Millisecond
	}
	if ac.CompanionLink == nil {
		ac.CompanionLink = func(id string) string { return "https://nightona.example/s/" + id }
	}
	if ac.DashboardLink == nil {
		ac.DashboardLink = func(user string) string { return "https://nightona.example/admin/login?user=" + user }
	}
	e.adapter, err = discord.New(e.mgr, e.store, ac)
	if err != nil {
		t.Fatal(err)
	}
	e.mgr.AddFollower(e.adapter)

	mctx, stopMgr := context.WithCancel(context.Background())
	actx, stopAdapter := context.WithCancel(context.Background())
	mgrDone := make(chan struct{})
	go func() { _ = e.mgr.Run(mctx); close(mgrDone) }()
	go func() { e.runErr <- e.adapter.Run(actx) }()
	stopped := false
	e.stop = func() {
		if stopped {
			return
		}
		stopped = true
		stopMgr()
		<-mgrDone // the followers show the last state first
		stopAdapter()
		select {
		case <-e.runErr:
		case <-time.After(20 * time.Second):
			t.Error("the adapter's Run did not return")
		}
		prov.Close()
	}
	t.Cleanup(e.stop)
	e.waitConnected(1)
	return e
}

// waitConnected waits until the adapter's Gateway session is up (READY or RESUMED).
func (e *env) waitConnected(identifies int) {
	e.t.Helper()
	testenv.WaitFor(e.t, 10*time.Second, "the Gateway to connect", func() bool {
		up, _ := e.adapter.Connected()
		return up && e.fake.GatewayStats().Identifies >= identifies
	})
}

func (e *env) mention() string { return "<@" + e.fake.Bot().ID + ">" }

// startThread mentions the bot with text and returns the thread it opens.
func (e *env) startThread(text string) (discordtest.Message, discordtest.Channel) {
	e.t.Helper()
	m := e.fake.Say(e.channel.ID, e.owner.ID, e.mention()+" "+text)
	var th discordtest.Channel
	testenv.WaitFor(e.t, 10*time.Second, "a thread from the mention", func() bool {
		ths := e.fake.Threads(e.channel.ID)
		if len(ths) > 0 {
			th = ths[0]
		}
		return len(ths) > 0
	})
	return m, th
}

// waitMessage waits until a bot message in the channel satisfies cond, and returns it.
func (e *env) waitMessage(channelID, what string, cond func(discordtest.Message) bool) discordtest.Message {
	e.t.Helper()
	var found discordtest.Message
	testenv.WaitFor(e.t, 30*time.Second, what, func() bool {
		for _, m := range e.fake.BotMessages(channelID) {
			if cond(m) {
				found = m
				return true
			}
		}
		return false
	})
	return found
}

// waitDone waits for the nth result embed in the channel (from 1).
func (e *env) waitDone(channelID string, n int) []discordtest.Message {
	e.t.Helper()
	var msgs []discordtest.Message
	testenv.WaitFor(e.t, 30*time.Second, "a turn's result", func() bool {
		msgs = e.fake.BotMessages(channelID)
		done := 0
		for _, m := range msgs {
			if len(m.Embeds) > 0 {
				done++
			}
		}
		return done >= n
	})
	return msgs
}

func (e *env) thread(th discordtest.Channel) string {
	return "discord:" + e.guild + ":" + e.channel.ID + ":" + th.ID
}

func hasEmbed(title string) func(discordtest.Message) bool {
	return func(m discordtest.Message) bool { return len(m.Embeds) > 0 && m.Embeds[0].Title == title }
}

func contains(s string) func(discordtest.Message) bool {
	return func(m discordtest.Message) bool { return strings.Contains(m.Content, s) }
}

// waitResponse waits for the bot's first answer to an interaction.
func (e *env) waitResponse(ix *discordtest.Interaction) *discordtest.Response {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r, err := e.fake.WaitResponse(ctx, ix.ID)
	if err != nil {
		e.t.Fatal(err)
	}
	if r.Late {
		e.t.Fatalf("the answer to interaction %s came after Discord's 3 seconds", ix.ID)
	}
	return r
}

// calls counts the REST calls whose method and route match.
func (e *env) calls(method, route string, status int) int {
	n := 0
	for _, c := range e.fake.Calls() {
		if c.Method == method && c.Route == route && (status == 0 || c.Status == status) {
			n++
		}
	}
	return n
}
