package rabbitmq

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/go-integration/patterns/broker"
)

// Subscriber consumes from durable queues, one per Subscription.Group,
// bound to the topic's exchange with the subscription's key patterns. It
// implements broker.Subscriber and broker.Provisioner; it is safe for
// concurrent use and one Subscriber can run many Subscribe calls.
type Subscriber struct {
	cfg config
	obs *observer
	c   *connection
	r   route
	url string

	// Retries and dead letters are published on a connection of their own,
	// dialed on first use: a connection the broker blocks for publishing
	// (resource alarm) cannot then stall the consumer's acks.
	pubMu   sync.Mutex
	pubConn *connection
	pubCh   *amqp.Channel

	mu        sync.Mutex
	closed    bool
	closing   chan struct{}
	wg        sync.WaitGroup
	closeOnce sync.Once
}

var (
	_ broker.Subscriber  = (*Subscriber)(nil)
	_ broker.Provisioner = (*Subscriber)(nil)
)

// NewSubscriber connects to the broker at url and returns a Subscriber. It
// fails when the first connection cannot be made or the options conflict;
// later outages are recovered from.
func NewSubscriber(ctx context.Context, url string, opts ...Option) (*Subscriber, error) {
	cfg, err := newConfig(opts)
	if err != nil {
		return nil, err
	}
	s := &Subscriber{cfg: cfg, obs: &observer{hook: cfg.hook}, r: route{cfg.exchange}, url: url, closing: make(chan struct{})}
	s.c, err = dial(ctx, url, &s.cfg, s.obs)
	if err != nil {
		return nil, err
	}
	return s, nil
}

// Provision declares the subscription's exchange, durable queue, bindings and
// dead-letter exchange and queue without consuming, so messages published
// from now on are kept for the group. A subscription without a Group has no
// durable queue: only its exchange and dead-letter topology are declared.
func (s *Subscriber) Provision(ctx context.Context, sub broker.Subscription) error {
	if err := sub.Validate(func(context.Context, broker.Message) error { return nil }); err != nil {
		return err
	}
	ac, _, err := s.c.get(ctx, s.closing)
	if err != nil {
		return fmt.Errorf("rabbitmq: provision %q: %w", sub.Topic, err)
	}
	ch, err := ac.Channel()
	if err != nil {
		return fmt.Errorf("rabbitmq: provision %q: %w", sub.Topic, err)
	}
	defer ch.Close()
	top := planTopology(&s.cfg, sub)
	_, err = top.declare(ch, !top.private)
	return err
}

// Subscribe consumes sub's queue and runs h for each message until ctx ends
// (then it returns nil) or Close is called (then broker.ErrClosed). It
// survives connection drops and broker restarts: it reconnects, declares its
// topology again and resumes. Handler results: nil acks; an error hands the
// message back for another attempt (at once, or after WithRetryDelay); after
// sub.MaxAttempts attempts or a broker.Permanent error the message is
// published to the dead-letter topic with the broker.Header* headers (and its
// x-death history) and acked. Subscribe fails at once for an invalid
// subscription or a queue that exists with other arguments.
func (s *Subscriber) Subscribe(ctx context.Context, sub broker.Subscription, h broker.Handler) error {
	if err := sub.Validate(h); err != nil {
		return err
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return broker.ErrClosed
	}
	s.wg.Add(1)
	s.mu.Unlock()
	defer s.wg.Done()

	top := planTopology(&s.cfg, sub)
	wait := s.cfg.backoffMin
	for {
		ac, _, err := s.c.get(ctx, s.closing)
		if err != nil {
			return s.stopResult(ctx, err)
		}
		started := time.Now()
		stopped, err := s.session(ctx, ac, &top, sub, h)
		if stopped {
			return s.stopResult(ctx, nil)
		}
		if isFatal(err) {
			return err
		}
		s.cfg.logger.Warn("rabbitmq: consumer interrupted, resuming", "topic", sub.Topic, "group", sub.Group, "err", err)
		if time.Since(started) > 5*time.Second {
			wait = s.cfg.backoffMin
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-s.closing:
			t.Stop()
			return broker.ErrClosed
		case <-t.C:
		}
		wait = min(wait*2, s.cfg.backoffMax)
	}
}

func (s *Subscriber) stopResult(ctx context.Context, err error) error {
	select {
	case <-s.closing:
		return broker.ErrClosed
	default:
	}
	if ctx.Err() != nil {
		return nil
	}
	return err
}

type job struct {
	d amqp.Delivery
	m broker.Message
}

// session is one consumer on one channel; it ends when stopped (ctx or
// Close) or when the channel or consumer goes away.
type session struct {
	s     *Subscriber
	sub   broker.Subscription
	top   *topology
	queue string
}

var seed = maphash.MakeSeed()

func (s *Subscriber) session(ctx context.Context, ac *amqp.Connection, top *topology, sub broker.Subscription, h broker.Handler) (stopped bool, err error) {
	ch, err := ac.Channel()
	if err != nil {
		return false, fmt.Errorf("rabbitmq: open channel: %w", err)
	}
	defer ch.Close()
	closes := ch.NotifyClose(make(chan *amqp.Error, 1))
	cancels := ch.NotifyCancel(make(chan string, 4))
	queue, err := top.declare(ch, true)
	if err != nil {
		return false, err
	}
	workers := sub.Workers()
	prefetch := s.cfg.prefetch
	if prefetch == 0 {
		prefetch = workers * 16
	}
	if err := ch.Qos(prefetch, 0, false); err != nil {
		return false, fmt.Errorf("rabbitmq: qos: %w", err)
	}
	ss := &session{s: s, sub: sub, top: top, queue: queue}
	tag := "patterns-" + broker.NewID()[:16]
	deliveries, err := ch.Consume(queue, tag, false, false, false, false, nil)
	if err != nil {
		return false, fmt.Errorf("rabbitmq: consume %q: %w", queue, err)
	}

	hctx, hcancel := context.WithCancel(context.WithoutCancel(ctx))
	defer hcancel()
	var stopping atomic.Bool
	jobs := make([]chan job, workers)
	var wg sync.WaitGroup
	for i := range jobs {
		jobs[i] = make(chan job, prefetch)
		wg.Add(1)
		go func(in <-chan job) {
			defer wg.Done()
			for j := range in {
				if stopping.Load() {
					continue // left unacked: the broker requeues it when the channel closes
				}
				ss.handle(hctx, h, j)
			}
		}(jobs[i])
	}

	var reason error
loop:
	for {
		select {
		case d, ok := <-deliveries:
			if !ok {
				reason = errors.New("delivery channel closed")
				select {
				case <-cancels: // amqp091 announces the cancel before closing deliveries
					reason = ss.cancelled()
				default:
				}
				break loop
			}
			m := fromDelivery(&d, sub.Topic, s.r)
			w := 0
			if workers > 1 {
				w = int(maphash.String(seed, m.Key) % uint64(workers))
			}
			select {
			case jobs[w] <- job{d: d, m: m}:
			case <-ctx.Done():
				stopped = true
				break loop
			case <-s.closing:
				stopped = true
				break loop
			}
		case <-ctx.Done():
			stopped = true
			break loop
		case <-s.closing:
			stopped = true
			break loop
		case <-cancels:
			reason = ss.cancelled()
			break loop
		case e := <-closes:
			reason = fmt.Errorf("rabbitmq: channel closed: %v", e)
			break loop
		}
	}
	if stopped {
		_ = ch.Cancel(tag, false)
	}
	stopping.Store(true)
	for _, j := range jobs {
		close(j)
	}
	drain := time.AfterFunc(s.cfg.drainTimeout, hcancel)
	wg.Wait()
	drain.Stop()
	return stopped, reason
}

func (ss *session) cancelled() error {
	err := fmt.Errorf("rabbitmq: the server cancelled the consumer of queue %q (queue deleted?)", ss.queue)
	ss.s.obs.emit(Event{Kind: EventConsumerCancelled, Topic: ss.sub.Topic, Queue: ss.queue, Err: err})
	return err
}

func (ss *session) handle(ctx context.Context, h broker.Handler, j job) {
	s := ss.s
	s.obs.emit(Event{Kind: EventDelivered, Topic: ss.sub.Topic, Queue: ss.queue, MessageID: j.m.ID, Attempt: j.m.Attempt})
	err := callHandler(ctx, h, j.m)
	if err == nil {
		if aerr := j.d.Ack(false); aerr != nil {
			s.cfg.logger.Debug("rabbitmq: ack failed; the message will be redelivered", "queue", ss.queue, "id", j.m.ID, "err", aerr)
		}
		return
	}
	if ctx.Err() != nil {
		// The drain timeout cancelled the handler: that is no failed attempt.
		// Hand the message back untouched instead of retrying or
		// dead-lettering it.
		s.cfg.logger.Debug("rabbitmq: handler cut off by the drain timeout; requeueing", "queue", ss.queue, "id", j.m.ID, "err", err)
		_ = j.d.Nack(false, true)
		return
	}
	dest := ss.sub.DeadLetterDestination()
	if broker.IsPermanent(err) || (ss.sub.MaxAttempts > 0 && j.m.Attempt >= ss.sub.MaxAttempts) {
		if dest == "" {
			s.cfg.logger.Warn("rabbitmq: dropping a permanently failing message (no dead-letter topic)", "topic", ss.sub.Topic, "id", j.m.ID, "attempt", j.m.Attempt, "err", err)
			s.obs.emit(Event{Kind: EventDropped, Topic: ss.sub.Topic, Queue: ss.queue, MessageID: j.m.ID, Attempt: j.m.Attempt, Err: err})
			_ = j.d.Ack(false)
			return
		}
		dl := broker.DeadLetter(j.m, ss.sub.Group, err, time.Now())
		p := copyDelivery(&j.d)
		for k, v := range dl.Header {
			switch k {
			case HeaderContentType, HeaderContentEncoding, HeaderCorrelationID, HeaderReplyTo:
				continue
			}
			p.Headers[k] = strings.ToValidUTF8(v, "\uFFFD")
		}
		if perr := ss.publish(s.r.exchange(dest), s.r.key(dest, j.m.Key), p); perr != nil {
			s.cfg.logger.Warn("rabbitmq: dead-lettering failed; the message will be redelivered", "topic", ss.sub.Topic, "id", j.m.ID, "err", perr)
			_ = j.d.Nack(false, true)
			return
		}
		s.cfg.logger.Info("rabbitmq: dead-lettered", "topic", ss.sub.Topic, "dead_letter_topic", dest, "id", j.m.ID, "attempt", j.m.Attempt, "err", err)
		s.obs.emit(Event{Kind: EventDeadLettered, Topic: ss.sub.Topic, Queue: ss.queue, MessageID: j.m.ID, Attempt: j.m.Attempt, Err: err})
		_ = j.d.Ack(false)
		return
	}
	s.obs.emit(Event{Kind: EventRetried, Topic: ss.sub.Topic, Queue: ss.queue, MessageID: j.m.ID, Attempt: j.m.Attempt, Err: err})
	if ss.top.quorum && ss.top.retryDelay == 0 {
		// the server counts the attempt in x-delivery-count.
		_ = j.d.Nack(false, true)
		return
	}
	p := copyDelivery(&j.d)
	p.Headers[headerAttempts] = int64(j.m.Attempt)
	p.Headers[headerKey] = j.m.Key
	target := ss.queue
	if ss.top.retryDelay > 0 {
		target = ss.top.retryQueue(ss.queue)
		p.Expiration = strconv.FormatInt(ss.top.retryDelay, 10)
	}
	if perr := ss.publish("", target, p); perr != nil {
		s.cfg.logger.Warn("rabbitmq: retry republish failed; requeueing", "queue", ss.queue, "id", j.m.ID, "err", perr)
		_ = j.d.Nack(false, true)
		return
	}
	_ = j.d.Ack(false)
}

// callHandler runs h, turning a panic into an error so the message is retried
// like any failure instead of killing the process.
func callHandler(ctx context.Context, h broker.Handler, m broker.Message) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("rabbitmq: handler panicked: %v\n%s", r, debug.Stack())
		}
	}()
	return h(ctx, m)
}

// copyDelivery returns a Publishing with d's properties and body and a copy of
// its headers without the per-copy bookkeeping.
func copyDelivery(d *amqp.Delivery) amqp.Publishing {
	h := make(amqp.Table, len(d.Headers)+8)
	for k, v := range d.Headers {
		switch k {
		case headerAttempts, headerKey, "x-delivery-count":
			continue
		}
		if s, ok := v.(string); ok && !utf8.ValidString(s) {
			v = []byte(s)
		}
		h[k] = v
	}
	return amqp.Publishing{
		Headers:         h,
		ContentType:     d.ContentType,
		ContentEncoding: d.ContentEncoding,
		DeliveryMode:    amqp.Persistent,
		Priority:        d.Priority,
		CorrelationId:   d.CorrelationId,
		ReplyTo:         d.ReplyTo,
		MessageId:       d.MessageId,
		Timestamp:       d.Timestamp,
		Type:            d.Type,
		AppId:           d.AppId,
		Body:            d.Body,
	}
}

// publish sends p and waits for its confirm on the subscriber's publishing
// connection (dialed on first use, reconnected like the consumer's).
func (ss *session) publish(exchange, key string, p amqp.Publishing) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var err error
	for attempt := 0; attempt < 3; attempt++ {
		var ch *amqp.Channel
		if ch, err = ss.s.pubChannel(ctx); err != nil {
			return err
		}
		if attempt > 0 && exchange != "" {
			// the exchange may have been deleted behind our back (NOT_FOUND closed the channel).
			if err = ch.ExchangeDeclare(exchange, amqp.ExchangeTopic, true, false, false, false, nil); err != nil {
				continue
			}
		}
		var dc *amqp.DeferredConfirmation
		if dc, err = ch.PublishWithDeferredConfirmWithContext(ctx, exchange, key, false, false, p); err != nil {
			continue
		}
		var acked bool
		if acked, err = dc.WaitContext(ctx); err != nil {
			return err
		}
		if acked {
			return nil
		}
		err = errors.New("not confirmed")
	}
	return err
}

func (s *Subscriber) pubChannel(ctx context.Context) (*amqp.Channel, error) {
	s.pubMu.Lock()
	defer s.pubMu.Unlock()
	if s.pubCh != nil && !s.pubCh.IsClosed() {
		return s.pubCh, nil
	}
	if s.pubConn == nil {
		cfg := s.cfg
		if cfg.name != "" {
			cfg.name += " (retries)"
		}
		c, err := dial(ctx, s.url, &cfg, s.obs)
		if err != nil {
			return nil, err
		}
		s.pubConn = c
	}
	ac, _, err := s.pubConn.get(ctx, s.closing)
	if err != nil {
		return nil, err
	}
	ch, err := ac.Channel()
	if err != nil {
		return nil, err
	}
	if err := ch.Confirm(false); err != nil {
		_ = ch.Close()
		return nil, err
	}
	s.pubCh = ch
	return ch, nil
}

// Ping checks that the broker answers on the subscriber's connection.
func (s *Subscriber) Ping(ctx context.Context) error { return s.c.ping(ctx, s.closing) }

// Stats returns the subscriber's counters.
func (s *Subscriber) Stats() Stats { return s.obs.stats() }

// Conn returns the underlying connection, or nil during an outage. It is
// replaced after a reconnect; do not close it.
func (s *Subscriber) Conn() *amqp.Connection { return s.c.current() }

// Close stops every Subscribe call, lets running handlers finish (up to the
// drain timeout) and ack, then closes the connection. Messages received but
// not yet handled go back to the queue. Close is idempotent.
func (s *Subscriber) Close() error {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closed = true
		close(s.closing)
		s.mu.Unlock()
		s.wg.Wait()
		s.pubMu.Lock()
		if s.pubConn != nil {
			s.pubConn.close()
		}
		s.pubMu.Unlock()
		s.c.close()
	})
	return nil
}
