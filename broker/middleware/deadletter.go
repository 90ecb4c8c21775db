package middleware

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/go-integration/patterns/broker"
)

// HeaderDeliveries is added by DeadLetter: how often the broker delivered the
// message (broker.HeaderAttempts counts the handler calls of the last delivery,
// retries by Retry included).
const HeaderDeliveries = "x-deliveries"

// DeadLetter publishes a message whose handler failed to topic through pub,
// with the broker.Header* dead-letter headers (origin topic, key, group,
// error, attempts, time), and then acknowledges it. If the publish fails the
// handler's error is returned (joined with the publish error), so the broker
// keeps the message and redelivers it: nothing is lost. Nor is a message
// dead-lettered when the handler's context is done (the subscription is
// stopping): the error is returned for the broker to redeliver it.
//
// Put it outside Retry so only messages that exhausted their retries are
// dead-lettered. pub is the caller's: DeadLetter never closes it.
//
// pub and topic are required: a nil pub or an empty topic is an error
// wrapping ErrInvalidOption.
func DeadLetter(pub broker.Publisher, topic, group string) (broker.Middleware, error) {
	switch {
	case pub == nil:
		return nil, fmt.Errorf("%w: DeadLetter: nil Publisher", ErrInvalidOption)
	case topic == "":
		return nil, fmt.Errorf("%w: DeadLetter: empty topic", ErrInvalidOption)
	}
	return func(next broker.Handler) broker.Handler {
		return func(ctx context.Context, m broker.Message) error {
			err := next(ctx, m)
			if err == nil {
				return nil
			}
			if ctx.Err() != nil {
				// The subscription is stopping: the failure says nothing
				// about the message, so the broker keeps it for redelivery.
				return err
			}
			dl := broker.DeadLetter(m, group, err, time.Now())
			dl.Header[broker.HeaderAttempts] = fmt.Sprint(attempts(m, err))
			dl.Header[HeaderDeliveries] = fmt.Sprint(max(m.Attempt, 1))
			if perr := pub.Publish(ctx, topic, dl); perr != nil {
				return errors.Join(err, fmt.Errorf("dead-letter to %s: %w", topic, perr))
			}
			return nil
		}
	}, nil
}
