package broker

import (
	"context"
	"sync"
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
//
// The messages are lent read-only: a tracer reads Messages (and their
// Header maps) freely, and to add a header (trace context) to message i it
// writes to the map Header(i) returns, which is what is then sent. A
// Header map is copied only for a message a tracer asks to write to, so
// that tracers that write nothing (such as OpenTelemetry's with no
// provider, which neither records nor propagates) cost no copy and no
// allocation. The caller's messages and Header maps are never modified.
type TracePublishStartData struct {
	// System names the adapter: "memory", "rabbitmq", "kafka" (OpenTelemetry's
	// messaging.system).
	System string
	// Topic is the destination as given to Publish (it may be one the
	// adapter refuses; TracePublishEnd then carries the error).
	Topic string
	// Messages are the messages that will be sent, IDs and Times filled,
	// as the caller gave them: read-only (do not modify a message or its
	// Header, which may be nil or the caller's map; use Header to write)
	// and valid only during the call (do not keep the slice or this
	// value).
	Messages []Message

	w *publishHeaders // nil when the data was not made by StartPublish
}

// Header returns the Header of Messages[i] for writing: what a tracer sets
// in it is sent with the message, and a later tracer of the same call sees
// it (in the map Header returns, and in its Messages[i].Header). The
// first call for a message gives it a map of its own, a copy of its
// Header or a new map, never nil; later calls, by this tracer or a later
// one, return the same map. Call it only to write: it copies, reading
// Messages does not. Do not keep the map: the adapter sends it.
func (d TracePublishStartData) Header(i int) map[string]string {
	if d.w == nil {
		// Data built by hand (a tracer's own test): write in place.
		if d.Messages[i].Header == nil {
			d.Messages[i].Header = make(map[string]string, 2)
		}
		return d.Messages[i].Header
	}
	return d.w.header(i)
}

// StartPublish calls each tracer's TracePublishStart in order for a
// Publish call of msgs (IDs and Times filled) to topic on the adapter
// named system, and returns the context the last one returned and the
// messages to send: msgs itself when no tracer wrote a header (no copy,
// no allocation), else a copy of msgs carrying the tracers' Header maps.
// It is for adapter authors: the module's adapters call it through their
// shared publish recorder.
func StartPublish(ctx context.Context, tracers []PublishTracer, system, topic string, msgs []Message) (context.Context, []Message) {
	p := publishHeadersPool.Get().(*publishHeaders)
	// The tracers read a copy of the messages (not msgs, so that msgs
	// does not escape and a caller's variadic array stays on its stack),
	// in a slice the pool keeps: no allocation.
	p.view = append(p.view[:0], msgs...)
	d := TracePublishStartData{System: system, Topic: topic, Messages: p.view, w: p}
	for _, t := range tracers {
		ctx = t.TracePublishStart(ctx, d)
		if p.out != nil {
			d.Messages = p.out // later tracers see what earlier ones wrote
		}
	}
	if p.out != nil {
		msgs = p.out
	}
	clear(p.view) // keep no message alive
	if cap(p.view) > publishHeadersMaxView {
		p.view = nil
	}
	p.view = p.view[:0]
	p.out, p.owned, p.ownedMore = nil, 0, nil
	publishHeadersPool.Put(p)
	return ctx, msgs
}

// publishHeaders is the copy on write behind TracePublishStartData.Header
// for one StartPublish call.
type publishHeaders struct {
	view []Message // the messages as given, kept by the pool
	// out is nil until a tracer writes, then a copy of view in which the
	// Header of every message a tracer wrote to is a map of its own
	// (bit i of owned, or owned[i] past 64 messages): the messages to send.
	out       []Message
	owned     uint64
	ownedMore []bool
}

// publishHeadersMaxView bounds the slice the pool keeps.
const publishHeadersMaxView = 64

var publishHeadersPool = sync.Pool{New: func() any { return new(publishHeaders) }}

func (p *publishHeaders) header(i int) map[string]string {
	if p.out == nil {
		p.out = make([]Message, len(p.view))
		copy(p.out, p.view)
		if len(p.view) > 64 {
			p.ownedMore = make([]bool, len(p.view))
		}
	}
	if p.ownedMore != nil {
		if p.ownedMore[i] {
			return p.out[i].Header
		}
		p.ownedMore[i] = true
	} else {
		if p.owned&(1<<i) != 0 {
			return p.out[i].Header
		}
		p.owned |= 1 << i
	}
	h := make(map[string]string, len(p.out[i].Header)+2)
	for k, v := range p.out[i].Header {
		h[k] = v
	}
	p.out[i].Header = h
	return h
}

// TracePublishEndData is the outcome of a Publish call.
type TracePublishEndData struct {
	// Err is what Publish returned: nil when the broker accepted every
	// message.
	Err error
	// Duration is the time from TracePublishStart to this call.
	Duration time.Duration
}

// PublishTraceEnabler is implemented by a PublishTracer that can tell,
// cheaply and before a Publish call, that it would do nothing for a call
// made with ctx: an OpenTelemetry tracer on no-op providers, say. When
// every PublishTracer an adapter has is an enabler reporting false, the
// adapter calls none of them for that call (no TracePublishStart or End,
// no clock reading, no header copy); when any reports true, or one is not
// an enabler, it calls them all as usual. Tracing that costs nothing when
// off is what the method is for: it must not block or allocate.
type PublishTraceEnabler interface {
	TracePublishEnabled(ctx context.Context) bool
}

// ProcessTraceEnabler is PublishTraceEnabler for handler calls: ctx is
// the subscriber's, topic the subscription's and header the Header of the
// message about to be handed to the handler (read-only; the trace context
// a publisher wrote travels in it). When every ProcessTracer reports
// false, none is called for that attempt and the handler runs in ctx.
type ProcessTraceEnabler interface {
	TraceProcessEnabled(ctx context.Context, topic string, header map[string]string) bool
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
	// Message is the message as the handler gets it: its Header (the
	// map the handler sees, nil when the message has none) carries the
	// publisher's trace context, and Message.Attempt counts the handler
	// calls, 1 for the first. It is read-only: a tracer does not modify
	// the message nor its Header, and does not keep the map.
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
