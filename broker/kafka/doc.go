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
// A Subscriber runs on the module's shared consumer engine (package
// broker/engine): dispatching by key, attempts, dead-lettering, the
// in-flight bound, readiness and draining are the same as on the memory
// broker and RabbitMQ. Subscription.Group is the consumer group; an empty
// Group reads every partition without a group, from the records published
// after Subscribe starts (or from StartAt).
//
// Order is per key: messages of one key run one at a time, in offset order;
// different keys, of one partition too, run concurrently, at most
// Concurrency handlers at once. Message.Payload shares the fetched record's
// bytes (no copy): a handler must not change it in place. Each attempt gets
// a fresh Header map.
//
// Subscription.Keys follow the union rule of every adapter: a group's
// bindings are the union of its members' patterns (a member without Keys
// makes it every key), and any member may receive any message matching the
// union. Records outside it are committed unhandled. The union travels
// through the group protocol: the client's balancer (cooperative-sticky by
// default) is wrapped in a protocol named "patterns-v1+" plus its own name,
// which carries each member's patterns and the union. Consumers of other
// libraries therefore cannot join the same group. A reader without a group
// filters with its own Keys. Subscription.Ready is called once the member
// has its first assignment.
//
// Offsets are committed only for a partition's prefix of records that are
// done (handled, skipped, dead-lettered or dropped): the engine finishes
// records of one partition out of order, and the adapter tracks them. Marks
// are committed every CommitInterval, synchronously when partitions are
// revoked (after the engine handled the records it held of them, up to the
// drain timeout; one waiting for a retry goes to the new owner with its
// key's later records), and when Subscribe returns. A rebalance therefore
// redelivers only records given back; a restart or a crash also those done
// after an undone one of their partition. Delivery is at-least-once.
//
// A failing handler (a panic is a failure, broker.ErrHandlerPanic) is
// retried in place after a full-jitter backoff (WithRetryBackoff),
// Message.Attempt counting the calls from 1; other keys go on, and polling
// never waits for handlers, so the member keeps its partitions. After
// Subscription.MaxAttempts attempts, or at once for a broker.Permanent
// error, the record is published to Subscription.DeadLetterDestination()
// (default "<topic>.dlq") with the broker.DeadLetter headers plus
// broker.HeaderOriginPartition and broker.HeaderOriginOffset, and committed.
// A permanent failure with no dead-letter topic is logged and dropped; a
// dead letter the dead-letter topic refuses as too large is published
// without its payload, with HeaderPayloadDropped saying why.
//
// Memory is bounded by Subscription.MaxInFlight: at most MaxInFlight records
// held by the engine plus one fetch response of at most FetchMaxBytes. The
// consumer client is set to kgo.FetchMaxBytes and kgo.FetchMaxPartitionBytes
// of DefaultFetchMaxBytes and to kgo.MaxConcurrentFetches(1);
// WithClientOptions overrides them. FetchMaxBytes counts bytes on the wire
// (compressed batches grow when decompressed), and a single batch larger
// than it is still fetched.
//
// Where a group without committed offsets starts is set with StartAt:
// Earliest (the default), Latest, AtTime or AtOffsets. Provision creates the
// topics and, for a start other than Earliest, commits the start position for
// the group, so every message published after Provision reaches it.
// Admin.ResetOffsets moves an idle group, for example to replay from a time.
//
// # Consumer health
//
// A record that cannot be processed (a handler that hangs, a message retried
// without end) holds its partition's committed offset while the records
// behind it wait, and nothing fails. For every partition a Subscribe call
// consumes, the Subscriber keeps the offset it commits, the high watermark
// its fetches saw and when the offset last moved; Subscriber.Partitions
// returns them, with the lag, and no I/O. A partition is stuck when it has
// lag and its offset has not moved for longer than WithStuckAfter (default
// 5 min): a periodic check then logs a Warn line and calls the
// PartitionHealthTracers, and again (Info, TracePartitionRecovered) when the
// offset moves or the partition is given up. A consumer that is slow but
// moves is never reported. The check looks end offsets up itself only while
// polling is held up (the engine holds MaxInFlight records).
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
//
// # Options
//
// Options are typed by the side that reads them: NewPublisher takes
// PublisherOptions, NewSubscriber SubscriberOptions, NewAdmin AdminOptions;
// an Option is all three. Invalid arguments fail the constructor with an
// error wrapping ErrInvalidOption.
package kafka
