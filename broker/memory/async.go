package memory

import (
	"context"

	"github.com/go-integration/patterns/broker"
)

var (
	_ broker.AsyncPublisher = (*Broker)(nil)
	_ broker.AsyncPublisher = (*Client)(nil)
)

// PublishAsync is Publish of one message with its outcome handed to done
// (see broker.AsyncPublisher). A memory publish completes at once, so done
// runs on the calling goroutine before PublishAsync returns; there is
// nothing in flight and no backpressure.
func (b *Broker) PublishAsync(ctx context.Context, topic string, m broker.Message, done func(broker.Message, error)) {
	b.publishAsync(ctx, nil, topic, m, done)
}

// Flush returns at once: every PublishAsync call has had its outcome
// before returning. It returns ctx's error if ctx has ended.
func (b *Broker) Flush(ctx context.Context) error { return ctx.Err() }

// PublishAsync is Broker.PublishAsync, failing with ErrClosed after c.Close.
func (c *Client) PublishAsync(ctx context.Context, topic string, m broker.Message, done func(broker.Message, error)) {
	c.b.publishAsync(ctx, c, topic, m, done)
}

// Flush is Broker.Flush.
func (c *Client) Flush(ctx context.Context) error { return ctx.Err() }

func (b *Broker) publishAsync(ctx context.Context, c *Client, topic string, m broker.Message, done func(broker.Message, error)) {
	// An array, not a slice literal: the message stays on the stack when
	// nothing keeps it.
	ms := [1]broker.Message{m}
	err := b.tracedPublish(ctx, c, topic, ms[:])
	if done != nil {
		done(ms[0], err)
	}
}
