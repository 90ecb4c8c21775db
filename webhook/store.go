package webhook

import (
	"context"
	"errors"
	"time"

	"github.com/go-integration/patterns/internal/ids"
)

// Errors returned by stores.
var (
	// ErrNotFound: no endpoint, message or delivery with that ID.
	ErrNotFound = errors.New("webhook: not found")
	// ErrLeaseLost: the claim on a delivery expired and another worker took
	// it over before the attempt was recorded. The attempt is still logged.
	ErrLeaseLost = errors.New("webhook: delivery lease lost")
)

// Endpoint is a receiver that subscribes to messages.
type Endpoint struct {
	// ID identifies the endpoint. Required.
	ID string
	// URL receives a POST per message. Required; http or https.
	URL string
	// Secrets sign every request, one signature per secret ("whsec_..." or
	// "whsk_..."): hold two during a rotation. Required.
	Secrets []string
	// EventTypes lists the message types the endpoint receives; empty means all.
	EventTypes []string
	// Disabled endpoints receive nothing; their pending deliveries fail.
	Disabled bool
	// DisabledReason says why the endpoint was disabled.
	DisabledReason string
	// FailingSince is the start of the current run of failed attempts; zero
	// while the endpoint is healthy. Set by the store.
	FailingSince time.Time
}

// Subscribed reports whether the endpoint receives messages of type t.
func (e Endpoint) Subscribed(t string) bool {
	if len(e.EventTypes) == 0 {
		return true
	}
	for _, et := range e.EventTypes {
		if et == t {
			return true
		}
	}
	return false
}

// Message is an event to deliver to the endpoints subscribed to its type.
type Message struct {
	// ID is the webhook-id, the same on every attempt to every endpoint;
	// receivers deduplicate on it. Sender.Send fills it with NewID when empty.
	// It must not contain '.' (see ValidateMessageID).
	ID string
	// Type, such as "invoice.paid", selects the endpoints (Endpoint.EventTypes).
	Type string
	// Payload is the request body, sent as is (typically JSON).
	Payload []byte
	// Time is when the event happened; Send sets it to now when zero.
	Time time.Time
}

// NewID returns a random message ID such as "msg_2cd7ugvdbzvxpq6yhadrmz7ube".
// It is 128 random bits in lowercase base32 after "msg_", the form Standard
// Webhooks uses.
func NewID() string { return ids.Base32("msg_") }

// DeliveryState is the state of one message's delivery to one endpoint.
type DeliveryState string

// Delivery states.
const (
	DeliveryPending   DeliveryState = "pending"   // waiting for its next attempt
	DeliverySucceeded DeliveryState = "succeeded" // an attempt got a 2xx answer
	DeliveryFailed    DeliveryState = "failed"    // retries exhausted, 410 Gone, or endpoint disabled
)

// Delivery is one message to one endpoint.
type Delivery struct {
	// ID identifies the delivery in its store.
	ID string
	// Message to deliver.
	Message Message
	// Endpoint to deliver to, as it was when the delivery was claimed.
	Endpoint Endpoint
	// State of the delivery.
	State DeliveryState
	// Attempts recorded so far.
	Attempts int
	// NextAttempt is when a pending delivery is due.
	NextAttempt time.Time
	// LastError describes the last failure.
	LastError string
	// Lease is the token of the claim that returned this delivery; Record
	// checks it.
	Lease string
}

// Attempt is one HTTP request of a delivery, as logged in the store.
type Attempt struct {
	// DeliveryID is the delivery the attempt belongs to.
	DeliveryID string
	// Number is 1 for the first attempt of the delivery (since its last resend).
	Number int
	// Start and Duration of the request.
	Start    time.Time
	Duration time.Duration
	// StatusCode is the response's status, 0 when there was none.
	StatusCode int
	// ResponseBody is the start of the response body (see WithMaxResponseBytes).
	ResponseBody []byte
	// Error describes a failure: transport error, timeout, status.
	Error string
	// State is the delivery's state after this attempt.
	State DeliveryState
	// NextAttempt is when the delivery is due again when State is pending.
	NextAttempt time.Time
}

// Store keeps endpoints, deliveries and the attempt log for a Sender.
// MemoryStore keeps them in memory; pgstore.Store keeps them in PostgreSQL,
// where several Sender processes share the work. Conformance tests:
// storetest.Run.
type Store interface {
	// SaveEndpoint creates or replaces an endpoint (FailingSince is kept).
	SaveEndpoint(ctx context.Context, e Endpoint) error
	// Endpoint returns the endpoint with that ID, or ErrNotFound.
	Endpoint(ctx context.Context, id string) (Endpoint, error)
	// DisableEndpoint disables an endpoint and fails its pending deliveries
	// with the reason.
	DisableEndpoint(ctx context.Context, id, reason string) error
	// EnableEndpoint enables an endpoint and clears FailingSince.
	EnableEndpoint(ctx context.Context, id string) error

	// Enqueue stores m with one pending delivery, due at the time at, per
	// enabled endpoint subscribed to m.Type, and returns how many. Enqueueing
	// a message ID again adds no delivery to an endpoint that already has one.
	// An ID that is empty or contains '.' is refused with an error wrapping
	// ErrInvalidMessageID (see ValidateMessageID).
	Enqueue(ctx context.Context, m Message, at time.Time) (int, error)
	// Claim leases up to limit pending deliveries due at now whose endpoints
	// are enabled, for the duration lease, oldest due first. A delivery whose
	// lease expired (its worker died) can be claimed again. Concurrent
	// callers, in this or other processes, never get the same delivery while
	// its lease holds.
	Claim(ctx context.Context, now time.Time, lease time.Duration, limit int) ([]Delivery, error)
	// Record logs attempt a of d and, when d's lease still holds, moves d to
	// a.State. It also tracks the endpoint's health: a succeeded attempt
	// clears FailingSince, a failed one sets it if unset. It returns the
	// endpoint's FailingSince, and ErrLeaseLost when the lease had expired
	// and been taken over.
	Record(ctx context.Context, d Delivery, a Attempt) (failingSince time.Time, err error)

	// Resend makes the message's deliveries (to one endpoint, or to all when
	// endpointID is empty) pending again, due at now, with their attempt
	// count reset, and returns how many.
	Resend(ctx context.Context, messageID, endpointID string, now time.Time) (int, error)
	// ResendFailed makes every failed delivery of the endpoint pending again.
	ResendFailed(ctx context.Context, endpointID string, now time.Time) (int, error)
	// Deliveries returns the deliveries of a message, ordered by endpoint ID.
	Deliveries(ctx context.Context, messageID string) ([]Delivery, error)
	// Attempts returns the attempt log of a delivery, oldest first.
	Attempts(ctx context.Context, deliveryID string) ([]Attempt, error)
}
