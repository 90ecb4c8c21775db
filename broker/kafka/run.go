package kafka

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/go-integration/patterns/broker"
	"github.com/go-integration/patterns/broker/engine"
)

// driver is the Subscriber's engine.Driver: it opens one consuming client
// per Subscribe call (a receiver) and publishes dead letters through the
// subscriber's producer. Dispatching by key, attempts, dead-letter
// bookkeeping, panics and draining are the engine's.
type driver struct{ s *Subscriber }

var (
	_ engine.Driver    = driver{}
	_ engine.Receiver  = (*receiver)(nil)
	_ engine.Redecoder = (*receiver)(nil)
)

// errClientClosed is what Receive returns when the client was closed under
// it (a test's kill, or a fatal client error).
var errClientClosed = errors.New("kafka: consumer client closed")

// Open checks the topics, resolves the start position (pinning it for a
// group without commits), creates the consuming client and, for a group,
// waits until this member got its first assignment, so that its Keys are
// part of the group's union when Subscription.Ready is called.
func (d driver) Open(ctx context.Context, sub broker.Subscription, ctl engine.Control) (engine.Receiver, error) {
	s := d.s
	if err := validateSubscriptionTopics(sub); err != nil {
		return nil, err
	}
	if s.noReopen.Load() { // tests: a killed member stays dead
		<-ctx.Done()
		return nil, ctx.Err()
	}
	own, err := broker.CompilePatterns(sub.Keys)
	if err != nil {
		return nil, err
	}
	r := &receiver{
		s: s, sub: sub, ctl: ctl, group: sub.Group != "", own: own,
		parts: map[int32]*tracker{}, assigned: make(chan struct{}), manageErr: make(chan error, 1),
	}
	r.hctx = context.Background()
	for _, t := range []string{sub.Topic, sub.DeadLetterDestination()} {
		if t == "" {
			continue
		}
		if err := s.admin.requireTopic(ctx, t, s.cfg.createTopics, s.cfg.topicDefaults); err != nil {
			if errors.Is(err, ErrUnknownTopic) {
				err = fmt.Errorf("%w: %w", broker.ErrInvalidSubscription, err)
			}
			return nil, err
		}
	}
	start := s.cfg.start.resolve(r.group)
	opts := []kgo.Opt{
		kgo.FetchMaxWait(500 * time.Millisecond),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		// The memory bound: the engine holds at most MaxInFlight
		// records, the client at most one fetch response of at most
		// FetchMaxBytes (WithClientOptions may override all three).
		kgo.FetchMaxBytes(DefaultFetchMaxBytes),
		kgo.FetchMaxPartitionBytes(DefaultFetchMaxBytes),
		kgo.MaxConcurrentFetches(1),
	}
	var last []kgo.Opt
	if r.group {
		if start.kind == kindLatest || start.kind == kindExact {
			if err := s.pinStart(ctx, sub, start, false); err != nil {
				return nil, invalidOffset(err)
			}
		}
		reset := kgo.NewOffset().AtStart()
		switch start.kind {
		case kindLatest:
			reset = kgo.NewOffset().AtEnd()
		case kindTime:
			reset = kgo.NewOffset().AfterMilli(start.at.UnixMilli())
		}
		opts = append(opts,
			kgo.ConsumerGroup(sub.Group),
			kgo.ConsumeTopics(sub.Topic),
			kgo.ConsumeResetOffset(reset),
			kgo.BlockRebalanceOnPoll(),
			kgo.AutoCommitMarks(),
			kgo.AutoCommitInterval(s.cfg.commitInterval),
			kgo.AutoCommitCallback(r.onCommit),
			kgo.OnPartitionsAssigned(r.onAssigned),
			kgo.OnPartitionsRevoked(r.onRevoked),
			kgo.OnPartitionsLost(r.onLost),
			kgo.WithHooks(manageHook{r}),
		)
		opts = append(opts, s.cfg.groupOpts()...)
		// After WithClientOptions: the union protocol wraps whatever
		// balancers the caller chose.
		bs := make([]kgo.GroupBalancer, len(s.balancers))
		for i, b := range s.balancers {
			bs[i] = newKeysBalancer(b, sub.Keys, r.setUnion)
		}
		last = append(last, kgo.Balancers(bs...))
	} else {
		offs, err := s.admin.startOffsets(ctx, sub.Topic, start)
		if err != nil {
			return nil, invalidOffset(err)
		}
		parts := make(map[int32]kgo.Offset, len(offs))
		for p, o := range offs {
			parts[p] = kgo.NewOffset().At(o)
		}
		opts = append(opts, kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{sub.Topic: parts}))
	}
	opts = append(opts, s.cfg.baseOpts(s.admin.hook)...)
	cl, err := kgo.NewClient(append(opts, last...)...)
	if err != nil {
		return nil, fmt.Errorf("%w: kafka: new consumer: %w", broker.ErrInvalidSubscription, err)
	}
	r.cl = cl
	if r.group {
		if err := r.awaitAssignment(ctx); err != nil {
			r.closing.Store(true)
			cl.Close()
			return nil, err
		}
	}
	r.open.Store(true)
	s.mu.Lock()
	s.recvs[r] = struct{}{}
	s.mu.Unlock()
	r.startHealth(ctx)
	return r, nil
}

// invalidOffset marks a start position the topic cannot have as an invalid
// subscription: reopening does not fix it.
func invalidOffset(err error) error {
	if errors.Is(err, ErrInvalidOffset) {
		return fmt.Errorf("%w: %w", broker.ErrInvalidSubscription, err)
	}
	return err
}

// awaitAssignment waits for the member's first assignment. Group errors
// that a retry cannot fix fail it; others are logged, and franz-go retries.
func (r *receiver) awaitAssignment(ctx context.Context) error {
	for {
		select {
		case <-r.assigned:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		case err := <-r.manageErr:
			switch {
			case errors.Is(err, kerr.InvalidGroupID), errors.Is(err, kerr.GroupAuthorizationFailed), errors.Is(err, kerr.TopicAuthorizationFailed):
				return fmt.Errorf("%w: kafka: join group %q: %w", broker.ErrInvalidSubscription, r.sub.Group, err)
			case errors.Is(err, kerr.InconsistentGroupProtocol):
				r.s.cfg.logger.Error("kafka: the group has members that do not speak this package's protocol ("+keysProtocolPrefix+"...); waiting for them to leave", "group", r.sub.Group, "topic", r.sub.Topic, "err", err)
			default:
				r.s.cfg.logger.Warn("kafka: joining the group failed; retrying", "group", r.sub.Group, "topic", r.sub.Topic, "err", err)
			}
		}
	}
}

// DeadLetter publishes m with the subscriber's producer, adding the origin
// partition and offset; a dead letter the topic refuses as too large is
// published without its payload, with HeaderPayloadDropped saying why.
func (d driver) DeadLetter(ctx context.Context, topic string, m broker.Message, from *engine.Delivery) error {
	h := make(map[string]string, len(m.Header)+3)
	for k, v := range m.Header {
		h[k] = v
	}
	if rec, ok := from.Ref.(*kgo.Record); ok {
		h[broker.HeaderOriginPartition] = strconv.Itoa(int(rec.Partition))
		h[broker.HeaderOriginOffset] = strconv.FormatInt(rec.Offset, 10)
	}
	m.Header = h
	err := d.s.prod.ProduceSync(ctx, toRecord(topic, &m)).FirstErr()
	if errors.Is(err, kerr.MessageTooLarge) && m.Payload != nil {
		// The dead-letter topic takes smaller records than the source
		// (or the headers tipped it over): keep the evidence, drop the
		// payload, rather than block the key.
		d.s.cfg.logger.Error("kafka: dead letter too large; publishing it without its payload", "topic", m.Topic, "id", m.ID, "dead_letter_topic", topic, "bytes", len(m.Payload))
		h[HeaderPayloadDropped] = fmt.Sprintf("%d bytes: %v", len(m.Payload), err)
		m.Payload = nil
		err = d.s.prod.ProduceSync(ctx, toRecord(topic, &m)).FirstErr()
	}
	if err != nil {
		return fmt.Errorf("kafka: dead letter to %q: %w", topic, err)
	}
	return nil
}

// receiver is one Subscribe call's consuming client.
type receiver struct {
	s     *Subscriber
	sub   broker.Subscription
	ctl   engine.Control
	cl    *kgo.Client
	group bool
	own   broker.Patterns

	// union is the group's Keys union from the last assignment (nil
	// before the first); private subscriptions use own.
	union     atomic.Pointer[keyFilter]
	assigned  chan struct{}
	once      sync.Once
	manageErr chan error

	mu    sync.Mutex
	parts map[int32]*tracker
	ds    []engine.Delivery // Receive's batch (engine goroutine only)

	open    atomic.Bool // Open returned it
	closing atomic.Bool // Close was called: the last revoke is not a rebalance
	killed  atomic.Bool // tests: a member that dies without committing

	// polling is set while Receive waits in PollRecords; polledAt is
	// when it last returned (unix ns). The health check looks end
	// offsets up itself when polling is held up.
	polling  atomic.Bool
	polledAt atomic.Int64
	healthFields
}

// keyFilter is a Keys union: every key, or those matching pats.
type keyFilter struct {
	all  bool
	pats broker.Patterns
}

// setUnion is called by the balancer at each assignment.
func (r *receiver) setUnion(all bool, pats []string) {
	f := &keyFilter{all: all}
	if !all {
		ps, err := broker.CompilePatterns(pats)
		if err != nil {
			// A member sent a pattern this one cannot compile: keep
			// every key rather than skip what that member wanted.
			r.s.cfg.logger.Error("kafka: group key union has an invalid pattern; receiving every key", "group", r.sub.Group, "err", err)
			f = &keyFilter{all: true}
		} else {
			f.pats = ps
		}
	}
	r.union.Store(f)
	r.once.Do(func() { close(r.assigned) })
}

// match reports whether a record with key is for this subscription.
func (r *receiver) match(key string) bool {
	if f := r.union.Load(); f != nil {
		return f.all || f.pats.Match(key)
	}
	return len(r.own) == 0 || r.own.Match(key)
}

// manageHook passes group errors to the receiver.
type manageHook struct{ r *receiver }

var _ kgo.HookGroupManageError = manageHook{}

func (h manageHook) OnGroupManageError(err error) {
	if errors.Is(err, context.Canceled) || errors.Is(err, kgo.ErrClientClosed) {
		return
	}
	if !h.r.open.Load() {
		select {
		case h.r.manageErr <- err:
		default:
		}
		return
	}
	h.r.s.cfg.logger.Warn("kafka: group error; franz-go rejoins", "group", h.r.sub.Group, "topic", h.r.sub.Topic, "err", err)
}

// Receive polls at most max records, hands those whose key matches to the
// engine and lets a blocked rebalance go on only after that.
func (r *receiver) Receive(ctx context.Context, max int, deliver func([]engine.Delivery)) error {
	r.polling.Store(true)
	fs := r.cl.PollRecords(ctx, max)
	now := time.Now()
	r.polledAt.Store(now.UnixNano())
	r.polling.Store(false)
	defer r.cl.AllowRebalance()
	if fs.IsClientClosed() {
		if err := ctx.Err(); err != nil {
			return err
		}
		return errClientClosed
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	fs.EachError(func(t string, p int32, err error) {
		if errors.Is(err, context.Canceled) {
			return
		}
		r.s.cfg.logger.Warn("kafka: fetch error", "topic", t, "partition", p, "err", err)
	})
	var skipped uint64
	r.ds = r.ds[:0]
	r.mu.Lock()
	fs.EachPartition(func(p kgo.FetchTopicPartition) {
		t := r.parts[p.Partition]
		if len(p.Records) == 0 {
			if t != nil && p.Err == nil {
				t.hwm = p.HighWatermark
			}
			return
		}
		if t == nil {
			t = &tracker{next: p.Records[0].Offset, movedAt: now}
			r.parts[p.Partition] = t
		}
		t.hwm = p.HighWatermark
		for _, rec := range p.Records {
			ok := r.match(stringOf(rec.Key))
			t.push(rec, !ok)
			if !ok {
				skipped++
				continue
			}
			r.ds = append(r.ds, engine.Delivery{Msg: fromRecord(rec), Tag: uint64(rec.Offset), Ref: rec, Part: p.Partition})
		}
		if t.pop() != nil { // records skipped by Keys are done at once
			t.movedAt = now
		}
	})
	r.mu.Unlock()
	r.markAll()
	r.s.st.skipped.Add(skipped)
	if len(r.ds) > 0 {
		deliver(r.ds)
		clear(r.ds)
	}
	return nil
}

// Redecode rebuilds a delivery's message from its record, with a fresh
// Header map.
func (r *receiver) Redecode(d *engine.Delivery) broker.Message {
	return fromRecord(d.Ref.(*kgo.Record))
}

// Ack marks d done in its partition's tracker and marks for commit the
// last record of the done prefix: the engine acks out of order (keys of a
// partition run concurrently), Kafka commits a position.
//
// Marking takes the client's group lock, so it is batched: a partition's
// done prefix is marked when the partition has nothing outstanding left,
// after markEvery more records, or markAfter after its last mark; revokes,
// Receive and Close mark the rest.
func (r *receiver) Ack(d *engine.Delivery) {
	r.mu.Lock()
	t := r.parts[d.Part]
	var last *kgo.Record
	if t != nil {
		t.ack(int64(d.Tag))
		if t.pop() != nil {
			now := time.Now()
			t.movedAt = now
			last = t.markDue(now)
		}
	}
	r.mu.Unlock()
	if last != nil && r.group {
		r.cl.MarkCommitRecords(last)
	}
}

// Batching of marks; see Ack.
const (
	markEvery = 256
	markAfter = 100 * time.Millisecond
)

// markDue returns the record to mark now, or nil to wait.
func (t *tracker) markDue(now time.Time) *kgo.Record {
	if t.unmarked == nil {
		return nil
	}
	if t.head == len(t.recs) || t.unmarked.Offset-t.marked >= markEvery || now.Sub(t.markedAt) >= markAfter {
		return t.takeMark(now)
	}
	return nil
}

// takeMark returns the last done record not yet marked, and notes it as marked.
func (t *tracker) takeMark(now time.Time) *kgo.Record {
	rec := t.unmarked
	if rec != nil {
		t.unmarked, t.marked, t.markedAt = nil, rec.Offset, now
	}
	return rec
}

// markAll marks every partition's done prefix (group consumers only).
func (r *receiver) markAll() {
	if !r.group {
		return
	}
	now := time.Now()
	var recs []*kgo.Record
	r.mu.Lock()
	for _, t := range r.parts {
		if rec := t.takeMark(now); rec != nil {
			recs = append(recs, rec)
		}
	}
	r.mu.Unlock()
	if len(recs) > 0 {
		r.cl.MarkCommitRecords(recs...)
	}
}

// Release has nothing to send: records not committed are fetched again
// after the rebalance or restart. Their partitions' trackers are dropped,
// so nothing past them is marked.
func (r *receiver) Release(ds []*engine.Delivery) {
	now := time.Now()
	var recs []*kgo.Record
	var evs []healthEvent
	r.mu.Lock()
	for _, d := range ds {
		if t := r.parts[d.Part]; t != nil {
			// what was done before the released records is still committed
			if rec := t.takeMark(now); rec != nil {
				recs = append(recs, rec)
			}
			evs = r.dropLocked(d.Part, now, evs)
		}
	}
	r.mu.Unlock()
	r.reportReleased(evs)
	if r.group && len(recs) > 0 {
		r.cl.MarkCommitRecords(recs...)
	}
}

// Close commits what was marked (groups) and leaves.
func (r *receiver) Close() error {
	r.closing.Store(true)
	r.stopHealth()
	if !r.killed.Load() {
		r.markAll()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		r.commit(ctx)
		cancel()
	}
	r.cl.CloseAllowingRebalance()
	r.s.mu.Lock()
	delete(r.s.recvs, r)
	r.s.mu.Unlock()
	r.forgetAll()
	return nil
}

// kill simulates a crashed member (tests only): nothing more is committed,
// the client closes and the Subscribe call does not reopen.
func (r *receiver) kill() {
	r.killed.Store(true)
	r.s.noReopen.Store(true)
	r.cl.Close()
}

// revoke has the engine give back and finish the partitions' records, then
// drops their trackers.
func (r *receiver) revoke(parts []int32) {
	if r.open.Load() {
		r.ctl.Revoke(func(d *engine.Delivery) bool { return slices.Contains(parts, d.Part) })
	}
	r.markAll()
	now := time.Now()
	var evs []healthEvent
	r.mu.Lock()
	for _, p := range parts {
		evs = r.dropLocked(p, now, evs)
	}
	r.mu.Unlock()
	r.reportReleased(evs)
}

func (r *receiver) onRevoked(ctx context.Context, _ *kgo.Client, m map[string][]int32) {
	if r.killed.Load() {
		return
	}
	parts := m[r.sub.Topic]
	if !r.closing.Load() {
		r.s.st.revoked.Add(uint64(len(parts)))
	}
	r.revoke(parts)
	r.commit(ctx)
	r.traceRebalance(ctx, PartitionsRevoked, parts)
}

func (r *receiver) onAssigned(ctx context.Context, _ *kgo.Client, m map[string][]int32) {
	r.traceRebalance(ctx, PartitionsAssigned, m[r.sub.Topic])
}

func (r *receiver) onLost(ctx context.Context, _ *kgo.Client, m map[string][]int32) {
	if r.killed.Load() {
		return
	}
	parts := m[r.sub.Topic]
	r.s.cfg.logger.Warn("kafka: partitions lost; their uncommitted records will be redelivered", "group", r.sub.Group, "topic", r.sub.Topic, "partitions", parts)
	r.s.st.lost.Add(uint64(len(parts)))
	r.revoke(parts)
	r.traceRebalance(ctx, PartitionsLost, parts)
}

// commit synchronously commits the marked offsets (group consumers only).
func (r *receiver) commit(ctx context.Context) {
	if !r.group || r.killed.Load() {
		return
	}
	marked := r.cl.MarkedOffsets()
	if len(marked) == 0 {
		return
	}
	r.cl.CommitOffsetsSync(ctx, marked, r.onCommit)
}

// onCommit counts commit results, for autocommits and synchronous ones.
func (r *receiver) onCommit(_ *kgo.Client, _ *kmsg.OffsetCommitRequest, resp *kmsg.OffsetCommitResponse, err error) {
	if err != nil {
		if !errors.Is(err, context.Canceled) {
			r.s.st.commitErrors.Add(1)
			r.s.cfg.logger.Warn("kafka: commit failed", "group", r.sub.Group, "topic", r.sub.Topic, "err", err)
		}
		return
	}
	for _, t := range resp.Topics {
		for _, p := range t.Partitions {
			if p.ErrorCode == 0 {
				r.s.st.commits.Add(1)
			} else {
				r.s.st.commitErrors.Add(1)
			}
		}
	}
}

// lag returns, per partition held, the high watermark at the last fetch
// minus the next offset to commit.
func (r *receiver) lag(into map[int32]int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for p, t := range r.parts {
		into[p] = max(t.hwm-t.next, 0)
	}
}

// tracker holds a partition's delivered records in offset order until
// they are done, so that only a done prefix is committed.
type tracker struct {
	recs []trackedRec
	head int
	hwm  int64
	next int64 // the offset after the done prefix

	unmarked *kgo.Record // the done prefix's last record, not yet marked
	marked   int64       // offset of the last marked record
	markedAt time.Time

	// Health (see health.go): when next last moved, and whether the
	// check reported the partition stuck, with the movedAt it reported.
	movedAt    time.Time
	stuck      bool
	stuckSince time.Time
}

type trackedRec struct {
	rec  *kgo.Record
	done bool
}

func (t *tracker) push(rec *kgo.Record, done bool) {
	t.recs = append(t.recs, trackedRec{rec: rec, done: done})
}

func (t *tracker) ack(off int64) {
	live := t.recs[t.head:]
	i, ok := slices.BinarySearchFunc(live, off, func(e trackedRec, off int64) int {
		switch {
		case e.rec.Offset < off:
			return -1
		case e.rec.Offset > off:
			return 1
		}
		return 0
	})
	if ok {
		live[i].done = true
	}
}

// pop removes the done prefix and returns its last record, or nil.
func (t *tracker) pop() *kgo.Record {
	var last *kgo.Record
	for t.head < len(t.recs) && t.recs[t.head].done {
		last = t.recs[t.head].rec
		t.recs[t.head] = trackedRec{}
		t.head++
	}
	switch {
	case t.head == len(t.recs):
		t.recs, t.head = t.recs[:0], 0
	case t.head >= 1024 && t.head > len(t.recs)/2:
		n := copy(t.recs, t.recs[t.head:])
		clear(t.recs[n:])
		t.recs, t.head = t.recs[:n], 0
	}
	if last != nil {
		t.next = last.Offset + 1
		t.unmarked = last
	}
	return last
}
