package rabbitmq

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/go-integration/patterns/broker"
	"github.com/go-integration/patterns/broker/engine"
	"github.com/go-integration/patterns/internal/backoff"
)

// Subscriber consumes from durable queues, one per Subscription.Group,
// bound to the topic's exchange with the subscription's key patterns. It
// runs on the engine every adapter shares (broker/engine): key dispatch,
// retries in place, dead-lettering, the in-flight bound (the channel's
// prefetch is Subscription.InFlight()), readiness and draining behave as on
// the memory broker and Kafka. It implements broker.Subscriber and
// broker.Provisioner; it is safe for concurrent use and one Subscriber can
// run many Subscribe calls.
type Subscriber struct {
	cfg config
	obs *observer
	c   *connection
	r   route
	url string
	eng *engine.Engine

	// Dead letters are published on a connection of their own, dialed on
	// first use: a connection the broker blocks for publishing (resource
	// alarm) cannot then stall the consumer's acks.
	pubMu   sync.Mutex
	pubConn *connection
	pubCh   *amqp.Channel

	closeOnce sync.Once
}

var (
	_ broker.Subscriber  = (*Subscriber)(nil)
	_ broker.Provisioner = (*Subscriber)(nil)
)

// NewSubscriber connects to the broker at url and returns a Subscriber. It
// fails when the first connection cannot be made or an option is invalid
// (ErrInvalidOption); later outages are recovered from.
func NewSubscriber(ctx context.Context, url string, opts ...SubscriberOption) (*Subscriber, error) {
	cfg, err := newSubscriberConfig(opts)
	if err != nil {
		return nil, err
	}
	s := &Subscriber{cfg: cfg, obs: newObserver(cfg.tracers), r: route{cfg.exchange}, url: url}
	s.eng, err = engine.New(subDriver{s}, engine.Config{
		Name:         "rabbitmq",
		Logger:       cfg.logger,
		DrainTimeout: cfg.drainTimeout,
		Retry:        cfg.retry,
		Reopen:       backoff.Policy{Min: cfg.backoffMin, Max: cfg.backoffMax},
		Validate:     func(sub broker.Subscription) error { return validateSubscriptionNames(&s.cfg, sub) },
		Tracers:      cfg.tracers,
	})
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidOption, err)
	}
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
	if err := validateSubscriptionNames(&s.cfg, sub); err != nil {
		return err
	}
	ac, _, err := s.c.get(ctx, s.eng.Closing())
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
// topology again and resumes. Handler results: nil acks; an error retries
// the message in place after a full-jitter backoff (WithRetryBackoff), still
// unacked and ahead of later messages of its key; after sub.MaxAttempts
// attempts or a broker.Permanent error the message is published to the
// dead-letter topic with the broker.Header* headers (and its x-death
// history) and acked. Subscribe fails at once for an invalid subscription,
// a name RabbitMQ would refuse, or a queue that exists with other arguments.
func (s *Subscriber) Subscribe(ctx context.Context, sub broker.Subscription, h broker.Handler) error {
	return s.eng.Subscribe(ctx, sub, h)
}

// subDriver is the Subscriber's engine.Driver.
type subDriver struct{ s *Subscriber }

var seq atomic.Uint64

func (d subDriver) Open(ctx context.Context, sub broker.Subscription, _ engine.Control) (engine.Receiver, error) {
	s := d.s
	ac, _, err := s.c.get(ctx, s.eng.Closing())
	if err != nil {
		return nil, err
	}
	ch, err := ac.Channel()
	if err != nil {
		return nil, fmt.Errorf("rabbitmq: open channel: %w", err)
	}
	r := &receiver{s: s, sub: sub, ch: ch}
	r.closes = ch.NotifyClose(make(chan *amqp.Error, 1))
	r.cancels = ch.NotifyCancel(make(chan string, 4))
	top := planTopology(&s.cfg, sub)
	if r.queue, err = top.declare(ch, true); err != nil {
		_ = ch.Close()
		return nil, err
	}
	if err := ch.Qos(sub.InFlight(), 0, false); err != nil {
		_ = ch.Close()
		return nil, fmt.Errorf("rabbitmq: qos: %w", err)
	}
	r.tag = fmt.Sprintf("patterns-%d-%s", seq.Add(1), broker.NewID()[:8])
	if r.deliveries, err = ch.Consume(r.queue, r.tag, false, false, false, false, nil); err != nil {
		_ = ch.Close()
		return nil, fmt.Errorf("rabbitmq: consume %q: %w", r.queue, err)
	}
	r.acks = newAcker(ch, s.cfg.logger)
	return r, nil
}

// DeadLetter publishes m with from's AMQP properties (x-death included) to
// the dead-letter topic and waits for the broker's confirm.
func (d subDriver) DeadLetter(ctx context.Context, topic string, m broker.Message, from *engine.Delivery) error {
	p := copyDelivery(from.Ref.(*amqp.Delivery))
	for k, v := range m.Header {
		switch k {
		case HeaderContentType, HeaderContentEncoding, HeaderCorrelationID, HeaderReplyTo:
			continue
		}
		p.Headers[k] = strings.ToValidUTF8(v, "\uFFFD")
	}
	return d.s.publish(ctx, d.s.r.exchange(topic), d.s.r.key(topic, m.Key), p)
}

// receiver is one consumer on one channel.
type receiver struct {
	s          *Subscriber
	sub        broker.Subscription
	ch         *amqp.Channel
	queue, tag string
	deliveries <-chan amqp.Delivery
	closes     chan *amqp.Error
	cancels    chan string
	acks       *acker
	ds         []engine.Delivery
}

func (r *receiver) Receive(ctx context.Context, max int, deliver func([]engine.Delivery)) error {
	var d amqp.Delivery
	var ok bool
	select {
	case d, ok = <-r.deliveries:
	case <-ctx.Done():
		return ctx.Err()
	case <-r.cancels:
		return r.cancelled(ctx)
	case e := <-r.closes:
		return fmt.Errorf("rabbitmq: channel closed: %v", e)
	}
	r.ds = r.ds[:0]
	for {
		if !ok {
			select {
			case <-r.cancels: // amqp091 announces the cancel before closing deliveries
				return r.cancelled(ctx)
			default:
				return errors.New("rabbitmq: delivery channel closed")
			}
		}
		dd := new(amqp.Delivery)
		*dd = d
		r.acks.track(dd.DeliveryTag)
		r.ds = append(r.ds, engine.Delivery{Msg: fromDelivery(dd, r.sub.Topic, r.s.r), Tag: dd.DeliveryTag, Ref: dd})
		if len(r.ds) == max {
			break
		}
		select {
		case d, ok = <-r.deliveries:
			continue
		default:
		}
		break
	}
	deliver(r.ds)
	clear(r.ds)
	return nil
}

func (r *receiver) cancelled(ctx context.Context) error {
	err := fmt.Errorf("rabbitmq: the server cancelled the consumer of queue %q (queue deleted, or a quorum queue's leader moved?)", r.queue)
	r.s.obs.connection(ctx, r.s.c, TraceConnectionData{Event: ConsumerCancelled, Queue: r.queue, Err: err})
	return err
}

// Redecode rebuilds the message from the AMQP delivery for a retry.
func (r *receiver) Redecode(d *engine.Delivery) broker.Message {
	return fromDelivery(d.Ref.(*amqp.Delivery), r.sub.Topic, r.s.r)
}

// Ack hands d to the acker, which coalesces acknowledgements.
func (r *receiver) Ack(d *engine.Delivery) { r.acks.ack(d.Tag) }

// Release nacks with requeue: a classic queue puts the messages back at
// their places, ahead of what came after them.
func (r *receiver) Release(ds []*engine.Delivery) {
	tags := make([]uint64, len(ds))
	for i, d := range ds {
		tags[i] = d.Tag
	}
	r.acks.nack(tags)
}

// Close sends the acknowledgements still waiting, then cancels the
// consumer and closes the channel: what was not acked goes back.
func (r *receiver) Close() error {
	r.acks.close()
	if !r.ch.IsClosed() {
		_ = r.ch.Cancel(r.tag, false)
	}
	return r.ch.Close()
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
// connection (dialed on first use, reconnected like the consumer's). The
// exchange is declared first: it may have been deleted behind our back.
// The engine retries a failure with backoff.
func (s *Subscriber) publish(ctx context.Context, exchange, key string, p amqp.Publishing) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	ch, err := s.pubChannel(ctx)
	if err != nil {
		return err
	}
	if exchange != "" {
		if err := ch.ExchangeDeclare(exchange, amqp.ExchangeTopic, true, false, false, false, nil); err != nil {
			return declareError("dead-letter exchange", exchange, err)
		}
	}
	dc, err := ch.PublishWithDeferredConfirmWithContext(ctx, exchange, key, false, false, p)
	if err != nil {
		return err
	}
	acked, err := dc.WaitContext(ctx)
	if err != nil {
		return err
	}
	if !acked {
		return fmt.Errorf("%w: rabbitmq: the broker refused the dead letter", broker.ErrNotConfirmed)
	}
	return nil
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
	ac, _, err := s.pubConn.get(ctx, s.eng.Closing())
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
func (s *Subscriber) Ping(ctx context.Context) error { return s.c.ping(ctx, s.eng.Closing()) }

// Stats returns the subscriber's counters.
func (s *Subscriber) Stats() SubscriberStats {
	o := s.obs
	return SubscriberStats{
		SubscriberStats: s.eng.Stats(),
		ConsumerCancels: o.consumerCancels.Load(),
		Connects:        o.connects.Load(), Disconnects: o.disconnects.Load(), Reconnects: o.reconnects.Load(),
	}
}

// Conn returns the underlying connection, or nil during an outage. It is
// replaced after a reconnect; do not close it.
func (s *Subscriber) Conn() *amqp.Connection { return s.c.current() }

// Close stops every Subscribe call, lets running handlers finish (up to the
// drain timeout) and ack, then closes the connections. Messages received but
// not yet handled go back to the queue. Close is idempotent.
func (s *Subscriber) Close() error {
	s.closeOnce.Do(func() {
		_ = s.eng.Close()
		s.pubMu.Lock()
		if s.pubConn != nil {
			s.pubConn.close()
		}
		s.pubMu.Unlock()
		s.c.close()
	})
	return nil
}
