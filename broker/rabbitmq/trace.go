package rabbitmq

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/go-integration/patterns/broker"
	"github.com/go-integration/patterns/broker/internal/tracing"
	"github.com/go-integration/patterns/internal/hooks"
)

// ConnectionTracer is told of what happens to a Publisher's or a
// Subscriber's connections (and their consumers): install it with
// WithTracer, alone or on a value that also implements the broker tracers
// (broker.PublishTracer, broker.ProcessTracer, broker.DeadLetterTracer).
// It is called synchronously, from the adapter's connection goroutines
// (except for ConnectionConnected, called by the constructor with its
// context), and must not block.
type ConnectionTracer interface {
	TraceConnection(ctx context.Context, data TraceConnectionData)
}

// ConnectionEvent says what a TraceConnection call reports.
type ConnectionEvent int

// Connection events.
const (
	// ConnectionConnected: the first connection was made (by the
	// constructor, or by a Subscriber dialing its dead-letter connection).
	ConnectionConnected ConnectionEvent = iota + 1
	// ConnectionLost: the connection dropped (Err says why); the adapter
	// reconnects.
	ConnectionLost
	// ConnectionReconnecting: a reconnect attempt failed (Err); the next
	// one is made after Wait. Attempt counts the failed attempts since the
	// connection was lost; with WithNodes an attempt tries every node once
	// and Err names each one's failure.
	ConnectionReconnecting
	// ConnectionReconnected: the connection was made again; publishers
	// republish what was not confirmed, subscriptions redeclare their
	// queues and resume.
	ConnectionReconnected
	// ConnectionBlocked: the broker blocks publishing on the connection (a
	// resource alarm; Err carries its reason). Publish waits.
	ConnectionBlocked
	// ConnectionUnblocked: the broker lifted the block.
	ConnectionUnblocked
	// ConsumerCancelled: the server cancelled the consumer of Queue (the
	// queue was deleted, or in a cluster a quorum queue's leader moved);
	// the subscription declares it again and resumes.
	ConsumerCancelled
)

var connectionEventNames = [...]string{"", "connected", "connection-lost", "reconnecting", "reconnected", "blocked", "unblocked", "consumer-cancelled"}

// String returns the event's name, such as "connection-lost".
func (e ConnectionEvent) String() string {
	if e > 0 && int(e) < len(connectionEventNames) {
		return connectionEventNames[e]
	}
	return "unknown"
}

// TraceConnectionData describes a connection event. Fields that do not
// apply are zero.
type TraceConnectionData struct {
	Event ConnectionEvent
	// Name is the connection's name (WithConnectionName; a Subscriber's
	// dead-letter connection adds " (retries)"), URL the address without
	// the password of the node connected to (with WithNodes, the node
	// lost until another one answers).
	Name, URL string
	// Err is why the connection was lost, why a reconnect attempt
	// failed, why the broker blocked, why a consumer was cancelled.
	Err error
	// Attempt and Wait: see ConnectionReconnecting.
	Attempt int
	Wait    time.Duration
	// Queue: see ConsumerCancelled.
	Queue string
}

// tracerNames lists what WithTracer accepts, for its error.
const tracerNames = "rabbitmq.ConnectionTracer"

func checkTracer(t any) error { return tracing.Check(t, tracerNames, hooks.Is[ConnectionTracer]()) }

// PublisherStats are a Publisher's counters since NewPublisher: the
// counters every adapter has, and RabbitMQ's own.
type PublisherStats struct {
	broker.PublisherStats
	// Sent counts messages written to a channel, republished ones
	// included (before their confirm).
	Sent uint64
	// Republished counts messages sent again after their confirm was
	// lost with a channel or connection, or after a channel error.
	Republished uint64
	// Nacked counts messages the broker refused (nack).
	Nacked uint64
	// Returned counts mandatory messages returned unroutable (WithMandatory).
	Returned uint64
	// Connects, Disconnects and Reconnects count connection events.
	Connects, Disconnects, Reconnects uint64
}

// SubscriberStats are a Subscriber's counters since NewSubscriber: the
// counters every adapter has, and RabbitMQ's own.
type SubscriberStats struct {
	broker.SubscriberStats
	// ConsumerCancels counts consumers the server cancelled (queue deleted).
	ConsumerCancels uint64
	// Connects, Disconnects and Reconnects count connection events, of
	// the dead-letter connection too.
	Connects, Disconnects, Reconnects uint64
}

// observer counts a Publisher's or Subscriber's events and passes
// connection events to its ConnectionTracers.
type observer struct {
	conn                                []ConnectionTracer
	connects, disconnects, reconnects   atomic.Uint64
	sent, republished, nacked, returned atomic.Uint64
	consumerCancels                     atomic.Uint64
}

func newObserver(tracers []any) *observer {
	return &observer{conn: hooks.Pick[ConnectionTracer](tracers)}
}

// connection counts e and passes it to the tracers.
func (o *observer) connection(ctx context.Context, c *connection, d TraceConnectionData) {
	switch d.Event {
	case ConnectionConnected:
		o.connects.Add(1)
	case ConnectionLost:
		o.disconnects.Add(1)
	case ConnectionReconnected:
		o.reconnects.Add(1)
	case ConsumerCancelled:
		o.consumerCancels.Add(1)
	}
	if len(o.conn) == 0 {
		return
	}
	if c != nil {
		d.Name, d.URL = c.cfg.name, c.addr()
	}
	for _, t := range o.conn {
		t.TraceConnection(ctx, d)
	}
}
