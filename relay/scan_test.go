package relay

import (
	"encoding/json"
	"testing"
)

func TestTopLevelString(t *testing.T) {
	cases := []struct {
		line, key, want string
		found           bool
	}{
		{`{"type":"stream_event","event":{"type":"content_block_delta"}}`, "type", "stream_event", true},
		{`{"duration_api_ms":64,"usage":{"type":"x","a":[1,{"type":"y"}]},"type":"result","subtype":"success"}`, "type", "result", true},
		{`{"duration_api_ms":64,"usage":{"type":"x"},"type":"result","subtype":"success"}`, "subtype", "success", true},
		{`{"message":{"content":[{"text":"a \"type\":\"fake\" }{"}]},"type":"assistant"}`, "type", "assistant", true},
		{` { "type" : "system" , "subtype" : "init" } `, "subtype", "init", true},
		{`{"event":{"type":"inner"}}`, "type", "", false},
		{`{"type":42}`, "type", "", false},
		{`{"a":true,"b":null,"c":-1.5e3,"type":"user"}`, "type", "user", true},
		{`[1,2]`, "type", "", false},
		{`{}`, "type", "", false},
	}
	for _, tc := range cases {
		if !json.Valid([]byte(tc.line)) {
			t.Fatalf("case %s is not valid JSON", tc.line)
		}
		got, ok := topLevelString([]byte(tc.line), tc.key)
		if string(got) != tc.want || ok != tc.found {
			t.Errorf("topLevelString(%s, %q) = %q %v, want %q %v", tc.line, tc.key, got, ok, tc.want, tc.found)
		}
	}
}

func FuzzTopLevelString(f *testing.F) {
	f.Add(`{"type":"stream_event","event":{"type":"x"}}`)
	f.Add(`{"usage":{"type":"x"},"type":"result"}`)
	f.Fuzz(func(t *testing.T, line string) {
		if !json.Valid([]byte(line)) {
			return
		}
		got, ok := topLevelString([]byte(line), "type")
		var m map[string]json.RawMessage
		if json.Unmarshal([]byte(line), &m) != nil {
			return // not an object
		}
		var want string
		wantOK := json.Unmarshal(m["type"], &want) == nil && m["type"] != nil
		if wantOK && (!ok || string(got) != want) && json.Valid(append(append([]byte(`"`), got...), '"')) {
			var unq string
			_ = json.Unmarshal(append(append([]byte(`"`), got...), '"'), &unq)
			if unq != want {
				t.Fatalf("%s: got %q %v, want %q", line, got, ok, want)
			}
		}
	})
}
