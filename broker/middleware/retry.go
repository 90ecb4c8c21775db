package middleware

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/go-integration/patterns/broker"
)

// RetryPolicy configures Retry. Zero fields take the documented defaults.
type RetryPolicy struct {
	// MaxAttempts bounds the calls of the handler per delivery, the first
	// included. Default 5.
	MaxAttempts int
	// InitialInterval is the backoff cap before the second attempt. Default 100 ms.
	InitialInterval time.Duration
	// MaxInterval caps any single backoff. Default 10 s.
	MaxInterval time.Duration
	// Multiplier grows the cap after each attempt. Default 2.
	Multiplier float64
	// MaxElapsed stops retrying once this much time has passed since the
	// first attempt. Default 0: no limit besides MaxAttempts.
	MaxElapsed time.Duration
}

func (p RetryPolicy) withDefaults() RetryPolicy {
	if p.MaxAttempts <= 0 {
		p.MaxAttempts = 5
	}
	if p.InitialInterval <= 0 {
		p.InitialInterval = 100 * time.Millisecond
	}
	if p.MaxInterval <= 0 {
		p.MaxInterval = 10 * time.Second
	}
	if p.Multiplier < 1 {
		p.Multiplier = 2
	}
	return p
}

// Backoff returns the wait before attempt n+1 after n failed attempts:
// a uniformly random duration in [0, min(MaxInterval, InitialInterval *
// Multiplier^(n-1))] ("full jitter"), so many failing consumers spread out.
func (p RetryPolicy) Backoff(n int) time.Duration {
	p = p.withDefaults()
	ceiling := float64(p.InitialInterval)
	for i := 1; i < n && ceiling < float64(p.MaxInterval); i++ {
		ceiling *= p.Multiplier
	}
	ceiling = min(ceiling, float64(p.MaxInterval))
	return time.Duration(rand.Int64N(int64(ceiling) + 1))
}

// RetryError is returned by Retry when it gave up: it says how often the
// handler ran and wraps the last error.
type RetryError struct {
	Attempts int
	Err      error
}

func (e *RetryError) Error() string {
	return fmt.Sprintf("after %d attempts: %v", e.Attempts, e.Err)
}

func (e *RetryError) Unwrap() error { return e.Err }

// Retry calls the handler again, after a jittered exponential backoff, while
// it fails, up to the policy's attempts and elapsed time. A broker.Permanent
// error or a done context stops at once. When it gives up it returns a
// *RetryError, so the broker redelivers or dead-letters per its own policy.
func Retry(p RetryPolicy) broker.Middleware {
	p = p.withDefaults()
	return func(next broker.Handler) broker.Handler {
		return func(ctx context.Context, m broker.Message) error {
			start := time.Now()
			var err error
			for attempt := 1; ; attempt++ {
				if err = next(ctx, m); err == nil {
					return nil
				}
				if broker.IsPermanent(err) || attempt >= p.MaxAttempts ||
					(p.MaxElapsed > 0 && time.Since(start) >= p.MaxElapsed) {
					return &RetryError{Attempts: attempt, Err: err}
				}
				t := time.NewTimer(p.Backoff(attempt))
				select {
				case <-t.C:
				case <-ctx.Done():
					t.Stop()
					return &RetryError{Attempts: attempt, Err: errors.Join(err, ctx.Err())}
				}
			}
		}
	}
}

// attempts is how often the handler ran for this delivery: the retries that
// Retry made, or 1 without Retry (then the broker's count, m.Attempt).
func attempts(m broker.Message, err error) int {
	var re *RetryError
	if errors.As(err, &re) {
		return re.Attempts
	}
	return max(m.Attempt, 1)
}
