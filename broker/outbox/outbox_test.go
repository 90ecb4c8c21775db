package outbox_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/go-integration/patterns/broker"
	"github.com/go-integration/patterns/broker/middleware"
	"github.com/go-integration/patterns/broker/outbox"
	"github.com/go-integration/patterns/internal/testenv"
)

func TestRelayPublishesEveryFieldInOrderPerKey(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()

	// One message checked field by field, binary payload included.
	var got broker.Message
	gotc := make(chan broker.Message, 1)
	s := broker.Subscription{Topic: e.topic + ".one", Group: "g"}
	if err := e.mem.Provision(ctx, s); err != nil {
		t.Fatal(err)
	}
	sctx, cancel := context.WithCancel(ctx)
	subDone := make(chan error, 1)
	go func() {
		subDone <- e.mem.Subscribe(sctx, s, func(_ context.Context, m broker.Message) error { gotc <- m; return nil })
	}()
	defer func() { cancel(); <-subDone }()

	when := time.Date(2026, 1, 2, 3, 4, 5, 6000, time.UTC)
	one := []broker.Message{{Key: "rentals.fr", Payload: []byte{0, 0xff, 0xfe, 'x'}, Header: map[string]string{"traceparent": "00-abc-01", "é": "ü"}, Time: when, Priority: 7}}
	tx, err := e.db.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := outbox.Add(ctx, tx, s.Topic, one...); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if one[0].ID == "" {
		t.Fatal("Add did not fill the ID")
	}

	c := e.collect(t, 4)
	const keys, perKey = 5, 40
	for i := range perKey {
		batch := make([]broker.Message, 0, keys)
		for k := range keys {
			batch = append(batch, msg(fmt.Sprintf("k%d", k), i))
		}
		e.add(t, batch...)
	}
	tr := newTracer()
	r, _ := run(t, testenv.Pool(t, e.dsn), e.mem, outbox.WithBatchSize(17), outbox.WithPollInterval(20*time.Millisecond), outbox.WithTracer(tr))

	select {
	case got = <-gotc:
	case <-time.After(10 * time.Second):
		t.Fatal("message not relayed")
	}
	w := one[0]
	if got.ID != w.ID || got.Key != w.Key || !bytes.Equal(got.Payload, w.Payload) || !got.Time.Equal(w.Time) ||
		got.Priority != w.Priority || len(got.Header) != 2 || got.Header["traceparent"] != "00-abc-01" || got.Header["é"] != "ü" {
		t.Fatalf("relayed %+v, want %+v", got, w)
	}
	c.wait(t, keys*perKey, 10*time.Second)
	if d := c.check(t, keys*perKey); d != 0 {
		t.Errorf("%d duplicates with one relay and no fault", d)
	}
	const total = keys*perKey + 1
	testenv.Eventually(t, 10*time.Second, "relay counts every message", func() bool { return r.Stats().Published == total })
	st := r.Stats()
	batches, published, failed := tr.totals()
	if published != total || uint64(batches) != st.Batches || batches < keys*perKey/17 || failed != 0 || st.Failures != 0 {
		t.Errorf("tracer heard %d messages in %d batches (%d failed); stats %+v", published, batches, failed, st)
	}
	tr.mu.Lock()
	defer tr.mu.Unlock()
	if len(tr.starts) != len(tr.ends) || tr.lost != 0 {
		t.Errorf("%d batch starts, %d ends, %d ends without the start's context", len(tr.starts), len(tr.ends), tr.lost)
	}
	for i, s := range tr.starts {
		if s.Table != outbox.DefaultTable || s.Worker != 0 || len(s.Buckets) == 0 {
			t.Errorf("start %d: %+v", i, s)
		}
	}
	var lag time.Duration
	for i, e := range tr.ends {
		if e.Rows > 17 || e.Published > e.Rows || e.Duration <= 0 || e.Err != nil || e.SetAside != 0 || e.Failed != 0 {
			t.Errorf("end %d: %+v", i, e)
		}
		lag = max(lag, e.Lag)
	}
	if lag <= 0 {
		t.Error("no batch reported a lag")
	}
}

func TestRolledBackMessagesAreNeverPublished(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	c := e.collect(t, 1)
	run(t, testenv.Pool(t, e.dsn), e.mem, outbox.WithPollInterval(20*time.Millisecond))

	// The business write and the event in one transaction that rolls back.
	tx, err := e.db.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, `create table orders (id int primary key)`); err != nil {
		t.Fatal(err)
	}
	rolledBack := []broker.Message{{Key: "k", Payload: []byte("rolled back")}}
	if err := outbox.Add(ctx, tx, e.topic, rolledBack...); err != nil {
		t.Fatal(err)
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	// A committed message after it on the same key: once it arrives, the
	// rolled-back one (earlier in seq) would have come first if it existed.
	e.add(t, msg("k", 0))
	c.wait(t, 1, 10*time.Second)
	c.check(t, 1)
	c.mu.Lock()
	n := c.deliveries[rolledBack[0].ID]
	c.mu.Unlock()
	if n != 0 {
		t.Fatal("a rolled-back message was published")
	}
	var rows int
	if err := e.db.QueryRow(ctx, `select count(*) from outbox where id = $1`, rolledBack[0].ID).Scan(&rows); err != nil || rows != 0 {
		t.Fatalf("rolled-back row count %d, %v", rows, err)
	}
}

func TestAddRejectsBadInput(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	if err := outbox.Add(ctx, e.db, "", msg("k", 0)); !errors.Is(err, broker.ErrInvalidMessage) {
		t.Errorf("empty topic: %v, want ErrInvalidMessage", err)
	}
	if err := outbox.Add(ctx, e.db, e.topic); err != nil {
		t.Errorf("no messages: %v", err)
	}
	if err := outbox.Add(ctx, e.db, e.topic, broker.Message{}); err != nil {
		t.Errorf("empty message: %v", err)
	}
	var n int
	if err := e.db.QueryRow(ctx, `select count(*) from outbox`).Scan(&n); err != nil || n != 1 {
		t.Errorf("rows %d, %v; want 1", n, err)
	}
	// A missing table is an error from Add, not a silent drop.
	other, err := outbox.NewTable("missing_outbox")
	if err != nil {
		t.Fatal(err)
	}
	if err := other.Add(ctx, e.db, e.topic, msg("k", 0)); err == nil {
		t.Error("Add to a missing table succeeded")
	}
	for _, name := range []string{"", "a.b.c", ".x", "x."} {
		if _, err := outbox.NewTable(name); !errors.Is(err, outbox.ErrInvalidTable) {
			t.Errorf("NewTable(%q): %v, want ErrInvalidTable", name, err)
		}
	}
}

// misspelt implements no tracer interface (TraceBatchBegin is not one).
type misspelt struct{}

func (misspelt) TraceBatchBegin(ctx context.Context, _ outbox.TraceBatchStartData) context.Context {
	return ctx
}

// backoffOnly implements one tracer interface of two.
type backoffOnly struct{}

func (backoffOnly) TraceBackoff(context.Context, outbox.TraceBackoffData) {}

func TestNewRelayRejectsBadOptions(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	bad := []struct {
		opt  outbox.Option
		says string // the error names what is wrong
	}{
		{outbox.WithTable("a.b.c"), "WithTable"},
		{outbox.WithTable(""), "WithTable"},
		{outbox.WithBatchSize(0), "WithBatchSize"},
		{outbox.WithClaimBuckets(0), "WithClaimBuckets"},
		{outbox.WithClaimBuckets(outbox.Buckets + 1), "WithClaimBuckets"},
		{outbox.WithWorkers(0), "WithWorkers"},
		{outbox.WithWorkers(outbox.Buckets + 1), "WithWorkers"},
		{outbox.WithPollInterval(0), "WithPollInterval"},
		{outbox.WithPublishTimeout(-time.Second), "WithPublishTimeout"},
		{outbox.WithRetention(-time.Second), "WithRetention"},
		{outbox.WithCleanupInterval(0), "WithCleanupInterval"},
		{outbox.WithDrainTimeout(0), "WithDrainTimeout"},
		{outbox.WithBackoff(time.Minute, time.Second), "WithBackoff"},
		{outbox.WithBackoff(0, time.Second), "WithBackoff"},
		{outbox.WithLogger(nil), "WithLogger"},
		{outbox.WithTracer(nil), "WithTracer"},
		{outbox.WithTracer(misspelt{}), "implements none of outbox.BatchTracer, outbox.BackoffTracer"},
		{nil, "nil option"},
	}
	for _, c := range bad {
		if _, err := outbox.NewRelay(e.db, e.mem, c.opt); !errors.Is(err, outbox.ErrInvalidOption) {
			t.Errorf("%s: NewRelay = %v, want ErrInvalidOption", c.says, err)
		} else if !strings.Contains(err.Error(), c.says) {
			t.Errorf("NewRelay = %v: does not name %s", err, c.says)
		}
	}
	// Two bad options: both are named.
	_, err := outbox.NewRelay(e.db, e.mem, outbox.WithBatchSize(-1), outbox.WithWorkers(-1))
	if err == nil || !strings.Contains(err.Error(), "WithBatchSize") || !strings.Contains(err.Error(), "WithWorkers") {
		t.Errorf("two bad options: %v", err)
	}
	if _, err := outbox.NewRelay(nil, e.mem); !errors.Is(err, outbox.ErrInvalidOption) {
		t.Errorf("NewRelay without a pool: %v", err)
	}
	if _, err := outbox.NewRelay(e.db, nil); !errors.Is(err, outbox.ErrInvalidOption) {
		t.Errorf("NewRelay without a publisher: %v", err)
	}
	// Good values are accepted.
	if _, err := outbox.NewRelay(e.db, e.mem, outbox.WithTable("s.t"), outbox.WithBatchSize(1), outbox.WithClaimBuckets(outbox.Buckets),
		outbox.WithWorkers(2), outbox.WithPollInterval(time.Millisecond), outbox.WithoutListen(), outbox.WithBackoff(time.Millisecond, time.Millisecond),
		outbox.WithPublishTimeout(time.Second), outbox.WithRetention(0), outbox.WithCleanupInterval(time.Second), outbox.WithoutCleanup(),
		outbox.WithDrainTimeout(time.Second), outbox.WithLogger(slog.Default()), outbox.WithTracer(newTracer()), outbox.WithTracer(backoffOnly{})); err != nil {
		t.Errorf("good options: %v", err)
	}
	// Run on a table that does not exist fails at once.
	r, err := outbox.NewRelay(e.db, e.mem, outbox.WithTable("nope"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := r.Run(ctx); err == nil || !strings.Contains(err.Error(), "nope") {
		t.Errorf("Run on a missing table: %v", err)
	}
}

func TestCustomTableNameInItsOwnSchema(t *testing.T) {
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
	name := schema + ".Events Outbox"
	tbl, err := outbox.NewTable(name)
	if err != nil {
		t.Fatal(err)
	}
	for range 2 { // Migrate is idempotent
		if err := tbl.Migrate(ctx, e.db); err != nil {
			t.Fatal(err)
		}
	}
	c := e.collect(t, 1)
	// Two relays: the default table's (empty) and the custom one.
	run(t, testenv.Pool(t, e.dsn), e.mem, outbox.WithPollInterval(time.Hour))
	r, _ := run(t, testenv.Pool(t, e.dsn), e.mem, outbox.WithTable(name), outbox.WithPollInterval(time.Hour))
	if err := tbl.Add(ctx, e.db, e.topic, msg("k", 0), msg("k", 1)); err != nil {
		t.Fatal(err)
	}
	c.wait(t, 2, 10*time.Second)
	c.check(t, 2)
	// The backlog names its table.
	if bl, err := r.Backlog(ctx); err != nil || bl.Table != name {
		t.Errorf("Backlog = %+v, %v; want table %q", bl, err, name)
	}
}

func TestNotifyWakesRelayWithoutPolling(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	c := e.collect(t, 1)
	// With an hour between polls only NOTIFY can bring these in time.
	run(t, testenv.Pool(t, e.dsn), e.mem, outbox.WithPollInterval(time.Hour))
	for i := range 3 {
		e.add(t, msg("k", i))
		c.wait(t, i+1, 10*time.Second)
	}
	c.check(t, 3)
}

func TestPollingAloneRelays(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	c := e.collect(t, 1)
	run(t, testenv.Pool(t, e.dsn), e.mem, outbox.WithoutListen(), outbox.WithPollInterval(20*time.Millisecond))
	for i := range 3 {
		e.add(t, msg("k", i))
		c.wait(t, i+1, 10*time.Second)
	}
	c.check(t, 3)
}

// TestRelayKilledBetweenPublishAndMark kills the relay's database connections
// right after the broker confirmed a batch, before the relay marks it: the
// batch must be published again by the next relay (at-least-once), and a
// consumer behind the dedup middleware handles each message once.
func TestRelayKilledBetweenPublishAndMark(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()

	var mu sync.Mutex
	handled := map[string]int{}
	deliveries := 0
	dedup, err := middleware.Dedup(middleware.NewMemoryDedupStore(), middleware.WithHandledFor(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	h := dedup(func(_ context.Context, m broker.Message) error {
		mu.Lock()
		handled[m.ID]++
		mu.Unlock()
		return nil
	})
	c := e.collect(t, 1) // counts every delivery, duplicates included
	s := broker.Subscription{Topic: e.topic, Group: "dedup"}
	if err := e.mem.Provision(ctx, s); err != nil {
		t.Fatal(err)
	}
	sctx, scancel := context.WithCancel(ctx)
	subDone := make(chan error, 1)
	go func() {
		subDone <- e.mem.Subscribe(sctx, s, func(ctx context.Context, m broker.Message) error {
			mu.Lock()
			deliveries++
			mu.Unlock()
			return h(ctx, m)
		})
	}()
	defer func() { scancel(); <-subDone }()

	const n = 20
	batch := make([]broker.Message, n)
	for i := range batch {
		batch[i] = msg(fmt.Sprintf("k%d", i%3), i/3)
	}
	e.add(t, batch...)

	app := testenv.Name(t, "relay")
	killed := make(chan struct{})
	var once sync.Once
	pub := &faultyPublisher{Publisher: e.mem}
	pub.after = func(string, []broker.Message) {
		once.Do(func() {
			// The process dies: its connection goes, the transaction with
			// it, and it publishes nothing more.
			pub.down.Store(true)
			terminate(t, e, app)
			close(killed)
		})
	}
	opts := []outbox.Option{outbox.WithPollInterval(20 * time.Millisecond), outbox.WithBackoff(10*time.Millisecond, 50*time.Millisecond)}
	_, stop1 := run(t, testenv.Pool(t, e.dsn+"&application_name="+app), pub, opts...)
	select {
	case <-killed:
	case <-time.After(10 * time.Second):
		t.Fatal("relay did not publish")
	}
	if err := stop1(); err != nil {
		t.Fatal(err)
	}
	c.wait(t, n, 10*time.Second)
	var pending int
	if err := e.db.QueryRow(ctx, `select count(*) from outbox where published_at is null`).Scan(&pending); err != nil {
		t.Fatal(err)
	}
	if pending != n {
		t.Fatalf("%d rows pending after the kill, want all %d (marks must roll back)", pending, n)
	}

	// The next relay publishes the batch again.
	r2, _ := run(t, testenv.Pool(t, e.dsn), e.mem, opts...)
	testenv.Eventually(t, 10*time.Second, "the batch published again", func() bool { c.mu.Lock(); defer c.mu.Unlock(); return c.dups >= n })
	if d := c.check(t, n); d != n {
		t.Errorf("%d duplicates, want %d (the whole batch once more)", d, n)
	}
	testenv.Eventually(t, 10*time.Second, "nothing pending", func() bool {
		b, err := r2.Backlog(ctx)
		return err == nil && b.Pending == 0
	})
	mu.Lock()
	defer mu.Unlock()
	if deliveries != 2*n {
		t.Errorf("dedup consumer saw %d deliveries, want %d", deliveries, 2*n)
	}
	for _, m := range batch {
		if handled[m.ID] != 1 {
			t.Errorf("message %s handled %d times behind Dedup, want once", m.ID, handled[m.ID])
		}
	}
	t.Logf("killed between publish and mark: %d messages delivered twice, handled once each behind middleware.Dedup", n)
}

// terminate ends the backend of application app that is inside a
// transaction (the relay's batch) and waits until it is gone.
func terminate(t testing.TB, e *env, app string) {
	ctx := context.Background()
	rows, err := e.db.Query(ctx, `select pid from pg_stat_activity where application_name = $1 and state like 'idle in transaction%'`, app)
	if err == nil {
		var pids []int32
		pids, err = pgx.CollectRows(rows, pgx.RowTo[int32])
		if err == nil && len(pids) != 1 {
			err = fmt.Errorf("%d backends in a transaction, want the relay's one", len(pids))
		}
		if err == nil {
			_, err = e.db.Exec(ctx, `select pg_terminate_backend($1)`, pids[0])
			testenv.Eventually(t, 10*time.Second, "the relay's backend is gone", func() bool {
				var n int
				err := e.db.QueryRow(ctx, `select count(*) from pg_stat_activity where pid = $1`, pids[0]).Scan(&n)
				return err == nil && n == 0
			})
		}
	}
	if err != nil {
		t.Error(err)
	}
}

func TestBrokerDownRowsAccumulateThenDrainInOrder(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	c := e.collect(t, 4)
	pub := &faultyPublisher{Publisher: e.mem}
	pub.down.Store(true)
	tr := newTracer()
	logs := newLevels(t)
	r, _ := run(t, testenv.Pool(t, e.dsn), pub, outbox.WithPollInterval(20*time.Millisecond), outbox.WithBackoff(5*time.Millisecond, 40*time.Millisecond),
		outbox.WithBatchSize(50), outbox.WithTracer(tr), outbox.WithLogger(slog.New(logs)))

	const keys, perKey = 5, 60
	next := 0
	addRound := func(rounds int) {
		for range rounds {
			batch := make([]broker.Message, 0, keys)
			for k := range keys {
				batch = append(batch, msg(fmt.Sprintf("k%d", k), next))
			}
			next++
			e.add(t, batch...)
		}
	}
	addRound(perKey / 2)
	// The relay tries, fails and backs off; rows accumulate.
	for i := range 3 {
		select {
		case f := <-tr.ended:
			if !errors.Is(f.Err, errBrokerDown) || f.Rows == 0 || f.Failed != f.Rows || f.Published != 0 || f.Duration <= 0 {
				t.Fatalf("batch end %+v, want the broker-down error and every row failed", f)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("relay did not try the broker")
		}
		select {
		case b := <-tr.backedOff:
			if !errors.Is(b.Err, errBrokerDown) || b.Worker != 0 || b.Failures != i+1 || b.Wait < 0 || b.Wait > 40*time.Millisecond || b.Table != outbox.DefaultTable {
				t.Fatalf("backoff %d: %+v", i+1, b)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("relay did not back off")
		}
	}
	addRound(perKey / 2)
	bl, err := r.Backlog(ctx)
	if err != nil {
		t.Fatal(err)
	}
	st := r.Stats()
	if bl.Pending != keys*perKey || st.Published != 0 || st.Failed == 0 || st.Failures == 0 || bl.OldestPending <= 0 {
		t.Fatalf("while down: %+v %+v; want %d pending, none published, failures, an oldest age", bl, st, keys*perKey)
	}
	c.mu.Lock()
	if c.unique != 0 {
		t.Fatalf("%d messages arrived while the broker was down", c.unique)
	}
	c.mu.Unlock()

	pub.down.Store(false)
	c.wait(t, keys*perKey, 10*time.Second)
	c.check(t, keys*perKey)
	testenv.Eventually(t, 10*time.Second, "backlog drained", func() bool {
		bl, err := r.Backlog(ctx)
		return err == nil && bl.Pending == 0 && bl.OldestPending == 0 && r.Stats().Published == keys*perKey
	})
	if logs.warn.Load() == 0 || logs.info.Load() == 0 {
		t.Errorf("logged %d warnings and %d infos; want the failures and the recovery", logs.warn.Load(), logs.info.Load())
	}
	st = r.Stats()
	t.Logf("broker down: %d failed batches (%d messages) before it returned", st.Failures, st.Failed)
}

// TestTwoRelaysShareTenThousandMessages runs two relays (two pools, as two
// processes would) while producers write 10,000 messages on 50 keys.
func TestTwoRelaysShareTenThousandMessages(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	c := e.collect(t, 8)
	opts := []outbox.Option{outbox.WithPollInterval(50 * time.Millisecond), outbox.WithBatchSize(200), outbox.WithBackoff(10*time.Millisecond, 100*time.Millisecond)}
	r1, _ := run(t, testenv.Pool(t, e.dsn), e.mem, opts...)
	r2, _ := run(t, testenv.Pool(t, e.dsn), e.mem, opts...)

	const total, keys, producers, perTx = 10000, 50, 5, 10
	var wg sync.WaitGroup
	for p := range producers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Producer p owns keys p, p+producers, ...: each key's writes are sequential.
			counters := map[string]int{}
			var owned []string
			for k := p; k < keys; k += producers {
				owned = append(owned, fmt.Sprintf("key.%02d", k))
			}
			for i := 0; i < total/producers; i += perTx {
				batch := make([]broker.Message, perTx)
				for j := range batch {
					k := owned[(i+j)%len(owned)]
					batch[j] = msg(k, counters[k])
					counters[k]++
				}
				if err := outbox.Add(ctx, e.db, e.topic, batch...); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	c.wait(t, total, 30*time.Second)
	dups := c.check(t, total)
	// The consumer can see a batch before its relay committed the marks.
	var s1, s2 outbox.Stats
	testenv.Eventually(t, 10*time.Second, "both relays counted every message", func() bool {
		s1, s2 = r1.Stats(), r2.Stats()
		bl, err := r1.Backlog(ctx)
		return err == nil && bl.Pending == 0 && s1.Published+s2.Published >= uint64(total)
	})
	failures := s1.Failures + s2.Failures
	t.Logf("two relays: %d messages, relay 1 published %d in %d batches, relay 2 published %d in %d batches, %d duplicates, %d failed batches",
		total, s1.Published, s1.Batches, s2.Published, s2.Batches, dups, failures)
	if failures == 0 && dups != 0 {
		t.Errorf("%d duplicates without any failure: two relays published the same rows", dups)
	}
	if s1.Published+s2.Published != uint64(total)+uint64(dups) {
		t.Errorf("relays published %d, consumer saw %d", s1.Published+s2.Published, total+dups)
	}
}

func TestCleanupDeletesOnlyOldPublishedRows(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	e.add(t, msg("k", 0), msg("k", 1), msg("k", 2))
	// Row 0 published two hours ago, row 1 just now, row 2 pending.
	if _, err := e.db.Exec(ctx, `update outbox set published_at = case payload
		when '0' then now() - interval '2 hours' when '1' then now() end`); err != nil {
		t.Fatal(err)
	}
	r, err := outbox.NewRelay(e.db, e.mem, outbox.WithRetention(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	n, err := r.Cleanup(ctx)
	if err != nil || n != 1 {
		t.Fatalf("Cleanup deleted %d, %v; want 1", n, err)
	}
	rows, err := e.db.Query(ctx, `select convert_from(payload, 'UTF8') from outbox order by seq`)
	if err != nil {
		t.Fatal(err)
	}
	left, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil || strings.Join(left, ",") != "1,2" {
		t.Fatalf("rows left %v, %v; want 1,2", left, err)
	}
	bl, err := r.Backlog(ctx)
	if err != nil || bl.Pending != 1 || bl.OldestPending <= 0 {
		t.Fatalf("backlog %+v, %v; want one pending row with an age", bl, err)
	}
}

func TestRunStopsOnCancelAndRefusesSecondRun(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	r, err := outbox.NewRelay(e.db, e.mem, outbox.WithWorkers(3), outbox.WithCleanupInterval(10*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	c := e.collect(t, 1)
	e.add(t, msg("k", 0))
	c.wait(t, 1, 10*time.Second) // Run is running
	stopped, stop := context.WithCancel(context.Background())
	stop()
	if err := r.Run(stopped); !errors.Is(err, outbox.ErrRunning) {
		t.Fatalf("second Run: %v, want ErrRunning", err)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run after cancel: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
	// goleak in TestMain checks that nothing it started is left.
}

// TestRefusedMessageDoesNotBlockItsKey: a message the broker refuses as
// invalid is set aside (marked with its reason) and the rest of its key and
// batch go on, in order.
func TestRefusedMessageDoesNotBlockItsKey(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	var mu sync.Mutex
	var got []string
	arrived := make(chan struct{}, 1)
	s := broker.Subscription{Topic: e.topic, Group: "g"}
	if err := e.mem.Provision(ctx, s); err != nil {
		t.Fatal(err)
	}
	sctx, cancel := context.WithCancel(ctx)
	subDone := make(chan error, 1)
	go func() {
		subDone <- e.mem.Subscribe(sctx, s, func(_ context.Context, m broker.Message) error {
			mu.Lock()
			got = append(got, m.Key+":"+string(m.Payload))
			mu.Unlock()
			select {
			case arrived <- struct{}{}:
			default:
			}
			return nil
		})
	}()
	defer func() { cancel(); <-subDone }()

	pub := &faultyPublisher{Publisher: e.mem, refuse: func(m broker.Message) bool { return string(m.Payload) == "poison" }}
	e.add(t, msg("a", 0), broker.Message{Key: "a", Payload: []byte("poison")}, msg("a", 1), msg("b", 0), msg("a", 2))
	tr := newTracer()
	r, _ := run(t, testenv.Pool(t, e.dsn), pub, outbox.WithPollInterval(20*time.Millisecond), outbox.WithTracer(tr))
	want := "a:0 a:1 b:0 a:2"
	for {
		mu.Lock()
		n := len(got)
		mu.Unlock()
		if n >= 4 {
			break
		}
		select {
		case <-arrived:
		case <-time.After(10 * time.Second):
			t.Fatalf("only %d messages arrived", n)
		}
	}
	testenv.Eventually(t, 10*time.Second, "nothing pending", func() bool { bl, err := r.Backlog(ctx); return err == nil && bl.Pending == 0 })
	mu.Lock()
	if g := strings.Join(got, " "); g != want {
		t.Errorf("arrived %q, want %q", g, want)
	}
	mu.Unlock()
	testenv.Eventually(t, 10*time.Second, "the batch counted", func() bool { return r.Stats().Published == 4 })
	if st := r.Stats(); st.SetAside != 1 || st.Published != 4 || st.Failures != 0 {
		t.Errorf("stats %+v; want 1 set aside, 4 published", st)
	}
	if _, published, failed := tr.totals(); published != 4 || failed != 0 {
		t.Errorf("tracer: %d published, %d failed batches", published, failed)
	}
	tr.mu.Lock()
	setAside := 0
	for _, e := range tr.ends {
		setAside += e.SetAside
	}
	tr.mu.Unlock()
	if setAside != 1 {
		t.Errorf("tracer: %d set aside, want 1", setAside)
	}
	var reason string
	if err := e.db.QueryRow(ctx, `select error from outbox where payload = 'poison' and published_at is not null`).Scan(&reason); err != nil || !strings.Contains(reason, "refused") {
		t.Errorf("refused row: reason %q, %v", reason, err)
	}
}

// TestListenerReconnects cuts the relay's LISTEN connection: it must listen
// again, so notifications wake it though polling is an hour apart.
func TestListenerReconnects(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	c := e.collect(t, 1)
	app := testenv.Name(t, "relay")
	tr := newTracer()
	run(t, testenv.Pool(t, e.dsn+"&application_name="+app), e.mem, outbox.WithPollInterval(time.Hour),
		outbox.WithBackoff(10*time.Millisecond, 50*time.Millisecond), outbox.WithTracer(tr))
	listener := func() (pid int32) {
		testenv.Eventually(t, 10*time.Second, "the relay listens", func() bool {
			err := e.db.QueryRow(ctx, `select pid from pg_stat_activity where application_name = $1 and query like 'listen %'`, app).Scan(&pid)
			return err == nil
		})
		return pid
	}
	first := listener()
	e.add(t, msg("k", 0))
	c.wait(t, 1, 10*time.Second)
	if _, err := e.db.Exec(ctx, `select pg_terminate_backend($1)`, first); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 10*time.Second, "the relay listens again", func() bool {
		var pid int32
		err := e.db.QueryRow(ctx, `select pid from pg_stat_activity where application_name = $1 and query like 'listen %' and pid <> $2`, app, first).Scan(&pid)
		return err == nil
	})
	select {
	case b := <-tr.backedOff:
		if b.Worker != -1 || b.Failures != 1 || b.Err == nil {
			t.Errorf("backoff after the LISTEN connection was cut: %+v", b)
		}
	default:
		t.Error("no backoff traced after the LISTEN connection was cut")
	}
	e.add(t, msg("k", 1))
	c.wait(t, 2, 10*time.Second)
	c.check(t, 2)
}

func TestRunReturnsErrClosedWhenPublisherIsClosed(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	client := e.mem.Client()
	if err := client.Close(); err != nil {
		t.Fatal(err)
	}
	e.add(t, msg("k", 0))
	r, err := outbox.NewRelay(e.db, client, outbox.WithWorkers(2), outbox.WithPollInterval(20*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := r.Run(ctx); !errors.Is(err, broker.ErrClosed) {
		t.Fatalf("Run with a closed publisher: %v, want ErrClosed", err)
	}
	bl, err := r.Backlog(ctx)
	if err != nil || bl.Pending != 1 {
		t.Fatalf("backlog %+v, %v; want the row still pending", bl, err)
	}
}

// TestSimpleProtocol runs Add and the relay with pgx's simple protocol, as
// behind PgBouncer in transaction mode (where LISTEN does not work: NoListen).
func TestSimpleProtocol(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	simple := testenv.Pool(t, e.dsn+"&default_query_exec_mode=simple_protocol")
	c := e.collect(t, 1)
	m := broker.Message{Key: "k", Payload: []byte("0"), Header: map[string]string{"a": "b'c"}}
	if err := outbox.Add(ctx, simple, e.topic, m, msg("k", 1)); err != nil {
		t.Fatal(err)
	}
	run(t, simple, e.mem, outbox.WithoutListen(), outbox.WithPollInterval(20*time.Millisecond))
	c.wait(t, 2, 10*time.Second)
	c.check(t, 2)
}

// Text PostgreSQL cannot store (a NUL byte, invalid UTF-8) in the topic, key
// or header is refused with ErrInvalidMessage before anything is sent, so
// the caller's transaction is not aborted and a header is not silently
// altered by JSON encoding.
func TestAddRejectsTextPostgresCannotStore(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	cases := []struct {
		name  string
		topic string
		m     broker.Message
	}{
		{"NUL in topic", "a\x00b", msg("k", 0)},
		{"invalid UTF-8 topic", "caf\xe9", msg("k", 0)},
		{"NUL in key", e.topic, msg("k\x00", 0)},
		{"invalid UTF-8 key", e.topic, msg("caf\xe9", 0)},
		{"NUL in header value", e.topic, broker.Message{Key: "k", Header: map[string]string{"h": "a\x00b"}}},
		{"invalid UTF-8 header value", e.topic, broker.Message{Key: "k", Header: map[string]string{"h": "caf\xe9"}}},
		{"invalid UTF-8 header name", e.topic, broker.Message{Key: "k", Header: map[string]string{"caf\xe9": "v"}}},
		{"NUL in ID", e.topic, broker.Message{ID: "a\x00", Key: "k"}},
	}
	for _, c := range cases {
		tx, err := e.db.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := outbox.Add(ctx, tx, c.topic, c.m); !errors.Is(err, broker.ErrInvalidMessage) {
			t.Errorf("%s: Add = %v, want ErrInvalidMessage", c.name, err)
		}
		// The transaction is still usable: the business write can go on.
		if err := outbox.Add(ctx, tx, e.topic, msg("k", 1)); err != nil {
			t.Errorf("%s: the transaction was aborted by the refused Add: %v", c.name, err)
		}
		_ = tx.Rollback(ctx)
	}
}
