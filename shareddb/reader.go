package shareddb

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/go-integration/patterns/internal/backoff"
	"github.com/go-integration/patterns/internal/hooks"
)

// Fallback says what a read does when no replica is healthy and fresh enough.
type Fallback int

const (
	// FallbackPrimary reads from the primary (through a read-only connection). The default.
	FallbackPrimary Fallback = iota
	// FallbackRefuse returns ErrNoFreshReplica and leaves the primary alone.
	FallbackRefuse
)

// String returns "primary" or "refuse".
func (f Fallback) String() string {
	if f == FallbackRefuse {
		return "refuse"
	}
	return "primary"
}

// Stats counts what happened to reads since New. Every field is cumulative.
type Stats struct {
	Routed   uint64 // reads given a node (fallbacks included)
	FellBack uint64 // reads sent to the primary because no replica qualified or reached their token
	Refused  uint64 // reads refused with ErrNoFreshReplica
	Retried  uint64 // reads retried on another node after a recovery conflict or a lost connection
	Waited   uint64 // reads that waited for a replica to reach their Token
}

// ReplicaReader reads another service's PostgreSQL through its replicas:
// each read goes to the best healthy replica that is fresh enough, falling
// back to the primary (or refusing) by policy. Every connection it opens is
// read-only by default, and it has no Exec: a write by mistake fails, even on
// the primary. A caller set on writing can still open a read-write
// transaction (BEGIN READ WRITE on an Acquired connection, or in a
// simple-protocol Query): only a role without write grants
// (Contract.RoleSQL) stops that.
//
// Per-read limits come from With. A ReplicaReader is safe for concurrent use.
type ReplicaReader struct {
	View // reads with the reader's limits

	cfg      config
	log      *slog.Logger
	primary  *node
	replicas []*node
	nodes    []*node
	tr       tracers

	routed, fellBack, refused, retried, waited atomic.Uint64
	// primaryLSN is the highest WAL position seen on the primary, by its
	// checker or by checkToken: tokens up to it are valid.
	primaryLSN atomic.Uint64

	// mu orders Close against reads starting: a read registers in inflight
	// under the read lock unless closed is set.
	mu        sync.RWMutex
	closed    atomic.Bool
	inflight  sync.WaitGroup
	cancelled atomic.Bool // the drain timeout passed: reads in flight are cancelled
	stop      chan struct{}
	cancel    context.CancelFunc
	wg        sync.WaitGroup
	closeOnce sync.Once
}

// New connects to the primary (primaryURL, a URL or key=value connection
// string) and the replicas (WithReplicas), checks each once (within the
// check timeout, but at least 3 s: the primary must answer and not be in
// recovery; a replica that answers must be in recovery and belong to the
// primary's cluster), verifies the contract if one is set (WithContract),
// and starts one background checker per node. A bad option is
// ErrInvalidOption naming it. Close releases everything.
func New(ctx context.Context, primaryURL string, opts ...Option) (*ReplicaReader, error) {
	cfg, err := newConfig(primaryURL, opts)
	if err != nil {
		return nil, err
	}
	r := &ReplicaReader{cfg: cfg, stop: make(chan struct{})}
	r.View = View{r: r, o: cfg.read}
	r.log = cfg.logger.With("component", "shareddb")
	r.tr = tracers{
		query:  hooks.Pick[QueryTracer](cfg.tracers),
		retry:  hooks.Pick[QueryRetryTracer](cfg.tracers),
		check:  hooks.Pick[CheckTracer](cfg.tracers),
		change: hooks.Pick[NodeChangeTracer](cfg.tracers),
	}

	urls := append([]string{primaryURL}, cfg.replicaURLs...)
	for i, u := range urls {
		name, role := "primary", RolePrimary
		if i > 0 {
			name, role = "replica"+strconv.Itoa(i), RoleReplica
		}
		n, err := newNode(i, name, role, u, cfg.poolConfig)
		if err != nil {
			r.closeNodes()
			return nil, err
		}
		r.nodes = append(r.nodes, n)
	}
	r.primary, r.replicas = r.nodes[0], r.nodes[1:]

	if err := r.firstCheck(ctx); err != nil {
		r.closeNodes()
		return nil, err
	}
	if len(r.replicas) == 0 {
		r.log.Warn("no replicas configured: every read goes to the primary", "primary", r.primary.addr)
	}
	if cfg.contract != nil {
		if err := cfg.contract.Verify(ctx, r.primary.pool); err != nil {
			r.closeNodes()
			return nil, err
		}
	}

	cctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	for _, n := range r.nodes {
		r.wg.Add(1)
		go r.checkLoop(cctx, n)
	}
	return r, nil
}

// newNode parses url and makes the node's read-only pool (it connects lazily).
func newNode(idx int, name string, role NodeRole, url string, configure func(string, *pgxpool.Config)) (*node, error) {
	pc, err := pgxpool.ParseConfig(url)
	if err != nil {
		if role == RolePrimary {
			return nil, fmt.Errorf("%w: primary URL: %w", ErrInvalidOption, err)
		}
		return nil, fmt.Errorf("%w: WithReplicas: %s URL: %w", ErrInvalidOption, name, err)
	}
	if configure != nil {
		configure(name, pc)
	}
	// Read-only by default: every transaction on these connections is
	// read-only unless it asks otherwise (BEGIN READ WRITE; BeginTx and ReadTx
	// lock theirs), and a connection that was switched back (SET ... = off) is
	// destroyed instead of being used again.
	pc.ConnConfig.RuntimeParams["default_transaction_read_only"] = "on"
	// That makes every server look read-only to target_session_attrs
	// (pgx asks "show transaction_read_only"), so read-write would accept no
	// host and read-only any: ask what they mean here, whether the server
	// is in recovery. A multi-host URL then follows a failover.
	switch funcID(pc.ConnConfig.ValidateConnect) {
	case funcID(pgconn.ValidateConnectTargetSessionAttrsReadWrite):
		pc.ConnConfig.ValidateConnect = pgconn.ValidateConnectTargetSessionAttrsPrimary
	case funcID(pgconn.ValidateConnectTargetSessionAttrsReadOnly):
		pc.ConnConfig.ValidateConnect = pgconn.ValidateConnectTargetSessionAttrsStandby
	}
	n := &node{
		idx: idx, name: name, role: role,
		addr:     hostList(pc.ConnConfig),
		checkCfg: pc.ConnConfig.Copy(),
		conns:    map[*pgx.Conn]struct{}{},
	}
	afterConnect := pc.AfterConnect
	pc.AfterConnect = func(ctx context.Context, c *pgx.Conn) error {
		if v := c.PgConn().ParameterStatus("default_transaction_read_only"); v != "" && v != "on" {
			return fmt.Errorf("%w: default_transaction_read_only is %q on new connection", ErrReadOnly, v)
		}
		if afterConnect != nil {
			if err := afterConnect(ctx, c); err != nil {
				return err
			}
		}
		n.track(c)
		return nil
	}
	beforeClose := pc.BeforeClose
	pc.BeforeClose = func(c *pgx.Conn) {
		n.untrack(c)
		if beforeClose != nil {
			beforeClose(c)
		}
	}
	// Checked on acquire, synchronously and without a round trip (the server
	// reports the setting); pgxpool runs AfterRelease in a goroutine per release.
	prepare := pc.PrepareConn
	pc.PrepareConn = func(ctx context.Context, c *pgx.Conn) (bool, error) {
		if v := c.PgConn().ParameterStatus("default_transaction_read_only"); v != "" && v != "on" {
			return false, nil // destroyed; pgxpool takes another connection
		}
		if prepare != nil {
			return prepare(ctx, c)
		}
		return true, nil
	}
	pool, err := pgxpool.NewWithConfig(context.Background(), pc)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrInvalidOption, name, err)
	}
	n.pool = pool
	n.state.Store(&nodeState{err: errors.New("not checked yet")})
	return n, nil
}

// funcID identifies a top-level function, to recognise pgx's validators.
func funcID(f pgconn.ValidateConnectFunc) uintptr {
	if f == nil {
		return 0
	}
	return reflect.ValueOf(f).Pointer()
}

// hostList is host:port, or every host:port of a multi-host connection
// string, comma-separated in the order pgx tries them.
func hostList(c *pgx.ConnConfig) string {
	addrs := []string{net.JoinHostPort(c.Host, strconv.Itoa(int(c.Port)))}
	for _, f := range c.Fallbacks {
		// pgx adds a fallback per TLS mode (sslmode=prefer): the same host again.
		if a := net.JoinHostPort(f.Host, strconv.Itoa(int(f.Port))); !slices.Contains(addrs, a) {
			addrs = append(addrs, a)
		}
	}
	return strings.Join(addrs, ",")
}

// firstCheck checks every node once, concurrently, and reports configuration errors.
func (r *ReplicaReader) firstCheck(ctx context.Context) error {
	// The first check allows for a slow first connect: New must not fail
	// because a busy server took more than the check timeout to accept.
	timeout := max(r.cfg.checkTimeout, firstCheckTimeout)
	var wg sync.WaitGroup
	ids := make([]int64, len(r.nodes))
	idErrs := make([]error, len(r.nodes))
	// The primary first: replicas need its WAL position for byte lag.
	r.checkOnce(ctx, r.primary, timeout)
	ids[0], idErrs[0] = systemID(ctx, r.primary)
	for i, n := range r.replicas {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.checkOnce(ctx, n, timeout)
			ids[i+1], idErrs[i+1] = systemID(ctx, n)
		}()
	}
	wg.Wait()

	ps := r.primary.state.Load()
	switch {
	case errors.Is(ps.err, ErrPrimaryInRecovery):
		return fmt.Errorf("%w: %s (%s) answers pg_is_in_recovery() = true: it is a standby; give the primary's URL", ErrPrimaryInRecovery, r.primary.name, r.primary.addr)
	case ps.err != nil:
		return fmt.Errorf("shareddb: primary %s is unreachable: %w", r.primary.addr, ps.err)
	}
	for _, n := range r.replicas {
		s := n.state.Load()
		switch {
		case errors.Is(s.err, ErrNotReplica):
			return fmt.Errorf("%s: %w", n.name, s.err)
		case s.err != nil:
			r.log.Warn("replica unreachable at start; reads skip it until it answers", "node", n.name, "addr", n.addr, "err", s.err)
		case idErrs[0] == nil && idErrs[n.idx] == nil && ids[0] != ids[n.idx]:
			return fmt.Errorf("%w: %s (%s) is a standby of another cluster (system identifier %d, primary's %d)", ErrNotReplica, n.name, n.addr, ids[n.idx], ids[0])
		}
	}
	return nil
}

// systemID returns the node's cluster identifier, when the role may read it.
func systemID(ctx context.Context, n *node) (int64, error) {
	if n.conn == nil {
		return 0, errors.New("no connection")
	}
	cctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	var id int64
	err := n.conn.QueryRow(cctx, "select system_identifier from pg_control_system()").Scan(&id)
	if err != nil && n.conn.PgConn().TxStatus() != 'I' {
		n.closeConn()
	}
	return id, err
}

func (r *ReplicaReader) checkLoop(ctx context.Context, n *node) {
	defer r.wg.Done()
	defer n.closeConn()
	t := time.NewTicker(r.cfg.checkInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		r.checkOnce(ctx, n, r.cfg.checkTimeout)
	}
}

// checkOnce runs one check on n, stores the result, logs and traces what changed.
func (r *ReplicaReader) checkOnce(ctx context.Context, n *node, timeout time.Duration) {
	var primaryLSN LSN
	if n != r.primary {
		primaryLSN = r.primary.state.Load().currentLSN
	}
	start := time.Now()
	cctx, cancel := context.WithTimeout(ctx, timeout)
	s := n.check(cctx, primaryLSN)
	cancel()
	took := time.Since(start)
	if ctx.Err() != nil {
		return // closing: keep the last real state
	}
	old := n.state.Swap(s)
	if n == r.primary && s.currentLSN > 0 {
		raise(&r.primaryLSN, s.currentLSN)
	}
	var changes [2]NodeChange
	changed := changes[:0]
	wrongRole := func(err error) bool { return errors.Is(err, ErrNotReplica) || errors.Is(err, ErrPrimaryInRecovery) }
	switch {
	case s.promoted && !old.promoted:
		r.log.Error("replica was promoted (not in recovery): reads skip it as a replica; while the primary is unhealthy, primary reads go to it",
			"node", n.name, "addr", n.addr, "primary_healthy", r.primary.state.Load().healthy)
		changed = append(changed, NodeWrongRole)
	case wrongRole(s.err) && !wrongRole(old.err):
		r.log.Error("node has the wrong role: reads skip it", "node", n.name, "addr", n.addr, "err", s.err)
		changed = append(changed, NodeWrongRole)
	case old.healthy && !s.healthy:
		r.log.Warn("node unhealthy", "node", n.name, "addr", n.addr, "err", s.err)
		changed = append(changed, NodeDown)
	case !old.healthy && s.healthy && !old.checkedAt.IsZero():
		r.log.Info("node healthy again", "node", n.name, "addr", n.addr)
		changed = append(changed, NodeUp)
	}
	if n.role == RoleReplica && s.healthy && old.healthy && s.streaming != old.streaming {
		if s.streaming {
			r.log.Info("replica's WAL receiver streaming again", "node", n.name, "addr", n.addr)
			changed = append(changed, ReceiverStreaming)
		} else {
			r.log.Warn("replica's WAL receiver is not streaming: its lag is unknown, reads with a MaxLag skip it", "node", n.name, "addr", n.addr)
			changed = append(changed, ReceiverStopped)
		}
	}
	if maxLag := r.cfg.read.maxLag; n.role == RoleReplica && s.healthy && old.healthy && maxLag >= 0 {
		was, is := old.lag > maxLag || !old.lagKnown, s.lag > maxLag || !s.lagKnown
		if was != is {
			r.log.Info("replica freshness changed", "node", n.name, "stale", is, "lag", s.lag, "lag_bytes", s.lagBytes, "replay_paused", s.paused)
			if is {
				changed = append(changed, NodeStale)
			} else {
				changed = append(changed, NodeFresh)
			}
		}
	}
	if len(r.tr.check) == 0 && (len(r.tr.change) == 0 || len(changed) == 0) {
		return
	}
	st := n.status()
	for _, t := range r.tr.check {
		t.TraceCheck(ctx, TraceCheckData{NodeStatus: st, Duration: took})
	}
	r.traceChanges(ctx, st, changed...)
}

// traceChanges tells the NodeChangeTracers about changes of the node whose
// status is st.
func (r *ReplicaReader) traceChanges(ctx context.Context, st NodeStatus, changes ...NodeChange) {
	for _, c := range changes {
		for _, t := range r.tr.change {
			t.TraceNodeChange(ctx, TraceNodeChangeData{Change: c, Status: st})
		}
	}
}

// Status returns what the last check saw on every node, the primary first.
func (r *ReplicaReader) Status() []NodeStatus {
	out := make([]NodeStatus, len(r.nodes))
	for i, n := range r.nodes {
		out[i] = n.status()
	}
	return out
}

// Stats returns a snapshot of the routing counters, without I/O.
func (r *ReplicaReader) Stats() Stats {
	return Stats{
		Routed: r.routed.Load(), FellBack: r.fellBack.Load(), Refused: r.refused.Load(),
		Retried: r.retried.Load(), Waited: r.waited.Load(),
	}
}

// Token returns the primary's current WAL position as a Token: a read given
// it (WithToken) sees everything committed on the primary before this call.
// While the primary is unhealthy and a replica was promoted, it asks that
// replica, the new primary.
func (r *ReplicaReader) Token(ctx context.Context) (Token, error) {
	if r.closed.Load() {
		return Token{}, ErrClosed
	}
	return CurrentToken(ctx, r.primaryNow().pool)
}

// Verify checks the contract given with WithContract against the primary
// now (New already did once); while the primary is unhealthy and a replica
// was promoted, against that replica. It returns nil when no contract is set.
func (r *ReplicaReader) Verify(ctx context.Context) error {
	if r.closed.Load() {
		return ErrClosed
	}
	if r.cfg.contract == nil {
		return nil
	}
	return r.cfg.contract.Verify(ctx, r.primaryNow().pool)
}

// Close stops taking reads (they fail with ErrClosed), ends the waits for
// tokens (those reads go to the primary), and waits for the reads in flight
// (a QueryRow, a ReadTx, rows not yet closed) for at most the drain timeout
// (WithDrainTimeout); then it asks the servers to cancel their queries, so
// they fail with an error matching ErrClosed. It stops the checkers and
// closes every pool, which waits for the connections given out by Acquire
// to be released and the transactions of BeginTx to end. Close is
// idempotent and returns nil.
func (r *ReplicaReader) Close() error {
	r.closeOnce.Do(func() {
		r.mu.Lock()
		r.closed.Store(true)
		r.mu.Unlock()
		close(r.stop)
		drained := make(chan struct{})
		go func() { r.inflight.Wait(); close(drained) }()
		t := time.NewTimer(r.cfg.drainTimeout)
		select {
		case <-drained:
		case <-t.C:
			r.cancelled.Store(true)
			r.log.Warn("reads still in flight after the drain timeout: cancelling their queries", "drain_timeout", r.cfg.drainTimeout)
			for wait := 100 * time.Millisecond; ; wait = min(2*wait, time.Second) {
				ctx, cancel := context.WithTimeout(context.Background(), time.Second)
				for _, n := range r.nodes {
					n.cancelQueries(ctx)
				}
				cancel()
				t.Reset(wait)
				select {
				case <-drained:
				case <-t.C:
					continue
				}
				break
			}
		}
		t.Stop()
		if r.cancel != nil {
			r.cancel()
		}
		r.wg.Wait()
		r.closeNodes()
	})
	return nil
}

// enter registers a read in flight; it reports false after Close.
func (r *ReplicaReader) enter() bool {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if r.closed.Load() {
		return false
	}
	r.inflight.Add(1)
	return true
}

func (r *ReplicaReader) leave() { r.inflight.Done() }

func (r *ReplicaReader) closeNodes() {
	for _, n := range r.nodes {
		n.closeConn()
		n.pool.Close()
	}
}

// errAllTried ends retries when every node was excluded.
var errAllTried = errors.New("shareddb: every node failed")

// decision is where routing sent one attempt of a read, and why.
type decision struct {
	n      *node // nil with RouteNone
	route  Route
	waited time.Duration // waiting for a replica to reach the token
}

// route chooses the node for one attempt of a read: a qualifying replica,
// else (after waiting for a token) the fallback. excluded holds nodes that
// failed this read.
func (r *ReplicaReader) route(ctx context.Context, o *readOpts, excluded uint64) (decision, error) {
	if o.token > 0 {
		if err := r.checkToken(ctx, o.token); err != nil {
			return decision{}, err
		}
	}
	var buf [8]*node
	ok := buf[:0]
	behind := false // some replica qualifies but has not reached the token
	for _, n := range r.replicas {
		if excluded&(1<<n.idx) != 0 || !o.fresh(n.state.Load()) {
			continue
		}
		if o.token > 0 && LSN(n.replayed.Load()) < o.token {
			behind = true
			continue
		}
		ok = append(ok, n)
	}
	var n *node
	switch len(ok) {
	case 0:
	case 1:
		n = ok[0]
	default:
		c := make([]Candidate, len(ok))
		for i, n := range ok {
			s := n.state.Load()
			c[i] = Candidate{Name: n.name, Lag: s.lag, LagBytes: s.lagBytes, Latency: s.latency}
		}
		n = ok[r.cfg.picker.Pick(c)]
	}
	var waited time.Duration
	if n == nil && behind {
		start := time.Now()
		var err error
		n, err = r.waitForToken(ctx, o, excluded)
		waited = time.Since(start)
		if err != nil {
			return decision{waited: waited}, err
		}
		if p := r.primaryNow(); n == nil && excluded&(1<<p.idx) == 0 {
			// The token asks for correctness: the primary has it, whatever the policy.
			r.count(p, RouteTokenFallback)
			r.log.Debug("read falls back to the primary: no replica reached the token", "token", o.token)
			return decision{n: p, route: RouteTokenFallback, waited: waited}, nil
		}
	}
	if n != nil {
		r.count(n, RouteReplica)
		return decision{n: n, route: RouteReplica, waited: waited}, nil
	}
	d, err := r.fallback(o, excluded)
	d.waited = waited
	return d, err
}

// count counts a read routed to n.
func (r *ReplicaReader) count(n *node, route Route) {
	r.routed.Add(1)
	n.routed.Add(1)
	if route == RouteFallback || route == RouteTokenFallback {
		r.fellBack.Add(1)
	}
}

// primaryNow is the node that reads meant for the primary go to: the
// primary, or, while it is unhealthy, a replica whose last check found it
// promoted (out of recovery): the new primary after a failover that the
// primary's URL does not follow (a URL naming only the old host).
func (r *ReplicaReader) primaryNow() *node {
	if r.primary.state.Load().healthy {
		return r.primary
	}
	for _, n := range r.replicas {
		if n.state.Load().promoted {
			return n
		}
	}
	return r.primary
}

func (r *ReplicaReader) fallback(o *readOpts, excluded uint64) (decision, error) {
	p := r.primaryNow()
	if excluded&(1<<p.idx) != 0 {
		return decision{}, errAllTried
	}
	if len(r.replicas) == 0 {
		r.count(p, RoutePrimary)
		return decision{n: p, route: RoutePrimary}, nil
	}
	if o.fallback == FallbackRefuse {
		r.refused.Add(1)
		return decision{}, fmt.Errorf("%w: %s", ErrNoFreshReplica, r.whyNoReplica(o, excluded))
	}
	r.count(p, RouteFallback)
	if r.log.Enabled(context.Background(), slog.LevelDebug) {
		r.log.Debug("read falls back to the primary", "node", p.name, "why", r.whyNoReplica(o, excluded))
	}
	return decision{n: p, route: RouteFallback}, nil
}

// whyNoReplica explains, per replica, why it did not qualify.
func (r *ReplicaReader) whyNoReplica(o *readOpts, excluded uint64) string {
	var b strings.Builder
	for i, n := range r.replicas {
		if i > 0 {
			b.WriteString("; ")
		}
		s := n.state.Load()
		fmt.Fprintf(&b, "%s (%s): ", n.name, n.addr)
		switch {
		case excluded&(1<<n.idx) != 0:
			b.WriteString("failed this read")
		case !s.healthy:
			fmt.Fprintf(&b, "unhealthy: %v", s.err)
		case !s.lagKnown && o.maxLag >= 0 && !s.streaming:
			b.WriteString("lag unknown (WAL receiver not streaming)")
		case !s.lagKnown && o.maxLag >= 0:
			b.WriteString("lag unknown")
		case o.maxLag >= 0 && s.lag > o.maxLag:
			fmt.Fprintf(&b, "lag %v > max %v", s.lag.Round(time.Millisecond), o.maxLag)
		case o.maxBytes > 0 && s.lagBytes > o.maxBytes:
			fmt.Fprintf(&b, "lag %d bytes > max %d", s.lagBytes, o.maxBytes)
		case o.token > 0 && LSN(n.replayed.Load()) < o.token:
			fmt.Fprintf(&b, "replayed to %v, token needs %v", LSN(n.replayed.Load()), o.token)
		default:
			b.WriteString("qualifies now")
		}
	}
	return b.String()
}

// checkToken refuses a token ahead of the primary's current WAL position
// (ErrInvalidToken). A token at or below a position already seen (the
// primary's, at its last check or an earlier checkToken, or a replica's
// replay position) is valid without a round trip. A token beyond them is
// usually one just issued: the primary is asked its position now, once (a
// query that starts after the read did, so after the token was made), and
// the token is refused only if it is still ahead. When the primary cannot
// answer, or the read's deadline leaves no more than the fallback reserve, the
// token is not judged and the read goes on.
func (r *ReplicaReader) checkToken(ctx context.Context, tok LSN) error {
	if tok <= LSN(r.primaryLSN.Load()) {
		return nil
	}
	for _, n := range r.replicas {
		if tok <= LSN(n.replayed.Load()) {
			return nil
		}
	}
	if d, ok := ctx.Deadline(); ok && time.Until(d) <= r.cfg.fallbackReserve {
		// No time to ask: the read goes to the primary, which has every
		// write there is, and must not lose its reserve to the check.
		return nil
	}
	cctx, cancel := context.WithTimeout(ctx, r.cfg.checkTimeout)
	cur, err := CurrentToken(cctx, r.primaryNow().pool)
	cancel()
	if err != nil {
		// Cannot judge the token (the primary is slow or down, or ctx
		// ended): the read goes on and meets the same conditions itself.
		r.log.Debug("cannot check the token against the primary's WAL position", "token", tok, "err", err)
		return nil
	}
	raise(&r.primaryLSN, cur.LSN())
	if tok > cur.LSN() {
		return fmt.Errorf("%w: token %v is ahead of the primary's WAL position %v: no write made it", ErrInvalidToken, tok, cur.LSN())
	}
	return nil
}

// waitForToken polls the replicas that qualify except for the token until
// one has replayed up to it, or the wait ends (nil node: fall back).
func (r *ReplicaReader) waitForToken(ctx context.Context, o *readOpts, excluded uint64) (*node, error) {
	end := time.Now().Add(r.cfg.tokenWait)
	if d, ok := ctx.Deadline(); ok {
		end = d.Add(-r.cfg.fallbackReserve)
	}
	if !time.Now().Before(end) {
		return nil, nil
	}
	r.waited.Add(1)
	wctx, cancel := context.WithDeadline(ctx, end)
	defer cancel()
	poll := backoff.Policy{Min: 2 * time.Millisecond, Max: 50 * time.Millisecond}
	for i := 1; ; i++ {
		for _, n := range r.replicas {
			if excluded&(1<<n.idx) != 0 || !o.fresh(n.state.Load()) {
				continue
			}
			if l, err := n.replayLSN(wctx); err == nil && l >= o.token {
				return n, nil
			}
		}
		if !poll.Sleep(wctx, r.stop, i) {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			return nil, nil // the wait ended, or Close: read the primary
		}
	}
}
