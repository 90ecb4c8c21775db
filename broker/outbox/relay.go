package outbox

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/go-integration/patterns/broker"
)

// Defaults for the zero fields of Config.
const (
	DefaultBatchSize       = 500
	DefaultClaimBuckets    = Buckets / 4
	DefaultPollInterval    = time.Second
	DefaultMinBackoff      = 100 * time.Millisecond
	DefaultMaxBackoff      = 30 * time.Second
	DefaultPublishTimeout  = 30 * time.Second
	DefaultRetention       = 24 * time.Hour
	DefaultCleanupInterval = time.Minute
)

// ErrRunning is returned by Run when the relay is already running.
var ErrRunning = errors.New("outbox: relay already running")

// Config configures a Relay. The zero value is usable: every zero field takes
// the default named in its comment.
type Config struct {
	// Table is the outbox table, "name" or "schema.name". Default: DefaultTable.
	Table string
	// BatchSize is the most rows one batch reads, publishes and marks. Default: 500.
	BatchSize int
	// ClaimBuckets is the most ordering buckets one batch locks. Lower values
	// share the work more evenly between relays; higher values publish more
	// keys per batch. Between 1 and Buckets. Default: Buckets/4.
	ClaimBuckets int
	// Workers is how many batches this relay runs at once, each on its own
	// pool connection and its own buckets (keep the pool's MaxConns above
	// it). Default: 1.
	Workers int
	// PollInterval is how long an idle worker waits before looking for rows
	// again when no notification arrives. Default: 1 s.
	PollInterval time.Duration
	// NoListen turns LISTEN/NOTIFY off, leaving polling alone. By default the
	// relay holds one extra connection (outside the pool, with the pool's
	// connection settings) that listens for the notification Add sends on commit.
	NoListen bool
	// MinBackoff and MaxBackoff bound the wait after a failed batch (broker or
	// database down); it doubles from MinBackoff up to MaxBackoff, with
	// jitter, and resets after a batch succeeds. Defaults: 100 ms and 30 s.
	MinBackoff, MaxBackoff time.Duration
	// PublishTimeout bounds one Publish call. Default: 30 s.
	PublishTimeout time.Duration
	// Retention is how long published rows are kept before Cleanup deletes
	// them. Default: 24 h.
	Retention time.Duration
	// CleanupInterval is how often Run calls Cleanup; negative turns it off
	// (call Cleanup yourself). Default: 1 min.
	CleanupInterval time.Duration
	// Logger receives failures (Warn), recoveries (Info) and batches (Debug).
	// Default: slog.Default().
	Logger *slog.Logger
	// Observer receives events for metrics or tracing: it may implement
	// BatchObserver and FailureObserver (checked once, in NewRelay). Default: none.
	Observer any
}

// Batch describes one batch the publisher confirmed, for a BatchObserver.
type Batch struct {
	Worker   int           // which worker of the relay ran it, from 0
	Messages int           // messages published and marked
	Buckets  int           // ordering buckets the batch held
	Lag      time.Duration // age at confirmation of the batch's oldest message
	Duration time.Duration // from claiming the buckets to commit
}

// Failure describes a batch that failed, for a FailureObserver.
type Failure struct {
	Worker   int
	Topic    string // the topic whose Publish failed; empty for a database error
	Messages int    // messages not published because of it
	Err      error
}

// BatchObserver is an optional Config.Observer interface called after every
// committed batch. It must not block.
type BatchObserver interface {
	ObserveBatch(ctx context.Context, b Batch)
}

// FailureObserver is an optional Config.Observer interface called after every
// failed batch. It must not block.
type FailureObserver interface {
	ObserveFailure(ctx context.Context, f Failure)
}

// Stats are the relay's counters and the outbox's gauges.
type Stats struct {
	// Pending is how many rows wait to be published (all relays).
	Pending int64
	// OldestPending is the age of the oldest pending row; zero when none.
	OldestPending time.Duration
	// Published counts messages this relay published and marked since NewRelay.
	Published int64
	// Failed counts messages whose Publish failed (each attempt counts), since NewRelay.
	Failed int64
	// Refused counts messages the broker refused as invalid
	// (broker.ErrInvalidMessage or a broker.Permanent error): they are marked
	// published with the reason in the error column, and not retried.
	Refused int64
	// Batches counts committed batches of this relay.
	Batches int64
}

// Relay publishes the rows of an outbox table through a broker.Publisher, in
// order per key, marking each row published only after the publisher
// confirmed it. Several relays (processes or Relay values) may run on one
// table: they share the ordering buckets through PostgreSQL advisory locks.
// Delivery is at-least-once: a relay that dies between publish and mark
// leaves the rows pending and they are published again.
type Relay struct {
	pool *pgxpool.Pool
	pub  broker.Publisher
	t    *Table
	cfg  Config
	log  *slog.Logger
	bo   BatchObserver
	fo   FailureObserver

	published, failed, refused, batches atomic.Int64
	running                             atomic.Bool

	claimSQL, fetchSQL, markSQL, refuseSQL, statsSQL, cleanupSQL string
}

// NewRelay returns a relay from pool's table (cfg.Table) to pub. It checks cfg
// but does not touch the database; Run does. The relay never closes pool or pub.
func NewRelay(pool *pgxpool.Pool, pub broker.Publisher, cfg Config) (*Relay, error) {
	if pool == nil || pub == nil {
		return nil, errors.New("outbox: NewRelay needs a pool and a publisher")
	}
	if cfg.Table == "" {
		cfg.Table = DefaultTable
	}
	t, err := NewTable(cfg.Table)
	if err != nil {
		return nil, err
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	if cfg.BatchSize == 0 {
		cfg.BatchSize = DefaultBatchSize
	}
	if cfg.ClaimBuckets == 0 {
		cfg.ClaimBuckets = DefaultClaimBuckets
	}
	if cfg.Workers == 0 {
		cfg.Workers = 1
	}
	def(&cfg.PollInterval, DefaultPollInterval)
	def(&cfg.MinBackoff, DefaultMinBackoff)
	def(&cfg.MaxBackoff, DefaultMaxBackoff)
	def(&cfg.PublishTimeout, DefaultPublishTimeout)
	def(&cfg.Retention, DefaultRetention)
	def(&cfg.CleanupInterval, DefaultCleanupInterval)
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"PollInterval", cfg.PollInterval}, {"MinBackoff", cfg.MinBackoff}, {"MaxBackoff", cfg.MaxBackoff}, {"PublishTimeout", cfg.PublishTimeout}, {"Retention", cfg.Retention}} {
		if d.v < 0 {
			return nil, fmt.Errorf("outbox: negative %s %v", d.name, d.v)
		}
	}
	switch {
	case cfg.BatchSize < 0:
		return nil, fmt.Errorf("outbox: negative BatchSize %d", cfg.BatchSize)
	case cfg.ClaimBuckets < 0 || cfg.ClaimBuckets > Buckets:
		return nil, fmt.Errorf("outbox: ClaimBuckets %d is not between 1 and %d", cfg.ClaimBuckets, Buckets)
	case cfg.Workers < 0:
		return nil, fmt.Errorf("outbox: negative Workers %d", cfg.Workers)
	case cfg.MinBackoff > cfg.MaxBackoff:
		return nil, fmt.Errorf("outbox: MinBackoff %v is above MaxBackoff %v", cfg.MinBackoff, cfg.MaxBackoff)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	r := &Relay{pool: pool, pub: pub, t: t, cfg: cfg, log: cfg.Logger.With("outbox", t.name)}
	r.bo, _ = cfg.Observer.(BatchObserver)
	r.fo, _ = cfg.Observer.(FailureObserver)

	id := t.ident
	// Claim: walk the buckets from a random offset, lock (for this
	// transaction) those that have pending rows, up to $3 of them. The lock
	// key is (table oid, bucket): unique per table in the database. The
	// "order by seq limit 1" probe (rather than exists) makes the planner use
	// the (bucket, seq) index instead of a sequential scan per bucket.
	r.claimSQL = fmt.Sprintf(`select s.b::int2 from (select ((g + $1) %% %d) as b from generate_series(0, %d) g) s
where case when (select o.seq from %s o where o.bucket = s.b and o.published_at is null order by o.seq limit 1) is not null
           then pg_try_advisory_xact_lock($2::int4, s.b::int4) else false end
limit $3`, Buckets, Buckets-1, id)
	// Fetch runs as its own statement, after the claim: its snapshot is taken
	// once the locks are held, so it sees every mark committed by the relay
	// that held them before.
	r.fetchSQL = `select seq, id, topic, key, header, payload, priority, event_time, created_at from ` + id + `
where published_at is null and bucket = any($1::int2[]) order by seq limit $2`
	r.markSQL = `update ` + id + ` set published_at = now() where seq = any($1::int8[])`
	r.refuseSQL = `update ` + id + ` o set published_at = now(), error = u.error
from unnest($1::int8[], $2::text[]) as u(seq, error) where o.seq = u.seq`
	r.statsSQL = `select count(*), coalesce(extract(epoch from now() - min(created_at)), 0)::float8 from ` + id + ` where published_at is null`
	r.cleanupSQL = `delete from ` + id + ` where seq in (select seq from ` + id + `
where published_at < now() - make_interval(secs => $1) limit $2)`
	return r, nil
}

// Run publishes pending rows until ctx is done, then returns nil once every
// goroutine it started has ended (a batch in flight is abandoned: its rows
// stay pending). Workers wake on NOTIFY from Add, or every PollInterval, and
// back off while the publisher or the database fails. Run returns an error
// only when the table does not exist (at once), when the publisher was closed
// (an error wrapping broker.ErrClosed, once the other goroutines ended), and
// ErrRunning when the relay is already running.
func (r *Relay) Run(ctx context.Context) error {
	if !r.running.CompareAndSwap(false, true) {
		return ErrRunning
	}
	defer r.running.Store(false)
	parent := ctx
	ctx, stop := context.WithCancelCause(parent)
	defer stop(nil)

	classid, err := r.resolve(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	wakes := make([]chan struct{}, r.cfg.Workers)
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
	if !r.cfg.NoListen {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.listen(ctx, classid, wakeAll)
		}()
	}
	if r.cfg.CleanupInterval > 0 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.cleanupLoop(ctx)
		}()
	}
	for i := range r.cfg.Workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.work(ctx, i, classid, wakes[i], stop)
		}()
	}
	wg.Wait()
	if parent.Err() == nil {
		if err := context.Cause(ctx); err != nil && !errors.Is(err, context.Canceled) {
			return err
		}
	}
	return nil
}

// resolve finds the table's oid (the advisory-lock class), retrying with
// backoff while the database is unreachable.
func (r *Relay) resolve(ctx context.Context) (int32, error) {
	var b backoff
	for {
		var oid uint32
		err := r.pool.QueryRow(ctx, `select $1::text::regclass::oid`, r.t.ident).Scan(&oid)
		if err == nil {
			return int32(oid), nil
		}
		var pe *pgconn.PgError
		if errors.As(err, &pe) && pe.Code == "42P01" { // undefined_table
			return 0, fmt.Errorf("outbox: table %s: %w", r.t.name, err)
		}
		r.log.Warn("outbox relay: cannot reach the database", "error", err)
		if !sleep(ctx, b.next(r.cfg.MinBackoff, r.cfg.MaxBackoff)) {
			return 0, ctx.Err()
		}
	}
}

// work runs batches while they find rows, waits for a wake-up or the poll
// interval when idle, and backs off after failures. A closed publisher stops
// the whole Run through stop.
func (r *Relay) work(ctx context.Context, worker int, classid int32, wake <-chan struct{}, stop context.CancelCauseFunc) {
	var b backoff
	poll := time.NewTimer(r.cfg.PollInterval)
	defer poll.Stop()
	for ctx.Err() == nil {
		n, err := r.batch(ctx, worker, classid)
		if ctx.Err() != nil {
			return
		}
		if errors.Is(err, broker.ErrClosed) {
			r.log.Error("outbox relay: publisher closed; stopping", "worker", worker, "error", err)
			stop(err)
			return
		}
		if err != nil {
			d := b.next(r.cfg.MinBackoff, r.cfg.MaxBackoff)
			r.log.Warn("outbox relay: batch failed; backing off", "worker", worker, "backoff", d, "error", err)
			if !sleep(ctx, d) {
				return
			}
			continue
		}
		if b.failures > 0 {
			r.log.Info("outbox relay: publishing again", "worker", worker, "after_failures", b.failures)
			b.reset()
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
		poll.Reset(r.cfg.PollInterval)
		select {
		case <-ctx.Done():
			return
		case <-wake:
		case <-poll.C:
		}
	}
}

type row struct {
	seq     int64
	topic   string
	created time.Time
	msg     broker.Message
}

// batch claims buckets, publishes their oldest pending rows and marks those
// the publisher confirmed, in one transaction. It returns how many rows it published.
func (r *Relay) batch(ctx context.Context, worker int, classid int32) (int, error) {
	start := time.Now()
	tx, err := r.pool.Begin(ctx)
	if err != nil {
		r.fail(ctx, worker, "", 0, err)
		return 0, fmt.Errorf("outbox: begin: %w", err)
	}
	defer func() {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = tx.Rollback(rctx) // after Commit, a no-op
	}()

	var buckets []int16
	rows, err := tx.Query(ctx, r.claimSQL, rand.IntN(Buckets), classid, r.cfg.ClaimBuckets)
	if err == nil {
		buckets, err = pgx.CollectRows(rows, pgx.RowTo[int16])
	}
	if err != nil {
		r.fail(ctx, worker, "", 0, err)
		return 0, fmt.Errorf("outbox: claim buckets: %w", err)
	}
	if len(buckets) == 0 {
		return 0, nil
	}
	batch, err := r.fetch(ctx, tx, buckets)
	if err != nil {
		r.fail(ctx, worker, "", 0, err)
		return 0, fmt.Errorf("outbox: read pending rows: %w", err)
	}
	if len(batch) == 0 {
		return 0, nil
	}

	// One Publish per topic, topics in order of first appearance, each with
	// its messages in seq order: order per (topic, key) is kept.
	var topics []string
	byTopic := make(map[string][]int, 1)
	for i := range batch {
		tp := batch[i].topic
		if _, ok := byTopic[tp]; !ok {
			topics = append(topics, tp)
		}
		byTopic[tp] = append(byTopic[tp], i)
	}
	done := make([]int64, 0, len(batch))
	var refused []int64
	var reasons []string
	var oldest time.Time
	var pubErr error
	for _, tp := range topics {
		idx := byTopic[tp]
		rs := make([]*row, len(idx))
		for j, i := range idx {
			rs[j] = &batch[i]
		}
		ok, bad, why, err := r.publishTopic(ctx, worker, tp, rs)
		done = append(done, ok...)
		refused = append(refused, bad...)
		reasons = append(reasons, why...)
		if err != nil {
			pubErr = err
			// Later topics are still tried: their order does not depend on this one.
		}
	}
	for i := range batch {
		if oldest.IsZero() || batch[i].created.Before(oldest) {
			oldest = batch[i].created
		}
	}
	confirmed := time.Now()
	if len(done)+len(refused) > 0 {
		// Mark and commit even when ctx was cancelled meanwhile: the messages
		// are out, and marking them saves duplicates.
		mctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), r.cfg.PublishTimeout)
		defer cancel()
		if len(done) > 0 {
			if _, err := tx.Exec(mctx, r.markSQL, done); err != nil {
				r.fail(ctx, worker, "", len(done), err)
				return 0, fmt.Errorf("outbox: mark %d rows published (they will be published again): %w", len(done), err)
			}
		}
		if len(refused) > 0 {
			if _, err := tx.Exec(mctx, r.refuseSQL, refused, reasons); err != nil {
				r.fail(ctx, worker, "", len(refused), err)
				return 0, fmt.Errorf("outbox: mark %d rows refused: %w", len(refused), err)
			}
		}
		if err := tx.Commit(mctx); err != nil {
			r.fail(ctx, worker, "", len(done), err)
			return 0, fmt.Errorf("outbox: commit %d published rows (they will be published again): %w", len(done), err)
		}
		r.refused.Add(int64(len(refused)))
		r.published.Add(int64(len(done)))
		r.batches.Add(1)
		b := Batch{Worker: worker, Messages: len(done), Buckets: len(buckets), Lag: confirmed.Sub(oldest), Duration: time.Since(start)}
		r.log.Debug("outbox relay: batch published", "worker", worker, "messages", b.Messages, "buckets", b.Buckets, "lag", b.Lag, "duration", b.Duration)
		if r.bo != nil {
			r.bo.ObserveBatch(ctx, b)
		}
	}
	return len(done) + len(refused), pubErr
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
		pctx, cancel := context.WithTimeout(ctx, r.cfg.PublishTimeout)
		defer cancel()
		return r.pub.Publish(pctx, topic, msgs...)
	}
	failed := func(n int, err error) error {
		r.failed.Add(int64(n))
		r.fail(ctx, worker, topic, n, err)
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
			r.fail(ctx, worker, topic, 1, err)
			r.log.Error("outbox relay: broker refused a message; it will not be retried",
				"topic", topic, "id", x.msg.ID, "key", x.msg.Key, "seq", x.seq, "error", err)
			refused = append(refused, x.seq)
			reasons = append(reasons, err.Error())
		default:
			return done, refused, reasons, failed(len(rs)-i, err)
		}
	}
	return done, refused, reasons, nil
}

func (r *Relay) fetch(ctx context.Context, tx pgx.Tx, buckets []int16) ([]row, error) {
	rows, err := tx.Query(ctx, r.fetchSQL, buckets, r.cfg.BatchSize)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := make([]row, 0, min(r.cfg.BatchSize, 64))
	for rows.Next() {
		var x row
		var prio int16
		if err := rows.Scan(&x.seq, &x.msg.ID, &x.topic, &x.msg.Key, &x.msg.Header, &x.msg.Payload, &prio, &x.msg.Time, &x.created); err != nil {
			return nil, err
		}
		x.msg.Priority = uint8(prio)
		out = append(out, x)
	}
	return out, rows.Err()
}

func (r *Relay) fail(ctx context.Context, worker int, topic string, n int, err error) {
	if r.fo != nil {
		r.fo.ObserveFailure(ctx, Failure{Worker: worker, Topic: topic, Messages: n, Err: err})
	}
}

// Stats returns this relay's counters and the table's pending count and the
// age of its oldest pending row (one query).
func (r *Relay) Stats(ctx context.Context) (Stats, error) {
	s := Stats{Published: r.published.Load(), Failed: r.failed.Load(), Refused: r.refused.Load(), Batches: r.batches.Load()}
	var age float64
	if err := r.pool.QueryRow(ctx, r.statsSQL).Scan(&s.Pending, &age); err != nil {
		return s, fmt.Errorf("outbox: stats: %w", err)
	}
	s.OldestPending = time.Duration(age * float64(time.Second))
	return s, nil
}

// cleanupChunk is how many rows one Cleanup statement deletes at most.
const cleanupChunk = 10000

// Cleanup deletes rows published longer than Config.Retention ago, in chunks,
// and returns how many it deleted. Run calls it every CleanupInterval.
func (r *Relay) Cleanup(ctx context.Context) (int64, error) {
	var total int64
	for {
		tag, err := r.pool.Exec(ctx, r.cleanupSQL, r.cfg.Retention.Seconds(), cleanupChunk)
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
	t := time.NewTicker(r.cfg.CleanupInterval)
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
	var b backoff
	for ctx.Err() == nil {
		err := r.listenOnce(ctx, channel, wakeAll, &b)
		if ctx.Err() != nil {
			return
		}
		d := b.next(r.cfg.MinBackoff, r.cfg.MaxBackoff)
		r.log.Warn("outbox relay: LISTEN connection lost; polling meanwhile", "backoff", d, "error", err)
		if !sleep(ctx, d) {
			return
		}
	}
}

func (r *Relay) listenOnce(ctx context.Context, channel string, wakeAll func(), b *backoff) error {
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
	if b.failures > 0 {
		r.log.Info("outbox relay: LISTEN connection back")
	}
	b.reset()
	wakeAll()
	for {
		if _, err := conn.WaitForNotification(ctx); err != nil {
			return err
		}
		wakeAll()
	}
}

// backoff is an exponential backoff with full jitter in its upper half.
type backoff struct {
	failures int
	cur      time.Duration
}

func (b *backoff) next(lo, hi time.Duration) time.Duration {
	b.failures++
	if b.cur == 0 {
		b.cur = lo
	} else {
		b.cur = min(2*b.cur, hi)
	}
	half := b.cur / 2
	if half <= 0 {
		return b.cur
	}
	return half + rand.N(half+1)
}

func (b *backoff) reset() { *b = backoff{} }

// sleep waits d or until ctx is done; it reports whether d elapsed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
