package memory

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"sync"
	"time"

	"github.com/go-integration/patterns/broker"
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
	log             *slog.Logger
	redeliveryDelay time.Duration
	drainTimeout    time.Duration
	now             func() time.Time

	mu     sync.RWMutex
	topics map[string]*topic
	closed bool

	closing   chan struct{}
	closeOnce sync.Once
	running   sync.WaitGroup // Subscribe calls in progress
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

// Option configures a Broker.
type Option func(*Broker)

// WithLogger sets where the broker logs dropped and dead-lettered messages and
// handler panics. Default: slog.Default().
func WithLogger(l *slog.Logger) Option { return func(b *Broker) { b.log = l } }

// WithRedeliveryDelay waits d before redelivering a message whose handler
// failed. Default: 0, redeliver at once (as RabbitMQ does on a nack with requeue).
func WithRedeliveryDelay(d time.Duration) Option { return func(b *Broker) { b.redeliveryDelay = d } }

// WithDrainTimeout bounds how long Close and a cancelled Subscribe wait for
// running handlers before cancelling their context. Default: 30 s.
func WithDrainTimeout(d time.Duration) Option { return func(b *Broker) { b.drainTimeout = d } }

// New returns an empty broker.
func New(opts ...Option) *Broker {
	b := &Broker{
		log:          slog.Default(),
		drainTimeout: 30 * time.Second,
		now:          time.Now,
		topics:       make(map[string]*topic),
		closing:      make(chan struct{}),
	}
	for _, o := range opts {
		o(b)
	}
	return b
}

// Publish queues msgs for every group of topic whose bindings match each
// message's key. It fills empty IDs and zero Times. It returns ErrClosed
// after Close and ErrInvalidMessage for an empty topic.
func (b *Broker) Publish(ctx context.Context, topicName string, msgs ...broker.Message) error {
	if err := broker.ValidateTopic(topicName); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	broker.Prepare(msgs, b.now())
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

// Close stops every Subscribe call (they return ErrClosed), waits for their
// handlers in flight, and makes Publish return ErrClosed. It is idempotent.
func (b *Broker) Close() error {
	b.closeOnce.Do(func() {
		b.mu.Lock()
		b.closed = true
		b.mu.Unlock()
		close(b.closing)
	})
	b.running.Wait()
	return nil
}

// Subscribe runs h for the messages of s until ctx is done (it returns nil)
// or the broker is closed (it returns ErrClosed). Handlers in flight then
// finish, with their context cancelled only after the drain timeout, and
// messages taken but not started go back to the group for its other members.
// A handler that panics is treated as one that returned an error.
func (b *Broker) Subscribe(ctx context.Context, s broker.Subscription, h broker.Handler) error {
	if err := s.Validate(h); err != nil {
		return err
	}
	ps, err := broker.CompilePatterns(s.Keys)
	if err != nil {
		return err
	}
	b.mu.RLock()
	closed := b.closed
	if !closed {
		b.running.Add(1)
	}
	b.mu.RUnlock()
	if closed {
		return broker.ErrClosed
	}
	defer b.running.Done()
	if err := b.joinDeadLetter(s); err != nil {
		return err
	}
	g, err := b.join(s, ps)
	if err != nil {
		return err
	}
	defer b.leave(g)

	c := &consumer{b: b, g: g, s: s, h: h, dlq: s.DeadLetterDestination(), stop: make(chan struct{})}
	c.run(ctx)
	if ctx.Err() == nil {
		return broker.ErrClosed
	}
	return nil
}

// consumer is one Subscribe call: a dispatcher and s.Workers() workers.
type consumer struct {
	b    *Broker
	g    *group
	s    broker.Subscription
	h    broker.Handler
	dlq  string
	stop chan struct{} // closed when the subscription ends

	hctx context.Context // handlers' context: ctx's values, cancelled after the drain timeout

	mu   sync.Mutex
	back []envelope // messages the workers gave back on stop, requeued by run
}

// giveBack keeps e for run to requeue with the rest: one requeue of
// everything the subscription took keeps order per key, where separate ones
// would put later messages ahead of earlier ones.
func (c *consumer) giveBack(e envelope) {
	c.mu.Lock()
	c.back = append(c.back, e)
	c.mu.Unlock()
}

func (c *consumer) run(ctx context.Context) {
	hctx, hcancel := context.WithCancel(context.WithoutCancel(ctx))
	defer hcancel()
	c.hctx = hctx

	n := c.s.Workers()
	queues := make([]chan envelope, n)
	var wg sync.WaitGroup
	for i := range queues {
		queues[i] = make(chan envelope, 8)
		wg.Add(1)
		go func(q chan envelope) {
			defer wg.Done()
			c.work(q)
		}(queues[i])
	}

	go func() {
		select {
		case <-ctx.Done():
		case <-c.b.closing:
		}
		close(c.stop)
		t := time.NewTimer(c.b.drainTimeout)
		defer t.Stop()
		select {
		case <-t.C:
			hcancel()
		case <-hctx.Done():
		}
	}()

	leftover := c.dispatch(queues)
	wg.Wait()
	leftover = append(leftover, c.back...)
	for _, q := range queues {
		for len(q) > 0 {
			leftover = append(leftover, <-q)
		}
	}
	c.g.requeue(leftover)
}

// dispatch takes messages from the group and hands each to the worker for
// its key, until stop. It returns messages it took but could not hand over.
func (c *consumer) dispatch(queues []chan envelope) []envelope {
	buf := make([]envelope, 32)
	for {
		select {
		case <-c.stop:
			return nil
		default:
		}
		// Take no more than the workers can buffer, so idle members of the group get the rest.
		free := 0
		for _, q := range queues {
			free += cap(q) - len(q)
		}
		if free == 0 {
			free = 1
		}
		n, wait := c.g.take(buf[:min(free, len(buf))])
		if n == 0 {
			select {
			case <-wait:
			case <-c.stop:
				return nil
			}
			continue
		}
		for i := 0; i < n; i++ {
			q := queues[keyHash(buf[i].msg.Key)%uint32(len(queues))]
			select {
			case q <- buf[i]:
			case <-c.stop:
				return append([]envelope(nil), buf[i:n]...)
			}
		}
	}
}

func (c *consumer) work(q chan envelope) {
	for {
		select {
		case <-c.stop:
			return
		default:
		}
		select {
		case e := <-q:
			if !c.deliver(e) {
				return
			}
		case <-c.stop:
			return
		}
	}
}

// deliver runs the handler on e until it succeeds, is dead-lettered, or the
// subscription stops (then e goes back to the group). It reports whether the
// worker should go on.
func (c *consumer) deliver(e envelope) bool {
	for {
		e.attempt++
		m := e.msg
		m.Topic = c.g.topic
		m.Attempt = e.attempt
		if e.attempt > 1 {
			// A retry sees the message as published, not as the last attempt left it.
			m.Payload = cloneBytes(e.msg.Payload)
			m.Header = cloneHeader(e.msg.Header)
		}
		err := c.call(m)
		if err == nil {
			return true
		}
		if broker.IsPermanent(err) || (c.s.MaxAttempts > 0 && e.attempt >= c.s.MaxAttempts) {
			if c.deadLetter(m, err) {
				return true
			}
			// The dead-letter topic refused it (broker closed): keep the message.
			c.giveBack(e)
			return false
		}
		select {
		case <-c.stop:
			c.giveBack(e)
			return false
		default:
		}
		if d := c.b.redeliveryDelay; d > 0 {
			t := time.NewTimer(d)
			select {
			case <-t.C:
			case <-c.stop:
				t.Stop()
				c.giveBack(e)
				return false
			}
		}
	}
}

// call runs the handler, turning a panic into an error.
func (c *consumer) call(m broker.Message) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: %v", ErrHandlerPanic, r)
			c.b.log.Error("memory broker: handler panicked", "topic", m.Topic, "id", m.ID, "panic", r, "stack", string(debug.Stack()))
		}
	}()
	return c.h(c.hctx, m)
}

// ErrHandlerPanic wraps the value of a handler's panic; the message is redelivered.
var ErrHandlerPanic = errors.New("memory broker: handler panicked")

func (c *consumer) deadLetter(m broker.Message, cause error) bool {
	if c.dlq == "" {
		c.b.log.Warn("memory broker: dropping message that failed permanently (no dead-letter topic)",
			"topic", m.Topic, "group", c.s.Group, "id", m.ID, "attempts", m.Attempt, "error", cause)
		return true
	}
	dl := broker.DeadLetter(m, c.s.Group, cause, c.b.now())
	if err := c.b.Publish(context.Background(), c.dlq, dl); err != nil {
		return false
	}
	c.b.log.Info("memory broker: dead-lettered", "topic", m.Topic, "group", c.s.Group, "id", m.ID, "to", c.dlq, "attempts", m.Attempt, "error", cause)
	return true
}

// keyHash is FNV-1a: the same key always goes to the same worker.
func keyHash(s string) uint32 {
	h := uint32(2166136261)
	for i := 0; i < len(s); i++ {
		h ^= uint32(s[i])
		h *= 16777619
	}
	return h
}

var (
	_ broker.Publisher   = (*Broker)(nil)
	_ broker.Subscriber  = (*Broker)(nil)
	_ broker.Provisioner = (*Broker)(nil)
)
