package slack

import (
	"strings"
)

// thread is a Slack thread: the workspace, the channel, and the ts of the message that
// started it.
type thread struct {
	Team, Channel, TS string
}

// key is the thread's session key: slack:<team>:<channel>:<thread ts>.
func (t thread) key() string {
	return "slack:" + t.Team + ":" + t.Channel + ":" + t.TS
}

// channelKey is the channel's key for usage and settings: slack:<team>:<channel>.
func (t thread) channelKey() string {
	return "slack:" + t.Team + ":" + t.Channel
}

// parseThread reads a thread key; false for keys of other platforms.
func parseThread(key string) (thread, bool) {
	parts := strings.Split(key, ":")
	if len(parts) != 4 || parts[0] != "slack" || parts[1] == "" || parts[2] == "" || parts[3] == "" {
		return thread{}, false
	}
	return thread{Team: parts[1], Channel: parts[2], TS: parts[3]}, true
}

// userKey is a Slack user's id as sessions and NIGHTONA_ADMINS name it.
func userKey(id string) string { return "slack:" + id }

// channelMention writes a channel key the way Slack shows a channel: <#C123> for Slack
// channels, the key itself for others.
func channelMention(channel string) string {
	if parts := strings.Split(channel, ":"); len(parts) == 3 && parts[0] == "slack" && parts[2] != "" {
		return "<#" + parts[2] + ">"
	}
	return escape(channel)
}

// mention writes a user key the way Slack shows a person: <@U123> for Slack users, the key
// itself for others (a decision made in the web console, say).
func mention(user string) string {
	if id, ok := strings.CutPrefix(user, "slack:"); ok && id != "" {
		return "<@" + id + ">"
	}
	if user == "" {
		return "someone"
	}
	return escape(user)
}

// escape makes text safe for mrkdwn: Slack reads &, < and > as markup.
func escape(s string) string {
	return mrkdwnEscaper.Replace(s)
}

var mrkdwnEscaper = strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;")

// permalink is the web link of a thread's first message, given the workspace's URL
// ("https://team.slack.com/").
func permalink(workspaceURL string, t thread) string {
	if workspaceURL == "" {
		return ""
	}
	return strings.TrimRight(workspaceURL, "/") + "/archives/" + t.Channel + "/p" + strings.Replace(t.TS, ".", "", 1)
}
