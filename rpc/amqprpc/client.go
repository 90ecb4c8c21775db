package amqprpc

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/go-integration/patterns/internal/amqpname"
	"github.com/go-integration/patterns/internal/amqpnodes"
	"github.com/go-integration/patterns/internal/hooks"
	"github.com/go-integration/patterns/internal/ids"
)

// Client sends requests to queues and waits for their replies, over one
// connection and one channel shared by every caller. Replies come back
// through RabbitMQ's direct reply-to (amq.rabbitmq.reply-to), so no reply
// queue is declared. When the connection drops, every call in flight fails
// with ErrConnectionLost and the next call dials again (after the reconnect
// backoff when dialling failed).
type Client struct {
	url    string
	cfg    config
	prefix string
	seq    atomic.Uint64
	calls  []CallTracer
	conns  []ConnectionTracer

	mu       sync.Mutex
	sess     *session
	dialing  *dialing
	dials    sync.WaitGroup
	failures int       // failed dials in a row; guarded by mu
	nextDial time.Time // no dial before; guarded by mu
	nextNode int       // node the next dial tries first (WithNodes); guarded by mu
	closed   bool
	closing  chan struct{}
	inflight sync.WaitGroup
	closeErr error
	closeOne sync.Once

	nCalls, nFailed, nDropped, nDials, nDialFailed, nLost atomic.Uint64
	nInFlight                                             atomic.Int64
}

// ClientStats is a snapshot of a Client's counters, cumulative since it was
// built. Fields may be added.
type ClientStats struct {
	Calls          uint64 // calls started
	Failed         uint64 // calls that returned an error (remote *Error included)
	InFlight       int64  // calls running now (gauge)
	DroppedReplies uint64 // replies that arrived for no waiting call (late replies)
	Dials          uint64 // connections established
	DialFailures   uint64 // dials that failed
	ConnectionLost uint64 // connections that dropped while in use
}

// Stats returns a snapshot of the Client's counters. It does no I/O.
func (c *Client) Stats() ClientStats {
	return ClientStats{
		Calls:          c.nCalls.Load(),
		Failed:         c.nFailed.Load(),
		InFlight:       c.nInFlight.Load(),
		DroppedReplies: c.nDropped.Load(),
		Dials:          c.nDials.Load(),
		DialFailures:   c.nDialFailed.Load(),
		ConnectionLost: c.nLost.Load(),
	}
}

type result struct {
	msg Message
	err error
}

// session is one connection with its channel and the calls waiting on it.
type session struct {
	conn amqpConn
	ch   *amqp.Channel
	node string // the node's URL without password

	mu      sync.Mutex
	pending map[string]chan result
	dead    error // set once the channel is gone
	done    chan struct{}
	closing atomic.Bool // the Client is closing it
	client  *Client
}

// NewClient connects to RabbitMQ at url, waiting for the connection under
// ctx.
func NewClient(ctx context.Context, url string, opts ...ClientOption) (*Client, error) {
	if _, err := amqp.ParseURI(url); err != nil {
		return nil, fmt.Errorf("%w: AMQP URL: %v", ErrInvalidOption, err)
	}
	cfg := defaultConfig()
	for _, o := range opts {
		if o == nil {
			return nil, fmt.Errorf("%w: nil ClientOption", ErrInvalidOption)
		}
		if err := o.applyClient(&cfg); err != nil {
			return nil, err
		}
	}
	c := &Client{
		url: url, cfg: cfg, prefix: ids.Hex()[:12] + "-",
		calls: hooks.Pick[CallTracer](cfg.tracers), conns: hooks.Pick[ConnectionTracer](cfg.tracers),
		closing: make(chan struct{}),
	}
	if _, err := c.session(ctx); err != nil {
		go c.Close() // a dial still running is closed when it ends
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
		wait := time.Until(c.nextDial)
		start := c.nextNode
		tctx := context.WithoutCancel(ctx)
		go func() {
			defer c.dials.Done()
			var s *session
			var err error
			if wait > 0 && !sleep(wait, c.closing) {
				err = ErrClosed
			} else {
				s, err = c.dial(start)
			}
			c.mu.Lock()
			var ev TraceConnectionData
			switch {
			case errors.Is(err, ErrClosed):
			case err != nil:
				c.failures++
				c.nDialFailed.Add(1)
				ev = TraceConnectionData{Role: "client", Event: ConnectionDialFailed, Err: err, Failures: c.failures, Wait: c.cfg.reconnect.Wait(c.failures)}
				c.nextDial = time.Now().Add(ev.Wait)
			default:
				c.failures = 0
				c.nextDial = time.Time{}
				c.nDials.Add(1)
				ev = TraceConnectionData{Role: "client", Event: ConnectionUp, URL: s.node}
			}
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
			if !errors.Is(err, ErrClosed) {
				c.traceConn(tctx, ev)
			}
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

func (c *Client) traceConn(ctx context.Context, ev TraceConnectionData) {
	for _, t := range c.conns {
		t.TraceConnection(ctx, ev)
	}
}

// sleep waits d and reports true, or false when stop closes first.
func sleep(d time.Duration, stop <-chan struct{}) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-stop:
		return false
	}
}

// dialing is a dial in progress that callers wait for.
type dialing struct {
	done chan struct{}
	s    *session
	err  error
}

// dial connects to the first node that answers, from node start on, and
// makes the node after it the first one the next dial tries: a lost
// connection's node is the likeliest to be down.
func (c *Client) dial(start int) (*session, error) {
	conn, node, err := dialNodes(c.url, c.cfg, start)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	c.nextNode = node + 1
	c.mu.Unlock()
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
	s := &session{conn: conn, ch: ch, node: amqpnodes.Redact(nodeURL(c.url, c.cfg, node)), pending: map[string]chan result{}, done: make(chan struct{}), client: c}
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
	if reason == ErrConnectionLost {
		s.client.nLost.Add(1)
		s.client.traceConn(context.Background(), TraceConnectionData{Role: "client", Event: ConnectionLost, Err: err, URL: s.node, Failures: 1})
	}
}

func (s *session) deliver(id string, r result) {
	s.mu.Lock()
	ch, ok := s.pending[id]
	delete(s.pending, id)
	s.mu.Unlock()
	if !ok {
		s.client.nDropped.Add(1) // late reply of a call that gave up, or not ours: drop it
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
	c.nCalls.Add(1)
	c.nInFlight.Add(1)
	defer c.nInFlight.Add(-1)

	id := c.prefix + strconv.FormatUint(c.seq.Add(1), 36)
	header := req.Header
	if len(c.calls) == 0 {
		reply, err := c.call(ctx, queue, id, req, header)
		if err != nil {
			c.nFailed.Add(1)
		}
		return reply, err
	}
	header = make(map[string]string, len(req.Header)+2)
	maps.Copy(header, req.Header)
	start := time.Now()
	for _, t := range c.calls {
		ctx = t.TraceCallStart(ctx, TraceCallStartData{Queue: queue, CorrelationID: id, Header: header, BodySize: len(req.Body)})
	}
	reply, err := c.call(ctx, queue, id, req, header)
	if err != nil {
		c.nFailed.Add(1)
	}
	for _, t := range c.calls {
		t.TraceCallEnd(ctx, TraceCallEndData{Queue: queue, CorrelationID: id, Err: err, Duration: time.Since(start), ReplySize: len(reply.Body)})
	}
	return reply, err
}

// call publishes the request with header and waits for its reply.
func (c *Client) call(ctx context.Context, queue, id string, req Message, header map[string]string) (Message, error) {
	s, err := c.session(ctx)
	if err != nil {
		return Message{}, err
	}
	wait, err := s.register(id)
	if err != nil {
		return Message{}, err
	}
	pub := amqp.Publishing{
		CorrelationId: id,
		ReplyTo:       replyTo,
		ContentType:   req.ContentType,
		Body:          req.Body,
		Headers:       toTable(header),
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
		// A reset socket comes back from the write before amqp091 marks
		// the connection closed: it is the same lost connection.
		if amqpnodes.ConnectionLost(err) {
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

// Close stops new calls (they get ErrClosed), waits for calls in flight (at
// most the drain timeout), then closes the connection; calls still waiting
// then get ErrClosed. Close is idempotent.
func (c *Client) Close() error {
	c.closeOne.Do(func() {
		c.mu.Lock()
		c.closed = true
		close(c.closing)
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
