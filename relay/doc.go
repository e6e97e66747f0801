// Package relay is the protocol between the bot and a sandbox: a Server that runs inside the
// sandbox next to Claude Code, and a Client the bot uses to drive it.
//
// # Transport
//
// The server answers a WebSocket upgrade at GET /v1/stream. The client authenticates with
// "Authorization: Bearer <token>"; a missing or wrong token gets 401 before any upgrade, and the
// comparison is constant-time. GET /healthz answers without a token and says nothing secret.
//
// Every frame is one JSON object in a text message; its "type" says what it is.
//
// # Server to client
//
//	{"type":"hello","protocol":1,"relay_id":"r_...","first_seq":1,"last_seq":42,
//	 "agent":{"running":true,"session_id":"...","pending_turns":0}}
//
// The first frame of every connection. relay_id names this relay process: sequence numbers
// restart at 1 when the relay restarts, and a client resuming with another relay_id must treat
// the stream as new. first_seq and last_seq bound what the replay buffer still holds.
//
//	{"type":"event","seq":43,"time":"2026-01-02T15:04:05.999Z","kind":"agent","data":{...}}
//
// One numbered event. kind "agent" carries one line Claude Code printed on stdout, unchanged
// (a stream-json message: system, assistant, user, stream_event, result, control_request...).
// kind "relay" carries what the relay itself has to say, as {"event":"<name>",...}:
//
//	agent_started  {"pid":123,"resume":"<claude session id or empty>"}
//	agent_exited   {"code":1,"pending_turns":1,"stderr":"last lines"}
//	agent_error    {"message":"..."}          the agent could not be started or written to
//	agent_output   {"line":"..."}             a stdout line that was not JSON
//	line_too_long  {"bytes":12345678}         a stdout line over the size limit, dropped
//
// After hello the server first replays the buffered events after the client's cursor, then
// sends live events in order: every event a connection receives has a seq one greater than the
// one before it.
//
//	{"type":"ack","id":"p1"}
//	{"type":"error","id":"p1","code":"bad_frame","message":"..."}
//
// The answer to a client frame that carried an id.
//
// # Client to server
//
//	{"type":"prompt","id":"p1","text":"add a dark mode toggle","resume":"<claude session id>"}
//
// Sends a user message to Claude Code. The relay starts the agent on the first prompt, with
// --resume when resume is set (so a new relay continues an earlier conversation); prompts sent
// during a turn are queued by the CLI and run in order. A prompt id seen before is acknowledged
// again and not sent twice, so a client may resend after a dropped connection.
//
//	{"type":"interrupt","id":"i1"}
//
// Stops the running turn through the CLI's control protocol.
//
// # Resuming
//
// A client connects with ?relay_id=<id>&after=<seq> to receive only what follows seq. When
// relay_id is not this relay's, or after is older than first_seq-1, the hello frame's fields
// tell the client what it missed; the server then replays everything it holds.
//
// # What never happens
//
// The relay writes to Claude Code's stdin only lines it encoded itself: one malformed line
// makes the CLI exit, so client text is always carried inside a JSON string.
package relay
