package redisstore

import (
	"context"
	"errors"
	"time"

	"github.com/redis/go-redis/v9"
)

// Controls carry requests (a Stop, a permission decision) from the replica where someone
// pressed a button to the replica that drives the session, and the answers back. A request
// nobody takes within controlTTL is dropped: nobody drives the session any more.
const controlTTL = 30 * time.Second

func (s *Store) controlKey(id string) string { return s.key(id, ":ctl") }
func (s *Store) answerKey(req string) string { return s.cfg.Prefix + "ctl:answer:" + req }

var sendControlScript = redis.NewScript(`
redis.call('RPUSH', KEYS[1], ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('PUBLISH', ARGV[3], 'in ' .. ARGV[4])
return 1`)

// SendControl implements session.Store: the request joins the session's control list and the
// replicas watching the session's inbox are woken.
func (s *Store) SendControl(ctx context.Context, id string, req []byte) error {
	err := sendControlScript.Run(ctx, s.rdb, []string{s.controlKey(id)}, req, controlTTL.Milliseconds(), s.notifyChannel(), id).Err()
	return wrap("send a control request to session "+id, err)
}

var takeControlsScript = redis.NewScript(`
local all = redis.call('LRANGE', KEYS[1], 0, -1)
redis.call('DEL', KEYS[1])
return all`)

// TakeControls implements session.Store.
func (s *Store) TakeControls(ctx context.Context, id string) ([][]byte, error) {
	vals, err := takeControlsScript.Run(ctx, s.rdb, []string{s.controlKey(id)}).StringSlice()
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, wrap("take the control requests of session "+id, err)
	}
	out := make([][]byte, len(vals))
	for i, v := range vals {
		out[i] = []byte(v)
	}
	return out, nil
}

// AnswerControl implements session.Store.
func (s *Store) AnswerControl(ctx context.Context, req string, answer []byte) error {
	_, err := s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.RPush(ctx, s.answerKey(req), answer)
		p.PExpire(ctx, s.answerKey(req), controlTTL)
		return nil
	})
	return wrap("answer control request "+req, err)
}

// awaitSlice is the longest one blocking read waits. A command that blocks in Redis is not
// abandoned when its context ends, so the wait is cut in slices and the context looked at
// between them: a caller that gives up (a closed request, a replica shutting down) is let go
// within a slice.
const awaitSlice = time.Second

// AwaitAnswer implements session.Store.
func (s *Store) AwaitAnswer(ctx context.Context, req string, timeout time.Duration) ([]byte, error) {
	deadline := time.Now().Add(timeout)
	for {
		wait := min(time.Until(deadline), awaitSlice)
		if wait <= 0 {
			return nil, nil
		}
		vals, err := s.rdb.BLPop(ctx, max(wait, 10*time.Millisecond), s.answerKey(req)).Result()
		switch {
		case err == nil:
			return []byte(vals[1]), nil
		case !errors.Is(err, redis.Nil):
			return nil, wrap("await the answer to control request "+req, err)
		case ctx.Err() != nil:
			return nil, wrap("await the answer to control request "+req, ctx.Err())
		}
	}
}
