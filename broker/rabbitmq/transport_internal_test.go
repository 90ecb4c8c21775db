package rabbitmq

import (
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"
	"testing"

	amqp "github.com/rabbitmq/amqp091-go"
)

// A failed socket write comes back from amqp091 before it marks the
// connection closed; the publisher must take it for a lost connection and
// republish, not fail the Publish (TestFaultBrokerRestart caught this).
func TestTransportErrorsMeanAConnectionLost(t *testing.T) {
	reset := &net.OpError{Op: "write", Net: "tcp", Err: syscall.ECONNRESET}
	for _, err := range []error{reset, fmt.Errorf("wrapped: %w", reset), io.EOF, syscall.EPIPE,
		&amqp.Error{Code: amqp.FrameError, Reason: "write: broken pipe"}} {
		if !isTransportError(err) {
			t.Errorf("isTransportError(%v) = false", err)
		}
	}
	for _, err := range []error{errors.New("nacked"), &amqp.Error{Code: amqp.NotFound, Reason: "no exchange"},
		&amqp.Error{Code: amqp.PreconditionFailed, Reason: "message size"}} {
		if isTransportError(err) {
			t.Errorf("isTransportError(%v) = true", err)
		}
	}
}
