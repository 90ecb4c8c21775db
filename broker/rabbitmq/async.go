package rabbitmq

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/go-integration/patterns/broker"
	"github.com/go-integration/patterns/broker/internal/tracing"
	"github.com/go-integration/patterns/internal/amqpnodes"
)

var _ broker.AsyncPublisher = (*Publisher)(nil)

// DefaultMaxInFlight is the number of PublishAsync messages per channel
// of the pool the publisher keeps unconfirmed when WithMaxInFlight is not
// given. Confirms of persistent messages take milliseconds (RabbitMQ
// acknowledges them in batches as it syncs to disk), so the window must
// cover that latency at full rate: on the 2-core development machine, 16
// goroutines publishing through the default single channel reached
// 0.7–0.9× a raw client with 16 × 128 confirms in flight when the bound
// was 128, and 0.9–1.0× with 1,024. It bounds what a slow or blocked
// broker makes the process hold to 1,024 messages per channel.
const DefaultMaxInFlight = 1024

// asyncSlot is the asynchronous side of one channel of the pool: the
// messages PublishAsync sent on it and whose outcome is not yet delivered,
// in the order they were sent, and the goroutine that waits for their
// confirms (started on the slot's first PublishAsync).
type asyncSlot struct {
	s    *pubSlot
	sem  chan struct{} // a token per message in a queue: the in-flight bound, shared by the slots
	lock chan struct{} // held to send (so q is in send order) and to republish
	cur  *pubChannel   // the channel the last send used; under lock

	qmu     sync.Mutex
	q       []*asyncMsg // sent, outcome not yet delivered
	enq     uint64      // messages appended to q, ever
	deq     uint64      // outcomes delivered, ever
	waiters []flushWaiter
	wake    chan struct{} // cap 1: q grew

	start sync.Once
}

type flushWaiter struct {
	upTo uint64
	done chan struct{}
}

// asyncMsg is one PublishAsync message, its trace and its last send.
type asyncMsg struct {
	m        [1]broker.Message
	pub      amqp.Publishing
	topic    string
	exchange string
	key      string
	ctx      context.Context
	call     tracing.Call
	done     func(broker.Message, error)

	// Under the slot's qmu: the channel and confirm of its last send, or
	// the error it fails with without waiting for a confirm.
	pc  *pubChannel
	dc  *amqp.DeferredConfirmation
	err error

	soft int  // channel errors it was republished after (confirmLoop only)
	sent bool // written to a channel once (set by sendAsync before a is shared)
}

// newAsyncSlots returns the slots' asynchronous sides. The in-flight
// bound, maxInFlight per channel, is shared: keys hash unevenly over the
// channels, and a bound per channel would make the busiest one throttle
// every publisher while the others sit below theirs.
func newAsyncSlots(slots []*pubSlot, maxInFlight int) []*asyncSlot {
	sem := make(chan struct{}, maxInFlight*len(slots))
	as := make([]*asyncSlot, len(slots))
	for i, s := range slots {
		as[i] = &asyncSlot{s: s, sem: sem, lock: make(chan struct{}, 1), wake: make(chan struct{}, 1)}
	}
	return as
}

// asyncSlotFor returns the slot of a message with key: one per key, so
// that messages of a key keep their order; keyless ones are spread.
func (p *Publisher) asyncSlotFor(key string) *asyncSlot {
	n := uint64(len(p.async))
	if n == 1 {
		return p.async[0]
	}
	if key == "" {
		return p.async[p.next.Add(1)%n]
	}
	// FNV-1a: cheap, and the same key always lands on the same channel.
	h := uint64(14695981039346656037)
	for i := 0; i < len(key); i++ {
		h ^= uint64(key[i])
		h *= 1099511628211
	}
	return p.async[h%n]
}

// PublishAsync publishes m to topic's exchange and returns once it is
// written to a channel; done gets its outcome (see broker.AsyncPublisher):
// nil once the broker confirmed it, an error wrapping
// broker.ErrNotConfirmed for a nack, broker.ErrUnroutable for a mandatory
// message returned (WithMandatory), broker.ErrInvalidMessage for a message
// or topic the adapter cannot carry (at once, nothing sent) and
// broker.ErrClosed after Close.
//
// The publisher keeps at most WithMaxInFlight × WithChannels messages
// unconfirmed; PublishAsync blocks while that many are, until ctx ends (then done gets an error wrapping broker.ErrNotConfirmed
// and ctx's error). Messages of one Key go to one channel, so successive
// calls with a Key from one goroutine reach the queue in order.
//
// When a channel or the connection is lost, the messages it had not
// confirmed are republished on a new channel, in their order and before
// any later message of their channel, as Publish does: a message the
// broker had routed before the loss is delivered twice (at-least-once),
// and such a duplicate arrives after the messages sent behind it, but
// the first copies of a key's messages stay in call order. While the
// broker is unreachable, they wait for the next connection until their ctx ends
// or Close gives up on them (after the drain timeout); then done gets an
// error wrapping broker.ErrNotConfirmed. ctx also bounds the wait for the
// confirm, as for Publish.
func (p *Publisher) PublishAsync(ctx context.Context, topic string, m broker.Message, done func(broker.Message, error)) {
	if done == nil {
		done = func(broker.Message, error) {}
	}
	a := &asyncMsg{topic: topic, done: done}
	a.m[0] = m
	now := time.Now()
	broker.Prepare(a.m[:], now)
	ctx, ms, call := p.rec.StartAt(ctx, now, topic, a.m[:])
	a.m[0], a.ctx, a.call = ms[0], ctx, call
	if err := p.prepareAsync(a); err != nil {
		p.finish(a, err)
		return
	}
	if err := ctx.Err(); err != nil {
		p.finish(a, p.asyncError(a, err))
		return
	}
	if err := p.enqueue(ctx, a); err != nil {
		p.finish(a, err) // outside the lock Close takes: done may call Close
	}
}

// enqueue sends a on its key's channel and hands it to that channel's
// confirm loop, waiting for room (the in-flight bound) until ctx ends.
func (p *Publisher) enqueue(ctx context.Context, a *asyncMsg) error {
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.closed {
		return broker.ErrClosed
	}
	sl := p.asyncSlotFor(a.m[0].Key)
	sl.start.Do(func() {
		p.asyncWG.Add(1)
		go p.confirmLoop(sl)
	})
	if err := acquire(ctx, sl.sem, p.closing); err != nil {
		return p.asyncError(a, err)
	}
	if err := acquire(ctx, sl.lock, p.closing); err != nil {
		<-sl.sem
		return p.asyncError(a, err)
	}
	err := p.sendAsync(ctx, sl, a)
	<-sl.lock
	if err != nil {
		<-sl.sem
	}
	return err
}

// prepareAsync checks a's topic and message and builds its publishing.
func (p *Publisher) prepareAsync(a *asyncMsg) error {
	if err := broker.ValidateTopic(a.topic); err != nil {
		return err
	}
	if err := validateTopic(&p.cfg, a.topic, broker.ErrInvalidMessage); err != nil {
		return err
	}
	var err error
	if a.pub, err = toPublishing(&a.m[0], !p.cfg.transient, p.cfg.maxMessageSize, nil); err != nil {
		return fmt.Errorf("rabbitmq: publish to %q: %w", a.topic, err)
	}
	a.key = p.r.key(a.topic, a.m[0].Key)
	if err := shortString("routing key", a.key); err != nil {
		return fmt.Errorf("rabbitmq: publish to %q: %w", a.topic, err)
	}
	a.exchange = p.r.exchange(a.topic)
	return nil
}

// acquire sends on a semaphore channel, giving up when ctx ends or abort
// is closed.
func acquire(ctx context.Context, sem chan struct{}, abort <-chan struct{}) error {
	select {
	case sem <- struct{}{}:
		return nil
	default:
	}
	select {
	case sem <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-abort:
		return broker.ErrClosed
	}
}

// asyncError is the error a message fails with when err stopped it before
// its confirm: broker.ErrClosed alone when Close stopped it before it was
// ever sent, otherwise broker.ErrNotConfirmed wrapping err (as Publish does).
func (p *Publisher) asyncError(a *asyncMsg, err error) error {
	if errors.Is(err, broker.ErrClosed) && !a.sent {
		return fmt.Errorf("rabbitmq: publish to %q: message %s not sent: %w", a.topic, a.m[0].ID, err)
	}
	return fmt.Errorf("%w: rabbitmq: publish to %q: message %s: %w", broker.ErrNotConfirmed, a.topic, a.m[0].ID, err)
}

// finish ends a's trace and hands its outcome to done.
func (p *Publisher) finish(a *asyncMsg, err error) {
	p.rec.End(a.ctx, a.call, err)
	a.done(a.m[0], err)
}

// sendAsync sends a on sl's channel and appends it to sl's queue; sl.lock
// is held. Messages a lost channel had not confirmed are republished first.
func (p *Publisher) sendAsync(ctx context.Context, sl *asyncSlot, a *asyncMsg) error {
	soft := 0
	var lastErr error
	for {
		if err := p.c.waitUnblocked(ctx, p.closing); err != nil {
			return p.asyncError(a, err)
		}
		pc, err := p.recover(ctx, sl)
		if err != nil {
			return p.asyncError(a, err)
		}
		if err := p.declare(ctx, pc, a.exchange); err != nil {
			if refused := declareRefused(a.topic, a.exchange, err); refused != nil {
				return refused
			}
			if !pc.ch.IsClosed() || ctx.Err() != nil {
				return p.asyncError(a, err)
			}
			if soft++; soft > maxSoftRetries {
				return p.asyncError(a, fmt.Errorf("%w (after %v)", err, lastErr))
			}
			lastErr = err
			if err := sleep(ctx, p.closing, softRetry.Wait(soft)); err != nil {
				return p.asyncError(a, err)
			}
			continue
		}
		dc, err := pc.ch.PublishWithDeferredConfirmWithContext(ctx, a.exchange, a.key, p.cfg.mandatory, false, a.pub)
		if err != nil {
			if ctx.Err() == nil && (pc.ac.IsClosed() || amqpnodes.ConnectionLost(err)) {
				// the channel went away: send again on a new one.
				_ = pc.ch.Close()
				if err := sleep(ctx, p.closing, 5*time.Millisecond); err != nil {
					return p.asyncError(a, err)
				}
				continue
			}
			return p.asyncError(a, err)
		}
		p.obs.sent.Add(1)
		a.sent = true
		sl.qmu.Lock()
		a.pc, a.dc = pc, dc
		sl.q = append(sl.q, a)
		sl.enq++
		sl.qmu.Unlock()
		select {
		case sl.wake <- struct{}{}:
		default:
		}
		return nil
	}
}

// recover returns an open channel for sl, and when it is not the channel
// sl last sent on (that one was lost), republishes there, in order, the
// queued messages the lost channel had not confirmed; sl.lock is held.
func (p *Publisher) recover(ctx context.Context, sl *asyncSlot) (*pubChannel, error) {
	for {
		pc, err := p.slotChannel(ctx, sl.s)
		if err != nil {
			return nil, err
		}
		if pc == sl.cur {
			return pc, nil
		}
		if sl.cur == nil {
			sl.cur = pc
			return pc, nil
		}
		err = p.republish(ctx, sl, pc)
		if err == nil {
			sl.cur = pc
			return pc, nil
		}
		if ctx.Err() != nil || !(pc.ch.IsClosed() || amqpnodes.ConnectionLost(err)) {
			return nil, err
		}
		_ = pc.ch.Close()
		if err := sleep(ctx, p.closing, 5*time.Millisecond); err != nil {
			return nil, err
		}
	}
}

// republish sends again on pc the messages of sl's queue sent on an
// older (lost) channel and not confirmed there.
func (p *Publisher) republish(ctx context.Context, sl *asyncSlot, pc *pubChannel) error {
	sl.qmu.Lock()
	var lost []*asyncMsg
	for _, a := range sl.q {
		if a.pc != pc && a.err == nil {
			lost = append(lost, a)
		}
	}
	sl.qmu.Unlock()
	for _, a := range lost {
		sl.qmu.Lock()
		dc := a.dc
		sl.qmu.Unlock()
		// amqp091 resolves a closed channel's confirms as nacks just
		// after marking it closed.
		select {
		case <-dc.Done():
		case <-ctx.Done():
			return ctx.Err()
		case <-p.abandon:
			return broker.ErrClosed
		}
		if dc.Acked() {
			continue // confirmed before the loss: confirmLoop reports it
		}
		if err := a.ctx.Err(); err != nil {
			sl.qmu.Lock()
			a.err = p.asyncError(a, err)
			sl.qmu.Unlock()
			continue
		}
		if err := p.declare(ctx, pc, a.exchange); err != nil {
			return err
		}
		ndc, err := pc.ch.PublishWithDeferredConfirmWithContext(ctx, a.exchange, a.key, p.cfg.mandatory, false, a.pub)
		if err != nil {
			return err
		}
		p.obs.sent.Add(1)
		p.obs.republished.Add(1)
		sl.qmu.Lock()
		a.pc, a.dc = pc, ndc
		sl.qmu.Unlock()
	}
	return nil
}

// confirmLoop delivers the outcomes of sl's messages in send order: it
// waits for each one's confirm, republishes a lost channel's messages, and
// returns once Close stopped PublishAsync and the queue is empty, or once
// Close gave up waiting (then it fails what is left).
func (p *Publisher) confirmLoop(sl *asyncSlot) {
	defer p.asyncWG.Done()
	for {
		sl.qmu.Lock()
		for len(sl.q) == 0 {
			sl.qmu.Unlock()
			select {
			case <-sl.wake:
			case <-p.asyncStop:
				sl.qmu.Lock()
				if len(sl.q) == 0 {
					sl.qmu.Unlock()
					return
				}
				continue
			}
			sl.qmu.Lock()
		}
		a := sl.q[0]
		dc, pc, err := a.dc, a.pc, a.err
		sl.qmu.Unlock()
		if err == nil {
			select {
			case <-dc.Done():
				err = p.confirmed(sl, a, dc, pc)
			case <-a.ctx.Done():
				err = p.asyncError(a, a.ctx.Err())
			case <-p.abandon:
				p.failAll(sl)
				return
			}
		}
		if errors.Is(err, errRepublished) {
			continue
		}
		p.deliver(sl, a, err)
		p.deliverAcked(sl)
	}
}

// deliverAcked delivers, in one pass, the run of messages at the head of
// sl's queue whose confirm already came (RabbitMQ acks in batches: one
// wake-up of the loop then serves many messages).
func (p *Publisher) deliverAcked(sl *asyncSlot) {
	var batch [64]*asyncMsg
	sl.qmu.Lock()
	k := 0
	for k < len(batch) && k < len(sl.q) {
		a := sl.q[k]
		if a.err != nil || !isDone(a.dc) || !a.dc.Acked() {
			break
		}
		batch[k] = a
		sl.q[k] = nil
		k++
	}
	sl.q = sl.q[k:]
	sl.qmu.Unlock()
	if k == 0 {
		return
	}
	for _, a := range batch[:k] {
		<-sl.sem
		p.finish(a, p.confirmed(sl, a, a.dc, a.pc)) // acked: nil, or ErrUnroutable
	}
	p.delivered(sl, uint64(k))
}

func isDone(dc *amqp.DeferredConfirmation) bool {
	select {
	case <-dc.Done():
		return true
	default:
		return false
	}
}

// errRepublished says a message was sent again: wait for its new confirm.
var errRepublished = errors.New("republished")

// confirmed returns the outcome of a whose confirm dc (sent on pc) is in,
// or errRepublished once a lost channel's messages were republished.
func (p *Publisher) confirmed(sl *asyncSlot, a *asyncMsg, dc *amqp.DeferredConfirmation, pc *pubChannel) error {
	if dc.Acked() {
		if p.cfg.mandatory {
			if r, ok := pc.takeReturn(a.pub.MessageId); ok {
				p.obs.returned.Add(1)
				return fmt.Errorf("%w: rabbitmq: publish to %q: message %s with routing key %q reached no queue (%d %s)", broker.ErrUnroutable, a.topic, a.pub.MessageId, a.key, r.ReplyCode, r.ReplyText)
			}
		}
		return nil
	}
	if !pc.ch.IsClosed() {
		p.obs.nacked.Add(1)
		return fmt.Errorf("%w: rabbitmq: publish to %q: message %s: the broker nacked it", broker.ErrNotConfirmed, a.topic, a.m[0].ID)
	}
	// The channel was lost: republish its unconfirmed messages, unless a
	// PublishAsync call (which holds the lock) does it first.
	if err := acquire(a.ctx, sl.lock, p.abandon); err != nil {
		return p.asyncError(a, err)
	}
	defer func() { <-sl.lock }()
	sl.qmu.Lock()
	moved, failed := a.dc != dc, a.err
	sl.qmu.Unlock()
	if failed != nil {
		return failed
	}
	if moved {
		return errRepublished
	}
	if err := p.lostCause(a, pc); err != nil {
		return err
	}
	if _, err := p.recover(a.ctx, sl); err != nil {
		return p.asyncError(a, err)
	}
	sl.qmu.Lock()
	moved, failed = a.dc != dc, a.err
	sl.qmu.Unlock()
	if failed != nil {
		return failed
	}
	if !moved {
		// not expected: recover moves every lost message; never wait forever.
		return p.asyncError(a, errors.New("its channel was lost and it could not be republished"))
	}
	return errRepublished
}

// lostCause looks at why a's channel pc closed, as Publish does: an error
// that republishing cannot cure fails a, a channel error counts towards
// maxSoftRetries (so that a message that closes its channel each time is
// not republished forever) and waits a backoff, a lost connection is
// simply republished.
func (p *Publisher) lostCause(a *asyncMsg, pc *pubChannel) error {
	cause := pc.cause(a.ctx)
	switch {
	case cause == nil:
		return nil
	case cause.Server && cause.Code == amqp.AccessRefused && reasonNames(cause.Reason, a.exchange):
		return fmt.Errorf("%w: rabbitmq: publish to %q: the server refused publishing to exchange %q: %w", broker.ErrNotConfirmed, a.topic, a.exchange, cause)
	case cause.Code == amqp.PreconditionFailed && tooLarge(cause.Reason, []amqp.Publishing{a.pub}, []int{0}):
		return fmt.Errorf("%w: rabbitmq: publish to %q: the server refused the message size: %w", broker.ErrInvalidMessage, a.topic, cause)
	case !cause.Recover && !(cause.Server && hardRefusal(cause.Code)):
		return nil // the connection dropped
	case cause.Code == amqp.NotFound:
		p.forget(a.exchange) // the exchange was deleted: declare it again
	}
	a.soft++
	if a.soft > maxSoftRetries {
		return fmt.Errorf("%w: rabbitmq: publish to %q: message %s not confirmed after %d channel errors: %w", broker.ErrNotConfirmed, a.topic, a.m[0].ID, maxSoftRetries, cause)
	}
	if err := sleep(a.ctx, p.closing, softRetry.Wait(a.soft)); err != nil {
		return p.asyncError(a, err)
	}
	return nil
}

// deliver pops a, the head of sl's queue, and hands it its outcome.
func (p *Publisher) deliver(sl *asyncSlot, a *asyncMsg, err error) {
	sl.qmu.Lock()
	sl.q[0] = nil
	sl.q = sl.q[1:]
	sl.qmu.Unlock()
	<-sl.sem
	p.finish(a, err)
	p.delivered(sl, 1)
}

// delivered counts n outcomes handed to done and wakes the Flush calls
// they complete: only after done ran, so that Flush returns after it.
func (p *Publisher) delivered(sl *asyncSlot, n uint64) {
	sl.qmu.Lock()
	sl.deq += n
	if len(sl.waiters) > 0 {
		sl.waiters = wakeFlushes(sl.waiters, sl.deq)
	}
	sl.qmu.Unlock()
}

// wakeFlushes closes the waiters whose messages are all delivered and
// returns the others.
func wakeFlushes(ws []flushWaiter, deq uint64) []flushWaiter {
	keep := ws[:0]
	for _, w := range ws {
		if w.upTo <= deq {
			close(w.done)
		} else {
			keep = append(keep, w)
		}
	}
	return keep
}

// failAll fails every message left in sl's queue: Close gave up on them.
func (p *Publisher) failAll(sl *asyncSlot) {
	for {
		sl.qmu.Lock()
		if len(sl.q) == 0 {
			sl.qmu.Unlock()
			return
		}
		a := sl.q[0]
		sl.qmu.Unlock()
		p.deliver(sl, a, fmt.Errorf("%w: rabbitmq: publish to %q: message %s not confirmed: publisher closed before the broker confirmed (after %v): %w", broker.ErrNotConfirmed, a.topic, a.m[0].ID, p.flush, broker.ErrClosed))
	}
}

// Flush waits until every PublishAsync call that returned before it has
// had its outcome, or until ctx ends (then it returns ctx's error).
func (p *Publisher) Flush(ctx context.Context) error {
	for _, sl := range p.async {
		sl.qmu.Lock()
		if sl.deq >= sl.enq {
			sl.qmu.Unlock()
			continue
		}
		w := flushWaiter{upTo: sl.enq, done: make(chan struct{})}
		sl.waiters = append(sl.waiters, w)
		sl.qmu.Unlock()
		select {
		case <-w.done:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}
