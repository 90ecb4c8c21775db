package rpc

import (
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
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

// Delay returns the jittered wait before retry.
func (b ExponentialBackoff) Delay(retry int) time.Duration {
	base, maxD := b.Base, b.Max
	if base <= 0 {
		base = DefaultBaseDelay
	}
	if maxD <= 0 {
		maxD = DefaultMaxDelay
	}
	ceil := maxD
	if retry < 1 {
		retry = 1
	}
	if retry <= 62 {
		if d := base << (retry - 1); d > 0 && d < maxD && d>>(retry-1) == base {
			ceil = d
		}
	}
	return time.Duration(rand.Int64N(int64(ceil) + 1))
}

// ParseRetryAfter reads a Retry-After header value, either delay-seconds
// ("120") or an HTTP date ("Wed, 21 Oct 2015 07:28:00 GMT"), relative to now.
// A date in the past gives 0. ok is false when the value is empty or invalid.
func ParseRetryAfter(v string, now time.Time) (d time.Duration, ok bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false
	}
	if v[0] >= '0' && v[0] <= '9' {
		secs, err := strconv.ParseInt(v, 10, 64)
		if err != nil || secs < 0 {
			return 0, false
		}
		if secs > int64(24*time.Hour/time.Second)*365 {
			secs = int64(24*time.Hour/time.Second) * 365
		}
		return time.Duration(secs) * time.Second, true
	}
	t, err := http.ParseTime(v)
	if err != nil {
		return 0, false
	}
	if d := t.Sub(now); d > 0 {
		return d, true
	}
	return 0, true
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
