// Package redisstore keeps sessions in Redis: a hash per session, a Redis Stream per session
// for its event log and another for its inbox, a lease key per session, a key per thread that
// names the thread's session, and usage counters per day. Several bot replicas share one Redis.
//
// Per-session keys carry the session id as a hash tag ({id}) so that the scripts that touch a
// session's keys together stay within one slot of a Redis Cluster. Appends and enqueues are
// announced on pub/sub channels, which is how followers of a log and the driver of an inbox
// wake without each holding a blocked connection.
package redisstore

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/nightona/nightona/session"
)

// Config configures a Store. Zero fields take their defaults.
type Config struct {
	// Prefix starts every key. Default "nightona:".
	Prefix string
	// EventLogMax caps each session's log (approximately: Redis trims whole nodes). Default
	// 100,000 events.
	EventLogMax int64
	// TransitionsMax caps the recorded state changes of a session. Default 200.
	TransitionsMax int64
	// UsageRetention is how long daily usage counters are kept. Default 400 days.
	UsageRetention time.Duration
}

// Store is a session.Store on Redis. Shut it down to stop its pub/sub subscription.
type Store struct {
	rdb redis.UniversalClient
	cfg Config
	hub *hub
}

var _ session.Store = (*Store)(nil)

// New makes a Store on a go-redis client.
func New(rdb redis.UniversalClient, cfg Config) *Store {
	if cfg.Prefix == "" {
		cfg.Prefix = "nightona:"
	}
	if cfg.EventLogMax <= 0 {
		cfg.EventLogMax = 100000
	}
	if cfg.TransitionsMax <= 0 {
		cfg.TransitionsMax = 200
	}
	if cfg.UsageRetention <= 0 {
		cfg.UsageRetention = 400 * 24 * time.Hour
	}
	s := &Store{rdb: rdb, cfg: cfg}
	s.hub = newHub(rdb, s.notifyChannel())
	return s
}

// Shutdown stops the store's subscription. It does not close the client.
func (s *Store) Shutdown() { s.hub.close() }

// Open connects to the Redis at url (redis:// or rediss://).
func Open(url string) (*redis.Client, error) {
	opt, err := redis.ParseURL(url)
	if err != nil {
		return nil, fmt.Errorf("redis url: %w", err)
	}
	if opt.PoolSize < 64 {
		opt.PoolSize = 64
	}
	// A Redis that is away must be noticed in seconds, not after the default retries.
	opt.MaxRetries = 1
	opt.DialTimeout = 2 * time.Second
	return redis.NewClient(opt), nil
}

func (s *Store) key(id, suffix string) string {
	return s.cfg.Prefix + "s:{" + id + "}" + suffix
}
func (s *Store) sessionKey(id string) string { return s.key(id, "") }
func (s *Store) eventsKey(id string) string  { return s.key(id, ":ev") }
func (s *Store) transKey(id string) string   { return s.key(id, ":tr") }
func (s *Store) leaseKey(id string) string   { return s.key(id, ":lease") }
func (s *Store) inboxKey(id string) string   { return s.key(id, ":in") }
func (s *Store) cancelKey(id string) string  { return s.key(id, ":cancel") }
func (s *Store) threadKey(t string) string   { return s.cfg.Prefix + "t:" + t }
func (s *Store) indexKey() string            { return s.cfg.Prefix + "sessions" }
func (s *Store) activeKey() string           { return s.cfg.Prefix + "active" }
func (s *Store) notifyChannel() string       { return s.cfg.Prefix + "notify" }
func (s *Store) usageKey(day, scope, k string) string {
	return s.cfg.Prefix + "u:" + day + ":" + scope + ":" + k
}

// usageIndexKey is the set of the users (or channels) with usage on a day.
func (s *Store) usageIndexKey(day, scope string) string {
	return s.cfg.Prefix + "ui:" + day + ":" + scope
}

func ms(t time.Time) int64 { return t.UnixMilli() }

// wrap names the operation and marks a Redis that does not answer as session.ErrStoreDown.
func wrap(op string, err error) error {
	if err == nil {
		return nil
	}
	if down(err) {
		return fmt.Errorf("%s: %w: %v", op, session.ErrStoreDown, err)
	}
	return fmt.Errorf("%s: %w", op, err)
}

func down(err error) bool {
	var ne net.Error
	var oe *net.OpError
	return errors.As(err, &ne) || errors.As(err, &oe) || errors.Is(err, syscall.ECONNREFUSED) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, redis.ErrClosed) || errors.Is(err, context.DeadlineExceeded) ||
		strings.Contains(err.Error(), "connection refused") || strings.Contains(err.Error(), "i/o timeout") ||
		strings.Contains(err.Error(), "LOADING")
}

// scriptError translates the errors the scripts raise.
func scriptError(op, id string, err error) error {
	if err == nil {
		return nil
	}
	msg := err.Error()
	switch {
	case strings.Contains(msg, "NOSESSION"):
		return fmt.Errorf("%s %s: %w", op, id, session.ErrNotFound)
	case strings.Contains(msg, "LEASELOST"):
		return fmt.Errorf("%s %s: %w", op, id, session.ErrLeaseLost)
	case strings.Contains(msg, "ILLEGAL"):
		from := strings.TrimSpace(msg[strings.Index(msg, "ILLEGAL")+len("ILLEGAL"):])
		return fmt.Errorf("%s %s: %w from %s", op, id, session.ErrIllegalTransition, from)
	}
	return wrap(op+" "+id, err)
}

// Ping implements session.Store.
func (s *Store) Ping(ctx context.Context) error {
	return wrap("redis ping", s.rdb.Ping(ctx).Err())
}

// CreateForThread implements session.Store. The session's hash is written before the thread
// names it, so whoever finds the thread's key finds a whole session.
func (s *Store) CreateForThread(ctx context.Context, sess *session.Session) (*session.Session, bool, error) {
	now := time.Now().UTC()
	if sess.CreatedAt.IsZero() {
		sess.CreatedAt = now
	}
	sess.UpdatedAt, sess.StateAt = now, now
	key := s.sessionKey(sess.ID)
	_, err := s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.HSet(ctx, key, encode(sess))
		p.ZAdd(ctx, s.indexKey(), redis.Z{Score: float64(ms(sess.CreatedAt)), Member: sess.ID})
		return nil
	})
	if err != nil {
		return nil, false, wrap("create session", err)
	}
	for attempt := 0; attempt < 3; attempt++ {
		ok, err := s.rdb.SetNX(ctx, s.threadKey(sess.Thread), sess.ID, 0).Result()
		if err != nil {
			return nil, false, wrap("create session: claim thread", err)
		}
		if ok {
			return sess, true, nil
		}
		existing, err := s.ByThread(ctx, sess.Thread)
		if err == nil {
			s.dropRecord(ctx, sess.ID)
			return existing, false, nil
		}
		if !errors.Is(err, session.ErrNotFound) {
			return nil, false, err
		}
		// The thread names a session that is gone: take the thread over if it still does.
		if stale, err := s.rdb.Get(ctx, s.threadKey(sess.Thread)).Result(); err == nil {
			if swapped, err := casScript.Run(ctx, s.rdb, []string{s.threadKey(sess.Thread)}, stale, sess.ID).Int(); err == nil && swapped == 1 {
				return sess, true, nil
			}
		}
	}
	s.dropRecord(ctx, sess.ID)
	return nil, false, fmt.Errorf("create session for thread %s: lost the race three times", sess.Thread)
}

func (s *Store) dropRecord(ctx context.Context, id string) {
	s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.Del(ctx, s.sessionKey(id), s.eventsKey(id))
		p.ZRem(ctx, s.indexKey(), id)
		return nil
	})
}

// casScript sets KEYS[1] to ARGV[2] if it holds ARGV[1]; with ARGV[2] empty it deletes it.
var casScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if ARGV[2] == '' then redis.call('DEL', KEYS[1]) else redis.call('SET', KEYS[1], ARGV[2]) end
return 1`)

// ByThread implements session.Store.
func (s *Store) ByThread(ctx context.Context, thread string) (*session.Session, error) {
	id, err := s.rdb.Get(ctx, s.threadKey(thread)).Result()
	if errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("thread %s: %w", thread, session.ErrNotFound)
	}
	if err != nil {
		return nil, wrap("find session of thread "+thread, err)
	}
	return s.Get(ctx, id)
}

// Get implements session.Store.
func (s *Store) Get(ctx context.Context, id string) (*session.Session, error) {
	m, err := s.rdb.HGetAll(ctx, s.sessionKey(id)).Result()
	if err != nil {
		return nil, wrap("get session "+id, err)
	}
	if len(m) == 0 {
		return nil, fmt.Errorf("session %s: %w", id, session.ErrNotFound)
	}
	return decode(m), nil
}

// List implements session.Store. Ids whose records have expired are dropped from the index.
func (s *Store) List(ctx context.Context) ([]*session.Session, error) {
	ids, err := s.rdb.ZRange(ctx, s.indexKey(), 0, -1).Result()
	if err != nil {
		return nil, wrap("list sessions", err)
	}
	cmds := make([]*redis.MapStringStringCmd, len(ids))
	_, err = s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, id := range ids {
			cmds[i] = p.HGetAll(ctx, s.sessionKey(id))
		}
		return nil
	})
	if err != nil {
		return nil, wrap("list sessions", err)
	}
	out := make([]*session.Session, 0, len(ids))
	var gone []any
	for i, c := range cmds {
		if m := c.Val(); len(m) > 0 {
			out = append(out, decode(m))
		} else {
			gone = append(gone, ids[i])
		}
	}
	if len(gone) > 0 {
		s.rdb.ZRem(ctx, s.indexKey(), gone...)
		s.rdb.ZRem(ctx, s.activeKey(), gone...)
	}
	return out, nil
}

// fenceCheck is the opening of every fenced script: KEYS[1] is the session hash and the fence
// is the script's first argument.
const fenceCheck = `
if redis.call('EXISTS', KEYS[1]) == 0 then return redis.error_reply('NOSESSION') end
if ARGV[1] ~= '0' and redis.call('HGET', KEYS[1], 'fence') ~= ARGV[1] then return redis.error_reply('LEASELOST') end
`

// updateScript sets fields of an existing hash (ARGV[2...]: field, value, ...).
var updateScript = redis.NewScript(fenceCheck + `
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
return 1`)

// Update implements session.Store.
func (s *Store) Update(ctx context.Context, id string, u session.Update, fence int64) error {
	args := []any{fence, "updated_at", ms(time.Now())}
	for _, f := range []struct {
		name string
		v    *string
	}{
		{"provider", u.Provider}, {"sandbox_id", u.SandboxID}, {"claude_session_id", u.ClaudeSessionID},
		{"preview_url", u.PreviewURL}, {"inbox_done", u.InboxDone}, {"permission_mode", u.PermissionMode},
		{"model", u.Model},
	} {
		if f.v != nil {
			args = append(args, f.name, *f.v)
		}
	}
	err := updateScript.Run(ctx, s.rdb, []string{s.sessionKey(id)}, args...).Err()
	return scriptError("update session", id, err)
}

// transitionScript moves a session's state.
//
//	KEYS[1] session hash, KEYS[2] transitions list
//	ARGV[1] fence, ARGV[2] to, ARGV[3] allowed from (space-separated), ARGV[4] cause,
//	ARGV[5] now (ms), ARGV[6] list cap
var transitionScript = redis.NewScript(fenceCheck + `
local cur = redis.call('HGET', KEYS[1], 'state')
if cur == ARGV[2] then return cur end
if not string.find(' ' .. ARGV[3] .. ' ', ' ' .. cur .. ' ', 1, true) then
  return redis.error_reply('ILLEGAL ' .. cur)
end
redis.call('HSET', KEYS[1], 'state', ARGV[2], 'state_at', ARGV[5], 'updated_at', ARGV[5])
redis.call('LPUSH', KEYS[2], cur .. '|' .. ARGV[2] .. '|' .. ARGV[5] .. '|' .. ARGV[4])
redis.call('LTRIM', KEYS[2], 0, tonumber(ARGV[6]) - 1)
return cur`)

// Transition implements session.Store.
func (s *Store) Transition(ctx context.Context, id string, to session.State, allowed []session.State, cause string, fence int64) (session.State, error) {
	names := make([]string, len(allowed))
	for i, a := range allowed {
		names[i] = string(a)
	}
	prev, err := transitionScript.Run(ctx, s.rdb, []string{s.sessionKey(id), s.transKey(id)},
		fence, string(to), strings.Join(names, " "), strings.ReplaceAll(cause, "|", "/"), ms(time.Now()), s.cfg.TransitionsMax).Text()
	if err != nil {
		return "", scriptError("move session", id, err)
	}
	return session.State(prev), nil
}

// Transitions implements session.Store.
func (s *Store) Transitions(ctx context.Context, id string) ([]session.Transition, error) {
	items, err := s.rdb.LRange(ctx, s.transKey(id), 0, -1).Result()
	if err != nil {
		return nil, wrap("read state changes of "+id, err)
	}
	out := make([]session.Transition, 0, len(items))
	for _, it := range items {
		parts := strings.SplitN(it, "|", 4)
		if len(parts) != 4 {
			continue
		}
		at, _ := strconv.ParseInt(parts[2], 10, 64)
		out = append(out, session.Transition{From: session.State(parts[0]), To: session.State(parts[1]),
			At: time.UnixMilli(at).UTC(), Cause: parts[3]})
	}
	return out, nil
}

// appendScript appends one event to a session's log and numbers it, in one step.
//
//	KEYS[1] session hash, KEYS[2] event stream
//	ARGV[1] fence, ARGV[2] kind, ARGV[3] data, ARGV[4] time (ms), ARGV[5] relay id,
//	ARGV[6] relay seq, ARGV[7] log cap, ARGV[8] notify channel, ARGV[9] session id
//
// An event from a relay (ARGV[5] set) whose seq the log already took returns 0. The stream
// entry's id is "<seq>-0", so the log's own ids are the sequence numbers; a relay event keeps
// its relay cursor beside it.
var appendScript = redis.NewScript(fenceCheck + `
if ARGV[5] ~= '' then
  local cur = redis.call('HMGET', KEYS[1], 'relay_id', 'relay_seq')
  if cur[1] == ARGV[5] and tonumber(ARGV[6]) <= tonumber(cur[2] or '0') then return 0 end
  redis.call('HSET', KEYS[1], 'relay_id', ARGV[5], 'relay_seq', ARGV[6])
end
local seq = redis.call('HINCRBY', KEYS[1], 'last_seq', 1)
redis.call('HSET', KEYS[1], 'updated_at', ARGV[4])
if ARGV[5] ~= '' then
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[7], seq .. '-0', 'k', ARGV[2], 'd', ARGV[3], 't', ARGV[4], 'r', ARGV[5] .. ':' .. ARGV[6])
else
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[7], seq .. '-0', 'k', ARGV[2], 'd', ARGV[3], 't', ARGV[4])
end
redis.call('PUBLISH', ARGV[8], 'ev ' .. ARGV[9])
return seq`)

// Append implements session.Store.
func (s *Store) Append(ctx context.Context, id string, kind string, data []byte, from *session.Cursor, fence int64) (int64, error) {
	relayID, relaySeq := "", int64(0)
	if from != nil {
		relayID, relaySeq = from.RelayID, from.Seq
	}
	seq, err := appendScript.Run(ctx, s.rdb, []string{s.sessionKey(id), s.eventsKey(id)},
		fence, kind, data, ms(time.Now()), relayID, relaySeq, s.cfg.EventLogMax, s.notifyChannel(), id).Int64()
	if err != nil {
		return 0, scriptError("append to session", id, err)
	}
	if seq > 0 {
		// Followers in this process need not wait for the notification's round trip.
		s.hub.notify("ev " + id)
	}
	return seq, nil
}

// Read implements session.Store. A read that has to wait registers with the store's
// subscription before it looks, so an append between the look and the wait still wakes it.
func (s *Store) Read(ctx context.Context, id string, after int64, max int, block time.Duration) ([]session.Event, error) {
	if max <= 0 {
		max = 500
	}
	var deadline <-chan time.Time
	if block > 0 {
		t := time.NewTimer(block)
		defer t.Stop()
		deadline = t.C
	}
	for {
		var wake <-chan struct{}
		var cancel func()
		if block > 0 {
			wake, cancel = s.hub.watch(ctx, "ev "+id)
		}
		msgs, err := s.rdb.XRangeN(ctx, s.eventsKey(id), strconv.FormatInt(after+1, 10)+"-0", "+", int64(max)).Result()
		if err != nil || len(msgs) > 0 || block <= 0 {
			if cancel != nil {
				cancel()
			}
			if err != nil {
				if ctx.Err() != nil {
					return nil, ctx.Err()
				}
				return nil, wrap("read session "+id+" log", err)
			}
			return decodeEvents(id, msgs)
		}
		select {
		case <-ctx.Done():
			cancel()
			return nil, ctx.Err()
		case <-deadline:
			cancel()
			return nil, nil
		case <-wake:
			cancel()
		}
	}
}

func decodeEvents(id string, msgs []redis.XMessage) ([]session.Event, error) {
	out := make([]session.Event, 0, len(msgs))
	for _, m := range msgs {
		seqStr, _, _ := strings.Cut(m.ID, "-")
		seq, err := strconv.ParseInt(seqStr, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("read session %s log: event id %q: %w", id, m.ID, err)
		}
		kind, _ := m.Values["k"].(string)
		data, _ := m.Values["d"].(string)
		t, _ := m.Values["t"].(string)
		tms, _ := strconv.ParseInt(t, 10, 64)
		ev := session.Event{Seq: seq, Time: time.UnixMilli(tms).UTC(), Kind: kind, Data: []byte(data)}
		if r, ok := m.Values["r"].(string); ok {
			if i := strings.LastIndexByte(r, ':'); i > 0 {
				rs, _ := strconv.ParseInt(r[i+1:], 10, 64)
				ev.From = &session.Cursor{RelayID: r[:i], Seq: rs}
			}
		}
		out = append(out, ev)
	}
	return out, nil
}

// AddUsage implements session.Store.
func (s *Store) AddUsage(ctx context.Context, id string, u session.Usage, user, channel string, at time.Time) error {
	day := at.UTC().Format(time.DateOnly)
	keys := []string{s.sessionKey(id), s.usageKey(day, "all", "all")}
	indexed := map[string]string{}
	if user != "" {
		keys = append(keys, s.usageKey(day, "user", user))
		indexed["user"] = user
	}
	if channel != "" {
		keys = append(keys, s.usageKey(day, "channel", channel))
		indexed["channel"] = channel
	}
	_, err := s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		for scope, k := range indexed {
			p.SAdd(ctx, s.usageIndexKey(day, scope), k)
			p.Expire(ctx, s.usageIndexKey(day, scope), s.cfg.UsageRetention)
		}
		for i, key := range keys {
			p.HIncrBy(ctx, key, "turns", u.Turns)
			p.HIncrBy(ctx, key, "input_tokens", u.InputTokens)
			p.HIncrBy(ctx, key, "output_tokens", u.OutputTokens)
			p.HIncrBy(ctx, key, "duration_ms", u.DurationMS)
			p.HIncrByFloat(ctx, key, "cost_usd", u.CostUSD)
			if i > 0 {
				p.Expire(ctx, key, s.cfg.UsageRetention)
			}
		}
		return nil
	})
	return wrap("add usage to session "+id, err)
}

// UsageOn implements session.Store.
func (s *Store) UsageOn(ctx context.Context, scope, key string, day time.Time) (session.Usage, error) {
	if scope == "all" {
		key = "all"
	}
	m, err := s.rdb.HGetAll(ctx, s.usageKey(day.UTC().Format(time.DateOnly), scope, key)).Result()
	if err != nil {
		return session.Usage{}, wrap("read usage", err)
	}
	return decodeUsage(m), nil
}

// UsageBy implements session.Store.
func (s *Store) UsageBy(ctx context.Context, scope string, day time.Time) (map[string]session.Usage, error) {
	d := day.UTC().Format(time.DateOnly)
	keys, err := s.rdb.SMembers(ctx, s.usageIndexKey(d, scope)).Result()
	if err != nil {
		return nil, wrap("list usage by "+scope, err)
	}
	cmds := make([]*redis.MapStringStringCmd, len(keys))
	if _, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, k := range keys {
			cmds[i] = p.HGetAll(ctx, s.usageKey(d, scope, k))
		}
		return nil
	}); err != nil {
		return nil, wrap("read usage by "+scope, err)
	}
	out := make(map[string]session.Usage, len(keys))
	for i, k := range keys {
		out[k] = decodeUsage(cmds[i].Val())
	}
	return out, nil
}

func (s *Store) heartbeatKey(replica string) string { return s.cfg.Prefix + "hb:" + replica }

// Heartbeat implements session.Store.
func (s *Store) Heartbeat(ctx context.Context, replica string, ttl time.Duration) error {
	return wrap("heartbeat", s.rdb.Set(ctx, s.heartbeatKey(replica), time.Now().UnixMilli(), ttl).Err())
}

// acquireScript takes a lease that still has the value the caller saw (ARGV[2], "" for none),
// so that two replicas taking over one dead replica's session cannot both win.
//
//	KEYS[1] session hash, KEYS[2] lease key; ARGV[1] owner, ARGV[2] the value seen
//
// It returns the new fencing token, -1 when the session does not exist, -2 when the lease
// changed meanwhile. The new fence refuses the old holder's writes.
var acquireScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
local cur = redis.call('GET', KEYS[2]) or ''
if cur ~= ARGV[2] then return -2 end
local fence = redis.call('HINCRBY', KEYS[1], 'fence', 1)
redis.call('SET', KEYS[2], ARGV[1] .. '|' .. fence)
return fence`)

// AcquireLease implements session.Store.
func (s *Store) AcquireLease(ctx context.Context, id, owner string) (int64, error) {
	for attempt := 0; attempt < 3; attempt++ {
		cur, err := s.rdb.Get(ctx, s.leaseKey(id)).Result()
		if err != nil && !errors.Is(err, redis.Nil) {
			return 0, wrap("acquire lease on "+id, err)
		}
		if cur != "" {
			holder, fence := splitLease(cur)
			if holder == owner {
				return fence, nil
			}
			alive, err := s.rdb.Exists(ctx, s.heartbeatKey(holder)).Result()
			if err != nil {
				return 0, wrap("acquire lease on "+id, err)
			}
			if alive == 1 {
				return 0, nil
			}
		}
		n, err := acquireScript.Run(ctx, s.rdb, []string{s.sessionKey(id), s.leaseKey(id)}, owner, cur).Int64()
		if err != nil {
			return 0, wrap("acquire lease on "+id, err)
		}
		switch n {
		case -1:
			return 0, fmt.Errorf("acquire lease on %s: %w", id, session.ErrNotFound)
		case -2:
			continue // someone else moved first: look again
		}
		return n, nil
	}
	return 0, nil
}

func splitLease(v string) (string, int64) {
	owner, f, _ := strings.Cut(v, "|")
	fence, _ := strconv.ParseInt(f, 10, 64)
	return owner, fence
}

// releaseScript deletes KEYS[1] if it holds ARGV[1].
var releaseScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
return 1`)

// ReleaseLease implements session.Store.
func (s *Store) ReleaseLease(ctx context.Context, id, owner string, fence int64) error {
	err := releaseScript.Run(ctx, s.rdb, []string{s.leaseKey(id)}, owner+"|"+strconv.FormatInt(fence, 10)).Err()
	return wrap("release lease on "+id, err)
}

// Leases implements session.Store.
func (s *Store) Leases(ctx context.Context, ids []string) ([]session.Lease, error) {
	cmds := make([]*redis.StringCmd, len(ids))
	_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, id := range ids {
			cmds[i] = p.Get(ctx, s.leaseKey(id))
		}
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, wrap("check leases", err)
	}
	out := make([]session.Lease, len(ids))
	alive := map[string]*redis.IntCmd{}
	for i, c := range cmds {
		if v, err := c.Result(); err == nil {
			out[i].Owner, out[i].Fence = splitLease(v)
			alive[out[i].Owner] = nil
		}
	}
	if len(alive) > 0 {
		_, err = s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for owner := range alive {
				alive[owner] = p.Exists(ctx, s.heartbeatKey(owner))
			}
			return nil
		})
		if err != nil {
			return nil, wrap("check heartbeats", err)
		}
		for i := range out {
			if c := alive[out[i].Owner]; c != nil {
				out[i].Alive = c.Val() == 1
			}
		}
	}
	return out, nil
}

// Active implements session.Store.
func (s *Store) Active(ctx context.Context) ([]string, error) {
	ids, err := s.rdb.ZRange(ctx, s.activeKey(), 0, -1).Result()
	return ids, wrap("list active sessions", err)
}

// SetActive implements session.Store.
func (s *Store) SetActive(ctx context.Context, id string, active bool) error {
	var err error
	if active {
		err = s.rdb.ZAdd(ctx, s.activeKey(), redis.Z{Score: float64(ms(time.Now())), Member: id}).Err()
	} else {
		err = s.rdb.ZRem(ctx, s.activeKey(), id).Err()
	}
	return wrap("mark session "+id+" active", err)
}

// enqueueScript adds a prompt to a session's inbox and its prompt event to the log, counting
// what waits before it.
//
//	KEYS[1] session hash, KEYS[2] inbox, KEYS[3] event stream
//	ARGV[1] prompt id, ARGV[2] user, ARGV[3] text, ARGV[4] notify channel, ARGV[5] session id,
//	ARGV[6] event data, ARGV[7] time (ms), ARGV[8] log cap
var enqueueScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 0 then return redis.error_reply('NOSESSION') end
local done = redis.call('HGET', KEYS[1], 'inbox_done')
local ahead = 0
if done and done ~= '' then
  ahead = #redis.call('XRANGE', KEYS[2], '(' .. done, '+')
else
  ahead = redis.call('XLEN', KEYS[2])
end
local seq = redis.call('HINCRBY', KEYS[1], 'last_seq', 1)
redis.call('HSET', KEYS[1], 'updated_at', ARGV[7])
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[8], seq .. '-0', 'k', 'prompt', 'd', ARGV[6], 't', ARGV[7])
local id = redis.call('XADD', KEYS[2], 'MAXLEN', '~', 1000, '*', 'id', ARGV[1], 'u', ARGV[2], 'x', ARGV[3])
redis.call('PUBLISH', ARGV[4], 'ev ' .. ARGV[5])
redis.call('PUBLISH', ARGV[4], 'in ' .. ARGV[5])
return {id, ahead, seq}`)

// Enqueue implements session.Store.
func (s *Store) Enqueue(ctx context.Context, id string, p session.Prompt, data []byte) (string, int, int64, error) {
	res, err := enqueueScript.Run(ctx, s.rdb, []string{s.sessionKey(id), s.inboxKey(id), s.eventsKey(id)},
		p.ID, p.User, p.Text, s.notifyChannel(), id, data, ms(time.Now()), s.cfg.EventLogMax).Slice()
	if err != nil {
		return "", 0, 0, scriptError("enqueue a prompt for", id, err)
	}
	entry, _ := res[0].(string)
	ahead, _ := res[1].(int64)
	seq, _ := res[2].(int64)
	return entry, int(ahead), seq, nil
}

// Inbox implements session.Store.
func (s *Store) Inbox(ctx context.Context, id, after string) ([]session.InboxEntry, error) {
	start := "-"
	if after != "" {
		start = "(" + after
	}
	msgs, err := s.rdb.XRange(ctx, s.inboxKey(id), start, "+").Result()
	if err != nil {
		return nil, wrap("read session "+id+" inbox", err)
	}
	if len(msgs) == 0 {
		return nil, nil
	}
	cancelled, err := s.rdb.SMembers(ctx, s.cancelKey(id)).Result()
	if err != nil {
		return nil, wrap("read session "+id+" inbox", err)
	}
	out := make([]session.InboxEntry, 0, len(msgs))
	for _, m := range msgs {
		e := session.InboxEntry{ID: m.ID}
		e.Prompt.ID, _ = m.Values["id"].(string)
		e.Prompt.User, _ = m.Values["u"].(string)
		e.Prompt.Text, _ = m.Values["x"].(string)
		for _, c := range cancelled {
			if c == e.Prompt.ID {
				e.Cancelled = true
			}
		}
		out = append(out, e)
	}
	return out, nil
}

// cancelScript marks a prompt cancelled if it still waits in the inbox.
//
//	KEYS[1] session hash, KEYS[2] inbox, KEYS[3] cancelled set; ARGV[1] prompt id
var cancelScript = redis.NewScript(`
local done = redis.call('HGET', KEYS[1], 'inbox_done')
local start = '-'
if done and done ~= '' then start = '(' .. done end
for _, e in ipairs(redis.call('XRANGE', KEYS[2], start, '+')) do
  local f = e[2]
  for i = 1, #f, 2 do
    if f[i] == 'id' and f[i + 1] == ARGV[1] then
      local added = redis.call('SADD', KEYS[3], ARGV[1])
      redis.call('EXPIRE', KEYS[3], 86400)
      return added
    end
  end
end
return 0`)

// Cancel implements session.Store.
func (s *Store) Cancel(ctx context.Context, id, promptID string) (bool, error) {
	n, err := cancelScript.Run(ctx, s.rdb, []string{s.sessionKey(id), s.inboxKey(id), s.cancelKey(id)}, promptID).Int()
	if err != nil {
		return false, wrap("cancel a prompt of "+id, err)
	}
	return n == 1, nil
}

// Close implements session.Store.
func (s *Store) Close(ctx context.Context, id string, retention time.Duration) error {
	sess, err := s.Get(ctx, id)
	if err != nil {
		return err
	}
	if _, err := s.Transition(ctx, id, session.StateClosed, session.AllowedFrom(session.StateClosed), "closed", 0); err != nil {
		return err
	}
	if err := casScript.Run(ctx, s.rdb, []string{s.threadKey(sess.Thread)}, id, "").Err(); err != nil {
		return wrap("close session "+id, err)
	}
	_, err = s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.ZRem(ctx, s.activeKey(), id)
		for _, k := range []string{s.sessionKey(id), s.eventsKey(id), s.transKey(id), s.inboxKey(id), s.cancelKey(id), s.leaseKey(id)} {
			p.PExpire(ctx, k, max(retention, time.Millisecond))
		}
		return nil
	})
	return wrap("close session "+id, err)
}

// Delete implements session.Store.
func (s *Store) Delete(ctx context.Context, id string) error {
	sess, err := s.Get(ctx, id)
	if errors.Is(err, session.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	if err := casScript.Run(ctx, s.rdb, []string{s.threadKey(sess.Thread)}, id, "").Err(); err != nil {
		return wrap("delete session "+id, err)
	}
	_, err = s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.Del(ctx, s.sessionKey(id), s.eventsKey(id), s.transKey(id), s.inboxKey(id), s.cancelKey(id), s.leaseKey(id))
		p.ZRem(ctx, s.indexKey(), id)
		p.ZRem(ctx, s.activeKey(), id)
		return nil
	})
	return wrap("delete session "+id, err)
}

// WatchInbox returns a channel that receives a value whenever a prompt is enqueued for the
// session, on any replica; call the returned function to stop watching.
func (s *Store) WatchInbox(ctx context.Context, id string) (<-chan struct{}, func()) {
	return s.hub.watch(ctx, "in "+id)
}

func encode(s *session.Session) map[string]any {
	return map[string]any{
		"id":                s.ID,
		"thread":            s.Thread,
		"owner":             s.Owner,
		"state":             string(s.State),
		"state_at":          ms(s.StateAt),
		"provider":          s.Provider,
		"sandbox_id":        s.SandboxID,
		"claude_session_id": s.ClaudeSessionID,
		"preview_url":       s.PreviewURL,
		"permission_mode":   s.PermissionMode,
		"model":             s.Model,
		"relay_id":          s.RelayID,
		"relay_seq":         s.RelaySeq,
		"last_seq":          s.LastSeq,
		"created_at":        ms(s.CreatedAt),
		"updated_at":        ms(s.UpdatedAt),
		"turns":             s.Usage.Turns,
		"input_tokens":      s.Usage.InputTokens,
		"output_tokens":     s.Usage.OutputTokens,
		"cost_usd":          strconv.FormatFloat(s.Usage.CostUSD, 'f', -1, 64),
		"duration_ms":       s.Usage.DurationMS,
	}
}

func decode(m map[string]string) *session.Session {
	i := func(k string) int64 { n, _ := strconv.ParseInt(m[k], 10, 64); return n }
	return &session.Session{
		ID:              m["id"],
		Thread:          m["thread"],
		Owner:           m["owner"],
		State:           session.State(m["state"]),
		StateAt:         time.UnixMilli(i("state_at")).UTC(),
		Provider:        m["provider"],
		SandboxID:       m["sandbox_id"],
		ClaudeSessionID: m["claude_session_id"],
		PreviewURL:      m["preview_url"],
		PermissionMode:  m["permission_mode"],
		Model:           m["model"],
		RelayID:         m["relay_id"],
		RelaySeq:        i("relay_seq"),
		LastSeq:         i("last_seq"),
		Fence:           i("fence"),
		InboxDone:       m["inbox_done"],
		CreatedAt:       time.UnixMilli(i("created_at")).UTC(),
		UpdatedAt:       time.UnixMilli(i("updated_at")).UTC(),
		Usage:           decodeUsage(m),
	}
}

func decodeUsage(m map[string]string) session.Usage {
	i := func(k string) int64 { n, _ := strconv.ParseInt(m[k], 10, 64); return n }
	f, _ := strconv.ParseFloat(m["cost_usd"], 64)
	return session.Usage{Turns: i("turns"), InputTokens: i("input_tokens"), OutputTokens: i("output_tokens"), CostUSD: f, DurationMS: i("duration_ms")}
}

// hub is the store's one subscription to its notify channel, fanned out to local watchers.
type hub struct {
	rdb     redis.UniversalClient
	channel string

	mu       sync.Mutex
	watchers map[string]map[*watcher]struct{}
	started  bool
	stop     context.CancelFunc
}

type watcher struct{ ch chan struct{} }

func newHub(rdb redis.UniversalClient, channel string) *hub {
	return &hub{rdb: rdb, channel: channel, watchers: map[string]map[*watcher]struct{}{}}
}

// watch registers for a topic ("ev <id>", "in <id>"); the channel receives (without
// blocking the hub) after every notification.
func (h *hub) watch(ctx context.Context, topic string) (<-chan struct{}, func()) {
	w := &watcher{ch: make(chan struct{}, 1)}
	h.mu.Lock()
	if !h.started {
		h.started = true
		hctx, cancel := context.WithCancel(context.Background())
		h.stop = cancel
		go h.run(hctx)
	}
	ws := h.watchers[topic]
	if ws == nil {
		ws = map[*watcher]struct{}{}
		h.watchers[topic] = ws
	}
	ws[w] = struct{}{}
	h.mu.Unlock()
	return w.ch, func() {
		h.mu.Lock()
		delete(h.watchers[topic], w)
		if len(h.watchers[topic]) == 0 {
			delete(h.watchers, topic)
		}
		h.mu.Unlock()
	}
}

// run keeps the subscription; go-redis resubscribes after a lost connection. Notifications
// sent while the subscription was down are lost, so every watcher is woken when it comes
// back: a lost notification costs a watcher a look, never its wake-up.
func (h *hub) run(ctx context.Context) {
	ps := h.rdb.Subscribe(ctx, h.channel)
	defer ps.Close()
	msgs := ps.ChannelWithSubscriptions(redis.WithChannelHealthCheckInterval(5 * time.Second))
	for {
		select {
		case <-ctx.Done():
			return
		case m, ok := <-msgs:
			if !ok {
				return
			}
			switch m := m.(type) {
			case *redis.Message:
				h.notify(m.Payload)
			case *redis.Subscription:
				h.notifyAll()
			}
		}
	}
}

func (h *hub) notify(topic string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for w := range h.watchers[topic] {
		select {
		case w.ch <- struct{}{}:
		default:
		}
	}
}

func (h *hub) notifyAll() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, ws := range h.watchers {
		for w := range ws {
			select {
			case w.ch <- struct{}{}:
			default:
			}
		}
	}
}

func (h *hub) close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.stop != nil {
		h.stop()
	}
}

// Claim hands a pooled sandbox out once across replicas (see package pool): true for the
// first caller. The claim is kept a day, longer than any sandbox waits in a pool.
func (s *Store) Claim(ctx context.Context, sandboxID string) (bool, error) {
	ok, err := s.rdb.SetNX(ctx, s.cfg.Prefix+"claim:"+sandboxID, s.cfg.Prefix, 24*time.Hour).Result()
	return ok, wrap("claim pooled sandbox "+sandboxID, err)
}
