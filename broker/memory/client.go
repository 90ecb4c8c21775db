package memory

import (
	"context"
	"sync"

	"github.com/go-integration/patterns/broker"
)

// Client is one handle on a Broker, as a connection is on a real server: its
// Close ends only its own Subscribe calls (draining their handlers) and
// refuses its own later publishes, while the Broker and its queues live on.
// Hand a Client to the code under test and keep the Broker in the test.
type Client struct {
	b      *Broker
	ctx    context.Context // cancelled by Close
	cancel context.CancelFunc
	once   sync.Once

	mu      sync.Mutex
	closed  bool
	running sync.WaitGroup
}

// Client returns a new handle on b.
func (b *Broker) Client() *Client {
	ctx, cancel := context.WithCancel(context.Background())
	return &Client{b: b, ctx: ctx, cancel: cancel}
}

// Broker returns the broker c is a handle on.
func (c *Client) Broker() *Broker { return c.b }

// Publish is Broker.Publish, or ErrClosed after c.Close.
func (c *Client) Publish(ctx context.Context, topic string, msgs ...broker.Message) error {
	return c.b.tracedPublish(ctx, c, topic, msgs)
}

func (c *Client) isClosed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closed
}

// Provision is Broker.Provision.
func (c *Client) Provision(ctx context.Context, s broker.Subscription) error {
	return c.b.Provision(ctx, s)
}

// Subscribe is Broker.Subscribe, ended also by c.Close (then it returns ErrClosed).
func (c *Client) Subscribe(ctx context.Context, s broker.Subscription, h broker.Handler) error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return broker.ErrClosed
	}
	c.running.Add(1)
	c.mu.Unlock()
	defer c.running.Done()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(c.ctx, cancel)
	defer stop()
	err := c.b.Subscribe(ctx, s, h)
	if err == nil && c.ctx.Err() != nil {
		return broker.ErrClosed
	}
	return err
}

// Close ends c's subscriptions, waits for their handlers, and makes c's
// Publish return ErrClosed. The Broker stays open. Close is idempotent.
func (c *Client) Close() error {
	c.once.Do(func() {
		c.mu.Lock()
		c.closed = true
		c.mu.Unlock()
		c.cancel()
	})
	c.running.Wait()
	return nil
}

var (
	_ broker.Publisher   = (*Client)(nil)
	_ broker.Subscriber  = (*Client)(nil)
	_ broker.Provisioner = (*Client)(nil)
)
