// Package rabbitmq is the RabbitMQ adapter of package broker, built on
// github.com/rabbitmq/amqp091-go.
//
// The portable model maps to AMQP like this:
//
//   - A topic is a durable topic exchange named like the topic (or, with
//     WithExchange, one shared exchange with the topic as routing-key prefix).
//   - Message.Key is the routing key; Subscription.Keys become bindings
//     (empty means "#").
//   - Subscription.Group is a durable queue named DefaultQueueName(topic,
//     group) (see WithQueueName); members of a group consume the same queue.
//     An empty Group gets a private server-named, exclusive, auto-delete queue.
//   - The dead-letter topic is a topic exchange too. A subscription with one
//     declares it, a durable queue on it for the same group (so subscribing to
//     the dead-letter topic with that group receives the dead letters), and
//     points its queue's native dead-letter exchange at it (messages expired by
//     WithMessageTTL or pushed out by WithMaxLength land there with x-death).
//
// Publisher sends persistent messages with publisher confirms over a small
// pool of channels: Publish returns nil only after the broker acked every
// message. Confirms lost to a connection drop are republished on the next
// connection; a nack is an error. Message ID, key, headers, time, priority and
// the content-type, content-encoding, correlation-id and reply-to headers map
// to AMQP properties and back.
//
// Subscriber runs on broker/engine, the consumer every adapter shares, so
// dispatch, retries and dead-lettering behave exactly as on the memory broker
// and Kafka (docs/broker.md has the table). The channel's prefetch is
// Subscription.InFlight(), so the broker never sends more than the engine may
// hold. A message is acked after its handler returns nil. A failed message
// stays unacked and is retried in place after a full-jitter backoff
// (WithRetryBackoff), ahead of every later message of its key, on classic and
// quorum queues alike. Message.Attempt counts handler calls: the redelivered
// flag and quorum queues' x-delivery-count are not attempts, because RabbitMQ
// also sets them for messages a member received but never handled before a
// graceful Close; set a quorum queue's x-delivery-limit (WithQueueArgs) to
// bound redeliveries after crashes. A retry that outlives the server's
// consumer_timeout (30 minutes by default) closes the channel and the message
// is redelivered. After Subscription.MaxAttempts, or on a broker.Permanent
// error, the message is published to the dead-letter topic with the
// broker.Header* headers and its original headers (x-death included),
// confirmed, and only then acked.
//
// Names are checked before anything is sent: exchange, queue and routing key
// at most 255 bytes of UTF-8, and no declared name starting with "amq."; a
// bad one fails Publish with broker.ErrInvalidMessage and Subscribe or
// Provision with broker.ErrInvalidSubscription, without touching the
// connection.
//
// Both reconnect on their own with backoff: the subscriber redeclares its
// exchange, queue and bindings (a new server-named queue for private
// subscriptions) and resumes; it also recovers when its queue is deleted
// under it. Reconnection is done here rather than with amqp091-go's
// opt-in Recovery so that confirms, consumers and topology are handled in one
// place with this package's promises.
//
// In a cluster, WithNodes adds the other nodes' URLs: a lost connection is
// replaced by one to the next node that answers (each node tried once per
// round, rounds separated by the reconnect backoff), where the subscriber
// declares its topology again. Give groups quorum queues
// (WithQueueType(Quorum)) so their queues outlive a node; docs/rabbitmq.md,
// "Clusters", says what else changes with them.
//
// Options are typed per side: PublisherOption, SubscriberOption, and Option
// for both, so a subscriber's option passed to NewPublisher does not compile;
// invalid values fail the constructor with ErrInvalidOption.
//
// Escape hatches: Publisher.Conn and Subscriber.Conn return the current
// *amqp091.Connection; Message.Raw is the *amqp091.Delivery on delivery;
// WithQueueArgs passes raw queue arguments.
package rabbitmq
