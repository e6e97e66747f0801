// Package pool keeps sandboxes created and ready so that a thread's first prompt does not wait
// for one: a Pool wraps a provider, and its Create hands out a ready sandbox (relabelled for
// its session) when one made with the same spec waits in the pool, refilling it in the
// background. Pooled sandboxes past their age are recycled.
//
// Pooled sandboxes are the provider's, labelled nightona.pool; several bot replicas share them,
// and a Claimer makes sure each is handed out once.
package pool

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/nightona/nightona/sandbox"
)

// Labels of pooled sandboxes.
const (
	LabelPool = "nightona.pool"      // "1" while the sandbox waits in the pool
	LabelSpec = "nightona.pool.spec" // which spec it was made with
)

// Claimer hands each pooled sandbox out once, across replicas. Claim returns true for the
// first caller only.
type Claimer interface {
	Claim(ctx context.Context, sandboxID string) (bool, error)
}

// Config configures a Pool. Zero fields take their defaults.
type Config struct {
	// Size is how many ready sandboxes to keep. 0: no pool (Create passes through).
	Size int
	// MaxAge recycles pooled sandboxes older than this. Default 1 h.
	MaxAge time.Duration
	// Spec is what pooled sandboxes are made with; a Create whose spec differs (labels aside)
	// is not served from the pool.
	Spec sandbox.Spec
	// Claimer hands sandboxes out once; default: a claimer for this process alone.
	Claimer Claimer
	// Interval is how often the pool checks itself. Default 10 s.
	Interval time.Duration
	// RefillDelay holds the refill back after a sandbox is handed out, so that making its
	// replacement does not slow the first turn in it: starting Claude Code takes a core.
	// Default 5 s.
	RefillDelay time.Duration
	Logger      *slog.Logger
}

// Pool is a sandbox.Provider with ready sandboxes. Run keeps it filled.
type Pool struct {
	sandbox.Provider
	cfg  Config
	log  *slog.Logger
	hash string
	kick chan struct{}

	mu      sync.Mutex
	filling int       // creations under way
	quiet   time.Time // no refill before this (see RefillDelay)
}

// New wraps provider with a pool.
func New(provider sandbox.Provider, cfg Config) *Pool {
	if cfg.MaxAge <= 0 {
		cfg.MaxAge = time.Hour
	}
	if cfg.Interval <= 0 {
		cfg.Interval = 10 * time.Second
	}
	if cfg.RefillDelay <= 0 {
		cfg.RefillDelay = 5 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Claimer == nil {
		cfg.Claimer = &localClaimer{claimed: map[string]bool{}}
	}
	return &Pool{Provider: provider, cfg: cfg, log: cfg.Logger.With("component", "pool"),
		hash: specHash(cfg.Spec), kick: make(chan struct{}, 1)}
}

// specHash identifies what a sandbox was made with, labels aside.
func specHash(s sandbox.Spec) string {
	h := sha256.New()
	fmt.Fprintf(h, "%s|%s|%s|%v|%v|%v|%v|%+v|", s.PermissionMode, s.Model, s.Snapshot, s.Public, s.AutoStop, s.AutoArchive, s.AutoDelete, s.Resources)
	for _, k := range slices.Sorted(maps.Keys(s.Env)) {
		fmt.Fprintf(h, "%s=%s|", k, s.Env[k])
	}
	return hex.EncodeToString(h.Sum(nil))[:16]
}

// Unwrap implements sandbox.Wrapper.
func (p *Pool) Unwrap() sandbox.Provider { return p.Provider }

// Create implements sandbox.Provider: a ready pooled sandbox made with the same spec if there
// is one, else a new one.
func (p *Pool) Create(ctx context.Context, spec sandbox.Spec) (*sandbox.Sandbox, error) {
	if p.cfg.Size > 0 && specHash(spec) == p.hash {
		if sb := p.claim(ctx, spec.Labels); sb != nil {
			p.mu.Lock()
			p.quiet = time.Now().Add(p.cfg.RefillDelay)
			p.mu.Unlock()
			time.AfterFunc(p.cfg.RefillDelay, p.refill)
			return sb, nil
		}
		p.refill()
	}
	return p.Provider.Create(ctx, spec)
}

// claim takes a ready pooled sandbox and gives it the session's labels; nil when none is ready.
func (p *Pool) claim(ctx context.Context, labels map[string]string) *sandbox.Sandbox {
	ready, err := p.ready(ctx)
	if err != nil {
		p.log.Warn("could not list the pool", "err", err)
		return nil
	}
	for _, sb := range ready {
		ok, err := p.cfg.Claimer.Claim(ctx, sb.ID)
		if err != nil || !ok {
			continue
		}
		if err := p.SetLabels(ctx, sb.ID, labels); err != nil {
			p.log.Warn("could not relabel a pooled sandbox", "sandbox_id", sb.ID, "err", err)
			continue
		}
		got, err := p.Get(ctx, sb.ID)
		if err != nil || got.State != sandbox.StateStarted || got.Relay == nil {
			continue // it went away; the session gets a fresh one
		}
		p.log.Info("handed out a pooled sandbox", "sandbox_id", sb.ID)
		return got
	}
	return nil
}

// ready lists the started pooled sandboxes of this pool's spec, oldest first.
func (p *Pool) ready(ctx context.Context) ([]*sandbox.Sandbox, error) {
	all, err := p.List(ctx, map[string]string{LabelPool: "1", LabelSpec: p.hash})
	if err != nil {
		return nil, err
	}
	out := all[:0]
	for _, sb := range all {
		if sb.State == sandbox.StateStarted && sb.Relay == nil {
			// Some providers list without looking for relays (Daytona): ask for this one.
			if got, err := p.Get(ctx, sb.ID); err == nil {
				sb = got
			}
		}
		if sb.State == sandbox.StateStarted && sb.Relay != nil {
			out = append(out, sb)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].CreatedAt.Before(out[j].CreatedAt) })
	return out, nil
}

func (p *Pool) refill() {
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

// Run keeps the pool filled until ctx ends. The pooled sandboxes stay for the next run.
func (p *Pool) Run(ctx context.Context) error {
	if p.cfg.Size <= 0 {
		<-ctx.Done()
		return nil
	}
	t := time.NewTicker(p.cfg.Interval)
	defer t.Stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		p.tend(ctx, &wg)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		case <-p.kick:
		}
	}
}

// tend recycles old and broken pooled sandboxes and starts the creations that bring the pool
// back to its size.
func (p *Pool) tend(ctx context.Context, wg *sync.WaitGroup) {
	all, err := p.List(ctx, map[string]string{LabelPool: "1"})
	if err != nil {
		p.log.Warn("could not list the pool", "err", err)
		return
	}
	ready := 0
	for _, sb := range all {
		stale := sb.Labels[LabelSpec] != p.hash || time.Since(sb.CreatedAt) > p.cfg.MaxAge
		broken := sb.State == sandbox.StateError || sb.State == sandbox.StateStopped || sb.State == sandbox.StateArchived
		if !stale && !broken {
			if sb.State == sandbox.StateStarted {
				ready++
			}
			continue
		}
		// Claimed first, so that no replica hands it out while it goes.
		if ok, err := p.cfg.Claimer.Claim(ctx, sb.ID); err != nil || !ok {
			continue
		}
		p.log.Info("recycling a pooled sandbox", "sandbox_id", sb.ID, "stale", stale, "state", sb.State)
		if err := p.Delete(ctx, sb.ID); err != nil {
			p.log.Warn("could not delete a pooled sandbox", "sandbox_id", sb.ID, "err", err)
		}
	}
	p.mu.Lock()
	need := p.cfg.Size - ready - p.filling
	if time.Now().Before(p.quiet) {
		need = 0
	}
	p.filling += max(need, 0)
	p.mu.Unlock()
	for i := 0; i < need; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() {
				p.mu.Lock()
				p.filling--
				p.mu.Unlock()
			}()
			spec := p.cfg.Spec
			spec.Labels = map[string]string{LabelPool: "1", LabelSpec: p.hash}
			sb, err := p.Provider.Create(ctx, spec)
			if err != nil {
				if !errors.Is(err, context.Canceled) {
					p.log.Warn("could not fill the pool", "err", err)
				}
				return
			}
			p.log.Info("a sandbox is ready in the pool", "sandbox_id", sb.ID)
		}()
	}
}

// Status says how full the pool is.
func (p *Pool) Status(ctx context.Context) (ready, size int, err error) {
	r, err := p.ready(ctx)
	return len(r), p.cfg.Size, err
}

type localClaimer struct {
	mu      sync.Mutex
	claimed map[string]bool
}

func (c *localClaimer) Claim(_ context.Context, id string) (bool, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.claimed[id] {
		return false, nil
	}
	c.claimed[id] = true
	return true, nil
}
