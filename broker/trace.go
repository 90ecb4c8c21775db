package broker

import (
	"context"
	"time"
)

// Tracing follows pgx's tracer model, as every package of this module does:
// an adapter's WithTracer(t any) option installs a value implementing one or
// more of PublishTracer, ProcessTracer and DeadLetterTracer (and the
// adapter's own tracer interfaces, such as rabbitmq.ConnectionTracer); a
// value implementing none is refused with the adapter's ErrInvalidOption.
// Several tracers are called in the order they were given. Tracers are
// called synchronously, on the publishing or handling goroutine, and must
// not block. The data structs may gain fields. This package depends on no
// telemetry library: an OpenTelemetry tracer is an adapter over these
// interfaces.

// PublishTracer traces Publish calls: one Start and one End per call, on
// every adapter (and per PublishAsync call where an adapter has it, End
// then being called from the completion).
type PublishTracer interface {
	// TracePublishStart is called when Publish starts, before anything is
	// checked or sent. The returned context is the one the call runs in
	// and the one TracePublishEnd receives, so a span can live in it.
	TracePublishStart(ctx context.Context, data TracePublishStartData) context.Context
	// TracePublishEnd is called once the call's outcome is known.
	TracePublishEnd(ctx context.Context, data TracePublishEndData)
}

// TracePublishStartData describes a Publish call: what a producer span needs.
type TracePublishStartData struct {
	// System names the adapter: "memory", "rabbitmq", "kafka" (OpenTelemetry's
	// messaging.system).
	System string
	// Topic is the destination as given to Publish (it may be one the
	// adapter refuses; TracePublishEnd then carries the error).
	Topic string
	// Messages are the messages that will be sent, IDs and Times filled.
	// They are copies made for the tracers: each Header is a map of its
	// own (never nil, not the caller's), and what a tracer adds to it (trace
	// context) is sent with the message. Do not keep the slice.
	Messages []Message
}

// TracePublishEndData is the outcome of a Publish call.
type TracePublishEndData struct {
	// Err is what Publish returned: nil when the broker accepted every
	// message.
	Err error
	// Duration is the time from TracePublishStart to this call.
	Duration time.Duration
}

// ProcessTracer traces handler calls: one Start and one End around each
// attempt, on every adapter (the engine every adapter runs on calls them).
type ProcessTracer interface {
	// TraceProcessStart is called before the handler runs on a message.
	// The handler runs in the context it returns (so a span it starts is
	// the handler's parent), and TraceProcessEnd receives that context.
	TraceProcessStart(ctx context.Context, data TraceProcessStartData) context.Context
	// TraceProcessEnd is called once the attempt is settled: acked, to be
	// retried, dead-lettered, dropped or handed back to the broker.
	TraceProcessEnd(ctx context.Context, data TraceProcessEndData)
}

// TraceProcessStartData describes one handler call: what a consumer span
// needs.
type TraceProcessStartData struct {
	// System names the adapter: "memory", "rabbitmq", "kafka".
	System string
	// Topic and Group are the subscription's (Group is empty for a
	// private subscription).
	Topic, Group string
	// Message is the message as the handler gets it: its Header (never
	// nil, the same map the handler sees) carries the publisher's trace
	// context, and Message.Attempt counts the handler calls, 1 for the
	// first.
	Message Message
}

// TraceProcessEndData is the outcome of one handler call.
type TraceProcessEndData struct {
	// Outcome says what became of the message.
	Outcome Outcome
	// Err is the handler's error (a *PanicError for a panic), nil when it
	// returned nil.
	Err error
	// Duration is the time from TraceProcessStart to this call: the
	// handler and the settling (an ack, a dead-letter publish).
	Duration time.Duration
}

// Outcome is what became of a message after a handler call.
type Outcome int

// Outcomes of a handler call.
const (
	// OutcomeAcked: the handler returned nil and the message was acknowledged.
	OutcomeAcked Outcome = iota + 1
	// OutcomeRetry: the attempt failed; the message is tried again after a backoff.
	OutcomeRetry
	// OutcomeDeadLettered: the message failed for good and was published to
	// the dead-letter topic.
	OutcomeDeadLettered
	// OutcomeDropped: the message failed for good and the subscription has
	// no dead-letter topic.
	OutcomeDropped
	// OutcomeReleased: the message went back to the broker unhandled
	// (the subscription stopped or lost its partition; a handler cut off by
	// the drain timeout), for this or another member to try again.
	OutcomeReleased
)

var outcomeNames = [...]string{"", "acked", "retry", "dead-lettered", "dropped", "released"}

// String returns the outcome's name, such as "acked".
func (o Outcome) String() string {
	if o > 0 && int(o) < len(outcomeNames) {
		return outcomeNames[o]
	}
	return "unknown"
}

// DeadLetterTracer is told of each message about to be dead-lettered.
type DeadLetterTracer interface {
	// TraceDeadLetter is called in the context of the failed attempt
	// (the one TraceProcessStart returned), before the dead letter is
	// published; a tracer may add to data.Message.Header, which is sent.
	TraceDeadLetter(ctx context.Context, data TraceDeadLetterData)
}

// TraceDeadLetterData describes a dead letter.
type TraceDeadLetterData struct {
	// System names the adapter: "memory", "rabbitmq", "kafka".
	System string
	// Topic and Group are the subscription's; DeadLetterTopic is where
	// the message goes.
	Topic, Group, DeadLetterTopic string
	// Message is the dead letter, carrying the Header* dead-letter headers.
	Message Message
	// Err is the error the message failed with for good.
	Err error
}

// PublisherStats are a publisher's counters since it was created, the
// same on every adapter (an adapter may return them inside a struct of its
// own with extra fields). Counters are cumulative.
type PublisherStats struct {
	// Published counts messages of Publish calls that returned nil: the
	// broker accepted them.
	Published uint64
	// Failed counts messages of Publish calls that returned an error,
	// refused ones included (some may have reached the broker anyway).
	Failed uint64
	// InFlight is the number of messages in Publish calls that have not
	// returned yet (a gauge).
	InFlight int64
}

// SubscriberStats are a subscriber's counters since it was created, over
// all its Subscribe calls, the same on every adapter (an adapter may
// return them inside a struct of its own with extra fields). Counters are
// cumulative; a message the broker delivers again (after a release or a
// crash) is counted again.
type SubscriberStats struct {
	// Received counts messages taken from the broker.
	Received uint64
	// Handled counts messages whose handler returned nil (acked).
	Handled uint64
	// Retried counts failed handler calls followed by another attempt.
	Retried uint64
	// DeadLettered counts messages published to the dead-letter topic.
	DeadLettered uint64
	// Dropped counts messages that failed for good with no dead-letter
	// topic.
	Dropped uint64
	// Released counts messages handed back to the broker unhandled (on
	// stop, a revoke, a drain timeout).
	Released uint64
	// Panics counts handler calls that panicked (each is also a failed
	// attempt, retried or dead-lettered).
	Panics uint64
	// InFlight is the number of messages held now: received and not yet
	// acked, dead-lettered or released (a gauge).
	InFlight int64
}
