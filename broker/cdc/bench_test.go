package cdc_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-integration/patterns/broker"
	"github.com/go-integration/patterns/broker/cdc"
	"github.com/go-integration/patterns/broker/memory"
	"github.com/go-integration/patterns/internal/testenv"
)

// counting passes messages to the memory broker and closes done once n
// streamed changes went through.
type counting struct {
	broker.Publisher
	n    int64
	got  atomic.Int64
	once sync.Once
	done chan struct{}
}

func (c *counting) Publish(ctx context.Context, topic string, msgs ...broker.Message) error {
	if err := c.Publisher.Publish(ctx, topic, msgs...); err != nil {
		return err
	}
	if c.got.Add(int64(len(msgs))) >= c.n {
		c.once.Do(func() { close(c.done) })
	}
	return nil
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// BenchmarkStream times decoding and publishing to the memory broker of
// CDC_BENCH_ROWS (default 100,000) row inserts committed beforehand, in
// transactions of 1,000 rows, and reports changes/s. When pg_recvlogical
// is installed it reads an equal slot created at the same point, to the
// same end LSN, with the same plugin options, and its rate is reported as
// recvlogical_changes/s (it only receives: no decoding into events, no
// publishing).
func BenchmarkStream(b *testing.B) {
	rows := envInt("CDC_BENCH_ROWS", 100_000)
	e := newEnv(b)
	e.exec(b, `create table bench (id int primary key, v int not null, name text not null, at timestamptz not null default now())`)
	e.exec(b, `create publication `+e.pub+` for table bench`)
	recv, recvErr := exec.LookPath("pg_recvlogical")
	ctx := context.Background()
	var ours, theirs time.Duration
	var total int
	for i := 0; b.Loop(); i++ {
		b.StopTimer()
		slot := fmt.Sprintf("%s_%d", e.slot, i)
		recvSlot := slot + "_recv"
		e.exec(b, `select pg_create_logical_replication_slot($1, 'pgoutput')`, slot)
		if recvErr == nil {
			e.exec(b, `select pg_create_logical_replication_slot($1, 'pgoutput')`, recvSlot)
		}
		b.Cleanup(func() {
			for _, s := range []string{slot, recvSlot} {
				_, _ = e.db.Exec(context.Background(), `select pg_drop_replication_slot(slot_name) from pg_replication_slots where slot_name = $1`, s)
			}
		})
		e.exec(b, `truncate bench`)
		e.exec(b, `select pg_replication_slot_advance($1, pg_current_wal_lsn())`, slot)
		if recvErr == nil {
			e.exec(b, `select pg_replication_slot_advance($1, pg_current_wal_lsn())`, recvSlot)
		}
		for from := 1; from <= rows; from += 1000 {
			e.exec(b, `insert into bench (id, v, name) select g, g % 100, 'name ' || g from generate_series($1::int, $2::int) g`, from, min(from+999, rows))
		}
		var end string
		if err := e.db.QueryRow(ctx, `select pg_current_wal_lsn()::text`).Scan(&end); err != nil {
			b.Fatal(err)
		}

		mem := memory.MustNew()
		pub := &counting{Publisher: mem, n: int64(rows), done: make(chan struct{})}
		s, err := cdc.New(ctx, e.dsn, pub, cdc.WithSlot(slot), cdc.WithPublication(e.pub), cdc.WithSnapshot(false),
			cdc.WithLogger(quietLogger()))
		if err != nil {
			b.Fatal(err)
		}
		runDone := make(chan error, 1)
		b.StartTimer()
		start := time.Now()
		go func() { runDone <- s.Run(ctx) }()
		select {
		case <-pub.done:
		case err := <-runDone:
			b.Fatalf("Run: %v", err)
		case <-time.After(5 * time.Minute):
			b.Fatal("timeout")
		}
		ours += time.Since(start)
		b.StopTimer()
		_ = s.Close()
		<-runDone
		_ = mem.Close()
		total += rows

		if recvErr == nil {
			start := time.Now()
			out, err := exec.Command(recv, "-d", testenv.DatabaseURL(b), "--slot", recvSlot, "--start", "--endpos", end,
				"-o", "proto_version=1", "-o", "publication_names="+e.pub, "-f", "/dev/null", "--no-loop").CombinedOutput()
			if err != nil {
				b.Fatalf("pg_recvlogical: %v: %s", err, out)
			}
			theirs += time.Since(start)
		}
		b.StartTimer()
	}
	b.ReportMetric(float64(total)/ours.Seconds(), "changes/s")
	if theirs > 0 {
		b.ReportMetric(float64(total)/theirs.Seconds(), "recvlogical_changes/s")
		b.ReportMetric(theirs.Seconds()/ours.Seconds(), "x_recvlogical")
	}
}

// TestLargeTransactionMemory streams one transaction of 20,000 then
// 200,000 inserted rows (100,000 then 1,000,000 with CDC_LARGE=1, a minute
// or two) and reports the peak Go heap and the process's RSS while each
// streams; the peak heap of the larger stays within twice the smaller's
// (plus 8 MiB of slack for the runtime), because changes are published as
// they are decoded, not held until the commit.
func TestLargeTransactionMemory(t *testing.T) {
	sizes := []int{20_000, 200_000}
	if os.Getenv("CDC_LARGE") != "" {
		sizes = []int{100_000, 1_000_000}
	}
	e := newEnv(t)
	e.exec(t, `create table big (id int primary key, v int not null, name text not null)`)
	ctx := context.Background()
	var heaps []uint64
	for _, rows := range sizes {
		mem := memory.MustNew()
		pub := &counting{Publisher: mem, n: int64(rows), done: make(chan struct{})}
		s, err := cdc.New(ctx, e.dsn, pub, e.opts(t, cdc.WithTables("big"), cdc.WithSnapshot(false), cdc.WithLogger(quietLogger()))...)
		if err != nil {
			t.Fatal(err)
		}
		runDone := make(chan error, 1)
		go func() { runDone <- s.Run(ctx) }()
		e.streaming(t, s)
		e.exec(t, `truncate big`)
		runtime.GC()
		start := time.Now()
		e.exec(t, `insert into big select g, g % 100, 'name ' || g from generate_series(1, $1) g`, rows)
		var peakHeap, peakRSS uint64
		sample := func() {
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			peakHeap = max(peakHeap, ms.HeapInuse)
			peakRSS = max(peakRSS, rss())
		}
		tick := time.NewTicker(20 * time.Millisecond)
	wait:
		for {
			select {
			case <-pub.done:
				break wait
			case err := <-runDone:
				t.Fatalf("Run: %v", err)
			case <-tick.C:
				sample()
			}
		}
		tick.Stop()
		elapsed := time.Since(start)
		t.Logf("%d-row transaction: streamed in %v (%.0f changes/s incl. the insert), peak Go heap in use %.1f MiB, peak RSS %.1f MiB",
			rows, elapsed.Round(time.Millisecond), float64(rows)/elapsed.Seconds(), float64(peakHeap)/(1<<20), float64(peakRSS)/(1<<20))
		_ = s.Close()
		<-runDone
		_ = mem.Close()
		if err := cdc.DropWithState(ctx, e.dsn, e.slot, "", e.state); err != nil {
			t.Fatal(err)
		}
		heaps = append(heaps, peakHeap)
	}
	if limit := 2*heaps[0] + 8<<20; heaps[1] > limit {
		t.Errorf("peak heap %.1f MiB for %d rows against %.1f MiB for %d: memory grows with the transaction",
			float64(heaps[1])/(1<<20), sizes[1], float64(heaps[0])/(1<<20), sizes[0])
	}
}

// rss reads the process's resident set size from /proc (0 elsewhere).
func rss() uint64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, _ := strconv.ParseUint(f[1], 10, 64)
			return kb << 10
		}
	}
	return 0
}

// latencies records, per published message, the time from its commit
// (Message.Time) to its Publish call.
type latencies struct {
	broker.Publisher
	mu sync.Mutex
	d  []time.Duration
}

func (l *latencies) Publish(ctx context.Context, topic string, msgs ...broker.Message) error {
	now := time.Now()
	l.mu.Lock()
	for _, m := range msgs {
		l.d = append(l.d, now.Sub(m.Time))
	}
	l.mu.Unlock()
	return l.Publisher.Publish(ctx, topic, msgs...)
}

// BenchmarkCommitToPublish commits single-row transactions at about 1,000
// per second for CDC_LATENCY_SECONDS (default 3) and reports the time from
// each commit to the Publish call carrying it: p50_ms, p99_ms.
func BenchmarkCommitToPublish(b *testing.B) {
	seconds := envInt("CDC_LATENCY_SECONDS", 3)
	e := newEnv(b)
	e.exec(b, `create table lat (id bigint primary key, v int not null)`)
	ctx := context.Background()
	var all []time.Duration
	for i := 0; b.Loop(); i++ {
		mem := memory.MustNew()
		pub := &latencies{Publisher: mem}
		s, err := cdc.New(ctx, e.dsn, pub, e.opts(b, cdc.WithSlot(fmt.Sprintf("%s_%d", e.slot, i)), cdc.WithTables("lat"),
			cdc.WithSnapshot(false), cdc.WithLogger(quietLogger()))...)
		if err != nil {
			b.Fatal(err)
		}
		runDone := make(chan error, 1)
		go func() { runDone <- s.Run(ctx) }()
		e.streaming(b, s)
		const writers = 4
		var wg sync.WaitGroup
		var id atomic.Int64
		id.Store(int64(i) << 32)
		deadline := time.Now().Add(time.Duration(seconds) * time.Second)
		for range writers {
			wg.Go(func() {
				tick := time.NewTicker(writers * time.Millisecond)
				defer tick.Stop()
				for time.Now().Before(deadline) {
					<-tick.C
					if _, err := e.db.Exec(ctx, `insert into lat values ($1, 0)`, id.Add(1)); err != nil {
						b.Error(err)
						return
					}
				}
			})
		}
		wg.Wait()
		want := id.Load() - int64(i)<<32
		testenv.Eventually(b, 30*time.Second, "every change", func() bool { return int64(s.Stats().Changes) >= want })
		_ = s.Close()
		<-runDone
		_ = mem.Close()
		_ = cdc.DropWithState(ctx, e.dsn, fmt.Sprintf("%s_%d", e.slot, i), "", e.state)
		pub.mu.Lock()
		all = append(all, pub.d...)
		pub.mu.Unlock()
	}
	slices.Sort(all)
	if len(all) > 0 {
		b.ReportMetric(float64(all[len(all)/2].Microseconds())/1000, "p50_ms")
		b.ReportMetric(float64(all[len(all)*99/100].Microseconds())/1000, "p99_ms")
		b.ReportMetric(float64(len(all))/float64(b.N)/float64(seconds), "changes/s")
	}
}
