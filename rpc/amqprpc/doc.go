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
// Delivery is at-least-once: a handler may run twice for one request (a
// server crashed after running it but before acking). Make handlers
// idempotent, for example by keying their effects on a request id.
package amqprpc
