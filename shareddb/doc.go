// Package shareddb reads another service's PostgreSQL safely, through its
// streaming replicas, for the shared-database integration style.
//
// A ReplicaReader holds one read-only pgxpool per node (a primary and any
// number of replicas) and one background checker per node that measures, on
// an interval and under a timeout, whether the node is in recovery, its
// replay lag in seconds (idle-safe: a replica with nothing to replay has zero
// lag; unknown, so stale, when its WAL receiver is not streaming) and bytes,
// and its latency. Reads (Query, QueryRow, BeginTx, ReadTx,
// Acquire, Pool) go to the best healthy replica within the maximum lag
// (WithMaxLag), chosen by a
// Picker (LeastLag, RoundRobin, LowestLatency); when none qualifies they fall
// back to the primary or fail with ErrNoFreshReplica, by policy. Routing uses
// what the checkers last saw: no health check runs on the query path.
//
// Four guards make sharing a database less risky:
//
//   - Read-only by default: every connection runs with
//     default_transaction_read_only=on, even on the primary, BeginTx and
//     ReadTx transactions cannot be switched to read-write, and there is no
//     Exec; a write fails with ErrReadOnly. (A deliberate BEGIN READ WRITE
//     on an Acquired connection still works: the least-privilege role below
//     is what stops it.)
//   - Read your writes: a Token (the primary's WAL position after a write,
//     CurrentToken) passed with WithToken makes a read wait for a replica that
//     has replayed that far, or read the primary. A token ahead of the
//     primary's WAL position is refused at once with ErrInvalidToken.
//   - Schema contract: a Contract declares the tables and typed columns a
//     reader depends on; Verify (run by New given WithContract) lists every
//     difference at deploy time.
//   - Least privilege: Contract.RoleSQL prints (CreateRole applies) a login
//     role that can only SELECT the declared columns, read-only by default.
//
// New takes the primary's URL and options (WithReplicas, WithMaxLag,
// WithFallback, ...; a bad one is ErrInvalidOption); With takes per-read
// options (WithMaxLag, WithMaxLagBytes, WithFallback, WithToken). Close
// drains the reads in flight, up to WithDrainTimeout, then cancels them.
//
// Recovery conflicts (a replica cancelling a long query so replay can go
// on) and lost connections are retried on another node by QueryRow, Query
// (before its first row) and ReadTx; other errors carry the node's name
// (NodeError). Status, Stats, a slog.Logger and tracers (WithTracer:
// QueryTracer around each routed read, QueryRetryTracer, CheckTracer per
// health check, NodeChangeTracer) show what happens.
package shareddb
