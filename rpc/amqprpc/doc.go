// Package amqprpc is request-reply over RabbitMQ, with amqp091-go.
//
// A Client publishes each request to the server's queue with a correlation
// id and reply_to set to amq.rabbitmq.reply-to (direct reply-to: the client
// consumes that pseudo-queue in no-ack mode on the channel it publishes on,
// so no reply queue is declared), then waits for the reply under the call's
// context. Many concurrent callers share one connection and one channel.
// Requests are published with the mandatory flag (no queue: ErrNoRoute at
// once) and expire in the queue at the caller's deadline. Replies for calls
// that gave up are dropped. When the connection drops, every call in flight
// fails with ErrConnectionLost (none hangs) and the next call reconnects.
//
// A Server consumes the request queue with a Handler and a concurrency
// limit, publishes each reply with the request's correlation id, and acks
// the request after replying; a server that dies mid-request leaves the
// request to be redelivered. Handler errors travel back as *Error values
// with a code, so callers test them with errors.Is or errors.As instead of
// waiting for a timeout.
//
// A Server runs in the caller's goroutine: Run(ctx) serves until ctx ends
// (nil) or Close (ErrClosed); Close lets running handlers reply for at most
// the drain timeout (WithDrainTimeout, 30s by default). Both sides reconnect
// with exponential backoff and full jitter (WithReconnectBackoff); in a
// cluster, WithNodes lists the other nodes, each tried once before the
// backoff, and WithQuorumQueue makes the request queue outlive its node.
// NewClient takes a context: it connects. Options are typed (ClientOption,
// ServerOption; an Option is both) and a bad one fails the constructor with
// ErrInvalidOption. Tracers (WithTracer) see every call (CallTracer: routing
// key, correlation id, headers to inject trace context into), every request
// served (ServeTracer) and connection events (ConnectionTracer); Stats
// returns counters.
//
// Delivery is at-least-once: a handler may run twice for one request (a
// server crashed after running it but before acking). Make handlers
// idempotent, for example by keying their effects on a request id.
//
// # Wire format
//
// Clients in other languages can call a Server (docs/rpc.md has the full
// description and a Python sketch):
//
//   - Request: publish to the default exchange "" with the queue name as the
//     routing key and the mandatory flag set. Properties: correlation_id (any
//     string unique among the caller's waiting calls), reply_to
//     "amq.rabbitmq.reply-to" (consume that pseudo-queue with no-ack on the same
//     channel before publishing), expiration (milliseconds left, a decimal
//     string), content_type (optional). Header x-rpc-deadline: the caller's
//     deadline in Unix milliseconds, a 64-bit integer (or a decimal string).
//     message_id, delivery_mode and priority are not used.
//   - Reply: published to the default exchange with the request's reply_to as
//     the routing key and its correlation_id. A success carries the handler's
//     body, content_type and headers. An error has an empty body and the string
//     headers x-rpc-error-code (the Error's Code, CodeInternal or CodePanic) and
//     x-rpc-error (its Message); a reply is an error exactly when
//     x-rpc-error-code is present.
//   - Headers: other headers travel both ways as the Message's Header (values
//     that are not strings arrive as text). The prefix "x-rpc-" is reserved:
//     such headers never reach a handler or a caller's Header.
//   - A request delivered at or after its x-rpc-deadline is acked and dropped
//     without running the handler or replying. A handler's panic is answered
//     as an error with code CodePanic, and the request is acked. A request
//     without reply_to runs but gets no reply. A request to a queue that does
//     not exist comes back as basic.return (312 NO_ROUTE), which Client.Call
//     reports as ErrNoRoute.
package amqprpc
