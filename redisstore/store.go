// Package redisstore keeps sessions in Redis: a hash per session, a Redis Stream per session
// for its event log, and a key per thread that names the thread's session. Several bot
// replicas share one Redis.
//
// Per-session keys carry the session id as a hash tag ({id}) so that the scripts that touch a
// session's hash and its log together stay within one slot of a Redis Cluster.
package redisstore

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
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
}

// Store is a session.Store on Redis.
type Store struct {
	rdb redis.UniversalClient
	cfg Config
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
	return &Store{rdb: rdb, cfg: cfg}
}

// Open connects to the Redis at url (redis:// or rediss://).
func Open(url string) (*redis.Client, error) {
	opt, err := redis.ParseURL(url)
	if err != nil {
		return nil, fmt.Errorf("redis url: %w", err)
	}
	// Log followers block in XREAD; leave room for them beside ordinary commands.
	if opt.PoolSize < 64 {
		opt.PoolSize = 64
	}
	return redis.NewClient(opt), nil
}

func (s *Store) sessionKey(id string) string { return s.cfg.Prefix + "s:{" + id + "}" }
func (s *Store) eventsKey(id string) string  { return s.cfg.Prefix + "s:{" + id + "}:ev" }
func (s *Store) threadKey(t string) string   { return s.cfg.Prefix + "t:" + t }
func (s *Store) indexKey() string            { return s.cfg.Prefix + "sessions" }

func ms(t time.Time) int64 { return t.UnixMilli() }

// Ping implements session.Store.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.rdb.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("redis ping: %w", err)
	}
	return nil
}

// CreateForThread implements session.Store. The session's hash is written before the thread
// names it, so whoever finds the thread's key finds a whole session.
func (s *Store) CreateForThread(ctx context.Context, sess *session.Session) (*session.Session, bool, error) {
	now := time.Now().UTC()
	if sess.CreatedAt.IsZero() {
		sess.CreatedAt = now
	}
	sess.UpdatedAt = now
	key := s.sessionKey(sess.ID)
	_, err := s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.HSet(ctx, key, encode(sess))
		p.ZAdd(ctx, s.indexKey(), redis.Z{Score: float64(ms(sess.CreatedAt)), Member: sess.ID})
		return nil
	})
	if err != nil {
		return nil, false, fmt.Errorf("create session: %w", err)
	}
	for attempt := 0; attempt < 3; attempt++ {
		ok, err := s.rdb.SetNX(ctx, s.threadKey(sess.Thread), sess.ID, 0).Result()
		if err != nil {
			return nil, false, fmt.Errorf("create session: claim thread: %w", err)
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
		return nil, fmt.Errorf("find session of thread %s: %w", thread, err)
	}
	return s.Get(ctx, id)
}

// Get implements session.Store.
func (s *Store) Get(ctx context.Context, id string) (*session.Session, error) {
	m, err := s.rdb.HGetAll(ctx, s.sessionKey(id)).Result()
	if err != nil {
		return nil, fmt.Errorf("get session %s: %w", id, err)
	}
	if len(m) == 0 {
		return nil, fmt.Errorf("session %s: %w", id, session.ErrNotFound)
	}
	return decode(m), nil
}

// List implements session.Store.
func (s *Store) List(ctx context.Context) ([]*session.Session, error) {
	ids, err := s.rdb.ZRange(ctx, s.indexKey(), 0, -1).Result()
	if err != nil {
		return nil, fmt.Errorf("list sessions: %w", err)
	}
	cmds := make([]*redis.MapStringStringCmd, len(ids))
	_, err = s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, id := range ids {
			cmds[i] = p.HGetAll(ctx, s.sessionKey(id))
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list sessions: %w", err)
	}
	out := make([]*session.Session, 0, len(ids))
	for _, c := range cmds {
		if m := c.Val(); len(m) > 0 {
			out = append(out, decode(m))
		}
	}
	return out, nil
}

// updateScript sets fields of an existing hash (ARGV: field, value, ...).
var updateScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV))
return 1`)

// Update implements session.Store.
func (s *Store) Update(ctx context.Context, id string, u session.Update) error {
	args := []any{"updated_at", ms(time.Now())}
	if u.State != nil {
		args = append(args, "state", string(*u.State))
	}
	if u.Provider != nil {
		args = append(args, "provider", *u.Provider)
	}
	if u.SandboxID != nil {
		args = append(args, "sandbox_id", *u.SandboxID)
	}
	if u.ClaudeSessionID != nil {
		args = append(args, "claude_session_id", *u.ClaudeSessionID)
	}
	if u.PreviewURL != nil {
		args = append(args, "preview_url", *u.PreviewURL)
	}
	n, err := updateScript.Run(ctx, s.rdb, []string{s.sessionKey(id)}, args...).Int()
	if err != nil {
		return fmt.Errorf("update session %s: %w", id, err)
	}
	if n == 0 {
		return fmt.Errorf("update session %s: %w", id, session.ErrNotFound)
	}
	return nil
}

// appendScript appends one event to a session's log and numbers it, in one step.
//
//	KEYS[1] session hash, KEYS[2] event stream
//	ARGV[1] kind, ARGV[2] data, ARGV[3] time (ms), ARGV[4] relay id, ARGV[5] relay seq,
//	ARGV[6] log cap
//
// An event from a relay (ARGV[4] set) whose seq the log already took returns 0. The stream
// entry's id is "<seq>-0", so the log's own ids are the sequence numbers.
var appendScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 0 then return redis.error_reply('NOSESSION session does not exist') end
if ARGV[4] ~= '' then
  local cur = redis.call('HMGET', KEYS[1], 'relay_id', 'relay_seq')
  if cur[1] == ARGV[4] and tonumber(ARGV[5]) <= tonumber(cur[2] or '0') then return 0 end
  redis.call('HSET', KEYS[1], 'relay_id', ARGV[4], 'relay_seq', ARGV[5])
end
local seq = redis.call('HINCRBY', KEYS[1], 'last_seq', 1)
redis.call('HSET', KEYS[1], 'updated_at', ARGV[3])
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[6], seq .. '-0', 'k', ARGV[1], 'd', ARGV[2], 't', ARGV[3])
return seq`)

// Append implements session.Store.
func (s *Store) Append(ctx context.Context, id string, kind string, data []byte, from *session.Cursor) (int64, error) {
	relayID, relaySeq := "", int64(0)
	if from != nil {
		relayID, relaySeq = from.RelayID, from.Seq
	}
	seq, err := appendScript.Run(ctx, s.rdb, []string{s.sessionKey(id), s.eventsKey(id)},
		kind, data, ms(time.Now()), relayID, relaySeq, s.cfg.EventLogMax).Int64()
	if err != nil {
		if strings.Contains(err.Error(), "NOSESSION") {
			return 0, fmt.Errorf("append to session %s: %w", id, session.ErrNotFound)
		}
		return 0, fmt.Errorf("append to session %s: %w", id, err)
	}
	return seq, nil
}

// Read implements session.Store.
func (s *Store) Read(ctx context.Context, id string, after int64, max int, block time.Duration) ([]session.Event, error) {
	if max <= 0 {
		max = 500
	}
	key := s.eventsKey(id)
	msgs, err := s.rdb.XRangeN(ctx, key, strconv.FormatInt(after+1, 10)+"-0", "+", int64(max)).Result()
	if err != nil {
		return nil, fmt.Errorf("read session %s log: %w", id, err)
	}
	if len(msgs) == 0 && block > 0 {
		msgs, err = s.wait(ctx, key, after, max, block)
		if err != nil {
			return nil, fmt.Errorf("wait on session %s log: %w", id, err)
		}
	}
	out := make([]session.Event, 0, len(msgs))
	for _, m := range msgs {
		ev, err := decodeEvent(m)
		if err != nil {
			return nil, fmt.Errorf("read session %s log: %w", id, err)
		}
		out = append(out, ev)
	}
	return out, nil
}

// wait blocks in XREAD for entries after seq after. go-redis does not abandon a blocked
// command when its context is cancelled, so the read runs on its own goroutine (holding its
// connection until block passes) and a cancelled caller returns at once.
func (s *Store) wait(ctx context.Context, key string, after int64, max int, block time.Duration) ([]redis.XMessage, error) {
	type result struct {
		streams []redis.XStream
		err     error
	}
	ch := make(chan result, 1)
	go func() {
		streams, err := s.rdb.XRead(context.WithoutCancel(ctx), &redis.XReadArgs{
			Streams: []string{key, strconv.FormatInt(after, 10) + "-0"},
			Count:   int64(max),
			Block:   block,
		}).Result()
		ch <- result{streams, err}
	}()
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case r := <-ch:
		if errors.Is(r.err, redis.Nil) {
			return nil, nil
		}
		if r.err != nil || len(r.streams) == 0 {
			return nil, r.err
		}
		return r.streams[0].Messages, nil
	}
}

func decodeEvent(m redis.XMessage) (session.Event, error) {
	seqStr, _, _ := strings.Cut(m.ID, "-")
	seq, err := strconv.ParseInt(seqStr, 10, 64)
	if err != nil {
		return session.Event{}, fmt.Errorf("event id %q: %w", m.ID, err)
	}
	kind, _ := m.Values["k"].(string)
	data, _ := m.Values["d"].(string)
	t, _ := m.Values["t"].(string)
	tms, _ := strconv.ParseInt(t, 10, 64)
	return session.Event{Seq: seq, Time: time.UnixMilli(tms).UTC(), Kind: kind, Data: []byte(data)}, nil
}

// AddUsage implements session.Store.
func (s *Store) AddUsage(ctx context.Context, id string, u session.Usage) error {
	key := s.sessionKey(id)
	_, err := s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.HIncrBy(ctx, key, "turns", u.Turns)
		p.HIncrBy(ctx, key, "input_tokens", u.InputTokens)
		p.HIncrBy(ctx, key, "output_tokens", u.OutputTokens)
		p.HIncrBy(ctx, key, "duration_ms", u.DurationMS)
		p.HIncrByFloat(ctx, key, "cost_usd", u.CostUSD)
		return nil
	})
	if err != nil {
		return fmt.Errorf("add usage to session %s: %w", id, err)
	}
	return nil
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
		return fmt.Errorf("delete session %s: %w", id, err)
	}
	_, err = s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.Del(ctx, s.sessionKey(id), s.eventsKey(id))
		p.ZRem(ctx, s.indexKey(), id)
		return nil
	})
	if err != nil {
		return fmt.Errorf("delete session %s: %w", id, err)
	}
	return nil
}

func encode(s *session.Session) map[string]any {
	return map[string]any{
		"id":                s.ID,
		"thread":            s.Thread,
		"owner":             s.Owner,
		"state":             string(s.State),
		"provider":          s.Provider,
		"sandbox_id":        s.SandboxID,
		"claude_session_id": s.ClaudeSessionID,
		"preview_url":       s.PreviewURL,
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
	f := func(k string) float64 { n, _ := strconv.ParseFloat(m[k], 64); return n }
	return &session.Session{
		ID:              m["id"],
		Thread:          m["thread"],
		Owner:           m["owner"],
		State:           session.State(m["state"]),
		Provider:        m["provider"],
		SandboxID:       m["sandbox_id"],
		ClaudeSessionID: m["claude_session_id"],
		PreviewURL:      m["preview_url"],
		RelayID:         m["relay_id"],
		RelaySeq:        i("relay_seq"),
		LastSeq:         i("last_seq"),
		CreatedAt:       time.UnixMilli(i("created_at")).UTC(),
		UpdatedAt:       time.UnixMilli(i("updated_at")).UTC(),
		Usage: session.Usage{
			Turns:        i("turns"),
			InputTokens:  i("input_tokens"),
			OutputTokens: i("output_tokens"),
			CostUSD:      f("cost_usd"),
			DurationMS:   i("duration_ms"),
		},
	}
}
