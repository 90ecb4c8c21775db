// Package memory is an in-process message broker with the same semantics as
// the RabbitMQ and Kafka adapters: a real broker, not a mock, for tests and
// for programs that run in a single process. Nothing survives the process.
//
// A [Broker] is a [broker.Publisher], [broker.Subscriber] and
// [broker.Provisioner] in one value. Each group of a topic is a queue, as on a
// RabbitMQ topic exchange: every group gets every message, and the members of
// a group (Subscribe calls with the same Topic and Group) compete for its
// messages. A subscription without a Group gets a private group that ends
// with its Subscribe call. A group's Keys are routing-key patterns (see
// [broker.Match]); its binding is the union of the patterns its members
// subscribed with. [Broker.Provision] creates a group before anyone
// subscribes, so nothing published in between is lost; messages published to
// a topic without groups are dropped, as by an exchange without bindings.
//
// Delivery is at-least-once: a handler error or panic redelivers the message
// with Attempt counting up. Order is kept per key, also with Concurrency > 1,
// and priority 0-9 is honoured (higher first). After MaxAttempts, or on a
// [broker.Permanent] error, a message goes to the subscription's dead-letter
// topic ([broker.Subscription.DeadLetterDestination]) with the broker's
// dead-letter headers ([broker.HeaderOriginTopic] and the others), and is
// kept there in a group named after the failing subscription's group ("dlq"
// without one), so no dead letter is dropped before anyone subscribes to that
// topic.
//
// [Broker.Client] returns a [Client], a handle that behaves like a connection
// to a real server: its Close ends only its own subscriptions and publishes,
// while the Broker and its queues live on. Hand a Client to the code under
// test and keep the Broker in the test.
//
// The portable API is package [github.com/go-integration/patterns/broker];
// the Broker passes its conformance suite,
// [github.com/go-integration/patterns/broker/brokertest], as every adapter does.
package memory
