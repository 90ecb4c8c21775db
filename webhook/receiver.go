package webhook

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"
)

// Defaults of a Receiver.
const (
	DefaultMaxBodyBytes = 1 << 20
	DefaultDedupLease   = 5 * time.Minute
	DefaultDedupKeep    = 72 * time.Hour
)

// Event is a verified webhook request. Under WithUnsignedCloudEvents it is
// an unsigned CloudEvent: ID is the CloudEvent's id and Timestamp is zero.
type Event struct {
	// ID is the webhook-id header: the message ID, the same on every attempt.
	ID string
	// Timestamp is the webhook-timestamp header of this attempt.
	Timestamp time.Time
	// Body is the raw request body, exactly as signed.
	Body []byte
	// Header is the request's header.
	Header http.Header
	// CloudEvent is the request's CloudEvent, in either content mode of
	// the CloudEvents HTTP binding, checked (required attributes present,
	// specversion 1.0); nil when the request is not a CloudEvent. In
	// structured mode Body is the JSON event and CloudEvent.Data the data
	// in it; in binary mode both are the body.
	CloudEvent *CloudEvent
}

type eventKey struct{}

// EventFromContext returns the verified Event that Receiver.Middleware put in
// the request's context.
func EventFromContext(ctx context.Context) (Event, bool) {
	e, ok := ctx.Value(eventKey{}).(Event)
	return e, ok
}

// Receiver is the receiving side: an http.Handler middleware that reads the
// raw body under a size limit, verifies it, rejects replays of a webhook-id
// and hands the event on. It answers:
//
//	413 body larger than the limit
//	400 a header is missing or the timestamp is not a number, or the request
//	    is a CloudEvent that cannot be accepted (ErrInvalidCloudEvent)
//	401 timestamp outside tolerance or no matching signature
//	200 the ID was already handled successfully (the handler is not called)
//	409 a request with the same ID is being handled right now
//	503 the dedup store failed
//
// and otherwise whatever the handler answers. The ID is remembered as handled
// only when the handler answered 2xx; otherwise it is forgotten so the
// sender's retry is handled again.
//
// A request that is a CloudEvent (Content-Type application/cloudevents+json,
// or ce-* headers) is also read as one, after its signature is verified:
// Event.CloudEvent has its attributes and data. Without signatures, see
// WithUnsignedCloudEvents.
//
// A handler that outlives the dedup lease (WithDedupTimes) loses its claim
// once another request with the ID arrives: that request is handled too. The
// late first handler then neither marks the ID handled nor forgets it (the
// store refuses with ErrStaleClaim, which is logged and traced as a store
// error); the ID's state is the newer request's.
//
// Requests are traced with WithTracer (ReceiveTracer around each request,
// RejectTracer for each rejection, StoreErrorTracer); dedup store failures
// are also logged (WithLogger). Stats counts them.
type Receiver struct {
	verifier *Verifier
	cfg      receiverConfig
	tr       receiverTracers
	stats    receiverCounters
}

type receiverConfig struct {
	common
	dedup     DedupStore
	withDedup bool
	noDedup   bool
	maxBody   int64
	lease     time.Duration
	keep      time.Duration
	// unsignedCE: no Verifier; only CloudEvents, deduplicated on source and id.
	unsignedCE bool
}

// WithMaxBodyBytes sets the largest body accepted; larger ones get 413.
// Positive; default DefaultMaxBodyBytes (1 MiB).
func WithMaxBodyBytes(n int64) ReceiverOption {
	return receiverOpt(func(c *receiverConfig) error {
		if n <= 0 {
			return optionErrorf("webhook: WithMaxBodyBytes(%d): must be positive", n)
		}
		c.maxBody = n
		return nil
	})
}

// WithDedup sets the store that remembers handled IDs. Default a MemoryDedup
// of its own; use a shared store (pgstore.Dedup) when several processes
// receive. Nil is refused: WithoutDedup turns replay protection off.
func WithDedup(s DedupStore) ReceiverOption {
	return receiverOpt(func(c *receiverConfig) error {
		if s == nil {
			return optionErrorf("webhook: WithDedup(nil) (use WithoutDedup)")
		}
		c.dedup, c.withDedup = s, true
		return nil
	})
}

// WithoutDedup turns replay protection off: every verified request reaches
// the handler, retries and replays within the tolerance included. For
// handlers that are idempotent on their own.
func WithoutDedup() ReceiverOption {
	return receiverOpt(func(c *receiverConfig) error { c.noDedup = true; return nil })
}

// WithDedupTimes sets how long an ID is claimed while its handler runs (lease,
// default DefaultDedupLease: keep it above the slowest handler, or a retry
// may be handled a second time) and how long a handled ID is remembered (keep,
// default DefaultDedupKeep: longer than a sender's whole retry schedule).
// Both positive.
func WithDedupTimes(lease, keep time.Duration) ReceiverOption {
	return receiverOpt(func(c *receiverConfig) error {
		if lease <= 0 || keep <= 0 {
			return optionErrorf("webhook: WithDedupTimes(%v, %v): both must be positive", lease, keep)
		}
		c.lease, c.keep = lease, keep
		return nil
	})
}

// NewReceiver returns a Receiver that verifies with v. A nil v (unless
// WithUnsignedCloudEvents, which requires it), or an option it cannot
// accept, gives an error wrapping ErrInvalidOption that names it.
func NewReceiver(v *Verifier, opts ...ReceiverOption) (*Receiver, error) {
	c := receiverConfig{common: defaultCommon(), maxBody: DefaultMaxBodyBytes, lease: DefaultDedupLease, keep: DefaultDedupKeep}
	if err := applyOptions(opts, func(o ReceiverOption) error { return o.applyReceiver(&c) }); err != nil {
		return nil, err
	}
	switch {
	case v == nil && !c.unsignedCE:
		return nil, optionErrorf("webhook: NewReceiver: nil Verifier")
	case v != nil && c.unsignedCE:
		return nil, optionErrorf("webhook: NewReceiver: a Verifier and WithUnsignedCloudEvents conflict (dropping the signature would bypass the Verifier)")
	}
	switch {
	case c.withDedup && c.noDedup:
		return nil, optionErrorf("webhook: WithDedup and WithoutDedup conflict")
	case c.noDedup:
		c.dedup = nil
	case c.dedup == nil:
		c.dedup = NewMemoryDedup()
	}
	tr, err := newReceiverTracers(c.tracers)
	if err != nil {
		return nil, err
	}
	return &Receiver{verifier: v, cfg: c, tr: tr}, nil
}

// ReceiverStats are a Receiver's counters since NewReceiver (see Receiver.Stats).
type ReceiverStats struct {
	Requests uint64
	// Rejected counts requests answered without calling the handler;
	// Duplicates (already handled, answered 200) are among them.
	Rejected   uint64
	Duplicates uint64
	// Handled counts handler calls; HandlerFailed those that answered
	// other than 2xx.
	Handled       uint64
	HandlerFailed uint64
	StoreErrors   uint64 // dedup store failures (also logged)
}

type receiverCounters struct {
	requests, rejected, duplicates, handled, handlerFailed, storeErrors atomic.Uint64
}

// Stats returns a snapshot of the Receiver's counters.
func (r *Receiver) Stats() ReceiverStats {
	return ReceiverStats{Requests: r.stats.requests.Load(), Rejected: r.stats.rejected.Load(),
		Duplicates: r.stats.duplicates.Load(), Handled: r.stats.handled.Load(),
		HandlerFailed: r.stats.handlerFailed.Load(), StoreErrors: r.stats.storeErrors.Load()}
}

// ErrBodyTooLarge is the reason (TraceRejectData.Err) for a body over the limit.
var ErrBodyTooLarge = errors.New("webhook: body too large")

// ErrHandlerPanic is wrapped by TraceReceiveEndData.Err when the handler
// panicked; the panic itself goes on to net/http.
var ErrHandlerPanic = errors.New("webhook: handler panicked")

// Reasons of rejections that are not Verify errors (TraceRejectData.Err).
var (
	// ErrDuplicate: the message ID was already handled; answered 200.
	ErrDuplicate = errors.New("webhook: duplicate message id (already handled)")
	// ErrInFlight: a request with the message ID is being handled; answered 409.
	ErrInFlight  = errors.New("webhook: message id is being handled")
	errDedupDown = errors.New("webhook: dedup store unavailable, retry later")
)

// reject answers a request without calling the handler. body is what the
// client sees (the reason, unless it would leak a store error).
func (r *Receiver) reject(w http.ResponseWriter, req *http.Request, id string, code int, err error, body string) (int, error) {
	r.stats.rejected.Add(1)
	for _, t := range r.tr.reject {
		t.TraceReject(req.Context(), TraceRejectData{Request: req, MessageID: id, StatusCode: code, Err: err})
	}
	if code == http.StatusOK {
		w.WriteHeader(code)
	} else {
		http.Error(w, body, code)
	}
	return code, err
}

func (r *Receiver) storeError(ctx context.Context, op string, err error) {
	r.stats.storeErrors.Add(1)
	r.cfg.logStoreError(ctx, "webhook: receiver dedup store error", err)
	traceStoreError(ctx, r.tr.storeErr, op, err)
}

// Middleware returns an http.Handler that verifies requests and passes the
// good ones to next, with the raw body as req.Body and the Event in the
// context (see EventFromContext).
func (r *Receiver) Middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		r.stats.requests.Add(1)
		id := headerValue(req.Header, HeaderID)
		if r.verifier == nil {
			id = headerValue(req.Header, headerCEID) // binary mode; structured: known after parsing
		}
		if len(r.tr.receive) == 0 {
			r.serve(w, req, id, next)
			return
		}
		ctx := req.Context()
		for _, t := range r.tr.receive {
			ctx = t.TraceReceiveStart(ctx, TraceReceiveStartData{Request: req, MessageID: id})
		}
		req = req.WithContext(ctx)
		ended := false
		defer func() {
			if ended {
				return
			}
			// The handler panicked (serve has forgotten the claim): end
			// the trace, then let the panic go on to net/http.
			p := recover()
			perr := fmt.Errorf("%w: %v", ErrHandlerPanic, p)
			for _, t := range r.tr.receive {
				t.TraceReceiveEnd(ctx, TraceReceiveEndData{MessageID: id, StatusCode: http.StatusInternalServerError, Handled: true, Err: perr})
			}
			panic(p)
		}()
		code, handled, err := r.serve(w, req, id, next)
		ended = true
		for _, t := range r.tr.receive {
			t.TraceReceiveEnd(ctx, TraceReceiveEndData{MessageID: id, StatusCode: code, Handled: handled, Err: err})
		}
	})
}

// serve is Middleware's work; it returns the status answered, whether the
// handler ran, and the rejection reason or late store error.
func (r *Receiver) serve(w http.ResponseWriter, req *http.Request, id string, next http.Handler) (code int, handled bool, err error) {
	if req.ContentLength > r.cfg.maxBody {
		code, err = r.reject(w, req, id, http.StatusRequestEntityTooLarge, ErrBodyTooLarge, ErrBodyTooLarge.Error())
		return code, false, err
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, req.Body, r.cfg.maxBody))
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			code, err = r.reject(w, req, id, http.StatusRequestEntityTooLarge, ErrBodyTooLarge, ErrBodyTooLarge.Error())
			return code, false, err
		}
		code, err = r.reject(w, req, id, http.StatusBadRequest, err, err.Error())
		return code, false, err
	}
	if r.verifier != nil {
		if err := r.verifier.Verify(req.Header, body); err != nil {
			code := http.StatusUnauthorized
			if errors.Is(err, ErrMissingHeader) || errors.Is(err, ErrInvalidMessageID) || errors.Is(err, ErrInvalidTimestamp) {
				code = http.StatusBadRequest
			}
			code, err = r.reject(w, req, id, code, err, err.Error())
			return code, false, err
		}
	}
	var ce *CloudEvent
	switch {
	case isCloudEvent(req.Header):
		if ce, err = parseCloudEvent(req.Header, body); err != nil {
			code, err = r.reject(w, req, id, http.StatusBadRequest, err, err.Error())
			return code, false, err
		}
	case r.verifier == nil:
		err := invalidCE("not a CloudEvent (no ce-* headers, Content-Type not %s), and this receiver takes only CloudEvents", ContentTypeCloudEventsJSON)
		code, err = r.reject(w, req, id, http.StatusBadRequest, err, err.Error())
		return code, false, err
	}
	var ev Event
	key := id // what the dedup store remembers
	if r.verifier != nil {
		ts, _ := strconv.ParseInt(headerValue(req.Header, HeaderTimestamp), 10, 64)
		ev = Event{ID: id, Timestamp: time.Unix(ts, 0), Body: body, Header: req.Header, CloudEvent: ce}
	} else {
		// CloudEvents ids are unique per source, not globally.
		id, key = ce.ID, ce.dedupKey()
		ev = Event{ID: id, Body: body, Header: req.Header, CloudEvent: ce}
	}
	ctx := req.Context()
	var token string
	if r.cfg.dedup != nil {
		now := r.cfg.now()
		claim, err := r.cfg.dedup.Begin(ctx, key, now, now.Add(r.cfg.lease))
		switch {
		case err != nil:
			// The client sees a generic message; logs and tracers get the cause.
			err = fmt.Errorf("webhook: dedup begin: %w", err)
			r.storeError(ctx, "dedup begin", err)
			code, err = r.reject(w, req, id, http.StatusServiceUnavailable, err, errDedupDown.Error())
			return code, false, err
		case claim.State == DedupDone:
			r.stats.duplicates.Add(1)
			code, err = r.reject(w, req, id, http.StatusOK, ErrDuplicate, "")
			return code, false, err
		case claim.State == DedupInFlight:
			code, err = r.reject(w, req, id, http.StatusConflict, ErrInFlight, ErrInFlight.Error())
			return code, false, err
		}
		token = claim.Token
	}
	rec := &statusRecorder{ResponseWriter: w}
	finished := false
	defer func() {
		code = rec.status
		if !finished {
			code = http.StatusInternalServerError // the handler panicked
		}
		ok := finished && code >= 200 && code < 300
		if !ok {
			r.stats.handlerFailed.Add(1)
		}
		if r.cfg.dedup == nil {
			return
		}
		// The request's context may be cancelled by now; record anyway.
		ctx := context.WithoutCancel(ctx)
		if ok {
			if derr := r.cfg.dedup.Done(ctx, key, token, r.cfg.now().Add(r.cfg.keep)); derr != nil {
				err = fmt.Errorf("webhook: dedup done: %w", derr)
				r.storeError(ctx, "dedup done", err)
			}
		} else if derr := r.cfg.dedup.Forget(ctx, key, token); derr != nil {
			// A stale claim (the lease expired and another request took
			// the ID) is left to its new owner.
			err = fmt.Errorf("webhook: dedup forget: %w", derr)
			r.storeError(ctx, "dedup forget", err)
		}
	}()
	r.stats.handled.Add(1)
	req2 := req.WithContext(context.WithValue(ctx, eventKey{}, ev))
	req2.Body = io.NopCloser(bytes.NewReader(body))
	next.ServeHTTP(rec, req2)
	if rec.status == 0 {
		rec.status = http.StatusOK
	}
	finished = true
	return rec.status, true, nil
}

// Handler returns an http.Handler that calls fn with each verified event and
// answers 204 when it returns nil and 500 (or the code of a *StatusError)
// when it fails.
func (r *Receiver) Handler(fn func(ctx context.Context, e Event) error) http.Handler {
	return r.Middleware(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		e, _ := EventFromContext(req.Context())
		if err := fn(req.Context(), e); err != nil {
			code := http.StatusInternalServerError
			var se *StatusError
			if errors.As(err, &se) && se.Code >= 400 {
				code = se.Code
			}
			http.Error(w, err.Error(), code)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}))
}

// StatusError lets a handler given to Receiver.Handler choose the HTTP status
// of its failure (for example 400 for an event it can never accept).
type StatusError struct {
	Code int
	Err  error
}

// Error returns the wrapped error's message.
func (e *StatusError) Error() string { return e.Err.Error() }

// Unwrap returns the wrapped error.
func (e *StatusError) Unwrap() error { return e.Err }

type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (s *statusRecorder) WriteHeader(code int) {
	if s.status == 0 {
		s.status = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusRecorder) Write(b []byte) (int, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	return s.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (s *statusRecorder) Unwrap() http.ResponseWriter { return s.ResponseWriter }
