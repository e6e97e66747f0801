// Package webhook serves the HTTP callbacks of the chat platforms: Slack's Events API, slash
// commands and interactivity, and Discord's interactions. It checks that every request comes
// from the platform (its signature, and a timestamp recent enough to refuse replays), answers
// the platform's handshakes, drops the deliveries a platform retries once one replica has
// taken them, and acknowledges within the platform's 3 seconds, leaving the work to be done
// after. What a callback means is the adapters' business; this package hands them verified
// bodies.
package webhook
