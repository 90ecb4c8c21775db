package amqpnodes

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
// connection closed: broker/rabbitmq's publisher must take it for a lost
// connection and republish (TestFaultBrokerRestart caught this), and an
// amqprpc call must fail with ErrConnectionLost (TestFaultClusterRPC).
func TestTransportErrorsMeanAConnectionLost(t *testing.T) {
	reset := &net.OpError{Op: "write", Net: "tcp", Err: syscall.ECONNRESET}
	for _, err := range []error{reset, fmt.Errorf("wrapped: %w", reset), io.EOF, syscall.EPIPE,
		&amqp.Error{Code: amqp.FrameError, Reason: "write: broken pipe"}} {
		if !isTransport(err) || !ConnectionLost(err) {
			t.Errorf("isTransport(%v) = %v, ConnectionLost = %v", err, isTransport(err), ConnectionLost(err))
		}
	}
	for _, err := range []error{errors.New("nacked"), &amqp.Error{Code: amqp.NotFound, Reason: "no exchange"},
		&amqp.Error{Code: amqp.PreconditionFailed, Reason: "message size"}} {
		if isTransport(err) || ConnectionLost(err) {
			t.Errorf("isTransport(%v) = %v, ConnectionLost = %v", err, isTransport(err), ConnectionLost(err))
		}
	}
	for _, err := range []error{amqp.ErrClosed, fmt.Errorf("publish: %w", amqp.ErrClosed)} {
		if !isClosed(err) || !ConnectionLost(err) {
			t.Errorf("isClosed(%v) = %v, ConnectionLost = %v", err, isClosed(err), ConnectionLost(err))
		}
	}
}
