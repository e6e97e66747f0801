package main

// newDiscord returns the Discord platform when DISCORD_BOT_TOKEN is set.
func newDiscord(cfg *config, d chatDeps) (chat, error) {
	return nil, nil
}
