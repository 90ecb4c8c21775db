package shareddb

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
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

// Defaults for the zero fields of Config.
const (
	DefaultMaxLag          = 5 * time.Second
	DefaultCheckInterval   = time.Second
	DefaultCheckTimeout    = time.Second // capped at CheckInterval
	DefaultTokenWait       = 2 * time.Second
	DefaultFallbackReserve = 100 * time.Millisecond
	DefaultRetries         = 1
)

// firstCheckTimeout is the least time New gives each node to answer its first check.
const firstCheckTimeout = 3 * time.Second

// maxReplicas bounds the replicas: the nodes a read tried are a 64-bit mask.
const maxReplicas = 63

// Config configures a ReplicaReader. Only PrimaryURL is required; every other
// field documents its default. New copies the Config.
type Config struct {
	// PrimaryURL is the primary's connection string (URL or key=value form).
	// Required. The primary must answer and must not be in recovery when New runs.
	PrimaryURL string
	// ReplicaURLs are the streaming replicas of the primary. Each must be in
	// recovery (a primary is detected and refused); an unreachable one is
	// logged and used once it answers. With none, every read goes to the
	// primary and New logs a warning.
	ReplicaURLs []string

	// MaxLag is the largest replay lag a replica may have to serve a read.
	// Zero means DefaultMaxLag (5 s); negative means any lag. Per read: MaxLag().
	// Lag is measured every CheckInterval, so a read may see data up to
	// MaxLag + CheckInterval old.
	MaxLag time.Duration
	// MaxLagBytes is the most WAL bytes a replica may be behind the primary.
	// Zero means no byte limit. Per read: MaxLagBytes().
	MaxLagBytes int64
	// Fallback says what happens when no replica qualifies: FallbackPrimary
	// (the default) or FallbackRefuse. FallbackRefuse with no ReplicaURLs is
	// rejected. Per read: WithFallback().
	Fallback Fallback
	// Picker chooses among qualifying replicas. Nil means LeastLag().
	Picker Picker

	// CheckInterval is how often each node is checked in the background.
	// Zero means DefaultCheckInterval (1 s). A stopped replica stops getting
	// reads within one interval (at once if a read finds it down first).
	CheckInterval time.Duration
	// CheckTimeout bounds each check, connect included. Zero means
	// DefaultCheckTimeout (1 s) capped at CheckInterval; larger than
	// CheckInterval is rejected.
	CheckTimeout time.Duration

	// TokenWait is how long a read given a Token (AtLeast) waits for a replica
	// to replay up to it when its context has no deadline. With a deadline it
	// waits until the deadline less FallbackReserve. Then it reads the
	// primary. Zero means DefaultTokenWait (2 s).
	TokenWait time.Duration
	// FallbackReserve is the part of a context's deadline kept for the
	// primary read after waiting for a token. Zero means DefaultFallbackReserve (100 ms).
	FallbackReserve time.Duration
	// Retries is how many times a read that failed on one node because of a
	// recovery conflict or a lost connection is retried on another node
	// (another replica, else the primary). Zero means DefaultRetries (1);
	// negative means never.
	Retries int

	// Contract, when set, is verified against the primary by New: a reader
	// whose tables changed under it fails at start, listing every difference.
	Contract *Contract
	// ConfigurePool, when set, adjusts each node's pool config (MaxConns,
	// tracer, ...) before New forces default_transaction_read_only=on. New
	// wraps AfterConnect and PrepareConn (the deprecated BeforeAcquire is
	// ignored: set PrepareConn instead).
	ConfigurePool func(node string, cfg *pgxpool.Config)
	// Logger receives health changes (Warn/Info) and fallbacks (Debug).
	// Nil means slog.Default().
	Logger *slog.Logger
	// Hook, when set, may implement RouteHook and/or CheckHook; detected once in New.
	Hook Hook
}

// Hook receives the reader's events. A value may implement any of RouteHook
// and CheckHook; New detects which, once, and rejects a Hook that implements
// neither. Hooks are called from many goroutines at once.
type Hook any

// RouteHook is told about every routing decision. It runs on the query path:
// keep it fast (count, don't log).
type RouteHook interface {
	OnRoute(RouteEvent)
}

// CheckHook is told about every background health check.
type CheckHook interface {
	OnCheck(NodeStatus)
}

// Outcome is what happened to one read.
type Outcome int

// Outcomes of routing.
const (
	Routed   Outcome = iota // sent to a fresh replica (or the primary when there are no replicas)
	FellBack                // sent to the primary because no replica qualified
	Refused                 // ErrNoFreshReplica
	Retried                 // failed on Node and is being retried elsewhere
)

// String names the outcome.
func (o Outcome) String() string {
	return [...]string{"routed", "fell back", "refused", "retried"}[o]
}

// RouteEvent describes one routing decision.
type RouteEvent struct {
	Outcome Outcome
	Node    string // the chosen node; for Retried, the one that failed; "" for Refused
	Err     error  // for Refused and Retried, why
}

// Stats counts routing decisions since New.
type Stats struct {
	Routed   int64 // reads given a node (FellBack included)
	FellBack int64 // reads sent to the primary because no replica qualified
	Refused  int64 // reads refused with ErrNoFreshReplica
	Retried  int64 // reads retried on another node after a conflict or a lost connection
	Waited   int64 // reads that waited for a replica to reach their Token
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
	View // reads with the Config's limits

	cfg       Config
	log       *slog.Logger
	primary   *node
	replicas  []*node
	nodes     []*node
	picker    Picker
	routeHook RouteHook
	checkHook CheckHook

	routed, fellBack, refused, retried, waited atomic.Int64
	// primaryLSN is the highest WAL position seen on the primary, by its
	// checker or by checkToken: tokens up to it are valid.
	primaryLSN atomic.Uint64

	closed    atomic.Bool
	cancel    context.CancelFunc
	wg        sync.WaitGroup
	closeOnce sync.Once
}

// New connects to the primary and the replicas, checks each once (within
// CheckTimeout, but at least 3 s: the primary must answer and not be in
// recovery; a replica that answers must be in recovery), verifies the Contract if set, and starts one background checker
// per node. Close releases everything.
func New(ctx context.Context, cfg Config) (*ReplicaReader, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	r := &ReplicaReader{cfg: cfg, picker: cfg.Picker}
	r.View = View{r: r, o: r.baseOpts()}
	r.log = cfg.Logger.With("component", "shareddb")
	r.routeHook, _ = cfg.Hook.(RouteHook)
	r.checkHook, _ = cfg.Hook.(CheckHook)
	if cfg.Hook != nil && r.routeHook == nil && r.checkHook == nil {
		return nil, fmt.Errorf("%w: Hook %T implements neither RouteHook nor CheckHook", ErrInvalidConfig, cfg.Hook)
	}

	urls := append([]string{cfg.PrimaryURL}, cfg.ReplicaURLs...)
	for i, u := range urls {
		name, role := "primary", RolePrimary
		if i > 0 {
			name, role = "replica"+strconv.Itoa(i), RoleReplica
		}
		n, err := newNode(i, name, role, u, cfg.ConfigurePool)
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
	if cfg.Contract != nil {
		if err := cfg.Contract.Verify(ctx, r.primary.pool); err != nil {
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

func (c *Config) setDefaults() error {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: "+format, append([]any{ErrInvalidConfig}, a...)...)
	}
	if c.PrimaryURL == "" {
		return bad("PrimaryURL is required")
	}
	if len(c.ReplicaURLs) > maxReplicas {
		return bad("%d ReplicaURLs: at most %d", len(c.ReplicaURLs), maxReplicas)
	}
	if c.Fallback != FallbackPrimary && c.Fallback != FallbackRefuse {
		return bad("unknown Fallback %d", c.Fallback)
	}
	if c.Fallback == FallbackRefuse && len(c.ReplicaURLs) == 0 {
		return bad("Fallback FallbackRefuse conflicts with no ReplicaURLs: every read would be refused")
	}
	if c.MaxLagBytes < 0 {
		return bad("negative MaxLagBytes %d", c.MaxLagBytes)
	}
	if c.CheckInterval < 0 || c.CheckTimeout < 0 || c.TokenWait < 0 || c.FallbackReserve < 0 {
		return bad("negative CheckInterval, CheckTimeout, TokenWait or FallbackReserve")
	}
	if c.MaxLag == 0 {
		c.MaxLag = DefaultMaxLag
	}
	if c.CheckInterval == 0 {
		c.CheckInterval = DefaultCheckInterval
	}
	if c.CheckTimeout == 0 {
		c.CheckTimeout = min(DefaultCheckTimeout, c.CheckInterval)
	}
	if c.CheckTimeout > c.CheckInterval {
		return bad("CheckTimeout %v is longer than CheckInterval %v", c.CheckTimeout, c.CheckInterval)
	}
	if c.TokenWait == 0 {
		c.TokenWait = DefaultTokenWait
	}
	if c.FallbackReserve == 0 {
		c.FallbackReserve = DefaultFallbackReserve
	}
	switch {
	case c.Retries == 0:
		c.Retries = DefaultRetries
	case c.Retries < 0:
		c.Retries = 0
	}
	if c.Picker == nil {
		c.Picker = LeastLag()
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	c.ReplicaURLs = append([]string(nil), c.ReplicaURLs...)
	return nil
}

// newNode parses url and makes the node's read-only pool (it connects lazily).
func newNode(idx int, name string, role NodeRole, url string, configure func(string, *pgxpool.Config)) (*node, error) {
	pc, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("%w: %s URL: %w", ErrInvalidConfig, name, err)
	}
	if configure != nil {
		configure(name, pc)
	}
	// Read-only by default: every transaction on these connections is
	// read-only unless it asks otherwise (BEGIN READ WRITE; BeginTx and ReadTx
	// lock theirs), and a connection that was switched back (SET ... = off) is
	// destroyed instead of being used again.
	pc.ConnConfig.RuntimeParams["default_transaction_read_only"] = "on"
	afterConnect := pc.AfterConnect
	pc.AfterConnect = func(ctx context.Context, c *pgx.Conn) error {
		if v := c.PgConn().ParameterStatus("default_transaction_read_only"); v != "" && v != "on" {
			return fmt.Errorf("%w: default_transaction_read_only is %q on new connection", ErrReadOnly, v)
		}
		if afterConnect != nil {
			return afterConnect(ctx, c)
		}
		return nil
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
		return nil, fmt.Errorf("%w: %s: %w", ErrInvalidConfig, name, err)
	}
	n := &node{
		idx: idx, name: name, role: role, pool: pool,
		addr:     net.JoinHostPort(pc.ConnConfig.Host, strconv.Itoa(int(pc.ConnConfig.Port))),
		checkCfg: pc.ConnConfig.Copy(),
	}
	n.state.Store(&nodeState{err: errors.New("not checked yet")})
	return n, nil
}

// firstCheck checks every node once, concurrently, and reports configuration errors.
func (r *ReplicaReader) firstCheck(ctx context.Context) error {
	// The first check allows for a slow first connect: New must not fail
	// because a busy server took more than CheckTimeout to accept.
	timeout := max(r.cfg.CheckTimeout, firstCheckTimeout)
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
	t := time.NewTicker(r.cfg.CheckInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		r.checkOnce(ctx, n, r.cfg.CheckTimeout)
	}
}

// checkOnce runs one check on n, stores the result and logs what changed.
func (r *ReplicaReader) checkOnce(ctx context.Context, n *node, timeout time.Duration) {
	var primaryLSN LSN
	if n != r.primary {
		primaryLSN = r.primary.state.Load().currentLSN
	}
	cctx, cancel := context.WithTimeout(ctx, timeout)
	s := n.check(cctx, primaryLSN)
	cancel()
	if ctx.Err() != nil {
		return // closing: keep the last real state
	}
	old := n.state.Swap(s)
	if n == r.primary && s.currentLSN > 0 {
		raise(&r.primaryLSN, s.currentLSN)
	}
	wrongRole := func(err error) bool { return errors.Is(err, ErrNotReplica) || errors.Is(err, ErrPrimaryInRecovery) }
	switch {
	case wrongRole(s.err) && !wrongRole(old.err):
		r.log.Error("node has the wrong role: reads skip it", "node", n.name, "addr", n.addr, "err", s.err)
	case old.healthy && !s.healthy:
		r.log.Warn("node unhealthy", "node", n.name, "addr", n.addr, "err", s.err)
	case !old.healthy && s.healthy && !old.checkedAt.IsZero():
		r.log.Info("node healthy again", "node", n.name, "addr", n.addr)
	}
	if n.role == RoleReplica && s.healthy && old.healthy && s.streaming != old.streaming {
		if s.streaming {
			r.log.Info("replica's WAL receiver streaming again", "node", n.name, "addr", n.addr)
		} else {
			r.log.Warn("replica's WAL receiver is not streaming: its lag is unknown, reads with a MaxLag skip it", "node", n.name, "addr", n.addr)
		}
	}
	if n.role == RoleReplica && s.healthy && old.healthy && r.cfg.MaxLag > 0 {
		was, is := old.lag > r.cfg.MaxLag || !old.lagKnown, s.lag > r.cfg.MaxLag || !s.lagKnown
		if was != is {
			r.log.Info("replica freshness changed", "node", n.name, "stale", is, "lag", s.lag, "lag_bytes", s.lagBytes, "replay_paused", s.paused)
		}
	}
	if r.checkHook != nil {
		r.checkHook.OnCheck(n.status())
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

// Stats returns the routing counters.
func (r *ReplicaReader) Stats() Stats {
	return Stats{
		Routed: r.routed.Load(), FellBack: r.fellBack.Load(), Refused: r.refused.Load(),
		Retried: r.retried.Load(), Waited: r.waited.Load(),
	}
}

// Token returns the primary's current WAL position as a Token: a read given
// it (AtLeast) sees everything committed on the primary before this call.
func (r *ReplicaReader) Token(ctx context.Context) (Token, error) {
	if r.closed.Load() {
		return Token{}, ErrClosed
	}
	return CurrentToken(ctx, r.primary.pool)
}

// Verify checks the Config's Contract against the primary now (New already
// did once). It returns nil when no Contract is set.
func (r *ReplicaReader) Verify(ctx context.Context) error {
	if r.closed.Load() {
		return ErrClosed
	}
	if r.cfg.Contract == nil {
		return nil
	}
	return r.cfg.Contract.Verify(ctx, r.primary.pool)
}

// Close stops the checkers and closes every pool, waiting for connections in
// use (rows not yet closed, acquired conns) to be released. Reads after Close
// return ErrClosed. Close is idempotent.
func (r *ReplicaReader) Close() error {
	r.closeOnce.Do(func() {
		r.closed.Store(true)
		if r.cancel != nil {
			r.cancel()
		}
		r.wg.Wait()
		r.closeNodes()
	})
	return nil
}

func (r *ReplicaReader) closeNodes() {
	for _, n := range r.nodes {
		n.closeConn()
		n.pool.Close()
	}
}

func (r *ReplicaReader) baseOpts() readOpts {
	return readOpts{maxLag: r.cfg.MaxLag, maxBytes: r.cfg.MaxLagBytes, fallback: r.cfg.Fallback}
}

// errAllTried ends retries when every node was excluded.
var errAllTried = errors.New("shareddb: every node failed")

// route chooses the node for one read: a qualifying replica, else (after
// waiting for a token) the fallback. excluded holds nodes that failed this read.
func (r *ReplicaReader) route(ctx context.Context, o *readOpts, excluded uint64) (*node, error) {
	if r.closed.Load() {
		return nil, ErrClosed
	}
	if o.token > 0 {
		if err := r.checkToken(ctx, o.token); err != nil {
			return nil, err
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
		n = ok[r.picker.Pick(c)]
	}
	if n == nil && behind {
		var err error
		if n, err = r.waitForToken(ctx, o, excluded); err != nil {
			return nil, err
		}
		if n == nil && excluded&1 == 0 {
			// The token asks for correctness: the primary has it, whatever the policy.
			r.note(r.primary, FellBack, nil)
			r.log.Debug("read falls back to the primary: no replica reached the token", "token", o.token)
			return r.primary, nil
		}
	}
	if n != nil {
		r.note(n, Routed, nil)
		return n, nil
	}
	return r.fallback(o, excluded)
}

func (r *ReplicaReader) note(n *node, oc Outcome, err error) {
	name := ""
	switch oc {
	case Routed, FellBack:
		r.routed.Add(1)
		n.routed.Add(1)
	}
	switch oc {
	case FellBack:
		r.fellBack.Add(1)
	case Refused:
		r.refused.Add(1)
	case Retried:
		r.retried.Add(1)
	}
	if r.routeHook != nil {
		if n != nil {
			name = n.name
		}
		r.routeHook.OnRoute(RouteEvent{Outcome: oc, Node: name, Err: err})
	}
}

func (r *ReplicaReader) fallback(o *readOpts, excluded uint64) (*node, error) {
	if excluded&1 != 0 {
		return nil, errAllTried
	}
	if len(r.replicas) == 0 {
		r.note(r.primary, Routed, nil)
		return r.primary, nil
	}
	if o.fallback == FallbackRefuse {
		err := fmt.Errorf("%w: %s", ErrNoFreshReplica, r.whyNoReplica(o, excluded))
		r.note(nil, Refused, err)
		return nil, err
	}
	r.note(r.primary, FellBack, nil)
	if r.log.Enabled(context.Background(), slog.LevelDebug) {
		r.log.Debug("read falls back to the primary", "why", r.whyNoReplica(o, excluded))
	}
	return r.primary, nil
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
// answer, or the read's deadline leaves no more than FallbackReserve, the
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
	if d, ok := ctx.Deadline(); ok && time.Until(d) <= r.cfg.FallbackReserve {
		// No time to ask: the read goes to the primary, which has every
		// write there is, and must not lose its reserve to the check.
		return nil
	}
	cctx, cancel := context.WithTimeout(ctx, r.cfg.CheckTimeout)
	cur, err := CurrentToken(cctx, r.primary.pool)
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
	end := time.Now().Add(r.cfg.TokenWait)
	if d, ok := ctx.Deadline(); ok {
		end = d.Add(-r.cfg.FallbackReserve)
	}
	if !time.Now().Before(end) {
		return nil, nil
	}
	r.waited.Add(1)
	wctx, cancel := context.WithDeadline(ctx, end)
	defer cancel()
	delay := 2 * time.Millisecond
	for {
		for _, n := range r.replicas {
			if excluded&(1<<n.idx) != 0 || !o.fresh(n.state.Load()) {
				continue
			}
			if l, err := n.replayLSN(wctx); err == nil && l >= o.token {
				return n, nil
			}
		}
		t := time.NewTimer(delay)
		select {
		case <-wctx.Done():
			t.Stop()
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			return nil, nil
		case <-t.C:
		}
		delay = min(delay*2, 50*time.Millisecond)
	}
}
