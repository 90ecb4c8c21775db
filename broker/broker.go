package broker

import (
	"context"
	"errors"
	"fmt"
	"time"
	"unicode/utf8"
)

// Message is one event travelling through a broker.
//
// Publishers read ID, Key, Payload, Header, Time and Priority. Subscribers also
// fill Topic, Attempt and Raw on delivery. A Message handed to a Handler
// belongs to that handler; a Message passed to Publish must not be changed
// until Publish returns.
type Message struct {
	// ID identifies the message across redeliveries and dead-lettering.
	// Publish fills it with a random ID (see NewID) when empty.
	ID string
	// Key is the routing key (RabbitMQ) or partition key (Kafka): dot-separated
	// words such as "rentals.france.nevache". Subscriptions filter on it with
	// patterns (see Match) and order is kept per key.
	Key string
	// Payload is the body, any bytes (binary and non-UTF-8 included).
	Payload []byte
	// Header carries metadata such as trace context. Adapters map it to their
	// native headers.
	Header map[string]string
	// Time is when the event happened. Publish sets it to the current time when zero.
	Time time.Time
	// Priority orders delivery within a queue where the adapter supports it
	// (higher first); zero is normal priority.
	Priority uint8

	// Topic is the topic the message was delivered from (set on delivery).
	Topic string
	// Attempt is 1 on the first delivery and grows with each redelivery (set on delivery).
	Attempt int
	// Raw is the adapter's own delivery (for example *amqp091.Delivery or
	// *kgo.Record) for users who need it; nil on publish. Each adapter documents its type.
	Raw any
}

// Publisher sends messages to a topic.
type Publisher interface {
	// Publish returns nil only when the broker has durably accepted every
	// message; otherwise it returns an error and the caller should treat every
	// message of the call as unsent (some may still arrive: delivery is
	// at-least-once). Publish fills empty IDs and zero Times on msgs.
	Publish(ctx context.Context, topic string, msgs ...Message) error
	// Close flushes what is in flight and releases resources. Publish after
	// Close returns ErrClosed. Close is idempotent.
	Close() error
}

// AsyncPublisher publishes without waiting for the broker: PublishAsync
// hands m over and returns, and done later reports its outcome. Every
// adapter's publisher implements it (memory, RabbitMQ, Kafka), with the
// same semantics:
//
//   - done is called exactly once per call: with nil once the broker
//     confirmed m (as a nil Publish would say), otherwise with the error
//     Publish would have returned for m. It gets m as published (ID and
//     Time filled). It runs on an adapter goroutine, or on the calling
//     goroutine before PublishAsync returns when the outcome is known at
//     once (invalid input, after Close, the memory adapter): it must be
//     quick, must not publish, Flush or Close (they would wait for it)
//     and must not take a lock the caller of PublishAsync holds. done may
//     be nil.
//   - PublishAsync blocks while the adapter's in-flight bound is reached
//     (backpressure); when ctx ends first, done gets ctx's error (wrapped).
//     ctx also bounds the message's retries: it should outlive the call.
//   - Invalid input (a topic the adapter refuses, a message too large or
//     with a bad header) gets done with an error wrapping ErrInvalidMessage
//     at once, and nothing is sent. After Close, done gets ErrClosed.
//   - Flush waits until every call made before it has had its outcome, or
//     until ctx ends (then it returns ctx's error).
//   - Close flushes, up to the adapter's drain timeout, then fails the
//     messages still unconfirmed (errors wrapping ErrNotConfirmed or
//     ErrClosed): none is dropped without an outcome.
//   - Successive PublishAsync calls from one goroutine with the same
//     non-empty Key reach the broker in call order, except where an
//     adapter documents a reordering on recovery (RabbitMQ: messages
//     republished after a lost channel land behind later ones).
//
// Publish tracers (PublishTracer) see one call per message: Start when
// PublishAsync is called, End at its outcome.
type AsyncPublisher interface {
	Publisher
	// PublishAsync publishes m to topic and reports the outcome to done.
	// It fills m's empty ID and zero Time. m must not be changed until
	// done is called.
	PublishAsync(ctx context.Context, topic string, m Message, done func(Message, error))
	// Flush waits for the outcome of every PublishAsync call made before it.
	Flush(ctx context.Context) error
}

// Handler processes one delivered message. Returning nil acknowledges it;
// returning an error redelivers it (until the subscription's MaxAttempts, then
// it is dead-lettered). Wrap an error with Permanent to skip the retries.
type Handler func(ctx context.Context, m Message) error

// Middleware wraps a Handler with behaviour such as retries or timeouts.
type Middleware func(Handler) Handler

// Chain applies middleware so that the first one is the outermost:
// Chain(a, b)(h) is a(b(h)).
func Chain(mws ...Middleware) Middleware {
	return func(h Handler) Handler {
		for i := len(mws) - 1; i >= 0; i-- {
			h = mws[i](h)
		}
		return h
	}
}

// Subscription says what a subscriber receives and how.
type Subscription struct {
	// Topic to receive from. Required.
	Topic string
	// Group names a durable consumer group: members of one group compete for
	// messages and every group gets every message. Empty means a private group
	// for this Subscribe call alone, which ends with it.
	Group string
	// Keys are routing-key patterns ("*" one word, "#" zero or more words); a
	// message is delivered once if any pattern matches its Key. Empty means all keys.
	Keys []string
	// Concurrency is how many handlers run at once; order is kept per key.
	// Zero means 1; negative is an error.
	Concurrency int
	// MaxAttempts is how often a message is tried before it is dead-lettered.
	// Zero means redeliver without limit.
	MaxAttempts int
	// DeadLetterTopic receives messages that used up MaxAttempts or failed with
	// a Permanent error, with the Header* dead-letter headers added. Empty means
	// Topic + ".dlq" when MaxAttempts is set; with neither set a permanently
	// failing message is dropped (and logged by the adapter).
	DeadLetterTopic string
	// MaxInFlight bounds the messages this Subscribe call holds: received
	// from the broker and not yet acknowledged, dead-lettered or handed
	// back, whether a handler runs them, they wait for their key's turn or
	// for a retry. It is what bounds a consumer's memory, whatever the
	// backlog (RabbitMQ's prefetch; Kafka's polls, plus at most one fetch
	// response the client buffers, see broker/kafka). Zero means
	// DefaultMaxInFlight(Concurrency); negative is an error.
	MaxInFlight int
	// Ready, when set, is called once, when the subscription receives: its
	// queue, bindings or group position exist, so every message published
	// after Ready was called reaches it, private subscriptions included.
	// It is called on the Subscribe goroutine and must not block.
	Ready func()
}

// DefaultMaxInFlight is the MaxInFlight of a subscription that leaves it
// zero: 16 messages per handler, and at least 128.
func DefaultMaxInFlight(concurrency int) int {
	return max(16*max(concurrency, 1), 128)
}

// InFlight returns MaxInFlight, or DefaultMaxInFlight when it is zero.
func (s Subscription) InFlight() int {
	if s.MaxInFlight > 0 {
		return s.MaxInFlight
	}
	return DefaultMaxInFlight(s.Concurrency)
}

// Subscriber receives messages.
type Subscriber interface {
	// Subscribe runs h for each message of s until ctx is done (then it
	// returns nil) or Close is called (then it returns ErrClosed). Handlers in
	// flight finish and are acknowledged before Subscribe returns; messages not
	// yet handled stay with the broker for the next member of the group.
	Subscribe(ctx context.Context, s Subscription, h Handler) error
	// Close stops every Subscribe call, waits for running handlers and
	// releases resources. Close is idempotent.
	Close() error
}

// Provisioner is implemented by subscribers that can create a subscription's
// durable state (queue, bindings, consumer group) before Subscribe runs, so
// messages published in between are kept for it.
type Provisioner interface {
	Provision(ctx context.Context, s Subscription) error
}

// Dead-letter headers, added to a message when it is dead-lettered. Adapters may
// add their own (for example Kafka's partition and offset).
const (
	HeaderOriginTopic     = "x-origin-topic"     // topic the message failed on
	HeaderOriginKey       = "x-origin-key"       // its routing key
	HeaderOriginGroup     = "x-origin-group"     // the group whose handler failed
	HeaderError           = "x-error"            // the last handler error
	HeaderAttempts        = "x-attempts"         // how many times it was tried
	HeaderDeadLetteredAt  = "x-dead-lettered-at" // RFC 3339 time with nanoseconds
	HeaderOriginPartition = "x-origin-partition" // Kafka partition it came from
	HeaderOriginOffset    = "x-origin-offset"    // Kafka offset it came from
)

// Errors shared by every adapter; test them with errors.Is.
var (
	// ErrClosed is returned by Publish and Subscribe after Close.
	ErrClosed = errors.New("broker: closed")
	// ErrInvalidPattern is returned for a routing-key pattern that cannot match as written.
	ErrInvalidPattern = errors.New("broker: invalid routing-key pattern")
	// ErrInvalidSubscription is returned for an empty topic, a nil handler,
	// negative concurrency or attempts.
	ErrInvalidSubscription = errors.New("broker: invalid subscription")
	// ErrInvalidMessage is returned by Publish for an empty topic or a message
	// the adapter cannot carry (too large, bad header).
	ErrInvalidMessage = errors.New("broker: invalid message")
	// ErrUnroutable is returned by publishers that detect a message no queue
	// would receive (RabbitMQ's mandatory flag), where that check is enabled.
	ErrUnroutable = errors.New("broker: message is unroutable")
	// ErrNotConfirmed is returned when the broker refused a message or its
	// confirmation was lost and could not be recovered in time.
	ErrNotConfirmed = errors.New("broker: publish not confirmed")
	// ErrHandlerPanic is what a panicking handler's attempt fails with, on
	// every adapter: the attempt counts as failed (and is retried or
	// dead-lettered) and the error is a *PanicError.
	ErrHandlerPanic = errors.New("broker: handler panicked")
)

// PanicError is the error of a handler attempt that panicked. errors.Is(err,
// ErrHandlerPanic) holds for it. Its message (the dead letter's x-error)
// carries the panic value, not the stack.
type PanicError struct {
	Value any    // what the handler panicked with
	Stack []byte // the panicking goroutine's stack
}

func (e *PanicError) Error() string { return fmt.Sprintf("%v: %v", ErrHandlerPanic, e.Value) }

// Unwrap makes errors.Is(err, ErrHandlerPanic) true.
func (e *PanicError) Unwrap() error { return ErrHandlerPanic }

// permanentError marks an error that retries cannot fix.
type permanentError struct{ err error }

func (e *permanentError) Error() string { return "permanent: " + e.err.Error() }
func (e *permanentError) Unwrap() error { return e.err }

// Permanent marks err so that retries stop and the message is dead-lettered at
// once. Permanent(nil) is nil.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return &permanentError{err: err}
}

// IsPermanent reports whether err, or an error it wraps, was marked with Permanent.
func IsPermanent(err error) bool {
	var p *permanentError
	return errors.As(err, &p)
}

// Validate checks s and h as every adapter does before subscribing: a topic,
// a handler, concurrency and attempts not negative, and valid key patterns.
func (s Subscription) Validate(h Handler) error {
	if err := checkName("topic", s.Topic); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalidSubscription, err)
	}
	if s.Group != "" {
		if err := checkName("group", s.Group); err != nil {
			return fmt.Errorf("%w: %v", ErrInvalidSubscription, err)
		}
	}
	if s.DeadLetterTopic != "" {
		if err := checkName("dead-letter topic", s.DeadLetterTopic); err != nil {
			return fmt.Errorf("%w: %v", ErrInvalidSubscription, err)
		}
	}
	if h == nil {
		return fmt.Errorf("%w: nil handler", ErrInvalidSubscription)
	}
	if s.Concurrency < 0 {
		return fmt.Errorf("%w: negative concurrency %d", ErrInvalidSubscription, s.Concurrency)
	}
	if s.MaxAttempts < 0 {
		return fmt.Errorf("%w: negative MaxAttempts %d", ErrInvalidSubscription, s.MaxAttempts)
	}
	if s.MaxInFlight < 0 {
		return fmt.Errorf("%w: negative MaxInFlight %d", ErrInvalidSubscription, s.MaxInFlight)
	}
	if s.DeadLetterTopic != "" && s.DeadLetterTopic == s.Topic {
		return fmt.Errorf("%w: dead-letter topic %q is the topic itself", ErrInvalidSubscription, s.Topic)
	}
	for _, k := range s.Keys {
		if err := ValidatePattern(k); err != nil {
			return err
		}
	}
	return nil
}

// Workers returns the number of handlers to run: Concurrency, or 1 when zero.
func (s Subscription) Workers() int {
	if s.Concurrency <= 0 {
		return 1
	}
	return s.Concurrency
}

// DeadLetterDestination returns where failed messages go: DeadLetterTopic,
// Topic+".dlq" when only MaxAttempts is set, or "" for none.
func (s Subscription) DeadLetterDestination() string {
	if s.DeadLetterTopic != "" {
		return s.DeadLetterTopic
	}
	if s.MaxAttempts > 0 {
		return s.Topic + ".dlq"
	}
	return ""
}

// MaxNameLen is the longest topic or group name every adapter accepts, in
// bytes; adapters may refuse more (Kafka: 249 bytes of [a-zA-Z0-9._-]).
const MaxNameLen = 255

// ValidateTopic reports a topic no adapter can carry (empty, over
// MaxNameLen bytes, not valid UTF-8) as ErrInvalidMessage; every Publish
// calls it before sending anything.
func ValidateTopic(topic string) error {
	if err := checkName("topic", topic); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalidMessage, err)
	}
	return nil
}

func checkName(what, name string) error {
	switch {
	case name == "":
		return fmt.Errorf("empty %s", what)
	case len(name) > MaxNameLen:
		return fmt.Errorf("%s %.40q… is %d bytes, over %d", what, name, len(name), MaxNameLen)
	case !utf8.ValidString(name):
		return fmt.Errorf("%s %q is not valid UTF-8", what, name)
	}
	return nil
}

// DeadLetter returns m prepared for the dead-letter topic: a copy with its
// header copied and the Header* dead-letter headers added.
func DeadLetter(m Message, group string, cause error, at time.Time) Message {
	h := make(map[string]string, len(m.Header)+6)
	for k, v := range m.Header {
		h[k] = v
	}
	h[HeaderOriginTopic] = m.Topic
	h[HeaderOriginKey] = m.Key
	if group != "" {
		h[HeaderOriginGroup] = group
	}
	if cause != nil {
		h[HeaderError] = cause.Error()
	}
	h[HeaderAttempts] = fmt.Sprint(m.Attempt)
	h[HeaderDeadLetteredAt] = at.UTC().Format(time.RFC3339Nano)
	out := Message{ID: m.ID, Key: m.Key, Payload: m.Payload, Header: h, Time: m.Time, Priority: m.Priority}
	return out
}
