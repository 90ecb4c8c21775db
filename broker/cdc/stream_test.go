package cdc_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"

	"github.com/go-integration/patterns/broker"
	"github.com/go-integration/patterns/broker/cdc"
	"github.com/go-integration/patterns/broker/rabbitmq"
	"github.com/go-integration/patterns/internal/testenv"
)

// state replays events into each table's rows (key -> after JSON), as a
// consumer applying them in order would.
type state map[string]map[string]string

func (st state) apply(t testing.TB, m broker.Message) {
	t.Helper()
	ev := decode(t, m)
	table := m.Header[cdc.HeaderTable]
	if st[table] == nil {
		st[table] = map[string]string{}
	}
	switch ev.Op {
	case "r", "c", "u":
		st[table][m.Key] = string(ev.After)
	case "d":
		delete(st[table], m.Key)
	case "t":
		clear(st[table])
	default:
		t.Fatalf("op %q", ev.Op)
	}
}

// rows reads a table as the source encodes it: key -> {"id":..,"v":..}.
func (e *env) rows(t testing.TB, table string) map[string]string {
	t.Helper()
	rows, err := e.db.Query(context.Background(), `select id, v from `+table)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	out := map[string]string{}
	for rows.Next() {
		var id, v int
		if err := rows.Scan(&id, &v); err != nil {
			t.Fatal(err)
		}
		out[fmt.Sprintf("%s.%s.%d", e.schema, table, id)] = fmt.Sprintf(`{"id":%d,"v":%d}`, id, v)
	}
	return out
}

// marker commits a change to table marker and waits until it is published
// as a streamed change: everything committed before it was published too.
// (A snapshot row of it would not say so.)
func (e *env) marker(t testing.TB, r *recorder, id int) {
	t.Helper()
	e.exec(t, `insert into marker values ($1)`, id)
	key := fmt.Sprintf("%s.marker.%d", e.schema, id)
	testenv.Eventually(t, 30*time.Second, "marker "+key, func() bool {
		for _, m := range r.all() {
			if m.m.Key == key && m.m.Header[cdc.HeaderOp] == "c" {
				return true
			}
		}
		return false
	})
}

func commitOf(t testing.TB, id string) pglogrepl.LSN {
	t.Helper()
	c, _, _, err := cdc.ParseID(id)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// writer runs f(i) for i = 0, 1, ... until stop is called; stop returns how many ran.
func writer(t testing.TB, f func(i int) error) (stop func() int) {
	var n atomic.Int64
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-done:
				return
			default:
			}
			if err := f(i); err != nil {
				t.Errorf("writer: %v", err)
				return
			}
			n.Add(1)
		}
	})
	return sync.OnceValue(func() int { close(done); wg.Wait(); return int(n.Load()) })
}

// TestSnapshotConcurrentWrites: rows that exist before New arrive as op
// "r", changes committed while the snapshot runs and after it arrive as
// streamed changes, with no gap and no overlap: every row's versions come
// in sequence, each once, and replaying the events gives the table.
func TestSnapshotConcurrentWrites(t *testing.T) {
	e := newEnv(t)
	e.exec(t, `create table t (id int primary key, v int not null)`)
	e.exec(t, `create table marker (id int primary key)`)
	const rows = 20000
	e.exec(t, `insert into t select g, 0 from generate_series(1, $1) g`, rows)
	ctx := context.Background()
	stop := writer(t, func(i int) error {
		if i%3 == 0 {
			_, err := e.db.Exec(ctx, `insert into t values ($1, 0)`, rows+1+i)
			return err
		}
		_, err := e.db.Exec(ctx, `update t set v = v + 1 where id = $1`, 1+rand.IntN(rows))
		return err
	})
	r := newRecorder(t)
	s, _ := e.start(t, r, cdc.WithTables("t", "marker"), cdc.WithMaxBatch(50))
	testenv.Eventually(t, 60*time.Second, "the snapshot", func() bool { return s.Stats().SnapshotRows >= rows })
	testenv.Eventually(t, 60*time.Second, "streamed changes", func() bool { return s.Stats().Changes >= 200 })
	writes := stop()
	e.marker(t, r, 1)

	st := state{}
	last := map[string]int{} // key -> last version seen
	var snap, streamed int
	for _, m := range r.all() {
		if m.m.Header[cdc.HeaderTable] != e.schema+".t" {
			continue
		}
		ev := decode(t, m.m)
		var row struct{ V int }
		if ev.Op != "d" {
			if err := json.Unmarshal(ev.After, &row); err != nil {
				t.Fatal(err)
			}
		}
		prev, seen := last[m.m.Key]
		switch ev.Op {
		case "r":
			snap++
			if seen {
				t.Errorf("%s: snapshot row after streamed changes", m.m.Key)
			}
		case "c":
			streamed++
			if seen || row.V != 0 {
				t.Errorf("%s: insert of a row seen before (overlap) or at version %d", m.m.Key, row.V)
			}
		case "u":
			streamed++
			if !seen || row.V != prev+1 {
				t.Errorf("%s: version %d after %d (seen %v): a gap or an overlap", m.m.Key, row.V, prev, seen)
			}
		}
		last[m.m.Key] = row.V
		st.apply(t, m.m)
	}
	if want := e.rows(t, "t"); !maps.Equal(st[e.schema+".t"], want) {
		t.Errorf("replayed events give %d rows, the table has %d", len(st[e.schema+".t"]), len(want))
	}
	t.Logf("%d writes, %d snapshot rows, %d streamed changes", writes, snap, streamed)
	if snap < rows || streamed == 0 {
		t.Errorf("%d snapshot rows, %d streamed", snap, streamed)
	}
}

// TestRestart: a source closed mid-stream and a new one on the same slot
// lose nothing, and repeat only changes the first had not confirmed: none
// when Close drains, those of the Publish call in flight when it does not
// (the broker took them but the confirmation was lost).
func TestRestart(t *testing.T) {
	t.Run("drained", func(t *testing.T) { testRestart(t, false) })
	t.Run("lost confirmation", func(t *testing.T) { testRestart(t, true) })
}

func testRestart(t *testing.T, hang bool) {
	e := newEnv(t)
	e.exec(t, `create table t (id int primary key, v int not null)`)
	e.exec(t, `create table marker (id int primary key)`)
	ctx := context.Background()
	r1 := newRecorder(t)
	s1, stop1 := e.start(t, r1, cdc.WithTables("t", "marker"), cdc.WithMaxBatch(7), cdc.WithDrainTimeout(200*time.Millisecond))
	e.streaming(t, s1)
	stopWriter := writer(t, func(i int) error {
		_, err := e.db.Exec(ctx, `insert into t select g, 0 from generate_series($1::int, $1::int + 9) g`, i*10)
		return err
	})
	testenv.Eventually(t, 30*time.Second, "changes", func() bool { return r1.len() >= 500 })
	if hang {
		r1.hang.Store(true)
		calls := r1.calls.Load()
		testenv.Eventually(t, 10*time.Second, "a Publish in flight", func() bool { return r1.calls.Load() > calls })
	}
	if err := stop1(); !errors.Is(err, cdc.ErrClosed) {
		t.Fatalf("Run after Close: %v", err)
	}
	confirmed := s1.Stats().ConfirmedLSN
	r2 := newRecorder(t)
	_, _ = e.start(t, r2, cdc.WithTables("t", "marker"))
	testenv.Eventually(t, 30*time.Second, "changes after the restart", func() bool { return r2.len() >= 500 })
	stopWriter()
	e.marker(t, r2, 1)

	first := map[string]bool{}
	for _, m := range r1.all() {
		first[m.m.ID] = true
	}
	dups := 0
	dupTxs := map[pglogrepl.LSN]bool{}
	st := state{}
	for _, m := range append(r1.all(), r2.all()...) {
		st.apply(t, m.m)
	}
	for _, m := range r2.all() {
		if first[m.m.ID] {
			dups++
			dupTxs[commitOf(t, m.m.ID)] = true
			if c := commitOf(t, m.m.ID); c < confirmed {
				t.Errorf("%s repeated, but its commit %s is before the confirmed %s", m.m.ID, c, confirmed)
			}
		}
	}
	if want := e.rows(t, "t"); !maps.Equal(st[e.schema+".t"], want) {
		t.Errorf("replayed events give %d rows, the table has %d", len(st[e.schema+".t"]), len(want))
	}
	t.Logf("first source: %d messages, confirmed %s; second: %d messages, %d repeated", r1.len(), confirmed, r2.len(), dups)
	if hang && dups == 0 {
		t.Error("the messages of the Publish call cancelled by Close were not published again")
	}
	if !hang && len(dupTxs) > 1 {
		t.Errorf("%d transactions repeated after a drained Close, want at most the one it stopped in", len(dupTxs))
	}
}

// TestPublisherDown: while Publish fails the slot does not move and
// nothing is dropped; once it works again everything arrives.
func TestPublisherDown(t *testing.T) {
	e := newEnv(t)
	e.exec(t, `create table t (id int primary key, v int not null)`)
	e.exec(t, `create table marker (id int primary key)`)
	ctx := context.Background()
	r := newRecorder(t)
	s, _ := e.start(t, r, cdc.WithTables("t", "marker"), cdc.WithMaxBatch(10))
	e.streaming(t, s)
	e.exec(t, `insert into t values (0, 0)`)
	testenv.Eventually(t, 10*time.Second, "the first change", func() bool { return s.Stats().Changes >= 1 })
	slotLSN := func() pglogrepl.LSN {
		var l pglogrepl.LSN
		if err := e.db.QueryRow(ctx, `select confirmed_flush_lsn from pg_replication_slots where slot_name = $1`, e.slot).Scan(&l); err != nil {
			t.Fatal(err)
		}
		return l
	}
	// The server hears of the first change before the publisher goes down.
	testenv.Eventually(t, 10*time.Second, "the slot at the first change", func() bool { return slotLSN() == s.Stats().ConfirmedLSN })
	r.fail.Store(true)
	for i := 1; i <= 100; i++ {
		e.exec(t, `insert into t values ($1, 0)`, i)
	}
	before := s.Stats()
	testenv.Eventually(t, 10*time.Second, "failed publishes", func() bool { return s.Stats().PublishFailures >= before.PublishFailures+5 })
	held := slotLSN()
	// Status updates (every 200 ms) reach the server while publishing
	// fails, but the position stays: wait for two replies sent after now.
	calls := r.calls.Load()
	testenv.Eventually(t, 10*time.Second, "more failed publishes", func() bool { return r.calls.Load() >= calls+10 })
	var since time.Time
	if err := e.db.QueryRow(ctx, `select now()`).Scan(&since); err != nil {
		t.Fatal(err)
	}
	replies := 0
	var last time.Time
	testenv.Eventually(t, 10*time.Second, "two status updates from the source while it fails", func() bool {
		var at *time.Time
		if err := e.db.QueryRow(ctx, `select max(reply_time) from pg_stat_replication where application_name = 'patterns-cdc' and pid = (select active_pid from pg_replication_slots where slot_name = $1)`, e.slot).Scan(&at); err != nil {
			t.Fatal(err)
		}
		if at != nil && at.After(since) && !at.Equal(last) {
			last = *at
			replies++
		}
		return replies >= 2
	})
	if got := slotLSN(); got != held {
		t.Errorf("the slot moved from %s to %s while the publisher failed", held, got)
	}
	if got := s.Stats().ConfirmedLSN; got > held {
		t.Errorf("confirmed %s while the publisher failed (slot at %s)", got, held)
	}
	lag, err := s.Lag(ctx)
	if err != nil || lag.Bytes <= 0 || lag.Retained <= 0 || lag.Time <= 0 || !lag.Active {
		t.Errorf("lag %+v, %v: want bytes, retained WAL and time behind", lag, err)
	}
	r.fail.Store(false)
	e.marker(t, r, 1)
	st := state{}
	for _, m := range r.all() {
		st.apply(t, m.m)
	}
	if want := e.rows(t, "t"); !maps.Equal(st[e.schema+".t"], want) {
		t.Errorf("got %d rows, want %d", len(st[e.schema+".t"]), len(want))
	}
	testenv.Eventually(t, 10*time.Second, "the slot moves again", func() bool { return slotLSN() > held })
}

// TestRabbitMQConnectionsClosed: the publisher's connections closed by the
// server mid-stream lose nothing.
func TestRabbitMQConnectionsClosed(t *testing.T) {
	e := newEnv(t)
	e.exec(t, `create table t (id int primary key, v int not null)`)
	vhost, url := testenv.VHost(t)
	ctx := context.Background()
	topic := "cdc." + e.schema + ".t"
	pub, err := rabbitmq.NewPublisher(ctx, url, rabbitmq.WithReconnectBackoff(10*time.Millisecond, 200*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	sub, err := rabbitmq.NewSubscriber(ctx, url, rabbitmq.WithReconnectBackoff(10*time.Millisecond, 200*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Close(); _ = pub.Close() })
	in := subscribeAll(t, sub, []string{topic})
	s, _ := e.start(t, pub, cdc.WithTables("t"), cdc.WithMaxBatch(20))
	e.streaming(t, s)
	stopWriter := writer(t, func(i int) error {
		_, err := e.db.Exec(ctx, `insert into t values ($1, 0)`, i)
		return err
	})
	for round := range 3 {
		n := len(in.all())
		testenv.Eventually(t, 30*time.Second, "messages flow", func() bool { return len(in.all()) >= n+200 })
		if out, err := testenv.Rabbitmqctl("close_all_connections", "--vhost", vhost, fmt.Sprintf("cdc test round %d", round)); err != nil {
			t.Fatalf("close_all_connections: %v: %s", err, out)
		}
	}
	written := stopWriter()
	testenv.Eventually(t, 60*time.Second, "every insert arrives", func() bool {
		seen := map[string]bool{}
		for _, m := range in.all() {
			seen[m.Key] = true
		}
		return len(seen) == written
	})
	t.Logf("%d inserts, %d messages received, %d failed publishes", written, len(in.all()), s.Stats().PublishFailures)
}

// TestIdleSlotAdvances: WAL written by tables the publication does not
// hold is confirmed too (from the server's keepalives), so the slot does
// not retain it.
func TestIdleSlotAdvances(t *testing.T) {
	e := newEnv(t)
	e.exec(t, `create table captured (id int primary key)`)
	e.exec(t, `create table other (id int primary key, pad text)`)
	ctx := context.Background()
	r := newRecorder(t)
	s, _ := e.start(t, r, cdc.WithTables("captured"))
	e.streaming(t, s)
	start := s.Stats().ConfirmedLSN
	e.exec(t, `insert into other select g, repeat('x', 1000) from generate_series(1, 5000) g`)
	var end pglogrepl.LSN
	if err := e.db.QueryRow(ctx, `select pg_current_wal_lsn()`).Scan(&end); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 30*time.Second, "the slot moves past the other table's WAL", func() bool {
		var flushed pglogrepl.LSN
		if err := e.db.QueryRow(ctx, `select confirmed_flush_lsn from pg_replication_slots where slot_name = $1`, e.slot).Scan(&flushed); err != nil {
			t.Fatal(err)
		}
		return flushed >= end
	})
	if r.len() != 0 || s.Stats().ConfirmedLSN <= start {
		t.Errorf("%d messages, confirmed %s (from %s)", r.len(), s.Stats().ConfirmedLSN, start)
	}
}

// TestReconnect: the replication connection killed on the server
// mid-stream is reopened, and nothing is lost.
func TestReconnect(t *testing.T) {
	e := newEnv(t)
	e.exec(t, `create table t (id int primary key, v int not null)`)
	e.exec(t, `create table marker (id int primary key)`)
	ctx := context.Background()
	r := newRecorder(t)
	s, _ := e.start(t, r, cdc.WithTables("t", "marker"))
	e.streaming(t, s)
	stopWriter := writer(t, func(i int) error {
		_, err := e.db.Exec(ctx, `insert into t values ($1, 0)`, i)
		return err
	})
	for round := range 2 {
		n := r.len()
		testenv.Eventually(t, 30*time.Second, "changes flow", func() bool { return r.len() >= n+100 })
		if _, err := e.db.Exec(ctx, `select pg_terminate_backend(active_pid) from pg_replication_slots where slot_name = $1 and active`, e.slot); err != nil {
			t.Fatal(err)
		}
		testenv.Eventually(t, 30*time.Second, "the source streams again", func() bool { return s.Stats().Streams >= uint64(round+2) })
	}
	written := stopWriter()
	e.marker(t, r, 1)
	seen := map[string]bool{}
	for _, m := range r.all() {
		seen[m.m.Key] = true
	}
	if len(seen) != written+1 {
		t.Errorf("%d keys seen, %d rows written (and a marker)", len(seen), written)
	}
	t.Logf("%d rows, %d messages, stats %+v", written, r.len(), s.Stats())
}

// TestPublishTimeout: a Publish call that hangs is cancelled after the
// publish timeout and retried.
func TestPublishTimeout(t *testing.T) {
	e := newEnv(t)
	e.exec(t, `create table t (id int primary key, v int not null)`)
	r := newRecorder(t)
	s, _ := e.start(t, r, cdc.WithTables("t"), cdc.WithPublishTimeout(100*time.Millisecond))
	e.streaming(t, s)
	r.hang.Store(true)
	e.exec(t, `insert into t values (1, 0)`)
	testenv.Eventually(t, 10*time.Second, "a timed-out and retried Publish", func() bool { return s.Stats().PublishFailures >= 2 })
	r.hang.Store(false)
	testenv.Eventually(t, 10*time.Second, "the change confirmed", func() bool { return s.Stats().Changes == 1 })
}
