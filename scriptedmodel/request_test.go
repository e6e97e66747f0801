package scriptedmodel

import (
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestReadConversation(t *testing.T) {
	f332, f332s1, f197 := loadFixture(t, fix332Step0), loadFixture(t, fix332Step1), loadFixture(t, fix197Step0)
	read := toolTurn("toolu_r", "Read", map[string]any{"file_path": "/w/hello.txt"}, "1\tHello", false)
	cases := []struct {
		name   string
		body   func(t *testing.T) []byte
		prompt string
		step   int
		cwd    string
		result *toolResult
	}{
		{"2.1.332 step0: cwd from the role:system message", func(t *testing.T) []byte { return f332.body(t, fixturePrompt) },
			fixturePrompt, 0, fixtureCwd, nil},
		{"2.1.332 step1: tool_result advances the step", func(t *testing.T) []byte { return f332s1.body(t, fixturePrompt) },
			fixturePrompt, 1, fixtureCwd, &toolResult{tool: "Write", isError: true,
				text: "Claude requested permissions to write to " + fixtureCwd + "/hello.txt, but you haven't granted it yet."}},
		{"2.1.197 step0: cwd from the top-level system prompt", func(t *testing.T) []byte { return f197.body(t, fixturePrompt) },
			fixturePrompt, 0, fixtureCwd, nil},
		{"two round trips", func(t *testing.T) []byte {
			return f332.body(t, "scenario:edit", append(read, toolTurn("toolu_e", "Edit", nil, "[{\"type\":\"text\"}]", false)...)...)
		}, "scenario:edit", 2, fixtureCwd, &toolResult{tool: "Edit", text: `[{"type":"text"}]`}},
		{"a later prompt resets the step (--continue)", func(t *testing.T) []byte {
			return f332.body(t, fixturePrompt, append(read,
				map[string]any{"role": "assistant", "content": "done"},
				map[string]any{"role": "user", "content": "scenario:text second"})...)
		}, "scenario:text second", 0, fixtureCwd, nil},
		{"reminder-only and interruption messages are not prompts", func(t *testing.T) []byte {
			return f197.body(t, "scenario:slow first",
				map[string]any{"role": "assistant", "content": []any{map[string]any{"type": "text", "text": "word1 word2"}}},
				map[string]any{"role": "user", "content": []any{
					map[string]any{"type": "text", "text": "[Request interrupted by user]"},
					map[string]any{"type": "text", "text": "<system-reminder>\nnote\n</system-reminder>"},
				}})
		}, "scenario:slow first", 1, fixtureCwd, nil},
		{"interruption marker next to the new prompt", func(t *testing.T) []byte {
			return f332.body(t, "scenario:slow first",
				map[string]any{"role": "assistant", "content": []any{map[string]any{"type": "text", "text": "word1"}}},
				map[string]any{"role": "user", "content": []any{
					map[string]any{"type": "text", "text": "[Request interrupted by user]"},
					map[string]any{"type": "text", "text": "scenario:text after interrupt"},
				}})
		}, "scenario:text after interrupt", 0, fixtureCwd, nil},
		{"string content, reminder inline, tool_result content as blocks", func(t *testing.T) []byte {
			return []byte(`{"model":"m","system":"env\n - Primary working directory: /srv/ws \nmore",
				"messages":[
				{"role":"user","content":"<system-reminder>ctx</system-reminder>\nscenario:bashro go"},
				{"role":"assistant","content":[{"type":"tool_use","id":"t1","name":"Bash","input":{}}]},
				{"role":"user","content":[{"type":"tool_result","tool_use_id":"t1","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]},
					{"type":"text","text":"<system-reminder>after the result</system-reminder>"}]}]}`)
		}, "scenario:bashro go", 1, "/srv/ws", &toolResult{tool: "Bash", text: "a\nb"}},
		{"no working directory anywhere", func(t *testing.T) []byte {
			return []byte(`{"model":"m","messages":[{"role":"user","content":"hi"}]}`)
		}, "hi", 0, "", nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			req, msgs, err := decodeRequest(tc.body(t))
			if err != nil {
				t.Fatal(err)
			}
			conv := readConversation(req, msgs)
			if conv.prompt != tc.prompt || conv.step != tc.step || conv.cwd != tc.cwd {
				t.Errorf("prompt %q step %d cwd %q, want %q %d %q", conv.prompt, conv.step, conv.cwd, tc.prompt, tc.step, tc.cwd)
			}
			if !reflect.DeepEqual(conv.result, tc.result) {
				t.Errorf("result = %+v, want %+v", conv.result, tc.result)
			}
		})
	}
	t.Run("fixtures offer the tools the scenarios call", func(t *testing.T) {
		for _, f := range []fixture{f332, f197} {
			req, msgs, err := decodeRequest(f.Body)
			if err != nil {
				t.Fatal(err)
			}
			conv := readConversation(req, msgs)
			for _, tool := range []string{"Write", "Read", "Edit", "Bash"} {
				if !conv.tools[tool] {
					t.Errorf("tool %s missing from %v", tool, conv.tools)
				}
			}
		}
	})
}

func TestParseChoice(t *testing.T) {
	cases := []struct {
		prompt string
		want   choice
	}{
		{"scenario:text hello", choice{name: "text"}},
		{"please do Scenario:WRITE now", choice{name: "write"}},
		{"scenario:slow:50:100", choice{name: "slow", args: []int64{50, 100}}},
		{"scenario:slow::7 x", choice{name: "slow", args: []int64{-1, 7}}},
		{"scenario:flaky:3", choice{name: "flaky", args: []int64{3}}},
		{"first scenario:bash then scenario:text", choice{name: "bash"}},
		{"no keyword here, scenario: alone", choice{}},
	}
	for _, tc := range cases {
		if got := parseChoice(tc.prompt); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("parseChoice(%q) = %+v, want %+v", tc.prompt, got, tc.want)
		}
	}
}

func TestSlowArguments(t *testing.T) {
	m := New(Config{})
	cases := []struct {
		prompt string
		words  int
		pause  int64 // ms
	}{
		{"scenario:slow", defaultSlowWords, defaultSlowMillis},
		{"scenario:slow:3", 3, defaultSlowMillis},
		{"scenario:slow::9", defaultSlowWords, 9},
		{"scenario:slow:0:0", 1, 0},
		{"scenario:slow:99999:99999", maxSlowWords, maxSlowMillis},
		{"scenario:slow:99999999999999999999999:5", defaultSlowWords, 5},
	}
	for _, tc := range cases {
		r := m.plan(conversation{prompt: tc.prompt}, "")
		if len(r.blocks) != 1 {
			t.Fatalf("%s: %d blocks", tc.prompt, len(r.blocks))
		}
		b := r.blocks[0]
		if len(b.chunks) != tc.words || b.pause.Milliseconds() != tc.pause {
			t.Errorf("%s: %d words %v apart, want %d and %d ms", tc.prompt, len(b.chunks), b.pause, tc.words, tc.pause)
		}
		if !strings.HasPrefix(b.text, "word1") || strings.Join(b.chunks, "") != b.text {
			t.Errorf("%s: chunks do not make up the text %.40q", tc.prompt, b.text)
		}
	}
}

func TestChunk(t *testing.T) {
	cases := []string{
		"",
		"short",
		"I'll create hello.txt for you.",
		strings.Repeat("héllo wörld — ", 9) + "🙂🙂🙂🙂",
		strings.Repeat("x", 5000),
	}
	for _, s := range cases {
		parts := chunk(s)
		if strings.Join(parts, "") != s {
			t.Errorf("chunks of %.30q do not rejoin", s)
		}
		if len(parts) > maxDeltas+1 {
			t.Errorf("%d chunks for %d bytes", len(parts), len(s))
		}
		for _, p := range parts {
			if !utf8.ValidString(p) {
				t.Errorf("chunk %q splits a rune", p)
			}
		}
		if len(s) > 2*minChunkBytes && len(parts) < 2 {
			t.Errorf("%d-byte text in %d chunk(s)", len(s), len(parts))
		}
	}
}

func TestScenariosListIsComplete(t *testing.T) {
	// Every keyword in the list must select its own scenario rather than the offline help.
	m := New(Config{})
	for _, s := range Scenarios() {
		if s.Summary == "" || !strings.HasPrefix(s.Keyword, "scenario:") {
			t.Errorf("entry %+v", s)
		}
		kw := strings.NewReplacer(":N:MS", ":2:1", ":K", ":0").Replace(s.Keyword)
		r := m.plan(conversation{prompt: kw, tools: map[string]bool{"Write": true, "Read": true, "Bash": true}}, "")
		if r.status == 0 && strings.Contains(r.blocks[0].text, "offline scripted model") {
			t.Errorf("%s falls through to the offline help", kw)
		}
	}
}

func TestRecallListsEarlierPrompts(t *testing.T) {
	f332 := loadFixture(t, fix332Step0)
	m := New(Config{DeltaDelay: -1})
	for _, tc := range []struct {
		name string
		body []byte
		want string
	}{
		{"first prompt", f332.body(t, "scenario:recall"), "This is the first prompt of our conversation."},
		{"after two turns", f332.body(t, "scenario:write first",
			map[string]any{"role": "assistant", "content": "done"},
			map[string]any{"role": "user", "content": "scenario:text second"},
			map[string]any{"role": "assistant", "content": "ok"},
			map[string]any{"role": "user", "content": "scenario:recall now"}),
			"Earlier in this conversation you asked me 2 things:\n1. scenario:write first\n2. scenario:text second"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, msgs, err := decodeRequest(tc.body)
			if err != nil {
				t.Fatal(err)
			}
			r := m.plan(readConversation(req, msgs), "k")
			if len(r.blocks) != 1 || r.blocks[0].text != tc.want {
				t.Fatalf("recall answered %+v, want %q", r.blocks, tc.want)
			}
		})
	}
}
