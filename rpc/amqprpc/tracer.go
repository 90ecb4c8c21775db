package amqprpc

import (
	"context"
	"time"
)

// CallTracer traces the calls of a Client, in the style of pgx's tracers:
// TraceCallStart runs before the request is published and the context it
// returns is the one the call runs in and TraceCallEnd receives.
type CallTracer interface {
	TraceCallStart(ctx context.Context, data TraceCallStartData) context.Context
	TraceCallEnd(ctx context.Context, data TraceCallEndData)
}

// ServeTracer traces the requests a Server handles: TraceServeStart runs
// before the handler, and the context it returns is the handler's;
// TraceServeEnd runs once the reply is published and the request acked (or
// that failed).
type ServeTracer interface {
	TraceServeStart(ctx context.Context, data TraceServeStartData) context.Context
	TraceServeEnd(ctx context.Context, data TraceServeEndData)
}

// ConnectionTracer is told when a Client or a Server connects, loses its
// connection or fails to dial.
type ConnectionTracer interface {
	TraceConnection(ctx context.Context, data TraceConnectionData)
}

// TraceCallStartData describes a call about to be published. Fields may be
// added.
type TraceCallStartData struct {
	// Queue is the request's routing key (the server's queue, on the
	// default exchange).
	Queue         string
	CorrelationID string
	// Header is the request's header as it will be sent (a copy of the
	// caller's, never nil): a tracer may add to it, such as trace context.
	// Keys starting with "x-rpc-" are reserved.
	Header   map[string]string
	BodySize int
}

// TraceCallEndData describes the outcome of a call. Fields may be added.
type TraceCallEndData struct {
	Queue         string
	CorrelationID string
	// Err is the call's error: an *Error from the handler, ErrNoRoute,
	// ErrConnectionLost, ErrClosed, the context's error, ... Nil on success.
	Err       error
	Duration  time.Duration
	ReplySize int
}

// TraceServeStartData describes a request about to be handled. Fields may
// be added.
type TraceServeStartData struct {
	Queue         string
	CorrelationID string
	// Header is the request's header (read it, do not change it): a tracer
	// extracts trace context from it.
	Header      map[string]string
	Redelivered bool
	BodySize    int
}

// TraceServeEndData describes how a request was handled. Fields may be
// added.
type TraceServeEndData struct {
	Queue         string
	CorrelationID string
	// Err is the handler's error (a panic is an *Error with CodePanic), sent
	// back to the caller.
	Err error
	// ReplyErr is the failure to publish the reply (the request goes back to
	// the queue) or to ack the request.
	ReplyErr error
	Duration time.Duration
}

// ConnectionEvent is what happened to a connection.
type ConnectionEvent int

// Connection events.
const (
	// ConnectionUp: a connection (and its channel) is ready.
	ConnectionUp ConnectionEvent = iota
	// ConnectionLost: a working connection dropped.
	ConnectionLost
	// ConnectionDialFailed: dialling (or setting up the channel, queue or
	// consumer) failed.
	ConnectionDialFailed
)

// String returns "up", "lost" or "dial-failed".
func (e ConnectionEvent) String() string {
	switch e {
	case ConnectionUp:
		return "up"
	case ConnectionLost:
		return "lost"
	case ConnectionDialFailed:
		return "dial-failed"
	}
	return "unknown"
}

// TraceConnectionData describes a connection event. Fields may be added.
type TraceConnectionData struct {
	// Role is "client" or "server".
	Role string
	// Queue is a Server's queue ("" for a Client).
	Queue string
	Event ConnectionEvent
	Err   error
	// URL is the node (without password) connected to (ConnectionUp) or
	// whose connection was lost (ConnectionLost); "" for ConnectionDialFailed,
	// whose Err names every node tried (WithNodes).
	URL string
	// Failures counts the failed dials and lost connections in a row,
	// this one included (0 for ConnectionUp).
	Failures int
	// Wait is how long the Client or Server waits before dialling again
	// (the reconnect backoff); 0 for ConnectionUp.
	Wait time.Duration
}
