package shareddb

import (
	"context"
	"time"
)

// Tracers are installed with WithTracer. They are called synchronously, from
// many goroutines at once, on the query path: they must be fast and must not
// block. Data structs may gain fields.

// QueryTracer traces each routed read (QueryRow, Query, BeginTx, ReadTx,
// Acquire, Pool) from the moment its node is chosen to its end.
// TraceQueryStart is called once routing has decided (it may have waited
// for a token: Waited), the read runs in the context it returns, and
// TraceQueryEnd receives that context. A read whose routing failed
// (ErrNoFreshReplica, ErrInvalidToken, its context) gets a Start with no
// node and an End with the error. Reads after Close are not traced.
type QueryTracer interface {
	TraceQueryStart(ctx context.Context, data TraceQueryStartData) context.Context
	TraceQueryEnd(ctx context.Context, data TraceQueryEndData)
}

// QueryRetryTracer is told when a read that failed on a node (recovery
// conflict, lost connection) is retried on another one, in the read's
// context (the one TraceQueryStart returned).
type QueryRetryTracer interface {
	TraceQueryRetry(ctx context.Context, data TraceQueryRetryData)
}

// CheckTracer is told about every background health check of every node.
type CheckTracer interface {
	TraceCheck(ctx context.Context, data TraceCheckData)
}

// NodeChangeTracer is told when a check finds that a node changed state:
// went down or came back, has the wrong role, its WAL receiver stopped or
// streams again, it turned stale or fresh (the same changes are logged).
type NodeChangeTracer interface {
	TraceNodeChange(ctx context.Context, data TraceNodeChangeData)
}

// Op names the kind of a routed read.
type Op string

// Kinds of reads.
const (
	OpQuery    Op = "query"
	OpQueryRow Op = "query_row"
	OpBeginTx  Op = "begin_tx"
	OpReadTx   Op = "read_tx"
	OpAcquire  Op = "acquire"
	OpPool     Op = "pool"
)

// Route says why a read went to its node.
type Route int

// Routes.
const (
	// RouteNone: no node was chosen; the read failed (ErrNoFreshReplica,
	// ErrInvalidToken, its context ended, every node failed).
	RouteNone Route = iota
	// RouteReplica: a replica that qualified.
	RouteReplica
	// RoutePrimary: the primary, because the reader has no replicas.
	RoutePrimary
	// RouteFallback: the primary, because no replica qualified and the
	// fallback policy is FallbackPrimary.
	RouteFallback
	// RouteTokenFallback: the primary, because no replica reached the read's
	// token in time (whatever the fallback policy).
	RouteTokenFallback
)

// String names the route.
func (r Route) String() string {
	switch r {
	case RouteReplica:
		return "replica"
	case RoutePrimary:
		return "primary"
	case RouteFallback:
		return "fallback"
	case RouteTokenFallback:
		return "token fallback"
	}
	return "none"
}

// TraceQueryStartData describes a read and where routing sent it.
type TraceQueryStartData struct {
	Op   Op
	SQL  string // "" for BeginTx, ReadTx, Acquire and Pool
	Args []any

	// Node is the node chosen for the first attempt ("primary",
	// "replica1", ...), "" with RouteNone; Addr its host:port and Role its role.
	Node  string
	Addr  string
	Role  NodeRole
	Route Route
	// Lag, LagKnown and LagBytes are what the last check saw on the chosen
	// replica (zero for the primary).
	Lag      time.Duration
	LagKnown bool
	LagBytes int64
	// MaxLag is the read's limit (negative: any lag).
	MaxLag time.Duration
	// Token is the read's token (WithToken), zero if none; Waited is how
	// long routing waited for a replica to reach it.
	Token  Token
	Waited time.Duration
}

// TraceQueryEndData is the outcome of a read.
type TraceQueryEndData struct {
	// Err is the read's error, as returned to the caller (for Query, the
	// rows' Err when they were closed); nil on success.
	Err error
	// Node, Addr, Role and Route are those of the last attempt: the node that
	// served the read, or failed it last ("" when none was chosen).
	Node  string
	Addr  string
	Role  NodeRole
	Route Route
	// Attempts is how many nodes the read ran on (more than one after retries).
	Attempts int
	// Duration runs from TraceQueryStart to the end (for Query, until the
	// rows were closed or read to the end).
	Duration time.Duration
}

// TraceQueryRetryData describes a failed attempt of a read that is retried elsewhere.
type TraceQueryRetryData struct {
	Node    string // the node that failed
	Addr    string
	Err     error // why (a *NodeError wrapping ErrRecoveryConflict, or a lost connection)
	Attempt int   // the failed attempt's number, from 1
}

// TraceCheckData is one health check of one node: NodeStatus as the check
// left it, and how long the check took (connect included).
type TraceCheckData struct {
	NodeStatus
	Duration time.Duration
}

// NodeChange is a change of a node's state seen by a check.
type NodeChange int

// Node changes.
const (
	NodeDown          NodeChange = iota // a check failed, or a read lost its connection: reads skip the node
	NodeUp                              // a check succeeded again
	NodeWrongRole                       // a replica not in recovery, or a primary in recovery
	ReceiverStopped                     // a replica's WAL receiver stopped streaming: its lag is unknown
	ReceiverStreaming                   // a replica's WAL receiver streams again
	NodeStale                           // a replica's lag went over the reader's max lag, or became unknown
	NodeFresh                           // a replica's lag is within the reader's max lag again
)

// String names the change.
func (c NodeChange) String() string {
	return [...]string{"down", "up", "wrong role", "receiver stopped", "receiver streaming", "stale", "fresh"}[c]
}

// TraceNodeChangeData is one change of a node's state.
type TraceNodeChangeData struct {
	Change NodeChange
	Status NodeStatus // after the check
}

// tracers holds the installed tracers sorted by interface.
type tracers struct {
	query  []QueryTracer
	retry  []QueryRetryTracer
	check  []CheckTracer
	change []NodeChangeTracer
}
