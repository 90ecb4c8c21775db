package middleware

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"time"

	"github.com/go-integration/patterns/broker"
)

// ErrPanic wraps a handler's panic turned into an error by Recover.
var ErrPanic = errors.New("handler panicked")

// PanicError is the error Recover returns: the panic value and the stack.
type PanicError struct {
	Value any
	Stack []byte
}

func (e *PanicError) Error() string { return fmt.Sprintf("%v: %v", ErrPanic, e.Value) }

// Unwrap makes errors.Is(err, ErrPanic) true.
func (e *PanicError) Unwrap() error { return ErrPanic }

// Recover turns a panic in the handler into a *PanicError, so the message is
// redelivered (or dead-lettered) instead of the process dying.
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
func Timeout(d time.Duration) broker.Middleware {
	return func(next broker.Handler) broker.Handler {
		return func(ctx context.Context, m broker.Message) error {
			ctx, cancel := context.WithTimeout(ctx, d)
			defer cancel()
			return next(ctx, m)
		}
	}
}
