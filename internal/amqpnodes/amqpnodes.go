// Package amqpnodes is what broker/rabbitmq and rpc/amqprpc share about
// the nodes of a RabbitMQ cluster: trying them in turn, naming them in
// errors without their passwords, and telling a lost connection from an
// error of the call.
package amqpnodes

import (
	"context"
	"errors"
	"io"
	"net"
	"syscall"

	amqp "github.com/rabbitmq/amqp091-go"
)

// isClosed reports amqp091's "channel/connection is not open" (ErrClosed
// or any 504 channel error).
func isClosed(err error) bool {
	var ae *amqp.Error
	return errors.As(err, &ae) && ae.Code == amqp.ChannelError
}

// isTransport reports a failed socket write or read (a reset, a broken
// pipe, EOF) or amqp091's frame error for one. amqp091 shuts the connection
// down only after returning such an error, so IsClosed on the connection
// may still say false: callers must take it for a lost connection.
func isTransport(err error) bool {
	var ne net.Error
	var ae *amqp.Error
	return errors.As(err, &ne) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) ||
		(errors.As(err, &ae) && (ae.Code == amqp.FrameError || ae.Code == amqp.ConnectionForced))
}

// ConnectionLost reports whether err from a publish, ack or declare means
// the channel or its connection is gone (isClosed or isTransport), as
// opposed to the server refusing this one call.
func ConnectionLost(err error) bool {
	return isClosed(err) || isTransport(err)
}

// Redact returns the AMQP URL raw with its password hidden, for logs and
// errors; "<invalid URL>" when it does not parse.
func Redact(raw string) string {
	u, err := amqp.ParseURI(raw)
	if err != nil {
		return "<invalid URL>"
	}
	if u.Password != "" {
		u.Password = "xxxxx"
	}
	return u.String()
}

// DialAny calls dial for each of n nodes once, from node start (modulo n)
// on, and returns the first connection made with its node's index. It
// stops early once ctx ends. Otherwise it returns the attempts' errors in
// the order they were made: the caller words them (with one node, the
// error as it is; with several, each node's).
func DialAny[C any](ctx context.Context, n, start int, dial func(i int) (C, error)) (C, int, []error) {
	var errs []error
	for k := range n {
		i := (start + k) % n
		c, err := dial(i)
		if err == nil {
			return c, i, nil
		}
		errs = append(errs, err)
		if ctx.Err() != nil {
			break
		}
	}
	var zero C
	return zero, 0, errs
}
