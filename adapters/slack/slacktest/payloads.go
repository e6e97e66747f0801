package slacktest

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/url"
	"strconv"
	"time"
)

// What Slack sends an app, built the way Slack builds it: Events API callbacks, slash commands
// and block_actions payloads, for delivery over Socket Mode (Send*) or, signed, over HTTP.

// AppMention returns an app_mention event for a person's message that mentions the bot (put
// "<@BOTUSERID>" in text).
func (s *Server) AppMention(channel, user, text, ts, threadTS string) map[string]any {
	ev := map[string]any{"type": "app_mention", "user": user, "text": text, "ts": ts, "channel": channel,
		"event_ts": ts, "team": s.cfg.TeamID, "client_msg_id": "msg-" + ts}
	if threadTS != "" {
		ev["thread_ts"] = threadTS
	}
	return ev
}

// MessageEvent returns a message event (channelType: channel, group, im) for a person's message.
func (s *Server) MessageEvent(channelType, channel, user, text, ts, threadTS string) map[string]any {
	ev := map[string]any{"type": "message", "channel_type": channelType, "user": user, "text": text, "ts": ts,
		"channel": channel, "event_ts": ts, "team": s.cfg.TeamID, "client_msg_id": "msg-" + ts}
	if threadTS != "" {
		ev["thread_ts"] = threadTS
	}
	return ev
}

// Callback wraps an inner event in an event_callback with a new event id.
func (s *Server) Callback(inner map[string]any) (eventID string, body []byte) {
	s.mu.Lock()
	s.nextEvent++
	eventID = fmt.Sprintf("Ev%08d", s.nextEvent)
	s.mu.Unlock()
	return eventID, s.CallbackWithID(eventID, inner)
}

// CallbackWithID wraps an inner event in an event_callback with the given event id (a retry
// of one delivered before).
func (s *Server) CallbackWithID(eventID string, inner map[string]any) []byte {
	body, _ := json.Marshal(map[string]any{
		"token": "verification-token-unused", "team_id": s.cfg.TeamID, "api_app_id": s.cfg.AppID,
		"event": inner, "type": "event_callback", "event_id": eventID, "event_time": time.Now().Unix(),
		"authorizations":        []map[string]any{{"team_id": s.cfg.TeamID, "user_id": s.cfg.BotUserID, "is_bot": true}},
		"is_ext_shared_channel": false, "event_context": "ctx-" + eventID,
	})
	return body
}

// SendEvent delivers an inner event over Socket Mode in a new event_callback.
func (s *Server) SendEvent(inner map[string]any) (eventID, envelopeID string) {
	eventID, body := s.Callback(inner)
	return eventID, s.Deliver("events_api", json.RawMessage(body))
}

// SlashCommand returns the fields of a /nightona command typed in a channel, with a
// response_url on this server.
func (s *Server) SlashCommand(channel, user, text string) url.Values {
	return url.Values{
		"token": {"verification-token-unused"}, "team_id": {s.cfg.TeamID}, "team_domain": {"test-team"},
		"channel_id": {channel}, "channel_name": {"general"}, "user_id": {user}, "user_name": {"user-" + user},
		"command": {"/nightona"}, "text": {text}, "api_app_id": {s.cfg.AppID}, "is_enterprise_install": {"false"},
		"response_url": {s.ResponseURL()}, "trigger_id": {"trigger-" + strconv.FormatInt(time.Now().UnixNano(), 36)},
	}
}

// SendCommand delivers a slash command over Socket Mode.
func (s *Server) SendCommand(form url.Values) string {
	m := map[string]string{}
	for k, v := range form {
		m[k] = v[0]
	}
	return s.Deliver("slash_commands", m)
}

// BlockAction returns the block_actions payload of user pressing the button actionID of msg.
func (s *Server) BlockAction(user string, msg Message, actionID string) []byte {
	btn := msg.Button(actionID)
	if btn == nil {
		btn = map[string]any{"action_id": actionID, "type": "button", "text": map[string]any{"type": "plain_text", "text": actionID}}
	}
	action := map[string]any{"action_id": actionID, "block_id": "b", "type": "button", "text": btn["text"],
		"action_ts": strconv.FormatFloat(float64(time.Now().UnixMicro())/1e6, 'f', 6, 64)}
	if v, ok := btn["value"]; ok {
		action["value"] = v
	}
	var blocks any
	_ = json.Unmarshal(msg.Blocks, &blocks)
	container := map[string]any{"type": "message", "message_ts": msg.TS, "channel_id": msg.Channel, "is_ephemeral": false}
	message := map[string]any{"type": "message", "user": msg.User, "ts": msg.TS, "text": msg.Text, "blocks": blocks}
	if msg.ThreadTS != "" {
		container["thread_ts"] = msg.ThreadTS
		message["thread_ts"] = msg.ThreadTS
	}
	body, _ := json.Marshal(map[string]any{
		"type": "block_actions", "api_app_id": s.cfg.AppID, "token": "verification-token-unused",
		"user":         map[string]any{"id": user, "username": "user-" + user, "name": "user-" + user, "team_id": s.cfg.TeamID},
		"team":         map[string]any{"id": s.cfg.TeamID, "domain": "test-team"},
		"channel":      map[string]any{"id": msg.Channel, "name": "general"},
		"container":    container,
		"message":      message,
		"trigger_id":   "trigger-" + strconv.FormatInt(time.Now().UnixNano(), 36),
		"response_url": s.ResponseURL(),
		"actions":      []any{action},
	})
	return body
}

// SendInteraction delivers an interaction payload over Socket Mode.
func (s *Server) SendInteraction(payload []byte) string {
	return s.Deliver("interactive", json.RawMessage(payload))
}

// Sign returns the X-Slack-Request-Timestamp and X-Slack-Signature headers Slack sends with
// body at the given time, signed with the app's signing secret.
func Sign(secret string, at time.Time, body []byte) (timestamp, signature string) {
	timestamp = strconv.FormatInt(at.Unix(), 10)
	mac := hmac.New(sha256.New, []byte(secret))
	fmt.Fprintf(mac, "v0:%s:", timestamp)
	mac.Write(body)
	return timestamp, "v0=" + hex.EncodeToString(mac.Sum(nil))
}
