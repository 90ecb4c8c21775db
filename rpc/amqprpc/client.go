package amqprpc

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/go-integration/patterns/internal/amqpname"
)

// Client sends requests to queues and waits for their replies, over one
// connection and one channel shared by every caller. Replies come back
// through RabbitMQ's direct reply-to (amq.rabbitmq.reply-to), so no reply
// queue is declared. When the connection drops, every call in flight fails
// with ErrConnectionLost and the next call dials again.
type Client struct {
	url    string
	cfg    config
	prefix string
	seq    atomic.Uint64

	mu       sync.Mutex
	sess     *session
	dialing  *dialing
	dials    sync.WaitGroup
	closed   bool
	inflight sync.WaitGroup
	closeErr error
	closeOne sync.Once
}

type result struct {
	msg Message
	err error
}

// session is one connection with its channel and the calls waiting on it.
type session struct {
	conn amqpConn
	ch   *amqp.Channel

	mu      sync.Mutex
	pending map[string]chan result
	dead    error // set once the channel is gone
	done    chan struct{}
	unknown atomic.Int64 // replies with no waiting call
	closing atomic.Bool  // the Client is closing it
}

// NewClient connects to RabbitMQ at url. Options: WithConnectionName,
// WithAMQPConfig, WithDrainTimeout.
func NewClient(url string, opts ...Option) (*Client, error) {
	if _, err := amqp.ParseURI(url); err != nil {
		return nil, fmt.Errorf("%w: AMQP URL: %v", ErrInvalidOption, err)
	}
	cfg, err := newConfig(opts)
	if err != nil {
		return nil, err
	}
	var b [6]byte
	_, _ = rand.Read(b[:])
	c := &Client{url: url, cfg: cfg, prefix: hex.EncodeToString(b[:]) + "-"}
	if _, err := c.session(context.Background()); err != nil {
		return nil, err
	}
	return c, nil
}

// session returns the live session, dialling a new one when needed. Callers
// wait for one shared dial under their own context.
func (c *Client) session(ctx context.Context) (*session, error) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil, ErrClosed
	}
	if s := c.sess; s != nil && s.alive() {
		c.mu.Unlock()
		return s, nil
	}
	d := c.dialing
	if d == nil {
		d = &dialing{done: make(chan struct{})}
		c.dialing = d
		c.dials.Add(1)
		go func() {
			defer c.dials.Done()
			s, err := c.dial()
			c.mu.Lock()
			if err == nil && c.closed {
				s.closing.Store(true)
				s.conn.Close()
				s, err = nil, ErrClosed
			}
			if err == nil {
				c.sess = s
			}
			c.dialing = nil
			c.mu.Unlock()
			d.s, d.err = s, err
			close(d.done)
		}()
	}
	c.mu.Unlock()
	select {
	case <-d.done:
		return d.s, d.err
	case <-ctx.Done():
		return nil, fmt.Errorf("amqprpc: connecting: %w", ctx.Err())
	}
}

// dialing is a dial in progress that callers wait for.
type dialing struct {
	done chan struct{}
	s    *session
	err  error
}

func (c *Client) dial() (*session, error) {
	conn, err := dialAMQP(c.url, c.cfg.amqp)
	if err != nil {
		return nil, fmt.Errorf("amqprpc: dial: %w", err)
	}
	ch, err := conn.Channel()
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("amqprpc: open channel: %w", err)
	}
	// Direct reply-to: consume the pseudo-queue in no-ack mode on the
	// channel we publish on, before publishing.
	replies, err := ch.Consume(replyTo, "", true, true, false, false, nil)
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("amqprpc: consume %s: %w", replyTo, err)
	}
	returns := ch.NotifyReturn(make(chan amqp.Return, 64))
	closes := ch.NotifyClose(make(chan *amqp.Error, 1))
	s := &session{conn: conn, ch: ch, pending: map[string]chan result{}, done: make(chan struct{})}
	go s.dispatch(replies, returns, closes)
	return s, nil
}

func (s *session) alive() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.dead == nil
}

// dispatch hands replies and returned requests to their calls until the
// channel closes, then fails every call still waiting.
func (s *session) dispatch(replies <-chan amqp.Delivery, returns <-chan amqp.Return, closes <-chan *amqp.Error) {
	defer close(s.done)
	for replies != nil || returns != nil {
		select {
		case d, ok := <-replies:
			if !ok {
				replies = nil
				continue
			}
			s.deliver(d.CorrelationId, decodeReply(d))
		case r, ok := <-returns:
			if !ok {
				returns = nil
				continue
			}
			s.deliver(r.CorrelationId, result{err: fmt.Errorf("%w %q: %s", ErrNoRoute, r.RoutingKey, r.ReplyText)})
		}
	}
	reason := ErrConnectionLost
	if s.closing.Load() {
		reason = ErrClosed
	}
	var err error = reason
	select {
	case e := <-closes:
		if e != nil {
			err = fmt.Errorf("%w: %v", reason, e)
		}
	default:
	}
	s.fail(err)
	_ = s.conn.close()
}

func (s *session) deliver(id string, r result) {
	s.mu.Lock()
	ch, ok := s.pending[id]
	delete(s.pending, id)
	s.mu.Unlock()
	if !ok {
		s.unknown.Add(1) // late reply of a call that gave up, or not ours: drop it
		return
	}
	ch <- r
}

// fail marks the session dead and fails every waiting call with err.
func (s *session) fail(err error) {
	s.mu.Lock()
	if s.dead == nil {
		s.dead = err
	}
	pending := s.pending
	s.pending = map[string]chan result{}
	s.mu.Unlock()
	for _, ch := range pending {
		ch <- result{err: err}
	}
}

func (s *session) register(id string) (chan result, error) {
	ch := make(chan result, 1)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.dead != nil {
		return nil, s.dead
	}
	s.pending[id] = ch
	return ch, nil
}

func (s *session) forget(id string) {
	s.mu.Lock()
	delete(s.pending, id)
	s.mu.Unlock()
}

func decodeReply(d amqp.Delivery) result {
	if code, ok := d.Headers[headerErrorCode]; ok {
		msg, _ := d.Headers[headerErrorMsg].(string)
		return result{err: &Error{Code: fmt.Sprint(code), Message: msg}}
	}
	return result{msg: Message{Body: d.Body, ContentType: d.ContentType, Header: fromTable(d.Headers)}}
}

// Call sends req to queue and waits for the reply under ctx. It returns the
// reply, or an *Error from the remote handler, ctx's error (the request may
// still be handled later unless it expired: requests carry ctx's deadline as
// their expiration), ErrNoRoute, ErrConnectionLost or ErrClosed. A queue
// name AMQP cannot carry (over 255 bytes, not UTF-8) fails at once with
// ErrInvalidOption: sent, it would close the connection every call shares.
// Safe for concurrent use.
func (c *Client) Call(ctx context.Context, queue string, req Message) (Message, error) {
	if err := ctx.Err(); err != nil {
		return Message{}, err
	}
	if err := amqpname.Check("queue name", queue, false); err != nil {
		return Message{}, fmt.Errorf("%w: Call: %w", ErrInvalidOption, err)
	}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return Message{}, ErrClosed
	}
	c.inflight.Add(1)
	c.mu.Unlock()
	defer c.inflight.Done()

	s, err := c.session(ctx)
	if err != nil {
		return Message{}, err
	}
	id := c.prefix + strconv.FormatUint(c.seq.Add(1), 36)
	wait, err := s.register(id)
	if err != nil {
		return Message{}, err
	}
	pub := amqp.Publishing{
		CorrelationId: id,
		ReplyTo:       replyTo,
		ContentType:   req.ContentType,
		Body:          req.Body,
		Headers:       toTable(req.Header),
		Timestamp:     time.Now(),
	}
	if dl, ok := ctx.Deadline(); ok {
		left := time.Until(dl).Milliseconds()
		if left < 1 {
			left = 1
		}
		// Expire the request in the queue when the caller stops waiting, and
		// tell the handler the deadline.
		pub.Expiration = strconv.FormatInt(left, 10)
		if pub.Headers == nil {
			pub.Headers = amqp.Table{}
		}
		pub.Headers[headerDeadline] = dl.UnixMilli()
	}
	if err := s.ch.PublishWithContext(ctx, "", queue, true, false, pub); err != nil {
		s.forget(id)
		if ctx.Err() != nil {
			return Message{}, fmt.Errorf("amqprpc: call %s: %w", queue, ctx.Err())
		}
		if errors.Is(err, amqp.ErrClosed) {
			return Message{}, fmt.Errorf("%w: publish: %w", ErrConnectionLost, err)
		}
		return Message{}, fmt.Errorf("amqprpc: publish to %s: %w", queue, err)
	}
	select {
	case r := <-wait:
		return r.msg, r.err
	case <-ctx.Done():
		s.forget(id)
		return Message{}, fmt.Errorf("amqprpc: call %s: %w", queue, ctx.Err())
	}
}

// DroppedReplies returns how many replies arrived for no waiting call (late
// replies of calls that gave up) on the current connection.
func (c *Client) DroppedReplies() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.sess == nil {
		return 0
	}
	return c.sess.unknown.Load()
}

// Close stops new calls, waits for calls in flight (at most the drain
// timeout), then closes the connection; calls still waiting get ErrClosed.
// Close is idempotent.
func (c *Client) Close() error {
	c.closeOne.Do(func() {
		c.mu.Lock()
		c.closed = true
		s := c.sess
		c.mu.Unlock()
		drained := make(chan struct{})
		go func() { c.inflight.Wait(); close(drained) }()
		t := time.NewTimer(c.cfg.drainTimeout)
		defer t.Stop()
		select {
		case <-drained:
		case <-t.C:
		}
		if s != nil {
			s.closing.Store(true)
			if err := s.conn.close(); err != nil && !errors.Is(err, amqp.ErrClosed) {
				c.closeErr = err
			}
			<-s.done
		}
		<-drained
		c.dials.Wait()
	})
	return c.closeErr
}
