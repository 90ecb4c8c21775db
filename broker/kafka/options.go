package kafka

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// Option configures a Publisher, a Subscriber or an Admin. Options that do
// not apply to a type are ignored by it; each option's comment says which
// types read it and its default.
type Option func(*config)

type config struct {
	brokers         []string
	clientOpts      []kgo.Opt
	logger          *slog.Logger
	createTopics    bool
	topicDefaults   Topic
	start           Offset
	backoffMin      time.Duration
	backoffMax      time.Duration
	drainTimeout    time.Duration
	commitInterval  time.Duration
	maxBuffered     int
	maxMessageBytes int32
	linger          time.Duration
	sessionTimeout  time.Duration
	rebalanceTO     time.Duration
	heartbeat       time.Duration
}

func defaultConfig() config {
	return config{
		logger:         slog.Default(),
		backoffMin:     100 * time.Millisecond,
		backoffMax:     5 * time.Second,
		drainTimeout:   30 * time.Second,
		commitInterval: time.Second,
		maxBuffered:    10000,
	}
}

func newConfig(brokers []string, opts []Option) (config, error) {
	c := defaultConfig()
	c.brokers = append([]string(nil), brokers...)
	for _, o := range opts {
		if o != nil {
			o(&c)
		}
	}
	if len(c.brokers) == 0 {
		return c, fmt.Errorf("kafka: no seed brokers")
	}
	if c.backoffMin <= 0 || c.backoffMax < c.backoffMin {
		return c, fmt.Errorf("kafka: Backoff(%v, %v): min must be positive and max at least min", c.backoffMin, c.backoffMax)
	}
	if c.drainTimeout < 0 {
		return c, fmt.Errorf("kafka: negative DrainTimeout %v", c.drainTimeout)
	}
	if c.commitInterval <= 0 {
		return c, fmt.Errorf("kafka: CommitInterval %v must be positive", c.commitInterval)
	}
	if c.maxBuffered <= 0 {
		return c, fmt.Errorf("kafka: MaxBufferedRecords %d must be positive", c.maxBuffered)
	}
	if err := c.start.validate(); err != nil {
		return c, err
	}
	if c.maxMessageBytes < 0 {
		return c, fmt.Errorf("kafka: negative MaxMessageBytes %d", c.maxMessageBytes)
	}
	if c.sessionTimeout != 0 && c.heartbeat != 0 && c.heartbeat >= c.sessionTimeout {
		return c, fmt.Errorf("kafka: GroupTimeouts: heartbeat %v must be shorter than the session timeout %v", c.heartbeat, c.sessionTimeout)
	}
	return c, nil
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
// timeouts...) to every client the type creates. They are applied last, so
// they override this package's choices; options that break its guarantees
// (such as disabling idempotence or acks=all) are the caller's responsibility.
// Read by Publisher, Subscriber and Admin.
func WithClientOptions(opts ...kgo.Opt) Option {
	return func(c *config) { c.clientOpts = append(c.clientOpts, opts...) }
}

// WithLogger sets the logger for dropped messages, retries, dead-lettering,
// commits and rebalances. Default: slog.Default(). Read by every type.
func WithLogger(l *slog.Logger) Option {
	return func(c *config) {
		if l != nil {
			c.logger = l
		}
	}
}

// CreateTopics makes Publish and Subscribe create a missing topic (including
// the dead-letter topic) with the settings of t (its Name is ignored).
// Default: off, so a missing topic is an error wrapping ErrUnknownTopic.
// Provision always creates missing topics, with t's settings when this option
// is set and the broker's defaults otherwise. Read by Publisher and Subscriber.
func CreateTopics(t Topic) Option {
	return func(c *config) {
		c.createTopics = true
		c.topicDefaults = t
	}
}

// StartAt sets where a subscription starts when its group has no committed
// offset for a partition, and where a subscription without a group starts.
// Default: Earliest() for groups, Latest() for subscriptions without a group.
// Read by Subscriber.
func StartAt(o Offset) Option {
	return func(c *config) { c.start = o }
}

// Backoff sets the delay between attempts of a failing message: min after the
// first failure, doubling up to max. Default: 100 ms to 5 s. The partition's
// fetching is paused while its buffer is full, so the group stays healthy.
// Read by Subscriber.
func Backoff(min, max time.Duration) Option {
	return func(c *config) { c.backoffMin, c.backoffMax = min, max }
}

// DrainTimeout bounds how long Subscribe waits, when it stops or loses
// partitions in a rebalance, for running handlers to finish before it cancels
// their context. Default: 30 s. Read by Subscriber.
func DrainTimeout(d time.Duration) Option {
	return func(c *config) { c.drainTimeout = d }
}

// CommitInterval sets how often offsets of handled messages are committed in
// the background; they are also committed synchronously when partitions are
// revoked and when Subscribe returns. Default: 1 s. A shorter interval means
// fewer redeliveries after a crash and more commit requests. Read by Subscriber.
func CommitInterval(d time.Duration) Option {
	return func(c *config) { c.commitInterval = d }
}

// MaxBufferedRecords bounds the fetched records waiting for handlers: the
// subscription stops polling while this many wait, and pauses fetching of a
// partition whose own queue reaches it (a record backing off), so the other
// partitions go on. One fetch response (kgo.FetchMaxBytes) may come on top.
// Default: 10,000. Read by Subscriber.
func MaxBufferedRecords(n int) Option {
	return func(c *config) { c.maxBuffered = n }
}

// MaxMessageBytes sets the largest record batch the producer builds
// (kgo.ProducerBatchMaxBytes); a single larger message fails with
// broker.ErrInvalidMessage. Default: franz-go's 1,000,012 bytes, which matches
// Kafka's default max.message.bytes; raise it together with the topic's
// max.message.bytes (Topic.Config). Read by Publisher and Subscriber (dead letters).
func MaxMessageBytes(n int32) Option {
	return func(c *config) { c.maxMessageBytes = n }
}

// Linger sets how long a partition's batch waits for more records before it
// is sent. Default: 0, so a lone Publish is sent at once; concurrent Publish
// calls still share batches, because records queue while a request is in
// flight. Read by Publisher.
func Linger(d time.Duration) Option {
	return func(c *config) { c.linger = d }
}

// GroupTimeouts sets the consumer-group session timeout, rebalance timeout
// and heartbeat interval. Zero keeps franz-go's defaults (45 s, 60 s, 3 s).
// Tests against kfake use short ones so that rebalances take milliseconds.
// Read by Subscriber.
func GroupTimeouts(session, rebalance, heartbeat time.Duration) Option {
	return func(c *config) { c.sessionTimeout, c.rebalanceTO, c.heartbeat = session, rebalance, heartbeat }
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
