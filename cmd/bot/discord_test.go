package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/nightona/nightona/adapters/discord/discordtest"
	"github.com/nightona/nightona/internal/testenv"
)

// discordBot is the whole bot (run() with the real Claude Code CLI and the scripted model) on a
// fake Discord: DISCORD_API_URL points at the fake, whose GET /gateway/bot hands out its own
// Gateway.
type discordBot struct {
	*bot
	t       *testing.T
	fake    *discordtest.Server
	key     ed25519.PrivateKey
	guild   string
	channel discordtest.Channel
	owner   discordtest.User
	other   discordtest.User
	admin   discordtest.User
}

func startDiscordBot(t *testing.T, fc discordtest.Config) *discordBot {
	t.Helper()
	if fc.RouteWindow == 0 {
		fc.RouteWindow = time.Second
	}
	fake := discordtest.New(fc)
	t.Cleanup(fake.Close) // after the bot has stopped: it drains into the fake
	pub, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	d := &discordBot{t: t, fake: fake, key: key}
	d.guild, d.channel = fake.AddGuild("Acme", "general")
	d.owner, d.other, d.admin = fake.AddUser("olivia"), fake.AddUser("oscar"), fake.AddUser("ada")
	env := baseEnv(t)
	env["DISCORD_BOT_TOKEN"] = fake.Token()
	env["DISCORD_APP_ID"] = fake.AppID()
	env["DISCORD_PUBLIC_KEY"] = hex.EncodeToString(pub)
	env["DISCORD_API_URL"] = fake.APIURL()
	env["NIGHTONA_ADMINS"] = "discord:" + d.admin.ID
	d.bot = startBot(t, env)
	testenv.WaitFor(t, 15*time.Second, "the bot on the Gateway with /nightona registered", func() bool {
		st := fake.GatewayStats()
		return st.Identifies == 1 && st.Connections == 1 && len(fake.Commands()) == 1
	})
	return d
}

func (d *discordBot) mention(text string) (discordtest.Message, discordtest.Channel) {
	d.t.Helper()
	m := d.fake.Say(d.channel.ID, d.owner.ID, "<@"+d.fake.Bot().ID+"> "+text)
	var th discordtest.Channel
	testenv.WaitFor(d.t, 20*time.Second, "a thread from the mention", func() bool {
		for _, c := range d.fake.Threads(d.channel.ID) {
			if c.ID == m.ID {
				th = c
				return true
			}
		}
		return false
	})
	return m, th
}

func (d *discordBot) waitMessage(channelID, what string, cond func(discordtest.Message) bool) discordtest.Message {
	d.t.Helper()
	var found discordtest.Message
	testenv.WaitFor(d.t, 90*time.Second, what, func() bool {
		for _, m := range d.fake.BotMessages(channelID) {
			if cond(m) {
				found = m
				return true
			}
		}
		return false
	})
	return found
}

// results waits for n result embeds in the channel and returns the bot's messages.
func (d *discordBot) results(channelID string, n int) []discordtest.Message {
	d.t.Helper()
	var msgs []discordtest.Message
	testenv.WaitFor(d.t, 90*time.Second, fmt.Sprintf("%d results", n), func() bool {
		msgs = d.fake.BotMessages(channelID)
		c := 0
		for _, m := range msgs {
			if len(m.Embeds) > 0 {
				c++
			}
		}
		return c >= n
	})
	return msgs
}

// interact posts an interaction to the bot's interactions endpoint, signed with the
// application's key (or another), and returns the status, the answer and how long it took.
func (d *discordBot) interact(ix *discordtest.Interaction, key ed25519.PrivateKey) (int, []byte, time.Duration) {
	d.t.Helper()
	body := ix.JSON()
	sig, ts := discordtest.Sign(key, time.Now(), body)
	req, _ := http.NewRequest(http.MethodPost, d.url+"/discord/interactions", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Signature-Ed25519", sig)
	req.Header.Set("X-Signature-Timestamp", ts)
	start := time.Now()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		d.t.Fatal(err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	took := time.Since(start)
	if resp.StatusCode == http.StatusOK && ix.Type != discordtest.InteractionPing {
		if err := d.fake.Answered(ix.ID, out); err != nil {
			d.t.Fatalf("the answer %s: %v", out, err)
		}
	}
	return resp.StatusCode, out, took
}

// answer is an interaction response.
type answer struct {
	Type int `json:"type"`
	Data struct {
		Content string `json:"content"`
		Flags   int    `json:"flags"`
	} `json:"data"`
}

func decodeAnswer(body []byte) answer {
	var a answer
	_ = json.Unmarshal(body, &a)
	return a
}

func fieldsOf(m discordtest.Message) map[string]string {
	out := map[string]string{}
	for _, e := range m.Embeds {
		for _, f := range e.Fields {
			out[f.Name] = f.Value
		}
	}
	return out
}

var wordRE = regexp.MustCompile(`\bword(\d+)\b`)

// words counts each wordN in the messages.
func words(msgs []discordtest.Message) map[string]int {
	seen := map[string]int{}
	for _, m := range msgs {
		for _, w := range wordRE.FindAllString(m.Content, -1) {
			seen[w]++
		}
	}
	return seen
}

func checkWords(t *testing.T, msgs []discordtest.Message, n int) {
	t.Helper()
	seen := words(msgs)
	for i := 1; i <= n; i++ {
		if c := seen[fmt.Sprintf("word%d", i)]; c != 1 {
			t.Fatalf("word%d shows %d times in the thread", i, c)
		}
	}
}

// TestDiscordEndToEnd: a mention becomes a thread where the real Claude Code's answer streams
// by edits and ends with the result; a reply in the thread continues the conversation.
func TestDiscordEndToEnd(t *testing.T) {
	d := startDiscordBot(t, discordtest.Config{})
	said := time.Now()
	_, th := d.mention("scenario:slow:60:40 tell me a story")
	msgs := d.results(th.ID, 1)
	answer := msgs[len(msgs)-1]
	var thread, first, last time.Time
	edits := 0
	for _, c := range d.fake.Calls() {
		switch {
		case c.Route == "/channels/{id}/messages/{id}/threads" && thread.IsZero():
			thread = c.At
		case c.Method == "POST" && c.Route == "/channels/{id}/messages" && first.IsZero():
			first = c.At
		case c.Method == "PATCH" && c.Route == "/channels/{id}/messages/{id}":
			edits++
			last = c.At
		}
	}
	t.Logf("mention to thread %v, to first message %v, to last edit %v; %d edits for a 60-word answer streamed over 2.4 s",
		thread.Sub(said).Round(time.Millisecond), first.Sub(said).Round(time.Millisecond), last.Sub(said).Round(time.Millisecond), edits)
	checkWords(t, msgs, 60)
	if answer.Edits < 2 {
		t.Fatalf("the answer was edited %d times: it did not stream", answer.Edits)
	}
	streamed := 0
	for _, v := range answer.Versions {
		if strings.Contains(v, "word") && !strings.Contains(v, "word60") {
			streamed++ // a version shown while the words came
		}
	}
	if streamed == 0 {
		t.Fatalf("no partial answer was shown: %q", answer.Versions)
	}
	f := fieldsOf(answer)
	if answer.Embeds[0].Title != "✅ Done" || f["Duration"] == "" || f["Turns"] != "1" || !strings.HasPrefix(f["Cost"], "$") || f["Cost"] == "$0" {
		t.Fatalf("result embed %+v", answer.Embeds)
	}
	if b := answer.Button("Companion"); b == nil || !strings.Contains(b.URL, "/s/ses_") || !strings.Contains(b.URL, "sig=") {
		t.Fatalf("companion link %+v", answer.Components)
	}
	// The companion link the thread carries is good: the bot lets the browser in.
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := noRedirect.Get(answer.Button("Companion").URL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther || len(resp.Cookies()) == 0 {
		t.Fatalf("the companion link answered %d", resp.StatusCode)
	}

	// The app's dev server comes up in the sandbox: the latest turn gets a preview button
	// that opens it.
	withPreview := d.waitMessage(th.ID, "an Open preview button", func(m discordtest.Message) bool {
		return m.Button("Open preview") != nil
	})
	resp, err = http.Get(withPreview.Button("Open preview").URL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("the preview answered %d", resp.StatusCode)
	}

	d.fake.Say(th.ID, d.owner.ID, "scenario:recall what did I ask?")
	msgs = d.results(th.ID, 2)
	recall := msgs[len(msgs)-1]
	if !strings.Contains(recall.Content, "scenario:slow:60:40 tell me a story") {
		t.Fatalf("the second turn does not remember the first: %q", recall.Content)
	}
	_, metrics := d.get("/metrics")
	if !bytes.Contains(metrics, []byte(`nightona_discord_requests_total{method="PATCH",route="/channels/{id}/messages/{id}",status="200"}`)) {
		t.Fatalf("no Discord metrics:\n%s", grepLines(metrics, "nightona_discord"))
	}
}

// TestDiscordStopAndApprove: Stop by its owner ends a streaming turn (clicked over HTTP, with a
// real signature); a permission request refuses another member's click, and the owner's
// approval (over the Gateway) lets Claude run the command.
func TestDiscordStopAndApprove(t *testing.T) {
	d := startDiscordBot(t, discordtest.Config{})
	_, th := d.mention("scenario:slow:400:50 a long story")
	running := d.waitMessage(th.ID, "a streaming answer with Stop", func(m discordtest.Message) bool {
		return m.ButtonLabeled("Stop") != nil && strings.Contains(m.Content, "word3")
	})
	status, out, took := d.interact(d.fake.NewClick(d.other.ID, running, running.ButtonLabeled("Stop").CustomID), d.key)
	if r := decodeAnswer(out); status != http.StatusOK || r.Type != 4 || r.Data.Flags != 64 || !strings.Contains(r.Data.Content, "Only <@"+d.owner.ID+">") || took > 3*time.Second {
		t.Fatalf("another member's Stop: %d %s in %v", status, out, took)
	}
	status, out, took = d.interact(d.fake.NewClick(d.owner.ID, running, running.ButtonLabeled("Stop").CustomID), d.key)
	if status != http.StatusOK || string(bytes.TrimSpace(out)) != `{"type":6}` || took > 3*time.Second {
		t.Fatalf("the owner's Stop: %d %s in %v", status, out, took)
	}
	stopped := d.waitMessage(th.ID, "the stopped turn", func(m discordtest.Message) bool {
		return len(m.Embeds) > 0 && m.Embeds[0].Title == "⏹️ Stopped"
	})
	if strings.Contains(stopped.Content, "word400") || stopped.ButtonLabeled("Stop") != nil {
		t.Fatalf("after Stop: %q", stopped.Content)
	}

	d.fake.Say(th.ID, d.owner.ID, "scenario:bash run it")
	ask := d.waitMessage(th.ID, "a permission request", func(m discordtest.Message) bool {
		return strings.Contains(m.Content, "Claude asks to use Bash") && len(m.Buttons()) >= 2
	})
	var allow string
	for _, b := range ask.Buttons() {
		if strings.HasPrefix(b.CustomID, "nightona:allow:") {
			allow = b.CustomID
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	refused, err := d.fake.WaitResponse(ctx, d.fake.Click(d.other.ID, ask, allow).ID)
	if err != nil || refused.Late || !refused.Ephemeral() || !strings.Contains(refused.Data.Content, "Only <@"+d.owner.ID+">") {
		t.Fatalf("another member's approval: %+v %v", refused, err)
	}
	approved, err := d.fake.WaitResponse(ctx, d.fake.Click(d.owner.ID, ask, allow).ID)
	if err != nil || approved.Late {
		t.Fatalf("the owner's approval: %+v %v", approved, err)
	}
	decided := d.waitMessage(th.ID, "the decision in place of the buttons", func(m discordtest.Message) bool {
		return m.ID == ask.ID && strings.Contains(m.Content, "✅ Approved by <@"+d.owner.ID+">")
	})
	if decided.Button(allow) != nil {
		t.Fatal("the approved request kept its buttons")
	}
	msgs := d.results(th.ID, 2)
	if last := msgs[len(msgs)-1]; !strings.Contains(last.Content, "hello-from-bash") || last.Embeds[0].Title != "✅ Done" {
		t.Fatalf("after the approval: %q %+v", last.Content, last.Embeds)
	}
}

// TestDiscordHTTPInteractions: the interactions endpoint answers a PING, answers /nightona
// with a real Ed25519 signature within 3 seconds, and refuses a bad signature with 401 and
// nothing done.
func TestDiscordHTTPInteractions(t *testing.T) {
	d := startDiscordBot(t, discordtest.Config{})
	status, out, _ := d.interact(d.fake.NewPing(), d.key)
	if status != http.StatusOK || string(bytes.TrimSpace(out)) != `{"type":1}` {
		t.Fatalf("PING: %d %s", status, out)
	}
	_, th := d.mention("scenario:text hello")
	d.results(th.ID, 1)

	calls := len(d.fake.Calls())
	_, forged, _ := ed25519.GenerateKey(rand.Reader)
	status, _, _ = d.interact(d.fake.NewCommand(d.owner.ID, th.ID, "nightona", "stop", nil), forged)
	if status != http.StatusUnauthorized {
		t.Fatalf("a forged signature: %d", status)
	}
	if got := len(d.fake.Calls()); got != calls {
		t.Fatalf("a forged interaction made %d calls to Discord", got-calls)
	}

	status, out, took := d.interact(d.fake.NewCommand(d.owner.ID, th.ID, "nightona", "status", nil), d.key)
	resp := decodeAnswer(out)
	if status != http.StatusOK || resp.Type != 4 || resp.Data.Flags != 64 || !strings.Contains(resp.Data.Content, "idle") ||
		!strings.Contains(resp.Data.Content, "1 turn ·") || took > 3*time.Second {
		t.Fatalf("/nightona status: %d %s in %v", status, out, took)
	}
	t.Logf("/nightona status answered over HTTP in %v", took.Round(time.Millisecond))

	// An admin sets the channel's permission mode; a member may not.
	status, out, _ = d.interact(d.fake.NewCommand(d.other.ID, d.channel.ID, "nightona", "config", map[string]string{"permission_mode": "plan"}), d.key)
	if status != http.StatusOK || !strings.Contains(decodeAnswer(out).Data.Content, "Only admins") {
		t.Fatalf("a member's config change: %d %s", status, out)
	}
	status, out, _ = d.interact(d.fake.NewCommand(d.admin.ID, d.channel.ID, "nightona", "config", map[string]string{"permission_mode": "plan"}), d.key)
	if status != http.StatusOK || !strings.Contains(decodeAnswer(out).Data.Content, "**plan**") {
		t.Fatalf("an admin's config change: %d %s", status, out)
	}
	// New sessions in the channel start in that mode.
	_, th2 := d.mention("scenario:text in plan mode")
	d.results(th2.ID, 1)
	status, out, _ = d.interact(d.fake.NewCommand(d.other.ID, th2.ID, "nightona", "status", nil), d.key)
	if status != http.StatusOK || !strings.Contains(decodeAnswer(out).Data.Content, "permission mode **plan**") {
		t.Fatalf("a new session after the change: %d %s", status, out)
	}
	// /nightona stop takes a moment: deferred, then the answer is edited in.
	status, out, took = d.interact(d.fake.NewCommand(d.owner.ID, th.ID, "nightona", "stop", nil), d.key)
	if status != http.StatusOK || took > 3*time.Second {
		t.Fatalf("/nightona stop: %d %s in %v", status, out, took)
	}
	d.waitMessage(th.ID, "the stop's answer", func(m discordtest.Message) bool {
		return strings.Contains(m.Content, "stopped this thread's sandbox")
	})
}

// TestDiscordRateLimitStorm: 429s on posts and edits, per bucket and global, while an answer
// streams: every word lands once, no call comes before its retry_after, nothing is posted twice.
func TestDiscordRateLimitStorm(t *testing.T) {
	d := startDiscordBot(t, discordtest.Config{RouteLimit: 3, RouteWindow: 500 * time.Millisecond})
	d.fake.Storm(discordtest.Storm{Method: "POST", Route: "/channels/{id}/messages", N: 5, RetryAfter: 300 * time.Millisecond})
	d.fake.Storm(discordtest.Storm{Method: "PATCH", Route: "/channels/{id}/messages/{id}", N: 20, RetryAfter: 250 * time.Millisecond})
	d.fake.Storm(discordtest.Storm{N: 4, RetryAfter: 500 * time.Millisecond, Global: true})
	_, th := d.mention("scenario:slow:700:4 a long story")
	msgs := d.results(th.ID, 1)
	checkWords(t, msgs, 700)
	if len(msgs) < 3 {
		t.Fatalf("%d messages for ~5,500 characters", len(msgs))
	}
	for _, m := range msgs {
		if n := len([]rune(m.Content)); n > 2000 {
			t.Fatalf("a message of %d characters", n)
		}
	}
	if left := d.fake.StormLeft(); left > 0 {
		t.Fatalf("%d injected 429s never met", left)
	}
	if early := d.fake.Early(); len(early) > 0 {
		t.Fatalf("%d calls came before their retry_after: %+v", len(early), early[0])
	}
	posts := 0
	for _, c := range d.fake.Calls() {
		if c.Method == "POST" && c.Route == "/channels/{id}/messages" && c.Status == 200 {
			posts++
		}
	}
	if posts != len(msgs) {
		t.Fatalf("%d posts for %d messages", posts, len(msgs))
	}
	t.Logf("%d calls, %d answered 429, %d messages", len(d.fake.Calls()), d.fake.Limited(), len(msgs))
}

// TestDiscordGatewayDrop: the Gateway drops mid-turn; the answer keeps streaming (REST does not
// need the Gateway), the session resumes, and a message said meanwhile is answered.
func TestDiscordGatewayDrop(t *testing.T) {
	d := startDiscordBot(t, discordtest.Config{HeartbeatInterval: time.Second})
	_, th := d.mention("scenario:slow:60:50 a story")
	d.waitMessage(th.ID, "the answer streaming", func(m discordtest.Message) bool { return strings.Contains(m.Content, "word5") })
	d.fake.DropGateway()
	d.fake.Say(th.ID, d.owner.ID, "scenario:text said while the bot was away")
	msgs := d.results(th.ID, 2)
	checkWords(t, msgs[:1], 60)
	if !strings.Contains(msgs[len(msgs)-1].Content, "said while the bot was away") {
		t.Fatalf("the message said during the drop: %q", msgs[len(msgs)-1].Content)
	}
	st := d.fake.GatewayStats()
	if st.Identifies != 1 || st.Resumes < 1 || st.ResumesAtResumeURL != st.Resumes {
		t.Fatalf("gateway after the drop: %+v", st)
	}
}

func TestDiscordConfigErrors(t *testing.T) {
	cases := []struct {
		env  map[string]string
		want string
	}{
		{map[string]string{"DISCORD_BOT_TOKEN": "t", "DISCORD_PUBLIC_KEY": "abc"}, "DISCORD_PUBLIC_KEY"},
		{map[string]string{"DISCORD_BOT_TOKEN": "t", "DISCORD_APP_ID": "my-app"}, "DISCORD_APP_ID"},
		{map[string]string{"DISCORD_BOT_TOKEN": "t", "DISCORD_API_URL": "discord.com/api"}, "DISCORD_API_URL"},
		{map[string]string{"DISCORD_PUBLIC_KEY": strings.Repeat("ab", 32)}, "DISCORD_BOT_TOKEN"},
	}
	for _, c := range cases {
		env := baseEnv(t)
		for k, v := range c.env {
			env[k] = v
		}
		err := run(context.Background(), nil, func(k string) string { return env[k] }, io.Discard, io.Discard)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: %v, want an error naming %s", c.env, err, c.want)
		}
	}
}

// TestDiscordShutdownLands: the bot stopped mid-turn lets the turn finish, and the thread shows
// its end before run returns.
func TestDiscordShutdownLands(t *testing.T) {
	d := startDiscordBot(t, discordtest.Config{})
	_, th := d.mention("scenario:slow:40:50 a short story")
	d.waitMessage(th.ID, "the answer streaming", func(m discordtest.Message) bool { return strings.Contains(m.Content, "word3") })
	if err := d.stop(); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	msgs := d.fake.BotMessages(th.ID)
	var turn discordtest.Message
	for _, m := range msgs {
		if strings.Contains(m.Content, "word1") {
			turn = m
		}
	}
	if len(turn.Embeds) == 0 || turn.Embeds[0].Title != "✅ Done" || turn.ButtonLabeled("Stop") != nil {
		t.Fatalf("after shutdown the turn shows %q %+v", turn.Content, turn.Embeds)
	}
	checkWords(t, msgs, 40)
	// And the sandbox stopping with the bot is said under it.
	if last := msgs[len(msgs)-1]; !strings.Contains(last.Content, "sandbox was stopped") {
		t.Fatalf("the last message: %q", last.Content)
	}
}
