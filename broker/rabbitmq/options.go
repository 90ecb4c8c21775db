package rabbitmq

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/go-integration/patterns/broker/engine"
	"github.com/go-integration/patterns/internal/backoff"
)

// QueueType selects RabbitMQ's queue implementation.
type QueueType string

// Queue types.
const (
	// Classic queues: the default; support priorities.
	Classic QueueType = "classic"
	// Quorum queues: replicated, no priorities. They cannot be exclusive,
	// so private (empty Group) subscriptions stay classic. Retries and
	// attempts behave as on classic queues; x-delivery-limit (WithQueueArgs)
	// bounds redeliveries after crashes.
	Quorum QueueType = "quorum"
)

// DefaultMaxMessageSize is RabbitMQ's default max_message_size (128 MiB).
const DefaultMaxMessageSize = 128 << 20

// ErrInvalidOption is returned by NewPublisher and NewSubscriber for an
// option they cannot use; the error names the option.
var ErrInvalidOption = errors.New("rabbitmq: invalid option")

// PublisherOption configures a Publisher; SubscriberOption a Subscriber.
// Options that apply to both are of type Option. Passing a subscriber's
// option to NewPublisher (or the reverse) does not compile.
type (
	PublisherOption  interface{ applyPublisher(*config) }
	SubscriberOption interface{ applySubscriber(*config) }
	// Option configures a Publisher or a Subscriber.
	Option interface {
		PublisherOption
		SubscriberOption
	}
)

type bothOption func(*config)

func (o bothOption) applyPublisher(c *config)  { o(c) }
func (o bothOption) applySubscriber(c *config) { o(c) }

type publisherOption func(*config)

func (o publisherOption) applyPublisher(c *config) { o(c) }

type subscriberOption func(*config)

func (o subscriberOption) applySubscriber(c *config) { o(c) }

type config struct {
	name        string
	logger      *slog.Logger
	tracers     []any
	dialTimeout time.Duration
	heartbeat   time.Duration
	backoffMin  time.Duration
	backoffMax  time.Duration
	exchange    string
	nodes       []string // WithNodes: more nodes of the cluster, after the main URL

	// publisher
	channels       int
	mandatory      bool
	transient      bool
	maxMessageSize int
	maxInFlight    int

	// subscriber
	queueName       func(topic, group string) string
	queueType       QueueType
	maxPriority     uint8
	messageTTL      time.Duration
	maxLength       int
	singleActive    bool
	queueArgs       amqp.Table
	retry           backoff.Policy
	deadLetterQueue bool
	drainTimeout    time.Duration

	errs []error
}

// invalid records a bad option value.
func (c *config) invalid(format string, args ...any) {
	c.errs = append(c.errs, fmt.Errorf(format, args...))
}

func defaultConfig() config {
	return config{
		logger:          slog.Default(),
		dialTimeout:     10 * time.Second,
		heartbeat:       10 * time.Second,
		backoffMin:      50 * time.Millisecond,
		backoffMax:      2 * time.Second,
		channels:        1,
		maxMessageSize:  DefaultMaxMessageSize,
		maxInFlight:     DefaultMaxInFlight,
		queueName:       DefaultQueueName,
		queueType:       Classic,
		deadLetterQueue: true,
		retry:           backoff.Policy{Min: engine.DefaultRetryMin, Max: engine.DefaultRetryMax},
		drainTimeout:    engine.DefaultDrainTimeout,
	}
}

func newPublisherConfig(opts []PublisherOption) (config, error) {
	c := defaultConfig()
	for _, o := range opts {
		if o == nil {
			c.invalid("nil option")
			continue
		}
		o.applyPublisher(&c)
	}
	return c.check()
}

func newSubscriberConfig(opts []SubscriberOption) (config, error) {
	c := defaultConfig()
	for _, o := range opts {
		if o == nil {
			c.invalid("nil option")
			continue
		}
		o.applySubscriber(&c)
	}
	return c.check()
}

func (c config) check() (config, error) {
	if c.queueType == Quorum && c.maxPriority > 0 {
		c.invalid("WithQueueType(Quorum) conflicts with WithMaxPriority: quorum queues have no priorities")
	}
	if err := (backoff.Policy{Min: c.backoffMin, Max: c.backoffMax}).Validate(); err != nil {
		c.invalid("WithReconnectBackoff: %v", err)
	}
	if len(c.errs) > 0 {
		return c, fmt.Errorf("%w: %w", ErrInvalidOption, errors.Join(c.errs...))
	}
	return c, nil
}

// DefaultQueueName names a group's durable queue: topic, ":" and group.
func DefaultQueueName(topic, group string) string { return topic + ":" + group }

// WithConnectionName sets the connection_name client property shown by the
// management UI and rabbitmqctl list_connections. Default: none.
func WithConnectionName(name string) Option { return bothOption(func(c *config) { c.name = name }) }

// WithLogger logs connects, reconnects, republishes, retries and
// dead-letters to l. Default: slog.Default(), as every adapter.
func WithLogger(l *slog.Logger) Option {
	return bothOption(func(c *config) {
		if l == nil {
			c.invalid("WithLogger(nil)")
			return
		}
		c.logger = l
	})
}

// WithTracer installs t, a value implementing one or more of
// broker.PublishTracer (each Publish call; Publisher), broker.ProcessTracer
// (each handler call; Subscriber), broker.DeadLetterTracer (Subscriber) and
// ConnectionTracer (connection events; both); a value implementing none is
// an error. The broker tracers' System is "rabbitmq". WithTracer may be
// given several times: tracers are called in order. Tracers run on the hot
// path: keep them fast and do not block. Default: none; Stats counts
// either way.
func WithTracer(t any) Option {
	return bothOption(func(c *config) {
		if err := checkTracer(t); err != nil {
			c.invalid("WithTracer: %v", err)
			return
		}
		c.tracers = append(c.tracers, t)
	})
}

// WithDialTimeout bounds each connection attempt. Default 10s.
func WithDialTimeout(d time.Duration) Option {
	return bothOption(func(c *config) {
		if d <= 0 {
			c.invalid("WithDialTimeout: %v is not positive", d)
		}
		c.dialTimeout = d
	})
}

// WithHeartbeat sets the AMQP heartbeat, which bounds how long a dead peer goes
// unnoticed. Default 10s.
func WithHeartbeat(d time.Duration) Option {
	return bothOption(func(c *config) {
		if d < 0 {
			c.invalid("WithHeartbeat: %v is negative", d)
		}
		c.heartbeat = d
	})
}

// WithReconnectBackoff sets the first and the longest wait between reconnect
// attempts (doubling, with jitter). Default 50ms to 2s.
func WithReconnectBackoff(minWait, maxWait time.Duration) Option {
	return bothOption(func(c *config) { c.backoffMin, c.backoffMax = minWait, maxWait })
}

// WithNodes adds more nodes of a RabbitMQ cluster (amqp:// or amqps://
// URLs) to the one the constructor is given. The first connection tries the
// constructor's URL, then these in order; after a connection is lost, every
// node is tried once, starting with the one after the node that was lost,
// before waiting the reconnect backoff (WithReconnectBackoff) and trying them
// all again. Topology is declared again on whichever node answers. Use quorum
// queues (WithQueueType(Quorum)) for groups, so a queue survives its node.
// Default: the constructor's URL only.
func WithNodes(urls ...string) Option {
	return bothOption(func(c *config) {
		if len(urls) == 0 {
			c.invalid("WithNodes: no URL")
		}
		for i, u := range urls {
			if _, err := amqp.ParseURI(u); err != nil {
				c.invalid("WithNodes: URL %d: %v", i+1, err)
			}
		}
		c.nodes = append(c.nodes, urls...)
	})
}

// WithExchange routes every topic through one shared durable topic exchange
// named name, with routing keys "<topic>.<key>" (Hutch style). Default: one
// exchange per topic, named like the topic. Publisher and Subscriber must agree.
// In this mode queues get no native dead-letter exchange (TTL and max-length
// overflow drop messages instead of moving them to the dead-letter topic).
func WithExchange(name string) Option { return bothOption(func(c *config) { c.exchange = name }) }

// WithChannels sets the publisher's channel pool size; concurrent Publish
// calls pipeline their confirms on each channel. Default 1: on a 2-core
// server one channel confirmed faster than four (the broker batches confirms
// per channel); more channels help when RabbitMQ has cores to spare.
// Publisher only.
func WithChannels(n int) PublisherOption {
	return publisherOption(func(c *config) {
		if n < 1 {
			c.invalid("WithChannels: %d is below 1", n)
		}
		c.channels = n
	})
}

// WithMaxInFlight bounds the PublishAsync messages the publisher keeps
// unconfirmed to n per channel of the pool (WithChannels): n × channels in
// all, shared by the channels (a key's channel may hold more than n while
// others hold less). PublishAsync blocks while that many are unconfirmed.
// Default DefaultMaxInFlight. Publisher only.
func WithMaxInFlight(n int) PublisherOption {
	return publisherOption(func(c *config) {
		if n < 1 {
			c.invalid("WithMaxInFlight: %d is below 1", n)
		}
		c.maxInFlight = n
	})
}

// WithMandatory publishes with the mandatory flag: a message no queue would
// receive makes Publish return broker.ErrUnroutable. Default off (such
// messages are confirmed and dropped by RabbitMQ). Publisher only.
func WithMandatory() PublisherOption { return publisherOption(func(c *config) { c.mandatory = true }) }

// WithTransient publishes non-persistent messages (lost if the broker
// restarts). Default: persistent. Publisher only.
func WithTransient() PublisherOption { return publisherOption(func(c *config) { c.transient = true }) }

// WithMaxMessageSize sets the payload size above which Publish fails with
// broker.ErrInvalidMessage before sending. Default DefaultMaxMessageSize, the
// server's default limit. Publisher only.
func WithMaxMessageSize(n int) PublisherOption {
	return publisherOption(func(c *config) {
		if n < 0 {
			c.invalid("WithMaxMessageSize: %d is negative", n)
		}
		c.maxMessageSize = n
	})
}

// WithQueueName overrides how a group's durable queue is named. Default
// DefaultQueueName. Subscriber only.
func WithQueueName(f func(topic, group string) string) SubscriberOption {
	return subscriberOption(func(c *config) {
		if f == nil {
			c.invalid("WithQueueName: nil function")
			return
		}
		c.queueName = f
	})
}

// WithQueueType selects classic (default) or quorum queues for groups.
// Subscriber only.
func WithQueueType(t QueueType) SubscriberOption {
	return subscriberOption(func(c *config) {
		if t != Classic && t != Quorum {
			c.invalid("WithQueueType: unknown queue type %q", t)
		}
		c.queueType = t
	})
}

// WithMaxPriority declares queues with x-max-priority n, so Message.Priority
// (capped at n) orders delivery. Default 0: no priorities. Classic queues
// only. Subscriber only.
func WithMaxPriority(n uint8) SubscriberOption {
	return subscriberOption(func(c *config) { c.maxPriority = n })
}

// WithMessageTTL declares queues with x-message-ttl: messages older than d are
// dead-lettered (to the dead-letter topic where one is set) or dropped.
// Default none. Subscriber only.
func WithMessageTTL(d time.Duration) SubscriberOption {
	return subscriberOption(func(c *config) {
		if d < 0 {
			c.invalid("WithMessageTTL: %v is negative", d)
		}
		c.messageTTL = d
	})
}

// WithMaxLength declares queues with x-max-length n: the oldest messages
// beyond it are dead-lettered or dropped. Default none. Subscriber only.
func WithMaxLength(n int) SubscriberOption {
	return subscriberOption(func(c *config) {
		if n < 0 {
			c.invalid("WithMaxLength: %d is negative", n)
		}
		c.maxLength = n
	})
}

// WithSingleActiveConsumer declares group queues with
// x-single-active-consumer: one member of a group receives at a time, the
// others stand by, so order holds across the group. Subscriber only.
func WithSingleActiveConsumer() SubscriberOption {
	return subscriberOption(func(c *config) { c.singleActive = true })
}

// WithQueueArgs adds raw queue arguments, the escape hatch for what the typed
// options do not cover; they override typed options with the same key.
// Subscriber only.
func WithQueueArgs(args amqp.Table) SubscriberOption {
	return subscriberOption(func(c *config) {
		if c.queueArgs == nil {
			c.queueArgs = amqp.Table{}
		}
		for k, v := range args {
			c.queueArgs[k] = v
		}
	})
}

// WithRetryBackoff sets the wait before a failed message's next attempt: a
// random wait up to minWait after the first failure, the ceiling doubling
// per failure up to maxWait (full jitter). The message stays unacked and
// ahead of later messages of its key meanwhile. Default
// engine.DefaultRetryMin to engine.DefaultRetryMax, as on every adapter.
// Subscriber only.
func WithRetryBackoff(minWait, maxWait time.Duration) SubscriberOption {
	return subscriberOption(func(c *config) {
		p := backoff.Policy{Min: minWait, Max: maxWait}
		if err := p.Validate(); err != nil {
			c.invalid("WithRetryBackoff: %v", err)
		}
		c.retry = p
	})
}

// WithoutDeadLetterQueue stops subscribers from declaring a durable queue on
// the dead-letter topic. By default a subscription with a dead-letter topic
// declares the queue that this subscriber would declare for that topic with
// the same Group (or group "dlq" for private subscriptions), queue options
// included, so dead letters are kept until someone reads them. With
// WithMessageTTL or WithMaxLength, that queue would expire or drop dead
// letters too: use this option and provision the dead-letter queue with
// another Subscriber. Subscriber only.
func WithoutDeadLetterQueue() SubscriberOption {
	return subscriberOption(func(c *config) { c.deadLetterQueue = false })
}

// WithDrainTimeout bounds how long handlers in flight may run after
// Subscribe's context ends or Close is called (then their context is
// cancelled), and how long a Publisher's Close waits for outstanding confirms
// (then those Publish calls fail with broker.ErrNotConfirmed). Default
// engine.DefaultDrainTimeout (30 s), as on every adapter.
func WithDrainTimeout(d time.Duration) Option {
	return bothOption(func(c *config) {
		if d <= 0 {
			c.invalid("WithDrainTimeout: %v is not positive", d)
		}
		c.drainTimeout = d
	})
}
