package kafka

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/go-integration/patterns/broker/engine"
	"github.com/go-integration/patterns/internal/backoff"
)

// Options are typed by the side that reads them, as franz-go's ProducerOpt
// and ConsumerOpt are: NewPublisher takes PublisherOptions, NewSubscriber
// SubscriberOptions and NewAdmin AdminOptions, so an option the type would
// ignore does not compile. An Option (WithClientOptions, WithLogger,
// CreateTopics, MaxMessageBytes) is all three. Every option checks its
// arguments; an invalid one makes the constructor fail with an error
// wrapping ErrInvalidOption.

// PublisherOption configures a Publisher.
type PublisherOption interface{ applyPublisher(*config) error }

// SubscriberOption configures a Subscriber.
type SubscriberOption interface{ applySubscriber(*config) error }

// AdminOption configures an Admin.
type AdminOption interface{ applyAdmin(*config) error }

// Option configures a Publisher, a Subscriber and an Admin alike; types
// that do not use it (an Admin for CreateTopics) ignore it.
type Option interface {
	PublisherOption
	SubscriberOption
	AdminOption
}

// PubSubOption configures a Publisher or a Subscriber (WithTracer).
type PubSubOption interface {
	PublisherOption
	SubscriberOption
}

type pubSubOpt func(*config) error

func (f pubSubOpt) applyPublisher(c *config) error  { return f(c) }
func (f pubSubOpt) applySubscriber(c *config) error { return f(c) }

type sharedOpt func(*config) error

func (f sharedOpt) applyPublisher(c *config) error  { return f(c) }
func (f sharedOpt) applySubscriber(c *config) error { return f(c) }
func (f sharedOpt) applyAdmin(c *config) error      { return f(c) }

type publisherOpt func(*config) error

func (f publisherOpt) applyPublisher(c *config) error { return f(c) }

type subscriberOpt func(*config) error

func (f subscriberOpt) applySubscriber(c *config) error { return f(c) }

// DefaultFetchMaxBytes is the FetchMaxBytes and FetchMaxPartitionBytes a
// Subscriber's consumers use unless WithClientOptions sets others: the
// largest fetch response the client buffers on top of the records the
// engine holds (see the package documentation).
const DefaultFetchMaxBytes = 1 << 20

type config struct {
	brokers         []string
	clientOpts      []kgo.Opt
	logger          *slog.Logger
	createTopics    bool
	topicDefaults   Topic
	start           Offset
	retry           backoff.Policy
	drainTimeout    time.Duration
	commitInterval  time.Duration
	maxMessageBytes int32
	linger          time.Duration
	sessionTimeout  time.Duration
	rebalanceTO     time.Duration
	heartbeat       time.Duration
	stuckAfter      time.Duration
	tracers         []any
}

func defaultConfig(brokers []string) config {
	return config{
		brokers:        append([]string(nil), brokers...),
		logger:         slog.Default(),
		retry:          backoff.Policy{Min: engine.DefaultRetryMin, Max: engine.DefaultRetryMax},
		drainTimeout:   engine.DefaultDrainTimeout,
		commitInterval: time.Second,
		stuckAfter:     DefaultStuckAfter,
	}
}

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrInvalidOption}, args...)...)
}

// newConfig applies opts with apply (one of the per-side methods).
func newConfig[O any](brokers []string, opts []O, apply func(O, *config) error) (config, error) {
	c := defaultConfig(brokers)
	if len(c.brokers) == 0 {
		return c, fmt.Errorf("kafka: no seed brokers")
	}
	for _, o := range opts {
		if any(o) == nil {
			continue
		}
		if err := apply(o, &c); err != nil {
			return c, err
		}
	}
	if c.sessionTimeout != 0 && c.heartbeat != 0 && c.heartbeat >= c.sessionTimeout {
		return c, invalid("GroupTimeouts: heartbeat %v must be shorter than the session timeout %v", c.heartbeat, c.sessionTimeout)
	}
	return c, nil
}

func publisherConfig(brokers []string, opts []PublisherOption) (config, error) {
	return newConfig(brokers, opts, PublisherOption.applyPublisher)
}

func subscriberConfig(brokers []string, opts []SubscriberOption) (config, error) {
	return newConfig(brokers, opts, SubscriberOption.applySubscriber)
}

func adminConfig(brokers []string, opts []AdminOption) (config, error) {
	return newConfig(brokers, opts, AdminOption.applyAdmin)
}

// baseOpts are the kgo options every client of this package starts with;
// WithClientOptions come last so they win.
func (c *config) baseOpts(h *dialHook) []kgo.Opt {
	opts := []kgo.Opt{
		kgo.SeedBrokers(c.brokers...),
		kgo.WithHooks(h),
	}
	if c.maxMessageBytes > 0 {
		opts = append(opts, kgo.ProducerBatchMaxBytes(c.maxMessageBytes))
	}
	return append(opts, c.clientOpts...)
}

// WithClientOptions adds franz-go client options (TLS, SASL, client ID,
// timeouts, fetch sizes...) to every client the type creates. They are
// applied last, so they override this package's choices; options that break
// its guarantees (such as disabling idempotence or acks=all, or
// kgo.BlockRebalanceOnPoll) are the caller's responsibility. A kgo.Balancers
// given here is wrapped with the Keys union protocol (see the package
// documentation). A nil kgo.Opt is an error.
func WithClientOptions(opts ...kgo.Opt) Option {
	return sharedOpt(func(c *config) error {
		for i, o := range opts {
			if o == nil {
				return invalid("WithClientOptions: option %d is nil", i)
			}
		}
		c.clientOpts = append(c.clientOpts, opts...)
		return nil
	})
}

// WithLogger sets the logger for dropped messages, retries, dead-lettering,
// commits and rebalances. Default: slog.Default(). A nil logger is an error.
func WithLogger(l *slog.Logger) Option {
	return sharedOpt(func(c *config) error {
		if l == nil {
			return invalid("WithLogger(nil)")
		}
		c.logger = l
		return nil
	})
}

// WithTracer installs t, a value implementing one or more of
// broker.PublishTracer (each Publish and PublishAsync call; Publisher),
// broker.ProcessTracer (each handler call; Subscriber),
// broker.DeadLetterTracer (Subscriber), RebalanceTracer (partitions
// assigned, revoked, lost; Subscriber) and PartitionHealthTracer (a
// partition stuck and recovered, see WithStuckAfter; Subscriber); a value
// implementing none is an error. The broker tracers' System is "kafka". WithTracer may be given
// several times: tracers are called in order. Default: none.
func WithTracer(t any) PubSubOption {
	return pubSubOpt(func(c *config) error {
		if err := checkTracer(t); err != nil {
			return invalid("WithTracer: %v", err)
		}
		c.tracers = append(c.tracers, t)
		return nil
	})
}

// CreateTopics makes Publish and Subscribe create a missing topic (including
// the dead-letter topic) with the settings of t (its Name is ignored).
// Default: off, so a missing topic is an error wrapping ErrUnknownTopic.
// Provision always creates missing topics, with t's settings when this option
// is set and the broker's defaults otherwise. An Admin ignores it. Negative
// Partitions or ReplicationFactor are an error.
func WithCreateTopics(t Topic) Option {
	return sharedOpt(func(c *config) error {
		if t.Partitions < 0 || t.ReplicationFactor < 0 {
			return invalid("CreateTopics: negative partitions %d or replication factor %d", t.Partitions, t.ReplicationFactor)
		}
		c.createTopics = true
		c.topicDefaults = t
		return nil
	})
}

// MaxMessageBytes sets the largest record batch the producer builds
// (kgo.ProducerBatchMaxBytes); a single larger message fails with
// broker.ErrInvalidMessage. Default: franz-go's 1,000,012 bytes, which matches
// Kafka's default max.message.bytes; raise it together with the topic's
// max.message.bytes (Topic.Config). A Subscriber uses it for dead letters;
// an Admin ignores it. n must be 0 (the default) or between 512 and 1 GiB.
func WithMaxMessageBytes(n int32) Option {
	return sharedOpt(func(c *config) error {
		if n != 0 && (n < 512 || n > 1<<30) {
			return invalid("WithMaxMessageBytes(%d): want 512 to %d", n, 1<<30)
		}
		c.maxMessageBytes = n
		return nil
	})
}

// Linger sets how long a partition's batch waits for more records before it
// is sent. Default: 0, so a lone Publish is sent at once; concurrent Publish
// calls still share batches, because records queue while a request is in
// flight. Negative is an error.
func WithLinger(d time.Duration) PublisherOption {
	return publisherOpt(func(c *config) error {
		if d < 0 {
			return invalid("negative Linger %v", d)
		}
		c.linger = d
		return nil
	})
}

// StartAt sets where a subscription starts when its group has no committed
// offset for a partition, and where a subscription without a group starts.
// Default: Earliest() for groups, Latest() for subscriptions without a group.
// An invalid offset is an error wrapping both ErrInvalidOption and
// ErrInvalidOffset.
func WithStartAt(o Offset) SubscriberOption {
	return subscriberOpt(func(c *config) error {
		if err := o.validate(); err != nil {
			return fmt.Errorf("%w: StartAt: %w", ErrInvalidOption, err)
		}
		c.start = o
		return nil
	})
}

// WithRetryBackoff sets the wait before a failed message's next attempt:
// full jitter, a random wait up to min after the first failure, the cap
// doubling per failure up to max. Default engine.DefaultRetryMin to
// engine.DefaultRetryMax (50 ms to 5 s). The group stays healthy while a
// message waits: polling does not depend on handlers. min must be positive
// and max at least min.
func WithRetryBackoff(min, max time.Duration) SubscriberOption {
	return subscriberOpt(func(c *config) error {
		p := backoff.Policy{Min: min, Max: max}
		if err := p.Validate(); err != nil {
			return invalid("WithRetryBackoff(%v, %v): %v", min, max, err)
		}
		c.retry = p
		return nil
	})
}

// WithDrainTimeout bounds how long running handlers may go on, when
// Subscribe stops or loses partitions in a rebalance, before their context is
// cancelled, and how long a Publisher's Close waits for records in flight to
// be acknowledged. Default: engine.DefaultDrainTimeout (30 s). It must be
// positive.
func WithDrainTimeout(d time.Duration) PubSubOption {
	return pubSubOpt(func(c *config) error {
		if d <= 0 {
			return invalid("WithDrainTimeout %v must be positive", d)
		}
		c.drainTimeout = d
		return nil
	})
}

// CommitInterval sets how often offsets of handled messages are committed in
// the background; they are also committed synchronously when partitions are
// revoked and when Subscribe returns. Default: 1 s. A shorter interval means
// fewer redeliveries after a crash and more commit requests. It must be
// positive.
func WithCommitInterval(d time.Duration) SubscriberOption {
	return subscriberOpt(func(c *config) error {
		if d <= 0 {
			return invalid("CommitInterval %v must be positive", d)
		}
		c.commitInterval = d
		return nil
	})
}

// GroupTimeouts sets the consumer-group session timeout, rebalance timeout
// and heartbeat interval. Zero keeps franz-go's defaults (45 s, 60 s, 3 s);
// negative is an error, and so is a heartbeat not shorter than the session
// timeout. Tests against kfake use short ones so that rebalances take
// milliseconds.
func WithGroupTimeouts(session, rebalance, heartbeat time.Duration) SubscriberOption {
	return subscriberOpt(func(c *config) error {
		if session < 0 || rebalance < 0 || heartbeat < 0 {
			return invalid("WithGroupTimeouts(%v, %v, %v): negative", session, rebalance, heartbeat)
		}
		c.sessionTimeout, c.rebalanceTO, c.heartbeat = session, rebalance, heartbeat
		return nil
	})
}

func (c *config) groupOpts() []kgo.Opt {
	var opts []kgo.Opt
	if c.sessionTimeout > 0 {
		opts = append(opts, kgo.SessionTimeout(c.sessionTimeout))
	}
	if c.rebalanceTO > 0 {
		opts = append(opts, kgo.RebalanceTimeout(c.rebalanceTO))
	}
	if c.heartbeat > 0 {
		opts = append(opts, kgo.HeartbeatInterval(c.heartbeat))
	}
	return opts
}
