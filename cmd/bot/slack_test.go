package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nightona/nightona/adapters/slack/slacktest"
	"github.com/nightona/nightona/internal/testenv"
)

// The bot with Slack, end to end: run() with its environment pointing SLACK_API_URL at the
// Slack fake, a real Redis, local sandboxes, the real Claude Code CLI and the offline scripted
// model.

const (
	slackOwner    = "U0OWNER"
	slackStranger = "U0OTHER"
	slackAdmin    = "U0ADMIN"
	slackChannel  = "C0DEV"
	slackSecret   = "e3b0c44298fc1c149afbf4c8996fb924"
)

type slackBot struct {
	*bot
	t    *testing.T
	fake *slacktest.Server
}

// startSlackBot starts the bot with Slack over Socket Mode, or over HTTP callbacks when
// httpOnly is set.
func startSlackBot(t *testing.T, fc slacktest.Config, httpOnly bool) *slackBot {
	t.Helper()
	fake := slacktest.New(fc)
	t.Cleanup(fake.Close)
	env := baseEnv(t)
	env["SLACK_BOT_TOKEN"] = fake.Config().BotToken
	env["SLACK_API_URL"] = fake.APIURL
	env["NIGHTONA_ADMINS"] = "slack:" + slackAdmin
	if httpOnly {
		env["SLACK_SIGNING_SECRET"] = slackSecret
	} else {
		env["SLACK_APP_TOKEN"] = fake.Config().AppToken
	}
	b := startBot(t, env)
	if !httpOnly && !fake.WaitConnected(1, 20*time.Second) {
		t.Fatalf("the bot did not connect over Socket Mode\n%s", b.stderr.String())
	}
	return &slackBot{bot: b, t: t, fake: fake}
}

// mention posts a message that mentions the bot and delivers its app_mention over Socket
// Mode, checking the ack comes within Slack's 3 seconds; it returns the thread's ts and the
// event id.
func (s *slackBot) mention(user, text string) (ts, eventID string) {
	s.t.Helper()
	text = "<@" + s.fake.Config().BotUserID + "> " + text
	ts = s.fake.PostUserMessage(slackChannel, user, text, "")
	eventID, envelope := s.fake.SendEvent(s.fake.AppMention(slackChannel, user, text, ts, ""))
	s.acked(envelope)
	return ts, eventID
}

func (s *slackBot) acked(envelope string) slacktest.Ack {
	s.t.Helper()
	ack, ok := s.fake.WaitAck(envelope, 3*time.Second)
	if !ok || ack.Attempt != 0 {
		s.t.Fatalf("envelope %s not acknowledged within 3 s of its first delivery (%+v)", envelope, ack)
	}
	return ack
}

// thread is what the bot's messages in a thread say.
func (s *slackBot) thread(ts string) string {
	var b strings.Builder
	for _, m := range s.fake.BotMessages(slackChannel, ts) {
		b.WriteString(m.Content() + "\n---\n")
	}
	return b.String()
}

func (s *slackBot) waitThread(ts string, timeout time.Duration, want ...string) string {
	s.t.Helper()
	var got string
	testenv.WaitFor(s.t, timeout, "the thread to show "+strings.Join(want, ", "), func() bool {
		got = s.thread(ts)
		for _, w := range want {
			if !strings.Contains(got, w) {
				return false
			}
		}
		return true
	})
	return got
}

// press presses a button of the bot's messages in the thread, as user, over Socket Mode.
func (s *slackBot) press(ts, user, actionID string) {
	s.t.Helper()
	msg := s.withButton(ts, actionID)
	s.acked(s.fake.SendInteraction(s.fake.BlockAction(user, msg, actionID)))
}

func (s *slackBot) withButton(ts, actionID string) slacktest.Message {
	s.t.Helper()
	var msg slacktest.Message
	testenv.WaitFor(s.t, 60*time.Second, "a message with the button "+actionID, func() bool {
		for _, m := range s.fake.BotMessages(slackChannel, ts) {
			if m.Button(actionID) != nil {
				msg = m
				return true
			}
		}
		return false
	})
	return msg
}

func (s *slackBot) ephemeral(user, want string) {
	s.t.Helper()
	testenv.WaitFor(s.t, 10*time.Second, "an ephemeral message saying "+want, func() bool {
		for _, m := range s.fake.Ephemerals(user) {
			if strings.Contains(m.Text, want) {
				return true
			}
		}
		return false
	})
}

// signedPost posts body to the bot's Slack callback path, signed as Slack signs it.
func (s *slackBot) signedPost(path, contentType string, body []byte, headers map[string]string) (int, []byte, time.Duration) {
	s.t.Helper()
	req, _ := http.NewRequest(http.MethodPost, s.url+path, bytes.NewReader(body))
	req.Header.Set("Content-Type", contentType)
	ts, sig := slacktest.Sign(slackSecret, time.Now(), body)
	req.Header.Set("X-Slack-Request-Timestamp", ts)
	req.Header.Set("X-Slack-Signature", sig)
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	start := time.Now()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		s.t.Fatal(err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, out, time.Since(start)
}

// promptCount is how many prompts the bot's logs say it took.
func promptCount(b *bot) int { return strings.Count(b.stderr.String(), `msg="prompt submitted"`) }

// previewAnswers checks that a message's Open preview button leads to the running app.
func previewAnswers(t *testing.T, m slacktest.Message) {
	t.Helper()
	btn := m.Button("nightona_preview")
	if btn == nil {
		t.Fatalf("no Open preview button on %q", m.Content())
	}
	u, _ := btn["url"].(string)
	resp, err := http.Get(u)
	if err != nil {
		t.Fatalf("the preview %s: %v", u, err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("the preview %s answered %d", u, resp.StatusCode)
	}
}

// TestSlackSocketModeEndToEnd: a mention over Socket Mode starts a session in the thread; the
// answer streams in (several appends), then ends with the result and the preview button,
// which opens the app; a retry of the event changes nothing; /nightona status finds it.
func TestSlackSocketModeEndToEnd(t *testing.T) {
	s := startSlackBot(t, slacktest.Config{}, false)
	start := time.Now()
	ts, eventID := s.mention(slackOwner, "scenario:slow:30:100 tell me a story")
	var firstStatus, firstUpdate time.Duration
	testenv.WaitFor(t, 60*time.Second, "the first update in the thread", func() bool {
		if firstStatus == 0 && len(s.fake.Statuses(slackChannel, ts)) > 0 {
			firstStatus = time.Since(start)
		}
		if len(s.fake.BotMessages(slackChannel, ts)) > 0 {
			firstUpdate = time.Since(start)
			return true
		}
		return false
	})
	got := s.waitThread(ts, 90*time.Second, "word1 word2", "word30", "Done in")
	msgs := s.fake.BotMessages(slackChannel, ts)
	final := msgs[len(msgs)-1]
	appends := len(s.fake.Calls("chat.appendStream"))
	if len(s.fake.Calls("chat.startStream")) != 1 || appends < 2 || !msgs[0].Streamed {
		t.Fatalf("want one streamed message grown by several appends; got %d starts, %d appends:\n%s", len(s.fake.Calls("chat.startStream")), appends, got)
	}
	// The preview is announced once the dev server answers: on the final message, or on a
	// note of its own when it came up after the turn.
	testenv.WaitFor(t, 60*time.Second, "an Open preview button", func() bool {
		msgs = s.fake.BotMessages(slackChannel, ts)
		return msgs[len(msgs)-1].Button("nightona_preview") != nil || final.Button("nightona_preview") != nil
	})
	if final.Button("nightona_preview") == nil {
		final = msgs[len(msgs)-1]
	}
	previewAnswers(t, final)
	if final.Button("nightona_transcript") == nil {
		t.Fatalf("no companion link: %v", final.Buttons())
	}
	link, _ := final.Button("nightona_transcript")["url"].(string)
	jar, _ := cookiejar.New(nil)
	resp, err := (&http.Client{Jar: jar}).Get(link)
	if err != nil || resp.StatusCode != http.StatusOK || !strings.HasPrefix(link, s.url+"/s/") {
		t.Fatalf("the companion link %s: %v %v", link, resp, err)
	}
	resp.Body.Close()
	t.Logf("mention to the thread status %v, to the first message %v; %d appends; to the result %v",
		firstStatus.Round(time.Millisecond), firstUpdate.Round(time.Millisecond), appends, time.Since(start).Round(time.Millisecond))

	// Slack delivering the event again: nothing happens.
	before := promptCount(s.bot)
	ev := s.fake.AppMention(slackChannel, slackOwner, "<@U0BOT> scenario:slow:30:100 tell me a story", ts, "")
	s.acked(s.fake.Deliver("events_api", json.RawMessage(s.fake.CallbackWithID(eventID, ev))))
	if promptCount(s.bot) != before || before != 1 {
		t.Fatalf("prompts submitted: %d, then %d after the retry", before, promptCount(s.bot))
	}

	form := s.fake.SlashCommand(slackChannel, slackStranger, "status")
	ack := s.acked(s.fake.SendCommand(form))
	var reply struct{ Text string }
	if err := json.Unmarshal(ack.Payload, &reply); err != nil || !strings.Contains(reply.Text, "Started by <@"+slackOwner+">") {
		t.Fatalf("/nightona status answered %s", ack.Payload)
	}
}

// TestSlackHTTPEndToEnd: the same over the Events API with real signatures, in a workspace
// without the streaming methods (chat.postMessage, then chat.update): callbacks are
// acknowledged at once, bad signatures refused, retries handled once.
func TestSlackHTTPEndToEnd(t *testing.T) {
	s := startSlackBot(t, slacktest.Config{NoStreaming: true}, true)
	text := "<@U0BOT> scenario:text hello over http"
	ts := s.fake.PostUserMessage(slackChannel, slackOwner, text, "")
	eventID, body := s.fake.Callback(s.fake.AppMention(slackChannel, slackOwner, text, ts, ""))

	// Unsigned, wrongly signed or stale: 401 and nothing done.
	for name, h := range map[string]map[string]string{
		"wrong signature": {"X-Slack-Signature": "v0=" + strings.Repeat("0", 64)},
		"stale":           {"X-Slack-Request-Timestamp": strconv.FormatInt(time.Now().Add(-10*time.Minute).Unix(), 10)},
	} {
		if status, _, _ := s.signedPost("/slack/events", "application/json", body, h); status != http.StatusUnauthorized {
			t.Fatalf("%s: %d, want 401", name, status)
		}
	}
	status, _, took := s.signedPost("/slack/events", "application/json", body, nil)
	if status != http.StatusOK || took > 3*time.Second {
		t.Fatalf("the event: %d in %v", status, took)
	}
	for i := 1; i <= 2; i++ {
		status, _, _ := s.signedPost("/slack/events", "application/json", body, map[string]string{"X-Slack-Retry-Num": strconv.Itoa(i), "X-Slack-Retry-Reason": "http_timeout"})
		if status != http.StatusOK {
			t.Fatalf("retry %d: %d", i, status)
		}
	}
	got := s.waitThread(ts, 90*time.Second, "hello over http", "Done in")
	if n := promptCount(s.bot); n != 1 {
		t.Fatalf("%d prompts submitted for one event delivered three times (%s)", n, eventID)
	}
	msgs := s.fake.BotMessages(slackChannel, ts)
	if msgs[0].Streamed || len(s.fake.Calls("chat.postMessage")) == 0 {
		t.Fatalf("without streaming the answer should be posted and updated:\n%s", got)
	}
	testenv.WaitFor(t, 60*time.Second, "an Open preview button", func() bool {
		msgs = s.fake.BotMessages(slackChannel, ts)
		for _, m := range msgs {
			if m.Button("nightona_preview") != nil {
				return true
			}
		}
		return false
	})
	for _, m := range msgs {
		if m.Button("nightona_preview") != nil {
			previewAnswers(t, m)
		}
	}

	// A slash command over HTTP answers in the response.
	form := s.fake.SlashCommand(slackChannel, slackOwner, "usage")
	status, out, took := s.signedPost("/slack/commands", "application/x-www-form-urlencoded", []byte(form.Encode()), nil)
	if status != http.StatusOK || took > 3*time.Second || !strings.Contains(string(out), "You: 1 turn") {
		t.Fatalf("/nightona usage: %d in %v: %s", status, took, out)
	}
	// An admin's /nightona dashboard: a private link that logs them into the dashboard from
	// another machine, once.
	form = s.fake.SlashCommand(slackChannel, slackAdmin, "dashboard")
	status, out, _ = s.signedPost("/slack/commands", "application/x-www-form-urlencoded", []byte(form.Encode()), nil)
	var reply struct {
		ResponseType string `json:"response_type"`
		Text         string `json:"text"`
	}
	_ = json.Unmarshal(out, &reply)
	login := slacktest.Links(reply.Text)["Open the admin dashboard"]
	if status != http.StatusOK || !strings.Contains(login, "/admin/login?") || reply.ResponseType != "ephemeral" {
		t.Fatalf("/nightona dashboard: %d %s", status, out)
	}
	dashboardLoginOnce(t, login)
	// A stranger's Stop over HTTP interactivity: acknowledged at once, refused privately.
	payload := s.fake.BlockAction(slackStranger, s.withButton(ts, "nightona_transcript"), "nightona_stop")
	var p map[string]any
	_ = json.Unmarshal(payload, &p)
	p["actions"].([]any)[0].(map[string]any)["value"] = "slack:" + s.fake.Config().TeamID + ":" + slackChannel + ":" + ts
	payload, _ = json.Marshal(p)
	status, _, took = s.signedPost("/slack/interactivity", "application/x-www-form-urlencoded", []byte(url.Values{"payload": {string(payload)}}.Encode()), nil)
	if status != http.StatusOK || took > 3*time.Second {
		t.Fatalf("interactivity: %d in %v", status, took)
	}
	s.ephemeral(slackStranger, "or an admin can stop it")
}

// TestSlackStopEndToEnd: Stop interrupts a slow turn of the real CLI.
func TestSlackStopEndToEnd(t *testing.T) {
	s := startSlackBot(t, slacktest.Config{}, false)
	ts, _ := s.mention(slackOwner, "scenario:slow:400:50 a long story")
	s.waitThread(ts, 90*time.Second, "word5")
	s.press(ts, slackOwner, "nightona_stop")
	got := s.waitThread(ts, 30*time.Second, "Stopped in")
	if strings.Contains(got, "word400") {
		t.Fatal("the turn ran to its end")
	}
}

// TestSlackApprovalEndToEnd: Claude asks to run Bash; a stranger's Approve is refused, the
// owner's lets the command run, and the request shows who approved it.
func TestSlackApprovalEndToEnd(t *testing.T) {
	s := startSlackBot(t, slacktest.Config{}, false)
	ts, _ := s.mention(slackOwner, "scenario:bash run it")
	s.waitThread(ts, 90*time.Second, "Claude wants to use *Bash*")
	s.press(ts, slackStranger, "nightona_approve")
	s.ephemeral(slackStranger, "or an admin can answer Claude's requests here")
	s.press(ts, slackOwner, "nightona_approve")
	got := s.waitThread(ts, 90*time.Second, "approved by <@"+slackOwner+">", "hello-from-bash", "Done in")
	files, _ := filepath.Glob(filepath.Join(s.dataDir, "sandboxes", "*", "workspace", "bash.txt"))
	if len(files) != 1 {
		t.Fatalf("bash.txt was not written:\n%s", got)
	}
	if b, _ := os.ReadFile(files[0]); string(b) != "hello-from-bash\n" {
		t.Fatalf("bash.txt: %q", b)
	}
}

// TestSlackRateLimitStorm: while Slack answers most writes 429, the answer slows down but
// lands whole.
func TestSlackRateLimitStorm(t *testing.T) {
	s := startSlackBot(t, slacktest.Config{}, false)
	var n int
	s.fake.RateLimit(func(c slacktest.Call) time.Duration {
		switch c.Method {
		case "chat.postMessage", "chat.update", "chat.startStream", "chat.appendStream", "chat.stopStream":
			n++
			if n%3 != 0 {
				return time.Second
			}
		}
		return 0
	})
	ts, _ := s.mention(slackOwner, "scenario:slow:40:25 many words")
	got := s.waitThread(ts, 120*time.Second, "Done in")
	for i := 1; i <= 40; i++ {
		if n := wordCount(got, "word"+strconv.Itoa(i)); n != 1 {
			t.Fatalf("word%d shown %d times:\n%s", i, n, got)
		}
	}
	limited := 0
	for _, c := range s.fake.Calls() {
		if c.Status == http.StatusTooManyRequests {
			limited++
		}
	}
	if limited < 3 {
		t.Fatalf("only %d calls were rate limited", limited)
	}
	t.Logf("%d calls answered 429; the answer landed whole", limited)
}

func TestSlackConfigErrors(t *testing.T) {
	for name, c := range map[string]struct {
		env  map[string]string
		want string
	}{
		"no transport":     {map[string]string{"SLACK_BOT_TOKEN": "xoxb-1"}, "no way to reach the bot"},
		"no bot token":     {map[string]string{"SLACK_APP_TOKEN": "xapp-1"}, "SLACK_BOT_TOKEN is not"},
		"user token":       {map[string]string{"SLACK_BOT_TOKEN": "xoxp-1", "SLACK_APP_TOKEN": "xapp-1"}, "starts with xoxb-"},
		"bot as app token": {map[string]string{"SLACK_BOT_TOKEN": "xoxb-1", "SLACK_APP_TOKEN": "xoxb-2"}, "starts with xapp-"},
		"bad API URL":      {map[string]string{"SLACK_BOT_TOKEN": "xoxb-1", "SLACK_SIGNING_SECRET": "s", "SLACK_API_URL": "slack.com"}, "SLACK_API_URL must be"},
	} {
		t.Run(name, func(t *testing.T) {
			env := baseEnv(t)
			for k, v := range c.env {
				env[k] = v
			}
			var stdout, stderr bytes.Buffer
			err := run(t.Context(), nil, func(k string) string { return env[k] }, &stdout, &stderr)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("run: %v, want an error saying %q", err, c.want)
			}
		})
	}
}

// wordCount counts w in s where no digit follows it (word1 is not in word10).
func wordCount(s, w string) int {
	n := 0
	for rest := s; ; {
		i := strings.Index(rest, w)
		if i < 0 {
			return n
		}
		rest = rest[i+len(w):]
		if rest == "" || rest[0] < '0' || rest[0] > '9' {
			n++
		}
	}
}

// TestSlackManifest: the app manifest asks for what the bot uses: the events it handles, the
// scopes of the methods it calls, the command, interactivity and Socket Mode.
func TestSlackManifest(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(testenv.Root(t), "slack-app-manifest.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	m := string(b)
	for _, want := range []string{
		"- app_mention\n", "- message.channels\n", "- message.groups\n", "- message.im\n",
		"- app_mentions:read\n", "- channels:history\n", "- groups:history\n", "- im:history\n",
		"- chat:write\n", "- assistant:write\n", "- commands\n",
		"- command: /nightona\n", "interactivity:\n    is_enabled: true\n", "socket_mode_enabled: true\n",
		"messages_tab_enabled: true\n", "messages_tab_read_only_enabled: false\n",
	} {
		if !strings.Contains(m, want) {
			t.Errorf("the manifest lacks %q", want)
		}
	}
}

// TestSlackTokensRefused: tokens Slack does not accept stop the bot with a message that names
// them.
func TestSlackTokensRefused(t *testing.T) {
	fake := slacktest.New(slacktest.Config{})
	t.Cleanup(fake.Close)
	for name, c := range map[string]struct {
		bot, app, want string
	}{
		"bot token": {"xoxb-revoked", fake.Config().AppToken, "SLACK_BOT_TOKEN is not accepted by Slack (invalid_auth)"},
		"app token": {fake.Config().BotToken, "xapp-revoked", "SLACK_APP_TOKEN is not accepted by Slack (invalid_auth)"},
	} {
		t.Run(name, func(t *testing.T) {
			env := baseEnv(t)
			env["SLACK_BOT_TOKEN"], env["SLACK_APP_TOKEN"], env["SLACK_API_URL"] = c.bot, c.app, fake.APIURL
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			var stdout, stderr testenv.Buffer
			err := run(ctx, nil, func(k string) string { return env[k] }, &stdout, &stderr)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("run: %v, want %q", err, c.want)
			}
		})
	}
}

// dashboardLoginOnce opens a one-time dashboard login link as a browser on another machine
// would (a Host that is not this machine's): it lets the admin in, and only once.
func dashboardLoginOnce(t *testing.T, link string) {
	t.Helper()
	jar, _ := cookiejar.New(nil)
	remote := &http.Client{Jar: jar, Transport: hostRewriter{"nightona.test"}}
	get := func(u string) (int, string) {
		t.Helper()
		resp, err := remote.Get(u)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	base := link[:strings.Index(link, "/admin/login")]
	if status, _ := get(base + "/admin/api/overview"); status != http.StatusUnauthorized {
		t.Fatalf("the dashboard's API from elsewhere without a login: %d, want 401", status)
	}
	if status, body := get(link); status != http.StatusOK || !strings.Contains(body, "<html") {
		t.Fatalf("the login link: %d", status)
	}
	if status, body := get(base + "/admin/api/overview"); status != http.StatusOK || !strings.Contains(body, "sessions") {
		t.Fatalf("the dashboard's API after logging in: %d %s", status, body)
	}
	jar2, _ := cookiejar.New(nil)
	again := &http.Client{Jar: jar2, Transport: hostRewriter{"nightona.test"}}
	resp, err := again.Get(link)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusGone {
		t.Fatalf("the login link a second time: %d, want 410", resp.StatusCode)
	}
}

// hostRewriter sends requests with another Host header, as a browser that reached the bot by
// a public name does.
type hostRewriter struct{ host string }

func (h hostRewriter) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Host = h.host
	return http.DefaultTransport.RoundTrip(r)
}
