// Package rpc holds the building blocks of synchronous request-response over
// HTTP: a resilient client and server-side idempotency.
//
// # Client
//
// Transport is an http.RoundTripper (NewClient wraps it in an *http.Client)
// that:
//
//   - retries network errors, attempt timeouts and 429/502/503/504 responses
//     with exponential backoff and full jitter, or after the response's
//     Retry-After (seconds or HTTP date, capped);
//   - retries only requests that are safe to repeat: GET, HEAD, OPTIONS,
//     TRACE, PUT and DELETE, and POST or PATCH when they carry an
//     Idempotency-Key (WithIdempotencyKeys adds one, the same for every retry
//     of a call); bodies are replayed with Request.GetBody;
//   - bounds each attempt (WithAttemptTimeout) and the whole call (the
//     request's context: no retry starts whose wait would pass its deadline);
//   - keeps a circuit breaker per host (github.com/sony/gobreaker/v2) that
//     fails fast with ErrCircuitOpen; a caller's cancellation never counts as
//     the host's failure; at most BreakerConfig.MaxHosts closed breakers are
//     kept (least recently used dropped), open ones always;
//   - spends retries from a budget, so during an outage retries add at most a
//     fraction (20% by default) to the load;
//   - traces every attempt (TraceAttemptStart, with the attempt's own
//     request for injecting trace headers, and TraceAttemptEnd with the
//     outcome) and every breaker change to tracers installed with
//     WithTracer, and counts attempts, retries, breaker opens and refused
//     retries in Stats.
//
// # Server
//
// Idempotency is middleware implementing the IETF Idempotency-Key draft:
// the first request with a key runs and its response is stored; retries
// replay it (Idempotent-Replayed: true); a key reused with another payload
// gets 422, one still running 409, a missing key 400 (problem+json). Keys
// are scoped per caller (WithScope) and expire (24h by default). Stores:
// MemoryStore here and rpc/pgstore (PostgreSQL, safe for many servers);
// rpc/rpctest checks other implementations. An IdempotencyTracer is told
// every outcome (stored, replayed, in progress, stale, ...).
//
// # Options
//
// NewTransport and NewClient take TransportOptions, Idempotency takes
// IdempotencyOptions; WithTracer is an Option, both. A bad option fails the
// constructor with an error wrapping ErrInvalidOption.
//
// Request-reply over RabbitMQ lives in rpc/amqprpc.
package rpc
