package outbox_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/go-integration/patterns/broker"
	"github.com/go-integration/patterns/broker/cdc"
	"github.com/go-integration/patterns/broker/memory"
	"github.com/go-integration/patterns/broker/outbox"
	"github.com/go-integration/patterns/internal/testenv"
)

// TestFaultPrimaryFailoverDuringRelayRun: writers add outbox rows and a relay
// publishes them, both through one pool on the private pair's two-host URL
// (target_session_attrs=read-write), while the primary crashes (stop -m
// immediate) and its synchronous standby is promoted. Every row whose Commit
// succeeded must be published (0 lost), nothing that was not committed may
// be (0 phantom), order per key kept; duplicates are counted.
//
// A Commit that fails with a lost connection is ambiguous: the server may
// have committed it. The writer then asks the database (the new primary,
// once it answers) whether the row exists, as a real caller would, and
// counts it committed if it does.
func TestFaultPrimaryFailoverDuringRelayRun(t *testing.T) {
	testenv.FaultTest(t)
	pair := testenv.Pair(t)
	_, pairURL, _, _ := pair.Schema(t)
	e := &env{dsn: pairURL, mem: memory.MustNew(), topic: testenv.Name(t, "topic")}
	t.Cleanup(func() { _ = e.mem.Close() })
	e.db = testenv.Pool(t, pairURL)
	ctx := context.Background()
	if err := outbox.Migrate(ctx, e.db); err != nil {
		t.Fatal(err)
	}
	c := e.collect(t, 1)
	relay, stop := run(t, e.db, e.mem,
		outbox.WithLogger(slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))))

	const writers = 8
	var (
		mu         sync.Mutex
		committed  = map[string]bool{} // IDs of rows known committed
		commitErrs int                 // Commit or Add failed: the row was retried
		ambiguous  int                 // of those, committed after all
	)
	writeCtx, stopWriting := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			key := "k" + strconv.Itoa(w)
			for n, try := 0, 0; writeCtx.Err() == nil; try++ {
				m := msg(key, n)
				m.ID = fmt.Sprintf("%s-%d-%d", key, n, try)
				// Not writeCtx: a commit cut short by the end of the test would be ambiguous too.
				err := addOne(ctx, e, m)
				if err != nil {
					exists := rowExists(t, ctx, e, m.ID)
					mu.Lock()
					commitErrs++
					if exists {
						ambiguous++
					}
					mu.Unlock()
					if !exists {
						continue // not committed: the same payload again, a new ID
					}
				}
				mu.Lock()
				committed[m.ID] = true
				mu.Unlock()
				n++
			}
		})
	}
	count := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(committed)
	}
	testenv.Eventually(t, 10*time.Second, "rows committed before the crash", func() bool { return count() >= 200 })
	c.wait(t, 100, 10*time.Second)

	crashed := time.Now()
	pair.Crash(t)
	pair.Promote(t)
	promoted := time.Now()
	before := count()
	testenv.Eventually(t, 15*time.Second, "writers committing on the new primary", func() bool { return count() >= before+200 })
	writing := time.Since(crashed)
	stopWriting()
	wg.Wait()

	total := count()
	c.wait(t, total, 60*time.Second)
	delivered := time.Since(promoted)
	dups := c.check(t, total)

	mu.Lock()
	c.mu.Lock()
	for id := range committed {
		if c.deliveries[id] == 0 {
			t.Errorf("committed row %s was never published", id)
		}
	}
	for id := range c.deliveries {
		if !committed[id] {
			t.Errorf("phantom: %s was published but its commit failed and no row exists", id)
		}
	}
	c.mu.Unlock()
	mu.Unlock()

	// The last batch is published before it is marked: wait for its commit.
	testenv.Eventually(t, 10*time.Second, "no row left pending", func() bool {
		b, err := relay.Backlog(ctx)
		return err == nil && b.Pending == 0
	})
	st := relay.Stats()
	t.Logf("%d rows committed (%d Add/Commit failures, %d of them committed after all), all %d published, %d duplicates; "+
		"200 more rows committed %v after the crash; everything published %v after the promote; relay: %d batch failures",
		total, commitErrs, ambiguous, total, dups, writing.Round(time.Millisecond), delivered.Round(time.Millisecond), st.Failures)
	if err := stop(); err != nil {
		t.Errorf("Run: %v", err)
	}
}

// addOne adds m in its own transaction and commits it.
func addOne(ctx context.Context, e *env, m broker.Message) error {
	actx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	tx, err := e.db.Begin(actx)
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(actx)) }()
	if err := outbox.Add(actx, tx, e.topic, m); err != nil {
		return err
	}
	return tx.Commit(actx)
}

// rowExists asks the database whether the row with id was committed,
// retrying until it answers (the new primary may not be up yet).
func rowExists(t testing.TB, ctx context.Context, e *env, id string) bool {
	deadline := time.Now().Add(30 * time.Second)
	for {
		var exists bool
		qctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		err := e.db.QueryRow(qctx, `select exists (select from outbox where id = $1)`, id).Scan(&exists)
		cancel()
		if err == nil {
			return exists
		}
		if time.Now().After(deadline) {
			t.Errorf("cannot tell whether %s was committed: %v", id, err)
			return false
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// recordingPublisher keeps what it is given, for the CDC failover test.
type recordingPublisher struct {
	mu   sync.Mutex
	msgs []broker.Message
}

func (p *recordingPublisher) Publish(_ context.Context, _ string, msgs ...broker.Message) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.msgs = append(p.msgs, msgs...)
	return nil
}

func (p *recordingPublisher) Close() error { return nil }

// ops counts the events published so far by cdc-op ("r", "c", "d", ...),
// and whether a "d" for key was among them.
func (p *recordingPublisher) ops(key string) (n map[string]int, deleted bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	n = map[string]int{}
	for _, m := range p.msgs {
		op := m.Header[cdc.HeaderOp]
		n[op]++
		if op == "d" && m.Key == key {
			deleted = true
		}
	}
	return n, deleted
}

// TestFaultCDCSlotAfterFailover pins down what a broker/cdc Source does
// across a primary failover on PostgreSQL before 17, where logical slots are
// not copied to standbys (docs/failover.md): the slot is gone on the new
// primary. This lives with the outbox failover tests, which own the pair.
//
//   - A running Source on the two-host URL reconnects to the new primary,
//     finds its slot gone and stops with cdc.ErrSlotLost: the changes since
//     its last confirmed position cannot be read any more, and it says so
//     instead of starting over silently.
//   - With cdc.WithRecreateLostSlot it creates a new slot and takes the
//     snapshot again (every row republished as op "r"), then streams. A
//     change made while no slot existed is not streamed: a row deleted then
//     reaches consumers only as absent from the new snapshot, never as a
//     "d" event. Consumers must treat that snapshot as a full resync.
func TestFaultCDCSlotAfterFailover(t *testing.T) {
	testenv.FaultTest(t)
	pair := testenv.Pair(t)
	schema, pairURL, _, standbyURL := pair.Schema(t)
	db := testenv.Pool(t, pairURL)
	ctx := context.Background()
	if _, err := db.Exec(ctx, `create table items (id int primary key, name text);
		insert into items values (1, 'one'), (2, 'two'), (3, 'three')`); err != nil {
		t.Fatal(err)
	}
	slot := testenv.Name(t, "s")
	pub := &recordingPublisher{}
	// start runs a Source until stop, which returns Run's error.
	start := func(opts ...cdc.Option) (stop func() error, done <-chan error) {
		src, err := cdc.New(ctx, pairURL, pub, append([]cdc.Option{cdc.WithSlot(slot), cdc.WithPublication(slot),
			cdc.WithTables(schema + ".items"), cdc.WithStateTable(schema + ".cdc_state"),
			cdc.WithBackoff(50*time.Millisecond, 500*time.Millisecond),
			cdc.WithLogger(slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelInfo})))}, opts...)...)
		if err != nil {
			t.Fatal(err)
		}
		runCtx, cancel := context.WithCancel(ctx)
		runDone := make(chan error, 1)
		result := make(chan error, 1)
		go func() { err := src.Run(runCtx); runDone <- err; result <- err }()
		return sync.OnceValue(func() error {
			cancel()
			err := <-result
			_ = src.Close()
			return err
		}), runDone
	}
	stopOK := func(stop func() error) {
		t.Helper()
		if err := stop(); err != nil {
			t.Errorf("cdc Run: %v", err)
		}
	}
	// The pool may still hold connections to the dead primary: retry, as
	// any caller does after a failover.
	exec := func(sql string) {
		t.Helper()
		testenv.Eventually(t, 10*time.Second, sql, func() bool {
			_, err := db.Exec(ctx, sql)
			return err == nil
		})
	}
	key := func(id int) string { return fmt.Sprintf("%s.items.%d", schema, id) }
	stop, done := start()
	t.Cleanup(func() { _ = stop() })
	testenv.Eventually(t, 15*time.Second, "the first snapshot", func() bool { n, _ := pub.ops(""); return n["r"] == 3 })
	exec(`insert into items values (4, 'four')`)
	testenv.Eventually(t, 10*time.Second, "a streamed insert", func() bool { n, _ := pub.ops(""); return n["c"] == 1 })

	// 1. A running Source across the failover stops with ErrSlotLost.
	pair.Crash(t)
	pair.Promote(t)
	select {
	case err := <-done:
		if !errors.Is(err, cdc.ErrSlotLost) {
			t.Fatalf("Run after the failover: %v, want cdc.ErrSlotLost", err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("Run did not stop after the failover took its slot away")
	}
	_ = stop()
	// Starting over, on request.
	stop, _ = start(cdc.WithRecreateLostSlot())
	t.Cleanup(func() { _ = stop() })
	testenv.Eventually(t, 30*time.Second, "the snapshot taken again on the new primary", func() bool { n, _ := pub.ops(""); return n["r"] >= 3+4 })
	var onStandby int
	sb := testenv.Pool(t, standbyURL)
	if err := sb.QueryRow(ctx, `select count(*) from pg_replication_slots where slot_name = $1`, slot).Scan(&onStandby); err != nil || onStandby != 1 {
		t.Fatalf("slot %s on the new primary: %d (%v), want the one the Source made", slot, onStandby, err)
	}
	exec(`insert into items values (5, 'five')`)
	testenv.Eventually(t, 10*time.Second, "streaming from the new slot", func() bool { n, _ := pub.ops(""); return n["c"] == 2 })

	// 2. A change between the failover and the new slot: simulated by
	// dropping the slot with the Source stopped, as the failover did.
	stopOK(stop)
	if _, err := sb.Exec(ctx, `select pg_drop_replication_slot($1)`, slot); err != nil {
		t.Fatal(err)
	}
	exec(`delete from items where id = 2`)
	before, _ := pub.ops("")
	stop, _ = start(cdc.WithRecreateLostSlot())
	t.Cleanup(func() { _ = stop() })
	testenv.Eventually(t, 15*time.Second, "the snapshot after the lost slot", func() bool { n, _ := pub.ops(""); return n["r"] >= before["r"]+4 })
	exec(`insert into items values (6, 'six')`)
	testenv.Eventually(t, 10*time.Second, "streaming again", func() bool { n, _ := pub.ops(""); return n["c"] == 3 })
	n, deleted := pub.ops(key(2))
	if deleted {
		t.Errorf("the delete made while no slot existed was streamed: docs/failover.md says it cannot be")
	}
	t.Logf("events by op: %v; the delete of row 2 (no slot at the time) reached consumers only as its absence from the new snapshot", n)
	stopOK(stop)
	if err := cdc.DropWithState(ctx, pairURL, slot, slot, schema+".cdc_state"); err != nil {
		t.Errorf("drop: %v", err)
	}
}
