package rpc

import (
	"errors"
	"sync"

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

type breakers struct {
	cfg   BreakerConfig
	hooks []BreakerHook
	m     sync.Map // host -> *gobreaker.TwoStepCircuitBreaker[struct{}]
}

func newBreakers(cfg BreakerConfig, hooks []BreakerHook) *breakers {
	if cfg.Failures == 0 {
		cfg.Failures = DefaultBreakerFails
	}
	if cfg.OpenFor == 0 {
		cfg.OpenFor = DefaultBreakerOpenFor
	}
	if cfg.HalfOpenRequests == 0 {
		cfg.HalfOpenRequests = 1
	}
	return &breakers{cfg: cfg, hooks: hooks}
}

func (b *breakers) get(host string) *gobreaker.TwoStepCircuitBreaker[struct{}] {
	if cb, ok := b.m.Load(host); ok {
		return cb.(*gobreaker.TwoStepCircuitBreaker[struct{}])
	}
	fails := b.cfg.Failures
	st := gobreaker.Settings{
		Name:        host,
		MaxRequests: b.cfg.HalfOpenRequests,
		Interval:    b.cfg.Interval,
		Timeout:     b.cfg.OpenFor,
		ReadyToTrip: func(c gobreaker.Counts) bool { return c.ConsecutiveFailures >= fails },
		IsExcluded:  func(err error) bool { return errors.Is(err, errExcluded) },
	}
	if len(b.hooks) > 0 {
		hooks := b.hooks
		st.OnStateChange = func(name string, from, to gobreaker.State) {
			c := BreakerChange{Host: name, From: fromGobreaker(from), To: fromGobreaker(to)}
			for _, h := range hooks {
				h.OnBreakerChange(c)
			}
		}
	}
	cb, _ := b.m.LoadOrStore(host, gobreaker.NewTwoStepCircuitBreaker[struct{}](st))
	return cb.(*gobreaker.TwoStepCircuitBreaker[struct{}])
}
