package memory

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/go-integration/patterns/broker"
	"github.com/go-integration/patterns/broker/engine"
	"github.com/go-integration/patterns/broker/internal/tracing"
	"github.com/go-integration/patterns/internal/backoff"
)

// Broker is an in-memory broker: a broker.Publisher, broker.Subscriber and
// broker.Provisioner in one value. It keeps messages for every group bound to
// a topic until a member handles them, so it behaves like a durable RabbitMQ
// queue within one process; nothing survives the process.
//
// Semantics shared with the real adapters: routing-key patterns per group
// (broker.Pattern), members of a group compete and every group gets every
// message, at-least-once redelivery when a handler fails, order per key with
// Concurrency > 1, priority (0-9, higher first), dead-lettering after
// MaxAttempts to another topic of the same broker (kept, as in the RabbitMQ
// adapter's dead-letter queue, in a group of that topic named after the
// subscription's group, or "dlq" without one), and Close that waits for
// handlers in flight. Messages published to a topic with no group are dropped,
// as a RabbitMQ exchange without bindings drops them.
type Broker struct {
	now func() time.Time
	eng *engine.Engine
	pub *tracing.Recorder

	mu     sync.RWMutex
	topics map[string]*topic
	closed bool
}

type topic struct {
	groups map[string]*group // named groups
	anon   map[*group]struct{}
	all    []*group // every group, rebuilt on change; read under Broker.mu
}

func (t *topic) rebuild() {
	t.all = t.all[:0:0]
	for _, g := range t.groups {
		t.all = append(t.all, g)
	}
	for g := range t.anon {
		t.all = append(t.all, g)
	}
}

// ErrInvalidOption is returned by New for an option it cannot use; the
// error names the option.
var ErrInvalidOption = errors.New("memory: invalid option")

// Option configures a Broker; pass options to New.
type Option interface{ apply(*engine.Config) error }

type option func(*engine.Config) error

func (o option) apply(c *engine.Config) error { return o(c) }

// WithLogger sets where the broker logs dropped and dead-lettered messages and
// handler panics. Default: slog.Default().
func WithLogger(l *slog.Logger) Option {
	return option(func(c *engine.Config) error {
		if l == nil {
			return fmt.Errorf("%w: WithLogger(nil)", ErrInvalidOption)
		}
		c.Logger = l
		return nil
	})
}

// WithRetryBackoff sets the wait before a failed message's next attempt: a
// random wait up to minWait after the first failure, the ceiling doubling
// per failure up to maxWait (full jitter). The message keeps its place
// ahead of later messages of its key meanwhile. Default
// engine.DefaultRetryMin to engine.DefaultRetryMax, the same on every adapter.
func WithRetryBackoff(minWait, maxWait time.Duration) Option {
	return option(func(c *engine.Config) error {
		p := backoff.Policy{Min: minWait, Max: maxWait}
		if err := p.Validate(); err != nil {
			return fmt.Errorf("%w: WithRetryBackoff: %v", ErrInvalidOption, err)
		}
		c.Retry = p
		return nil
	})
}

// WithDrainTimeout bounds how long Close and a cancelled Subscribe wait for
// running handlers before cancelling their context. Default
// engine.DefaultDrainTimeout (30 s), the same on every adapter.
func WithDrainTimeout(d time.Duration) Option {
	return option(func(c *engine.Config) error {
		if d <= 0 {
			return fmt.Errorf("%w: WithDrainTimeout(%v): not positive", ErrInvalidOption, d)
		}
		c.DrainTimeout = d
		return nil
	})
}

// WithTracer installs t, a value implementing one or more of
// broker.PublishTracer (each Publish call), broker.ProcessTracer (each
// handler call) and broker.DeadLetterTracer; a value implementing none is
// an error. The tracers' System is "memory". WithTracer may be given
// several times: tracers are called in order. Default: none.
func WithTracer(t any) Option {
	return option(func(c *engine.Config) error {
		if err := tracing.Check(t, ""); err != nil {
			return fmt.Errorf("%w: WithTracer: %v", ErrInvalidOption, err)
		}
		c.Tracers = append(c.Tracers, t)
		return nil
	})
}

// New returns an empty broker, or an error wrapping ErrInvalidOption.
func New(opts ...Option) (*Broker, error) {
	b := &Broker{now: time.Now, topics: make(map[string]*topic)}
	cfg := engine.Config{Name: "memory"}
	var errs []error
	for _, o := range opts {
		if o == nil {
			errs = append(errs, fmt.Errorf("%w: nil Option", ErrInvalidOption))
			continue
		}
		if err := o.apply(&cfg); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	eng, err := engine.New(driver{b}, cfg)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidOption, err)
	}
	b.eng = eng
	b.pub = tracing.New(cfg.Name, cfg.Tracers)
	return b, nil
}

// MustNew is New for tests and examples: it panics where New fails.
func MustNew(opts ...Option) *Broker {
	b, err := New(opts...)
	if err != nil {
		panic(err)
	}
	return b
}

// Publish queues msgs for every group of topic whose bindings match each
// message's key. It fills empty IDs and zero Times. It returns ErrClosed
// after Close and ErrInvalidMessage for an empty topic.
func (b *Broker) Publish(ctx context.Context, topicName string, msgs ...broker.Message) error {
	return b.tracedPublish(ctx, nil, topicName, msgs)
}

// tracedPublish is Publish for b or for the Client c (then failing with
// ErrClosed after c.Close), traced and counted.
func (b *Broker) tracedPublish(ctx context.Context, c *Client, topicName string, msgs []broker.Message) error {
	now := b.now()
	broker.Prepare(msgs, now)
	ctx, msgs, call := b.pub.StartAt(ctx, now, topicName, msgs)
	var err error
	if c != nil && c.isClosed() {
		err = broker.ErrClosed
	} else {
		err = b.publish(ctx, topicName, msgs)
	}
	b.pub.End(ctx, call, err)
	return err
}

// publish is Publish without tracing and counting, for prepared messages:
// dead letters go through it, as on the other adapters they do not count
// as publishes.
func (b *Broker) publish(ctx context.Context, topicName string, msgs []broker.Message) error {
	if err := broker.ValidateTopic(topicName); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	b.mu.RLock()
	defer b.mu.RUnlock()
	if b.closed {
		return broker.ErrClosed
	}
	t := b.topics[topicName]
	if t == nil {
		return nil
	}
	for i := range msgs {
		for _, g := range t.all {
			g.offer(&msgs[i])
		}
	}
	return nil
}

// Provision creates s's group and its bindings so that messages published
// from now on are kept for it, and the group that keeps its dead letters
// (see Broker). A subscription without a Group has no group of its own to
// provision.
func (b *Broker) Provision(ctx context.Context, s broker.Subscription) error {
	if err := s.Validate(func(context.Context, broker.Message) error { return nil }); err != nil {
		return err
	}
	if err := b.joinDeadLetter(s); err != nil {
		return err
	}
	if s.Group == "" {
		return nil
	}
	ps, err := broker.CompilePatterns(s.Keys)
	if err != nil {
		return err
	}
	_, err = b.join(s, ps)
	return err
}

// joinDeadLetter creates the group that keeps s's dead letters, as the
// RabbitMQ adapter declares a dead-letter queue: a group of the dead-letter
// topic named after s.Group ("dlq" for a subscription without one), bound
// to every key. Without it, dead letters published before anyone subscribed
// to the dead-letter topic would be dropped.
func (b *Broker) joinDeadLetter(s broker.Subscription) error {
	dl := s.DeadLetterDestination()
	if dl == "" {
		return nil
	}
	g := s.Group
	if g == "" {
		g = "dlq"
	}
	_, err := b.join(broker.Subscription{Topic: dl, Group: g}, nil)
	return err
}

// join finds or creates the group for s and adds its bindings.
func (b *Broker) join(s broker.Subscription, ps broker.Patterns) (*group, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil, broker.ErrClosed
	}
	t := b.topics[s.Topic]
	if t == nil {
		t = &topic{groups: make(map[string]*group), anon: make(map[*group]struct{})}
		b.topics[s.Topic] = t
	}
	var g *group
	if s.Group == "" {
		g = newGroup(s.Topic, "", true)
		t.anon[g] = struct{}{}
	} else if g = t.groups[s.Group]; g == nil {
		g = newGroup(s.Topic, s.Group, false)
		t.groups[s.Group] = g
	}
	g.bind(ps)
	t.rebuild()
	return g, nil
}

func (b *Broker) leave(g *group) {
	if !g.anonymous {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if t := b.topics[g.topic]; t != nil {
		delete(t.anon, g)
		t.rebuild()
	}
}

// Pending reports how many messages wait, not yet taken by a member, in the
// named group of topic: handy in tests to assert a queue drained.
func (b *Broker) Pending(topicName, groupName string) int {
	b.mu.RLock()
	defer b.mu.RUnlock()
	if t := b.topics[topicName]; t != nil {
		if g := t.groups[groupName]; g != nil {
			return g.pending()
		}
	}
	return 0
}

// Stats are the broker's counters: its Publish calls (all Clients
// included) and its Subscribe calls.
type Stats struct {
	Publisher  broker.PublisherStats
	Subscriber broker.SubscriberStats
}

// Stats returns the broker's counters.
func (b *Broker) Stats() Stats {
	return Stats{Publisher: b.pub.Stats(), Subscriber: b.eng.Stats()}
}

// Close stops every Subscribe call (they return ErrClosed), waits for their
// handlers in flight, and makes Publish return ErrClosed. It is idempotent.
func (b *Broker) Close() error {
	b.mu.Lock()
	b.closed = true
	b.mu.Unlock()
	return b.eng.Close()
}

// Subscribe runs h for the messages of s until ctx is done (it returns nil)
// or the broker is closed (it returns ErrClosed), on the engine every
// adapter shares (see broker/engine): key dispatch, in-place retries with
// full-jitter backoff, dead-lettering, the in-flight bound, draining.
// Messages taken but not handled go back to the front of the group, in
// arrival order, for its other members.
func (b *Broker) Subscribe(ctx context.Context, s broker.Subscription, h broker.Handler) error {
	return b.eng.Subscribe(ctx, s, h)
}

// driver is the broker's engine.Driver.
type driver struct{ b *Broker }

func (d driver) Open(ctx context.Context, s broker.Subscription, _ engine.Control) (engine.Receiver, error) {
	ps, err := broker.CompilePatterns(s.Keys)
	if err != nil {
		return nil, err
	}
	if err := d.b.joinDeadLetter(s); err != nil {
		return nil, err
	}
	g, err := d.b.join(s, ps)
	if err != nil {
		return nil, err
	}
	return &receiver{b: d.b, g: g, buf: make([]envelope, 64)}, nil
}

func (d driver) DeadLetter(ctx context.Context, topic string, m broker.Message, _ *engine.Delivery) error {
	return d.b.publish(ctx, topic, []broker.Message{m})
}

// receiver is one Subscribe call's hold on its group.
type receiver struct {
	b   *Broker
	g   *group
	buf []envelope
	ds  []engine.Delivery
}

func (r *receiver) Receive(ctx context.Context, max int, deliver func([]engine.Delivery)) error {
	for {
		n, wait := r.g.take(r.buf[:min(max, len(r.buf))])
		if n > 0 {
			r.ds = r.ds[:0]
			for i := range n {
				e := &r.buf[i]
				m := e.msg
				m.Topic = r.g.topic
				if m.Header != nil {
					// The handler gets its own map; the queue's stays as
					// published for retries and for whoever gets it back.
					m.Header = cloneHeader(m.Header)
				}
				r.ds = append(r.ds, engine.Delivery{Msg: m, Tag: e.seq, Ref: e.msg.Header})
				r.buf[i] = envelope{}
			}
			deliver(r.ds)
			clear(r.ds)
			return nil
		}
		select {
		case <-wait:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Redecode gives a retry the message with the Header as published.
func (r *receiver) Redecode(d *engine.Delivery) broker.Message {
	m := d.Msg
	m.Header = cloneHeader(d.Ref.(map[string]string))
	return m
}

func (r *receiver) Ack(*engine.Delivery) {}

func (r *receiver) Release(ds []*engine.Delivery) {
	es := make([]envelope, len(ds))
	for i, d := range ds {
		m := d.Msg
		m.Topic, m.Attempt = "", 0
		m.Header = d.Ref.(map[string]string)
		es[i] = envelope{msg: m, seq: d.Tag}
	}
	r.g.requeue(es)
}

func (r *receiver) Close() error {
	r.b.leave(r.g)
	return nil
}

var (
	_ broker.Publisher   = (*Broker)(nil)
	_ broker.Subscriber  = (*Broker)(nil)
	_ broker.Provisioner = (*Broker)(nil)
)
