package discord_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/nightona/nightona/adapters/discord"
	"github.com/nightona/nightona/adapters/discord/discordtest"
	"github.com/nightona/nightona/internal/testenv"
	"github.com/nightona/nightona/sandbox/local"
	"github.com/nightona/nightona/session"
)

// TestMentionOpensThread: a mention in a channel opens a thread from the message, the answer
// streams into it by edits, and ends with the result embed; a message in the thread continues
// the session; /nightona is registered and the Gateway asked for the message-content intent.
func TestMentionOpensThread(t *testing.T) {
	e := newEnv(t, envConfig{})
	st := e.fake.GatewayStats()
	const want = discordtest.IntentGuilds | discordtest.IntentGuildMessages | discordtest.IntentDirectMessages | discordtest.IntentMessageContent
	if st.Intents&want != want {
		t.Fatalf("intents %b, want at least %b", st.Intents, want)
	}
	testenv.WaitFor(t, 5*time.Second, "/nightona registered", func() bool { return len(e.fake.Commands()) == 1 })
	var cmd struct {
		Name    string `json:"name"`
		Options []struct {
			Name string `json:"name"`
		} `json:"options"`
	}
	_ = json.Unmarshal(e.fake.Commands()[0], &cmd)
	var subs []string
	for _, o := range cmd.Options {
		subs = append(subs, o.Name)
	}
	if cmd.Name != "nightona" || strings.Join(subs, ",") != "help,status,list,stop,destroy,usage,dashboard,config" {
		t.Fatalf("registered /%s with %v", cmd.Name, subs)
	}

	// A message between people is none of the bot's business.
	e.fake.Say(e.channel.ID, e.other.ID, "lunch?")

	m, th := e.startThread("slow:12:40 tell me a story")
	if th.ID != m.ID || th.ParentID != e.channel.ID || th.Name != "slow:12:40 tell me a story" {
		t.Fatalf("thread %+v from message %s", th, m.ID)
	}
	msgs := e.waitDone(th.ID, 1)
	if len(msgs) != 1 {
		t.Fatalf("%d bot messages for one short turn: %+v", len(msgs), msgs)
	}
	first := msgs[0]
	if !strings.Contains(first.Content, "word11") || first.Embeds[0].Title != "✅ Done" {
		t.Fatalf("the answer: %q %+v", first.Content, first.Embeds)
	}
	fields := map[string]string{}
	for _, f := range first.Embeds[0].Fields {
		fields[f.Name] = f.Value
	}
	if fields["Duration"] == "" || fields["Turns"] != "1" || fields["Cost"] != "$0" {
		t.Fatalf("result fields %v", fields)
	}
	if first.Edits < 2 {
		t.Fatalf("the answer was edited %d times: it did not stream (versions %q)", first.Edits, first.Versions)
	}
	for i := 1; i < len(first.Versions); i++ {
		if !strings.HasPrefix(body(first.Versions[i]), body(first.Versions[i-1])) {
			t.Fatalf("version %d does not extend the one before:\n%q\n%q", i, first.Versions[i-1], first.Versions[i])
		}
	}
	if b := first.Button("Companion"); b == nil || !strings.HasPrefix(b.URL, "https://nightona.example/s/ses_") {
		t.Fatalf("companion button: %+v", first.Components)
	}
	if first.ButtonLabeled("Stop") != nil {
		t.Fatal("a finished turn still has its Stop button")
	}
	if len(e.fake.BotMessages(e.channel.ID)) != 0 {
		t.Fatal("the bot wrote in the channel, not the thread")
	}

	// A reply in the thread, without a mention, continues the session.
	e.fake.Say(th.ID, e.owner.ID, "echo and again")
	msgs = e.waitDone(th.ID, 2)
	second := msgs[len(msgs)-1]
	if !strings.Contains(second.Content, "and again") {
		t.Fatalf("second turn: %q", second.Content)
	}
	sess, err := e.mgr.Session(context.Background(), e.thread(th))
	if err != nil || sess.Owner != "discord:"+e.owner.ID || sess.Usage.Turns != 2 {
		t.Fatalf("session %+v %v", sess, err)
	}
	// The first turn is final: its companion button moved to the latest turn.
	testenv.WaitFor(t, 5*time.Second, "the first turn to lose its buttons", func() bool {
		m, _ := e.fake.Message(th.ID, first.ID)
		return len(m.Components) == 0
	})
	if e.fake.Early() != nil {
		t.Fatalf("calls made while a 429 held them: %+v", e.fake.Early())
	}
}

// body is a message's text without its status line.
func body(content string) string {
	var out []string
	for _, l := range strings.Split(content, "\n") {
		if !strings.HasPrefix(l, "-# ") {
			out = append(out, l)
		}
	}
	return strings.TrimSpace(strings.Join(out, "\n"))
}

// TestLongAnswerIsSplit: an answer over 2,000 characters goes in several messages, each within
// Discord's limit, and nothing is lost or repeated.
func TestLongAnswerIsSplit(t *testing.T) {
	e := newEnv(t, envConfig{})
	_, th := e.startThread("slow:450:1")
	msgs := e.waitDone(th.ID, 1)
	if len(msgs) < 3 {
		t.Fatalf("%d messages for ~4,500 characters", len(msgs))
	}
	var all strings.Builder
	for _, m := range msgs {
		if n := len([]rune(m.Content)); n > 2000 {
			t.Fatalf("a message of %d characters", n)
		}
		all.WriteString(m.Content + "\n")
	}
	for i := 0; i < 450; i++ {
		if n := strings.Count(all.String(), fmt.Sprintf("word%d\n", i)); n != 1 {
			t.Fatalf("word%d shows %d times", i, n)
		}
	}
	if e.calls("POST", "/channels/{id}/messages", 200) != len(msgs) {
		t.Fatalf("%d posts for %d messages", e.calls("POST", "/channels/{id}/messages", 200), len(msgs))
	}
}

// TestApproveAndDeny: a permission request shows Approve and Deny; another member is told why
// not, ephemerally, and nothing changes; the owner's approval replaces the buttons with the
// decision and who made it, and Claude goes on.
func TestApproveAndDeny(t *testing.T) {
	e := newEnv(t, envConfig{})
	_, th := e.startThread("ask:Bash")
	ask := e.waitMessage(th.ID, "a permission request", func(m discordtest.Message) bool {
		return m.Button("Approve") == nil && strings.Contains(m.Content, "Claude asks to use Bash") && len(m.Buttons()) > 0
	})
	var allow string
	for _, b := range ask.Buttons() {
		if strings.HasPrefix(b.CustomID, "nightona:allow:") {
			allow = b.CustomID
		}
	}
	if allow == "" || !strings.Contains(ask.Content, "Only <@"+e.owner.ID+"> or an admin") {
		t.Fatalf("request message %q %+v", ask.Content, ask.Buttons())
	}

	ix := e.fake.Click(e.other.ID, ask, allow)
	r := e.waitResponse(ix)
	if r.Type != discordtest.CallbackMessage || !r.Ephemeral() || !strings.Contains(r.Data.Content, "Only <@"+e.owner.ID+">") {
		t.Fatalf("another member's click: %+v", r)
	}
	if m, _ := e.fake.Message(th.ID, ask.ID); m.Edits != ask.Edits && m.Button(allow) == nil {
		t.Fatal("another member's click changed the request")
	}
	sess, _ := e.mgr.Session(context.Background(), e.thread(th))
	if sess.State != session.StateRunning {
		t.Fatalf("the turn is %s after a refused click", sess.State)
	}

	ix = e.fake.Click(e.owner.ID, ask, allow)
	r = e.waitResponse(ix)
	// The answer itself replaces the buttons: no wait for the thread's next edit.
	if r.Type != discordtest.CallbackUpdate || !strings.Contains(r.Data.Content, "✅ Approved by <@"+e.owner.ID+">") ||
		strings.Contains(r.Data.Content, "Only <@") {
		t.Fatalf("the owner's click was answered with %d %q", r.Type, r.Data.Content)
	}
	for _, row := range r.Data.Components {
		for _, b := range row.Components {
			if b.CustomID == allow {
				t.Fatalf("the answer kept the Approve button: %+v", r.Data.Components)
			}
		}
	}
	m := e.waitMessage(th.ID, "the decision in place of the buttons", func(m discordtest.Message) bool {
		return m.ID == ask.ID && strings.Contains(m.Content, "✅ Approved by <@"+e.owner.ID+">")
	})
	if m.Button(allow) != nil {
		t.Fatalf("the decided request still has its buttons: %+v", m.Components)
	}
	done := e.waitMessage(th.ID, "the turn's result", hasEmbed("✅ Done"))
	if !strings.Contains(done.Content, "allow") {
		t.Fatalf("Claude did not get the approval: %q", done.Content)
	}
}

// TestStopButton: Stop is for the owner or an admin; it ends the turn, and the result says so.
func TestStopButton(t *testing.T) {
	e := newEnv(t, envConfig{})
	_, th := e.startThread("slow:300:50")
	running := e.waitMessage(th.ID, "a Stop button", func(m discordtest.Message) bool {
		return m.ButtonLabeled("Stop") != nil && strings.Contains(m.Content, "word1")
	})
	testenv.WaitFor(t, 5*time.Second, "the typing indicator while Claude works", func() bool {
		return e.calls("POST", "/channels/{id}/typing", 204) > 0
	})
	r := e.waitResponse(e.fake.Click(e.other.ID, running, running.ButtonLabeled("Stop").CustomID))
	if !r.Ephemeral() || !strings.Contains(r.Data.Content, "Only <@"+e.owner.ID+">") {
		t.Fatalf("another member's Stop: %+v", r)
	}
	r = e.waitResponse(e.fake.Click(e.admin.ID, running, running.ButtonLabeled("Stop").CustomID))
	if r.Type != discordtest.CallbackDeferredUpdate {
		t.Fatalf("an admin's Stop was answered with %d", r.Type)
	}
	stopped := e.waitMessage(th.ID, "the stopped turn", hasEmbed("⏹️ Stopped"))
	if stopped.ButtonLabeled("Stop") != nil || strings.Contains(stopped.Content, "word299") {
		t.Fatalf("after Stop: %q %+v", stopped.Content, stopped.Components)
	}

	// The first turn's Stop clicked again, late, on the message as it was, leaves the next
	// turn alone.
	e.fake.Say(th.ID, e.owner.ID, "slow:30:50")
	e.waitMessage(th.ID, "the next turn's Stop", func(m discordtest.Message) bool {
		return m.ID != running.ID && m.ButtonLabeled("Stop") != nil
	})
	e.waitResponse(e.fake.Click(e.owner.ID, running, running.ButtonLabeled("Stop").CustomID))
	msgs := e.waitDone(th.ID, 2)
	var titles []string
	for _, m := range msgs {
		if len(m.Embeds) > 0 {
			titles = append(titles, m.Embeds[0].Title)
		}
	}
	if len(titles) != 2 || titles[1] != "✅ Done" {
		t.Fatalf("results %q: the first turn's late Stop stopped the next", titles)
	}
}

// TestRateLimitStorm: 429s on every kind of call, per bucket and global, cost nothing: every
// word lands once, no call comes before its retry_after, and no message is posted twice.
func TestRateLimitStorm(t *testing.T) {
	e := newEnv(t, envConfig{fake: discordtest.Config{RouteLimit: 3, RouteWindow: 500 * time.Millisecond}})
	e.fake.Storm(discordtest.Storm{Method: "POST", Route: "/channels/{id}/messages", N: 4, RetryAfter: 300 * time.Millisecond})
	e.fake.Storm(discordtest.Storm{Method: "PATCH", Route: "/channels/{id}/messages/{id}", N: 15, RetryAfter: 250 * time.Millisecond})
	e.fake.Storm(discordtest.Storm{N: 3, RetryAfter: 400 * time.Millisecond, Global: true})
	_, th := e.startThread("slow:400:3")
	msgs := e.waitDone(th.ID, 1)
	var all strings.Builder
	for _, m := range msgs {
		all.WriteString(m.Content + "\n")
	}
	for i := 0; i < 400; i++ {
		if n := strings.Count(all.String(), fmt.Sprintf("word%d\n", i)); n != 1 {
			t.Fatalf("word%d shows %d times after the storm", i, n)
		}
	}
	if left := e.fake.StormLeft(); left > 0 {
		t.Fatalf("%d injected 429s were never met", left)
	}
	if early := e.fake.Early(); len(early) > 0 {
		t.Fatalf("%d calls came before the retry_after they were given: %+v", len(early), early[0])
	}
	if posts := e.calls("POST", "/channels/{id}/messages", 200); posts != len(msgs) {
		t.Fatalf("%d messages posted for %d in the thread", posts, len(msgs))
	}
	t.Logf("%d calls, %d answered 429, %d messages", len(e.fake.Calls()), e.fake.Limited(), len(msgs))
}

// TestGatewayResume: a dropped connection is resumed at READY's resume_gateway_url, and what
// was dispatched meanwhile is replayed and handled; Discord asking for a reconnect resumes
// too; an invalidated session identifies anew.
func TestGatewayResume(t *testing.T) {
	e := newEnv(t, envConfig{})
	_, th := e.startThread("echo before the drop")
	e.waitDone(th.ID, 1)

	e.fake.DropGateway()
	// Said while the bot is away: Discord keeps it for the resumed session.
	e.fake.Say(th.ID, e.owner.ID, "echo said during the drop")
	e.waitDone(th.ID, 2)
	st := e.fake.GatewayStats()
	if st.Identifies != 1 || st.Resumes < 1 || st.ResumesAtResumeURL != st.Resumes {
		t.Fatalf("after a drop: %+v (want one identify, and resumes at the resume URL)", st)
	}

	e.fake.RequestReconnect()
	testenv.WaitFor(t, 10*time.Second, "a resume after op 7", func() bool { return e.fake.GatewayStats().Resumes >= st.Resumes+1 })
	e.fake.Say(th.ID, e.owner.ID, "echo after the reconnect")
	e.waitDone(th.ID, 3)

	e.fake.InvalidateSessions(false)
	testenv.WaitFor(t, 15*time.Second, "a new session after op 9", func() bool {
		up, _ := e.adapter.Connected()
		return up && e.fake.GatewayStats().Identifies == 2
	})
	e.fake.Say(th.ID, e.owner.ID, "echo in the new session")
	e.waitDone(th.ID, 4)
	if hb := e.fake.GatewayStats().Heartbeats; hb == 0 {
		t.Fatal("no heartbeats")
	}
}

// TestFatalClose: a refused token ends Run with an error that says what to fix.
func TestFatalClose(t *testing.T) {
	e := newEnv(t, envConfig{})
	e.fake.CloseGateway(4014, "Disallowed intent(s).")
	select {
	case err := <-e.runErrCh():
		if err == nil || !strings.Contains(err.Error(), "Message Content intent") {
			t.Fatalf("Run returned %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not end on a disallowed-intents close")
	}
}

func (e *env) runErrCh() <-chan error {
	ch := make(chan error, 1)
	go func() {
		err := <-e.runErr
		e.runErr <- err // for the cleanup
		ch <- err
	}()
	return ch
}

// TestFollowerStartsAgain: a follower that starts again for a session (another replica, a
// restart) edits what the thread shows; it posts nothing twice.
func TestFollowerStartsAgain(t *testing.T) {
	e := newEnv(t, envConfig{})
	_, th := e.startThread("echo one")
	e.waitDone(th.ID, 1)
	e.fake.Say(th.ID, e.owner.ID, "echo two")
	e.waitDone(th.ID, 2)
	sess, err := e.mgr.Session(context.Background(), e.thread(th))
	if err != nil {
		t.Fatal(err)
	}
	posts := e.calls("POST", "/channels/{id}/messages", 200)
	other, err := discord.New(e.mgr, e.store, discord.Config{Token: e.fake.Token(), HTTPClient: e.fake.Client(),
		CompanionLink: func(id string) string { return "https://nightona.example/s/" + id }})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // a follower that starts as the session lets go still shows the last state
	other.Follow(ctx, sess)
	if got := e.calls("POST", "/channels/{id}/messages", 200); got != posts {
		t.Fatalf("a second follower posted %d messages again", got-posts)
	}
	if n := len(e.fake.BotMessages(th.ID)); n != 2 {
		t.Fatalf("%d messages in the thread, want 2", n)
	}
}

// TestDM: a DM is a session of its own, no mention needed.
func TestDM(t *testing.T) {
	e := newEnv(t, envConfig{})
	dm := e.fake.DM(e.owner.ID)
	e.fake.Say(dm.ID, e.owner.ID, "echo hello in private")
	msgs := e.waitDone(dm.ID, 1)
	if !strings.Contains(msgs[0].Content, "hello in private") {
		t.Fatalf("DM answer %q", msgs[0].Content)
	}
	if _, err := e.mgr.Session(context.Background(), "discord:dm:"+dm.ID+":"+dm.ID); err != nil {
		t.Fatalf("the DM's session: %v", err)
	}
}

// TestPromptRefused: what the session manager refuses is said in the thread, in words.
func TestPromptRefused(t *testing.T) {
	e := newEnv(t, envConfig{session: session.Config{MaxPromptBytes: 50}})
	_, th := e.startThread(strings.Repeat("x", 60))
	m := e.waitMessage(th.ID, "the refusal", contains("too long"))
	if !strings.Contains(m.Content, "60 bytes") || !strings.Contains(m.Content, "50 bytes") {
		t.Fatalf("refusal %q", m.Content)
	}
	e.fake.Say(e.channel.ID, e.owner.ID, e.mention())
	e.waitMessage(e.channel.ID, "a hint for an empty mention", contains("Tell me what to do"))
}

// TestTwoReplicas: with two replicas on the Gateway, each gets every event; one handles it.
func TestTwoReplicas(t *testing.T) {
	var firstLog, secondLog testenv.Buffer
	e := newEnv(t, envConfig{adapter: discord.Config{Logger: slog.New(slog.NewTextHandler(&firstLog, nil))}})
	second, err := discord.New(e.mgr, e.store, discord.Config{Token: e.fake.Token(), AppID: e.fake.AppID(), HTTPClient: e.fake.Client(),
		Logger: slog.New(slog.NewTextHandler(&secondLog, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- second.Run(ctx) }()
	defer func() { cancel(); <-done }()
	e.waitConnected(2)
	_, th := e.startThread("echo once only")
	e.waitDone(th.ID, 1)
	if n := e.calls("POST", "/channels/{id}/messages/{id}/threads", 0); n != 1 {
		t.Fatalf("%d thread creations for one mention", n)
	}
	if n := len(e.fake.Threads(e.channel.ID)); n != 1 {
		t.Fatalf("%d threads", n)
	}
	ix := e.fake.Command(e.owner.ID, th.ID, "nightona", "help", nil)
	e.waitResponse(ix)
	if n := e.calls("POST", "/interactions/{id}/{token}/callback", 0); n != 1 {
		t.Fatalf("%d answers to one interaction", n)
	}
	// A click reaches both; one of them takes it, and Claude stops once.
	e.fake.Say(th.ID, e.owner.ID, "slow:300:30")
	running := e.waitMessage(th.ID, "a streaming turn with Stop", func(m discordtest.Message) bool {
		return m.ButtonLabeled("Stop") != nil && strings.Contains(m.Content, "word1")
	})
	e.waitResponse(e.fake.Click(e.owner.ID, running, running.ButtonLabeled("Stop").CustomID))
	e.waitMessage(th.ID, "the stopped turn", hasEmbed("⏹️ Stopped"))
	if a, b := firstLog.HasLine("turn stopped from Discord"), secondLog.HasLine("turn stopped from Discord"); a == b {
		t.Fatalf("one Stop taken by both adapters or by neither (%v, %v):\n%s\n%s", a, b, firstLog.String(), secondLog.String())
	}
}

// TestThreadDeleted: deleting a thread closes its session.
func TestThreadDeleted(t *testing.T) {
	e := newEnv(t, envConfig{})
	_, th := e.startThread("echo soon gone")
	e.waitDone(th.ID, 1)
	e.fake.DeleteThread(th.ID)
	testenv.WaitFor(t, 10*time.Second, "the session to close", func() bool {
		_, err := e.mgr.Session(context.Background(), e.thread(th))
		return err != nil
	})
}

// TestCommands: /nightona over the Gateway, as each kind of user sees it.
func TestCommands(t *testing.T) {
	e := newEnv(t, envConfig{})
	cmd := func(u discordtest.User, channel, sub string, opts map[string]string) *discordtest.Response {
		t.Helper()
		return e.waitResponse(e.fake.Command(u.ID, channel, "nightona", sub, opts))
	}
	if r := cmd(e.other, e.channel.ID, "help", nil); !r.Ephemeral() || !strings.Contains(r.Data.Content, "Mention me") {
		t.Fatalf("help: %+v", r)
	}
	if r := cmd(e.other, e.channel.ID, "status", nil); !strings.Contains(r.Data.Content, "No session here") || !strings.Contains(r.Data.Content, "<#"+e.channel.ID+">") {
		t.Fatalf("status outside a session: %q", r.Data.Content)
	}

	// Settings: anyone views, admins change; new sessions in the channel start with them.
	if r := cmd(e.other, e.channel.ID, "config", map[string]string{"permission_mode": "plan"}); !r.Ephemeral() || !strings.Contains(r.Data.Content, "Only admins") {
		t.Fatalf("a member's config change: %q", r.Data.Content)
	}
	if r := cmd(e.admin, e.channel.ID, "config", map[string]string{"model": "not a model"}); !strings.Contains(r.Data.Content, "not a model name") {
		t.Fatalf("a bad model: %q", r.Data.Content)
	}
	r := cmd(e.admin, e.channel.ID, "config", map[string]string{"permission_mode": "plan", "model": "haiku"})
	if r.Ephemeral() || !strings.Contains(r.Data.Content, "**plan**") || !strings.Contains(r.Data.Content, "**haiku**") {
		t.Fatalf("an admin's config change: %+v", r)
	}
	if r := cmd(e.other, e.channel.ID, "config", nil); !strings.Contains(r.Data.Content, "**plan**") || !strings.Contains(r.Data.Content, "<@"+e.admin.ID+">") {
		t.Fatalf("config as seen by a member: %q", r.Data.Content)
	}
	_, th := e.startThread("echo planned")
	e.waitDone(th.ID, 1)
	sess, err := e.mgr.Session(context.Background(), e.thread(th))
	if err != nil || sess.PermissionMode != "plan" || sess.Model != "haiku" {
		t.Fatalf("a new session's settings: %+v %v", sess, err)
	}

	r = cmd(e.other, th.ID, "status", nil)
	if !strings.Contains(r.Data.Content, sess.ID) || !strings.Contains(r.Data.Content, "<@"+e.owner.ID+">") || !strings.Contains(r.Data.Content, "1 turn ·") {
		t.Fatalf("status in the thread: %q", r.Data.Content)
	}
	if r := cmd(e.other, th.ID, "list", nil); !strings.Contains(r.Data.Content, "Only admins") {
		t.Fatalf("a member's list: %q", r.Data.Content)
	}
	if r := cmd(e.admin, th.ID, "list", nil); !strings.Contains(r.Data.Content, "<#"+th.ID+">") {
		t.Fatalf("an admin's list: %q", r.Data.Content)
	}
	if r := cmd(e.other, th.ID, "dashboard", nil); !r.Ephemeral() || !strings.Contains(r.Data.Content, "Only admins") {
		t.Fatalf("a member's dashboard: %q", r.Data.Content)
	}
	if r := cmd(e.admin, th.ID, "dashboard", nil); !r.Ephemeral() || !strings.Contains(r.Data.Content, "(https://nightona.example/admin/login?user=discord:"+e.admin.ID+")") {
		t.Fatalf("an admin's dashboard: %q", r.Data.Content)
	}
	if r := cmd(e.owner, th.ID, "usage", nil); !strings.Contains(r.Data.Content, "1 turn ·") {
		t.Fatalf("usage: %q", r.Data.Content)
	}
	if r := cmd(e.owner, th.ID, "usage", map[string]string{"scope": "channel"}); !strings.Contains(r.Data.Content, "<#"+e.channel.ID+">") || !strings.Contains(r.Data.Content, "1 turn ·") {
		t.Fatalf("the channel's usage: %q", r.Data.Content)
	}
	if r := cmd(e.owner, th.ID, "usage", map[string]string{"scope": "all"}); !strings.Contains(r.Data.Content, "Only admins") {
		t.Fatalf("everyone's usage for a member: %q", r.Data.Content)
	}
	if r := cmd(e.admin, th.ID, "usage", map[string]string{"scope": "all"}); !strings.Contains(r.Data.Content, "1 turn ·") ||
		!strings.Contains(r.Data.Content, "**Top users**\n- <@"+e.owner.ID+">: 1 turn") || !strings.Contains(r.Data.Content, "**Top channels**\n- <#"+e.channel.ID+">: 1 turn") {
		t.Fatalf("everyone's usage for an admin: %q", r.Data.Content)
	}
	if r := cmd(e.owner, th.ID, "usage", map[string]string{"day": "yesterday"}); !strings.Contains(r.Data.Content, "YYYY-MM-DD") {
		t.Fatalf("a bad day: %q", r.Data.Content)
	}

	if r := cmd(e.other, th.ID, "stop", nil); !r.Ephemeral() || !strings.Contains(r.Data.Content, "Only <@"+e.owner.ID+">") {
		t.Fatalf("a member's stop: %q", r.Data.Content)
	}
	cmd(e.owner, th.ID, "stop", nil)
	e.waitMessage(th.ID, "the stop announced", contains("stopped this thread's sandbox"))
	testenv.WaitFor(t, 10*time.Second, "the sandbox to stop", func() bool {
		s, _ := e.mgr.Session(context.Background(), e.thread(th))
		return s != nil && s.State == session.StateStopped
	})

	dix := e.fake.Command(e.owner.ID, th.ID, "nightona", "destroy", nil)
	confirm := e.waitResponse(dix)
	if !confirm.Ephemeral() || !strings.Contains(confirm.Data.Content, "Destroy this thread's session?") {
		t.Fatalf("destroy: %+v", confirm)
	}
	prompt := e.fake.Interaction(dix.ID).Replies[0]
	if prompt.Button("nightona:destroy:yes") == nil {
		t.Fatalf("the confirmation has no Destroy button: %+v", prompt.Components)
	}
	r = e.waitResponse(e.fake.Click(e.owner.ID, prompt, "nightona:destroy:yes"))
	if r.Type != discordtest.CallbackUpdate && r.Type != discordtest.CallbackDeferredUpdate {
		t.Fatalf("destroy confirmed: %+v", r)
	}
	e.waitMessage(th.ID, "the destroy announced", contains("destroyed this thread's session"))
	if _, err := e.mgr.Session(context.Background(), e.thread(th)); err == nil {
		t.Fatal("the session survived its destruction")
	}
	// The thread starts afresh.
	e.fake.Say(th.ID, e.owner.ID, "echo fresh start")
	e.waitMessage(th.ID, "a new session's answer", contains("fresh start"))
}

// TestQueuedPrompt: a prompt sent while a turn runs waits with a Cancel button; cancelled, it
// never runs.
func TestQueuedPrompt(t *testing.T) {
	e := newEnv(t, envConfig{})
	_, th := e.startThread("slow:60:40")
	e.waitMessage(th.ID, "the first turn streaming", contains("word1"))
	e.fake.Say(th.ID, e.owner.ID, "echo should never run")
	queued := e.waitMessage(th.ID, "the queued turn", contains("Queued"))
	var cancel string
	for _, b := range queued.Buttons() {
		if strings.HasPrefix(b.CustomID, "nightona:cancel:") {
			cancel = b.CustomID
		}
	}
	if cancel == "" {
		t.Fatalf("a queued turn without Cancel: %+v", queued.Components)
	}
	if r := e.waitResponse(e.fake.Click(e.other.ID, queued, cancel)); !r.Ephemeral() {
		t.Fatalf("another member's cancel: %+v", r)
	}
	e.waitResponse(e.fake.Click(e.owner.ID, queued, cancel))
	e.waitMessage(th.ID, "the cancelled turn", func(m discordtest.Message) bool {
		return m.ID == queued.ID && strings.Contains(m.Content, "Cancelled before it started") && m.Button(cancel) == nil
	})
	// Prompts run in order: once a later one has its answer, the cancelled one would have run.
	e.fake.Say(th.ID, e.owner.ID, "echo third")
	msgs := e.waitDone(th.ID, 2)
	for _, m := range msgs {
		if strings.Contains(m.Content, "should never run") {
			t.Fatalf("the cancelled prompt ran: %q", m.Content)
		}
	}
	if !strings.Contains(msgs[len(msgs)-1].Content, "third") {
		t.Fatalf("the last answer: %q", msgs[len(msgs)-1].Content)
	}
}

// TestPressHandover: an interaction that reaches a replica not driving the session (over HTTP,
// where the load balancer picks) is carried out, through the session manager, by the one that
// does.
func TestPressHandover(t *testing.T) {
	var driverLog testenv.Buffer
	e := newEnv(t, envConfig{session: session.Config{Logger: slog.New(slog.NewTextHandler(&driverLog, nil))}})
	// Replica b: its own session manager on the same Redis, driving nothing.
	prov, err := local.New(local.Config{Dir: t.TempDir(), RelayBinary: testenv.RelayBinary(t), Claude: os.Args[0]})
	if err != nil {
		t.Fatal(err)
	}
	defer prov.Close()
	mgrB, err := session.NewManager(e.store, prov, session.Config{ReplicaID: "replica-b"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = mgrB.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	second, err := discord.New(mgrB, e.store, discord.Config{Token: e.fake.Token(), AppID: e.fake.AppID(), HTTPClient: e.fake.Client()})
	if err != nil {
		t.Fatal(err)
	}
	viaSecond := func(ix *discordtest.Interaction) {
		t.Helper()
		out, err := second.Interaction(context.Background(), ix.JSON())
		if err != nil {
			t.Fatal(err)
		}
		if err := e.fake.Answered(ix.ID, out); err != nil {
			t.Fatal(err)
		}
	}

	_, th := e.startThread("ask:Bash")
	ask := e.waitMessage(th.ID, "a permission request", func(m discordtest.Message) bool {
		return strings.Contains(m.Content, "Claude asks") && len(m.Buttons()) > 0
	})
	var allow string
	for _, b := range ask.Buttons() {
		if strings.HasPrefix(b.CustomID, "nightona:allow:") {
			allow = b.CustomID
		}
	}
	clicked := time.Now()
	viaSecond(e.fake.NewClick(e.owner.ID, ask, allow))
	e.waitMessage(th.ID, "the approval carried out", func(m discordtest.Message) bool {
		return m.ID == ask.ID && strings.Contains(m.Content, "✅ Approved by <@"+e.owner.ID+">")
	})
	if took := time.Since(clicked); took > 2*time.Second {
		t.Fatalf("the approval took %v", took)
	}
	if done := e.waitMessage(th.ID, "the turn's end", hasEmbed("✅ Done")); !strings.Contains(done.Content, "allow") {
		t.Fatalf("Claude got %q", done.Content)
	}

	e.fake.Say(th.ID, e.owner.ID, "slow:300:30")
	running := e.waitMessage(th.ID, "a streaming turn with Stop", func(m discordtest.Message) bool {
		return m.ButtonLabeled("Stop") != nil && strings.Contains(m.Content, "word1")
	})
	viaSecond(e.fake.NewClick(e.owner.ID, running, running.ButtonLabeled("Stop").CustomID))
	e.waitMessage(th.ID, "the stop carried out", hasEmbed("⏹️ Stopped"))
	for _, kind := range []string{"kind=decide", "kind=interrupt"} {
		if !driverLog.HasLine("carried out a request from another replica", kind) {
			t.Fatalf("the driving replica did not carry out the %s from replica b:\n%s", kind, driverLog.String())
		}
	}
}
