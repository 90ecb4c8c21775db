package outbox

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/go-integration/patterns/broker"
	"github.com/go-integration/patterns/internal/hooks"
)

// ErrRunning is returned by Run when the relay is already running.
var ErrRunning = errors.New("outbox: relay already running")

// ErrClosed is returned by Run once Close was called, and by every method
// that needs the database after Close.
var ErrClosed = errors.New("outbox: relay closed")

// errDrainTimeout cancels the batches still in flight when Close's drain
// timeout passed.
var errDrainTimeout = errors.New("outbox: drain timeout")

// Stats are the relay's counters since NewRelay: a snapshot, read without I/O.
type Stats struct {
	// Batches counts committed batches.
	Batches uint64
	// Published counts messages the publisher confirmed and a batch marked.
	Published uint64
	// SetAside counts messages the broker refused as invalid
	// (broker.ErrInvalidMessage or a broker.Permanent error): they are
	// marked published with the reason in the error column, and not retried.
	SetAside uint64
	// Failed counts messages whose Publish failed (each attempt counts);
	// they stay pending and are published again.
	Failed uint64
	// Failures counts failed batches (a Publish error or a database error).
	Failures uint64
	// Recovered counts rows a TxPublisher's checkpoints showed already
	// published (a relay died between the broker's commit and its own)
	// and that were marked without publishing them again. They are
	// counted in Published too.
	Recovered uint64
}

// Backlog is what waits in the outbox table, for all relays.
type Backlog struct {
	// Table is the outbox table, as given to WithTable.
	Table string
	// Pending is how many rows wait to be published.
	Pending int64
	// OldestPending is the age of the oldest pending row; zero when none.
	OldestPending time.Duration
}

// Relay publishes the rows of an outbox table through a broker.Publisher, in
// order per key, marking each row published only after the publisher
// confirmed it. Several relays (processes or Relay values) may run on one
// table: they share the ordering buckets through PostgreSQL advisory locks.
// Delivery is at-least-once: a relay that dies between publish and mark
// leaves the rows pending and they are published again; through a
// TxPublisher it is exactly once for consumers reading committed records.
type Relay struct {
	pool *pgxpool.Pool
	pub  broker.Publisher
	txp  TxPublisher // pub, when it publishes in transactions with checkpoints
	t    *Table
	cfg  config
	log  *slog.Logger

	batchTracers   []BatchTracer
	backoffTracers []BackoffTracer

	batches, published, setAside, failed, failures, recovered atomic.Uint64

	mu       sync.Mutex
	closing  chan struct{}      // closed by Close
	runDone  chan struct{}      // closed when the current Run returns; nil when none runs
	hardStop context.CancelFunc // cancels the current Run's batches

	claimSQL, fetchSQL, markSQL, refuseSQL, backlogSQL, cleanupSQL string
}

// beginSQL opens a batch's transaction and keeps its statements on the
// indexes whatever the planner statistics say. Without statistics (a table
// never analyzed, or analyzed before a burst) the planner believes a few
// rows are pending and would read every pending row of the claimed buckets
// and sort them to return BatchSize; with sequential scans, bitmap scans and
// sorts off it can only walk the partial (bucket, seq) index, reading the
// rows it returns. "set local" ends with the transaction.
const beginSQL = `begin; set local enable_seqscan = off; set local enable_bitmapscan = off; set local enable_sort = off`

// NewRelay returns a relay from pool's outbox table (WithTable) to pub. It
// checks its options but does not touch the database; Run does. The relay
// never closes pool or pub. When pub is a TxPublisher (kafka.TxPublisher),
// the relay publishes each batch in a broker transaction with checkpoints,
// exactly once for read_committed consumers (see TxPublisher).
func NewRelay(pool *pgxpool.Pool, pub broker.Publisher, opts ...Option) (*Relay, error) {
	if pool == nil {
		return nil, fmt.Errorf("%w: NewRelay needs a pool", ErrInvalidOption)
	}
	if pub == nil {
		return nil, fmt.Errorf("%w: NewRelay needs a publisher", ErrInvalidOption)
	}
	cfg, err := newConfig(opts)
	if err != nil {
		return nil, err
	}
	t := mustTable(cfg.table) // checked by WithTable
	r := &Relay{
		pool: pool, pub: pub, t: t, cfg: cfg, log: cfg.logger.With("outbox", t.name),
		batchTracers:   hooks.Pick[BatchTracer](cfg.tracers),
		backoffTracers: hooks.Pick[BackoffTracer](cfg.tracers),
		closing:        make(chan struct{}),
	}
	r.txp, _ = pub.(TxPublisher)

	id := t.ident
	// Claim: walk the buckets from a random offset, lock (for this
	// transaction) those that have pending rows, up to $3 of them, and
	// return them in that order. The lock key is (table oid, bucket): unique
	// per table in the database. The probe is one step of the partial
	// (bucket, seq) index per bucket.
	r.claimSQL = fmt.Sprintf(`select s.b::int2 from (select ((g + $1) %% %d) as b from generate_series(0, %d) g) s
where case when (select o.seq from %s o where o.bucket = s.b and o.published_at is null order by o.seq limit 1) is not null
           then pg_try_advisory_xact_lock($2::int4, s.b::int4) else false end
limit $3`, Buckets, Buckets-1, id)
	// Fetch runs as its own statement, after the claim: its snapshot is taken
	// once the locks are held, so it sees every mark committed by the relay
	// that held them before. Per claimed bucket, in claim order, a range scan
	// of the partial (bucket, seq) index from the bucket's oldest pending
	// row; the outer limit stops the scans once $2 rows came, so the query
	// reads no more rows than it returns. Each bucket gives a prefix of its
	// pending rows in seq order, which keeps the order of every key.
	r.fetchSQL = `select o.seq, o.bucket, o.id, o.topic, o.key, o.header, o.payload, o.priority, o.event_time, o.created_at
from unnest($1::int2[]) as b(bucket)
cross join lateral (
  select seq, bucket, id, topic, key, header, payload, priority, event_time, created_at from ` + id + `
  where bucket = b.bucket and published_at is null order by seq limit $2
) o
limit $2`
	r.markSQL = `update ` + id + ` set published_at = now() where seq = any($1::int8[])`
	r.refuseSQL = `update ` + id + ` o set published_at = now(), error = u.error
from unnest($1::int8[], $2::text[]) as u(seq, error) where o.seq = u.seq`
	r.backlogSQL = `select count(*), coalesce(extract(epoch from now() - min(created_at)), 0)::float8 from ` + id + ` where published_at is null`
	r.cleanupSQL = `delete from ` + id + ` where seq in (select seq from ` + id + `
where published_at < now() - make_interval(secs => $1) limit $2)`
	return r, nil
}

// Run publishes pending rows until ctx is done (it returns nil) or Close is
// called (ErrClosed). Workers wake on NOTIFY from Add, or every poll
// interval, and back off while the publisher or the database fails. When ctx
// ends, a batch in flight is abandoned (its rows stay pending, or are marked
// if the publisher already confirmed them); Close lets it finish instead.
// Run returns once every goroutine it started has ended. It fails at once
// when the table does not exist, with an error wrapping broker.ErrClosed
// when the publisher was closed, and with ErrRunning when the relay is
// already running.
func (r *Relay) Run(ctx context.Context) error {
	r.mu.Lock()
	if r.isClosed() {
		r.mu.Unlock()
		return ErrClosed
	}
	if r.runDone != nil {
		r.mu.Unlock()
		return ErrRunning
	}
	done := make(chan struct{})
	// hard carries the batches: it ends with ctx, after Close's drain
	// timeout, or when the publisher was closed (the cause). soft ends with
	// hard or at Close: the waits between batches, the listener and the
	// cleanup run on it.
	hard, stop := context.WithCancelCause(ctx)
	r.runDone = done
	r.hardStop = func() { stop(errDrainTimeout) }
	r.mu.Unlock()

	soft, softStop := context.WithCancel(hard)
	var wg sync.WaitGroup
	wg.Go(func() {
		select {
		case <-r.closing:
			softStop()
		case <-soft.Done():
		}
	})
	err := r.run(hard, soft, stop)
	softStop()
	wg.Wait()
	cause := context.Cause(hard)
	stop(nil)

	r.mu.Lock()
	r.runDone = nil
	r.hardStop = nil
	closed := r.isClosed()
	r.mu.Unlock()
	close(done)

	switch {
	case err != nil:
		return err
	case ctx.Err() == nil && cause != nil && !errors.Is(cause, context.Canceled) && !errors.Is(cause, errDrainTimeout):
		return cause // the publisher was closed
	case closed:
		return ErrClosed
	}
	return nil
}

func (r *Relay) run(hard, soft context.Context, stop context.CancelCauseFunc) error {
	classid, err := r.resolve(soft)
	if err != nil {
		if soft.Err() != nil {
			return nil
		}
		return err
	}
	wakes := make([]chan struct{}, r.cfg.workers)
	for i := range wakes {
		wakes[i] = make(chan struct{}, 1)
	}
	wakeAll := func() {
		for _, w := range wakes {
			select {
			case w <- struct{}{}:
			default:
			}
		}
	}
	var wg sync.WaitGroup
	if !r.cfg.noListen {
		wg.Go(func() { r.listen(soft, classid, wakeAll) })
	}
	if r.cfg.cleanupInterval > 0 {
		wg.Go(func() { r.cleanupLoop(soft) })
	}
	for i := range r.cfg.workers {
		w := &worker{id: i, classid: classid, claim: r.cfg.claimBuckets}
		wg.Go(func() { r.work(hard, soft, w, wakes[i], stop) })
	}
	wg.Wait()
	return nil
}

// Close stops the relay: Run takes no new batch, lets the batches in flight
// publish and mark their rows for at most the drain timeout (WithDrainTimeout),
// then cancels them (their rows stay pending) and returns ErrClosed. Close
// waits for Run to return, and may be called more than once; afterwards Run,
// Backlog and Cleanup fail with ErrClosed. It closes neither the pool nor the
// publisher.
func (r *Relay) Close() error {
	r.mu.Lock()
	if !r.isClosed() {
		close(r.closing)
	}
	done, hardStop := r.runDone, r.hardStop
	r.mu.Unlock()
	if done == nil {
		return nil
	}
	t := time.NewTimer(r.cfg.drainTimeout)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
		hardStop()
		<-done
	}
	return nil
}

func (r *Relay) isClosed() bool {
	select {
	case <-r.closing:
		return true
	default:
		return false
	}
}

// resolve finds the table's oid (the advisory-lock class), retrying with
// backoff while the database is unreachable.
func (r *Relay) resolve(ctx context.Context) (int32, error) {
	for n := 1; ; n++ {
		var oid uint32
		err := r.pool.QueryRow(ctx, `select $1::text::regclass::oid`, r.t.ident).Scan(&oid)
		if err == nil {
			return int32(oid), nil
		}
		var pe *pgconn.PgError
		if errors.As(err, &pe) && pe.Code == "42P01" { // undefined_table
			return 0, fmt.Errorf("outbox: table %s: %w", r.t.name, err)
		}
		if ctx.Err() != nil {
			return 0, ctx.Err()
		}
		if !r.backoff(ctx, -1, n, "outbox relay: cannot reach the database", err) {
			return 0, ctx.Err()
		}
	}
}

// backoff logs and traces a failure, then waits; it reports whether the
// whole wait passed (false when ctx ended).
func (r *Relay) backoff(ctx context.Context, worker, failures int, msg string, err error) bool {
	d := r.cfg.backoff.Wait(failures)
	if worker >= 0 {
		r.log.Warn(msg, "worker", worker, "backoff", d, "error", err)
	} else {
		r.log.Warn(msg, "backoff", d, "error", err)
	}
	for _, t := range r.backoffTracers {
		t.TraceBackoff(ctx, TraceBackoffData{Table: r.t.name, Worker: worker, Failures: failures, Wait: d, Err: err})
	}
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-tm.C:
		return true
	}
}

// worker is the state of one of the relay's workers.
type worker struct {
	id       int
	classid  int32
	claim    int // how many buckets the next batch claims at most
	failures int // consecutive failed batches
}

// work runs batches while they find rows, waits for a wake-up or the poll
// interval when idle, and backs off after failures. Batches run on hard;
// soft ending (Close, or hard ending) stops it between batches. A closed
// publisher stops the whole Run through stop.
func (r *Relay) work(hard, soft context.Context, w *worker, wake <-chan struct{}, stop context.CancelCauseFunc) {
	poll := time.NewTimer(r.cfg.pollInterval)
	defer poll.Stop()
	for soft.Err() == nil {
		n, err := r.batch(hard, w)
		if hard.Err() != nil {
			return
		}
		if errors.Is(err, broker.ErrClosed) {
			r.log.Error("outbox relay: publisher closed; stopping", "worker", w.id, "error", err)
			stop(err)
			return
		}
		if err != nil {
			w.failures++
			if !r.backoff(soft, w.id, w.failures, "outbox relay: batch failed; backing off", err) {
				return
			}
			continue
		}
		if w.failures > 0 {
			r.log.Info("outbox relay: publishing again", "worker", w.id, "after_failures", w.failures)
			w.failures = 0
		}
		if n > 0 {
			continue
		}
		if !poll.Stop() {
			select {
			case <-poll.C:
			default:
			}
		}
		poll.Reset(r.cfg.pollInterval)
		select {
		case <-soft.Done():
			return
		case <-wake:
		case <-poll.C:
		}
	}
}

type row struct {
	seq     int64
	bucket  int16
	topic   string
	created time.Time
	msg     broker.Message
}

// batch claims buckets, publishes their oldest pending rows and marks those
// the publisher confirmed, in one transaction. It returns how many rows it
// published or set aside.
func (r *Relay) batch(ctx context.Context, w *worker) (int, error) {
	start := time.Now()
	tx, err := r.pool.BeginTx(ctx, pgx.TxOptions{BeginQuery: beginSQL})
	if err != nil {
		r.failures.Add(1)
		return 0, fmt.Errorf("outbox: begin: %w", err)
	}
	defer func() {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = tx.Rollback(rctx) // after Commit, a no-op
	}()

	var buckets []int16
	rows, err := tx.Query(ctx, r.claimSQL, rand.IntN(Buckets), w.classid, w.claim)
	if err == nil {
		buckets, err = pgx.CollectRows(rows, pgx.RowTo[int16])
	}
	if err != nil {
		r.failures.Add(1)
		return 0, fmt.Errorf("outbox: claim buckets: %w", err)
	}
	if len(buckets) == 0 {
		w.claim = r.cfg.claimBuckets
		return 0, nil
	}

	if len(r.batchTracers) > 0 {
		claimed := make([]int, len(buckets))
		for i, b := range buckets {
			claimed[i] = int(b)
		}
		for _, t := range r.batchTracers {
			ctx = t.TraceBatchStart(ctx, TraceBatchStartData{Table: r.t.name, Worker: w.id, Buckets: slices.Clone(claimed)})
		}
	}
	res := r.publishBatch(ctx, tx, w, buckets)
	res.Duration = time.Since(start)
	for _, t := range r.batchTracers {
		t.TraceBatchEnd(ctx, res)
	}
	if res.Err != nil {
		r.failures.Add(1)
	}
	return res.Published + res.SetAside, res.Err
}

// publishBatch reads, publishes and marks the pending rows of the claimed
// buckets, and adapts the worker's next claim to what it found.
func (r *Relay) publishBatch(ctx context.Context, tx pgx.Tx, w *worker, buckets []int16) (res TraceBatchEndData) {
	batch, err := r.fetch(ctx, tx, buckets)
	if err != nil {
		res.Err = fmt.Errorf("outbox: read pending rows: %w", err)
		return res
	}
	res.Rows = len(batch)
	if len(batch) == 0 {
		return res
	}
	// A full batch means a backlog: claim only the buckets it drew rows
	// from next time, leaving the others to other relays (or workers). A
	// batch that was not full covered its buckets: claim more next time.
	if len(batch) >= r.cfg.batchSize {
		used := map[int16]bool{}
		for i := range batch {
			used[batch[i].bucket] = true
		}
		w.claim = max(1, len(used))
	} else {
		w.claim = min(r.cfg.claimBuckets, 2*w.claim)
	}
	// The fetch returns the rows bucket after bucket; publish them in seq
	// order (which keeps each key's order, as each bucket's rows come in seq
	// order): one Publish per topic, topics in order of first appearance.
	slices.SortFunc(batch, func(a, b row) int { return cmp.Compare(a.seq, b.seq) })
	if r.txp != nil {
		return r.publishBatchTx(ctx, tx, w, buckets, batch, res)
	}
	var topics []string
	byTopic := make(map[string][]*row, 1)
	for i := range batch {
		tp := batch[i].topic
		if _, ok := byTopic[tp]; !ok {
			topics = append(topics, tp)
		}
		byTopic[tp] = append(byTopic[tp], &batch[i])
	}
	done := make([]int64, 0, len(batch))
	var refused []int64
	var reasons []string
	var pubErrs []error
	for _, tp := range topics {
		rs := byTopic[tp]
		ok, bad, why, err := r.publishTopic(ctx, w.id, tp, rs)
		done = append(done, ok...)
		refused = append(refused, bad...)
		reasons = append(reasons, why...)
		if err != nil {
			// Later topics are still tried: their order does not depend on this one.
			pubErrs = append(pubErrs, err)
			res.Failed += len(rs) - len(ok) - len(bad)
		}
	}
	return r.markCommit(ctx, tx, w, len(buckets), batch, done, refused, reasons, errors.Join(pubErrs...), res)
}

// markCommit marks the rows the publisher confirmed (done) and those it
// refused, commits, and counts; pubErr is the batch's publish error, if any.
func (r *Relay) markCommit(ctx context.Context, tx pgx.Tx, w *worker, buckets int, batch []row, done, refused []int64, reasons []string, pubErr error, res TraceBatchEndData) TraceBatchEndData {
	var oldest time.Time
	confirmed := time.Now()
	if len(done)+len(refused) > 0 {
		// Mark and commit even when ctx was cancelled meanwhile: the messages
		// are out, and marking them saves duplicates.
		mctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), r.cfg.publishTimeout)
		defer cancel()
		if h := testHookBeforeMark; h != nil {
			h()
		}
		if len(done) > 0 {
			if _, err := tx.Exec(mctx, r.markSQL, done); err != nil {
				res.Err = fmt.Errorf("outbox: mark %d rows published (they will be published again): %w", len(done), err)
				return res
			}
		}
		if len(refused) > 0 {
			if _, err := tx.Exec(mctx, r.refuseSQL, refused, reasons); err != nil {
				res.Err = fmt.Errorf("outbox: mark %d rows refused: %w", len(refused), err)
				return res
			}
		}
		if err := tx.Commit(mctx); err != nil {
			res.Err = fmt.Errorf("outbox: commit %d published rows (they will be published again): %w", len(done), err)
			return res
		}
		published := make(map[int64]bool, len(done))
		for _, s := range done {
			published[s] = true
		}
		for i := range batch {
			if published[batch[i].seq] && (oldest.IsZero() || batch[i].created.Before(oldest)) {
				oldest = batch[i].created
			}
		}
		res.Published, res.SetAside = len(done), len(refused)
		if !oldest.IsZero() {
			res.Lag = confirmed.Sub(oldest)
		}
		r.setAside.Add(uint64(len(refused)))
		r.published.Add(uint64(len(done)))
		r.batches.Add(1)
		r.log.Debug("outbox relay: batch published", "worker", w.id, "messages", len(done), "set_aside", len(refused),
			"buckets", buckets, "lag", res.Lag, "duration", time.Since(confirmed))
	}
	res.Err = pubErr
	return res
}

// refusal reports whether err says the broker will never take the message:
// republishing it cannot help.
func refusal(err error) bool {
	return errors.Is(err, broker.ErrInvalidMessage) || broker.IsPermanent(err)
}

// publishTopic publishes rs (one topic, seq order) in one call. When the
// broker refuses the call as invalid it publishes the rows one at a time to
// find the refused ones, so that one bad message does not block its bucket:
// those are returned in refused (with reasons) and marked, not retried. On any
// other error it stops; the rows not returned stay pending, in order.
func (r *Relay) publishTopic(ctx context.Context, worker int, topic string, rs []*row) (done, refused []int64, reasons []string, err error) {
	publish := func(rs []*row) error {
		msgs := make([]broker.Message, len(rs))
		for i, x := range rs {
			msgs[i] = x.msg
		}
		pctx, cancel := context.WithTimeout(ctx, r.cfg.publishTimeout)
		defer cancel()
		return r.pub.Publish(pctx, topic, msgs...)
	}
	failed := func(n int, err error) error {
		r.failed.Add(uint64(n))
		return fmt.Errorf("outbox: publish %d messages to %q: %w", n, topic, err)
	}
	err = publish(rs)
	if err == nil {
		for _, x := range rs {
			done = append(done, x.seq)
		}
		return done, nil, nil, nil
	}
	if !refusal(err) {
		return nil, nil, nil, failed(len(rs), err)
	}
	for i, x := range rs {
		err := publish(rs[i : i+1])
		switch {
		case err == nil:
			done = append(done, x.seq)
		case refusal(err):
			r.log.Error("outbox relay: broker refused a message; it will not be retried",
				"worker", worker, "topic", topic, "id", x.msg.ID, "key", x.msg.Key, "seq", x.seq, "error", err)
			refused = append(refused, x.seq)
			reasons = append(reasons, err.Error())
		default:
			return done, refused, reasons, failed(len(rs)-i, err)
		}
	}
	return done, refused, reasons, nil
}

func (r *Relay) fetch(ctx context.Context, tx pgx.Tx, buckets []int16) ([]row, error) {
	rows, err := tx.Query(ctx, r.fetchSQL, buckets, r.cfg.batchSize)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := make([]row, 0, min(r.cfg.batchSize, 64))
	for rows.Next() {
		var x row
		var prio int16
		if err := rows.Scan(&x.seq, &x.bucket, &x.msg.ID, &x.topic, &x.msg.Key, &x.msg.Header, &x.msg.Payload, &prio, &x.msg.Time, &x.created); err != nil {
			return nil, err
		}
		x.msg.Priority = uint8(prio)
		out = append(out, x)
	}
	return out, rows.Err()
}

// Stats returns a snapshot of this relay's counters. It does no I/O; see
// Backlog for what waits in the table.
func (r *Relay) Stats() Stats {
	return Stats{
		Batches:   r.batches.Load(),
		Published: r.published.Load(),
		SetAside:  r.setAside.Load(),
		Failed:    r.failed.Load(),
		Failures:  r.failures.Load(),
		Recovered: r.recovered.Load(),
	}
}

// Backlog returns how many rows of the table wait to be published (by any
// relay) and the age of the oldest, in one query. It counts the pending
// rows, so it reads them all: call it for metrics every few seconds, not per
// message.
func (r *Relay) Backlog(ctx context.Context) (Backlog, error) {
	if r.isClosed() {
		return Backlog{}, ErrClosed
	}
	b := Backlog{Table: r.t.name}
	var age float64
	if err := r.pool.QueryRow(ctx, r.backlogSQL).Scan(&b.Pending, &age); err != nil {
		return Backlog{}, fmt.Errorf("outbox: backlog of %s: %w", r.t.name, err)
	}
	b.OldestPending = time.Duration(age * float64(time.Second))
	return b, nil
}

// cleanupChunk is how many rows one Cleanup statement deletes at most.
const cleanupChunk = 10000

// Cleanup deletes rows published longer than the retention (WithRetention)
// ago, in chunks, and returns how many it deleted. Run calls it every
// cleanup interval unless WithoutCleanup was given.
func (r *Relay) Cleanup(ctx context.Context) (int64, error) {
	if r.isClosed() {
		return 0, ErrClosed
	}
	var total int64
	for {
		tag, err := r.pool.Exec(ctx, r.cleanupSQL, r.cfg.retention.Seconds(), cleanupChunk)
		if err != nil {
			return total, fmt.Errorf("outbox: cleanup: %w", err)
		}
		total += tag.RowsAffected()
		if tag.RowsAffected() < cleanupChunk {
			return total, nil
		}
	}
}

func (r *Relay) cleanupLoop(ctx context.Context) {
	t := time.NewTicker(r.cfg.cleanupInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		n, err := r.Cleanup(ctx)
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			r.log.Warn("outbox relay: cleanup failed", "error", err)
		case n > 0:
			r.log.Debug("outbox relay: cleanup", "deleted", n)
		}
	}
}

// listen holds a LISTEN connection and wakes the workers on every
// notification; it reconnects with backoff, waking the workers after each
// reconnect in case notifications were missed meanwhile.
func (r *Relay) listen(ctx context.Context, classid int32, wakeAll func()) {
	channel := pgx.Identifier{fmt.Sprintf("outbox_%d", uint32(classid))}.Sanitize()
	failures := 0
	for ctx.Err() == nil {
		err := r.listenOnce(ctx, channel, wakeAll, &failures)
		if ctx.Err() != nil {
			return
		}
		failures++
		if !r.backoff(ctx, -1, failures, "outbox relay: LISTEN connection lost; polling meanwhile", err) {
			return
		}
	}
}

func (r *Relay) listenOnce(ctx context.Context, channel string, wakeAll func(), failures *int) error {
	conn, err := pgx.ConnectConfig(ctx, r.pool.Config().ConnConfig.Copy())
	if err != nil {
		return err
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
		defer cancel()
		_ = conn.Close(cctx)
	}()
	if _, err := conn.Exec(ctx, "listen "+channel); err != nil {
		return err
	}
	if *failures > 0 {
		r.log.Info("outbox relay: LISTEN connection back")
	}
	*failures = 0
	wakeAll()
	for {
		if _, err := conn.WaitForNotification(ctx); err != nil {
			return err
		}
		wakeAll()
	}
}
