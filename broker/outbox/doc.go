// Package outbox is a transactional outbox in PostgreSQL (pgx v5) with a relay
// that publishes through any broker.Publisher.
//
// A service that writes to its database and then publishes an event loses the
// event when it crashes in between, and publishes an event for a write that
// rolled back when it publishes first. With the outbox it writes the event in
// the same transaction as the business data (Add); a Relay publishes committed
// rows afterwards and marks them published only once the publisher confirmed
// them. Delivery is at-least-once: consumers deduplicate on Message.ID, which
// Add fixes before the row is written.
//
// Order is kept per key: every key hashes to one of Buckets buckets, and a
// relay publishes a bucket only while it holds that bucket's advisory lock
// (pg_try_advisory_xact_lock), in seq order, one batch per transaction.
// Several relays, in one process or many, therefore share the work without
// ever publishing one key's messages out of order. Relays wake on
// LISTEN/NOTIFY (Add notifies on commit) and poll as a fallback; they back off
// while the broker or the database is down, and delete published rows after
// a retention period. A batch reads pending rows through a range scan of the
// partial (bucket, seq) index whatever the planner statistics say, so a
// large backlog drains at about the rate of a small one.
//
// NewRelay takes the pool, the publisher and options (WithBatchSize,
// WithTracer, ...); Run works until its context ends or Close, which lets
// the batch in flight finish. Stats returns the relay's counters without
// I/O, Backlog what waits in the table. Tracers (BatchTracer, BackoffTracer)
// see every batch and every backoff. A Table built with
// NewTable(name, WithTracer(t)) calls its AddTracers around each Add, and
// stores the headers they add (a request's trace context) in the rows, so
// the relay's publish continues the request's trace; the package-level Add
// traces nothing. See docs/outbox.md for the design and its reasons.
//
// Given a TxPublisher (kafka.TxPublisher) instead of a plain publisher, the
// relay publishes exactly once for consumers that read committed records
// only: each batch is one Kafka transaction that also writes, per bucket, a
// checkpoint naming the rows it publishes (as Kafka Connect's exactly-once
// source connectors do, KIP-618); before publishing a bucket the relay
// reads its checkpoint, and rows it names that are still pending (a relay
// died after Kafka's commit and before PostgreSQL's) are marked without
// being published again. See docs/kafka-transactions.md.
package outbox
