package webhook

import (
	"context"
	"net/http"
	"time"

	"github.com/go-integration/patterns/internal/hooks"
)

// The tracer interfaces, in the style of pgx's tracers. Give values
// implementing any of them to WithTracer. A Start method returns the context
// the operation runs in and its End method receives, so a span can live in
// it. Data structs may gain fields.

// AttemptTracer traces every HTTP attempt of a Sender, around the request
// and the recording of its outcome.
type AttemptTracer interface {
	// TraceAttemptStart is called before the request is built. The
	// context it returns is the request's (an HTTP client span made here
	// is the parent of whatever the transport traces) and the one
	// TraceAttemptEnd, TraceDisable and TraceStoreError of the attempt get.
	TraceAttemptStart(ctx context.Context, data TraceAttemptStartData) context.Context
	// TraceAttemptEnd is called once the attempt is recorded (or could not
	// be), for every TraceAttemptStart.
	TraceAttemptEnd(ctx context.Context, data TraceAttemptEndData)
}

// TraceAttemptStartData describes an attempt about to be made.
type TraceAttemptStartData struct {
	DeliveryID string
	MessageID  string // the webhook-id
	EventType  string // Message.Type
	EndpointID string
	URL        string // the endpoint's URL; the method is always POST
	Attempt    int    // 1 for the first attempt of the delivery (since its last resend)
	// Header is the outgoing request's header. A tracer may add to it
	// (traceparent, say); the Sender then sets Content-Type, User-Agent,
	// the ce-* headers (WithCloudEvents in binary mode) and the
	// webhook-id, webhook-timestamp and webhook-signature headers over
	// whatever it finds.
	Header http.Header
}

// TraceAttemptEndData is the outcome of an attempt.
type TraceAttemptEndData struct {
	// StatusCode is the response's status, 0 when there was none.
	StatusCode int
	// Err is why the attempt failed: the transport error (wrapping
	// ErrBlockedAddress when the SSRF guard refused the address, or a
	// context error on timeout), or an error describing a non-2xx status.
	// It wraps ErrClosed when Close cut the attempt off after the drain
	// timeout; such an attempt is not recorded and its delivery is retried
	// once its lease ends. Nil when the attempt succeeded.
	Err error
	// Duration of the HTTP exchange.
	Duration time.Duration
	// State is the delivery's state after the attempt: pending (it will be
	// retried at NextAttempt), succeeded, or failed (given up: schedule
	// exhausted, 410 Gone, or the delivery cannot be signed).
	State       DeliveryState
	NextAttempt time.Time
	// Attempt is the attempt as recorded in the store, response body included.
	Attempt Attempt
}

// DisableTracer is told when a Sender disables an endpoint (410 Gone, or
// failing for WithDisableAfter).
type DisableTracer interface {
	TraceDisable(ctx context.Context, data TraceDisableData)
}

// TraceDisableData describes a disabled endpoint.
type TraceDisableData struct {
	Endpoint Endpoint // as it is now: Disabled and DisabledReason set
	Reason   string
}

// StoreErrorTracer is told of the store failures a Sender or Receiver
// survives. They are logged too (see WithLogger).
type StoreErrorTracer interface {
	TraceStoreError(ctx context.Context, data TraceStoreErrorData)
}

// TraceStoreErrorData describes a store failure.
type TraceStoreErrorData struct {
	// Op is what failed: "claim", "record", "disable" (Sender), "dedup
	// begin", "dedup done", "dedup forget" (Receiver).
	Op string
	// Err wraps ErrLeaseLost when another worker took the delivery over,
	// ErrStaleClaim when the dedup claim was taken over.
	Err error
}

// ReceiveTracer traces every request a Receiver gets, around reading,
// verifying, deduplicating and handling it.
type ReceiveTracer interface {
	// TraceReceiveStart is called first. The context it returns is the
	// request's context from then on (the handler's too), so a server span
	// made here, with the trace context extracted from the request's
	// header, is the parent of what the handler does.
	TraceReceiveStart(ctx context.Context, data TraceReceiveStartData) context.Context
	// TraceReceiveEnd is called when the response is written.
	TraceReceiveEnd(ctx context.Context, data TraceReceiveEndData)
}

// TraceReceiveStartData describes a request arriving.
type TraceReceiveStartData struct {
	Request *http.Request
	// MessageID is the webhook-id header, not yet verified.
	MessageID string
}

// TraceReceiveEndData is the outcome of a request.
type TraceReceiveEndData struct {
	MessageID  string
	StatusCode int  // the status answered
	Handled    bool // the handler was called
	// Err is why the request was rejected (see TraceRejectData.Err), or a
	// dedup store failure after the handler ran (wrapping ErrStaleClaim when
	// another request took the ID over), or ErrHandlerPanic when the
	// handler panicked (End is called before the panic goes on). Nil
	// otherwise, also when the handler answered an error status (see
	// StatusCode).
	Err error
}

// RejectTracer is told of every request a Receiver answers without calling
// the handler.
type RejectTracer interface {
	TraceReject(ctx context.Context, data TraceRejectData)
}

// TraceRejectData describes a rejected request.
type TraceRejectData struct {
	Request *http.Request
	// MessageID is the webhook-id header, verified or not (under
	// WithUnsignedCloudEvents the CloudEvent's id, when known).
	MessageID  string
	StatusCode int // the status answered
	// Err is the reason: ErrBodyTooLarge, a Verify error (ErrMissingHeader,
	// ErrInvalidMessageID, ErrTimestampTooOld, ErrNoMatchingSignature, ...),
	// ErrInvalidCloudEvent (400), ErrDuplicate (200: already handled),
	// ErrInFlight (409) or, for 503, the dedup store's error.
	Err error
}

// senderTracers are a Sender's tracers, sorted by interface.
type senderTracers struct {
	attempt  []AttemptTracer
	disable  []DisableTracer
	storeErr []StoreErrorTracer
}

func newSenderTracers(ts []any) (senderTracers, error) {
	err := checkTracers(ts, "AttemptTracer, DisableTracer, StoreErrorTracer",
		hooks.Is[AttemptTracer](), hooks.Is[DisableTracer](), hooks.Is[StoreErrorTracer]())
	return senderTracers{
		attempt:  hooks.Pick[AttemptTracer](ts),
		disable:  hooks.Pick[DisableTracer](ts),
		storeErr: hooks.Pick[StoreErrorTracer](ts),
	}, err
}

// receiverTracers are a Receiver's tracers, sorted by interface.
type receiverTracers struct {
	receive  []ReceiveTracer
	reject   []RejectTracer
	storeErr []StoreErrorTracer
}

func newReceiverTracers(ts []any) (receiverTracers, error) {
	err := checkTracers(ts, "ReceiveTracer, RejectTracer, StoreErrorTracer",
		hooks.Is[ReceiveTracer](), hooks.Is[RejectTracer](), hooks.Is[StoreErrorTracer]())
	return receiverTracers{
		receive:  hooks.Pick[ReceiveTracer](ts),
		reject:   hooks.Pick[RejectTracer](ts),
		storeErr: hooks.Pick[StoreErrorTracer](ts),
	}, err
}

func traceStoreError(ctx context.Context, ts []StoreErrorTracer, op string, err error) {
	for _, t := range ts {
		t.TraceStoreError(ctx, TraceStoreErrorData{Op: op, Err: err})
	}
}
