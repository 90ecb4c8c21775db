// Package kafka is the Kafka adapter of package broker, built on franz-go
// (github.com/twmb/franz-go: kgo for clients, kadm for administration).
//
// # Publishing
//
// A Publisher maps a Message to a record: Key to the record key (Kafka's
// default murmur2 partitioner, the same as Java clients', keeps one key on
// one partition), Header to record headers (plus HeaderMessageID for the ID),
// Time to the record timestamp (millisecond precision) and a nil Payload to a
// null value, a tombstone on compacted topics. The producer is idempotent
// with acks=all; Publish returns nil only when every record of the call is
// acknowledged. Concurrent Publish calls share produce requests, and
// PublishAsync reports each acknowledgement to a callback.
//
// # Subscribing
//
// Subscription.Group is the consumer group; an empty Group reads every
// partition without a group, from the records published after Subscribe
// starts (or from StartAt). Each assigned partition has a worker that
// handles its records in offset order, so order per key holds; different
// partitions run in parallel, at most Concurrency handlers at once.
// Subscription.Keys filter on the record key with broker's pattern matcher
// on the client; skipped records are committed. Message.Payload shares the
// fetched record's bytes (no copy): a handler must not change it in place,
// or a retry and the dead letter see the change; each attempt gets a fresh
// Header map.
//
// Offsets are committed only after the handler returned nil (or the record
// was skipped or dead-lettered): in the background every CommitInterval,
// synchronously when partitions are revoked (after their running handlers
// finished), and when Subscribe returns. A rebalance therefore replays at most
// the records that were buffered but not yet handled by the member that lost
// the partition. Delivery is at-least-once.
//
// A failing handler is retried with exponential Backoff, Message.Attempt
// counting from 1; fetching of a partition pauses while its buffer is full,
// so the group stays alive during backoff. After Subscription.MaxAttempts
// attempts, or at once for a broker.Permanent error, the record is published
// to Subscription.DeadLetterDestination() (default "<topic>.dlq") with the
// broker.DeadLetter headers plus broker.HeaderOriginPartition and
// broker.HeaderOriginOffset, committed, and the partition moves on. A
// permanent failure with no dead-letter topic is logged and dropped; a dead
// letter the dead-letter topic refuses as too large is published without its
// payload, with HeaderPayloadDropped saying why.
//
// Where a group without committed offsets starts is set with StartAt:
// Earliest (the default), Latest, AtTime or AtOffsets. Provision creates the
// topics and, for a start other than Earliest, commits the start position for
// the group, so every message published after Provision reaches it.
// Admin.ResetOffsets moves an idle group, for example to replay from a time.
//
// # Topics
//
// Publish and Subscribe fail with ErrUnknownTopic on a missing topic unless
// the CreateTopics option is set; Provision and Admin.EnsureTopic create
// topics with partitions, replication factor, retention and cleanup policy.
//
// # Escape hatches
//
// Publisher.Client, Subscriber.Client and Admin.Client return the underlying
// *kgo.Client; Message.Raw is the *kgo.Record a message came from;
// WithClientOptions passes any kgo option (TLS, SASL...).
package kafka
