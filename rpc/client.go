package rpc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/go-integration/patterns/internal/hooks"
	"github.com/go-integration/patterns/internal/ids"
	"github.com/go-integration/patterns/internal/retryafter"
)

// Header names used by the client and the middleware.
const (
	// HeaderIdempotencyKey carries the idempotency key of an unsafe request.
	HeaderIdempotencyKey = "Idempotency-Key"
	// HeaderIdempotentReplayed is set to "true" on a response the
	// idempotency middleware replayed from its store.
	HeaderIdempotentReplayed = "Idempotent-Replayed"
)

// Errors of the client; test them with errors.Is (http.Client wraps them in a *url.Error).
var (
	// ErrCircuitOpen is returned without sending when the host's circuit
	// breaker is open, or half-open with its trial requests already running.
	ErrCircuitOpen = errors.New("rpc: circuit breaker open")
	// ErrRetryBudgetExhausted is wrapped in the last error when a retry was
	// refused because the retry budget is spent; it is also
	// TraceAttemptEndData.GiveUp.
	ErrRetryBudgetExhausted = errors.New("rpc: retry budget exhausted")
	// ErrMaxAttempts is wrapped in the last error when all attempts failed; it
	// is also TraceAttemptEndData.GiveUp.
	ErrMaxAttempts = errors.New("rpc: maximum attempts reached")
)

// Transport is an http.RoundTripper that retries, bounds attempts and breaks
// circuits per host. It is safe for concurrent use. Build it with
// NewTransport, or get an *http.Client with NewClient.
//
// What is retried: network errors, attempt timeouts and the statuses of
// WithRetryStatus (429, 502, 503, 504 by default), for requests whose method
// is idempotent (GET, HEAD, OPTIONS, TRACE, PUT, DELETE) or that carry an
// Idempotency-Key header (POST, PATCH). A request with a body is retried only
// when it has GetBody (http.NewRequest sets it for bytes and strings readers),
// which gives a fresh body for every attempt. The wait before a retry is the
// response's Retry-After (capped by WithMaxRetryAfter) or else the Backoff. A
// retry whose wait would pass the context's deadline is not made: the last
// response or error is returned at once.
type Transport struct {
	cfg      config
	base     http.RoundTripper
	budget   *budget
	breakers *breakers
	attempt  []AttemptTracer

	requests, attempts, retries, rejected, exhausted atomic.Uint64
}

// Stats is a snapshot of a Transport's counters, cumulative since it was
// built. Fields may be added.
type Stats struct {
	Requests        uint64 // calls of RoundTrip
	Attempts        uint64 // attempts sent (breaker refusals not included)
	Retries         uint64 // attempts after the first
	BreakerRejected uint64 // attempts refused by an open breaker (ErrCircuitOpen)
	BreakerOpens    uint64 // times a host's breaker opened
	BudgetExhausted uint64 // retries refused by the retry budget
	Breakers        int    // breakers kept now (gauge)
}

// Stats returns a snapshot of the Transport's counters. It does no I/O.
func (t *Transport) Stats() Stats {
	s := Stats{
		Requests:        t.requests.Load(),
		Attempts:        t.attempts.Load(),
		Retries:         t.retries.Load(),
		BreakerRejected: t.rejected.Load(),
		BudgetExhausted: t.exhausted.Load(),
	}
	if t.breakers != nil {
		s.BreakerOpens = t.breakers.opens.Load()
		s.Breakers = t.breakers.len()
	}
	return s
}

// NewTransport returns a Transport configured by opts.
func NewTransport(opts ...TransportOption) (*Transport, error) {
	cfg := defaultConfig()
	for _, o := range opts {
		if o == nil {
			return nil, fmt.Errorf("%w: nil TransportOption", ErrInvalidOption)
		}
		if err := o.apply(&cfg); err != nil {
			return nil, err
		}
	}
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	t := &Transport{cfg: cfg, base: cfg.base, attempt: hooks.Pick[AttemptTracer](cfg.tracers)}
	if t.base == nil {
		t.base = http.DefaultTransport
	}
	if !cfg.noBudget {
		bc := budgetConfig{ratio: DefaultBudgetRatio, minRate: DefaultBudgetMinRate}
		if cfg.budget != nil {
			bc = *cfg.budget
		}
		t.budget = newBudget(bc.ratio, bc.minRate)
	}
	if !cfg.noBreaker {
		var bc BreakerConfig
		if cfg.breaker != nil {
			bc = *cfg.breaker
		}
		t.breakers = newBreakers(bc, hooks.Pick[BreakerTracer](cfg.tracers))
	}
	return t, nil
}

// NewClient returns an *http.Client whose Transport is NewTransport(opts...).
// It has no Timeout of its own: bound calls with the request's context.
func NewClient(opts ...TransportOption) (*http.Client, error) {
	t, err := NewTransport(opts...)
	if err != nil {
		return nil, err
	}
	return &http.Client{Transport: t}, nil
}

// BreakerState returns the state of host's circuit breaker (host as in
// URL.Host, with the port if the URL has one). Hosts never called are closed.
func (t *Transport) BreakerState(host string) BreakerState {
	if t.breakers == nil {
		return BreakerClosed
	}
	e := t.breakers.lookup(host)
	if e == nil {
		return BreakerClosed
	}
	return e.currentState(context.Background())
}

// CloseIdleConnections closes the idle connections of the base
// RoundTripper, when it has such a method (http.Client.CloseIdleConnections
// calls it).
func (t *Transport) CloseIdleConnections() {
	if ci, ok := t.base.(interface{ CloseIdleConnections() }); ok {
		ci.CloseIdleConnections()
	}
}

// NewIdempotencyKey returns a random UUID (version 4), the default key of
// WithIdempotencyKeys; use it to make keys yourself (for example to keep one
// key across calls your code repeats).
func NewIdempotencyKey() string { return ids.UUID() }

func isSafe(method string) bool {
	switch method {
	case "", http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace:
		return true
	}
	return false
}

func isIdempotent(method string) bool {
	return isSafe(method) || method == http.MethodPut || method == http.MethodDelete
}

func hasBody(req *http.Request) bool {
	return req.Body != nil && req.Body != http.NoBody
}

// RoundTrip sends req, retrying as the Transport is configured. Like every
// RoundTripper it returns a nil error whenever it got a response, whatever
// its status.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx := req.Context()
	if t.cfg.keyGen != nil && !isSafe(req.Method) && req.Header.Get(HeaderIdempotencyKey) == "" {
		// A RoundTripper must not change the caller's request: clone it.
		r2 := req.Clone(ctx)
		r2.Header.Set(HeaderIdempotencyKey, t.cfg.keyGen())
		req = r2
	}
	replayable := !hasBody(req) || req.GetBody != nil
	retryable := replayable && (isIdempotent(req.Method) || req.Header.Get(HeaderIdempotencyKey) != "")

	host := req.URL.Host
	var cb *breakerEntry
	if t.breakers != nil {
		cb = t.breakers.get(host)
	}
	t.requests.Add(1)
	if t.budget != nil {
		t.budget.deposit()
	}
	bodyUsed := false
	defer func() {
		if !bodyUsed && hasBody(req) {
			req.Body.Close()
		}
	}()

	for n := 1; ; n++ {
		areq := req
		actx, cancel := attemptContext(ctx, t.cfg.attemptTO)
		if len(t.attempt) > 0 {
			// The tracers get the attempt's own request, whose headers they
			// may add to, and choose the context it runs in.
			areq = req.Clone(actx)
			tctx := actx
			for _, tr := range t.attempt {
				tctx = tr.TraceAttemptStart(tctx, TraceAttemptStartData{Request: areq, Host: host, Attempt: n})
			}
			if tctx != actx {
				areq = areq.WithContext(tctx)
			}
		} else if actx != ctx || n > 1 {
			// A fresh shallow copy per attempt: the base transport never
			// sees the same *Request twice.
			areq = req.WithContext(actx)
		}
		var done func(error)
		if cb != nil {
			d, err := cb.allow(areq.Context())
			if err != nil {
				cancel()
				t.rejected.Add(1)
				err = fmt.Errorf("%w: %s", ErrCircuitOpen, host)
				t.endAttempt(areq.Context(), TraceAttemptEndData{Host: host, Attempt: n, Err: err, GiveUp: ErrCircuitOpen})
				return nil, err
			}
			done = d
		}
		if n > 1 && hasBody(req) {
			body, err := req.GetBody()
			if err != nil {
				cancel()
				if done != nil {
					done(errExcluded)
				}
				err = fmt.Errorf("rpc: replaying request body: %w", err)
				t.endAttempt(areq.Context(), TraceAttemptEndData{Host: host, Attempt: n, Err: err})
				return nil, err
			}
			areq.Body = body
		}
		bodyUsed = true

		t.attempts.Add(1)
		if n > 1 {
			t.retries.Add(1)
		}
		start := time.Now()
		resp, err := t.base.RoundTrip(areq)
		a := TraceAttemptEndData{Host: host, Attempt: n, Err: err, Duration: time.Since(start)}

		// Classify the outcome for the breaker and for retrying.
		var outcome error
		retry := false
		switch {
		case err != nil:
			if ctx.Err() != nil {
				outcome = errExcluded // the caller gave up; the host is not to blame
			} else {
				outcome = errAttemptFailed
				retry = true
			}
		default:
			a.StatusCode = resp.StatusCode
			if resp.StatusCode >= 500 {
				outcome = errAttemptFailed
			}
			retry = t.cfg.retryStatus[resp.StatusCode]
		}
		if done != nil {
			done(outcome)
		}

		if retry && retryable {
			var ra time.Duration
			hasRA := false
			if resp != nil {
				ra, hasRA = retryafter.Parse(resp.Header.Get("Retry-After"), time.Now())
			}
			if hasRA {
				a.RetryAfter = ra
				a.Wait = min(ra, t.cfg.maxRetryAfter)
			} else {
				a.Wait = t.cfg.backoff.Delay(n)
			}
			switch {
			case n >= t.cfg.maxAttempts:
				a.GiveUp = ErrMaxAttempts
			case ctx.Err() != nil:
				a.GiveUp = ctx.Err()
			case deadlineBefore(ctx, a.Wait):
				a.GiveUp = context.DeadlineExceeded
			case t.budget != nil && !t.budget.withdraw():
				a.GiveUp = ErrRetryBudgetExhausted
				t.exhausted.Add(1)
			default:
				a.Retry = true
			}
			if !a.Retry {
				a.Wait = 0
			}
		}
		t.endAttempt(areq.Context(), a)

		if !a.Retry {
			if err != nil {
				cancel()
				if errors.Is(a.GiveUp, ErrMaxAttempts) || errors.Is(a.GiveUp, ErrRetryBudgetExhausted) {
					return nil, fmt.Errorf("%w (after %d attempts: %w)", err, n, a.GiveUp)
				}
				return nil, err
			}
			if t.cfg.attemptTO > 0 {
				resp.Body = &cancelBody{ReadCloser: resp.Body, cancel: cancel}
			}
			return resp, nil
		}
		if resp != nil {
			discard(resp.Body)
		}
		cancel()
		if err := sleep(ctx, a.Wait); err != nil {
			return nil, fmt.Errorf("rpc: waiting to retry %s %s: %w", req.Method, host, err)
		}
	}
}

func (t *Transport) endAttempt(ctx context.Context, a TraceAttemptEndData) {
	for _, tr := range t.attempt {
		tr.TraceAttemptEnd(ctx, a)
	}
}

// attemptContext bounds one attempt by d (when positive); the caller calls
// cancel once the attempt's response body is closed or discarded.
func attemptContext(ctx context.Context, d time.Duration) (context.Context, func()) {
	if d <= 0 {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, d)
}

// deadlineBefore reports whether ctx ends within d.
func deadlineBefore(ctx context.Context, d time.Duration) bool {
	dl, ok := ctx.Deadline()
	return ok && time.Until(dl) < d
}

func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-tm.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// discard reads a little of a response body we do not return, so its
// connection can be reused, and closes it.
func discard(rc io.ReadCloser) {
	_, _ = io.CopyN(io.Discard, rc, 64<<10)
	rc.Close()
}

// cancelBody releases the attempt's context when the body is closed.
type cancelBody struct {
	io.ReadCloser
	cancel func()
}

func (b *cancelBody) Close() error {
	err := b.ReadCloser.Close()
	b.cancel()
	return err
}
