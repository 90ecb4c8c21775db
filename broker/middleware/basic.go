package middleware

import (
	"context"
	"fmt"
	"runtime/debug"
	"time"

	"github.com/go-integration/patterns/broker"
)

// ErrPanic is broker.ErrHandlerPanic: every adapter and Recover report a
// panicking handler with the same error value.
var ErrPanic = broker.ErrHandlerPanic

// PanicError is broker.PanicError, the error Recover returns.
type PanicError = broker.PanicError

// Recover turns a panic in the handler into a *broker.PanicError, as every
// adapter does on its own; use it where a panic must be caught inside other
// middleware (for example before Dedup records a result).
func Recover() broker.Middleware {
	return func(next broker.Handler) broker.Handler {
		return func(ctx context.Context, m broker.Message) (err error) {
			defer func() {
				if r := recover(); r != nil {
					err = &PanicError{Value: r, Stack: debug.Stack()}
				}
			}()
			return next(ctx, m)
		}
	}
}

// Timeout gives each call of the handler its own deadline d, derived from the
// context it was called with. Inside Retry every attempt gets a fresh d.
// d must be positive; otherwise Timeout fails with an error wrapping
// ErrInvalidOption, as every middleware constructor with arguments does.
func Timeout(d time.Duration) (broker.Middleware, error) {
	if d <= 0 {
		return nil, fmt.Errorf("%w: Timeout(%v): must be positive", ErrInvalidOption, d)
	}
	return func(next broker.Handler) broker.Handler {
		return func(ctx context.Context, m broker.Message) error {
			ctx, cancel := context.WithTimeout(ctx, d)
			defer cancel()
			return next(ctx, m)
		}
	}, nil
}
