package shareddb

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// NodeRole is the role a node was configured with.
type NodeRole int

const (
	// RolePrimary is the primary: reads fall back to it.
	RolePrimary NodeRole = iota
	// RoleReplica is a streaming replica: reads go there first.
	RoleReplica
)

// String returns "primary" or "replica".
func (r NodeRole) String() string {
	if r == RolePrimary {
		return "primary"
	}
	return "replica"
}

// NodeStatus is what the background checker last saw on one node.
type NodeStatus struct {
	Name string   // "primary", "replica1", "replica2", ...
	Addr string   // host:port; for a multi-host URL every host:port, comma-separated
	Role NodeRole // configured role
	// Healthy is true when the last check succeeded and the node has its
	// configured role (a replica in recovery, a primary not in recovery).
	Healthy    bool
	InRecovery bool // pg_is_in_recovery() at the last check
	// Promoted is true when a replica answered its last check out of
	// recovery: it was promoted (a failover). It is no longer a replica
	// (Healthy is false, LastError is ErrNotReplica), and while the primary
	// is unhealthy, reads that go to the primary go to it instead.
	Promoted bool
	// ReplayPaused is true when replay is paused on a replica (pg_wal_replay_pause()).
	ReplayPaused bool
	// Streaming is true when the replica's WAL receiver is streaming from
	// the primary (pg_stat_wal_receiver.status = 'streaming'). A role without
	// pg_read_all_stats sees only whether a receiver process runs, not its
	// status: then a running receiver counts as streaming.
	Streaming bool
	// Lag is the replica's replay lag: zero when it has replayed everything it
	// received or everything the primary had written at its last check,
	// otherwise now() - pg_last_xact_replay_timestamp(). LagKnown is false
	// when the WAL receiver is not Streaming (primary unreachable, receiver
	// stopped: what the replica has not received cannot be measured) or when
	// the lag cannot be told (just after a restart); Lag is then 0 and
	// means nothing. A replica whose lag is unknown is stale: only reads
	// accepting any lag (WithMaxLag(-1)) go to it.
	Lag      time.Duration
	LagKnown bool
	// LagBytes is how far the replica's replay position is behind the
	// primary's current WAL position (pg_wal_lsn_diff), as of their last checks.
	LagBytes int64
	// ReplayLSN is pg_last_wal_replay_lsn() on a replica; on the primary,
	// CurrentLSN is pg_current_wal_lsn().
	ReplayLSN  LSN
	CurrentLSN LSN
	// Latency is the smoothed round-trip time of the health checks.
	Latency   time.Duration
	LastError error     // the last check's error, nil when it succeeded
	CheckedAt time.Time // when the last check finished
	Routed    uint64    // reads routed to this node so far
}

// node is one PostgreSQL server of the reader.
type node struct {
	idx      int
	name     string
	addr     string
	role     NodeRole
	pool     *pgxpool.Pool
	checkCfg *pgx.ConnConfig

	state    atomic.Pointer[nodeState]
	replayed atomic.Uint64 // highest replay LSN seen on a replica, from checks and token waits
	routed   atomic.Uint64

	conn *pgx.Conn // the checker's own connection; owned by the checker goroutine

	connsMu sync.Mutex
	conns   map[*pgx.Conn]struct{} // the pool's open connections, for Close to cancel their queries
}

func (n *node) track(c *pgx.Conn) {
	n.connsMu.Lock()
	n.conns[c] = struct{}{}
	n.connsMu.Unlock()
}

func (n *node) untrack(c *pgx.Conn) {
	n.connsMu.Lock()
	delete(n.conns, c)
	n.connsMu.Unlock()
}

// cancelQueries asks the server to cancel whatever each of the pool's
// connections is running (an idle connection ignores it).
func (n *node) cancelQueries(ctx context.Context) {
	n.connsMu.Lock()
	conns := make([]*pgx.Conn, 0, len(n.conns))
	for c := range n.conns {
		conns = append(conns, c)
	}
	n.connsMu.Unlock()
	var wg sync.WaitGroup
	for _, c := range conns {
		wg.Go(func() { _ = c.PgConn().CancelRequest(ctx) })
	}
	wg.Wait()
}

// nodeState is an immutable snapshot written by the checker.
type nodeState struct {
	healthy    bool
	err        error
	inRecovery bool
	promoted   bool // a replica out of recovery
	paused     bool
	streaming  bool
	lag        time.Duration
	lagKnown   bool
	lagBytes   int64
	replayLSN  LSN
	currentLSN LSN
	latency    time.Duration
	checkedAt  time.Time
}

func (n *node) status() NodeStatus {
	s := n.state.Load()
	return NodeStatus{
		Name: n.name, Addr: n.addr, Role: n.role,
		Healthy: s.healthy, InRecovery: s.inRecovery, Promoted: s.promoted, ReplayPaused: s.paused, Streaming: s.streaming,
		Lag: s.lag, LagKnown: s.lagKnown, LagBytes: s.lagBytes,
		ReplayLSN: s.replayLSN, CurrentLSN: s.currentLSN,
		Latency: s.latency, LastError: s.err, CheckedAt: s.checkedAt,
		Routed: n.routed.Load(),
	}
}

// markDown records that a read found the node unreachable, so routing skips
// it until the next successful check. It reports whether this call turned
// the node from healthy to unhealthy.
func (n *node) markDown(err error) bool {
	old := n.state.Load()
	if !old.healthy {
		return false
	}
	s := *old
	s.healthy = false
	s.err = err
	return n.state.CompareAndSwap(old, &s)
}

// checkSQL works on a primary and on a standby: whether it is in recovery,
// the primary's WAL position, the standby's receive and replay positions, the
// age of the last replayed transaction, whether replay is paused, and the WAL
// receiver's status (null: no receiver; 'hidden': a receiver runs, but the
// role may not see its status, which needs pg_read_all_stats).
const checkSQL = `select pg_is_in_recovery(),
 case when pg_is_in_recovery() then null else pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::int8 end,
 pg_wal_lsn_diff(pg_last_wal_receive_lsn(), '0/0')::int8,
 pg_wal_lsn_diff(pg_last_wal_replay_lsn(), '0/0')::int8,
 extract(epoch from now() - pg_last_xact_replay_timestamp())::float8,
 case when pg_is_in_recovery() then pg_is_wal_replay_paused() else false end,
 (select coalesce(status, 'hidden') from pg_stat_wal_receiver limit 1)`

// check runs one health check on n with its own connection and returns the
// new state. primaryLSN is the primary's WAL position at its last check (0 if unknown).
func (n *node) check(ctx context.Context, primaryLSN LSN) *nodeState {
	prev := n.state.Load()
	start := time.Now()
	s := &nodeState{}
	fail := func(err error) *nodeState {
		if n.conn != nil {
			cctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
			_ = n.conn.Close(cctx)
			cancel()
			n.conn = nil
		}
		s.err = err
		s.checkedAt = time.Now()
		if prev != nil {
			s.latency = prev.latency
		}
		return s
	}
	if n.conn == nil {
		c, err := pgx.ConnectConfig(ctx, n.checkCfg.Copy())
		if err != nil {
			return fail(err)
		}
		n.conn = c
		start = time.Now() // latency measures the query, not the connect
	}
	var (
		cur, recv, replay *int64
		tsLag             *float64
		receiver          *string
	)
	err := n.conn.QueryRow(ctx, checkSQL).Scan(&s.inRecovery, &cur, &recv, &replay, &tsLag, &s.paused, &receiver)
	if err != nil {
		return fail(err)
	}
	rtt := time.Since(start)
	s.latency = rtt
	if prev != nil && prev.latency > 0 {
		s.latency = (prev.latency*7 + rtt*3) / 10 // EWMA, alpha 0.3
	}
	s.checkedAt = time.Now()
	if cur != nil {
		s.currentLSN = LSN(*cur)
	}
	if replay != nil {
		s.replayLSN = LSN(*replay)
		n.noteReplayed(s.replayLSN)
	}
	switch n.role {
	case RolePrimary:
		if s.inRecovery {
			s.err = ErrPrimaryInRecovery
			return s
		}
	case RoleReplica:
		if !s.inRecovery {
			s.promoted = true
			s.err = fmt.Errorf("%w: %s is not in recovery (pg_is_in_recovery() = false): is it a primary?", ErrNotReplica, n.addr)
			return s
		}
		s.streaming = receiver != nil && (*receiver == "streaming" || *receiver == "hidden")
		s.lag, s.lagKnown = replicaLag(s.streaming, primaryLSN, recv, s.replayLSN, tsLag)
		if primaryLSN > s.replayLSN {
			s.lagBytes = int64(primaryLSN - s.replayLSN)
		}
	}
	s.healthy = true
	return s
}

// replicaLag computes a replica's replay lag in an idle-safe way: a replica
// that has replayed everything it received, and is not behind the primary's
// last known position, has zero lag however long ago the last transaction
// was; otherwise the lag is the age of the last replayed transaction. When
// the WAL receiver is not streaming, the lag is unknown: the replica cannot
// know what the primary wrote since it lost it, so "replayed all received"
// says nothing.
func replicaLag(streaming bool, primaryLSN LSN, recv *int64, replay LSN, tsLag *float64) (lag time.Duration, known bool) {
	if !streaming {
		return 0, false
	}
	age := func() (time.Duration, bool) {
		if tsLag == nil {
			return 0, false
		}
		return time.Duration(math.Max(*tsLag, 0) * float64(time.Second)), true
	}
	switch {
	case recv != nil && LSN(*recv) > replay:
		return age() // received WAL waits to be replayed (replay paused or slow)
	case primaryLSN > 0 && replay >= primaryLSN:
		return 0, true
	case primaryLSN == 0 && recv != nil:
		return 0, true // primary unknown: replayed all it received
	default:
		return age() // the primary has WAL this replica has not received yet
	}
}

// noteReplayed raises the node's known replay position to l.
func (n *node) noteReplayed(l LSN) { raise(&n.replayed, l) }

// raise sets a to l if l is higher.
func raise(a *atomic.Uint64, l LSN) {
	for {
		old := a.Load()
		if uint64(l) <= old || a.CompareAndSwap(old, uint64(l)) {
			return
		}
	}
}

// replayLSN asks the replica for its replay position now (used while waiting for a token).
func (n *node) replayLSN(ctx context.Context) (LSN, error) {
	var l *int64
	if err := n.pool.QueryRow(ctx, "select pg_wal_lsn_diff(pg_last_wal_replay_lsn(), '0/0')::int8").Scan(&l); err != nil {
		return 0, err
	}
	if l == nil {
		return 0, errors.New("pg_last_wal_replay_lsn() is null: not a standby")
	}
	n.noteReplayed(LSN(*l))
	return LSN(*l), nil
}

func (n *node) closeConn() {
	if n.conn != nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_ = n.conn.Close(ctx)
		cancel()
		n.conn = nil
	}
}
