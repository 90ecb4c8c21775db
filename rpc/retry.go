package rpc

import (
	"fmt"
	"sync"
	"time"

	"github.com/go-integration/patterns/internal/backoff"
)

// Backoff gives the wait before a retry when the server did not say how long
// to wait. retry is 1 before the second attempt, 2 before the third, and so on.
type Backoff interface {
	Delay(retry int) time.Duration
}

// BackoffFunc adapts a function to Backoff.
type BackoffFunc func(retry int) time.Duration

// Delay calls f.
func (f BackoffFunc) Delay(retry int) time.Duration { return f(retry) }

// ExponentialBackoff waits a random time between 0 and min(Max, Base·2^(retry-1))
// ("full jitter"), so clients that failed together do not retry together.
type ExponentialBackoff struct {
	Base time.Duration // first ceiling; 100ms if zero
	Max  time.Duration // largest ceiling; 5s if zero
}

func (b ExponentialBackoff) policy() backoff.Policy {
	p := backoff.Policy{Min: b.Base, Max: b.Max}
	if p.Min <= 0 {
		p.Min = DefaultBaseDelay
	}
	if p.Max <= 0 {
		p.Max = DefaultMaxDelay
	}
	p.Max = max(p.Max, p.Min)
	return p
}

// validate refuses negative durations and a Max below Base.
func (b ExponentialBackoff) validate() error {
	if b.Base < 0 || b.Max < 0 {
		return fmt.Errorf("negative duration")
	}
	if b.Base > 0 && b.Max > 0 && b.Max < b.Base {
		return fmt.Errorf("maximum %v below base %v", b.Max, b.Base)
	}
	return nil
}

// Delay returns the jittered wait before retry.
func (b ExponentialBackoff) Delay(retry int) time.Duration {
	return b.policy().Wait(max(retry, 1))
}

// budget is a token bucket of retries: each first attempt deposits ratio
// tokens, time deposits minRate tokens per second, each retry takes one.
type budget struct {
	mu      sync.Mutex
	ratio   float64
	minRate float64
	cap     float64
	balance float64
	last    time.Time
}

func newBudget(ratio, minRate float64) *budget {
	c := 10 * minRate
	if c < 10 {
		c = 10
	}
	return &budget{ratio: ratio, minRate: minRate, cap: c, balance: min(minRate, c), last: time.Now()}
}

func (b *budget) refill(now time.Time) {
	if el := now.Sub(b.last); el > 0 {
		b.balance += b.minRate * el.Seconds()
		b.last = now
	}
	if b.balance > b.cap {
		b.balance = b.cap
	}
}

// deposit records a first attempt.
func (b *budget) deposit() {
	b.mu.Lock()
	b.balance += b.ratio
	b.refill(time.Now())
	b.mu.Unlock()
}

// withdraw takes one retry, reporting false when the budget is spent.
func (b *budget) withdraw() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.refill(time.Now())
	if b.balance >= 1 {
		b.balance--
		return true
	}
	return false
}
