package rabbitmq

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/go-integration/patterns/broker"
	"github.com/go-integration/patterns/internal/amqpnodes"
	"github.com/go-integration/patterns/internal/backoff"
)

// connection owns one AMQP connection and replaces it when it drops: it
// reconnects with backoff until closed. Users of the connection wait for it
// with get and redeclare their own topology on the new one.
type connection struct {
	urls     []string // the constructor's URL, then WithNodes
	redacted []string // urls without passwords
	cfg      *config
	obs      *observer

	mu        sync.Mutex
	node      int // index in urls of conn, or of the node last connected to
	conn      *amqp.Connection
	gen       uint64
	ready     chan struct{} // closed while conn is usable
	unblocked chan struct{} // closed while the broker does not block publishing
	blocked   atomic.Bool   // mirrors unblocked for a lock-free fast path

	closing   chan struct{}
	closeOnce sync.Once
	done      chan struct{}
}

func dial(ctx context.Context, rawURL string, cfg *config, obs *observer) (*connection, error) {
	if _, err := amqp.ParseURI(rawURL); err != nil {
		return nil, fmt.Errorf("rabbitmq: invalid URL: %w", err)
	}
	c := &connection{
		cfg: cfg, obs: obs,
		ready: make(chan struct{}), unblocked: make(chan struct{}),
		closing: make(chan struct{}), done: make(chan struct{}),
	}
	for _, u := range append([]string{rawURL}, cfg.nodes...) {
		c.urls, c.redacted = append(c.urls, u), append(c.redacted, amqpnodes.Redact(u))
	}
	close(c.unblocked)
	ac, node, err := c.dialAny(ctx, 0)
	if err != nil {
		return nil, err
	}
	c.install(ac, node)
	obs.connection(ctx, c, TraceConnectionData{Event: ConnectionConnected})
	cfg.logger.Debug("rabbitmq: connected", "url", c.addr())
	go c.loop(ac)
	return c, nil
}

// dialNode makes one connection attempt to node i of urls.
func (c *connection) dialNode(ctx context.Context, i int) (*amqp.Connection, error) {
	props := amqp.NewConnectionProperties()
	if c.cfg.name != "" {
		props.SetClientConnectionName(c.cfg.name)
	}
	dctx, cancel := context.WithTimeout(ctx, c.cfg.dialTimeout)
	defer cancel()
	deadline, _ := dctx.Deadline()
	ac, err := amqp.DialConfig(c.urls[i], amqp.Config{
		Heartbeat:  c.cfg.heartbeat,
		Properties: props,
		Locale:     "en_US",
		Dial: func(network, addr string) (net.Conn, error) {
			var d net.Dialer
			conn, err := d.DialContext(dctx, network, addr)
			if err != nil {
				return nil, err
			}
			// bound the AMQP handshake too; amqp091 clears the deadline after it.
			if err := conn.SetDeadline(deadline); err != nil {
				conn.Close()
				return nil, err
			}
			return conn, nil
		},
	})
	if err != nil {
		return nil, fmt.Errorf("rabbitmq: connect to %s: %w", c.redacted[i], describeDialError(err))
	}
	return ac, nil
}

// describeDialError adds the likely cause to amqp091's dial errors.
func describeDialError(err error) error {
	var ae *amqp.Error
	if errors.As(err, &ae) {
		switch ae.Code {
		case amqp.AccessRefused:
			return fmt.Errorf("access refused (wrong user name or password, or no access to the vhost?): %w", err)
		case amqp.NotAllowed:
			return fmt.Errorf("not allowed (unknown vhost or no permission on it?): %w", err)
		}
	}
	return err
}

func (c *connection) install(ac *amqp.Connection, node int) {
	blocks := ac.NotifyBlocked(make(chan amqp.Blocking, 8))
	c.mu.Lock()
	c.conn = ac
	c.node = node
	c.gen++
	close(c.ready)
	c.mu.Unlock()
	// Drain the blocked notifications; amqp091 stalls its reader on a full listener.
	go func() {
		for b := range blocks {
			c.mu.Lock()
			if b.Active {
				select {
				case <-c.unblocked:
					c.unblocked = make(chan struct{})
				default:
				}
				c.blocked.Store(true)
			} else {
				closeIfOpen(c.unblocked)
				c.blocked.Store(false)
			}
			c.mu.Unlock()
			if b.Active {
				c.cfg.logger.Warn("rabbitmq: broker blocked publishing", "reason", b.Reason)
				c.obs.connection(context.Background(), c, TraceConnectionData{Event: ConnectionBlocked, Err: errors.New(b.Reason)})
			} else {
				c.obs.connection(context.Background(), c, TraceConnectionData{Event: ConnectionUnblocked})
			}
		}
		c.mu.Lock()
		closeIfOpen(c.unblocked)
		c.blocked.Store(false)
		c.mu.Unlock()
	}()
}

func closeIfOpen(ch chan struct{}) {
	select {
	case <-ch:
	default:
		close(ch)
	}
}

// loop waits for the connection to drop and reconnects until closed.
func (c *connection) loop(ac *amqp.Connection) {
	defer close(c.done)
	for {
		lost := ac.NotifyClose(make(chan *amqp.Error, 1))
		var why *amqp.Error
		select {
		case why = <-lost:
		case <-c.closing:
			// a deadline, as a blocked connection may never answer connection.close.
			_ = ac.CloseDeadline(time.Now().Add(5 * time.Second))
			for range lost { //nolint:revive // drain until amqp091 closes it
			}
			return
		}
		c.mu.Lock()
		c.conn = nil
		c.ready = make(chan struct{})
		lostNode := c.node
		c.mu.Unlock()
		var err error = amqp.ErrClosed
		if why != nil {
			err = why
		}
		c.cfg.logger.Warn("rabbitmq: connection lost, reconnecting", "url", c.redacted[lostNode], "err", err)
		c.obs.connection(context.Background(), c, TraceConnectionData{Event: ConnectionLost, Err: err})

		policy := backoff.Policy{Min: c.cfg.backoffMin, Max: c.cfg.backoffMax}
		// Start with the node after the lost one: with several nodes, the
		// lost one is the likeliest to be down.
		start := lostNode + 1
		for attempt := 1; ; attempt++ {
			ctx, cancel := c.closingContext()
			next, node, err := c.dialAny(ctx, start)
			cancel()
			if err == nil {
				ac = next
				c.install(ac, node)
				c.obs.connection(context.Background(), c, TraceConnectionData{Event: ConnectionReconnected})
				c.cfg.logger.Info("rabbitmq: reconnected", "url", c.redacted[node])
				break
			}
			wait := policy.Wait(attempt)
			c.cfg.logger.Debug("rabbitmq: reconnect failed", "err", err, "retry_in", wait)
			c.obs.connection(context.Background(), c, TraceConnectionData{Event: ConnectionReconnecting, Err: err, Attempt: attempt, Wait: wait})
			t := time.NewTimer(wait)
			select {
			case <-c.closing:
				t.Stop()
				return
			case <-t.C:
			}
		}
	}
}

// get returns the current connection, waiting for a reconnect while there is
// none. It fails with ctx's error or broker.ErrClosed.
func (c *connection) get(ctx context.Context, abort <-chan struct{}) (*amqp.Connection, uint64, error) {
	for {
		c.mu.Lock()
		ac, gen, ready := c.conn, c.gen, c.ready
		c.mu.Unlock()
		if ac != nil && !ac.IsClosed() {
			return ac, gen, nil
		}
		if ac != nil {
			// closed but the loop has not noticed yet: wait a moment.
			t := time.NewTimer(5 * time.Millisecond)
			select {
			case <-ctx.Done():
				t.Stop()
				return nil, 0, ctx.Err()
			case <-c.closing:
				t.Stop()
				return nil, 0, broker.ErrClosed
			case <-abort:
				t.Stop()
				return nil, 0, broker.ErrClosed
			case <-t.C:
			}
			continue
		}
		select {
		case <-ctx.Done():
			return nil, 0, ctx.Err()
		case <-c.closing:
			return nil, 0, broker.ErrClosed
		case <-abort:
			return nil, 0, broker.ErrClosed
		case <-ready:
		}
	}
}

// waitUnblocked returns once the broker does not block publishing, or with
// ctx's error.
func (c *connection) waitUnblocked(ctx context.Context, abort <-chan struct{}) error {
	if !c.blocked.Load() {
		return nil
	}
	c.mu.Lock()
	ch := c.unblocked
	c.mu.Unlock()
	select {
	case <-ch:
		return nil
	default:
	}
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("broker blocked publishing (resource alarm): %w", ctx.Err())
	case <-c.closing:
		return broker.ErrClosed
	case <-abort:
		return broker.ErrClosed
	}
}

// current returns the connection as it is now, or nil during an outage.
func (c *connection) current() *amqp.Connection {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.conn
}

// ping checks that the broker answers: it opens and closes a channel.
func (c *connection) ping(ctx context.Context, abort <-chan struct{}) error {
	ac, _, err := c.get(ctx, abort)
	if err != nil {
		return fmt.Errorf("rabbitmq: ping %s: not connected: %w", c.addr(), err)
	}
	// channel.open is an RPC that a blocked connection (resource alarm) does
	// not answer: wait for it under ctx.
	errc := make(chan error, 1)
	go func() {
		ch, err := ac.Channel()
		if err == nil {
			err = ch.Close()
		}
		errc <- err
	}()
	select {
	case err = <-errc:
	case <-ctx.Done():
		err = ctx.Err()
	case <-c.closing:
		err = broker.ErrClosed
	case <-abort:
		err = broker.ErrClosed
	}
	if err != nil {
		return fmt.Errorf("rabbitmq: ping %s: %w", c.addr(), err)
	}
	return nil
}

func (c *connection) close() {
	c.closeOnce.Do(func() { close(c.closing) })
	<-c.done
}

// closingContext returns a context cancelled when close is called.
func (c *connection) closingContext() (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		select {
		case <-c.closing:
			cancel()
		case <-ctx.Done():
		}
	}()
	return ctx, cancel
}
