package kafka

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/go-integration/patterns/broker"
)

// Subscriber consumes Kafka topics. A Subscription with a Group joins that
// consumer group; one without a Group reads every partition itself, from
// where StartAt says (default: records published after Subscribe starts).
// It implements broker.Subscriber and broker.Provisioner.
type Subscriber struct {
	cfg   config
	admin *Admin
	prod  *kgo.Client // dead letters

	mu      sync.Mutex
	closed  bool
	closing chan struct{}
	subs    sync.WaitGroup
	runs    map[*run]struct{}

	st counters
}

var (
	_ broker.Subscriber  = (*Subscriber)(nil)
	_ broker.Provisioner = (*Subscriber)(nil)
)

// counters are the subscriber's statistics.
type counters struct {
	consumed, handled, skipped, retried, deadLettered, dropped, commits, commitErrors, revoked, lost atomic.Uint64
}

// NewSubscriber returns a Subscriber for the seed brokers. It does not
// connect until Subscribe or Provision.
func NewSubscriber(brokers []string, opts ...Option) (*Subscriber, error) {
	cfg, err := newConfig(brokers, opts)
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
	return &Subscriber{cfg: cfg, admin: adm, prod: prod, closing: make(chan struct{}), runs: map[*run]struct{}{}}, nil
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
// StartAt(Latest()), StartAt(AtTime(...)) or StartAt(AtOffsets(...)) the
// resolved offsets are committed for partitions that have no commit yet.
func (s *Subscriber) Provision(ctx context.Context, sub broker.Subscription) error {
	if err := sub.Validate(func(context.Context, broker.Message) error { return nil }); err != nil {
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
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// Subscribe runs h for the messages of sub until ctx is done (it returns
// nil) or Close is called (broker.ErrClosed). See the package documentation
// for ordering, commits, retries and dead-lettering.
func (s *Subscriber) Subscribe(ctx context.Context, sub broker.Subscription, h broker.Handler) error {
	if err := sub.Validate(h); err != nil {
		return err
	}
	pats, err := broker.CompilePatterns(sub.Keys)
	if err != nil {
		return err
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return broker.ErrClosed
	}
	s.subs.Add(1)
	s.mu.Unlock()
	defer s.subs.Done()

	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-s.closing:
			cancel()
		case <-runCtx.Done():
		}
	}()

	r := &run{s: s, sub: sub, h: h, pats: pats, dlq: sub.DeadLetterDestination(), workers: map[int32]*worker{}}
	err = r.start(runCtx)
	if err == nil {
		s.mu.Lock()
		s.runs[r] = struct{}{}
		s.mu.Unlock()
		err = r.loop(runCtx)
		s.mu.Lock()
		delete(s.runs, r)
		s.mu.Unlock()
	}
	switch {
	case s.isClosed():
		return broker.ErrClosed
	case err != nil && ctx.Err() != nil && !errors.Is(ctx.Err(), context.DeadlineExceeded):
		return nil // cancelled while starting
	case err != nil && ctx.Err() != nil && errors.Is(err, ErrUnreachable):
		return err // the deadline passed with no broker answering
	case ctx.Err() != nil:
		return nil
	}
	return err
}

// Close stops every Subscribe call, waits for their running handlers (up to
// DrainTimeout) and commits, then releases the clients. Close is idempotent.
func (s *Subscriber) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	close(s.closing)
	s.mu.Unlock()
	s.subs.Wait()
	s.prod.Close()
	s.admin.Close()
	return nil
}

// SubscriberStats are counters since NewSubscriber.
type SubscriberStats struct {
	Consumed     uint64 // records fetched and taken by a worker
	Handled      uint64 // records whose handler returned nil
	Skipped      uint64 // records whose key matched no Keys pattern (committed unhandled)
	Retried      uint64 // failed attempts followed by another attempt
	DeadLettered uint64 // records published to the dead-letter topic
	Dropped      uint64 // permanently failed records with no dead-letter topic
	Commits      uint64 // partition offsets committed successfully
	CommitErrors uint64 // failed commit requests
	Revoked      uint64 // partitions revoked from this subscriber's members by rebalances
	Lost         uint64 // partitions lost (session expired, fenced) without a chance to commit
	// Lag is, per topic and partition being consumed now, the high
	// watermark at the last fetch minus the next offset to handle.
	Lag map[string]map[int32]int64
}

// Stats returns the subscriber's counters and current lag.
func (s *Subscriber) Stats() SubscriberStats {
	st := SubscriberStats{
		Consumed: s.st.consumed.Load(), Handled: s.st.handled.Load(), Skipped: s.st.skipped.Load(),
		Retried: s.st.retried.Load(), DeadLettered: s.st.deadLettered.Load(), Dropped: s.st.dropped.Load(),
		Commits: s.st.commits.Load(), CommitErrors: s.st.commitErrors.Load(),
		Revoked: s.st.revoked.Load(), Lost: s.st.lost.Load(),
		Lag: map[string]map[int32]int64{},
	}
	s.mu.Lock()
	runs := make([]*run, 0, len(s.runs))
	for r := range s.runs {
		runs = append(runs, r)
	}
	s.mu.Unlock()
	for _, r := range runs {
		r.mu.Lock()
		for p, w := range r.workers {
			if st.Lag[r.sub.Topic] == nil {
				st.Lag[r.sub.Topic] = map[int32]int64{}
			}
			if hwm, next := w.hwm.Load(), w.next.Load(); hwm >= 0 && next >= 0 {
				st.Lag[r.sub.Topic][p] = max(hwm-next, 0)
			}
		}
		r.mu.Unlock()
	}
	return st
}

// backoff returns the delay after failed attempt n (1-based).
func (c *config) backoff(n int) time.Duration {
	d := c.backoffMin
	for i := 1; i < n && d < c.backoffMax; i++ {
		d *= 2
	}
	return min(d, c.backoffMax)
}
