package rabbitmq

import (
	"context"
	"errors"
	"fmt"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/go-integration/patterns/internal/amqpnodes"
)

// dialAny tries every node once, from node start (modulo their number) on,
// and returns the first connection made with its node's index. With one
// node its error is that node's; with several it names every node's
// failure. It stops early when ctx ends.
func (c *connection) dialAny(ctx context.Context, start int) (*amqp.Connection, int, error) {
	ac, i, errs := amqpnodes.DialAny(ctx, len(c.urls), start, func(i int) (*amqp.Connection, error) {
		return c.dialNode(ctx, i)
	})
	switch {
	case errs == nil:
		return ac, i, nil
	case len(c.urls) == 1:
		return nil, 0, errs[0]
	}
	return nil, 0, fmt.Errorf("rabbitmq: no node of %d answered: %w", len(c.urls), errors.Join(errs...))
}

// addr is the address (without password) of the node connected to, or of
// the last one while reconnecting.
func (c *connection) addr() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.redacted[c.node]
}
