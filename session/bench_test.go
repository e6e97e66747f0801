package session_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/redis/go-redis/v9"

	"github.com/nightona/nightona/internal/testenv"
	"github.com/nightona/nightona/redisstore"
	"github.com/nightona/nightona/relay"
	"github.com/nightona/nightona/sandbox"
	"github.com/nightona/nightona/session"
)

// farmEnv makes the test binary a relay farm (see TestMain): many relay servers behind one
// loopback listener, standing in for many sandboxes, so that the bot side can be measured in
// a process of its own.
const farmEnv = "NIGHTONA_BENCH_FARM"

// relayFarm serves POST /create (a new stand-in relay) and the relays under /r/<id>/. Its
// relays speak the relay protocol (hello, numbered events, resume, acks) without running an
// agent: a prompt "rate:N:R" streams N text deltas at R a second, each carrying the time it
// was published ("sent_ns"), then a result; any other prompt gets a result at once. So the
// benchmark measures the bot's side, from the relay's event to a log reader, and the 100
// streaming sandboxes cost the machine no agent processes. (The relay itself has its own
// benchmark.)
func relayFarm() {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Printf("listening %s\n", ln.Addr())
	var mu sync.Mutex
	relays := map[string]*standInRelay{}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /create", func(w http.ResponseWriter, r *http.Request) {
		sr := &standInRelay{id: relay.NewID("r"), token: relay.NewID("t")}
		mu.Lock()
		relays[sr.id] = sr
		mu.Unlock()
		_ = json.NewEncoder(w).Encode(map[string]string{"id": sr.id, "url": "http://" + ln.Addr().String() + "/r/" + sr.id, "token": sr.token})
	})
	mux.HandleFunc("/r/{id}/v1/stream", func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		sr := relays[r.PathValue("id")]
		mu.Unlock()
		if sr == nil || r.Header.Get("Authorization") != "Bearer "+sr.token {
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		sr.serve(w, r)
	})
	_ = http.Serve(ln, mux)
}

// standInRelay is one stand-in relay of the farm.
type standInRelay struct {
	id, token string

	mu      sync.Mutex
	events  [][]byte // frames by seq-1
	conns   map[*websocket.Conn]*sync.Mutex
	pending int
}

func (sr *standInRelay) publish(data string) {
	sr.mu.Lock()
	defer sr.mu.Unlock()
	seq := len(sr.events) + 1
	frame := fmt.Appendf(nil, `{"type":"event","seq":%d,"time":%q,"kind":"agent","data":%s}`, seq, time.Now().UTC().Format(time.RFC3339Nano), data)
	sr.events = append(sr.events, frame)
	for c, wmu := range sr.conns {
		wmu.Lock()
		_ = c.WriteMessage(websocket.TextMessage, frame)
		wmu.Unlock()
	}
}

func (sr *standInRelay) serve(w http.ResponseWriter, r *http.Request) {
	up := websocket.Upgrader{ReadBufferSize: 1024, WriteBufferSize: 1024}
	c, err := up.Upgrade(w, r, nil)
	if err != nil {
		return
	}
	defer c.Close()
	after, _ := strconv.Atoi(r.URL.Query().Get("after"))
	if r.URL.Query().Get("relay_id") != sr.id {
		after = 0
	}
	wmu := &sync.Mutex{}
	sr.mu.Lock()
	hello, _ := json.Marshal(relay.Hello{Type: relay.TypeHello, Protocol: relay.ProtocolVersion, RelayID: sr.id,
		FirstSeq: 1, LastSeq: int64(len(sr.events)), Agent: relay.AgentState{PendingTurns: sr.pending}})
	_ = c.WriteMessage(websocket.TextMessage, hello)
	for _, f := range sr.events[min(after, len(sr.events)):] {
		_ = c.WriteMessage(websocket.TextMessage, f)
	}
	if sr.conns == nil {
		sr.conns = map[*websocket.Conn]*sync.Mutex{}
	}
	sr.conns[c] = wmu
	sr.mu.Unlock()
	defer func() {
		sr.mu.Lock()
		delete(sr.conns, c)
		sr.mu.Unlock()
	}()
	for {
		var f struct{ Type, ID, Text string }
		if err := c.ReadJSON(&f); err != nil {
			return
		}
		wmu.Lock()
		_ = c.WriteJSON(map[string]string{"type": relay.TypeAck, "id": f.ID})
		wmu.Unlock()
		if f.Type != relay.TypePrompt {
			continue
		}
		sr.mu.Lock()
		sr.pending++
		sr.mu.Unlock()
		go sr.turn(f.Text)
	}
}

func (sr *standInRelay) turn(prompt string) {
	var n, rate int
	if _, err := fmt.Sscanf(prompt, "rate:%d:%d", &n, &rate); err == nil && rate > 0 {
		tick := time.NewTicker(time.Second / time.Duration(rate))
		for i := 0; i < n; i++ {
			<-tick.C
			sr.publish(fmt.Sprintf(`{"type":"stream_event","event":{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"word%d "}},"session_id":"standin","sent_ns":%d}`, i, time.Now().UnixNano()))
		}
		tick.Stop()
	}
	sr.mu.Lock()
	sr.pending--
	sr.mu.Unlock()
	sr.publish(`{"type":"result","subtype":"success","is_error":false,"result":"ok","num_turns":1,"duration_ms":1,"total_cost_usd":0,"session_id":"standin"}`)
}

// farmProvider is a sandbox.Provider whose sandboxes are the farm's stand-in relays.
type farmProvider struct {
	base string
	mu   sync.Mutex
	eps  map[string]*sandbox.Sandbox
}

func (f *farmProvider) Name() string { return "farm" }

func (f *farmProvider) Create(ctx context.Context, spec sandbox.Spec) (*sandbox.Sandbox, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, f.base+"/create", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var out struct{ ID, URL, Token string }
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		return nil, err
	}
	sb := &sandbox.Sandbox{ID: out.ID, State: sandbox.StateStarted, Labels: spec.Labels, CreatedAt: time.Now(),
		Relay: &sandbox.Endpoint{URL: out.URL, Token: out.Token}}
	f.mu.Lock()
	f.eps[sb.ID] = sb
	f.mu.Unlock()
	return sb, nil
}

func (f *farmProvider) Get(_ context.Context, id string) (*sandbox.Sandbox, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if sb := f.eps[id]; sb != nil {
		return sb, nil
	}
	return nil, sandbox.ErrNotFound
}

func (f *farmProvider) Start(ctx context.Context, id string) (*sandbox.Sandbox, error) {
	return f.Get(ctx, id)
}
func (f *farmProvider) Stop(context.Context, string) error { return nil }
func (f *farmProvider) SetLabels(_ context.Context, id string, labels map[string]string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if sb := f.eps[id]; sb != nil {
		sb.Labels = labels
		return nil
	}
	return sandbox.ErrNotFound
}
func (f *farmProvider) Delete(context.Context, string) error { return nil }
func (f *farmProvider) List(context.Context, map[string]string) ([]*sandbox.Sandbox, error) {
	return nil, nil
}

func startFarm(b *testing.B) string {
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), farmEnv+"=1")
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		b.Fatal(err)
	}
	return "http://" + strings.TrimSpace(strings.TrimPrefix(line, "listening "))
}

// heapAndStacks is what the process holds on the Go heap and in goroutine stacks after a GC.
func heapAndStacks() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse + ms.StackInuse
}

func redisUsedMemory(b *testing.B, rdb *redis.Client) int64 {
	info, err := rdb.Info(context.Background(), "memory").Result()
	if err != nil {
		b.Fatal(err)
	}
	for _, l := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(l), "used_memory:"); ok {
			n, _ := strconv.ParseInt(v, 10, 64)
			return n
		}
	}
	return 0
}

var sentNS = []byte(`"sent_ns":`)

// BenchmarkSessions tracks 1,000 sessions in one manager on a real redis-server, each with a
// relay connection and a turn done, then has 100 of them stream at 50 events/s for 10 s, each
// followed by a log reader as the console and the chat adapters follow a log. It reports the
// events/s through the log, the latency from the relay publishing an event to a follower
// reading it from the log (p50, p99, max), the bot's memory per idle session (Go heap and
// stacks, after GC), and Redis's memory per session.
func BenchmarkSessions(b *testing.B) {
	const (
		tracked   = 1000
		streaming = 100
		rate      = 50 // events/s per streaming session
		seconds   = 10
	)
	url := testenv.RedisURL(b)
	rdb, err := redisstore.Open(url)
	if err != nil {
		b.Fatal(err)
	}
	defer rdb.Close()
	prefix := testenv.Prefix(b)
	st := redisstore.New(rdb, redisstore.Config{Prefix: prefix})
	defer st.Shutdown()
	farm := &farmProvider{base: startFarm(b), eps: map[string]*sandbox.Sandbox{}}
	mgr, err := session.NewManager(st, farm, session.Config{IdleTimeout: -1, LeaseTTL: 15 * time.Second})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = mgr.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()

	redisBefore := redisUsedMemory(b, rdb)
	memBefore := heapAndStacks()

	// 1,000 sessions, each with a sandbox, a relay connection and one small turn done; the
	// first 100 will stream.
	threads := make([]string, tracked)
	for i := range threads {
		if i < streaming {
			threads[i] = fmt.Sprintf("web:stream%04d", i)
		} else {
			threads[i] = fmt.Sprintf("web:idle%04d", i)
		}
	}
	ids := make([]string, tracked)
	var wg sync.WaitGroup
	work := make(chan int)
	for w := 0; w < 16; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				sub, err := mgr.Submit(ctx, threads[i], "web:bench", "hello")
				if err != nil {
					b.Error(err)
					return
				}
				ids[i] = sub.Session.ID
			}
		}()
	}
	for i := 0; i < tracked; i++ {
		work <- i
	}
	close(work)
	wg.Wait()
	testenv.WaitFor(b, 180*time.Second, "every session to finish its first turn", func() bool {
		for _, id := range ids {
			if s, err := st.Get(ctx, id); err != nil || s.State != session.StateIdle {
				return false
			}
		}
		return true
	})
	memIdle := heapAndStacks()
	redisIdle := redisUsedMemory(b, rdb)
	b.ResetTimer()

	lat := make([][]time.Duration, streaming)
	var logged int64
	var lmu sync.Mutex
	start := time.Now()
	for i := 0; i < streaming; i++ {
		i := i
		thread := threads[i]
		wg.Add(1)
		go func() {
			defer wg.Done()
			turn(b, mgr, thread, fmt.Sprintf("rate:%d:%d", rate*seconds, rate), 500, func(ev session.Event, now time.Time) {
				if j := bytes.Index(ev.Data, sentNS); j >= 0 {
					rest := ev.Data[j+len(sentNS):]
					end := bytes.IndexAny(rest, ",}")
					ns, _ := strconv.ParseInt(string(rest[:end]), 10, 64)
					lat[i] = append(lat[i], now.Sub(time.Unix(0, ns)))
					lmu.Lock()
					logged++
					lmu.Unlock()
				}
			})
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()

	var all []time.Duration
	for _, l := range lat {
		all = append(all, l...)
	}
	if len(all) != streaming*rate*seconds {
		b.Fatalf("%d events reached the followers, want %d", len(all), streaming*rate*seconds)
	}
	slices.Sort(all)

	// Then as fast as the log takes them: 10 of the sessions each get 5,000 events at once.
	const floodSessions, floodEvents = 10, 5000
	floodStart := time.Now()
	for i := 0; i < floodSessions; i++ {
		thread := threads[i]
		wg.Add(1)
		go func() {
			defer wg.Done()
			turn(b, mgr, thread, fmt.Sprintf("rate:%d:1000000", floodEvents), 1000, func(session.Event, time.Time) {})
		}()
	}
	wg.Wait()
	floodRate := float64(floodSessions*floodEvents) / time.Since(floodStart).Seconds()
	pct := func(p float64) time.Duration { return all[int(float64(len(all)-1)*p)] }
	b.ReportMetric(float64(logged)/elapsed.Seconds(), "events/s")
	b.ReportMetric(floodRate, "max-events/s")
	b.ReportMetric(float64(pct(0.50).Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(pct(0.99).Microseconds())/1000, "p99-ms")
	b.ReportMetric(float64(all[len(all)-1].Microseconds())/1000, "max-ms")
	perSession := float64(memIdle-memBefore) / tracked / 1024
	b.ReportMetric(perSession, "KB/idle-session")
	b.ReportMetric(float64(redisIdle-redisBefore)/tracked/1024, "redis-KB/session")
	b.ReportMetric(0, "ns/op")
	fmt.Printf("sessions: %d tracked, %d streaming at %d events/s: %.0f events/s through the log, p50 %v p99 %v max %v; %.0f events/s at most (%d sessions flooding); bot %.1f KB per idle session; Redis %.1f KB per session\n",
		tracked, streaming, rate, float64(logged)/elapsed.Seconds(), pct(0.5).Round(10*time.Microsecond), pct(0.99).Round(10*time.Microsecond),
		all[len(all)-1].Round(10*time.Microsecond), floodRate, floodSessions, perSession, float64(redisIdle-redisBefore)/tracked/1024)
}

// turn sends prompt to thread and follows its log, max events a read, handing each event and
// when it was read to seen, until the turn's result.
func turn(b *testing.B, mgr *session.Manager, thread, prompt string, max int, seen func(session.Event, time.Time)) {
	ctx := context.Background()
	sess, err := mgr.Session(ctx, thread)
	if err != nil {
		b.Error(err)
		return
	}
	after := sess.LastSeq
	if _, err := mgr.Submit(ctx, thread, "web:bench", prompt); err != nil {
		b.Error(err)
		return
	}
	for {
		evs, err := mgr.Events(ctx, sess.ID, after, max, 5*time.Second)
		if err != nil {
			b.Error(err)
			return
		}
		now := time.Now()
		for _, ev := range evs {
			after = ev.Seq
			seen(ev, now)
			if ev.Kind == session.KindAgent && bytes.Contains(ev.Data, []byte(`"type":"result"`)) {
				return
			}
		}
	}
}
