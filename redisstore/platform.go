package redisstore

import (
	"context"
	"errors"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// This file is what chat adapters keep in Redis beside sessions, shared by every replica: which
// deliveries were handled, rate budgets, and small values (a thread's message ids, a channel's
// settings).

// Once reports whether key is seen here for the first time in ttl: a delivery a platform retries
// is handled by the first replica that sees it, once.
func (s *Store) Once(ctx context.Context, key string, ttl time.Duration) (bool, error) {
	ok, err := s.rdb.SetNX(ctx, s.cfg.Prefix+"once:"+key, 1, ttl).Result()
	return ok, wrap("remember "+key, err)
}

// takeScript reserves one call from a budget refilled at ARGV[2] calls a second with bursts of
// ARGV[3], the generic cell rate algorithm: KEYS[1] keeps the theoretical arrival time of the
// next call (ms), KEYS[2] a hold set after a rate-limit answer. It returns how many
// milliseconds the caller must wait before its call; the slot is the caller's either way, so
// callers go in the order they asked.
var takeScript = redis.NewScript(`
local now = tonumber(ARGV[1])
local interval = 1000 / tonumber(ARGV[2])
local tolerance = interval * (tonumber(ARGV[3]) - 1)
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
local hold = tonumber(redis.call('GET', KEYS[2]) or '0')
local start = math.max(tat, now, hold)
local allow = start - tolerance
if hold > now then allow = math.max(allow, hold) end
local wait = math.max(0, allow - now)
redis.call('SET', KEYS[1], start + interval, 'PX', math.ceil(start + interval - now + tolerance + 1000))
return math.ceil(wait)`)

// Take reserves one call from the budget key (rate calls a second, bursts of burst), shared by
// every replica, and returns how long to wait before making it.
func (s *Store) Take(ctx context.Context, key string, rate float64, burst int) (time.Duration, error) {
	if burst < 1 {
		burst = 1
	}
	k := s.cfg.Prefix + "budget:{" + key + "}"
	ms, err := takeScript.Run(ctx, s.rdb, []string{k, k + ":hold"}, time.Now().UnixMilli(), rate, burst).Int64()
	if err != nil {
		return 0, wrap("take from budget "+key, err)
	}
	return time.Duration(ms) * time.Millisecond, nil
}

// Hold stops the budget key for d (a platform answered 429 with Retry-After d): no replica's
// call goes before it runs out.
func (s *Store) Hold(ctx context.Context, key string, d time.Duration) error {
	k := s.cfg.Prefix + "budget:{" + key + "}:hold"
	until := time.Now().Add(d).UnixMilli()
	err := s.rdb.Set(ctx, k, strconv.FormatInt(until, 10), d+time.Second).Err()
	return wrap("hold budget "+key, err)
}

// Put keeps a small value for ttl (0: for good).
func (s *Store) Put(ctx context.Context, key string, value []byte, ttl time.Duration) error {
	return wrap("put "+key, s.rdb.Set(ctx, s.cfg.Prefix+"kv:"+key, value, ttl).Err())
}

// Fetch returns a value kept with Put, or nil when there is none.
func (s *Store) Fetch(ctx context.Context, key string) ([]byte, error) {
	b, err := s.rdb.Get(ctx, s.cfg.Prefix+"kv:"+key).Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, nil
	}
	return b, wrap("fetch "+key, err)
}
