package rpc

import (
	"container/list"
	"context"
	"errors"
	"sync"
	"sync/atomic"

	"github.com/sony/gobreaker/v2"
)

// BreakerState is the state of a host's circuit breaker.
type BreakerState int

// Breaker states.
const (
	// BreakerClosed lets every request through and counts failures.
	BreakerClosed BreakerState = iota
	// BreakerHalfOpen lets a few trial requests through after OpenFor.
	BreakerHalfOpen
	// BreakerOpen rejects requests at once with ErrCircuitOpen.
	BreakerOpen
)

// String returns "closed", "half-open" or "open".
func (s BreakerState) String() string {
	switch s {
	case BreakerClosed:
		return "closed"
	case BreakerHalfOpen:
		return "half-open"
	case BreakerOpen:
		return "open"
	}
	return "unknown"
}

func fromGobreaker(s gobreaker.State) BreakerState {
	switch s {
	case gobreaker.StateHalfOpen:
		return BreakerHalfOpen
	case gobreaker.StateOpen:
		return BreakerOpen
	}
	return BreakerClosed
}

// errExcluded marks an outcome that counts neither as success nor as failure
// (the caller cancelled).
var errExcluded = errors.New("rpc: excluded from breaker counts")

// errAttemptFailed marks an attempt that counts as a failure.
var errAttemptFailed = errors.New("rpc: attempt failed")

// breakers keeps one breaker per host: an LRU of at most cfg.MaxHosts closed
// breakers. Open and half-open breakers are never evicted (evicting one would
// let requests through to a failing host).
type breakers struct {
	cfg     BreakerConfig
	tracers []BreakerTracer
	opens   atomic.Uint64

	mu  sync.Mutex
	m   map[string]*breakerEntry
	lru list.List // of *breakerEntry, most recently used first
}

type breakerEntry struct {
	b     *breakers
	host  string
	cb    *gobreaker.TwoStepCircuitBreaker[struct{}]
	state atomic.Int32  // BreakerState, kept by OnStateChange
	el    *list.Element // nil once evicted; guarded by breakers.mu

	// With tracers, mu serializes the calls into cb so that the changes a
	// call causes (collected by OnStateChange) are traced with the context
	// of the request that caused them, after the breaker is unlocked.
	mu      sync.Mutex
	changes []TraceBreakerChangeData
}

func newBreakers(cfg BreakerConfig, tracers []BreakerTracer) *breakers {
	if cfg.Failures == 0 {
		cfg.Failures = DefaultBreakerFails
	}
	if cfg.OpenFor == 0 {
		cfg.OpenFor = DefaultBreakerOpenFor
	}
	if cfg.HalfOpenRequests == 0 {
		cfg.HalfOpenRequests = 1
	}
	if cfg.MaxHosts == 0 {
		cfg.MaxHosts = DefaultBreakerMaxHosts
	}
	return &breakers{cfg: cfg, tracers: tracers, m: make(map[string]*breakerEntry)}
}

// lookup returns host's breaker, or nil when there is none; it does not
// count as a use.
func (b *breakers) lookup(host string) *breakerEntry {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.m[host]
}

// len returns how many breakers are kept.
func (b *breakers) len() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.m)
}

// get returns host's breaker, creating it if needed, and marks it as the
// most recently used.
func (b *breakers) get(host string) *breakerEntry {
	b.mu.Lock()
	defer b.mu.Unlock()
	if e, ok := b.m[host]; ok {
		b.lru.MoveToFront(e.el)
		return e
	}
	e := &breakerEntry{b: b, host: host}
	fails := b.cfg.Failures
	st := gobreaker.Settings{
		Name:        host,
		MaxRequests: b.cfg.HalfOpenRequests,
		Interval:    b.cfg.Interval,
		Timeout:     b.cfg.OpenFor,
		ReadyToTrip: func(c gobreaker.Counts) bool { return c.ConsecutiveFailures >= fails },
		IsExcluded:  func(err error) bool { return errors.Is(err, errExcluded) },
		OnStateChange: func(name string, from, to gobreaker.State) {
			e.state.Store(int32(fromGobreaker(to)))
			if to == gobreaker.StateOpen {
				b.opens.Add(1)
				b.readopt(e)
			}
			if len(b.tracers) > 0 { // e.mu is held: see breakerEntry
				e.changes = append(e.changes, TraceBreakerChangeData{Host: name, From: fromGobreaker(from), To: fromGobreaker(to)})
			}
		},
	}
	e.cb = gobreaker.NewTwoStepCircuitBreaker[struct{}](st)
	b.insert(e)
	return e
}

// allow asks the breaker for an attempt; done reports its outcome. ctx is
// the attempt's: the changes either causes are traced with it.
func (e *breakerEntry) allow(ctx context.Context) (done func(error), err error) {
	if len(e.b.tracers) == 0 {
		return e.cb.Allow()
	}
	e.mu.Lock()
	d, err := e.cb.Allow()
	e.traceUnlock(ctx)
	if err != nil {
		return nil, err
	}
	return func(outcome error) {
		e.mu.Lock()
		d(outcome)
		e.traceUnlock(ctx)
	}, nil
}

// currentState returns the breaker's state; reading it may move an open
// breaker to half-open, traced with ctx.
func (e *breakerEntry) currentState(ctx context.Context) BreakerState {
	if len(e.b.tracers) == 0 {
		return fromGobreaker(e.cb.State())
	}
	e.mu.Lock()
	s := e.cb.State()
	e.traceUnlock(ctx)
	return fromGobreaker(s)
}

// traceUnlock takes the changes collected under e.mu, unlocks it and traces
// them with ctx.
func (e *breakerEntry) traceUnlock(ctx context.Context) {
	changes := e.changes
	e.changes = nil
	e.mu.Unlock()
	for _, c := range changes {
		for _, t := range e.b.tracers {
			t.TraceBreakerChange(ctx, c)
		}
	}
}

// readopt puts back an evicted breaker that has just opened (a request that
// got it before the eviction failed): an open breaker is always kept.
func (b *breakers) readopt(e *breakerEntry) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if e.el != nil {
		return
	}
	if cur, ok := b.m[e.host]; ok {
		b.lru.Remove(cur.el)
		cur.el = nil
	}
	b.insert(e)
}

// insert adds e as the most recently used breaker, then evicts the least
// recently used closed breakers beyond MaxHosts. b.mu must be held.
func (b *breakers) insert(e *breakerEntry) {
	e.el = b.lru.PushFront(e)
	b.m[e.host] = e
	excess := b.lru.Len() - b.cfg.MaxHosts
	for el := b.lru.Back(); excess > 0 && el != nil; {
		prev := el.Prev()
		old := el.Value.(*breakerEntry)
		if old != e && BreakerState(old.state.Load()) == BreakerClosed {
			b.lru.Remove(el)
			old.el = nil
			delete(b.m, old.host)
			excess--
		}
		el = prev
	}
}
