package kafka

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/go-integration/patterns/broker"
	"github.com/go-integration/patterns/broker/engine"
	"github.com/go-integration/patterns/internal/hooks"
)

// Subscriber consumes Kafka topics. A Subscription with a Group joins that
// consumer group; one without a Group reads every partition itself, from
// where StartAt says (default: records published after Subscribe starts).
// It runs on the module's shared consumer engine (broker/engine) and
// implements broker.Subscriber and broker.Provisioner.
type Subscriber struct {
	cfg       config
	admin     *Admin
	prod      *kgo.Client // dead letters
	eng       *engine.Engine
	balancers []kgo.GroupBalancer // the client's, wrapped per Subscribe call

	mu    sync.Mutex
	recvs map[*receiver]struct{}

	noReopen  atomic.Bool // tests: see receiver.kill
	st        counters
	rebalance []RebalanceTracer
	health    []PartitionHealthTracer
}

var (
	_ broker.Subscriber  = (*Subscriber)(nil)
	_ broker.Provisioner = (*Subscriber)(nil)
)

// counters are the subscriber's own statistics (the engine keeps the
// common ones).
type counters struct {
	skipped, commits, commitErrors, revoked, lost atomic.Uint64
}

// NewSubscriber returns a Subscriber for the seed brokers. It does not
// connect until Subscribe or Provision.
func NewSubscriber(brokers []string, opts ...SubscriberOption) (*Subscriber, error) {
	cfg, err := subscriberConfig(brokers, opts)
	if err != nil {
		return nil, err
	}
	adm, err := newAdmin(cfg)
	if err != nil {
		return nil, err
	}
	prod, err := kgo.NewClient(append([]kgo.Opt{kgo.RequiredAcks(kgo.AllISRAcks()), kgo.ProducerLinger(0)}, cfg.baseOpts(adm.hook)...)...)
	if err != nil {
		adm.Close()
		return nil, fmt.Errorf("kafka: new dead-letter producer: %w", err)
	}
	s := &Subscriber{cfg: cfg, admin: adm, prod: prod, recvs: map[*receiver]struct{}{}, rebalance: hooks.Pick[RebalanceTracer](cfg.tracers), health: hooks.Pick[PartitionHealthTracer](cfg.tracers)}
	// The balancers WithClientOptions chose (franz-go's default otherwise):
	// each Subscribe call wraps them with the Keys union protocol.
	s.balancers, _ = prod.OptValue(kgo.Balancers).([]kgo.GroupBalancer)
	if len(s.balancers) == 0 {
		s.balancers = []kgo.GroupBalancer{kgo.CooperativeStickyBalancer()}
	}
	s.eng, err = engine.New(driver{s}, engine.Config{
		Name:         "kafka",
		Logger:       cfg.logger,
		DrainTimeout: cfg.drainTimeout,
		Retry:        cfg.retry,
		Validate:     validateSubscriptionTopics,
		Tracers:      cfg.tracers,
	})
	if err != nil {
		prod.Close()
		adm.Close()
		return nil, fmt.Errorf("%w: %w", ErrInvalidOption, err)
	}
	return s, nil
}

// Client returns the franz-go client the subscriber uses to publish dead
// letters and to look up topics (the escape hatch). Each Subscribe call
// consumes with a client of its own; a handler reaches its record through
// Message.Raw, a *kgo.Record. Do not close it: Close does.
func (s *Subscriber) Client() *kgo.Client { return s.prod }

// Admin returns the Admin this subscriber uses for topics and offsets; it
// is valid until the subscriber is closed. Do not close it.
func (s *Subscriber) Admin() *Admin { return s.admin }

// Ping checks that a broker answers before ctx ends.
func (s *Subscriber) Ping(ctx context.Context) error { return s.admin.Ping(ctx) }

// Provision creates sub's topic and dead-letter topic when missing (with the
// CreateTopics settings, or the broker's defaults) and, for a group, fixes
// where the group starts so that every message published after Provision
// returns reaches it: a group without committed offsets starts at the
// earliest record (the default), so nothing needs committing; with
// WithStartAt(Latest()), WithStartAt(AtTime(...)) or WithStartAt(AtOffsets(...)) the
// resolved offsets are committed for partitions that have no commit yet.
func (s *Subscriber) Provision(ctx context.Context, sub broker.Subscription) error {
	if err := sub.Validate(func(context.Context, broker.Message) error { return nil }); err != nil {
		return err
	}
	if err := validateSubscriptionTopics(sub); err != nil {
		return err
	}
	if s.isClosed() {
		return broker.ErrClosed
	}
	for _, t := range []string{sub.Topic, sub.DeadLetterDestination()} {
		if t == "" {
			continue
		}
		if err := s.admin.requireTopic(ctx, t, true, s.cfg.topicDefaults); err != nil {
			return err
		}
	}
	if sub.Group == "" {
		return nil
	}
	start := s.cfg.start.resolve(true)
	if start.kind == kindEarliest {
		return nil
	}
	return s.pinStart(ctx, sub, start, true)
}

// pinStart commits start for the partitions of sub.Topic where sub.Group has
// no committed offset. With strict unset, a refusal (the group has active
// members, who already have their positions) is only logged.
func (s *Subscriber) pinStart(ctx context.Context, sub broker.Subscription, start Offset, strict bool) error {
	com, err := s.admin.committed(ctx, sub.Group, sub.Topic)
	if err != nil {
		return err
	}
	offs, err := s.admin.startOffsets(ctx, sub.Topic, start)
	if err != nil {
		return err
	}
	for p := range com {
		delete(offs, p)
	}
	if len(offs) == 0 {
		return nil
	}
	err = s.admin.commit(ctx, sub.Group, sub.Topic, offs)
	if err != nil && !strict {
		s.cfg.logger.Debug("kafka: start position not pinned (group active?)", "group", sub.Group, "topic", sub.Topic, "err", err)
		return nil
	}
	return err
}

func (s *Subscriber) isClosed() bool {
	select {
	case <-s.eng.Closing():
		return true
	default:
		return false
	}
}

// Subscribe runs h for the messages of sub until ctx is done (it returns
// nil) or Close is called (broker.ErrClosed). See the package documentation
// for ordering, commits, attempts, dead-lettering and the memory bound.
func (s *Subscriber) Subscribe(ctx context.Context, sub broker.Subscription, h broker.Handler) error {
	return s.eng.Subscribe(ctx, sub, h)
}

// Close stops every Subscribe call, waits for their running handlers (up to
// DrainTimeout) and commits, then releases the clients. Close is idempotent.
func (s *Subscriber) Close() error {
	if s.isClosed() {
		return s.eng.Close()
	}
	err := s.eng.Close()
	s.prod.Close()
	s.admin.Close()
	return err
}

// SubscriberStats are counters since NewSubscriber: the counters every
// adapter has, and Kafka's own.
type SubscriberStats struct {
	broker.SubscriberStats
	Skipped      uint64 // records whose key matched no Keys pattern of the group's union (committed unhandled, not Received)
	Commits      uint64 // partition offsets committed successfully
	CommitErrors uint64 // failed commit requests
	Revoked      uint64 // partitions revoked from this subscriber's members by rebalances
	Lost         uint64 // partitions lost (session expired, fenced) without a chance to commit
	// Lag is, per topic and partition being consumed now, the high
	// watermark at the last fetch minus the next offset to commit.
	Lag map[string]map[int32]int64
}

// Stats returns the subscriber's counters and current lag.
func (s *Subscriber) Stats() SubscriberStats {
	st := SubscriberStats{
		SubscriberStats: s.eng.Stats(),
		Skipped:         s.st.skipped.Load(),
		Commits:         s.st.commits.Load(), CommitErrors: s.st.commitErrors.Load(),
		Revoked: s.st.revoked.Load(), Lost: s.st.lost.Load(),
		Lag: map[string]map[int32]int64{},
	}
	s.mu.Lock()
	rs := make([]*receiver, 0, len(s.recvs))
	for r := range s.recvs {
		rs = append(rs, r)
	}
	s.mu.Unlock()
	for _, r := range rs {
		if st.Lag[r.sub.Topic] == nil {
			st.Lag[r.sub.Topic] = map[int32]int64{}
		}
		r.lag(st.Lag[r.sub.Topic])
	}
	return st
}
