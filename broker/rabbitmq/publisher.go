package rabbitmq

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/go-integration/patterns/broker"
	"github.com/go-integration/patterns/broker/internal/tracing"
	"github.com/go-integration/patterns/internal/amqpnodes"
	"github.com/go-integration/patterns/internal/backoff"
)

// Publisher publishes to durable topic exchanges with publisher confirms. It
// is safe for concurrent use; concurrent Publish calls pipeline their confirms
// over a small pool of channels. It implements broker.Publisher.
type Publisher struct {
	cfg   config
	obs   *observer
	rec   *tracing.Recorder
	c     *connection
	r     route
	slots []*pubSlot
	next  atomic.Uint64

	declMu   sync.RWMutex
	declared map[string]uint64 // exchange -> connection generation it was declared on

	mu        sync.RWMutex // Publish holds it shared, Close exclusively
	closed    bool
	closing   chan struct{}
	abandon   chan struct{} // closed flushTimeout after Close: stop waiting for confirms
	flush     time.Duration // the drain timeout
	closeOnce sync.Once

	async     []*asyncSlot   // PublishAsync's side of each slot
	asyncStop chan struct{}  // closed once Close stopped PublishAsync
	asyncWG   sync.WaitGroup // the slots' confirm loops
}

var _ broker.Publisher = (*Publisher)(nil)

type pubSlot struct {
	lock chan struct{} // a mutex that honours contexts, held to replace pc
	pc   atomic.Pointer[pubChannel]
}

// pubChannel is one confirm-mode channel of the pool.
type pubChannel struct {
	ch   *amqp.Channel
	ac   *amqp.Connection
	gen  uint64
	dead chan struct{} // closed once ch is closed and err is set
	err  atomic.Pointer[amqp.Error]

	retMu    sync.Mutex
	returns  chan amqp.Return
	returned map[string]returned
}

type returned struct {
	r  amqp.Return
	at time.Time
}

// NewPublisher connects to the broker at url (amqp:// or amqps://) and returns
// a Publisher. It fails when the first connection cannot be made (invalid URL,
// unreachable server, wrong credentials); later outages are recovered from.
func NewPublisher(ctx context.Context, url string, opts ...PublisherOption) (*Publisher, error) {
	cfg, err := newPublisherConfig(opts)
	if err != nil {
		return nil, err
	}
	p := &Publisher{cfg: cfg, obs: newObserver(cfg.tracers), rec: tracing.New("rabbitmq", cfg.tracers), r: route{cfg.exchange},
		declared: map[string]uint64{}, closing: make(chan struct{}), abandon: make(chan struct{}), flush: cfg.drainTimeout,
		asyncStop: make(chan struct{})}
	p.c, err = dial(ctx, url, &p.cfg, p.obs)
	if err != nil {
		return nil, err
	}
	p.slots = make([]*pubSlot, cfg.channels)
	for i := range p.slots {
		p.slots[i] = &pubSlot{lock: make(chan struct{}, 1)}
	}
	p.async = newAsyncSlots(p.slots, cfg.maxInFlight)
	return p, nil
}

// Publish sends msgs to topic's exchange (declared on first use) and returns
// nil once the broker confirmed every one. Messages whose confirm is lost to a
// connection drop are republished on the new connection; while the broker is
// unreachable or blocks publishing (resource alarm), Publish waits until ctx
// ends and then fails with broker.ErrNotConfirmed. A broker nack fails with
// broker.ErrNotConfirmed, an unroutable message with broker.ErrUnroutable
// (WithMandatory), a message the adapter cannot carry with
// broker.ErrInvalidMessage. A topic whose exchange name AMQP cannot carry
// (over 255 bytes, not UTF-8, or reserved: "amq.") fails at once with
// broker.ErrInvalidMessage, before anything is sent; an exchange the server
// refuses to declare (no permission, another type) fails at once with
// broker.ErrNotConfirmed. Messages of one call are sent in order, but a
// message republished after a lost confirm may land behind later ones.
func (p *Publisher) Publish(ctx context.Context, topic string, msgs ...broker.Message) error {
	now := time.Now()
	broker.Prepare(msgs, now)
	ctx, msgs, call := p.rec.StartAt(ctx, now, topic, msgs)
	err := p.publish(ctx, topic, msgs)
	p.rec.End(ctx, call, err)
	return err
}

// publish is Publish for prepared messages, without tracing.
func (p *Publisher) publish(ctx context.Context, topic string, msgs []broker.Message) error {
	if err := broker.ValidateTopic(topic); err != nil {
		return err
	}
	if err := validateTopic(&p.cfg, topic, broker.ErrInvalidMessage); err != nil {
		return err
	}
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.closed {
		return broker.ErrClosed
	}
	if len(msgs) == 0 {
		return nil
	}
	pubs := make([]amqp.Publishing, len(msgs))
	keys := make([]string, len(msgs))
	for i := range msgs {
		var err error
		if pubs[i], err = toPublishing(&msgs[i], !p.cfg.transient, p.cfg.maxMessageSize, nil); err != nil {
			return fmt.Errorf("rabbitmq: publish to %q: %w", topic, err)
		}
		keys[i] = p.r.key(topic, msgs[i].Key)
		if err := shortString("routing key", keys[i]); err != nil {
			return fmt.Errorf("rabbitmq: publish to %q: %w", topic, err)
		}
	}
	return p.send(ctx, topic, p.r.exchange(topic), keys, pubs)
}

// maxSoftRetries bounds republishing after channel errors (as opposed to lost
// connections, which are retried until the context ends).
const maxSoftRetries = 5

func (p *Publisher) send(ctx context.Context, topic, exchange string, keys []string, pubs []amqp.Publishing) error {
	pending := make([]int, len(pubs))
	for i := range pending {
		pending[i] = i
	}
	var lastErr error
	soft := 0
	notConfirmed := func(err error) error {
		if errors.Is(err, broker.ErrClosed) {
			return fmt.Errorf("rabbitmq: publish to %q: %d of %d message(s) not confirmed: %w", topic, len(pending), len(pubs), err)
		}
		if lastErr != nil {
			return fmt.Errorf("%w: rabbitmq: publish to %q: %d of %d message(s) not confirmed (last problem: %v): %w", broker.ErrNotConfirmed, topic, len(pending), len(pubs), lastErr, err)
		}
		return fmt.Errorf("%w: rabbitmq: publish to %q: %d of %d message(s) not confirmed: %w", broker.ErrNotConfirmed, topic, len(pending), len(pubs), err)
	}
	for round := 0; ; round++ {
		if round > 0 {
			p.obs.republished.Add(uint64(len(pending)))
		}
		if err := p.c.waitUnblocked(ctx, p.closing); err != nil {
			return notConfirmed(err)
		}
		pc, err := p.channel(ctx)
		if err != nil {
			return notConfirmed(err)
		}
		if err := p.declare(ctx, pc, exchange); err != nil {
			if refused := declareRefused(topic, exchange, err); refused != nil {
				// sending the same declare again would be refused again
				// (and a connection-level refusal would reconnect each time).
				return refused
			}
			if !pc.ch.IsClosed() {
				return notConfirmed(err)
			}
			cause := pc.cause(ctx)
			if cause != nil && cause.Recover {
				soft++
				if soft > maxSoftRetries {
					return notConfirmed(err)
				}
				if err := sleep(ctx, p.closing, softRetry.Wait(soft)); err != nil {
					return notConfirmed(err)
				}
			}
			lastErr = err
			continue
		}
		dcs := make([]*amqp.DeferredConfirmation, 0, len(pending))
		var sendErr error
		for _, i := range pending {
			dc, err := pc.ch.PublishWithDeferredConfirmWithContext(ctx, exchange, keys[i], p.cfg.mandatory, false, pubs[i])
			if err != nil {
				sendErr = err
				break
			}
			dcs = append(dcs, dc)
			p.obs.sent.Add(1)
		}
		var retry []int
		for j, dc := range dcs {
			i := pending[j]
			var acked bool
			select {
			case <-dc.Done():
				acked = dc.Acked()
			case <-ctx.Done():
				pending = pending[j:]
				return notConfirmed(ctx.Err())
			case <-p.abandon:
				pending = pending[j:]
				// not notConfirmed: these messages were sent, so the caller
				// must see ErrNotConfirmed (as documented), not only ErrClosed.
				return fmt.Errorf("%w: rabbitmq: publish to %q: %d of %d message(s) not confirmed: publisher closed before the broker confirmed (after %v): %w", broker.ErrNotConfirmed, topic, len(pending), len(pubs), p.flush, broker.ErrClosed)
			}
			if !acked {
				retry = append(retry, i)
				continue
			}
			if p.cfg.mandatory {
				if r, ok := pc.takeReturn(pubs[i].MessageId); ok {
					p.obs.returned.Add(1)
					return fmt.Errorf("%w: rabbitmq: publish to %q: message %s with routing key %q reached no queue (%d %s)", broker.ErrUnroutable, topic, pubs[i].MessageId, keys[i], r.ReplyCode, r.ReplyText)
				}
			}
		}
		retry = append(retry, pending[len(dcs):]...)
		if len(retry) == 0 {
			return nil
		}
		pending = retry
		if ctx.Err() != nil {
			return notConfirmed(ctx.Err())
		}
		if sendErr != nil && (pc.ac.IsClosed() || amqpnodes.ConnectionLost(sendErr)) {
			// the connection or channel went away while we were sending:
			// republish on a fresh channel (the dead one is dropped from the pool).
			_ = pc.ch.Close()
			lastErr = sendErr
			if err := sleep(ctx, p.closing, 5*time.Millisecond); err != nil {
				return notConfirmed(err)
			}
			continue
		}
		if !pc.ch.IsClosed() {
			if sendErr != nil {
				return notConfirmed(sendErr)
			}
			p.obs.nacked.Add(uint64(len(pending)))
			return notConfirmed(errors.New("the broker nacked them"))
		}
		cause := pc.cause(ctx)
		switch {
		case cause != nil && cause.Server && cause.Code == amqp.AccessRefused && reasonNames(cause.Reason, exchange):
			// no write permission on the exchange: republishing cannot help.
			return fmt.Errorf("%w: rabbitmq: publish to %q: the server refused publishing to exchange %q: %w", broker.ErrNotConfirmed, topic, exchange, cause)
		case cause != nil && cause.Server && hardRefusal(cause.Code):
			// the server closed the connection over something it was sent
			// (a malformed frame): count it like a channel error, so that
			// a message that causes it is not republished forever.
			soft++
			lastErr = cause
		case cause == nil || !cause.Recover:
			// the connection dropped: republish on the next one.
			lastErr = errors.New("connection lost")
			if cause != nil {
				lastErr = cause
			}
		case cause.Code == amqp.NotFound:
			// the exchange was deleted behind our back: declare it again.
			p.forget(exchange)
			soft++
			lastErr = cause
		case cause.Code == amqp.PreconditionFailed && tooLarge(cause.Reason, pubs, pending):
			return fmt.Errorf("%w: rabbitmq: publish to %q: the server refused the message size: %w", broker.ErrInvalidMessage, topic, cause)
		default:
			soft++
			lastErr = cause
		}
		if soft > maxSoftRetries {
			return notConfirmed(lastErr)
		}
		if soft > 0 {
			// channel errors can be transient (a vhost still starting after a
			// broker restart): back off a little before trying again.
			if err := sleep(ctx, p.closing, softRetry.Wait(soft)); err != nil {
				return notConfirmed(err)
			}
		}
	}
}

// softRetry spaces soft retries (channel errors): 50 ms doubling up to
// 800 ms for the fifth, with full jitter, so that publishers sharing a
// failing channel do not retry in step.
var softRetry = backoff.Policy{Min: 50 * time.Millisecond, Max: 800 * time.Millisecond}

// hardRefusal reports the connection-level codes a server closes the
// connection with when it refuses what it was sent, as opposed to a
// shutdown (CONNECTION_FORCED) or its own failure (INTERNAL_ERROR): sending
// the same again gets the same answer.
func hardRefusal(code int) bool {
	switch code {
	case amqp.InvalidPath, amqp.FrameError, amqp.SyntaxError, amqp.CommandInvalid, amqp.NotAllowed:
		return true
	}
	return false
}

// reasonNames reports whether a server's close reason names exchange, as
// RabbitMQ's do ("access to exchange 'x' in vhost 'v' refused"), so that a
// channel closed over another publish sharing it is not taken for ours.
func reasonNames(reason, exchange string) bool {
	return strings.Contains(reason, "'"+exchange+"'")
}

// declareRefused returns the error that fails a Publish at once when the
// server refused to declare exchange (err is the declare's error): a
// malformed or reserved name wraps broker.ErrInvalidMessage, another
// refusal (no configure permission, an exchange of another type) wraps
// broker.ErrNotConfirmed. It returns nil for errors retrying may cure.
func declareRefused(topic, exchange string, err error) error {
	var ae *amqp.Error
	if !errors.As(err, &ae) || !ae.Server {
		return nil
	}
	var sentinel error
	var why string
	switch {
	case ae.Code == amqp.FrameError || ae.Code == amqp.SyntaxError || ae.Code == amqp.InvalidPath:
		sentinel, why = broker.ErrInvalidMessage, "the server could not read the name"
	case ae.Code == amqp.AccessRefused && reasonNames(ae.Reason, exchange) && strings.Contains(ae.Reason, "reserved"):
		sentinel, why = broker.ErrInvalidMessage, "the name is reserved"
	case ae.Code == amqp.AccessRefused && reasonNames(ae.Reason, exchange):
		sentinel, why = broker.ErrNotConfirmed, "access refused: does the user have configure permission on it?"
	case ae.Code == amqp.PreconditionFailed && reasonNames(ae.Reason, exchange):
		sentinel, why = broker.ErrNotConfirmed, "it exists with another type or arguments"
	case ae.Code == amqp.CommandInvalid || ae.Code == amqp.NotAllowed:
		sentinel, why = broker.ErrNotConfirmed, "the server refused the command"
	default:
		return nil
	}
	return fmt.Errorf("%w: rabbitmq: publish to %q: the server refused to declare exchange %q (%s): %w", sentinel, topic, exchange, why, err)
}

// tooLarge reports whether reason is the server refusing a message size
// ("message size N is larger than configured max size M") and one of the
// pending messages is above M: other publishes that shared the channel are
// not at fault and are republished.
func tooLarge(reason string, pubs []amqp.Publishing, pending []int) bool {
	i := strings.LastIndex(reason, "max size ")
	if i < 0 {
		return false
	}
	limit, err := strconv.Atoi(strings.TrimSpace(reason[i+len("max size "):]))
	if err != nil {
		return false
	}
	for _, j := range pending {
		if len(pubs[j].Body) > limit {
			return true
		}
	}
	return false
}

func sleep(ctx context.Context, abort <-chan struct{}, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-abort:
		return broker.ErrClosed
	}
}

// channel returns an open confirm-mode channel from the pool, opening one
// (and waiting for a connection) when needed.
func (p *Publisher) channel(ctx context.Context) (*pubChannel, error) {
	return p.slotChannel(ctx, p.slots[p.next.Add(1)%uint64(len(p.slots))])
}

// slotChannel returns s's channel, opening a new one when it is closed.
func (p *Publisher) slotChannel(ctx context.Context, s *pubSlot) (*pubChannel, error) {
	if pc := s.pc.Load(); pc != nil && !pc.ch.IsClosed() {
		return pc, nil
	}
	select {
	case s.lock <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-p.closing:
		return nil, broker.ErrClosed
	}
	defer func() { <-s.lock }()
	if pc := s.pc.Load(); pc != nil && !pc.ch.IsClosed() {
		return pc, nil
	}
	for {
		ac, gen, err := p.c.get(ctx, p.closing)
		if err != nil {
			return nil, err
		}
		pc, err := openWithContext(ctx, ac, gen, p.cfg.mandatory)
		if err == nil {
			s.pc.Store(pc)
			return pc, nil
		}
		if ctx.Err() != nil {
			return nil, err
		}
		if !ac.IsClosed() && !amqpnodes.ConnectionLost(err) {
			return nil, fmt.Errorf("rabbitmq: open channel: %w", err)
		}
		// The connection is going down (amqp091 closes it just after the
		// failed write): wait for the next one.
		if err := sleep(ctx, p.closing, 5*time.Millisecond); err != nil {
			return nil, err
		}
	}
}

// openWithContext opens a channel but stops waiting when ctx ends: channel
// open is an RPC that a blocked connection (resource alarm) never answers.
func openWithContext(ctx context.Context, ac *amqp.Connection, gen uint64, mandatory bool) (*pubChannel, error) {
	type result struct {
		pc  *pubChannel
		err error
	}
	rc := make(chan result, 1)
	go func() {
		pc, err := openPubChannel(ac, gen, mandatory)
		rc <- result{pc, err}
	}()
	select {
	case r := <-rc:
		return r.pc, r.err
	case <-ctx.Done():
		go func() {
			if r := <-rc; r.pc != nil {
				_ = r.pc.ch.Close()
			}
		}()
		return nil, fmt.Errorf("rabbitmq: open channel: %w", ctx.Err())
	}
}

func openPubChannel(ac *amqp.Connection, gen uint64, mandatory bool) (*pubChannel, error) {
	ch, err := ac.Channel()
	if err != nil {
		return nil, err
	}
	if err := ch.Confirm(false); err != nil {
		_ = ch.Close()
		return nil, err
	}
	pc := &pubChannel{ch: ch, ac: ac, gen: gen, dead: make(chan struct{})}
	closes := ch.NotifyClose(make(chan *amqp.Error, 1))
	go func() {
		for e := range closes {
			if e != nil {
				pc.err.Store(e)
			}
		}
		close(pc.dead)
	}()
	if mandatory {
		pc.returned = map[string]returned{}
		pc.returns = ch.NotifyReturn(make(chan amqp.Return, 1024))
		// Returns nobody waits for (their Publish gave up) must not fill the
		// listener: amqp091 would stall its reader. Drain them under retMu,
		// like takeReturn, so a waiter never misses one in transit.
		go func() {
			t := time.NewTicker(50 * time.Millisecond)
			defer t.Stop()
			for {
				select {
				case <-pc.dead:
					return
				case <-t.C:
					pc.retMu.Lock()
					pc.drainReturns()
					pc.retMu.Unlock()
				}
			}
		}()
	}
	return pc, nil
}

// drainReturns moves returns from the listener into the map; retMu must be held.
func (pc *pubChannel) drainReturns() {
	for {
		select {
		case r, ok := <-pc.returns:
			if !ok {
				return
			}
			now := time.Now()
			if len(pc.returned) > 10000 {
				// returns nobody claimed: their Publish gave up on its context.
				for id, e := range pc.returned {
					if now.Sub(e.at) > time.Minute {
						delete(pc.returned, id)
					}
				}
			}
			pc.returned[r.MessageId] = returned{r, now}
		default:
			return
		}
	}
}

// cause waits briefly for the close reason of a closed channel.
func (pc *pubChannel) cause(ctx context.Context) *amqp.Error {
	t := time.NewTimer(time.Second)
	defer t.Stop()
	select {
	case <-pc.dead:
	case <-ctx.Done():
	case <-t.C:
	}
	return pc.err.Load()
}

// takeReturn reports whether the message with id came back as unroutable.
// The broker sends basic.return before the basic.ack of the same message and
// amqp091 hands returns over before resolving the confirm, so draining the
// listener after the ack sees it.
func (pc *pubChannel) takeReturn(id string) (amqp.Return, bool) {
	pc.retMu.Lock()
	defer pc.retMu.Unlock()
	pc.drainReturns()
	e, ok := pc.returned[id]
	if ok {
		delete(pc.returned, id)
	}
	return e.r, ok
}

// declare declares exchange once per connection.
func (p *Publisher) declare(ctx context.Context, pc *pubChannel, exchange string) error {
	p.declMu.RLock()
	g, ok := p.declared[exchange]
	p.declMu.RUnlock()
	if ok && g == pc.gen {
		return nil
	}
	errc := make(chan error, 1)
	go func() { errc <- pc.ch.ExchangeDeclare(exchange, amqp.ExchangeTopic, true, false, false, false, nil) }()
	var err error
	select {
	case err = <-errc:
	case <-ctx.Done():
		// a blocked connection does not answer; the channel stays usable once it does.
		err = ctx.Err()
	}
	if err != nil {
		return fmt.Errorf("rabbitmq: declare exchange %q: %w", exchange, err)
	}
	p.declMu.Lock()
	p.declared[exchange] = pc.gen
	p.declMu.Unlock()
	return nil
}

func (p *Publisher) forget(exchange string) {
	p.declMu.Lock()
	delete(p.declared, exchange)
	p.declMu.Unlock()
}

// Ping checks that the broker answers on the publisher's connection.
func (p *Publisher) Ping(ctx context.Context) error { return p.c.ping(ctx, p.closing) }

// Stats returns the publisher's counters.
func (p *Publisher) Stats() PublisherStats {
	o := p.obs
	return PublisherStats{
		PublisherStats: p.rec.Stats(),
		Sent:           o.sent.Load(), Republished: o.republished.Load(), Nacked: o.nacked.Load(), Returned: o.returned.Load(),
		Connects: o.connects.Load(), Disconnects: o.disconnects.Load(), Reconnects: o.reconnects.Load(),
	}
}

// Conn returns the underlying connection, or nil during an outage. It is
// replaced after a reconnect; do not close it.
func (p *Publisher) Conn() *amqp.Connection { return p.c.current() }

// Close stops publishing: calls waiting for a connection return
// broker.ErrClosed, calls waiting for confirms finish (for up to the drain
// timeout, WithDrainTimeout, since a blocked connection may never send them;
// then they fail with broker.ErrNotConfirmed), then the connection closes.
// PublishAsync messages are flushed within the same drain timeout; those
// still unconfirmed then fail with broker.ErrNotConfirmed (and a lost
// channel's messages are no longer republished once Close began), and
// PublishAsync calls after Close fail with broker.ErrClosed. Close is
// idempotent.
func (p *Publisher) Close() error {
	p.closeOnce.Do(func() {
		close(p.closing)
		t := time.AfterFunc(p.flush, func() { close(p.abandon) })
		p.mu.Lock()
		p.closed = true
		p.mu.Unlock()
		close(p.asyncStop)
		p.asyncWG.Wait() // the confirm loops deliver or fail every outcome
		t.Stop()
		p.c.close() // closes the channels with it
	})
	return nil
}
