// Package pgstore keeps the webhook package's state in PostgreSQL through
// pgx/v5: Store (endpoints, the delivery queue and the attempt log) for
// durable delivery shared by several Sender processes, and Dedup (handled
// message IDs) for Receivers running in several processes.
//
// Tables live in the connection's search_path and are created by Migrate
// (under an advisory lock, so every process may run it at start-up; Schema
// gives the same DDL to migration tools): webhook_endpoints,
// webhook_messages, webhook_deliveries, webhook_attempts and webhook_dedup. Workers claim deliveries with FOR UPDATE SKIP LOCKED and
// a lease, so several processes share the queue without sending a delivery
// twice while its lease holds, and a delivery whose worker died is taken up
// again when the lease ends. Enqueue inside your own transaction (EnqueueTx)
// to publish webhooks atomically with your data, as a transactional outbox.
//
// Times (next attempts, leases) come from the Sender's clock, so the clocks
// of the sending processes should agree within a small fraction of the lease.
package pgstore
