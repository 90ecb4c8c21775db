package outbox_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/go-integration/patterns/broker"
	"github.com/go-integration/patterns/broker/outbox"
	"github.com/go-integration/patterns/internal/testenv"
)

// keyIn returns a key of bucket b.
func keyIn(b int) string {
	for i := 0; ; i++ {
		if k := fmt.Sprintf("key-%d", i); outbox.Bucket(k) == b {
			return k
		}
	}
}

// fill writes n rows of topic straight into table (faster than Add for
// large backlogs): row g has key keys[g % len(keys)], and published rows
// have published_at set.
func fill(t testing.TB, db *pgxpool.Pool, table, topic string, n int, keys []string, published bool) {
	t.Helper()
	buckets := make([]int16, len(keys))
	for i, k := range keys {
		buckets[i] = int16(outbox.Bucket(k))
	}
	pub := "null"
	if published {
		pub = "now()"
	}
	_, err := db.Exec(context.Background(), `insert into `+pgx.Identifier(strings.Split(table, ".")).Sanitize()+`
  (id, topic, key, bucket, payload, event_time, published_at)
select md5(random()::text), $1, ($2::text[])[1 + g % $4], ($3::int2[])[1 + g % $4], convert_to(g::text || repeat('x', 200), 'UTF8'), now(), `+pub+`
from generate_series(0, $5 - 1) g`, topic, keys, buckets, len(keys), n)
	if err != nil {
		t.Fatal(err)
	}
}

// planNode is the part of EXPLAIN (FORMAT JSON) the plan test reads.
type planNode struct {
	NodeType      string     `json:"Node Type"`
	RelationName  string     `json:"Relation Name"`
	IndexName     string     `json:"Index Name"`
	ActualRows    float64    `json:"Actual Rows"`
	ActualLoops   float64    `json:"Actual Loops"`
	RemovedFilter float64    `json:"Rows Removed by Filter"`
	RemovedCheck  float64    `json:"Rows Removed by Index Recheck"`
	SharedHit     float64    `json:"Shared Hit Blocks"`
	SharedRead    float64    `json:"Shared Read Blocks"`
	Plans         []planNode `json:"Plans"`
}

// explainFetch runs the relay's fetch under EXPLAIN ANALYZE in a batch's
// transaction and returns the rows it returned, the rows its scans read,
// the buffers it touched and the node types of its plan.
func explainFetch(t *testing.T, db *pgxpool.Pool, begin, fetch string, buckets []int16, limit int) (returned, read, blocks float64, nodes []string) {
	t.Helper()
	ctx := context.Background()
	tx, err := db.BeginTx(ctx, pgx.TxOptions{BeginQuery: begin})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx.Rollback(ctx) }()
	var out []byte
	if err := tx.QueryRow(ctx, "explain (analyze, buffers, format json) "+fetch, buckets, limit).Scan(&out); err != nil {
		t.Fatal(err)
	}
	var plans []struct {
		Plan planNode `json:"Plan"`
	}
	if err := json.Unmarshal(out, &plans); err != nil || len(plans) != 1 {
		t.Fatalf("explain output %s: %v", out, err)
	}
	var walk func(n planNode, depth int)
	walk = func(n planNode, depth int) {
		nodes = append(nodes, fmt.Sprintf("%s%s %s %s rows=%.0f loops=%.0f removed=%.0f", strings.Repeat("  ", depth), n.NodeType, n.RelationName, n.IndexName, n.ActualRows, n.ActualLoops, n.RemovedFilter+n.RemovedCheck))
		if n.RelationName != "" { // a scan of a table
			read += (n.ActualRows + n.RemovedFilter + n.RemovedCheck) * n.ActualLoops
		}
		for _, c := range n.Plans {
			walk(c, depth+1)
		}
	}
	walk(plans[0].Plan, 0)
	return plans[0].Plan.ActualRows, read, plans[0].Plan.SharedHit + plans[0].Plan.SharedRead, nodes
}

// TestFetchReadsNoMoreRowsThanItReturns (issue 14, defect 8): on a table
// whose statistics say nothing (never analyzed) or lie (analyzed before a
// burst), the relay's fetch reads the rows it returns through the (bucket,
// seq) index, without sorting the backlog, whatever the buckets claimed.
func TestFetchReadsNoMoreRowsThanItReturns(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	spread := make([]string, 50)
	for i := range spread {
		spread[i] = fmt.Sprintf("orders.k%02d", i)
	}
	// 90 % of the backlog on three keys (few buckets), the rest on 50.
	hot := []string{keyIn(3), keyIn(7), keyIn(11)}
	mostlyHot := slices.Concat(hot, hot, hot, hot, hot, hot, hot, hot, hot, hot, hot, hot, hot, hot, hot, hot, hot, hot, spread[:6])

	stale, err := outbox.NewTable("stale_outbox")
	if err != nil {
		t.Fatal(err)
	}
	if err := stale.Migrate(ctx, e.db); err != nil {
		t.Fatal(err)
	}
	for _, table := range []string{outbox.DefaultTable, stale.Name()} {
		if _, err := e.db.Exec(ctx, `alter table `+table+` set (autovacuum_enabled = false)`); err != nil {
			t.Fatal(err)
		}
		fill(t, e.db, table, e.topic, 20000, spread, true)
	}
	// stale_outbox is analyzed while nothing is pending: its statistics
	// say published_at is never null.
	if _, err := e.db.Exec(ctx, `analyze stale_outbox`); err != nil {
		t.Fatal(err)
	}
	for _, table := range []string{outbox.DefaultTable, stale.Name()} {
		fill(t, e.db, table, e.topic, 60000, mostlyHot, false)
	}
	var analyzed bool
	if err := e.db.QueryRow(ctx, `select last_analyze is not null or last_autoanalyze is not null from pg_stat_user_tables where relid = 'outbox'::regclass`).Scan(&analyzed); err != nil || analyzed {
		t.Fatalf("outbox analyzed %v, %v; the test needs a never-analyzed table", analyzed, err)
	}

	all := make([]int16, outbox.Buckets)
	for i := range all {
		all[i] = int16(i)
	}
	hotFirst := slices.Concat([]int16{3, 7, 11}, all[12:], all[:3])
	for _, table := range []string{outbox.DefaultTable, stale.Name()} {
		r, err := outbox.NewRelay(e.db, e.mem, outbox.WithTable(table))
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range []struct {
			name    string
			buckets []int16
			limit   int
		}{
			{"all buckets from 0", all, 500},
			{"hot buckets first", hotFirst, 500},
			{"one hot bucket", []int16{7}, 500},
			{"batch of 5000", all, 5000},
		} {
			returned, read, blocks, nodes := explainFetch(t, e.db, outbox.BeginSQL, outbox.FetchSQL(r), c.buckets, c.limit)
			plan := strings.Join(nodes, "\n")
			t.Logf("%s, %s: returned %.0f rows, read %.0f rows, %.0f buffers\n%s", table, c.name, returned, read, blocks, plan)
			if returned != float64(c.limit) {
				t.Errorf("%s, %s: returned %.0f rows, want %d", table, c.name, returned, c.limit)
			}
			if read > returned+float64(len(c.buckets)) {
				t.Errorf("%s, %s: read %.0f rows to return %.0f", table, c.name, read, returned)
			}
			if strings.Contains(plan, "Sort") || strings.Contains(plan, "Seq Scan") || strings.Contains(plan, "Bitmap") {
				t.Errorf("%s, %s: the plan sorts or scans more than the index range:\n%s", table, c.name, plan)
			}
			if blocks > 2*returned+200 {
				t.Errorf("%s, %s: %.0f buffers for %.0f rows", table, c.name, blocks, returned)
			}
		}
	}
	// For the record: the same fetch without the batch's planner settings.
	r, err := outbox.NewRelay(e.db, e.mem)
	if err != nil {
		t.Fatal(err)
	}
	returned, read, blocks, nodes := explainFetch(t, e.db, "begin", outbox.FetchSQL(r), all, 500)
	t.Logf("without the settings: returned %.0f rows, read %.0f rows, %.0f buffers\n%s", returned, read, blocks, strings.Join(nodes, "\n"))
}

// TestOneBatchCoversEveryBucketByDefault (issue 14, defect 6): with the
// default options one relay claims every bucket that has pending rows, so a
// load spread over many keys goes out in one batch and not one batch per
// quarter of the buckets.
func TestOneBatchCoversEveryBucketByDefault(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	msgs := make([]broker.Message, outbox.Buckets)
	for b := range msgs {
		msgs[b] = msg(keyIn(b), 0)
	}
	e.add(t, msgs...)
	tr := newTracer()
	run(t, testenv.Pool(t, e.dsn), e.mem, outbox.WithTracer(tr))
	select {
	case end := <-tr.ended:
		tr.mu.Lock()
		start := tr.starts[0]
		tr.mu.Unlock()
		if len(start.Buckets) != outbox.Buckets || end.Published != outbox.Buckets || end.Rows != outbox.Buckets {
			t.Errorf("first batch claimed %d buckets and published %d messages, want %d of each", len(start.Buckets), end.Published, outbox.Buckets)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no batch")
	}
}

// TestFullBatchesClaimFewerBuckets: a batch that comes back full claims only
// the buckets it drew rows from next time, leaving the rest to other relays;
// order per key holds throughout.
func TestFullBatchesClaimFewerBuckets(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	const perBucket, batch = 40, 20
	msgs := make([]broker.Message, 0, outbox.Buckets*perBucket)
	for i := range perBucket {
		for b := range outbox.Buckets {
			msgs = append(msgs, msg(keyIn(b), i))
		}
	}
	e.add(t, msgs...)
	c := e.collect(t, 1)
	tr := newTracer()
	run(t, testenv.Pool(t, e.dsn), e.mem, outbox.WithBatchSize(batch), outbox.WithTracer(tr))
	c.wait(t, len(msgs), 20*time.Second)
	c.check(t, len(msgs))
	tr.mu.Lock()
	defer tr.mu.Unlock()
	if len(tr.starts) < 2 || len(tr.starts[0].Buckets) != outbox.Buckets || len(tr.starts[1].Buckets) != 1 {
		t.Fatalf("claims %v; want all buckets first, then one (the first batch read %d rows of one bucket)", claims(tr.starts), batch)
	}
	for i, e := range tr.ends {
		if e.Rows > batch {
			t.Errorf("batch %d read %d rows", i, e.Rows)
		}
	}
}

func claims(starts []outbox.TraceBatchStartData) []int {
	out := make([]int, len(starts))
	for i, s := range starts {
		out[i] = len(s.Buckets)
	}
	return out
}

// TestTwoRelaysShareADeepBacklog: with the default claim, a second relay
// still gets buckets while the first drains a backlog.
func TestTwoRelaysShareADeepBacklog(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	const perBucket = 100
	msgs := make([]broker.Message, 0, outbox.Buckets*perBucket)
	for i := range perBucket {
		for b := range outbox.Buckets {
			msgs = append(msgs, msg(keyIn(b), i))
		}
	}
	e.add(t, msgs...)
	c := e.collect(t, 4)
	opts := []outbox.Option{outbox.WithBatchSize(50), outbox.WithPollInterval(20 * time.Millisecond)}
	r1, _ := run(t, testenv.Pool(t, e.dsn), e.mem, opts...)
	r2, _ := run(t, testenv.Pool(t, e.dsn), e.mem, opts...)
	c.wait(t, len(msgs), 30*time.Second)
	c.check(t, len(msgs))
	testenv.Eventually(t, 10*time.Second, "both relays counted", func() bool {
		return r1.Stats().Published+r2.Stats().Published >= uint64(len(msgs))
	})
	s1, s2 := r1.Stats(), r2.Stats()
	t.Logf("relay 1 published %d in %d batches, relay 2 %d in %d", s1.Published, s1.Batches, s2.Published, s2.Batches)
	if s1.Published == 0 || s2.Published == 0 {
		t.Errorf("one relay did all the work: %d and %d", s1.Published, s2.Published)
	}
}

// blockingPublisher holds every Publish until release is closed (then it
// publishes) or its context ends; entered signals a Publish waiting.
type blockingPublisher struct {
	broker.Publisher
	entered chan struct{}
	release chan struct{}
}

func (p *blockingPublisher) Publish(ctx context.Context, topic string, msgs ...broker.Message) error {
	select {
	case p.entered <- struct{}{}:
	default:
	}
	select {
	case <-p.release:
		return p.Publisher.Publish(ctx, topic, msgs...)
	case <-ctx.Done():
		return ctx.Err()
	}
}

func pending(t testing.TB, e *env) int {
	t.Helper()
	var n int
	if err := e.db.QueryRow(context.Background(), `select count(*) from outbox where published_at is null`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// startRun runs r.Run in a goroutine and returns its result channel.
func startRun(r *outbox.Relay) <-chan error {
	done := make(chan error, 1)
	go func() { done <- r.Run(context.Background()) }()
	return done
}

func TestCloseLetsTheBatchInFlightFinish(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	e.add(t, msg("k", 0), msg("k", 1), msg("k", 2))
	pub := &blockingPublisher{Publisher: e.mem, entered: make(chan struct{}, 1), release: make(chan struct{})}
	r, err := outbox.NewRelay(testenv.Pool(t, e.dsn), pub, outbox.WithPollInterval(20*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	runDone := startRun(r)
	<-pub.entered // a batch is in flight
	closeDone := make(chan error, 1)
	go func() { closeDone <- r.Close() }()
	testenv.Eventually(t, 10*time.Second, "Close started", func() bool {
		_, err := r.Backlog(ctx)
		return errors.Is(err, outbox.ErrClosed)
	})
	select {
	case err := <-runDone:
		t.Fatalf("Run returned %v while its batch was in flight", err)
	case err := <-closeDone:
		t.Fatalf("Close returned %v while the batch was in flight", err)
	default:
	}
	close(pub.release)
	if err := <-closeDone; err != nil {
		t.Fatalf("Close: %v", err)
	}
	select {
	case err := <-runDone:
		if !errors.Is(err, outbox.ErrClosed) {
			t.Fatalf("Run after Close: %v, want ErrClosed", err)
		}
	case <-time.After(10 * time.Second):
		// Close waits until Run has finished its work; the goroutine's
		// send of Run's result may still trail Close's return.
		t.Fatal("Run did not return after Close")
	}
	if n, st := pending(t, e), r.Stats(); n != 0 || st.Published != 3 || st.Batches != 1 {
		t.Errorf("after Close: %d pending, stats %+v; want the batch in flight published and marked", n, st)
	}
	if err := r.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if err := r.Run(ctx); !errors.Is(err, outbox.ErrClosed) {
		t.Errorf("Run after Close: %v, want ErrClosed", err)
	}
}

func TestCloseCancelsTheBatchAfterTheDrainTimeout(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.add(t, msg("k", 0), msg("k", 1))
	pub := &blockingPublisher{Publisher: e.mem, entered: make(chan struct{}, 1), release: make(chan struct{})} // never released
	tr := newTracer()
	const drain = 100 * time.Millisecond
	r, err := outbox.NewRelay(testenv.Pool(t, e.dsn), pub, outbox.WithDrainTimeout(drain), outbox.WithTracer(tr))
	if err != nil {
		t.Fatal(err)
	}
	runDone := startRun(r)
	<-pub.entered
	start := time.Now()
	if err := r.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if took := time.Since(start); took < drain {
		t.Errorf("Close returned after %v, before the drain timeout %v", took, drain)
	}
	select {
	case err := <-runDone:
		if !errors.Is(err, outbox.ErrClosed) {
			t.Fatalf("Run: %v, want ErrClosed", err)
		}
	case <-time.After(10 * time.Second):
		// Close waits until Run has finished its work; the goroutine's
		// send of Run's result may still trail Close's return.
		t.Fatal("Run did not return after Close")
	}
	if n, st := pending(t, e), r.Stats(); n != 2 || st.Published != 0 {
		t.Errorf("after Close: %d pending, stats %+v; want both rows pending", n, st)
	}
	// The cancelled batch was traced as failed, with its rows.
	select {
	case end := <-tr.ended:
		if !errors.Is(end.Err, context.Canceled) || end.Rows != 2 || end.Failed != 2 || end.Published != 0 {
			t.Errorf("batch end %+v; want the cancellation, 2 rows failed", end)
		}
	default:
		t.Error("the cancelled batch was not traced")
	}
}

func TestCloseWhileIdleAndBeforeRun(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	r, err := outbox.NewRelay(testenv.Pool(t, e.dsn), e.mem, outbox.WithPollInterval(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	c := e.collect(t, 1)
	runDone := startRun(r)
	e.add(t, msg("k", 0))
	c.wait(t, 1, 10*time.Second) // running, then idle
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-runDone; !errors.Is(err, outbox.ErrClosed) {
		t.Fatalf("Run: %v, want ErrClosed", err)
	}

	never, err := outbox.NewRelay(testenv.Pool(t, e.dsn), e.mem)
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := never.Close(); err != nil {
			t.Fatalf("Close before Run: %v", err)
		}
	}
	if err := never.Run(ctx); !errors.Is(err, outbox.ErrClosed) {
		t.Errorf("Run: %v, want ErrClosed", err)
	}
	if _, err := never.Backlog(ctx); !errors.Is(err, outbox.ErrClosed) {
		t.Errorf("Backlog: %v, want ErrClosed", err)
	}
	if _, err := never.Cleanup(ctx); !errors.Is(err, outbox.ErrClosed) {
		t.Errorf("Cleanup: %v, want ErrClosed", err)
	}
	if st := never.Stats(); st != (outbox.Stats{}) {
		t.Errorf("Stats: %+v", st)
	}
}

// ctxPublisher checks that Publish runs in the context TraceBatchStart returned.
type ctxPublisher struct {
	broker.Publisher
	mu      sync.Mutex
	outside int
}

func (p *ctxPublisher) Publish(ctx context.Context, topic string, msgs ...broker.Message) error {
	if ctx.Value(batchKey{}) == nil {
		p.mu.Lock()
		p.outside++
		p.mu.Unlock()
	}
	return p.Publisher.Publish(ctx, topic, msgs...)
}

func TestPublishRunsInTheTracedBatchContext(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	c := e.collect(t, 1)
	pub := &ctxPublisher{Publisher: e.mem}
	tr1, tr2 := newTracer(), newTracer()
	r, _ := run(t, testenv.Pool(t, e.dsn), pub, outbox.WithTracer(tr1), outbox.WithTracer(tr2), outbox.WithPollInterval(20*time.Millisecond))
	e.add(t, msg("a", 0), msg("b", 0))
	c.wait(t, 2, 10*time.Second)
	testenv.Eventually(t, 10*time.Second, "the batch counted", func() bool { return r.Stats().Published == 2 })
	pub.mu.Lock()
	defer pub.mu.Unlock()
	if pub.outside != 0 {
		t.Errorf("%d Publish calls outside the traced context", pub.outside)
	}
	for i, tr := range []*tracer{tr1, tr2} {
		if _, published, _ := tr.totals(); published != 2 {
			t.Errorf("tracer %d heard %d published", i+1, published)
		}
	}
}

// oldSQL is the DDL of the outbox before issue 14 (table, then its three
// index names): it also indexed pending rows by seq alone.
const oldSQL = `create table %[1]s (
  seq bigint generated always as identity primary key, id text not null, topic text not null,
  key text not null default '', bucket smallint not null, header jsonb, payload bytea not null,
  priority smallint not null default 0, event_time timestamptz not null,
  created_at timestamptz not null default now(), published_at timestamptz, error text);
create index %[2]s on %[1]s (bucket, seq) where published_at is null;
create index %[3]s on %[1]s (seq) where published_at is null;
create index %[4]s on %[1]s (published_at) where published_at is not null;`

// indexes lists the indexes of table in schema ("" for the current one).
func indexes(t testing.TB, db *pgxpool.Pool, schema, table string) []string {
	t.Helper()
	rows, err := db.Query(context.Background(), `select indexname::text from pg_indexes
where schemaname = coalesce(nullif($1, ''), current_schema) and tablename = $2 order by 1`, schema, table)
	if err != nil {
		t.Fatal(err)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	return names
}

// TestMigrateUpgradesATableOfAnOlderVersion: Migrate (and SQL) bring a table
// created by the previous version to the current indexes, keeping its rows.
func TestMigrateUpgradesATableOfAnOlderVersion(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	schema := testenv.Name(t, "s")
	if _, err := e.db.Exec(ctx, "create schema "+pgx.Identifier{schema}.Sanitize()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_, _ = e.db.Exec(context.Background(), "drop schema "+pgx.Identifier{schema}.Sanitize()+" cascade")
	})
	c := e.collect(t, 1)
	for i, name := range []string{"old_outbox", schema + ".old_outbox"} {
		tbl, err := outbox.NewTable(name)
		if err != nil {
			t.Fatal(err)
		}
		base := strings.ReplaceAll(name, ".", "_")
		idx := func(suffix string) string { return pgx.Identifier{base + "_" + suffix}.Sanitize() }
		ddl := fmt.Sprintf(oldSQL, pgx.Identifier(strings.Split(name, ".")).Sanitize(), idx("pending_bucket"), idx("pending_seq"), idx("published_at"))
		if _, err := e.db.Exec(ctx, ddl); err != nil {
			t.Fatal(err)
		}
		if err := tbl.Add(ctx, e.db, e.topic, msg(name, 0)); err != nil {
			t.Fatal(err)
		}
		sch, _, _ := strings.Cut(name, ".")
		if sch == name {
			sch = ""
		}
		before := indexes(t, e.db, sch, "old_outbox")
		for range 2 {
			if err := tbl.Migrate(ctx, e.db); err != nil {
				t.Fatal(err)
			}
		}
		after := indexes(t, e.db, sch, "old_outbox")
		want := []string{base + "_pending_bucket", base + "_published_at", "old_outbox_pkey"}
		slices.Sort(want)
		if len(before) != 4 || !slices.Equal(after, want) {
			t.Errorf("%s: indexes %v before Migrate, %v after; want %v", name, before, after, want)
		}
		_, stop := run(t, testenv.Pool(t, e.dsn), e.mem, outbox.WithTable(name), outbox.WithPollInterval(20*time.Millisecond))
		c.wait(t, i+1, 10*time.Second)
		if err := stop(); err != nil {
			t.Fatal(err)
		}
	}
}

// TestMigrateConcurrently: instances starting together all migrate.
func TestMigrateConcurrently(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	for round := range 5 {
		tbl, err := outbox.NewTable(fmt.Sprintf("race_%d", round))
		if err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		errs := make(chan error, 8)
		for range 8 {
			wg.Go(func() { errs <- tbl.Migrate(ctx, e.db) })
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Errorf("round %d: %v", round, err)
			}
		}
	}
}
