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

// readOpts are the limits of one read, resolved against the Config.
type readOpts struct {
	maxLag   time.Duration // negative: any
	maxBytes int64         // 0: any
	token    LSN
	fallback Fallback
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

// ReadOption sets a limit for the reads of a View (see ReplicaReader.With).
type ReadOption func(*readOpts)

// MaxLag overrides Config.MaxLag: the largest replay lag a replica may have
// to serve these reads. Negative means any lag; zero means caught up.
func MaxLag(d time.Duration) ReadOption { return func(o *readOpts) { o.maxLag = d } }

// MaxLagBytes overrides Config.MaxLagBytes; zero means no byte limit.
func MaxLagBytes(n int64) ReadOption {
	return func(o *readOpts) { o.maxBytes = max(n, 0) }
}

// AtLeast makes these reads see everything up to the token: a replica serves
// them only once it has replayed that far. When none has, the read waits (up
// to its context's deadline less Config.FallbackReserve, or Config.TokenWait
// without a deadline), then reads from the primary, even under
// FallbackRefuse: the token asks for correctness, not for a replica. A token
// ahead of the primary's current WAL position fails the read with
// ErrInvalidToken, at once: a token beyond every WAL position the reader has
// seen costs one pg_current_wal_lsn() on the primary to tell.
func AtLeast(t Token) ReadOption { return func(o *readOpts) { o.token = t.lsn } }

// WithFallback overrides Config.Fallback for these reads.
func WithFallback(f Fallback) ReadOption { return func(o *readOpts) { o.fallback = f } }

// With returns a View whose reads use the reader's limits changed by opts.
// A View is cheap; keep one per kind of read, e.g.
//
//	fresh := reader.With(shareddb.MaxLag(time.Second), shareddb.WithFallback(shareddb.FallbackRefuse))
func (r *ReplicaReader) With(opts ...ReadOption) *View {
	v := &View{r: r, o: r.View.o}
	for _, opt := range opts {
		opt(&v.o)
	}
	return v
}

// View reads through a ReplicaReader with its own limits (see With). The
// ReplicaReader itself is the View with the Config's limits.
//
// Every read is routed once per attempt, on the query path, from the state
// the background checkers last saw: routing costs no round trip.
type View struct {
	r *ReplicaReader
	o readOpts
}

// attempts is the retry state of one read.
type attempts struct {
	excluded uint64 // nodes that failed this read
	retries  int
	lastErr  error
}

// do runs f on the routed node and retries it on another node after a
// recovery conflict or a lost connection (Config.Retries times).
func (v *View) do(ctx context.Context, f func(n *node) error) error {
	var a attempts
	for {
		n, err := v.next(ctx, &a)
		if err != nil {
			return err
		}
		err = f(n)
		if err == nil {
			return nil
		}
		again, err := v.failed(ctx, &a, n, err)
		if !again {
			return err
		}
	}
}

// next routes the next attempt of a read.
func (v *View) next(ctx context.Context, a *attempts) (*node, error) {
	n, err := v.r.route(ctx, &v.o, a.excluded)
	if err != nil && errors.Is(err, errAllTried) && a.lastErr != nil {
		return nil, a.lastErr
	}
	return n, err
}

// failed handles an attempt's error on n: it reports whether to try another
// node, and the error to return otherwise.
func (v *View) failed(ctx context.Context, a *attempts, n *node, err error) (bool, error) {
	r := v.r
	kind, err := r.nodeErr(ctx, n, err)
	if (kind == errDown || kind == errConflict) && ctx.Err() == nil && a.retries < r.cfg.Retries {
		a.retries++
		a.excluded |= 1 << n.idx
		a.lastErr = err
		r.note(n, Retried, err)
		r.log.Info("read retried on another node", "node", n.name, "err", err)
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
	if kind == errDown && ctx.Err() == nil {
		n.markDown(err)
	}
	var pgErr *pgconn.PgError
	if kind == errOther && !errors.As(err, &pgErr) {
		return kind, err // the caller's own error (ReadTx) or a scan error
	}
	return kind, wrapNodeErr(n.name, kind, err)
}

// Query runs a read on the best node. A recovery conflict or a lost
// connection before the first row is retried on another node
// (Config.Retries); an error after rows have been read is reported by
// rows.Err(), wrapped with the node's name and, for a recovery conflict,
// ErrRecoveryConflict. A write fails with ErrReadOnly.
func (v *View) Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error) {
	rs := &nodeRows{v: v, ctx: ctx, sql: sql, args: args}
	if err := rs.start(); err != nil {
		return nil, err
	}
	return rs, nil
}

// nodeRows reads rows from one node, moving to another one if that node
// fails before the first row, and wraps the errors with the node's name.
type nodeRows struct {
	pgx.Rows
	v       *View
	ctx     context.Context
	sql     string
	args    []any
	n       *node
	a       attempts
	started bool  // a row was read: no more retries
	err     error // a retry's own failure
}

// start runs the query on the next node, retrying failures to start it.
func (rs *nodeRows) start() error {
	for {
		n, err := rs.v.next(rs.ctx, &rs.a)
		if err != nil {
			return err
		}
		rows, err := n.pool.Query(rs.ctx, rs.sql, rs.args...)
		if err == nil {
			rs.Rows, rs.n = rows, n
			return nil
		}
		again, err := rs.v.failed(rs.ctx, &rs.a, n, err)
		if !again {
			return err
		}
	}
}

// Next advances to the next row; see Query for retries.
func (rs *nodeRows) Next() bool {
	for {
		if rs.err != nil {
			return false
		}
		if rs.Rows.Next() {
			rs.started = true
			return true
		}
		err := rs.Rows.Err()
		if rs.started || err == nil {
			return false
		}
		again, err := rs.v.failed(rs.ctx, &rs.a, rs.n, err)
		if !again {
			rs.err = err
			return false
		}
		if err := rs.start(); err != nil {
			rs.err = err
			return false
		}
	}
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
	_, err = rs.v.r.nodeErr(rs.ctx, rs.n, err)
	return err
}

// QueryRow runs a read expected to return at most one row. The query runs
// when Scan is called, so a recovery conflict or a lost connection is retried
// on another node (Config.Retries). Scan returns pgx.ErrNoRows unwrapped.
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
	return w.v.do(w.ctx, func(n *node) error {
		return n.pool.QueryRow(w.ctx, w.sql, w.args...).Scan(dest...)
	})
}

// BeginTx starts a read-only transaction on the best node (opts.AccessMode is
// forced to read-only; asking for ReadWrite is ErrReadOnly). The transaction
// takes its snapshot as it begins, so PostgreSQL refuses to switch it to
// read-write (SET TRANSACTION READ WRITE) later. Errors inside the
// transaction are not retried; use ReadTx for that. Serializable isolation
// is refused by hot standbys.
func (v *View) BeginTx(ctx context.Context, opts pgx.TxOptions) (pgx.Tx, error) {
	if opts.AccessMode == pgx.ReadWrite {
		return nil, fmt.Errorf("%w: BeginTx with AccessMode ReadWrite", ErrReadOnly)
	}
	opts = lockedReadOnly(opts)
	var tx pgx.Tx
	err := v.do(ctx, func(n *node) error {
		t, err := n.pool.BeginTx(ctx, opts)
		tx = t
		return err
	})
	return tx, err
}

// ReadTx runs fn in a read-only transaction on the best node and commits.
// When fn (or the commit) fails because of a recovery conflict or a lost
// connection, the whole transaction is run again on another node
// (Config.Retries), so fn must only read and may run more than once. Any
// other error from fn rolls back and is returned as is.
func (v *View) ReadTx(ctx context.Context, opts pgx.TxOptions, fn func(pgx.Tx) error) error {
	if opts.AccessMode == pgx.ReadWrite {
		return fmt.Errorf("%w: ReadTx with AccessMode ReadWrite", ErrReadOnly)
	}
	opts = lockedReadOnly(opts)
	return v.do(ctx, func(n *node) error {
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
// Release it when done.
func (v *View) Acquire(ctx context.Context) (*pgxpool.Conn, error) {
	var c *pgxpool.Conn
	err := v.do(ctx, func(n *node) error {
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
	n, err := v.r.route(ctx, &v.o, 0)
	if err != nil {
		return nil, "", err
	}
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
