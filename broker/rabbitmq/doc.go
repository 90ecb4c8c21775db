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
// Subscriber acks after the handler returns nil. Concurrency handlers run at
// once with order kept per key (messages are assigned to handlers by key);
// the prefetch is 16 per handler unless WithPrefetch says otherwise. A failed
// message is handed back for another attempt: classic queues ack it and
// republish a copy carrying the attempt count (to the tail of the queue, or
// through a TTL retry queue with WithRetryDelay); quorum queues requeue it and
// count attempts with the server's x-delivery-count. Message.Attempt adds one
// for a redelivery after a lost consumer. After Subscription.MaxAttempts, or
// on a broker.Permanent error, the message is published to the dead-letter
// topic with the broker.Header* headers and its original headers (x-death
// included), confirmed, and only then acked.
//
// Both reconnect on their own with backoff: the subscriber redeclares its
// exchange, queue and bindings (a new server-named queue for private
// subscriptions) and resumes; it also recovers when its queue is deleted
// under it. Reconnection is done here rather than with amqp091-go's
// opt-in Recovery so that confirms, consumers and topology are handled in one
// place with this package's promises.
//
// Escape hatches: Publisher.Conn and Subscriber.Conn return the current
// *amqp091.Connection; Message.Raw is the *amqp091.Delivery on delivery;
// WithQueueArgs passes raw queue arguments.
package rabbitmq
