package slack

import (
	"context"
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/nightona/nightona/adapters/slack/slacktest"
	"github.com/nightona/nightona/internal/testenv"
	"github.com/nightona/nightona/sandbox/local"
	"github.com/nightona/nightona/session"
)

// TestMentionStreamsAnswer: a mention over Socket Mode starts a session in the message's
// thread, and the answer is streamed into it: a streamed message with the text, Stop below it
// while the turn runs, then the footer and the buttons ending the streamed message.
func TestMentionStreamsAnswer(t *testing.T) {
	e := newEnv(t, envOptions{})
	ts := e.mention(channel, owner, "slow:6:150")
	got := e.waitContent(channel, ts, 20*time.Second, "word0", "word5", "Done in")
	e.noStop(channel, ts)
	sess := e.session(channel, ts)
	if sess.Owner != "slack:"+owner {
		t.Fatalf("session owner %q", sess.Owner)
	}
	msgs := e.fake.BotMessages(channel, ts)
	if len(msgs) != 1 || !msgs[0].Streamed || msgs[0].Streaming {
		t.Fatalf("the thread has %d bot messages, want the one finished stream:\n%s", len(msgs), got)
	}
	final := msgs[0]
	if final.Button(actionLink) == nil || final.Button(actionStop) != nil {
		t.Fatalf("the final message's buttons are %v, want the transcript and no Stop", final.Buttons())
	}
	start := e.fake.Calls("chat.startStream")
	if len(start) != 1 || start[0].Str("thread_ts") != ts || start[0].Str("recipient_user_id") != owner || start[0].Str("recipient_team_id") != e.fake.Config().TeamID {
		t.Fatalf("chat.startStream calls %+v", start)
	}
	// Stop was there while the turn ran, and went with it.
	if calls(e.fake, "chat.delete") != 1 {
		t.Fatalf("%d chat.delete calls, want the Stop message removed once", calls(e.fake, "chat.delete"))
	}
	stopPosted := false
	for _, c := range e.fake.Calls("chat.postMessage") {
		if strings.Contains(c.Str("blocks"), actionStop) {
			stopPosted = true
		}
	}
	if !stopPosted {
		t.Fatal("no Stop button was posted while the turn ran")
	}
	// The thread status said what went on, and was cleared at the end.
	testenv.WaitFor(t, 5*time.Second, "the thread status to clear", func() bool {
		st := e.fake.Statuses(channel, ts)
		return len(st) >= 2 && st[len(st)-1].Status == ""
	})
	if st := e.fake.Statuses(channel, ts); !strings.HasPrefix(st[0].Status, "is ") {
		t.Fatalf("first status %q", st[0].Status)
	}
}

// TestFallbackWithoutStreaming: where the streaming methods are missing, the answer is posted
// and then updated, and the other replicas learn it through Redis.
func TestFallbackWithoutStreaming(t *testing.T) {
	e := newEnv(t, envOptions{fake: slacktest.Config{NoStreaming: true, NoAssistantStatus: true}})
	ts := e.mention(channel, owner, "echo hello without streams")
	e.waitContent(channel, ts, 20*time.Second, "hello without streams", "Done in")
	msgs := e.fake.BotMessages(channel, ts)
	if len(msgs) != 1 || msgs[0].Streamed {
		t.Fatalf("%d bot messages, want one posted and updated", len(msgs))
	}
	if msgs[0].Button(actionLink) == nil || msgs[0].Button(actionStop) != nil {
		t.Fatalf("final buttons %v", msgs[0].Buttons())
	}
	if calls(e.fake, "chat.startStream") != 1 {
		t.Fatalf("chat.startStream tried %d times, want once", calls(e.fake, "chat.startStream"))
	}
	why, err := e.store.Fetch(context.Background(), "slack:missing:stream:"+e.fake.Config().TeamID)
	if err != nil || string(why) != "unknown_method" {
		t.Fatalf("the missing feature is remembered as %q, %v", why, err)
	}
	// A second turn goes straight to updates, and the status is not tried again.
	e.reply(channel, owner, "echo second turn", ts)
	e.waitContent(channel, ts, 20*time.Second, "second turn")
	testenv.WaitFor(t, 10*time.Second, "two finished turns", func() bool {
		return strings.Count(e.content(channel, ts), "Done in") == 2
	})
	if n := calls(e.fake, "chat.startStream"); n != 1 {
		t.Fatalf("chat.startStream tried %d times", n)
	}
	if n := calls(e.fake, "assistant.threads.setStatus"); n != 1 {
		t.Fatalf("assistant.threads.setStatus tried %d times, want once", n)
	}
}

// TestUpdatesCoalesce: a turn that streams many messages is shown with far fewer updates, and
// all of it lands.
func TestUpdatesCoalesce(t *testing.T) {
	for _, streaming := range []bool{true, false} {
		name := map[bool]string{true: "stream", false: "update"}[streaming]
		t.Run(name, func(t *testing.T) {
			e := newEnv(t, envOptions{fake: slacktest.Config{NoStreaming: !streaming}})
			start := time.Now()
			ts := e.mention(channel, owner, "slow:30:50")
			got := e.waitContent(channel, ts, 30*time.Second, "Done in")
			took := time.Since(start)
			for i := 0; i < 30; i++ {
				if !strings.Contains(got, "word"+itoa(i)+"\n") && !strings.HasSuffix(got, "word"+itoa(i)) && strings.Count(got, "word"+itoa(i)) == 0 {
					t.Fatalf("word%d missing from the thread:\n%s", i, got)
				}
			}
			writes := calls(e.fake, "chat.update") + calls(e.fake, "chat.appendStream")
			// One update per UpdateEvery at most, plus a few for the start and the end.
			if max := int(took/(200*time.Millisecond)) + 4; writes > max {
				t.Fatalf("%d updates in %v, want at most %d", writes, took, max)
			}
			t.Logf("%s mode: %d updates for 30 messages in %v", name, writes, took.Round(time.Millisecond))
		})
	}
}

func itoa(i int) string { b, _ := json.Marshal(i); return string(b) }

// TestStopButton: Stop interrupts the running turn for the session's owner; anyone else is
// told, privately, that they may not, and the turn goes on.
func TestStopButton(t *testing.T) {
	for _, streaming := range []bool{true, false} {
		t.Run(map[bool]string{true: "stream", false: "update"}[streaming], func(t *testing.T) {
			e := newEnv(t, envOptions{fake: slacktest.Config{NoStreaming: !streaming}})
			ts := e.mention(channel, owner, "slow:400:50")
			e.waitContent(channel, ts, 20*time.Second, "word3")
			e.press(channel, ts, stranger, actionStop)
			e.ephemeral(stranger, "only <@"+owner+">, who started this session, or an admin can stop it")
			e.waitContent(channel, ts, 10*time.Second, "word12")
			if strings.Contains(e.content(channel, ts), "Stopped in") {
				t.Fatal("a stranger's Stop stopped the turn")
			}
			first := e.withButton(channel, ts, actionStop)
			e.pressOn(first, owner, actionStop)
			got := e.waitContent(channel, ts, 10*time.Second, "Stopped in")
			if strings.Contains(got, "word399") {
				t.Fatal("the turn ran to its end")
			}
			e.noStop(channel, ts) // a Stop left after the turn fails this

			// The first turn's Stop pressed again, late, as a lagging client still shows it,
			// leaves the next turn alone.
			e.reply(channel, owner, "slow:30:50", ts)
			testenv.WaitFor(t, 20*time.Second, "the next turn's Stop", func() bool {
				for _, m := range e.fake.BotMessages(channel, ts) {
					if m.TS != first.TS && m.Button(actionStop) != nil {
						return true
					}
				}
				return false
			})
			e.pressOn(first, owner, actionStop)
			got = e.waitContent(channel, ts, 20*time.Second, ":white_check_mark: Done")
			if n := strings.Count(got, "Stopped in"); n != 1 {
				t.Fatalf("%d turns stopped: the first turn's late Stop stopped the next\n%s", n, got)
			}
		})
	}
}

// TestAdminMayStop: an admin (NIGHTONA_ADMINS) may stop anyone's turn.
func TestAdminMayStop(t *testing.T) {
	e := newEnv(t, envOptions{})
	ts := e.mention(channel, owner, "slow:400:50")
	e.waitContent(channel, ts, 20*time.Second, "word3")
	e.press(channel, ts, admin, actionStop)
	e.waitContent(channel, ts, 10*time.Second, "Stopped in")
}

// TestPermissionButtons: a permission request gets a message of its own, mentioning the
// owner, with Approve and Deny; a stranger's press is refused privately; the owner's answer
// replaces the buttons with the decision and who made it.
func TestPermissionButtons(t *testing.T) {
	for _, c := range []struct {
		name, action, by, want string
	}{
		{"approved by the owner", actionApprove, owner, "approved by <@" + owner + ">"},
		{"denied by an admin", actionDeny, admin, "denied by <@" + admin + ">"},
	} {
		t.Run(c.name, func(t *testing.T) {
			e := newEnv(t, envOptions{})
			ts := e.mention(channel, owner, "ask:Bash")
			e.waitContent(channel, ts, 20*time.Second, "<@"+owner+"> Claude wants to use *Bash*")
			e.press(channel, ts, stranger, c.action)
			e.ephemeral(stranger, "or an admin can answer Claude's requests here")
			e.press(channel, ts, c.by, c.action)
			got := e.waitContent(channel, ts, 10*time.Second, c.want, "Done in")
			behavior := map[string]string{actionApprove: "allow", actionDeny: "deny"}[c.action]
			if !strings.Contains(got, "perm-1 "+behavior) {
				t.Fatalf("Claude was not told %s:\n%s", behavior, got)
			}
			for _, m := range e.fake.BotMessages(channel, ts) {
				if m.Button(actionApprove) != nil {
					t.Fatalf("the buttons are left after the decision: %s", m.Content())
				}
			}
		})
	}
}

// TestRetriedEventHandledOnce: Slack delivers an event again when its ack is late or lost; the
// prompt is submitted once.
func TestRetriedEventHandledOnce(t *testing.T) {
	e := newEnv(t, envOptions{})
	text := "<@U0BOT> echo once"
	ts := e.fake.PostUserMessage(channel, owner, text, "")
	ev := e.fake.AppMention(channel, owner, text, ts, "")
	eventID, envelope := e.fake.SendEvent(ev)
	e.acked(envelope)
	// The same event again, as Slack's retry (same event id, a new envelope).
	e.acked(e.fake.Deliver("events_api", json.RawMessage(e.fake.CallbackWithID(eventID, ev))))
	e.waitContent(channel, ts, 20*time.Second, "once", "Done in")
	evs, err := e.mgr.Events(context.Background(), e.session(channel, ts).ID, 0, 1000, 0)
	if err != nil {
		t.Fatal(err)
	}
	prompts := 0
	for _, ev := range evs {
		if ev.Kind == "prompt" {
			prompts++
		}
	}
	if prompts != 1 {
		t.Fatalf("%d prompts in the log, want 1", prompts)
	}
}

// TestStormOf429s: while Slack answers most writes 429 with Retry-After, updates slow down,
// the budget is held for every caller, and the final state still lands whole.
func TestStormOf429s(t *testing.T) {
	for _, streaming := range []bool{true, false} {
		t.Run(map[bool]string{true: "stream", false: "update"}[streaming], func(t *testing.T) {
			e := newEnv(t, envOptions{fake: slacktest.Config{NoStreaming: !streaming}})
			var n int
			e.fake.RateLimit(func(c slacktest.Call) time.Duration {
				switch c.Method {
				case "chat.update", "chat.appendStream", "chat.postMessage", "chat.stopStream", "chat.startStream":
					n++
					if n%3 != 0 { // two calls in three refused
						return time.Second
					}
				}
				return 0
			})
			ts := e.mention(channel, owner, "slow:20:40")
			got := e.waitContent(channel, ts, 60*time.Second, "word0", "word19", "Done in")
			for i := 0; i < 20; i++ {
				if !strings.Contains(got, "word"+itoa(i)) {
					t.Fatalf("word%d lost:\n%s", i, got)
				}
			}
			// After a 429, nobody called that method again before its Retry-After ran out.
			all := e.fake.Calls()
			for i, c := range all {
				if c.Status != 429 {
					continue
				}
				for _, d := range all[i+1:] {
					if d.Method == c.Method && d.At.Sub(c.At) < 900*time.Millisecond {
						t.Fatalf("%s called %v after a 429 that said to wait 1 s", d.Method, d.At.Sub(c.At))
					}
				}
			}
			limited := 0
			for _, c := range all {
				if c.Status == 429 {
					limited++
				}
			}
			if limited == 0 {
				t.Fatal("no call was rate limited")
			}
			t.Logf("%d calls answered 429", limited)
		})
	}
}

// command types /nightona text as user in channel over Socket Mode and returns the reply
// Slack shows them (the ack's payload), checking it is theirs alone.
func (e *env) command(user, text string) (reply string, responseURL string) {
	e.t.Helper()
	form := e.fake.SlashCommand(channel, user, text)
	ack := e.acked(e.fake.SendCommand(form))
	var out struct {
		ResponseType string `json:"response_type"`
		Text         string `json:"text"`
	}
	if err := json.Unmarshal(ack.Payload, &out); err != nil {
		e.t.Fatalf("/nightona %s: the ack's payload %s: %v", text, ack.Payload, err)
	}
	if out.ResponseType != "ephemeral" {
		e.t.Fatalf("/nightona %s answered %q for everyone to see", text, out.ResponseType)
	}
	return out.Text, form.Get("response_url")
}

func TestCommands(t *testing.T) {
	e := newEnv(t, envOptions{})
	expect := func(user, text string, want ...string) string {
		t.Helper()
		got, _ := e.command(user, text)
		for _, w := range want {
			if !strings.Contains(got, w) {
				t.Fatalf("/nightona %s answered:\n%s\nwant it to contain %q", text, got, w)
			}
		}
		return got
	}
	expect(owner, "", "`/nightona status")
	expect(owner, "help", "`/nightona usage", "`/nightona config")
	expect(owner, "frobnicate now", "I don't know `/nightona frobnicate now`", "`/nightona help`")
	expect(owner, "usage sideways", "Usage: `/nightona usage", "`/nightona help`")
	expect(admin, "config mode", "Usage: `/nightona config", "`/nightona help`")
	expect(owner, "status", "no Nightona session in this channel")

	ts := e.mention(channel, owner, "echo first")
	e.waitContent(channel, ts, 20*time.Second, "Done in")
	sess := e.session(channel, ts)
	expect(stranger, "status", "`"+sess.ID+"`", "Started by <@"+owner+">", "1 turn", "https://test-team.slack.com/archives/"+channel+"/p")
	expect(stranger, "status "+sess.ID, "`"+sess.ID+"`")
	expect(stranger, "status https://test-team.slack.com/archives/"+channel+"/p"+strings.Replace(ts, ".", "", 1), "`"+sess.ID+"`")
	expect(stranger, "status ses_nope", "There is no session `ses_nope`")

	expect(stranger, "list", "Only admins")
	expect(admin, "list", "1 active session", sess.ID)
	expect(stranger, "dashboard", "Only admins can open the dashboard")
	expect(admin, "dashboard", "<https://nightona.example/admin/login?user=slack:"+admin+"&amp;sig=x|Open the admin dashboard>")

	expect(owner, "usage", "You: 1 turn", "This channel: 1 turn")
	expect(stranger, "usage <@"+owner+">", "Only admins")
	expect(admin, "usage <@"+owner+"|owner>", "<@"+owner+">: 1 turn")
	expect(stranger, "usage all", "Only admins")
	expect(admin, "usage all", "Everyone: 1 turn", "*Top users*\n• <@"+owner+">: 1 turn", "*Top channels*\n• <#"+channel+">: 1 turn")

	expect(stranger, "config", "permission mode *bot default* and model *default*")
	expect(stranger, "config model opus", "Only admins")
	expect(admin, "config mode sideways", "not a permission mode")
	expect(admin, "config model bad;name", "not a model name")
	expect(admin, "config mode plan", "Saved.", "permission mode *plan*", "set by <@"+admin+">")
	expect(admin, "config model opus", "model *opus*")
	// A session started in the channel now begins with them.
	ts2 := e.mention(channel, owner, "echo second")
	e.waitContent(channel, ts2, 20*time.Second, "Done in")
	if s := e.session(channel, ts2); s.PermissionMode != "plan" || s.Model != "opus" {
		t.Fatalf("new session settings %q %q, want the channel's", s.PermissionMode, s.Model)
	}
	expect(admin, "config reset", "permission mode *bot default*")

	// Two sessions in the channel: stop must be told which.
	expect(owner, "stop", "This channel has 2 sessions", sess.ID)
	expect(stranger, "stop "+sess.ID, "Only <@"+owner+">")
	got, responseURL := e.command(owner, "stop "+sess.ID)
	if !strings.Contains(got, "Stopping session") {
		t.Fatalf("stop answered %q", got)
	}
	testenv.WaitFor(t, 10*time.Second, "the stop's outcome on the response URL", func() bool {
		rs := e.fake.Responses(responseURL)
		return len(rs) == 1 && strings.Contains(rs[0].Body["text"].(string), "is stopped")
	})
	if s := e.session(channel, ts); s.State != "stopped" {
		t.Fatalf("state after stop: %s", s.State)
	}
	expect(owner, "destroy", "Name the session to destroy")
	_, responseURL = e.command(admin, "destroy "+sess.ID)
	testenv.WaitFor(t, 10*time.Second, "the destroy's outcome", func() bool {
		rs := e.fake.Responses(responseURL)
		return len(rs) == 1 && strings.Contains(rs[0].Body["text"].(string), "is destroyed")
	})
	expect(owner, "status "+sess.ID, "There is no session")
	// What a destroyed session cost is still counted, and still named.
	expect(admin, "usage all", "Everyone: 2 turns", "• <@"+owner+">: 2 turns", "• <#"+channel+">: 2 turns")
}

// TestWhoMayPrompt: thread replies continue a session, direct messages start one, and bot
// messages, edits, top-level chatter and people who may not prompt are ignored (the last told
// why).
func TestWhoMayPrompt(t *testing.T) {
	e := newEnv(t, envOptions{adapter: func(c *Config) { c.Prompters = []string{owner, "slack:U0SECOND"} }})
	ts := e.mention(channel, owner, "echo first")
	e.waitContent(channel, ts, 20*time.Second, "first", "Done in")

	// A reply in the thread goes on with the same session, from anyone allowed.
	e.reply(channel, "U0SECOND", "echo second", ts)
	e.waitContent(channel, ts, 20*time.Second, "second")
	testenv.WaitFor(t, 10*time.Second, "two finished turns", func() bool {
		return strings.Count(e.content(channel, ts), "Done in") == 2
	})

	// Ignored: a bot's message, an edit, a top-level message, a reply in a thread without
	// a session, and a reply that mentions the bot (its app_mention carries it).
	ignored := []map[string]any{
		func() map[string]any {
			m := e.fake.MessageEvent("channel", channel, "", "echo from a bot", e.fake.PostUserMessage(channel, "B1", "x", ts), ts)
			m["bot_id"], m["subtype"] = "B1", "bot_message"
			return m
		}(),
		func() map[string]any {
			m := e.fake.MessageEvent("channel", channel, owner, "echo edited", "1.000001", ts)
			m["subtype"] = "message_changed"
			return m
		}(),
		e.fake.MessageEvent("channel", channel, owner, "echo top level", e.fake.PostUserMessage(channel, owner, "x", ""), ""),
		e.fake.MessageEvent("channel", channel, owner, "echo other thread", e.fake.PostUserMessage(channel, owner, "x", "1.000002"), "1.000002"),
		e.fake.MessageEvent("channel", channel, owner, "<@U0BOT> echo mention", e.fake.PostUserMessage(channel, owner, "x", ts), ts),
	}
	for _, ev := range ignored {
		_, envelope := e.fake.SendEvent(ev)
		e.acked(envelope)
	}
	// A stranger is told, privately, and nothing runs.
	e.reply(channel, stranger, "echo stranger", ts)
	e.ephemeral(stranger, "not on the list of people who may prompt")
	// Someone from another workspace, in a shared channel, likewise.
	ext := e.fake.MessageEvent("channel", channel, owner, "echo external", e.fake.PostUserMessage(channel, owner, "x", ts), ts)
	ext["user_team"] = "T0ELSEWHERE"
	_, envelope := e.fake.SendEvent(ext)
	e.acked(envelope)
	e.ephemeral(owner, "only from members of this workspace")

	// A direct message starts a session of its own.
	dm := "D0DIRECT"
	dts := e.fake.PostUserMessage(dm, owner, "echo in private", "")
	_, envelope = e.fake.SendEvent(e.fake.MessageEvent("im", dm, owner, "echo in private", dts, ""))
	e.acked(envelope)
	e.waitContent(dm, dts, 20*time.Second, "in private", "Done in")

	// Nothing else ran.
	testenv.WaitFor(t, 5*time.Second, "the ignored events to be dropped", func() bool {
		return counterValue(e.a.metrics.events.WithLabelValues("message", "ignored")) >= float64(len(ignored))
	})
	evs, err := e.mgr.Events(context.Background(), e.session(channel, ts).ID, 0, 1000, 0)
	if err != nil {
		t.Fatal(err)
	}
	var prompts []string
	for _, ev := range evs {
		if ev.Kind == "prompt" {
			var p struct{ Text string }
			_ = json.Unmarshal(ev.Data, &p)
			prompts = append(prompts, p.Text)
		}
	}
	if strings.Join(prompts, "|") != "echo first|echo second" {
		t.Fatalf("prompts in the thread's session: %q", prompts)
	}
	all, _ := e.mgr.List(context.Background())
	if len(all) != 2 {
		t.Fatalf("%d sessions, want the thread's and the direct message's", len(all))
	}
}

// TestPromptProblemsAreExplained: an empty mention and an oversized prompt get a private word
// saying what to do; a prompt while a turn runs is queued, and said so.
func TestPromptProblemsAreExplained(t *testing.T) {
	e := newEnv(t, envOptions{session: func(c *session.Config) { c.MaxPromptBytes = 200 }})
	e.mention(channel, owner, "   ")
	e.ephemeral(owner, "Tell me what to do after the mention")
	e.mention(channel, owner, strings.Repeat("x", 300))
	e.ephemeral(owner, "too long for Claude")
	ts := e.mention(channel, owner, "slow:20:50")
	e.waitContent(channel, ts, 20*time.Second, "word1")
	e.reply(channel, owner, "echo queued", ts)
	e.ephemeral(owner, "yours comes next")
	e.waitContent(channel, ts, 20*time.Second, "queued")
	testenv.WaitFor(t, 10*time.Second, "two finished turns", func() bool {
		return strings.Count(e.content(channel, ts), "Done in") == 2
	})
}

// TestFollowerRestart: a follower that stops mid-turn (its replica restarts, another takes
// the session) and starts again, in a new process, edits the same messages: nothing is posted
// twice and nothing is lost; once the turn has landed, a new follower changes nothing.
func TestFollowerRestart(t *testing.T) {
	for _, streaming := range []bool{true, false} {
		t.Run(map[bool]string{true: "stream", false: "update"}[streaming], func(t *testing.T) {
			e := newEnv(t, envOptions{noFollow: true, fake: slacktest.Config{NoStreaming: !streaming}})
			ts := e.mention(channel, owner, "slow:30:60")
			var sess *session.Session
			testenv.WaitFor(t, 10*time.Second, "the session", func() bool {
				s, err := e.mgr.Session(context.Background(), thread{Team: e.fake.Config().TeamID, Channel: channel, TS: ts}.key())
				sess = s
				return err == nil
			})
			follow := func(a *Adapter, until func() bool) {
				ctx, cancel := context.WithCancel(context.Background())
				done := make(chan struct{})
				go func() { a.Follow(ctx, sess); close(done) }()
				testenv.WaitFor(t, 30*time.Second, "the follower's part", until)
				cancel()
				<-done
			}
			follow(e.a, func() bool { return strings.Contains(e.content(channel, ts), "word5") })
			// A new adapter, as in a restarted process: only Redis remembers.
			a2, err := New(e.mgr, e.store, e.a.cfg)
			if err != nil {
				t.Fatal(err)
			}
			// Landed: the footer is in, and (when streaming) the message with Stop is gone.
			follow(a2, func() bool {
				return strings.Contains(e.content(channel, ts), "Done in") && len(e.fake.BotMessages(channel, ts)) == 1
			})
			got := e.content(channel, ts)
			for i := 0; i < 30; i++ {
				w := "word" + itoa(i)
				if n := countWord(got, w); n != 1 {
					t.Fatalf("%s shown %d times:\n%s", w, n, got)
				}
			}
			msgs := e.fake.BotMessages(channel, ts)
			if len(msgs) != 1 {
				t.Fatalf("%d bot messages, want 1:\n%s", len(msgs), got)
			}
			before := len(e.fake.Calls())
			a3, _ := New(e.mgr, e.store, e.a.cfg)
			follow(a3, func() bool { return true })
			if after := e.fake.Calls(); len(after) != before {
				t.Fatalf("a follower of a landed turn made %d calls: %+v", len(after)-before, after[before:])
			}
		})
	}
}

// countWord counts w in s where it is not followed by a digit (word1 is not in word10).
func countWord(s, w string) int {
	n := 0
	for i := strings.Index(s, w); i >= 0; {
		end := i + len(w)
		if end >= len(s) || s[end] < '0' || s[end] > '9' {
			n++
		}
		j := strings.Index(s[end:], w)
		if j < 0 {
			break
		}
		i = end + j
	}
	return n
}

// TestLongAnswer: an answer longer than a message takes several (update mode), or streams in
// pieces a call can take (stream mode); all of it lands and the footer ends it.
func TestLongAnswer(t *testing.T) {
	var b strings.Builder
	for i := 0; b.Len() < 20000; i++ {
		b.WriteString("line" + itoa(i) + " of a long answer\n")
	}
	text := b.String()
	for _, streaming := range []bool{true, false} {
		t.Run(map[bool]string{true: "stream", false: "update"}[streaming], func(t *testing.T) {
			e := newEnv(t, envOptions{fake: slacktest.Config{NoStreaming: !streaming}})
			ts := e.mention(channel, owner, "echo "+text)
			got := e.waitContent(channel, ts, 30*time.Second, "Done in")
			last := strings.Count(text, "\n") - 1
			for _, i := range []int{0, 500, last} {
				if countWord(got, "line"+itoa(i)) != 1 {
					t.Fatalf("line%d shown %d times", i, countWord(got, "line"+itoa(i)))
				}
			}
			e.noStop(channel, ts)
			msgs := e.fake.BotMessages(channel, ts)
			if streaming && len(msgs) != 1 || !streaming && len(msgs) != 2 {
				t.Fatalf("%d messages for a 20,000-character answer", len(msgs))
			}
			if !strings.Contains(msgs[len(msgs)-1].Content(), "Done in") {
				t.Fatal("the footer is not on the last message")
			}
		})
	}
}

func counterValue(c prometheus.Counter) float64 {
	var m dto.Metric
	_ = c.Write(&m)
	return m.GetCounter().GetValue()
}

// TestSocketModeReconnects: when Slack asks the app to reconnect (refresh_requested), it
// does, and events go on flowing.
func TestSocketModeReconnects(t *testing.T) {
	e := newEnv(t, envOptions{fake: slacktest.Config{PingInterval: 200 * time.Millisecond}})
	e.fake.Disconnect("refresh_requested")
	if !e.fake.WaitConnected(2, 15*time.Second) {
		t.Fatal("the adapter did not reconnect")
	}
	ts := e.mention(channel, owner, "echo after the refresh")
	e.waitContent(channel, ts, 20*time.Second, "after the refresh", "Done in")
}

// TestButtonsPressedOnAnotherReplica: Slack hands a press to any replica; one that does not
// drive the session passes it, through the session manager, to the one that does.
func TestButtonsPressedOnAnotherReplica(t *testing.T) {
	e := newEnv(t, envOptions{})
	// Replica b: its own manager on the same Redis, driving nothing.
	prov, err := local.New(local.Config{Dir: t.TempDir(), RelayBinary: testenv.RelayBinary(t), Claude: os.Args[0]})
	if err != nil {
		t.Fatal(err)
	}
	defer prov.Close()
	mgrB, err := session.NewManager(e.store, prov, session.Config{ReplicaID: "replica-b", Admins: []string{"slack:" + admin}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = mgrB.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	other, err := New(mgrB, e.store, e.a.cfg)
	if err != nil {
		t.Fatal(err)
	}
	pressOn := func(a *Adapter, ts, user, actionID string) {
		t.Helper()
		var msg slacktest.Message
		testenv.WaitFor(t, 10*time.Second, "the button "+actionID, func() bool {
			for _, m := range e.fake.BotMessages(channel, ts) {
				if m.Button(actionID) != nil {
					msg = m
					return true
				}
			}
			return false
		})
		a.SlackInteraction(context.Background(), e.fake.BlockAction(user, msg, actionID))
	}
	ts := e.mention(channel, owner, "ask:Bash")
	e.waitContent(channel, ts, 20*time.Second, "Claude wants to use")
	pressOn(other, ts, stranger, actionApprove)
	e.ephemeral(stranger, "or an admin can answer")
	pressOn(other, ts, owner, actionApprove)
	e.waitContent(channel, ts, 10*time.Second, "approved by <@"+owner+">", "perm-1 allow", "Done in")
	if !e.logs.HasLine("carried out a request from another replica", "kind=decide") {
		t.Fatal("the answer did not go through the replica driving the session")
	}

	ts = e.mention(channel, owner, "slow:400:50")
	e.waitContent(channel, ts, 20*time.Second, "word3")
	pressOn(other, ts, owner, actionStop)
	e.waitContent(channel, ts, 10*time.Second, "Stopped in")
	if !e.logs.HasLine("carried out a request from another replica", "kind=interrupt") {
		t.Fatal("the Stop did not go through the replica driving the session")
	}
}
