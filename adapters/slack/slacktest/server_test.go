package slacktest_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/slack-go/slack"
	"github.com/slack-go/slack/socketmode"

	"github.com/nightona/nightona/adapters/slack/slacktest"
)

// The fake is checked with slack-go's own client: what the real library sends, the fake must
// read, and what the fake answers, the library must understand.

func client(s *slacktest.Server, token string) *slack.Client {
	return slack.New(token, slack.OptionAPIURL(s.APIURL), slack.OptionAppLevelToken(s.Config().AppToken))
}

func TestTokens(t *testing.T) {
	s := slacktest.New(slacktest.Config{})
	defer s.Close()
	ctx := context.Background()
	if _, err := client(s, s.Config().BotToken).AuthTestContext(ctx); err != nil {
		t.Fatal(err)
	}
	var se slack.SlackErrorResponse
	if _, err := client(s, "xoxb-wrong").AuthTestContext(ctx); !errors.As(err, &se) || se.Err != "invalid_auth" {
		t.Fatalf("a wrong token: %v", err)
	}
	if _, err := client(s, s.Config().AppToken).AuthTestContext(ctx); !errors.As(err, &se) || se.Err != "not_allowed_token_type" {
		t.Fatalf("the app token on a bot method: %v", err)
	}
	// JSON bodies carry the token in the Authorization header.
	req, _ := http.NewRequest(http.MethodPost, s.APIURL+"chat.postMessage", strings.NewReader(`{"channel":"C1","text":"hi","blocks":[{"type":"markdown","text":"**hi**"}]}`))
	req.Header.Set("Content-Type", "application/json; charset=utf-8")
	req.Header.Set("Authorization", "Bearer "+s.Config().BotToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var out struct {
		OK bool
		TS string
	}
	json.NewDecoder(resp.Body).Decode(&out)
	resp.Body.Close()
	if !out.OK || out.TS == "" {
		t.Fatalf("a JSON chat.postMessage: %+v", out)
	}
	if m := s.Messages("C1", ""); len(m) != 1 || !strings.Contains(m[0].Content(), "**hi**") {
		t.Fatalf("messages %+v", m)
	}
	if calls := s.Calls("chat.postMessage"); !calls[0].JSON {
		t.Fatal("the call is not recorded as JSON")
	}
}

func TestMessagesAndLimits(t *testing.T) {
	s := slacktest.New(slacktest.Config{})
	defer s.Close()
	ctx := context.Background()
	api := client(s, s.Config().BotToken)
	parent := s.PostUserMessage("C1", "U1", "hello", "")
	var last string
	for i := 0; i < 20; i++ {
		_, ts, err := api.PostMessageContext(ctx, "C1", slack.MsgOptionText("reply", false), slack.MsgOptionTS(parent))
		if err != nil {
			t.Fatal(err)
		}
		if ts <= last || ts <= parent {
			t.Fatalf("ts %s after %s: not increasing", ts, last)
		}
		last = ts
	}
	if n := len(s.BotMessages("C1", parent)); n != 20 {
		t.Fatalf("%d replies in the thread", n)
	}
	if _, _, _, err := api.UpdateMessageContext(ctx, "C1", last, slack.MsgOptionBlocks(slack.NewMarkdownBlock("", "changed"))); err != nil {
		t.Fatal(err)
	}
	msgs := s.BotMessages("C1", parent)
	if m := msgs[len(msgs)-1]; m.Updates != 1 || !strings.Contains(m.Content(), "changed") {
		t.Fatalf("updated message %+v", m)
	}
	bad := map[string][]slack.Block{
		"too many blocks":     repeat(slack.NewDividerBlock(), 51),
		"markdown over 12000": {slack.NewMarkdownBlock("", strings.Repeat("x", 7000)), slack.NewMarkdownBlock("", strings.Repeat("x", 7000))},
		"long section":        {slack.NewSectionBlock(slack.NewTextBlockObject("mrkdwn", strings.Repeat("x", 3001), false, false), nil, nil)},
		"duplicate action ids": {slack.NewActionBlock("", slack.NewButtonBlockElement("a", "", slack.NewTextBlockObject("plain_text", "A", false, false)),
			slack.NewButtonBlockElement("a", "", slack.NewTextBlockObject("plain_text", "B", false, false)))},
	}
	for name, blocks := range bad {
		_, _, err := api.PostMessageContext(ctx, "C1", slack.MsgOptionBlocks(blocks...))
		var se slack.SlackErrorResponse
		if !errors.As(err, &se) || se.Err != "invalid_blocks" {
			t.Errorf("%s: %v, want invalid_blocks", name, err)
		}
	}
	if _, _, err := api.PostMessageContext(ctx, "C1", slack.MsgOptionTS("1.000000"), slack.MsgOptionText("x", false)); err == nil {
		t.Error("a reply to a thread that does not exist was taken")
	}
	if _, err := api.PostEphemeralContext(ctx, "C1", "U2", slack.MsgOptionText("just you", false)); err != nil {
		t.Fatal(err)
	}
	if e := s.Ephemerals("U2"); len(e) != 1 || e[0].Text != "just you" || len(s.Ephemerals("U1")) != 0 {
		t.Fatalf("ephemerals %+v", e)
	}
	if _, _, err := api.DeleteMessageContext(ctx, "C1", last); err != nil {
		t.Fatal(err)
	}
	if n := len(s.BotMessages("C1", parent)); n != 19 {
		t.Fatalf("%d replies after a delete", n)
	}
	if err := api.SetAssistantThreadsStatusContext(ctx, slack.AssistantThreadsSetStatusParameters{ChannelID: "C1", ThreadTS: parent, Status: "is thinking…"}); err != nil {
		t.Fatal(err)
	}
	if st := s.Statuses("C1", parent); len(st) != 1 || st[0].Status != "is thinking…" {
		t.Fatalf("statuses %+v", st)
	}
}

func repeat(b slack.Block, n int) []slack.Block {
	out := make([]slack.Block, n)
	for i := range out {
		out[i] = b
	}
	return out
}

func TestStreaming(t *testing.T) {
	s := slacktest.New(slacktest.Config{StreamLifetime: time.Second})
	defer s.Close()
	ctx := context.Background()
	api := client(s, s.Config().BotToken)
	parent := s.PostUserMessage("C1", "U1", "hello", "")
	var se slack.SlackErrorResponse
	if _, _, err := api.StartStreamContext(ctx, "C1", slack.MsgOptionTS(parent)); !errors.As(err, &se) || se.Err != "missing_recipient_user_id" {
		t.Fatalf("a channel stream without its recipient: %v", err)
	}
	_, ts, err := api.StartStreamContext(ctx, "C1", slack.MsgOptionTS(parent), slack.MsgOptionRecipientUserID("U1"),
		slack.MsgOptionRecipientTeamID(s.Config().TeamID), slack.MsgOptionChunks(slack.NewMarkdownTextChunk("Hello")))
	if err != nil {
		t.Fatal(err)
	}
	task := slack.NewTaskUpdateChunk("t1", "Bash: npm test")
	task.Status = slack.TaskCardStatusInProgress
	if _, _, err := api.AppendStreamContext(ctx, "C1", ts, slack.MsgOptionChunks(slack.NewMarkdownTextChunk(", world"), task)); err != nil {
		t.Fatal(err)
	}
	task.Status, task.Output = slack.TaskCardStatusComplete, "ok"
	if _, _, err := api.AppendStreamContext(ctx, "C1", ts, slack.MsgOptionChunks(task)); err != nil {
		t.Fatal(err)
	}
	if _, _, err := api.StopStreamContext(ctx, "C1", ts, slack.MsgOptionBlocks(slack.NewContextBlock("", slack.NewTextBlockObject("mrkdwn", "Done", false, false)))); err != nil {
		t.Fatal(err)
	}
	m := s.BotMessages("C1", parent)[0]
	if m.Stream != "Hello, world" || len(m.Tasks) != 1 || m.Tasks[0].Status != "complete" || m.Streaming || !strings.Contains(m.Content(), "Done") {
		t.Fatalf("streamed message %+v", m)
	}
	if _, _, err := api.AppendStreamContext(ctx, "C1", ts, slack.MsgOptionMarkdownText("more")); !errors.As(err, &se) || se.Err != "message_not_in_streaming_state" {
		t.Fatalf("appending to a stopped stream: %v", err)
	}
	// Long streams are closed by Slack.
	_, ts2, _ := api.StartStreamContext(ctx, "C1", slack.MsgOptionTS(parent), slack.MsgOptionRecipientUserID("U1"), slack.MsgOptionRecipientTeamID("T"))
	time.Sleep(1100 * time.Millisecond) // past StreamLifetime, which is what is tested
	if _, _, err := api.AppendStreamContext(ctx, "C1", ts2, slack.MsgOptionMarkdownText("late")); !errors.As(err, &se) || se.Err != "message_not_in_streaming_state" {
		t.Fatalf("appending to an expired stream: %v", err)
	}

	off := slacktest.New(slacktest.Config{NoStreaming: true})
	defer off.Close()
	p := off.PostUserMessage("C1", "U1", "x", "")
	if _, _, err := client(off, off.Config().BotToken).StartStreamContext(ctx, "C1", slack.MsgOptionTS(p)); !errors.As(err, &se) || se.Err != "unknown_method" {
		t.Fatalf("streaming where it is missing: %v", err)
	}
}

func TestRateLimit(t *testing.T) {
	s := slacktest.New(slacktest.Config{})
	defer s.Close()
	s.RateLimit(func(c slacktest.Call) time.Duration {
		if c.Method == "chat.postMessage" {
			return 1500 * time.Millisecond
		}
		return 0
	})
	_, _, err := client(s, s.Config().BotToken).PostMessageContext(context.Background(), "C1", slack.MsgOptionText("x", false))
	var rl *slack.RateLimitedError
	if !errors.As(err, &rl) || rl.RetryAfter != 2*time.Second {
		t.Fatalf("a limited call: %v, want Retry-After 2s", err)
	}
	if c := s.Calls("chat.postMessage"); len(c) != 1 || c[0].Status != http.StatusTooManyRequests {
		t.Fatalf("calls %+v", c)
	}
	s.RateLimit(nil)
	if _, _, err := client(s, s.Config().BotToken).PostMessageContext(context.Background(), "C1", slack.MsgOptionText("x", false)); err != nil {
		t.Fatal(err)
	}
}

func TestResponseURL(t *testing.T) {
	s := slacktest.New(slacktest.Config{})
	defer s.Close()
	u := s.ResponseURL()
	if err := slack.PostWebhookContext(context.Background(), u, &slack.WebhookMessage{ResponseType: "ephemeral", Text: "later"}); err != nil {
		t.Fatal(err)
	}
	if r := s.Responses(u); len(r) != 1 || r[0].Body["text"] != "later" {
		t.Fatalf("responses %+v", r)
	}
}

// TestSocketMode drives slack-go's Socket Mode client: it connects with the URL
// apps.connections.open gives, is greeted, receives an event, a command and an interaction,
// and acknowledges them; an envelope left unacknowledged comes again with a higher
// retry_attempt; a disconnect makes the client reconnect.
func TestSocketMode(t *testing.T) {
	s := slacktest.New(slacktest.Config{PingInterval: 200 * time.Millisecond, AckTimeout: 500 * time.Millisecond})
	defer s.Close()
	sm := socketmode.New(client(s, s.Config().BotToken), socketmode.OptionPingInterval(2*time.Second))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go sm.RunContext(ctx)
	ignoreNext := true
	got := make(chan socketmode.Event, 16)
	go func() {
		for evt := range sm.Events {
			switch evt.Type {
			case socketmode.EventTypeEventsAPI, socketmode.EventTypeSlashCommand, socketmode.EventTypeInteractive:
				if evt.Type == socketmode.EventTypeInteractive && ignoreNext {
					ignoreNext = false // left unacknowledged: Slack delivers it again
					continue
				}
				var payload any
				if evt.Type == socketmode.EventTypeSlashCommand {
					payload = map[string]string{"text": "pong"}
				}
				sm.Ack(*evt.Request, payload)
				got <- evt
			case socketmode.EventTypeHello:
				got <- evt
			}
		}
	}()
	next := func(want socketmode.EventType) socketmode.Event {
		t.Helper()
		select {
		case evt := <-got:
			if evt.Type != want {
				t.Fatalf("got %s, want %s", evt.Type, want)
			}
			return evt
		case <-time.After(5 * time.Second):
			t.Fatalf("no %s", want)
		}
		return socketmode.Event{}
	}
	next(socketmode.EventTypeHello)
	ts := s.PostUserMessage("C1", "U1", "<@U0BOT> hi", "")
	eventID, env := s.SendEvent(s.AppMention("C1", "U1", "<@U0BOT> hi", ts, ""))
	evt := next(socketmode.EventTypeEventsAPI)
	if !bytes.Contains(evt.Request.Payload, []byte(eventID)) {
		t.Fatalf("event payload %s", evt.Request.Payload)
	}
	if ack, ok := s.WaitAck(env, time.Second); !ok || ack.Attempt != 0 {
		t.Fatalf("ack %+v %v", ack, ok)
	}
	env = s.SendCommand(s.SlashCommand("C1", "U1", "help"))
	cmd := next(socketmode.EventTypeSlashCommand).Data.(slack.SlashCommand)
	if cmd.Command != "/nightona" || cmd.Text != "help" || cmd.ResponseURL == "" {
		t.Fatalf("command %+v", cmd)
	}
	if ack, _ := s.WaitAck(env, time.Second); string(ack.Payload) != `{"text":"pong"}` {
		t.Fatalf("the command's ack carries %s", ack.Payload)
	}
	msg := s.Messages("C1", ts)[0]
	env = s.SendInteraction(s.BlockAction("U1", msg, "nightona_stop"))
	cb := next(socketmode.EventTypeInteractive).Data.(slack.InteractionCallback)
	if cb.Type != slack.InteractionTypeBlockActions || cb.ActionCallback.BlockActions[0].ActionID != "nightona_stop" || cb.User.ID != "U1" {
		t.Fatalf("interaction %+v", cb)
	}
	if ack, ok := s.WaitAck(env, 3*time.Second); !ok || ack.Attempt != 1 {
		t.Fatalf("the unacknowledged envelope's ack: %+v %v, want it on retry 1", ack, ok)
	}
	// Pings keep flowing: the client, which gives up after 2 s without one, stays connected.
	time.Sleep(2500 * time.Millisecond) // longer than the client's ping timeout, which is what is tested
	if _, opened := s.Connections(); opened != 1 {
		t.Fatalf("%d connections opened: the client lost the pings", opened)
	}
	s.Disconnect("refresh_requested")
	if !s.WaitConnected(2, 10*time.Second) {
		t.Fatal("the client did not reconnect after a disconnect")
	}
	next(socketmode.EventTypeHello)
	_, env = s.SendEvent(s.AppMention("C1", "U1", "<@U0BOT> again", ts, ""))
	next(socketmode.EventTypeEventsAPI)
	if _, ok := s.WaitAck(env, time.Second); !ok {
		t.Fatal("no ack on the new connection")
	}
}
