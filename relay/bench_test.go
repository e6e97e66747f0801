package relay_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/nightona/nightona/internal/fakeagent"
	"github.com/nightona/nightona/internal/testenv"
	"github.com/nightona/nightona/relay"
)

// bareEnv makes the test binary a bare forwarder (see TestMain): it spawns the stand-in agent,
// writes each message it receives as a prompt line, and writes each stdout line to its one
// WebSocket client. Nothing else: no numbering, no buffer, no parsing.
const bareEnv = "NIGHTONA_BARE_FORWARDER"

func bareForwarder() {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Printf("listening %s\n", ln.Addr())
	up := websocket.Upgrader{}
	_ = http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		cmd := exec.Command(os.Args[0])
		cmd.Env = append(os.Environ(), fakeagent.EnvVar+"=1", bareEnv+"=")
		stdin, _ := cmd.StdinPipe()
		stdout, _ := cmd.StdoutPipe()
		if err := cmd.Start(); err != nil {
			return
		}
		go func() {
			for {
				_, msg, err := ws.ReadMessage()
				if err != nil {
					stdin.Close()
					return
				}
				line, _ := json.Marshal(map[string]any{"type": "user", "session_id": "", "parent_tool_use_id": nil,
					"message": map[string]any{"role": "user", "content": []any{map[string]any{"type": "text", "text": string(msg)}}}})
				stdin.Write(append(line, '\n'))
			}
		}()
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 64<<10), 16<<20)
		for sc.Scan() {
			if ws.WriteMessage(websocket.TextMessage, sc.Bytes()) != nil {
				break
			}
		}
		cmd.Process.Kill()
		cmd.Wait()
	}))
}

// server is a relay or a bare forwarder running as a process of its own.
type server struct {
	cmd  *exec.Cmd
	addr string
}

func startProcess(b *testing.B, cmd *exec.Cmd) *server {
	b.Helper()
	out, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		b.Fatalf("no address from %s: %v", cmd.Path, err)
	}
	return &server{cmd: cmd, addr: strings.TrimSpace(strings.TrimPrefix(line, "listening "))}
}

// peakRSS is the process's peak resident memory in bytes (VmHWM).
func (s *server) peakRSS(b *testing.B) float64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", s.cmd.Process.Pid))
	if err != nil {
		b.Skip("no /proc: cannot measure memory here")
	}
	for _, l := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(l, "VmHWM:"); ok {
			kb, _ := strconv.ParseFloat(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 64)
			return kb * 1024
		}
	}
	return 0
}

// stream is one WebSocket client that records when each agent line arrived and when the agent
// wrote it.
type stream struct {
	ws     *websocket.Conn
	prompt func(text string) error
}

var sentNS = []byte(`"sent_ns":`)

// run sends the prompt and reads until the turn's result, returning the latency of every line
// (receive time minus the agent's write time) and the span from first to last line. A relay
// that drops the client as too slow ends the run with dropped set.
func (s *stream) run(b *testing.B, text string) (lat []time.Duration, span time.Duration, dropped bool) {
	b.Helper()
	if err := s.prompt(text); err != nil {
		b.Fatal(err)
	}
	var first, last time.Time
	for {
		_ = s.ws.SetReadDeadline(time.Now().Add(60 * time.Second))
		_, msg, err := s.ws.ReadMessage()
		if websocket.IsCloseError(err, websocket.CloseGoingAway) {
			return lat, last.Sub(first), true
		}
		if err != nil {
			b.Fatalf("read: %v", err)
		}
		now := time.Now()
		if i := bytes.Index(msg, sentNS); i >= 0 {
			rest := msg[i+len(sentNS):]
			end := bytes.IndexAny(rest, ",}")
			ns, err := strconv.ParseInt(string(rest[:end]), 10, 64)
			if err != nil {
				b.Fatal(err)
			}
			lat = append(lat, now.Sub(time.Unix(0, ns)))
			if first.IsZero() {
				first = now
			}
			last = now
			continue
		}
		if bytes.Contains(msg, []byte(`"type":"result"`)) {
			return lat, last.Sub(first), false
		}
	}
}

func dialRelay(b *testing.B, s *server, token string) *stream {
	ws, _, err := websocket.DefaultDialer.Dial("ws://"+s.addr+relay.StreamPath, http.Header{"Authorization": {"Bearer " + token}})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { ws.Close() })
	n := 0
	return &stream{ws: ws, prompt: func(text string) error {
		n++
		return ws.WriteJSON(map[string]string{"type": "prompt", "id": "p" + strconv.Itoa(n), "text": text})
	}}
}

func dialBare(b *testing.B, s *server) *stream {
	ws, _, err := websocket.DefaultDialer.Dial("ws://"+s.addr+"/", nil)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { ws.Close() })
	return &stream{ws: ws, prompt: func(text string) error { return ws.WriteMessage(websocket.TextMessage, []byte(text)) }}
}

func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(float64(len(sorted)-1) * p)
	return sorted[i]
}

// BenchmarkRelayVsBareForwarder measures, for the relay binary and for a bare forwarder over
// the same stand-in agent in the same run: the latency from the agent's stdout line to the
// client at 1,000 lines/s (p50, p99, max), the highest rate it sustains (the agent writes at a
// set rate for a second; sustained means every line arrives, nobody is dropped, and the last
// arrives within 10% of the second), and the process's peak memory at 1,000 lines/s and after
// the highest rates. The latency runs alternate between the two, a second at a time, so that
// the machine's noise falls on both alike.
func BenchmarkRelayVsBareForwarder(b *testing.B) {
	const rounds = 10 // of 1,000 lines at 1,000 lines/s, each
	token := "bench-token"
	relayCmd := exec.Command(testenv.RelayBinary(b), "-addr", "127.0.0.1:0", "-agent", os.Args[0], "-log-level", "warn")
	relayCmd.Env = append(os.Environ(), "NIGHTONA_RELAY_TOKEN="+token, fakeagent.EnvVar+"=1")
	bareCmd := exec.Command(os.Args[0])
	bareCmd.Env = append(os.Environ(), bareEnv+"=1")

	type side struct {
		name string
		srv  *server
		s    *stream
		lat  []time.Duration
		rate float64
		rss  float64
	}
	relaySrv := startProcess(b, relayCmd)
	bareSrv := startProcess(b, bareCmd)
	sides := []*side{
		{name: "relay", srv: relaySrv, s: dialRelay(b, relaySrv, token)},
		{name: "bare", srv: bareSrv, s: dialBare(b, bareSrv)},
	}
	for _, sd := range sides {
		sd.s.run(b, "lines:2000") // warm up: the agent process, connections, buffers
	}
	for r := 0; r < rounds; r++ {
		for _, sd := range sides {
			lat, _, dropped := sd.s.run(b, "rate:1000:1000")
			if dropped || len(lat) != 1000 {
				b.Fatalf("%s: %d of 1000 lines arrived at 1,000 lines/s (dropped: %v)", sd.name, len(lat), dropped)
			}
			sd.lat = append(sd.lat, lat...)
		}
	}
	for _, sd := range sides {
		sd.rss = sd.srv.peakRSS(b)
		slices.Sort(sd.lat)
	}
	for _, sd := range sides {
		for rate := 10000; rate <= 1280000; rate *= 2 {
			got, span, dropped := sd.s.run(b, fmt.Sprintf("rate:%d:%d", rate, rate))
			if dropped || len(got) != rate || span > 1100*time.Millisecond {
				break
			}
			sd.rate = float64(rate)
		}
	}
	for _, sd := range sides {
		b.ReportMetric(float64(percentile(sd.lat, 0.50).Microseconds()), sd.name+"-p50-µs")
		b.ReportMetric(float64(percentile(sd.lat, 0.99).Microseconds()), sd.name+"-p99-µs")
		b.ReportMetric(float64(sd.lat[len(sd.lat)-1].Microseconds()), sd.name+"-max-µs")
		b.ReportMetric(sd.rate, sd.name+"-sustained-lines/s")
		b.ReportMetric(sd.rss/(1<<20), sd.name+"-MB")
		b.ReportMetric(sd.srv.peakRSS(b)/(1<<20), sd.name+"-after-flood-MB")
	}
	b.ReportMetric(0, "ns/op")
	rel, bare := sides[0], sides[1]
	fmt.Printf("relay vs bare forwarder: p99 %.2fx (%v vs %v), sustained %.0f vs %.0f lines/s, peak memory %.1f MB vs %.1f MB\n",
		float64(percentile(rel.lat, 0.99))/float64(percentile(bare.lat, 0.99)),
		percentile(rel.lat, 0.99), percentile(bare.lat, 0.99), rel.rate, bare.rate, rel.rss/(1<<20), bare.rss/(1<<20))
}
