package scriptedmodel

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Scenario is one behaviour a user can steer the scripted model into by putting its keyword
// anywhere in a prompt.
type Scenario struct {
	// Keyword is what to type, with placeholders in upper case (scenario:slow:N:MS).
	Keyword string
	// Summary says in one line what the model then does.
	Summary string
}

var scenarios = []Scenario{
	{"scenario:text", "Answer with one text message that echoes the prompt."},
	{"scenario:recall", "List the earlier prompts of this conversation: shows that Claude remembers it."},
	{"scenario:write", "Create hello.txt in the working directory with the Write tool (needs an edit grant)."},
	{"scenario:edit", `Read hello.txt, then change "world" to "Nightona" with Edit (creates the file when missing).`},
	{"scenario:bash", "Run a Bash command that writes bash.txt (needs a permission grant)."},
	{"scenario:bashro", "Run a read-only Bash command (echo and pwd) that needs no grant."},
	{"scenario:multi", "Write hello.txt, then count its lines with Bash: two tool round trips in one turn."},
	{"scenario:slow:N:MS", fmt.Sprintf("Stream N words MS milliseconds apart (default %d words, %d ms); good for trying an interrupt.", defaultSlowWords, defaultSlowMillis)},
	{"scenario:error", "Fail the request with HTTP 400 invalid_request_error."},
	{"scenario:ratelimit", "Fail every request with HTTP 429 rate_limit_error and a retry-after header; the CLI retries for minutes unless CLAUDE_CODE_MAX_RETRIES is low."},
	{"scenario:overloaded", "Fail every request with HTTP 529 overloaded_error; the CLI retries (CLAUDE_CODE_MAX_RETRIES, default 10), then gives up."},
	{"scenario:flaky:K", fmt.Sprintf("Answer the first K requests with 529 overloaded_error, then normally (default K %d).", defaultFlaky)},
}

// Scenarios lists the keywords the scripted model understands, in the order a help text
// should show them.
func Scenarios() []Scenario { return slices.Clone(scenarios) }

const (
	defaultSlowWords  = 30
	defaultSlowMillis = 200
	maxSlowWords      = 10000
	maxSlowMillis     = 10000
	defaultFlaky      = 2
	maxFlaky          = 100
	// maxQuote keeps echoed prompts and tool output from turning one answer into a wall.
	maxQuote = 600
)

// keywordRE matches a keyword and any :NUMBER arguments after it. Empty arguments
// (scenario:slow::50) are kept so that positions still line up.
var keywordRE = regexp.MustCompile(`(?i)scenario:([a-z]+)((?::[0-9]*)*)`)

// choice is the scenario a prompt asked for.
type choice struct {
	name string  // lower case; "" when the prompt names none
	args []int64 // -1 where an argument was left empty
}

func parseChoice(prompt string) choice {
	m := keywordRE.FindStringSubmatch(prompt)
	if m == nil {
		return choice{}
	}
	c := choice{name: strings.ToLower(m[1])}
	if m[2] != "" {
		for _, a := range strings.Split(m[2][1:], ":") {
			n, err := strconv.ParseInt(a, 10, 64)
			if err != nil {
				n = -1 // empty, or too long to be meant seriously
			}
			c.args = append(c.args, n)
		}
	}
	return c
}

// arg returns argument i clamped to [lo, hi], or def when it is missing.
func (c choice) arg(i int, def, lo, hi int64) int64 {
	if i >= len(c.args) || c.args[i] < 0 {
		return def
	}
	return min(max(c.args[i], lo), hi)
}

// reply is the model's whole answer to one request: either an HTTP error or a message.
type reply struct {
	status  int // non-zero for an error answer
	errType string
	errMsg  string
	header  http.Header

	blocks []outBlock
	// label names the scenario and step in logs.
	label string
}

type outBlock struct {
	kind   string // "text" or "tool_use"
	text   string
	id     string
	name   string
	input  json.RawMessage
	chunks []string
	// pause between deltas; 0 means the model's DeltaDelay.
	pause time.Duration
}

func (r *reply) stopReason() string {
	for _, b := range r.blocks {
		if b.kind == "tool_use" {
			return "tool_use"
		}
	}
	return "end_turn"
}

func textBlock(s string) outBlock { return outBlock{kind: "text", text: s} }

// Tool inputs are structs so the JSON keeps the field order a reader expects.
type (
	writeInput struct {
		FilePath string `json:"file_path"`
		Content  string `json:"content"`
	}
	readInput struct {
		FilePath string `json:"file_path"`
	}
	editInput struct {
		FilePath   string `json:"file_path"`
		OldString  string `json:"old_string"`
		NewString  string `json:"new_string"`
		ReplaceAll bool   `json:"replace_all"`
	}
	bashInput struct {
		Command     string `json:"command"`
		Description string `json:"description"`
	}
)

const (
	bashWriteCommand = "sh -c 'echo hello-from-bash > bash.txt' && cat bash.txt"
	bashReadCommand  = "echo hello-from-bash && pwd"
)

// plan decides the answer. sessionKey identifies the conversation for scenario:flaky, the
// only scenario that needs memory.
func (m *Model) plan(conv conversation, sessionKey string) reply {
	c := parseChoice(conv.prompt)
	label := fmt.Sprintf("%s/step%d", c.name, conv.step)
	if c.name == "" {
		label = fmt.Sprintf("offline/step%d", conv.step)
	}
	r := reply{label: label}
	hello := inDir(conv.cwd, "hello.txt")

	switch c.name {
	case "text":
		r.blocks = []outBlock{textBlock("Hello from the scripted model. You said: " + quote(conv.prompt))}

	case "recall":
		if len(conv.earlier) == 0 {
			r.blocks = []outBlock{textBlock("This is the first prompt of our conversation.")}
			break
		}
		quoted := make([]string, len(conv.earlier))
		for i, p := range conv.earlier {
			quoted[i] = fmt.Sprintf("%d. %s", i+1, quote(p))
		}
		r.blocks = []outBlock{textBlock(fmt.Sprintf("Earlier in this conversation you asked me %d things:\n%s", len(conv.earlier), strings.Join(quoted, "\n")))}

	case "write":
		if conv.step == 0 {
			r.blocks = conv.call("I'll create hello.txt for you.", "Write", writeInput{hello, "Hello, world!\n"})
		} else {
			r.blocks = []outBlock{textBlock(finish(conv.result, "Write", `Done: I created hello.txt containing "Hello, world!".`))}
		}

	case "edit":
		r.blocks = conv.edit(hello)

	case "bash", "bashro":
		cmd := bashInput{bashWriteCommand, "Write and print bash.txt"}
		if c.name == "bashro" {
			cmd = bashInput{bashReadCommand, "Print a greeting and the working directory"}
		}
		if conv.step == 0 {
			r.blocks = conv.call("Let me run a command.", "Bash", cmd)
		} else {
			r.blocks = []outBlock{textBlock(finish(conv.result, "Bash", "The command printed: "+quote(resultText(conv.result))))}
		}

	case "multi":
		switch conv.step {
		case 0:
			r.blocks = conv.call("First I'll write hello.txt.", "Write", writeInput{hello, "Hello, world!\n"})
		case 1:
			r.blocks = conv.call("Now I'll count its lines.", "Bash", bashInput{"wc -l hello.txt", "Count the lines of hello.txt"})
		default:
			r.blocks = []outBlock{textBlock(finish(conv.result, "Bash", "Both tools ran. wc -l said: "+quote(resultText(conv.result))))}
		}

	case "slow":
		n := c.arg(0, defaultSlowWords, 1, maxSlowWords)
		ms := c.arg(1, defaultSlowMillis, 0, maxSlowMillis)
		r.blocks = []outBlock{slowBlock(int(n), time.Duration(ms)*time.Millisecond)}

	case "error":
		r.status, r.errType, r.errMsg = http.StatusBadRequest, "invalid_request_error", "scripted invalid request"

	case "ratelimit":
		secs := int64((m.retryAfter + time.Second - 1) / time.Second)
		r.status, r.errType = http.StatusTooManyRequests, "rate_limit_error"
		r.errMsg = fmt.Sprintf("scripted rate limit: retry in %d s", secs)
		r.header = http.Header{}
		r.header.Set("retry-after", strconv.FormatInt(secs, 10))
		r.header.Set("anthropic-ratelimit-requests-limit", "50")
		r.header.Set("anthropic-ratelimit-requests-remaining", "0")
		r.header.Set("anthropic-ratelimit-requests-reset", time.Now().Add(time.Duration(secs)*time.Second).UTC().Format(time.RFC3339))

	case "overloaded":
		r.status, r.errType, r.errMsg = statusOverloaded, "overloaded_error", "Overloaded"

	case "flaky":
		k := c.arg(0, defaultFlaky, 0, maxFlaky)
		if n := m.attempt(sessionKey + "\x00" + conv.prompt); int64(n) <= k {
			r.status, r.errType = statusOverloaded, "overloaded_error"
			r.errMsg = fmt.Sprintf("Overloaded (scripted flaky attempt %d of %d)", n, k)
			r.label = fmt.Sprintf("flaky/attempt%d", n)
		} else {
			r.blocks = []outBlock{textBlock(fmt.Sprintf("Recovered after %d overloaded answers. You said: %s", k, quote(conv.prompt)))}
		}

	default:
		r.blocks = []outBlock{textBlock(offlineHelp(c.name, conv.prompt))}
	}
	return r
}

// statusOverloaded is Anthropic's own status code; net/http has no name for it.
const statusOverloaded = 529

// call answers with a short text and a tool_use, unless the request does not offer that tool:
// the CLI answers a call to an unlisted tool with an error result, and a request with no tools
// at all (a side request, or someone trying the API with curl) could not run it either.
func (conv conversation) call(intro, tool string, input any) []outBlock {
	if !conv.tools[tool] {
		return []outBlock{textBlock(fmt.Sprintf("This scenario needs the %s tool, but the request did not offer it, so I stop here.", tool))}
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false) // keep shell redirections readable in transcripts
	if err := enc.Encode(input); err != nil {
		// The inputs are fixed structs of strings; this cannot fail.
		panic(fmt.Sprintf("scriptedmodel: encode %s input: %v", tool, err))
	}
	return []outBlock{
		textBlock(intro),
		{kind: "tool_use", name: tool, input: bytes.TrimSpace(buf.Bytes())},
	}
}

// edit walks Read, then Edit, then a summary. Claude Code refuses to edit a file it has not
// read in this session, hence the Read; a missing file turns the Edit into a Write so the
// scenario also works in an empty workspace.
func (conv conversation) edit(hello string) []outBlock {
	switch conv.step {
	case 0:
		return conv.call("I'll read hello.txt before editing it.", "Read", readInput{hello})
	case 1:
		res := conv.result
		if res != nil && res.isError && fileMissing(res.text) {
			return conv.call("hello.txt does not exist yet, so I'll create it.", "Write", writeInput{hello, "Hello, Nightona!\n"})
		}
		if res == nil || res.isError {
			return []outBlock{textBlock(finish(res, "Read", ""))}
		}
		return conv.call(`Now I'll replace "world" with "Nightona".`, "Edit", editInput{hello, "world", "Nightona", false})
	default:
		tool := "Edit"
		if conv.result != nil && conv.result.tool != "" {
			tool = conv.result.tool
		}
		return []outBlock{textBlock(finish(conv.result, tool, `Done: hello.txt now says "Hello, Nightona!".`))}
	}
}

func fileMissing(s string) bool {
	s = strings.ToLower(s)
	return strings.Contains(s, "does not exist") || strings.Contains(s, "no such file")
}

// finish words the last step of a tool scenario from the tool's result.
func finish(res *toolResult, tool, success string) string {
	switch {
	case res == nil:
		return fmt.Sprintf("I expected a result from the %s tool but found none.", tool)
	case res.isError:
		return fmt.Sprintf("The %s tool failed: %s", tool, quote(res.text))
	default:
		return success
	}
}

func resultText(res *toolResult) string {
	if res == nil {
		return ""
	}
	return res.text
}

// inDir builds an absolute path for the file tools, which reject relative ones. Without a
// known working directory the relative name goes out as is, and the tool's error is reported.
func inDir(cwd, name string) string {
	if cwd == "" {
		return name
	}
	sep := "/"
	if strings.Contains(cwd, `\`) && !strings.Contains(cwd, "/") {
		sep = `\`
	}
	return strings.TrimRight(cwd, sep) + sep + name
}

func slowBlock(n int, pause time.Duration) outBlock {
	chunks := make([]string, n)
	var text strings.Builder
	for i := range n {
		chunks[i] = "word" + strconv.Itoa(i+1)
		if i > 0 {
			chunks[i] = " " + chunks[i]
		}
		text.WriteString(chunks[i])
	}
	return outBlock{kind: "text", text: text.String(), chunks: chunks, pause: pause}
}

func offlineHelp(unknown, prompt string) string {
	var b strings.Builder
	b.WriteString("This is Nightona's offline scripted model: no ANTHROPIC_API_KEY is set, so no real Claude is answering.")
	if unknown != "" {
		fmt.Fprintf(&b, " I don't know scenario:%s.", unknown)
	}
	p := []rune(prompt)
	if len(p) > 160 {
		p = append(p[:160], '…')
	}
	fmt.Fprintf(&b, " You said: %q\n\nPut one of these keywords in a message to see Claude Code at work:\n", string(p))
	for _, s := range scenarios {
		fmt.Fprintf(&b, "- %s: %s\n", s.Keyword, s.Summary)
	}
	return strings.TrimSuffix(b.String(), "\n")
}

func quote(s string) string {
	r := []rune(s)
	if len(r) <= maxQuote {
		return s
	}
	return string(r[:maxQuote]) + "…"
}
