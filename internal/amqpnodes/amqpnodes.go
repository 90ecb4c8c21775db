// Package amqpnodes is what broker/rabbitmq and rpc/amqprpc share about
// the nodes of a RabbitMQ cluster: trying them in turn, and naming them in
// errors without their passwords.
package amqpnodes

import (
	"context"

	amqp "github.com/rabbitmq/amqp091-go"
)

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
