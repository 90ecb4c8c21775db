package kafka

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/go-integration/patterns/broker"
	"github.com/go-integration/patterns/broker/internal/tracing"
)

// DefaultTransactionTimeout is the transaction timeout of a TxPublisher's
// producer unless WithClientOptions sets kgo.TransactionTimeout: how long
// Kafka keeps a transaction of a crashed publisher open before aborting it,
// and so how long a reader of its checkpoints may wait after a crash.
const DefaultTransactionTimeout = 10 * time.Second

// TxPublisher publishes in Kafka transactions and keeps checkpoints: small
// records written to a checkpoint topic in the same transaction as the
// messages, so that "these messages are published" and "this checkpoint
// is written" become visible together or not at all (the design of Kafka
// Connect's exactly-once source connectors, KIP-618). It is what
// broker/outbox's relay uses for exactly-once publishing (it implements
// outbox.TxPublisher) and a broker.Publisher in its own right: each Publish
// call is one transaction, so a read_committed consumer sees all of its
// messages or none.
//
// Calls are serialized: one transaction at a time per TxPublisher.
type TxPublisher struct {
	cfg     config
	txID    string
	ckTopic string
	admin   *Admin
	cl      *kgo.Client // the transactional producer
	rec     *tracing.Recorder

	mu     sync.Mutex // one transaction at a time
	known  sync.Map   // topics checked
	ckOK   bool       // the checkpoint topic was checked (under mu)
	fenced error      // set once fenced: every later call fails with it
	closed atomic.Bool

	rdMu    sync.Mutex
	rd      *kgo.Client                 // reads the checkpoint topic, uncommitted records and control records included
	next    int64                       // the next checkpoint offset to read
	ckpt    map[string][]byte           // committed checkpoints
	pending map[int64]map[string][]byte // per producer ID, the checkpoints of its open transaction
}

// NewTxPublisher returns a TxPublisher whose producer uses transactionalID
// and which writes checkpoints to checkpointTopic (created at first use with
// one partition and cleanup.policy=compact; an existing topic must have one
// partition). The transactional ID must be stable across restarts of one
// instance and unique among live instances: a second live producer with the
// same ID fences the first, whose calls then fail with errors wrapping
// ErrFenced and broker.ErrClosed. It does not connect until used.
func NewTxPublisher(brokers []string, transactionalID, checkpointTopic string, opts ...PublisherOption) (*TxPublisher, error) {
	if transactionalID == "" {
		return nil, invalid("NewTxPublisher: empty transactional ID")
	}
	if err := validateTopicName(checkpointTopic, ErrInvalidOption); err != nil {
		return nil, fmt.Errorf("NewTxPublisher: checkpoint topic: %w", err)
	}
	cfg, err := publisherConfig(brokers, opts)
	if err != nil {
		return nil, err
	}
	adm, err := newAdmin(cfg)
	if err != nil {
		return nil, err
	}
	popts := []kgo.Opt{
		kgo.TransactionalID(transactionalID),
		kgo.TransactionTimeout(DefaultTransactionTimeout),
		kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.ProducerLinger(cfg.linger),
	}
	cl, err := kgo.NewClient(append(popts, cfg.baseOpts(adm.hook)...)...)
	if err != nil {
		adm.Close()
		return nil, fmt.Errorf("kafka: new transactional producer: %w", err)
	}
	return &TxPublisher{
		cfg: cfg, txID: transactionalID, ckTopic: checkpointTopic, admin: adm, cl: cl,
		rec: tracing.New("kafka", cfg.tracers), ckpt: map[string][]byte{}, pending: map[int64]map[string][]byte{},
	}, nil
}

// Client returns the transactional producer (the escape hatch). Do not
// close it, and do not begin or end transactions on it.
func (p *TxPublisher) Client() *kgo.Client { return p.cl }

// Stats returns the publisher's counters (Publish and PublishTx).
func (p *TxPublisher) Stats() broker.PublisherStats { return p.rec.Stats() }

// Publish sends msgs to topic in one transaction: nil means Kafka committed
// it. Errors wrap what Publisher.Publish's do, and ErrFenced.
func (p *TxPublisher) Publish(ctx context.Context, topic string, msgs ...broker.Message) error {
	out := make([]broker.Message, len(msgs))
	for i := range msgs {
		out[i] = msgs[i]
		out[i].Topic = topic
	}
	err := p.PublishTx(ctx, out, nil)
	for i := range msgs { // IDs and Times filled, as Publish does
		msgs[i].ID, msgs[i].Time = out[i].ID, out[i].Time
	}
	return err
}

// PublishTx publishes each message of msgs to its Topic, in order, and
// writes each checkpoint (key and value) to the checkpoint topic, in one
// transaction: nil means Kafka committed it; on an error it was aborted, or,
// when the commit request itself failed, it may have committed (read the
// checkpoints to know). Empty IDs and zero Times are filled in place, and
// an element may be replaced by a copy carrying a tracer's headers. Each
// topic's messages are traced as one publish call (WithTracer's
// broker.PublishTracer, System "kafka"), and counted in Stats.
// Errors wrap broker.ErrInvalidMessage (a message Kafka refuses, such as one
// over max.message.bytes; nothing of the transaction is visible),
// ErrUnknownTopic, broker.ErrNotConfirmed, or ErrFenced and
// broker.ErrClosed.
func (p *TxPublisher) PublishTx(ctx context.Context, msgs []broker.Message, checkpoints map[string][]byte) error {
	if p.closed.Load() {
		return broker.ErrClosed
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.fenced != nil {
		return p.fenced
	}
	for i := range msgs {
		if err := p.checkTopic(ctx, msgs[i].Topic); err != nil {
			return err
		}
	}
	if len(checkpoints) > 0 {
		if err := p.checkpointTopic(ctx); err != nil {
			return err
		}
	}
	if len(msgs) == 0 && len(checkpoints) == 0 {
		return nil
	}
	// Trace each topic's messages as one publish call (the tracers may
	// give them new headers: the trace context).
	now := time.Now()
	prepareAll(msgs, now)
	type traced struct {
		ctx  context.Context
		call tracing.Call
	}
	var calls []traced
	for _, topic := range topicsOf(msgs) {
		var idx []int
		var group []broker.Message
		for i := range msgs {
			if msgs[i].Topic == topic {
				idx = append(idx, i)
				group = append(group, msgs[i])
			}
		}
		tctx, out, call := p.rec.StartAt(ctx, now, topic, group)
		for j, i := range idx {
			msgs[i] = out[j]
		}
		calls = append(calls, traced{tctx, call})
	}
	err := p.publishTx(ctx, msgs, checkpoints)
	for _, c := range calls {
		p.rec.End(c.ctx, c.call, err)
	}
	return err
}

// topicsOf returns the topics of msgs in order of first appearance.
func topicsOf(msgs []broker.Message) []string {
	var ts []string
	for i := range msgs {
		if !slices.Contains(ts, msgs[i].Topic) {
			ts = append(ts, msgs[i].Topic)
		}
	}
	return ts
}

// publishTx is PublishTx once the messages are checked, prepared and traced.
func (p *TxPublisher) publishTx(ctx context.Context, msgs []broker.Message, checkpoints map[string][]byte) error {
	if err := p.cl.BeginTransaction(); err != nil {
		return p.failed(ctx, "", "", 0, err)
	}
	var (
		emu   sync.Mutex
		first error
	)
	promise := func(r *kgo.Record, err error) {
		if err != nil {
			emu.Lock()
			if first == nil {
				first = p.failed(ctx, r.Topic, messageID(r), recordSize(r), err)
			}
			emu.Unlock()
		}
	}
	for i := range msgs {
		p.cl.Produce(ctx, toRecord(msgs[i].Topic, &msgs[i]), promise)
	}
	for k, v := range checkpoints {
		p.cl.Produce(ctx, &kgo.Record{Topic: p.ckTopic, Key: []byte(k), Value: v}, promise)
	}
	ferr := p.cl.Flush(ctx)
	emu.Lock()
	perr := first
	emu.Unlock()
	if ferr != nil || perr != nil {
		actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		if err := p.cl.AbortBufferedRecords(actx); err == nil {
			_ = p.cl.EndTransaction(actx, kgo.TryAbort)
		}
		if perr != nil {
			return perr
		}
		return p.failed(ctx, "", "", 0, ferr)
	}
	if err := p.cl.EndTransaction(ctx, kgo.TryCommit); err != nil {
		return p.failed(ctx, "", "", 0, fmt.Errorf("commit transaction (it may have committed): %w", err))
	}
	return nil
}

// failed classifies an error of a transaction; a fence is remembered.
func (p *TxPublisher) failed(ctx context.Context, topic, id string, size int, err error) error {
	if f := txFatal(err); f != nil {
		p.fenced = fmt.Errorf("%w: %w (transactional ID %q)", broker.ErrClosed, f, p.txID)
		return p.fenced
	}
	if topic == "" {
		return fmt.Errorf("%w: kafka: transaction: %w", broker.ErrNotConfirmed, err)
	}
	return p.admin.hook.publishError(ctx, topic, id, size, err)
}

func (p *TxPublisher) checkTopic(ctx context.Context, topic string) error {
	if _, ok := p.known.Load(topic); ok {
		return nil
	}
	if err := validateTopicName(topic, broker.ErrInvalidMessage); err != nil {
		return err
	}
	if err := p.admin.requireTopic(ctx, topic, p.cfg.createTopics, p.cfg.topicDefaults); err != nil {
		return err
	}
	p.known.Store(topic, struct{}{})
	return nil
}

// checkpointTopic creates the checkpoint topic or checks that it has one
// partition (checkpoints of a key must stay in order).
func (p *TxPublisher) checkpointTopic(ctx context.Context) error {
	if p.ckOK {
		return nil
	}
	if err := p.admin.requireTopic(ctx, p.ckTopic, true, Topic{Partitions: 1, CleanupPolicy: "compact"}); err != nil {
		return err
	}
	td, err := p.admin.adm.ListTopics(ctx, p.ckTopic)
	if err != nil {
		return p.admin.hook.wrap(ctx, "look up checkpoint topic", err)
	}
	if n := len(td[p.ckTopic].Partitions); n != 1 {
		return fmt.Errorf("%w: checkpoint topic %q has %d partitions, want 1", ErrTopicMismatch, p.ckTopic, n)
	}
	p.ckOK = true
	return nil
}

// Checkpoints returns the last committed value of each of keys (keys never
// written are absent). It reads the checkpoint topic up to its end first,
// and while a transaction of another producer that writes one of keys is
// still open (its producer crashed, or its commit is being written), it
// waits for Kafka to commit or abort it, until ctx ends. So a caller that
// owns keys (no live producer writes them) learns exactly what was
// committed.
func (p *TxPublisher) Checkpoints(ctx context.Context, keys []string) (map[string][]byte, error) {
	if p.closed.Load() {
		return nil, broker.ErrClosed
	}
	p.mu.Lock()
	err := p.checkpointTopic(ctx)
	p.mu.Unlock()
	if err != nil {
		return nil, err
	}
	p.rdMu.Lock()
	defer p.rdMu.Unlock()
	if p.rd == nil {
		rd, err := kgo.NewClient(append([]kgo.Opt{
			kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{p.ckTopic: {0: kgo.NewOffset().AtStart()}}),
			kgo.KeepControlRecords(),
			kgo.FetchIsolationLevel(kgo.ReadUncommitted()),
			kgo.FetchMaxWait(50 * time.Millisecond),
		}, p.cfg.baseOpts(p.admin.hook)...)...)
		if err != nil {
			return nil, fmt.Errorf("kafka: new checkpoint reader: %w", err)
		}
		p.rd = rd
	}
	for {
		ends, err := p.admin.adm.ListEndOffsets(ctx, p.ckTopic)
		if err != nil {
			return nil, p.admin.hook.wrap(ctx, "checkpoint end offset", err)
		}
		o, ok := ends.Lookup(p.ckTopic, 0)
		if !ok || o.Err != nil {
			return nil, p.admin.hook.wrap(ctx, "checkpoint end offset", errors.Join(errors.New("no offset for partition 0"), o.Err))
		}
		for p.next < o.Offset {
			pctx, cancel := context.WithTimeout(ctx, time.Second)
			fs := p.rd.PollFetches(pctx)
			cancel()
			if err := ctx.Err(); err != nil {
				return nil, fmt.Errorf("kafka: read checkpoints: %w", err)
			}
			var ferr error
			fs.EachError(func(_ string, _ int32, err error) {
				if !errors.Is(err, context.DeadlineExceeded) {
					ferr = err
				}
			})
			if ferr != nil {
				return nil, p.admin.hook.wrap(ctx, "read checkpoints", ferr)
			}
			if fs.NumRecords() == 0 {
				// Nothing came: the records before the end may be
				// gone (retention), so the log starts after p.next.
				starts, err := p.admin.adm.ListStartOffsets(ctx, p.ckTopic)
				if err != nil {
					return nil, p.admin.hook.wrap(ctx, "checkpoint start offset", err)
				}
				if s, ok := starts.Lookup(p.ckTopic, 0); ok && s.Err == nil && s.Offset > p.next {
					p.next = s.Offset
				}
				continue
			}
			fs.EachRecord(p.apply)
		}
		if !p.inDoubt(keys) {
			break
		}
		// A crashed producer's transaction writes one of keys: wait
		// for Kafka to end it (the transaction timeout at most).
		t := time.NewTimer(20 * time.Millisecond)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("kafka: read checkpoints: waiting for an open transaction on them: %w", ctx.Err())
		case <-t.C:
		}
	}
	out := make(map[string][]byte, len(keys))
	for _, k := range keys {
		if v, ok := p.ckpt[k]; ok {
			out[k] = v
		}
	}
	return out, nil
}

// apply folds one checkpoint-topic record into the state.
func (p *TxPublisher) apply(r *kgo.Record) {
	p.next = r.Offset + 1
	switch {
	case r.Attrs.IsControl():
		// Key: version int16, type int16 (0 abort, 1 commit).
		if len(r.Key) >= 4 && binary.BigEndian.Uint16(r.Key[2:4]) == 1 {
			for k, v := range p.pending[r.ProducerID] {
				p.ckpt[k] = v
			}
		}
		delete(p.pending, r.ProducerID)
	case r.Attrs.IsTransactional():
		m := p.pending[r.ProducerID]
		if m == nil {
			m = map[string][]byte{}
			p.pending[r.ProducerID] = m
		}
		m[string(r.Key)] = r.Value
	default:
		p.ckpt[string(r.Key)] = r.Value
	}
}

// inDoubt reports whether an open transaction writes one of keys.
func (p *TxPublisher) inDoubt(keys []string) bool {
	for _, m := range p.pending {
		for _, k := range keys {
			if _, ok := m[k]; ok {
				return true
			}
		}
	}
	return false
}

// Close aborts nothing in flight (calls are synchronous) and closes the
// clients. It is idempotent; later calls fail with broker.ErrClosed.
func (p *TxPublisher) Close() error {
	if !p.closed.CompareAndSwap(false, true) {
		return nil
	}
	p.mu.Lock()
	p.cl.Close()
	p.mu.Unlock()
	p.rdMu.Lock()
	if p.rd != nil {
		p.rd.Close()
	}
	p.rdMu.Unlock()
	p.admin.Close()
	return nil
}
