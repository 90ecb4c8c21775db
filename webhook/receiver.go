package webhook

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"strconv"
	"time"
)

// Defaults of a Receiver.
const (
	DefaultMaxBodyBytes = 1 << 20
	DefaultDedupLease   = 5 * time.Minute
	DefaultDedupKeep    = 72 * time.Hour
)

// Event is a verified webhook request.
type Event struct {
	// ID is the webhook-id header: the message ID, the same on every attempt.
	ID string
	// Timestamp is the webhook-timestamp header of this attempt.
	Timestamp time.Time
	// Body is the raw request body, exactly as signed.
	Body []byte
	// Header is the request's header.
	Header http.Header
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
//	400 a header is missing or the timestamp is not a number
//	401 timestamp outside tolerance or no matching signature
//	200 the ID was already handled successfully (the handler is not called)
//	409 a request with the same ID is being handled right now
//	503 the dedup store failed
//
// and otherwise whatever the handler answers. The ID is remembered as handled
// only when the handler answered 2xx; otherwise it is forgotten so the
// sender's retry is handled again.
//
// A handler that outlives the dedup lease (WithDedupTimes) loses its claim
// once another request with the ID arrives: that request is handled too. The
// late first handler then neither marks the ID handled nor forgets it (the
// store refuses with ErrStaleClaim, reported through WithOnReject); the ID's
// state is the newer request's.
type Receiver struct {
	verifier *Verifier
	dedup    DedupStore
	maxBody  int64
	lease    time.Duration
	keep     time.Duration
	now      func() time.Time
	onReject func(*http.Request, error)
}

// ReceiverOption configures a Receiver.
type ReceiverOption func(*Receiver)

// WithMaxBodyBytes sets the largest body accepted; larger ones get 413.
// Default (and for n <= 0) DefaultMaxBodyBytes (1 MiB).
func WithMaxBodyBytes(n int64) ReceiverOption { return func(r *Receiver) { r.maxBody = n } }

// WithDedup sets the store that remembers handled IDs. Default a MemoryDedup
// of its own; use a shared store (pgstore.Dedup) when several processes
// receive. A nil store disables replay protection.
func WithDedup(s DedupStore) ReceiverOption { return func(r *Receiver) { r.dedup = s } }

// WithDedupTimes sets how long an ID is claimed while its handler runs (lease,
// default DefaultDedupLease: keep it above the slowest handler, or a retry
// may be handled a second time) and how long a handled ID is remembered (keep,
// default DefaultDedupKeep: longer than a sender's whole retry schedule).
func WithDedupTimes(lease, keep time.Duration) ReceiverOption {
	return func(r *Receiver) { r.lease, r.keep = lease, keep }
}

// WithReceiverClock sets the clock for dedup expiry. Default time.Now. (The
// Verifier has its own clock option, WithClock.)
func WithReceiverClock(now func() time.Time) ReceiverOption {
	return func(r *Receiver) { r.now = now }
}

// WithOnReject sets a function called with every rejected request and the
// reason (for logging and metrics), and with a handled request whose outcome
// the dedup store could not record (an error wrapping ErrStaleClaim when the
// lease expired and another request took the ID over). Default none.
func WithOnReject(f func(*http.Request, error)) ReceiverOption {
	return func(r *Receiver) { r.onReject = f }
}

// NewReceiver returns a Receiver that verifies with v (required: it panics
// when v is nil, rather than failing every request later).
func NewReceiver(v *Verifier, opts ...ReceiverOption) *Receiver {
	if v == nil {
		panic("webhook: NewReceiver: nil Verifier")
	}
	r := &Receiver{verifier: v, dedup: NewMemoryDedup(), maxBody: DefaultMaxBodyBytes,
		lease: DefaultDedupLease, keep: DefaultDedupKeep, now: time.Now}
	for _, o := range opts {
		o(r)
	}
	if r.maxBody <= 0 {
		r.maxBody = DefaultMaxBodyBytes
	}
	if r.lease <= 0 {
		r.lease = DefaultDedupLease
	}
	if r.keep <= 0 {
		r.keep = DefaultDedupKeep
	}
	return r
}

// ErrBodyTooLarge is reported (through WithOnReject) for a body over the limit.
var ErrBodyTooLarge = errors.New("webhook: body too large")

// errDuplicate and errInFlight are reported through WithOnReject.
var (
	errDuplicate = errors.New("webhook: duplicate message id (already handled)")
	errInFlight  = errors.New("webhook: message id is being handled")
	errDedupDown = errors.New("webhook: dedup store unavailable, retry later")
)

func (r *Receiver) reject(w http.ResponseWriter, req *http.Request, code int, err error) {
	if r.onReject != nil {
		r.onReject(req, err)
	}
	http.Error(w, err.Error(), code)
}

// Middleware returns an http.Handler that verifies requests and passes the
// good ones to next, with the raw body as req.Body and the Event in the
// context (see EventFromContext).
func (r *Receiver) Middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.ContentLength > r.maxBody {
			r.reject(w, req, http.StatusRequestEntityTooLarge, ErrBodyTooLarge)
			return
		}
		body, err := io.ReadAll(http.MaxBytesReader(w, req.Body, r.maxBody))
		if err != nil {
			var tooLarge *http.MaxBytesError
			if errors.As(err, &tooLarge) {
				r.reject(w, req, http.StatusRequestEntityTooLarge, ErrBodyTooLarge)
				return
			}
			r.reject(w, req, http.StatusBadRequest, err)
			return
		}
		if err := r.verifier.Verify(req.Header, body); err != nil {
			code := http.StatusUnauthorized
			if errors.Is(err, ErrMissingHeader) || errors.Is(err, ErrInvalidMessageID) || errors.Is(err, ErrInvalidTimestamp) {
				code = http.StatusBadRequest
			}
			r.reject(w, req, code, err)
			return
		}
		ts, _ := strconv.ParseInt(headerValue(req.Header, HeaderTimestamp), 10, 64)
		ev := Event{ID: headerValue(req.Header, HeaderID), Timestamp: time.Unix(ts, 0), Body: body, Header: req.Header}
		ctx := req.Context()
		var token string
		if r.dedup != nil {
			now := r.now()
			claim, err := r.dedup.Begin(ctx, ev.ID, now, now.Add(r.lease))
			state := claim.State
			token = claim.Token
			switch {
			case err != nil:
				// The client sees a generic message; OnReject gets the cause.
				if r.onReject != nil {
					r.onReject(req, err)
				}
				http.Error(w, errDedupDown.Error(), http.StatusServiceUnavailable)
				return
			case state == DedupDone:
				if r.onReject != nil {
					r.onReject(req, errDuplicate)
				}
				w.WriteHeader(http.StatusOK)
				return
			case state == DedupInFlight:
				r.reject(w, req, http.StatusConflict, errInFlight)
				return
			}
		}
		rec := &statusRecorder{ResponseWriter: w}
		handled := false
		defer func() {
			if r.dedup == nil {
				return
			}
			// The request's context may be cancelled by now; record anyway.
			ctx := context.WithoutCancel(ctx)
			var err error
			if handled && rec.status >= 200 && rec.status < 300 {
				err = r.dedup.Done(ctx, ev.ID, token, r.now().Add(r.keep))
			} else {
				err = r.dedup.Forget(ctx, ev.ID, token)
			}
			// A stale claim (the lease expired and another request took
			// the ID) is left to its new owner; report it, and other
			// store failures, through OnReject.
			if err != nil && r.onReject != nil {
				r.onReject(req, err)
			}
		}()
		req2 := req.WithContext(context.WithValue(ctx, eventKey{}, ev))
		req2.Body = io.NopCloser(bytes.NewReader(body))
		next.ServeHTTP(rec, req2)
		if rec.status == 0 {
			rec.status = http.StatusOK
		}
		handled = true
	})
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
