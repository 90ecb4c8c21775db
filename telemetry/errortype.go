package telemetry

import (
	"context"
	"errors"
	"net"
)

// The error.type vocabulary every tracer of this package shares. Each
// component's error-type function asks commonErrorType first, so that one
// dashboard query finds the timeouts of every component:
//
//   - "timeout": context.DeadlineExceeded, or a net.Error whose Timeout()
//     is true (os.ErrDeadlineExceeded among them), anywhere in the chain;
//   - "canceled": context.Canceled.
//
// Then each component names its own errors (closed, circuit_open,
// not_confirmed, a PostgreSQL SQLSTATE, an amqprpc.Error's Code, ...; see
// docs/telemetry.md), and what none names is the Go type of the error or
// "_OTHER".
const (
	errTypeTimeout  = "timeout"
	errTypeCanceled = "canceled"
)

// commonErrorType returns the error.type shared by every component for
// err, or "" when err is none of them.
func commonErrorType(err error) string {
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return errTypeTimeout
	case errors.Is(err, context.Canceled):
		return errTypeCanceled
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return errTypeTimeout
	}
	return ""
}
