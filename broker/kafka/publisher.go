package kafka

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/go-integration/patterns/broker"
	"github.com/go-integration/patterns/broker/internal/tracing"
)

// Publisher publishes messages to Kafka with an idempotent producer and
// acks=all. Concurrent Publish calls share produce requests. It implements
// broker.Publisher.
type Publisher struct {
	cfg   config
	admin *Admin
	cl    *kgo.Client

	closed atomic.Bool
	known  sync.Map // topic -> struct{}: topics checked or created
	rec    *tracing.Recorder
}

var (
	_ broker.Publisher      = (*Publisher)(nil)
	_ broker.AsyncPublisher = (*Publisher)(nil)
)

// NewPublisher returns a Publisher for the seed brokers. It does not connect
// until the first Publish; call Ping to check the cluster answers.
func NewPublisher(brokers []string, opts ...PublisherOption) (*Publisher, error) {
	cfg, err := publisherConfig(brokers, opts)
	if err != nil {
		return nil, err
	}
	adm, err := newAdmin(cfg)
	if err != nil {
		return nil, err
	}
	popts := []kgo.Opt{
		kgo.RequiredAcks(kgo.AllISRAcks()), // the default, stated: idempotence needs it
		kgo.ProducerLinger(cfg.linger),
	}
	cl, err := kgo.NewClient(append(popts, cfg.baseOpts(adm.hook)...)...)
	if err != nil {
		adm.Close()
		return nil, fmt.Errorf("kafka: new producer: %w", err)
	}
	return &Publisher{cfg: cfg, admin: adm, cl: cl, rec: tracing.New("kafka", cfg.tracers)}, nil
}

// Client returns the underlying franz-go producer client (the escape hatch).
// Do not close it: Close does.
func (p *Publisher) Client() *kgo.Client { return p.cl }

// Admin returns the Admin this publisher uses to look up and create topics;
// it is valid until the publisher is closed. Do not close it.
func (p *Publisher) Admin() *Admin { return p.admin }

// Ping checks that a broker answers before ctx ends.
func (p *Publisher) Ping(ctx context.Context) error {
	return p.admin.hook.wrap(ctx, "ping", p.cl.Ping(ctx))
}

// begin reports ErrClosed after Close. A call racing Close gets the
// client's closed error, mapped to broker.ErrClosed too.
func (p *Publisher) begin() error {
	if p.closed.Load() {
		return broker.ErrClosed
	}
	return nil
}

// prepareTopic checks once per topic that it exists, creating it when
// CreateTopics is set.
func (p *Publisher) prepareTopic(ctx context.Context, topic string) error {
	if err := broker.ValidateTopic(topic); err != nil {
		return err
	}
	if _, ok := p.known.Load(topic); ok {
		return nil
	}
	if err := p.admin.requireTopic(ctx, topic, p.cfg.createTopics, p.cfg.topicDefaults); err != nil {
		return err
	}
	p.known.Store(topic, struct{}{})
	return nil
}

// Publish sends msgs to topic and returns nil only when the brokers have
// acknowledged every one of them (acks=all). Messages of one call and of
// concurrent calls are batched together. Errors wrap broker.ErrInvalidMessage
// (too large, or a topic name Kafka does not allow: checked before anything
// is sent), ErrUnknownTopic, ErrUnreachable, broker.ErrNotConfirmed or
// broker.ErrClosed.
func (p *Publisher) Publish(ctx context.Context, topic string, msgs ...broker.Message) error {
	now := time.Now()
	prepareAll(msgs, now)
	ctx, msgs, call := p.rec.StartAt(ctx, now, topic, msgs)
	err := p.publish(ctx, topic, msgs)
	p.rec.End(ctx, call, err)
	return err
}

// prepareAll fills empty IDs (one allocation for all) and zero Times.
func prepareAll(msgs []broker.Message, now time.Time) {
	nid := 0
	for i := range msgs {
		if msgs[i].ID == "" {
			nid++
		}
	}
	var ids []byte
	if nid > 0 {
		ids = make([]byte, nid*idLen)
	}
	for i := range msgs {
		if msgs[i].ID == "" {
			prepare(&msgs[i], now, ids[:idLen])
			ids = ids[idLen:]
		} else {
			prepare(&msgs[i], now, nil)
		}
	}
}

// publish is Publish for prepared messages, without tracing.
func (p *Publisher) publish(ctx context.Context, topic string, msgs []broker.Message) error {
	if err := validateTopicName(topic, broker.ErrInvalidMessage); err != nil {
		return err
	}
	if err := p.begin(); err != nil {
		return err
	}
	if err := p.prepareTopic(ctx, topic); err != nil {
		return err
	}
	if len(msgs) == 0 {
		return nil
	}
	nh := 0
	for i := range msgs {
		nh += headerCount(&msgs[i])
	}
	// One allocation each for the records, their headers and new IDs.
	recs := make([]kgo.Record, len(msgs))
	hdrs := make([]kgo.RecordHeader, nh)
	var (
		wg    sync.WaitGroup
		errMu sync.Mutex
		first error
	)
	promise := func(r *kgo.Record, err error) {
		if err != nil {
			errMu.Lock()
			if first == nil {
				first = p.admin.hook.publishError(ctx, topic, messageID(r), recordSize(r), err)
			}
			errMu.Unlock()
		}
		wg.Done()
	}
	wg.Add(len(msgs))
	for i := range msgs {
		m := &msgs[i]
		n := headerCount(m)
		fillRecord(&recs[i], hdrs[:0:n], topic, m)
		hdrs = hdrs[n:]
		p.cl.Produce(ctx, &recs[i], promise)
	}
	wg.Wait()
	return first
}

// PublishAsync sends m to topic and returns once the record is buffered;
// done (which may be nil) is called with nil once the brokers acknowledged
// m, or with the error Publish would have returned (see
// broker.AsyncPublisher for the semantics every adapter shares). done runs
// on the producer's goroutine, or on the caller's before PublishAsync
// returns for invalid input, a context already ended and after Close: it
// must be quick and must not publish. PublishAsync blocks while the
// producer's buffer is full (franz-go's kgo.MaxBufferedRecords, 10,000 by
// default, settable with WithClientOptions), until ctx ends; ctx also
// bounds the record's retries. Records of one Key go to one partition, in
// call order (the producer is idempotent).
func (p *Publisher) PublishAsync(ctx context.Context, topic string, m broker.Message, done func(broker.Message, error)) {
	if done == nil {
		done = func(broker.Message, error) {}
	}
	a := &asyncRec{p: p, done: done}
	a.m[0] = m
	now := time.Now()
	prepare(&a.m[0], now, a.id[:])
	ctx, ms, call := p.rec.StartAt(ctx, now, topic, a.m[:])
	a.m[0], a.ctx, a.call = ms[0], ctx, call
	if _, known := p.known.Load(topic); !known {
		// A known topic was validated when it became known.
		if err := validateTopicName(topic, broker.ErrInvalidMessage); err != nil {
			a.finish(err)
			return
		}
		if err := p.begin(); err != nil {
			a.finish(err)
			return
		}
		if err := p.prepareTopic(ctx, topic); err != nil {
			a.finish(err)
			return
		}
	} else if err := p.begin(); err != nil {
		a.finish(err)
		return
	}
	if err := ctx.Err(); err != nil {
		a.finish(p.admin.hook.publishError(ctx, topic, a.m[0].ID, len(a.m[0].Payload), err))
		return
	}
	fillRecord(&a.rec, a.hdrs[:0], topic, &a.m[0])
	p.cl.Produce(ctx, &a.rec, asyncProduced)
}

// asyncRec keeps a PublishAsync record, its first headers, its message and
// its trace in one allocation. The record comes first, so that the
// promise finds its asyncRec from the record without a closure (one
// allocation less per message). Recycling asyncRecs through a sync.Pool
// measured no faster (the ID then needs an allocation of its own).
type asyncRec struct {
	rec  kgo.Record
	hdrs [2]kgo.RecordHeader
	id   [idLen]byte
	m    [1]broker.Message
	p    *Publisher
	ctx  context.Context
	call tracing.Call
	done func(broker.Message, error)
}

// asyncProduced is the promise of every PublishAsync record: r is the
// first field of its asyncRec.
func asyncProduced(r *kgo.Record, err error) {
	a := (*asyncRec)(unsafe.Pointer(r))
	if err != nil {
		err = a.p.admin.hook.publishError(a.ctx, r.Topic, a.m[0].ID, recordSize(r), err)
	}
	a.finish(err)
}

// finish ends the trace, then calls done.
func (a *asyncRec) finish(err error) {
	a.p.rec.End(a.ctx, a.call, err)
	a.done(a.m[0], err)
}

// Flush waits until every message published so far is acknowledged or
// failed (their done called), or until ctx ends.
func (p *Publisher) Flush(ctx context.Context) error {
	return p.cl.Flush(ctx)
}

// Stats returns the publisher's counters since NewPublisher, PublishAsync
// calls included: the counters every adapter has (Kafka adds none).
func (p *Publisher) Stats() broker.PublisherStats { return p.rec.Stats() }

// Close waits for the messages in flight to be acknowledged (up to the drain
// timeout, WithDrainTimeout), then closes the client. Publish after Close returns broker.ErrClosed.
// Close is idempotent.
func (p *Publisher) Close() error {
	if !p.closed.CompareAndSwap(false, true) {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), p.cfg.drainTimeout)
	defer cancel()
	err := p.cl.Flush(ctx) // waits for every buffered record and its callback
	p.cl.Close()
	p.admin.Close()
	if err != nil && !errors.Is(err, context.Canceled) {
		return fmt.Errorf("kafka: close publisher: flush: %w", err)
	}
	return nil
}
