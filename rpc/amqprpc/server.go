package amqprpc

import (
	"context"
	"errors"
	"fmt"
	"net"
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

// Server consumes a request queue and answers each request with its
// Handler, running up to the configured concurrency at once. A request is
// acknowledged after its reply is published, so a server that dies
// mid-request leaves it to be redelivered (handlers may run twice: make them
// idempotent). Requests whose caller's deadline has passed are dropped
// without running. When the connection drops, Run reconnects.
type Server struct {
	url    string
	queue  string
	h      Handler
	cfg    config
	serves []ServeTracer
	conns  []ConnectionTracer

	mu       sync.Mutex
	conn     *amqp.Connection
	nextNode int    // node the next dial tries first (WithNodes)
	node     string // URL without password of the node last connected to
	serving  bool
	closing  chan struct{}
	stopped  chan struct{}
	once     sync.Once

	nReceived, nHandled, nFailed, nPanics, nExpired, nReplyFailed, nConnects, nLost atomic.Uint64
	nInFlight                                                                       atomic.Int64
}

// ServerStats is a snapshot of a Server's counters, cumulative since it was
// built. Fields may be added.
type ServerStats struct {
	Received       uint64 // requests delivered
	Handled        uint64 // requests whose handler ran
	Failed         uint64 // handlers that returned an error or panicked
	Panics         uint64 // handlers that panicked
	Expired        uint64 // requests dropped unhandled: the caller's deadline had passed
	ReplyFailed    uint64 // replies or acks that could not be sent
	InFlight       int64  // handlers running now (gauge)
	Connects       uint64 // connections established
	ConnectionLost uint64 // failed dials and lost connections
}

// Stats returns a snapshot of the Server's counters. It does no I/O.
func (s *Server) Stats() ServerStats {
	return ServerStats{
		Received: s.nReceived.Load(), Handled: s.nHandled.Load(), Failed: s.nFailed.Load(),
		Panics: s.nPanics.Load(), Expired: s.nExpired.Load(), ReplyFailed: s.nReplyFailed.Load(),
		InFlight: s.nInFlight.Load(), Connects: s.nConnects.Load(), ConnectionLost: s.nLost.Load(),
	}
}

// NewServer returns a Server for queue. It does no I/O: it connects when
// Run runs.
func NewServer(url, queue string, h Handler, opts ...ServerOption) (*Server, error) {
	if queue == "" || h == nil {
		return nil, fmt.Errorf("%w: NewServer needs a queue and a handler", ErrInvalidOption)
	}
	if _, err := amqp.ParseURI(url); err != nil {
		return nil, fmt.Errorf("%w: AMQP URL: %v", ErrInvalidOption, err)
	}
	cfg := defaultConfig()
	for _, o := range opts {
		if o == nil {
			return nil, fmt.Errorf("%w: nil ServerOption", ErrInvalidOption)
		}
		if err := o.applyServer(&cfg); err != nil {
			return nil, err
		}
	}
	return &Server{
		url: url, queue: queue, h: h, cfg: cfg,
		serves: hooks.Pick[ServeTracer](cfg.tracers), conns: hooks.Pick[ConnectionTracer](cfg.tracers),
		closing: make(chan struct{}), stopped: make(chan struct{}),
	}, nil
}

// Run answers requests until ctx is done (it returns nil) or Close is
// called (it returns ErrClosed). Either way it stops consuming and lets
// running handlers finish, reply and ack for at most the drain timeout; then
// it cancels their context and closes its connection, which hands their
// requests back to the queue, and returns once they have returned. A lost
// connection or a failed dial is logged and retried after the reconnect
// backoff (WithReconnectBackoff), except when the broker refuses the
// credentials or the vhost on the first dial: that mistake does not heal, so
// Run returns it. A queue name AMQP cannot carry (over 255 bytes, not UTF-8,
// or starting with "amq." unless WithoutDeclare) fails at once with
// ErrInvalidOption. Run may be called once.
func (s *Server) Run(ctx context.Context) error {
	s.mu.Lock()
	if s.serving {
		s.mu.Unlock()
		return fmt.Errorf("amqprpc: Run called twice")
	}
	s.serving = true
	s.mu.Unlock()
	defer close(s.stopped)
	// A bad name would fail the same way on every reconnect (amqp091 or the
	// server closes the connection over it): refuse it at once.
	if err := amqpname.Check("queue name", s.queue, s.cfg.declare); err != nil {
		return fmt.Errorf("%w: Run: %w", ErrInvalidOption, err)
	}
	select {
	case <-s.closing:
		return ErrClosed
	default:
	}
	failures := 0
	for first := true; ; first = false {
		connected, err := s.serveConn(ctx)
		if first && refused(err) {
			return err
		}
		select {
		case <-s.closing:
			return ErrClosed
		case <-ctx.Done():
			return nil
		default:
		}
		ev := TraceConnectionData{Role: "server", Queue: s.queue, Event: ConnectionDialFailed, Err: err}
		if connected {
			failures = 0
			ev.Event = ConnectionLost
			s.mu.Lock()
			ev.URL = s.node
			s.mu.Unlock()
		}
		failures++
		s.nLost.Add(1)
		ev.Failures, ev.Wait = failures, s.cfg.reconnect.Wait(failures)
		for _, t := range s.conns {
			t.TraceConnection(ctx, ev)
		}
		s.cfg.logger.Warn("amqprpc: server lost its connection; reconnecting", "queue", s.queue, "err", err, "in", ev.Wait)
		t := time.NewTimer(ev.Wait)
		select {
		case <-t.C:
		case <-s.closing:
			t.Stop()
			return ErrClosed
		case <-ctx.Done():
			t.Stop()
			return nil
		}
	}
}

// Close stops Run (see Run: running handlers get at most the drain timeout)
// and waits for it to return; a Run that starts afterwards returns
// ErrClosed at once. Idempotent; it returns nil.
func (s *Server) Close() error {
	s.once.Do(func() { close(s.closing) })
	s.mu.Lock()
	serving := s.serving
	s.mu.Unlock()
	if serving {
		<-s.stopped
	}
	return nil
}

// localAddr returns the local address of the current connection (for tests
// that kill it).
func (s *Server) localAddr() net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conn == nil {
		return nil
	}
	return s.conn.LocalAddr()
}

// serveConn dials and serves until the connection ends; connected reports
// whether it got as far as consuming.
func (s *Server) serveConn(ctx context.Context) (connected bool, err error) {
	s.mu.Lock()
	start := s.nextNode
	s.mu.Unlock()
	conn, node, err := dialNodes(s.url, s.cfg, start)
	if err != nil {
		return false, err
	}
	// The next dial starts with the node after this one, likeliest to be
	// up when this connection is lost.
	s.mu.Lock()
	s.nextNode = node + 1
	s.node = amqpnodes.Redact(nodeURL(s.url, s.cfg, node))
	url := s.node
	s.mu.Unlock()
	defer func() { _ = conn.close() }()
	connClosed := conn.NotifyClose(make(chan *amqp.Error, 1))
	ch, err := conn.Channel()
	if err != nil {
		return false, fmt.Errorf("amqprpc: open channel: %w", err)
	}
	if err := ch.Qos(s.cfg.concurrency, 0, false); err != nil {
		return false, fmt.Errorf("amqprpc: qos: %w", err)
	}
	if s.cfg.declare {
		if _, err := ch.QueueDeclare(s.queue, true, false, false, false, s.queueArgs()); err != nil {
			return false, fmt.Errorf("amqprpc: declare queue %s: %w", s.queue, err)
		}
	}
	tag := "amqprpc-" + ids.Hex()[:12]
	deliveries, err := ch.Consume(s.queue, tag, false, false, false, false, nil)
	if err != nil {
		return false, fmt.Errorf("amqprpc: consume %s: %w", s.queue, err)
	}
	s.mu.Lock()
	s.conn = conn.Connection
	s.mu.Unlock()
	s.nConnects.Add(1)
	for _, t := range s.conns {
		t.TraceConnection(ctx, TraceConnectionData{Role: "server", Queue: s.queue, Event: ConnectionUp, URL: url})
	}

	// Handlers run under a context that ends when the connection is lost
	// (no reply could be sent), not when shutdown starts.
	hctx, cancelHandlers := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelHandlers()
	var wg sync.WaitGroup
	for range s.cfg.concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for d := range deliveries {
				s.handle(hctx, ch, d)
			}
		}()
	}
	workersDone := make(chan struct{})
	go func() { wg.Wait(); close(workersDone) }()

	var lost error
	drain := func() {
		// Stop deliveries; the workers finish what they hold. basic.cancel is
		// an RPC a blocked connection (resource alarm) never answers: do not
		// wait for it past the drain timeout.
		go func() { _ = ch.Cancel(tag, false) }()
		t := time.NewTimer(s.cfg.drainTimeout)
		defer t.Stop()
		select {
		case <-workersDone:
		case <-t.C:
			// Handlers still running have their requests handed back:
			// closing the connection requeues what is unacked, so another
			// server answers them. Close first, then cancel, so that a
			// handler returning ctx's error cannot reply with it.
			_ = conn.close()
			cancelHandlers()
		}
	}
	select {
	case <-ctx.Done():
		drain()
	case <-s.closing:
		drain()
	case e := <-connClosed:
		lost = fmt.Errorf("%w: %v", ErrConnectionLost, e)
		cancelHandlers()
	case <-workersDone: // deliveries closed: channel or consumer gone
		lost = fmt.Errorf("%w: consumer cancelled", ErrConnectionLost)
	}
	<-workersDone
	return true, lost
}

func (s *Server) handle(hctx context.Context, ch *amqp.Channel, d amqp.Delivery) {
	s.nReceived.Add(1)
	ctx := hctx
	if dl, ok := deadline(d.Headers[headerDeadline]); ok {
		if !time.Now().Before(dl) {
			s.nExpired.Add(1)
			_ = d.Ack(false) // the caller has stopped waiting
			return
		}
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(hctx, dl)
		defer cancel()
	}
	s.nInFlight.Add(1)
	defer s.nInFlight.Add(-1)
	req := Message{Body: d.Body, ContentType: d.ContentType, Header: fromTable(d.Headers)}
	start := time.Now()
	for _, t := range s.serves {
		ctx = t.TraceServeStart(ctx, TraceServeStartData{Queue: s.queue, CorrelationID: d.CorrelationId, Header: req.Header, Redelivered: d.Redelivered, BodySize: len(d.Body)})
	}
	resp, err := s.call(ctx, req)
	s.nHandled.Add(1)
	replyErr := s.reply(ch, d, resp, err)
	if replyErr != nil {
		s.nReplyFailed.Add(1)
	}
	for _, t := range s.serves {
		t.TraceServeEnd(ctx, TraceServeEndData{Queue: s.queue, CorrelationID: d.CorrelationId, Err: err, ReplyErr: replyErr, Duration: time.Since(start)})
	}
}

// reply publishes the handler's answer and acks the request.
func (s *Server) reply(ch *amqp.Channel, d amqp.Delivery, resp Message, err error) error {
	pub := amqp.Publishing{CorrelationId: d.CorrelationId}
	if err != nil {
		s.nFailed.Add(1)
		var re *Error
		if !errors.As(err, &re) {
			re = &Error{Code: CodeInternal, Message: err.Error()}
		}
		pub.Headers = amqp.Table{headerErrorCode: re.Code, headerErrorMsg: re.Message}
	} else {
		pub.Body, pub.ContentType, pub.Headers = resp.Body, resp.ContentType, toTable(resp.Header)
	}
	if d.ReplyTo != "" {
		pctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := ch.PublishWithContext(pctx, "", d.ReplyTo, false, false, pub)
		cancel()
		if err != nil {
			s.cfg.logger.Warn("amqprpc: reply failed; the request goes back to the queue", "queue", s.queue, "err", err)
			_ = d.Nack(false, true)
			return fmt.Errorf("amqprpc: reply: %w", err)
		}
	}
	if err := d.Ack(false); err != nil {
		s.cfg.logger.Warn("amqprpc: ack failed; the request will be redelivered", "queue", s.queue, "err", err)
		return fmt.Errorf("amqprpc: ack: %w", err)
	}
	return nil
}

// call runs the handler, turning a panic into an *Error.
func (s *Server) call(ctx context.Context, req Message) (resp Message, err error) {
	defer func() {
		if p := recover(); p != nil {
			s.nPanics.Add(1)
			err = &Error{Code: CodePanic, Message: fmt.Sprint(p)}
		}
	}()
	return s.h(ctx, req)
}

func deadline(v any) (time.Time, bool) {
	var ms int64
	switch x := v.(type) {
	case int64:
		ms = x
	case int32:
		ms = int64(x)
	case int:
		ms = int64(x)
	case string:
		n, err := strconv.ParseInt(x, 10, 64)
		if err != nil {
			return time.Time{}, false
		}
		ms = n
	default:
		return time.Time{}, false
	}
	return time.UnixMilli(ms), true
}

// refused reports whether err is the broker refusing who we are or where we
// connect: wrong credentials, no SASL mechanism, or a vhost we may not use.
func refused(err error) bool {
	var ae *amqp.Error
	return errors.As(err, &ae) && (ae.Code == amqp.AccessRefused || ae.Code == amqp.NotAllowed)
}
