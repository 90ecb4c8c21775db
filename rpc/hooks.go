package rpc

import (
	"context"
	"net/http"
	"time"
)

// Hook is a value that implements one or more of the hook interfaces
// (AttemptHook, BreakerHook). The Transport checks which ones once, when it is
// built, so new hook interfaces can be added without breaking anyone.
type Hook any

// AttemptHook is told about every attempt once it has an outcome, for logging
// and metrics.
type AttemptHook interface {
	OnAttempt(ctx context.Context, a Attempt)
}

// BreakerHook is told when a host's circuit breaker changes state. It runs
// while the breaker is locked: it must not block or send requests.
type BreakerHook interface {
	OnBreakerChange(c BreakerChange)
}

// Attempt describes one attempt of a request. Fields may be added.
type Attempt struct {
	// Request is the attempt's request; read it, do not change it.
	Request *http.Request
	// Host is the breaker's key: the request URL's host.
	Host string
	// Number is 1 for the first attempt and grows with each retry.
	Number int
	// StatusCode is the response status, 0 when Err is set.
	StatusCode int
	// Err is the attempt's error: a network error, an attempt timeout, the
	// context's error or ErrCircuitOpen.
	Err error
	// Duration is how long the attempt took until response headers or error.
	Duration time.Duration
	// Retry says whether another attempt follows, after Wait.
	Retry bool
	// Wait is the delay before the next attempt (backoff or Retry-After).
	Wait time.Duration
	// RetryAfter is the Retry-After the response asked for (before capping), 0 if none.
	RetryAfter time.Duration
	// GiveUp says why a retryable failure is not retried: ErrRetryBudgetExhausted,
	// ErrMaxAttempts, the context's error or ErrCircuitOpen. Nil otherwise.
	GiveUp error
}

// BreakerChange describes a circuit breaker state change.
type BreakerChange struct {
	Host     string
	From, To BreakerState
}

// AttemptFunc adapts a function to AttemptHook.
type AttemptFunc func(ctx context.Context, a Attempt)

// OnAttempt calls f.
func (f AttemptFunc) OnAttempt(ctx context.Context, a Attempt) { f(ctx, a) }

// BreakerFunc adapts a function to BreakerHook.
type BreakerFunc func(c BreakerChange)

// OnBreakerChange calls f.
func (f BreakerFunc) OnBreakerChange(c BreakerChange) { f(c) }
