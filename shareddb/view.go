package shareddb

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// readOpts are the limits of one read: the reader's, changed by a View's options.
type readOpts struct {
	maxLag   time.Duration // negative: any
	maxBytes int64         // 0: any
	token    LSN
	fallback Fallback
	err      error // a bad ReadOption: every read of the View fails with it
}

func (o *readOpts) invalid(format string, a ...any) {
	if o.err == nil {
		o.err = fmt.Errorf("%w: "+format, append([]any{ErrInvalidOption}, a...)...)
	}
}

// fresh reports whether a replica in state s qualifies, leaving the token aside.
func (o *readOpts) fresh(s *nodeState) bool {
	if !s.healthy {
		return false
	}
	if o.maxLag >= 0 && (!s.lagKnown || s.lag > o.maxLag) {
		return false
	}
	return o.maxBytes == 0 || s.lagBytes <= o.maxBytes
}

// With returns a View whose reads use the reader's limits changed by opts
// (WithMaxLag, WithMaxLagBytes, WithFallback, WithToken). A View is cheap;
// keep one per kind of read, e.g.
//
//	fresh := reader.With(shareddb.WithMaxLag(time.Second), shareddb.WithFallback(shareddb.FallbackRefuse))
//
// A bad option (a nil one, a negative byte limit, an unknown Fallback) makes
// every read of the View fail with an error wrapping ErrInvalidOption.
func (r *ReplicaReader) With(opts ...ReadOption) *View {
	v := &View{r: r, o: r.View.o}
	for _, opt := range opts {
		if opt == nil {
			v.o.invalid("nil ReadOption")
			continue
		}
		opt.applyRead(&v.o)
	}
	return v
}

// View reads through a ReplicaReader with its own limits (see With). The
// ReplicaReader itself is the View with the reader's limits.
//
// Every read is routed once per attempt, on the query path, from the state
// the background checkers last saw: routing costs no round trip.
type View struct {
	r *ReplicaReader
	o readOpts
}

// attempts is the state of one read across its attempts.
type attempts struct {
	excluded uint64 // nodes that failed this read
	retries  int
	n        int      // attempts run
	last     decision // the last attempt's
	lastErr  error
}

// read is one read in flight: registered with the reader (for Close to
// drain) and traced.
type read struct {
	v      *View
	ctx    context.Context // the read's context: the one the tracers returned
	a      attempts
	start  time.Time
	traced bool
}

// begin registers rd as a read and routes its first attempt. When it
// reports true the read must end with finish, even if routing failed (err);
// when false (a bad option, ErrClosed) nothing started.
func (v *View) begin(rd *read, ctx context.Context, op Op, sql string, args []any) (bool, error) {
	if v.o.err != nil {
		return false, v.o.err
	}
	r := v.r
	if !r.enter() {
		return false, ErrClosed
	}
	*rd = read{v: v, ctx: ctx}
	d, err := v.next(ctx, &rd.a)
	if len(r.tr.query) > 0 {
		data := TraceQueryStartData{
			Op: op, SQL: sql, Args: args, Route: d.route, MaxLag: v.o.maxLag,
			Token: Token{lsn: v.o.token}, Waited: d.waited,
		}
		if n := d.n; n != nil {
			data.Node, data.Addr, data.Role = n.name, n.addr, n.role
			if n.role == RoleReplica {
				s := n.state.Load()
				data.Lag, data.LagKnown, data.LagBytes = s.lag, s.lagKnown, s.lagBytes
			}
		}
		for _, t := range r.tr.query {
			rd.ctx = t.TraceQueryStart(rd.ctx, data)
		}
		rd.traced, rd.start = true, time.Now()
	}
	return true, err
}

// finish ends the read with err: it traces the end and deregisters the read.
func (rd *read) finish(err error) {
	r := rd.v.r
	if rd.traced {
		data := TraceQueryEndData{Err: err, Route: rd.a.last.route, Attempts: rd.a.n, Duration: time.Since(rd.start)}
		if n := rd.a.last.n; n != nil {
			data.Node, data.Addr, data.Role = n.name, n.addr, n.role
		}
		for _, t := range r.tr.query {
			t.TraceQueryEnd(rd.ctx, data)
		}
	}
	r.leave()
}

// do runs f on the routed node and retries it on another node after a
// recovery conflict or a lost connection (WithRetries times).
func (v *View) do(ctx context.Context, op Op, sql string, args []any, f func(ctx context.Context, n *node) error) (err error) {
	var rd read
	started, err := v.begin(&rd, ctx, op, sql, args)
	if !started {
		return err
	}
	defer func() { rd.finish(err) }()
	for err == nil {
		n := rd.a.last.n
		rd.a.n++
		if err = f(rd.ctx, n); err == nil {
			return nil
		}
		var again bool
		if again, err = v.failed(rd.ctx, &rd.a, n, err); !again {
			return err
		}
		_, err = v.next(rd.ctx, &rd.a)
	}
	return err
}

// next routes the next attempt of a read.
func (v *View) next(ctx context.Context, a *attempts) (decision, error) {
	d, err := v.r.route(ctx, &v.o, a.excluded)
	if err != nil && errors.Is(err, errAllTried) && a.lastErr != nil {
		return d, a.lastErr
	}
	if d.n != nil || a.n == 0 {
		a.last = d
	}
	return d, err
}

// failed handles an attempt's error on n: it reports whether to try another
// node, and the error to return otherwise.
func (v *View) failed(ctx context.Context, a *attempts, n *node, err error) (bool, error) {
	r := v.r
	kind, err := r.nodeErr(ctx, n, err)
	if r.cancelled.Load() && !errors.Is(err, pgx.ErrNoRows) {
		return false, fmt.Errorf("%w: read cancelled after the drain timeout: %w", ErrClosed, err)
	}
	if (kind == errDown || kind == errConflict) && ctx.Err() == nil && a.retries < r.cfg.retries {
		a.retries++
		a.excluded |= 1 << n.idx
		a.lastErr = err
		r.retried.Add(1)
		r.log.Info("read retried on another node", "node", n.name, "err", err)
		for _, t := range r.tr.retry {
			t.TraceQueryRetry(ctx, TraceQueryRetryData{Node: n.name, Addr: n.addr, Err: err, Attempt: a.n})
		}
		return true, err
	}
	return false, err
}

// nodeErr classifies an error from node n, marks n down after a lost
// connection, and wraps server and connection errors with the node's name.
func (r *ReplicaReader) nodeErr(ctx context.Context, n *node, err error) (errKind, error) {
	if errors.Is(err, pgx.ErrNoRows) || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return errOther, err
	}
	kind := classify(err)
	if kind == errDown && ctx.Err() == nil && n.markDown(err) {
		// The same change a failed check reports: the next successful
		// check reports NodeUp, so tracers see every down/up pair.
		r.log.Warn("node unhealthy", "node", n.name, "addr", n.addr, "err", err)
		if len(r.tr.change) > 0 {
			r.traceChanges(ctx, n.status(), NodeDown)
		}
	}
	var pgErr *pgconn.PgError
	if kind == errOther && !errors.As(err, &pgErr) {
		return kind, err // the caller's own error (ReadTx) or a scan error
	}
	return kind, wrapNodeErr(n.name, kind, err)
}

// Query runs a read on the best node. A recovery conflict or a lost
// connection before the first row is retried on another node
// (WithRetries); an error after rows have been read is reported by
// rows.Err(), wrapped with the node's name and, for a recovery conflict,
// ErrRecoveryConflict. A write fails with ErrReadOnly. The read is in
// flight (for Close, and for QueryTracer) until the rows are closed or read
// to the end.
func (v *View) Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error) {
	rs := &nodeRows{sql: sql, args: args}
	rd := &rs.rd
	started, err := v.begin(rd, ctx, OpQuery, sql, args)
	if !started {
		return nil, err
	}
	if err == nil {
		err = rs.start()
	}
	if err != nil {
		rd.finish(err)
		return nil, err
	}
	return rs, nil
}

// nodeRows reads rows from one node, moving to another one if that node
// fails before the first row, and wraps the errors with the node's name.
type nodeRows struct {
	pgx.Rows
	rd      read
	sql     string
	args    []any
	n       *node
	started bool  // a row was read: no more retries
	err     error // a retry's own failure
	done    bool  // finished: the read is over
}

// start runs the query on the routed node, retrying failures to start it.
func (rs *nodeRows) start() error {
	rd := &rs.rd
	for {
		n := rd.a.last.n
		rd.a.n++
		rows, err := n.pool.Query(rd.ctx, rs.sql, rs.args...)
		if err == nil {
			rs.Rows, rs.n = rows, n
			return nil
		}
		again, err := rd.v.failed(rd.ctx, &rd.a, n, err)
		if !again {
			return err
		}
		if _, err := rd.v.next(rd.ctx, &rd.a); err != nil {
			return err
		}
	}
}

// Next advances to the next row; see Query for retries.
func (rs *nodeRows) Next() bool {
	for {
		if rs.err != nil {
			rs.finish()
			return false
		}
		if rs.Rows.Next() {
			rs.started = true
			return true
		}
		err := rs.Rows.Err()
		if rs.started || err == nil {
			rs.finish()
			return false
		}
		again, err := rs.rd.v.failed(rs.rd.ctx, &rs.rd.a, rs.n, err)
		if !again {
			rs.err = err
			continue
		}
		rs.Rows.Close()
		if _, err := rs.rd.v.next(rs.rd.ctx, &rs.rd.a); err != nil {
			rs.err = err
			continue
		}
		if err := rs.start(); err != nil {
			rs.err = err
		}
	}
}

// Close closes the rows and ends the read.
func (rs *nodeRows) Close() {
	rs.Rows.Close()
	rs.finish()
}

// finish ends the read once, when the rows are closed or read to the end.
func (rs *nodeRows) finish() {
	if rs.done {
		return
	}
	rs.done = true
	rs.Rows.Close()
	rs.rd.finish(rs.Err())
}

// Err returns the error met while reading, wrapped as described by Query.
func (rs *nodeRows) Err() error {
	if rs.err != nil {
		return rs.err
	}
	err := rs.Rows.Err()
	if err == nil {
		return nil
	}
	r := rs.rd.v.r
	_, err = r.nodeErr(rs.rd.ctx, rs.n, err)
	if r.cancelled.Load() {
		err = fmt.Errorf("%w: read cancelled after the drain timeout: %w", ErrClosed, err)
	}
	return err
}

// QueryRow runs a read expected to return at most one row. The query runs
// when Scan is called, so a recovery conflict or a lost connection is retried
// on another node (WithRetries). Scan returns pgx.ErrNoRows unwrapped.
func (v *View) QueryRow(ctx context.Context, sql string, args ...any) pgx.Row {
	return &row{v: v, ctx: ctx, sql: sql, args: args}
}

type row struct {
	v    *View
	ctx  context.Context
	sql  string
	args []any
}

func (w *row) Scan(dest ...any) error {
	return w.v.do(w.ctx, OpQueryRow, w.sql, w.args, func(ctx context.Context, n *node) error {
		return n.pool.QueryRow(ctx, w.sql, w.args...).Scan(dest...)
	})
}

// BeginTx starts a read-only transaction on the best node (opts.AccessMode is
// forced to read-only; asking for ReadWrite is ErrReadOnly). The transaction
// takes its snapshot as it begins, so PostgreSQL refuses to switch it to
// read-write (SET TRANSACTION READ WRITE) later. Errors inside the
// transaction are not retried; use ReadTx for that. Serializable isolation
// is refused by hot standbys. For QueryTracer and the drain of Close the
// read ends when BeginTx returns; Close still waits, as it closes the
// pools, for the transaction to end (Commit or Rollback).
func (v *View) BeginTx(ctx context.Context, opts pgx.TxOptions) (pgx.Tx, error) {
	if opts.AccessMode == pgx.ReadWrite {
		return nil, fmt.Errorf("%w: BeginTx with AccessMode ReadWrite", ErrReadOnly)
	}
	opts = lockedReadOnly(opts)
	var tx pgx.Tx
	err := v.do(ctx, OpBeginTx, "", nil, func(ctx context.Context, n *node) error {
		t, err := n.pool.BeginTx(ctx, opts)
		tx = t
		return err
	})
	return tx, err
}

// ReadTx runs fn in a read-only transaction on the best node and commits.
// When fn (or the commit) fails because of a recovery conflict or a lost
// connection, the whole transaction is run again on another node
// (WithRetries), so fn must only read and may run more than once. Any
// other error from fn rolls back and is returned as is.
func (v *View) ReadTx(ctx context.Context, opts pgx.TxOptions, fn func(pgx.Tx) error) error {
	if opts.AccessMode == pgx.ReadWrite {
		return fmt.Errorf("%w: ReadTx with AccessMode ReadWrite", ErrReadOnly)
	}
	opts = lockedReadOnly(opts)
	return v.do(ctx, OpReadTx, "", nil, func(ctx context.Context, n *node) error {
		tx, err := n.pool.BeginTx(ctx, opts)
		if err != nil {
			return err
		}
		if err := fn(tx); err != nil {
			_ = tx.Rollback(context.WithoutCancel(ctx))
			return err
		}
		return tx.Commit(ctx)
	})
}

// Acquire returns a connection of the best node's pool, for work the View's
// methods do not cover (COPY TO, pgx batches, LISTEN). The connection is
// read-only by default (default_transaction_read_only=on); if the caller
// switches that off, the connection is destroyed instead of being used again.
// An explicit BEGIN READ WRITE on it can still write when it is the primary's:
// only the role's privileges stop that (Contract.RoleSQL).
// Release it when done: Close waits for it.
func (v *View) Acquire(ctx context.Context) (*pgxpool.Conn, error) {
	var c *pgxpool.Conn
	err := v.do(ctx, OpAcquire, "", nil, func(ctx context.Context, n *node) error {
		conn, err := n.pool.Acquire(ctx)
		c = conn
		return err
	})
	return c, err
}

// Pool returns the pool of the best node now, with its name ("primary",
// "replica1", ...), for code that wants a *pgxpool.Pool. Its connections are
// read-only. The choice is made once: the pool keeps pointing at that node
// even if it falls behind later; do not Close it (Close the reader).
func (v *View) Pool(ctx context.Context) (*pgxpool.Pool, string, error) {
	var rd read
	started, err := v.begin(&rd, ctx, OpPool, "", nil)
	if !started {
		return nil, "", err
	}
	if err == nil {
		rd.a.n = 1 // the node is handed out
	}
	rd.finish(err)
	if err != nil {
		return nil, "", err
	}
	n := rd.a.last.n
	return n.pool, n.name, nil
}

// lockedReadOnly returns opts with a BeginQuery that starts a read-only
// transaction and takes its first snapshot at once. default_transaction_read_only
// is only a default: until its first query a transaction may still be switched
// with SET TRANSACTION READ WRITE, and on the primary the write would go
// through. After the first snapshot PostgreSQL refuses the switch.
func lockedReadOnly(opts pgx.TxOptions) pgx.TxOptions {
	begin := opts.BeginQuery
	if begin == "" {
		var b strings.Builder
		b.WriteString("begin")
		if opts.IsoLevel != "" {
			b.WriteString(" isolation level ")
			b.WriteString(string(opts.IsoLevel))
		}
		b.WriteString(" read only")
		if opts.DeferrableMode != "" {
			b.WriteByte(' ')
			b.WriteString(string(opts.DeferrableMode))
		}
		begin = b.String()
	}
	// A caller's BeginQuery may ask for read-write: override it, then lock.
	opts.AccessMode = pgx.ReadOnly
	opts.BeginQuery = begin + "; set transaction read only; select"
	return opts
}
