package middleware

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/go-integration/patterns/broker"
	"github.com/go-integration/patterns/internal/backoff"
)

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

// TraceRetryData describes one failed attempt inside Retry.
type TraceRetryData struct {
	MessageID string
	Topic     string
	Attempt   int   // the attempt that failed, from 1
	Err       error // its error
	// Wait is the backoff before the next attempt; 0 when GaveUp.
	Wait time.Duration
	// GaveUp: no attempt follows (a broker.Permanent error, the attempts or
	// the elapsed time used up, or the context done); Retry returns a
	// *RetryError.
	GaveUp bool
}

// RetryTracer traces Retry (installed with WithTracer). TraceRetry is a
// point event called after each failed attempt, before the backoff, in the
// handler's goroutine; it must not block. Successful attempts are not
// traced: the adapter's process tracer sees the delivery's outcome.
type RetryTracer interface {
	TraceRetry(ctx context.Context, data TraceRetryData)
}

// Retry returns middleware that calls the handler again, after a backoff
// with full jitter (internal/backoff), while it fails, up to WithMaxAttempts
// attempts (default 5) and, with WithMaxElapsed, that much time since the
// first attempt. A broker.Permanent error or a done context stops at once.
// When it gives up it returns a *RetryError, so the broker redelivers or
// dead-letters per its own policy. A bad option is an error wrapping
// ErrInvalidOption.
func Retry(opts ...RetryOption) (broker.Middleware, error) {
	c := retryConfig{
		maxAttempts: DefaultMaxAttempts,
		backoff:     backoff.Policy{Min: DefaultBackoffMin, Max: DefaultBackoffMax},
	}
	for _, o := range opts {
		if o == nil {
			c.errs = append(c.errs, errors.New("nil option"))
			continue
		}
		o.applyRetry(&c)
	}
	if err := invalid("Retry", c.errs); err != nil {
		return nil, err
	}
	return func(next broker.Handler) broker.Handler {
		return func(ctx context.Context, m broker.Message) error {
			start := time.Now()
			for attempt := 1; ; attempt++ {
				err := next(ctx, m)
				if err == nil {
					return nil
				}
				gaveUp := broker.IsPermanent(err) || attempt >= c.maxAttempts ||
					(c.maxElapsed > 0 && time.Since(start) >= c.maxElapsed) || ctx.Err() != nil
				var wait time.Duration
				if !gaveUp {
					wait = c.backoff.Wait(attempt)
				}
				for _, t := range c.tracers {
					t.TraceRetry(ctx, TraceRetryData{MessageID: m.ID, Topic: m.Topic, Attempt: attempt, Err: err, Wait: wait, GaveUp: gaveUp})
				}
				if gaveUp {
					if ctx.Err() != nil && !errors.Is(err, ctx.Err()) {
						err = errors.Join(err, ctx.Err())
					}
					return &RetryError{Attempts: attempt, Err: err}
				}
				t := time.NewTimer(wait)
				select {
				case <-t.C:
				case <-ctx.Done():
					t.Stop()
					return &RetryError{Attempts: attempt, Err: errors.Join(err, ctx.Err())}
				}
			}
		}
	}, nil
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
