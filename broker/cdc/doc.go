// Package cdc captures the changes of PostgreSQL tables (change data
// capture) from a logical replication slot and publishes each one to any
// broker.Publisher (memory, RabbitMQ, Kafka) as a Debezium-compatible JSON
// event, with nothing lost: a team can stream a monolith's tables to the
// broker it already has without changing the monolith, and without running
// Debezium and Kafka Connect.
//
// # What it reads
//
// New checks the server and the publication; Run creates the slot (plugin
// pgoutput, protocol version 1) when missing, publishes an initial snapshot
// of the tables (op "r") and then streams every committed insert (op "c"),
// update ("u"), delete ("d") and truncate ("t") of the publication's
// tables, transaction after transaction in commit order. Rolled-back
// transactions are never sent by PostgreSQL. The server needs wal_level =
// logical, the role the REPLICATION attribute (or superuser), a
// publication (CREATE PUBLICATION ... FOR TABLE ..., or WithTables to let
// New create it), and every published table a primary key or a replica
// identity (ALTER TABLE ... REPLICA IDENTITY FULL).
//
// # Messages
//
// Each change is one broker.Message:
//
//   - Topic: prefix.schema.table (Debezium's naming; WithTopicPrefix).
//
//   - Key: schema.table.pk1[.pk2...], the primary-key values in key order,
//     so every change of a row has the same key and keeps its order on every
//     broker (Kafka partitions by key, RabbitMQ routes by it, the memory
//     broker orders per key). Each part is one routing-key word: ".", "%",
//     "*", "#", "~", spaces and control characters in a value are
//     percent-encoded (a key "a.b" is written "a%2Eb"), a NULL key column is
//     "~null", and a key longer than 120 bytes becomes schema.table.~ and 32
//     hex digits of its SHA-256 (so that, with schema and table names of
//     usual length, it fits AMQP's 255 bytes even behind the topic, which
//     broker/rabbitmq's shared exchange prepends). A table identified only by REPLICA IDENTITY FULL has no key
//     columns: its key is schema.table, one order for the whole table. A
//     truncate's key is schema.table too: on Kafka it is ordered with
//     neither the rows before nor those after it, as in Debezium.
//
//   - ID: ChangeID, the transaction's commit LSN and the change's ordinal in
//     the transaction, the same every time the change is read from the
//     slot: a consumer drops a replayed change by its ID. Snapshot rows have
//     SnapshotID, from the snapshot's LSN and the row's key.
//
//   - Header: HeaderLSN (commit LSN, known at BEGIN: a large transaction's
//     first changes are published before its commit is read), HeaderTxID,
//     HeaderOp, HeaderTable; an update that changed the primary key is
//     published as Debezium does, a "d" of the old key (with HeaderNewKey)
//     then a "c" of the new one (with HeaderOldKey).
//
//   - Time: the commit time.
//
//   - No tombstone follows a delete (Debezium's tombstones.on.delete =
//     false): a broker message always has a payload.
//
//   - Payload: the event value as Kafka Connect's JsonConverter writes it
//     with schemas.enable=false:
//
//     {"before":{...}|null,"after":{...}|null,
//     "source":{"version":"...","connector":"postgresql","name":"<prefix>",
//     "ts_ms":..,"ts_us":..,"ts_ns":..,"snapshot":"true|false","db":"..",
//     "sequence":"[\"<commit lsn>\",\"<change lsn>\"]","schema":"..",
//     "table":"..","txId":..,"lsn":..,"xmin":null},
//     "transaction":null,"op":"c|u|d|r|t","ts_ms":..,"ts_us":..,"ts_ns":..}
//
//     source.ts_ms is the commit time, the outer ts_ms when the source
//     encoded the event; source.lsn is the change's own LSN, sequence holds
//     the commit LSN and the change's LSN as decimal strings (Debezium writes
//     the previous commit's LSN first; the commit's own keeps a replayed
//     event byte-identical but for ts_ms). Snapshot rows have txId null and
//     the snapshot's LSN.
//
// "before" follows the table's replica identity, as in Debezium: null for
// inserts; for updates null with REPLICA IDENTITY DEFAULT (PostgreSQL sends
// no old row), the whole old row with FULL; for deletes the key columns
// (others null) with DEFAULT, the whole row with FULL.
//
// Values are mapped as Debezium's defaults do (time.precision.mode =
// adaptive, binary.handling.mode = bytes): booleans, integers and floats as
// JSON numbers (NaN and infinities as strings); numeric as a string holding
// the exact value (WithDecimal; see DecimalString for why not Debezium's
// bytes); text, varchar, uuid, json, jsonb, enums and types not listed as
// strings, their PostgreSQL text form (interval as an ISO-8601 duration,
// Debezium's interval.handling.mode = string; a domain as its text); bytea as base64; date as days since 1970-01-01;
// timestamp as microseconds since the epoch (milliseconds for
// timestamp(0..3)); time as microseconds since midnight (milliseconds for
// time(0..3)); timestamptz as an ISO-8601 string in UTC
// ("2024-05-01T10:00:00.123456Z"); arrays as JSON arrays of their element
// type's values. A TOASTed column an update did not change is not sent by
// PostgreSQL; it is written as the string Unavailable
// ("__debezium_unavailable_value"), Debezium's placeholder, never as null.
// A schema change (ALTER TABLE ... ADD COLUMN) reaches the source as a new
// Relation message before the table's next change, and the following events
// carry the new columns.
//
// # Delivery: at least once, nothing lost
//
// The source tells the server it has flushed a position (the standby status
// update, sent every WithStatusInterval and whenever the server asks) only
// once the publisher confirmed every change before it: a transaction's end
// LSN once all its changes were published, or a position the server
// reported in a keepalive once everything before it was. The slot keeps
// the WAL after that position, and a new Run (in this process or another)
// resumes there, so a restart only repeats what the server had not heard
// confirmed. After Close, which sends a last status update and ends the
// stream cleanly, that is at most the changes of the transaction Close
// stopped in that were published before it;
// after a crash, also what was confirmed since the last status update (at
// most WithStatusInterval of changes): every repeated change has a commit
// LSN at or after the slot's confirmed_flush_lsn when the crash happened.
// Consumers drop the repeats by ID.
//
// A failing Publish is retried with backoff (WithBackoff) and nothing
// after it is read meanwhile: the source stops reading the slot
// (backpressure; it keeps sending status updates, so the server does not
// time it out), the server keeps the WAL, and the source logs the retained size
// (pg_current_wal_lsn() - restart_lsn) every WithRetainedWarning interval,
// at Error once it is over the threshold. A publisher that rejects a change
// as invalid (broker.ErrInvalidMessage, broker.ErrUnroutable or a
// broker.Permanent error) stops Run with ErrRejected, without confirming
// it: retrying cannot help, and skipping would lose it. A lost database
// connection is reopened with backoff. A large transaction is published as
// it is decoded, WithMaxBatch changes per Publish call: memory stays flat
// whatever its size (PostgreSQL spills it to disk on the server side).
//
// # Snapshot, and why it has no gap and no overlap
//
// When Run creates the slot it asks for an exported snapshot
// (CREATE_REPLICATION_SLOT ... EXPORT_SNAPSHOT): a database snapshot that
// sees exactly the transactions that committed before the slot's
// consistent point C, the position the slot streams from. The source reads
// every table in one REPEATABLE READ transaction that imports it (SET
// TRANSACTION SNAPSHOT), publishes the rows as op "r", then streams from
// C: each transaction is either in the snapshot (committed before C) or in
// the stream (at or after C), never both, never neither.
//
// Progress is kept in a small table (WithStateTable, one row per slot and
// table: the LSN of the snapshot the table's rows were read from, whether
// any row was published, whether all were confirmed). Rows are recorded
// before the slot is created, so a crash in between leaves them pending.
// The exported snapshot dies with its connection, so a snapshot
// interrupted by Close or a crash resumes with a fresh exported snapshot,
// from a temporary slot created for the purpose, whose consistent point C'
// again splits transactions exactly. Tables already done are not read
// again. The stream still starts at the slot's C, and for each table the
// source drops the changes of transactions that committed before that
// table's snapshot LSN (Stats.Skipped), as its published rows hold them:
//
//   - a table not started when the snapshot was interrupted is read at C'
//     and takes C' as its LSN: each transaction reaches it exactly once,
//     in its snapshot (before C') or in the stream (from C'), as with an
//     uninterrupted snapshot;
//   - the table being read when the snapshot was interrupted (at most one)
//     is read again, whole, at C' (its rows published before are published
//     again, with other IDs), but keeps the LSN of its first read: the
//     stream replays every change since then, including the deletes of
//     rows published by the first read that are gone at C'. A consumer
//     applying its events in order may see a row at C' and then older
//     changes of it, but ends with every row's latest state, and keeps no
//     row that was deleted. Only this table, and only after an
//     interruption, sees such an overlap: skipping the replayed changes
//     instead would leave deleted rows with the consumer.
//
// A table's rows are published before its streamed changes, so a row's
// events stay in order (but for the overlap above). A slot that exists
// without pending snapshot rows (WithSnapshot(false), or a slot made by
// someone else) is streamed without a snapshot, and so is a table added to
// the publication after New: from the moment it was added.
//
// # Management
//
// Stats counts in memory (changes, transactions, snapshot rows, publishes,
// the received and confirmed LSNs); Lag asks the server how far the slot
// is behind in bytes, how much WAL it retains, and how old the oldest
// unconfirmed commit is. Drop removes the slot (a slot nobody reads keeps
// WAL forever, until the disk is full) and the publication.
package cdc
