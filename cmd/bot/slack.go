package main

// newSlack returns the Slack platform when SLACK_BOT_TOKEN is set.
func newSlack(cfg *config, d chatDeps) (chat, error) {
	return nil, nil
}
