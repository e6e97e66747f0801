// Package relay is the protocol between the bot and a sandbox: a Server that runs inside the
// sandbox next to Claude Code (and the app's dev server), and a Client the bot uses to drive it.
//
// # Transport
//
// The server answers a WebSocket upgrade at GET /v1/stream. The client authenticates with
// "Authorization: Bearer <token>"; a missing or wrong token gets 401 before any upgrade, and the
// comparison is constant-time. A connection that carries an Origin header (a browser) must come
// from an allowed origin (403 otherwise). GET /healthz answers without a token and says nothing
// secret. Client frames are limited in size (1 MiB by default); a larger one closes the
// connection.
//
// Every frame is one JSON object in a text message; its "type" says what it is.
//
// # Server to client
//
//	{"type":"hello","protocol":1,"relay_id":"r_...","first_seq":1,"last_seq":42,
//	 "missed":{"from":3,"to":9},
//	 "agent":{"running":true,"session_id":"...","pending_turns":0,"permission_mode":"default",
//	          "permissions":[{"request_id":"...","tool_name":"Bash","input":{...},"deadline":"..."}]},
//	 "preview":{"enabled":true,"state":"ready","port":3000}}
//
// The first frame of every connection. relay_id names this relay process: sequence numbers
// restart at 1 when the relay restarts. first_seq and last_seq bound what the replay buffer
// holds. missed is there when the client resumed from a point the buffer no longer covers
// (to is -1 when the client's cursor came from another relay): those events are lost to it,
// and it is told so rather than left to guess. agent.permissions lists the permission requests
// still waiting for an answer.
//
//	{"type":"event","seq":43,"time":"2026-01-02T15:04:05.999Z","kind":"agent","data":{...}}
//
// One numbered event. kind "agent" carries one line Claude Code printed on stdout, unchanged
// (a stream-json message: system, assistant, user, stream_event, result, control_request,
// control_response, control_cancel_request...). kind "relay" carries what the relay itself
// has to say, as {"event":"<name>",...}:
//
//	agent_started        {"pid":123,"resume":"<claude session>","restart":true,"mode":"default"}
//	agent_exited         {"code":1,"pending_turns":1,"stderr":"last lines"}
//	agent_error          {"message":"..."}          could not start, write to, or resume the agent
//	agent_output         {"line":"..."}             a stdout line that was not JSON
//	line_too_long        {"bytes":12345678}         a stdout line over the size limit, dropped
//	permission_resolved  {"request_id":"...","behavior":"allow"|"deny",
//	                      "reason":"answered"|"timeout"|"cancelled"|"agent_exited","message":"..."}
//	permission_mode      {"mode":"acceptEdits"}
//	preview              {"state":"starting"|"ready"|"crashed"|"stopped","port":3000,
//	                      "code":1,"log":"last output","restarts":2}
//
// After hello the server first replays the buffered events after the client's cursor, then
// sends live events in order: every event a connection receives has a seq one greater than the
// one before it. A client that cannot keep up (its queue is bounded) is disconnected rather than
// allowed to slow the agent; it reconnects and resumes.
//
//	{"type":"ack","id":"p1"}
//	{"type":"error","id":"p1","code":"bad_frame"|"too_large"|"agent_failure"|"unknown_request","message":"..."}
//
// The answer to a client frame that carried an id.
//
// # Client to server
//
//	{"type":"prompt","id":"p1","text":"add a dark mode toggle","resume":"<claude session>"}
//
// Sends a user message to Claude Code. The relay starts the agent on the first prompt, with
// --resume when resume is set (so a new relay continues an earlier conversation); prompts sent
// during a turn are queued by the CLI and run in order, each as its own turn. A prompt id seen
// before is acknowledged again and not sent twice, so a client may resend after a dropped
// connection.
//
//	{"type":"interrupt","id":"i1"}
//
// Stops the running turn through the CLI's control protocol; acknowledged once the CLI has
// confirmed. The partial output stays in the stream and the turn ends with its result.
//
//	{"type":"permission","id":"d1","request_id":"...","behavior":"allow","updated_input":{...}}
//	{"type":"permission","id":"d2","request_id":"...","behavior":"deny","message":"why"}
//
// Answers a can_use_tool control_request of the CLI (which arrives as an agent event). allow
// runs the tool on updated_input, or on the input Claude asked for when it is absent. A request
// nobody answers within the relay's permission timeout is denied with a message that says it
// timed out. When the CLI withdraws a request (control_cancel_request, after an interrupt), or
// exits, the request ends and answering it is an unknown_request error.
//
//	{"type":"set_permission_mode","id":"m1","mode":"default"|"acceptEdits"|"plan"|"bypassPermissions"}
//
// Changes the permission mode of the running agent (and of any later start). bypassPermissions
// works only on a relay started with -allow-bypass.
//
// # Claude Code's process
//
// The relay writes to Claude Code's stdin only lines it encoded itself: one malformed line
// makes the CLI exit, so client text is always carried inside a JSON string. If the CLI exits
// in the middle of a turn or crashes, the relay starts it again with --resume and says so
// (agent_started with restart), up to a bound; a session the CLI cannot resume is replaced by a
// new conversation, and the prompts it had taken are sent to that one.
//
// # The dev server
//
// With a dev command configured, the relay runs the app's dev server (sh -c, PORT set, in a
// process group of its own), reports it ready once its port answers HTTP, and restarts it with
// backoff (1 s doubling to 30 s) when it dies, reporting the exit status and its last output.
//
// # Shutdown
//
// On SIGTERM the relay interrupts a running turn, lets it end and its output reach the
// clients, stops the agent and the dev server, and exits.
package relay
