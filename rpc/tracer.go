package rpc

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/go-integration/patterns/internal/hooks"
)

// AttemptTracer traces every attempt a Transport makes, in the style of
// pgx's tracers: TraceAttemptStart runs before the attempt is sent and the
// context it returns is the one the attempt runs in (its request carries it)
// and TraceAttemptEnd receives; TraceAttemptEnd runs once the attempt has an
// outcome (response headers, error, or the breaker's refusal).
type AttemptTracer interface {
	TraceAttemptStart(ctx context.Context, data TraceAttemptStartData) context.Context
	TraceAttemptEnd(ctx context.Context, data TraceAttemptEndData)
}

// BreakerTracer is told when a host's circuit breaker changes state, with
// the context of the attempt whose admission or outcome caused the change
// (the one TraceAttemptStart returned), or context.Background when
// Transport.BreakerState found an open breaker ready to half-open. It is
// called after the breaker is unlocked.
type BreakerTracer interface {
	TraceBreakerChange(ctx context.Context, data TraceBreakerChangeData)
}

// IdempotencyTracer is told the outcome of every request the Idempotency
// middleware handles with a key.
type IdempotencyTracer interface {
	TraceIdempotency(ctx context.Context, data TraceIdempotencyData)
}

// TraceAttemptStartData describes an attempt about to be sent. Fields may be
// added.
type TraceAttemptStartData struct {
	// Request is the attempt's own request (a clone of the caller's, made
	// for tracers): a tracer may add headers to it, such as trace context,
	// and they are sent. Do not change anything else.
	Request *http.Request
	// Host is the breaker's key: the request URL's host.
	Host string
	// Attempt is 1 for the first attempt and grows with each retry.
	Attempt int
}

// TraceAttemptEndData describes the outcome of an attempt. Fields may be
// added.
type TraceAttemptEndData struct {
	Host    string
	Attempt int
	// StatusCode is the response status, 0 when Err is set.
	StatusCode int
	// Err is the attempt's error: a network error, an attempt timeout, the
	// context's error or ErrCircuitOpen (then nothing was sent).
	Err error
	// Duration is how long the attempt took until response headers or error.
	Duration time.Duration
	// Retry says whether another attempt follows, after Wait.
	Retry bool
	// Wait is the delay before the next attempt (backoff or Retry-After).
	Wait time.Duration
	// RetryAfter is the Retry-After the response asked for (before capping),
	// 0 if none.
	RetryAfter time.Duration
	// GiveUp says why a retryable failure is not retried:
	// ErrRetryBudgetExhausted, ErrMaxAttempts, the context's error or
	// ErrCircuitOpen. Nil otherwise.
	GiveUp error
}

// TraceBreakerChangeData describes a circuit breaker state change. Fields
// may be added.
type TraceBreakerChangeData struct {
	Host     string
	From, To BreakerState
}

// IdempotencyOutcome is what the Idempotency middleware did with a request.
type IdempotencyOutcome int

// Outcomes of the Idempotency middleware.
const (
	// IdempotencyStored: the request claimed its key, the handler ran and
	// its response was stored for replay.
	IdempotencyStored IdempotencyOutcome = iota
	// IdempotencyReleased: the handler ran (or panicked) with a response not
	// worth keeping (WithStoreStatus); the key was released for a retry.
	IdempotencyReleased
	// IdempotencyReplayed: the key's stored response was replayed.
	IdempotencyReplayed
	// IdempotencyMismatch: the key was used before with another payload (422).
	IdempotencyMismatch
	// IdempotencyInProgress: the key's first request still runs (409).
	IdempotencyInProgress
	// IdempotencyStale: the handler outlived the lock timeout and another
	// request claimed the key; this response went to its client but was not
	// stored (the store refused it with ErrStaleClaim).
	IdempotencyStale
	// IdempotencyStoreFailed: the store failed: Begin (503, the handler did
	// not run) or storing the response (the key was released).
	IdempotencyStoreFailed
)

// String returns the outcome's name ("stored", "replayed", ...).
func (o IdempotencyOutcome) String() string {
	switch o {
	case IdempotencyStored:
		return "stored"
	case IdempotencyReleased:
		return "released"
	case IdempotencyReplayed:
		return "replayed"
	case IdempotencyMismatch:
		return "mismatch"
	case IdempotencyInProgress:
		return "in-progress"
	case IdempotencyStale:
		return "stale"
	case IdempotencyStoreFailed:
		return "store-failed"
	}
	return "unknown"
}

// TraceIdempotencyData describes what the Idempotency middleware did with a
// request that carried a valid key. Fields may be added.
type TraceIdempotencyData struct {
	// Key is the request's Idempotency-Key; Scope its caller (WithScope).
	Key, Scope string
	Outcome    IdempotencyOutcome
	// StatusCode is the status the client got.
	StatusCode int
	// Err is the store's error for IdempotencyStale and IdempotencyStoreFailed.
	Err error
}

// WithTracer adds a tracer: a value implementing AttemptTracer and/or
// BreakerTracer for a Transport, IdempotencyTracer for the Idempotency
// middleware. It may be given several times; tracers are called in that
// order, synchronously, and must not block. A value implementing none of the
// interfaces the constructor uses is ErrInvalidOption, so a misspelt method
// is not a silent no-op.
func WithTracer(t any) Option { return tracerOption{t} }

type tracerOption struct{ t any }

func (o tracerOption) apply(c *config) error {
	if err := hooks.Check(o.t, "rpc.AttemptTracer, rpc.BreakerTracer", hooks.Is[AttemptTracer](), hooks.Is[BreakerTracer]()); err != nil {
		return fmt.Errorf("%w: WithTracer: %v", ErrInvalidOption, err)
	}
	c.tracers = append(c.tracers, o.t)
	return nil
}

func (o tracerOption) applyIdem(c *idemConfig) error {
	if err := hooks.Check(o.t, "rpc.IdempotencyTracer", hooks.Is[IdempotencyTracer]()); err != nil {
		return fmt.Errorf("%w: WithTracer: %v", ErrInvalidOption, err)
	}
	c.tracers = append(c.tracers, o.t.(IdempotencyTracer))
	return nil
}
