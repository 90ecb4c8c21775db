// Package broker defines the portable messaging API of this module: a Message,
// a Publisher and a Subscriber, Handlers and Middleware, and routing-key
// patterns with RabbitMQ topic semantics.
//
// Adapters live in sub-packages and never leak into this one:
// broker/memory (in-memory, for tests and single processes), broker/rabbitmq
// (amqp091-go) and broker/kafka (franz-go). Every adapter passes the
// conformance suite in broker/brokertest. Handler middleware (retry,
// dead-letter, recover, timeout, dedup) lives in broker/middleware.
//
// Tracing follows the module's one hook model (pgx's tracers): every
// adapter's WithTracer option takes values implementing PublishTracer,
// ProcessTracer and DeadLetterTracer, called around each Publish call and
// each handler call, and every adapter's Stats reports PublisherStats and
// SubscriberStats with one meaning.
//
// Delivery is at-least-once everywhere: a handler may see a message twice,
// but a message whose Publish returned nil is never lost. Order is kept per
// key while different keys are handled concurrently.
package broker
