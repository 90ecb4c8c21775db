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
		if !IsTransport(err) || !ConnectionLost(err) {
			t.Errorf("IsTransport(%v) = %v, ConnectionLost = %v", err, IsTransport(err), ConnectionLost(err))
		}
	}
	for _, err := range []error{errors.New("nacked"), &amqp.Error{Code: amqp.NotFound, Reason: "no exchange"},
		&amqp.Error{Code: amqp.PreconditionFailed, Reason: "message size"}} {
		if IsTransport(err) || ConnectionLost(err) {
			t.Errorf("IsTransport(%v) = %v, ConnectionLost = %v", err, IsTransport(err), ConnectionLost(err))
		}
	}
	for _, err := range []error{amqp.ErrClosed, fmt.Errorf("publish: %w", amqp.ErrClosed)} {
		if !IsClosed(err) || !ConnectionLost(err) {
			t.Errorf("IsClosed(%v) = %v, ConnectionLost = %v", err, IsClosed(err), ConnectionLost(err))
		}
	}
}
