package shareddb

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/go-integration/patterns/internal/testenv"
	"github.com/jackc/pgx/v5"
)

// Server-wide faults on the replica. They run only with FAULT_TESTS=1, one
// package at a time, and always put the replica back as they found it.

// replicaAdmin connects to the replica as the URL's (super)user.
func replicaAdmin(t *testing.T) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, testenv.ReplicaDatabaseURL(t))
	if err != nil {
		t.Fatalf("connect replica: %v", err)
	}
	t.Cleanup(func() { _ = c.Close(context.Background()) })
	return c
}

// pauseReplay pauses replay on the replica until it is really paused, and
// resumes it when the test ends, even if it fails.
func pauseReplay(t *testing.T) {
	t.Helper()
	t.Cleanup(func() { resumeReplay(t) })
	c := replicaAdmin(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := c.Exec(ctx, "select pg_wal_replay_pause()"); err != nil {
		t.Fatalf("pg_wal_replay_pause(): %v", err)
	}
	for {
		var state string
		if err := c.QueryRow(ctx, "select pg_get_wal_replay_pause_state()").Scan(&state); err != nil {
			t.Fatalf("pg_get_wal_replay_pause_state(): %v", err)
		}
		if state == "paused" {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("replay not paused within 10 s (state %s)", state)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

func resumeReplay(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, testenv.ReplicaDatabaseURL(t))
	if err != nil {
		t.Errorf("resume replay: connect: %v", err)
		return
	}
	defer c.Close(ctx)
	if _, err := c.Exec(ctx, "select pg_wal_replay_resume() where pg_is_wal_replay_paused()"); err != nil {
		t.Errorf("pg_wal_replay_resume(): %v", err)
	}
}

// pgctl runs pg_ctlcluster on the replica cluster (REPLICA_CLUSTER, default "<newest version> replica").
func pgctl(t *testing.T, action string) {
	t.Helper()
	cluster := strings.Fields(os.Getenv("REPLICA_CLUSTER"))
	if len(cluster) != 2 {
		versions, _ := os.ReadDir("/etc/postgresql")
		var names []string
		for _, v := range versions {
			names = append(names, v.Name())
		}
		sort.Strings(names)
		if len(names) == 0 {
			testenv.Unavailable(t, "pg_ctlcluster (local replica cluster)", errors.New("no /etc/postgresql"))
		}
		cluster = []string{names[len(names)-1], "replica"}
	}
	closeInheritedFiles()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "pg_ctlcluster", "--skip-systemctl-redirect", cluster[0], cluster[1], action).CombinedOutput()
	if err != nil {
		t.Fatalf("pg_ctlcluster %s %s: %v: %s", strings.Join(cluster, " "), action, err, out)
	}
}

// closeInheritedFiles marks every descriptor above stderr close-on-exec.
// Descriptors this process inherited without that flag (the lock of
// "flock /tmp/patterns-fault.lock go test ...") would otherwise pass through
// pg_ctlcluster to the PostgreSQL server it starts, which would then hold the
// fault lock for as long as it runs.
func closeInheritedFiles() {
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return
	}
	for _, e := range entries {
		if fd, err := strconv.Atoi(e.Name()); err == nil && fd > 2 {
			syscall.CloseOnExec(fd)
		}
	}
}

// stopReplica stops the replica cluster and starts it again when the test ends.
func stopReplica(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("pg_ctlcluster"); err != nil {
		testenv.Unavailable(t, "pg_ctlcluster (to stop the replica)", err)
	}
	t.Cleanup(func() { startReplica(t) })
	pgctl(t, "stop")
}

// startReplica starts the replica if it is down and waits until it answers.
func startReplica(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	u := testenv.DefaultReplicaDatabaseURL
	if v := os.Getenv("REPLICA_DATABASE_URL"); v != "" {
		u = v
	}
	if c, err := pgx.Connect(ctx, u); err == nil {
		_ = c.Close(ctx)
		return
	}
	pgctl(t, "start")
	for {
		c, err := pgx.Connect(ctx, u)
		if err == nil {
			_ = c.Close(ctx)
			return
		}
		select {
		case <-ctx.Done():
			t.Errorf("replica did not answer within 30 s after start: %v", err)
			return
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// stopWALReceiver empties primary_conninfo on the replica (ALTER SYSTEM and a
// reload), which stops its WAL receiver and keeps it stopped: the replica
// stays up, in recovery, answering queries, but receives nothing. The
// returned function (also run when the test ends, even if it fails) puts the
// old value back, reloads and waits until the receiver streams again.
func stopWALReceiver(t *testing.T) (restore func()) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c := replicaAdmin(t)
	var old, source string
	if err := c.QueryRow(ctx, "select setting, coalesce(sourcefile, '') from pg_settings where name = 'primary_conninfo'").Scan(&old, &source); err != nil {
		t.Fatalf("read primary_conninfo: %v", err)
	}
	if old == "" {
		t.Fatal("the replica has no primary_conninfo: is it streaming?")
	}
	var once sync.Once
	restore = func() {
		once.Do(func() { restoreWALReceiver(t, old, source) })
	}
	t.Cleanup(restore)
	if _, err := c.Exec(ctx, "alter system set primary_conninfo = ''"); err != nil {
		t.Fatalf("alter system set primary_conninfo: %v", err)
	}
	if _, err := c.Exec(ctx, "select pg_reload_conf()"); err != nil {
		t.Fatalf("pg_reload_conf(): %v", err)
	}
	for {
		var n int
		if err := c.QueryRow(ctx, "select count(*) from pg_stat_wal_receiver").Scan(&n); err != nil {
			t.Fatalf("pg_stat_wal_receiver: %v", err)
		}
		if n == 0 {
			return restore
		}
		select {
		case <-ctx.Done():
			t.Fatal("WAL receiver still running 10 s after primary_conninfo was emptied")
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// restoreWALReceiver sets primary_conninfo back (in postgresql.auto.conf when
// it came from there, else by removing the ALTER SYSTEM entry), reloads, and
// waits until the WAL receiver is streaming.
func restoreWALReceiver(t *testing.T, old, source string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, testenv.ReplicaDatabaseURL(t))
	if err != nil {
		t.Errorf("restore primary_conninfo: connect: %v", err)
		return
	}
	defer c.Close(context.Background())
	stmt := "alter system reset primary_conninfo"
	if strings.HasSuffix(source, "postgresql.auto.conf") {
		stmt = "alter system set primary_conninfo = '" + strings.ReplaceAll(old, "'", "''") + "'"
	}
	if _, err := c.Exec(ctx, stmt); err != nil {
		t.Errorf("restore primary_conninfo: %v", err)
		return
	}
	if _, err := c.Exec(ctx, "select pg_reload_conf()"); err != nil {
		t.Errorf("restore primary_conninfo: pg_reload_conf(): %v", err)
		return
	}
	for {
		var status *string
		err := c.QueryRow(ctx, "select (select status from pg_stat_wal_receiver)").Scan(&status)
		if err == nil && status != nil && *status == "streaming" {
			return
		}
		select {
		case <-ctx.Done():
			t.Errorf("WAL receiver not streaming 30 s after primary_conninfo was restored (status %v, %v)", status, err)
			return
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func TestFaultPausedReplayFallsBackToThePrimary(t *testing.T) {
	testenv.FaultTest(t)
	e := setup(t, "create table ticks (id int)")
	e.waitReplica(t)
	r := e.reader(t, WithReplicas(e.replicaURL))
	fresh := r.With(WithMaxLag(time.Second))
	strict := r.With(WithMaxLag(time.Second), WithFallback(FallbackRefuse))
	if !onReplica(t, fresh) {
		t.Fatal("before the fault, read did not go to the replica")
	}

	pauseReplay(t)
	e.exec(t, "insert into ticks values (1)") // received, not replayed: lag grows
	testenv.Eventually(t, 10*time.Second, "replica lag over 1 s", func() bool {
		s := r.Status()[1]
		return s.Healthy && s.ReplayPaused && s.LagKnown && s.Lag > time.Second && s.LagBytes > 0
	})
	before := r.Stats()
	if onReplica(t, fresh) {
		t.Fatal("read with MaxLag 1 s went to a replica more than 1 s behind")
	}
	err := strict.QueryRow(context.Background(), "select 1").Scan(new(int))
	if !errors.Is(err, ErrNoFreshReplica) || !strings.Contains(err.Error(), "> max 1s") {
		t.Fatalf("strict read: %v, want ErrNoFreshReplica naming the lag", err)
	}
	if !onReplica(t, r.With(WithMaxLag(-1))) {
		t.Fatal("read accepting any lag did not go to the replica")
	}
	after := r.Stats()
	if after.FellBack-before.FellBack != 1 || after.Refused-before.Refused != 1 {
		t.Fatalf("Stats went from %+v to %+v, want one fallback and one refusal", before, after)
	}

	resumeReplay(t)
	testenv.Eventually(t, 10*time.Second, "reads back on the replica", func() bool { return onReplica(t, fresh) })
	var n int
	if err := strict.QueryRow(context.Background(), "select count(*) from ticks").Scan(&n); err != nil || n != 1 {
		t.Fatalf("replica after resume: %d rows, %v", n, err)
	}
}

func TestFaultReplicaStoppedAndStarted(t *testing.T) {
	testenv.FaultTest(t)
	e := setup(t)
	e.waitReplica(t)
	const interval = 200 * time.Millisecond
	h := &recorder{}
	r := e.reader(t, WithReplicas(e.replicaURL), WithCheckInterval(interval), WithCheckTimeout(interval), WithTracer(h))
	for range 3 {
		if !onReplica(t, r) { // warm the replica's pool: its connections break with the server
			t.Fatal("before the fault, read did not go to the replica")
		}
	}

	stopReplica(t)
	stopped := time.Now()
	// No read fails: a read that meets a dead connection is retried on the primary.
	for range 5 {
		if onReplica(t, r) {
			t.Fatal("read went to a stopped replica")
		}
	}
	testenv.Eventually(t, 2*interval+100*time.Millisecond, "replica marked unhealthy within one check", func() bool {
		return !r.Status()[1].Healthy
	})
	t.Logf("replica unhealthy %v after stop; stats %+v; last error: %v", time.Since(stopped), r.Stats(), r.Status()[1].LastError)

	startReplica(t)
	testenv.Eventually(t, 30*time.Second, "reads back on the replica", func() bool { return onReplica(t, r) })
	testenv.Eventually(t, 5*time.Second, "replica traced down, then up", func() bool {
		return changes(h, "replica1", NodeDown, NodeUp)
	})
	var failed bool
	for _, c := range h.snapshot().checks {
		failed = failed || (c.Name == "replica1" && !c.Healthy && c.LastError != nil)
	}
	if !failed {
		t.Fatal("no failed check of replica1 traced")
	}
}

// changes reports whether the recorder saw, for node, the changes want in
// this order (others may come between).
func changes(h *recorder, node string, want ...NodeChange) bool {
	for _, c := range h.snapshot().changes {
		if len(want) > 0 && c.Status.Name == node && c.Change == want[0] {
			want = want[1:]
		}
	}
	return len(want) == 0
}

func TestFaultStoppedWALReceiverMakesLagUnknown(t *testing.T) {
	testenv.FaultTest(t)
	e := setup(t, "create table ticks (id int)")
	e.waitReplica(t)
	const interval = 200 * time.Millisecond
	h := &recorder{}
	r := e.reader(t, WithReplicas(e.replicaURL), WithCheckInterval(interval), WithCheckTimeout(interval), WithTracer(h))
	fresh := r.With(WithMaxLag(time.Second))
	strict := r.With(WithMaxLag(time.Second), WithFallback(FallbackRefuse))
	testenv.Eventually(t, 10*time.Second, "replica streaming with zero lag", func() bool {
		s := r.Status()[1]
		return s.Healthy && s.LagKnown && s.Lag == 0
	})
	if !onReplica(t, fresh) {
		t.Fatal("before the fault, read did not go to the replica")
	}

	// The replica stays up and in recovery, but receives nothing: however
	// idle the primary is, nobody can tell how far behind it is.
	restore := stopWALReceiver(t)
	testenv.Eventually(t, 3*time.Second, "lag unknown once the WAL receiver stopped", func() bool {
		s := r.Status()[1]
		return s.Healthy && !s.Streaming && !s.LagKnown
	})
	t.Logf("status with the receiver stopped: %+v", r.Status()[1])
	before := r.Stats()
	if onReplica(t, fresh) {
		t.Fatal("read with MaxLag 1 s went to a replica whose WAL receiver is stopped")
	}
	err := strict.QueryRow(context.Background(), "select 1").Scan(new(int))
	if !errors.Is(err, ErrNoFreshReplica) || !strings.Contains(err.Error(), "lag unknown") {
		t.Fatalf("strict read: %v, want ErrNoFreshReplica saying the lag is unknown", err)
	}
	if !onReplica(t, r.With(WithMaxLag(-1))) {
		t.Fatal("read accepting any lag did not go to the replica")
	}
	if after := r.Stats(); after.FellBack-before.FellBack != 1 || after.Refused-before.Refused != 1 {
		t.Fatalf("Stats went from %+v to %+v, want one fallback and one refusal", before, after)
	}
	// A token the replica cannot reach: read from the primary after the wait.
	e.exec(t, "insert into ticks values (1)")
	tok, err := CurrentToken(context.Background(), e.admin)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	var n int
	var rec bool
	if err := r.With(WithToken(tok)).QueryRow(ctx, "select count(*), pg_is_in_recovery() from ticks").Scan(&n, &rec); err != nil || n != 1 || rec {
		t.Fatalf("token read: %d rows, on replica %v, %v; want 1 row from the primary", n, rec, err)
	}

	restore()
	testenv.Eventually(t, 10*time.Second, "reads back on the replica", func() bool { return onReplica(t, fresh) })
	if s := r.Status()[1]; !s.Streaming || !s.LagKnown {
		t.Fatalf("status after restore: %+v, want lag known", s)
	}
	testenv.Eventually(t, 5*time.Second, "receiver traced stopped and stale, then streaming and fresh", func() bool {
		return changes(h, "replica1", ReceiverStopped, ReceiverStreaming) && changes(h, "replica1", NodeStale, NodeFresh)
	})
}

func TestFaultTokenWhileReplayPaused(t *testing.T) {
	testenv.FaultTest(t)
	e := setup(t, "create table events (id int)")
	e.waitReplica(t)
	r := e.reader(t, WithReplicas(e.replicaURL))
	const q = "select count(*), pg_is_in_recovery() from events"

	// Replay resumes while the read waits: the replica serves it.
	pauseReplay(t)
	e.exec(t, "insert into events values (1)")
	tok, err := CurrentToken(context.Background(), e.admin)
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		time.Sleep(300 * time.Millisecond)
		resumeReplay(t)
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	start := time.Now()
	var n int
	var rec bool
	err = r.With(WithToken(tok)).QueryRow(ctx, q).Scan(&n, &rec)
	waited := time.Since(start)
	cancel()
	if err != nil || n != 1 || !rec || waited < 250*time.Millisecond {
		t.Fatalf("read with token: %d rows, on replica %v, after %v, %v; want 1 row from the replica after the resume", n, rec, waited, err)
	}

	// Replay stays paused: the read waits until its deadline (less the reserve), then reads the primary.
	pauseReplay(t)
	e.exec(t, "insert into events values (2)")
	if tok, err = CurrentToken(context.Background(), e.admin); err != nil {
		t.Fatal(err)
	}
	before := r.Stats()
	ctx, cancel = context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	start = time.Now()
	err = r.With(WithToken(tok), WithFallback(FallbackRefuse)).QueryRow(ctx, q).Scan(&n, &rec)
	waited = time.Since(start)
	if err != nil || n != 2 || rec {
		t.Fatalf("read with token while paused: %d rows, on replica %v, %v; want 2 rows from the primary", n, rec, err)
	}
	if waited < time.Second-DefaultFallbackReserve-50*time.Millisecond || waited >= time.Second {
		t.Fatalf("read waited %v, want about 1 s - %v", waited, DefaultFallbackReserve)
	}
	after := r.Stats()
	if after.Waited-before.Waited != 1 || after.FellBack-before.FellBack != 1 {
		t.Fatalf("Stats went from %+v to %+v, want one wait and one fallback", before, after)
	}
}

func TestFaultRecoveryConflictIsRetriedElsewhere(t *testing.T) {
	testenv.FaultTest(t)
	e := setup(t, "create table t (id int)", "insert into t values (1)")
	e.waitReplica(t)
	h := &recorder{}
	retrying := e.reader(t, WithReplicas(e.replicaURL), WithTracer(h))
	once := e.reader(t, WithReplicas(e.replicaURL), WithRetries(0))
	// Long on the replica, instant on the primary.
	const q = "select count(*) from t cross join lateral (select pg_sleep(case when pg_is_in_recovery() then 30 else 0 end)) s"

	type result struct {
		n   int
		err error
	}
	run := func(r *ReplicaReader) chan result {
		ch := make(chan result, 1)
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 25*time.Second)
			defer cancel()
			var res result
			res.err = r.QueryRow(ctx, q).Scan(&res.n)
			ch <- res
		}()
		return ch
	}
	got1, got2 := run(retrying), run(once)
	got3 := make(chan result, 1) // Query: retried too, as the conflict comes before the first row
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 25*time.Second)
		defer cancel()
		var res result
		rows, err := retrying.Query(ctx, q)
		if err == nil {
			var n int64
			n, err = pgx.CollectExactlyOneRow(rows, pgx.RowTo[int64])
			res.n = int(n)
		}
		res.err = err
		got3 <- res
	}()

	// Wait until both queries hold their lock on t on the replica.
	admin := replicaAdmin(t)
	testenv.Eventually(t, 5*time.Second, "three queries sleeping on the replica", func() bool {
		var n int
		_ = admin.QueryRow(context.Background(), "select count(*) from pg_stat_activity where query like '%pg_sleep(case%' and state = 'active' and pid <> pg_backend_pid()").Scan(&n)
		return n == 3
	})
	// An ACCESS EXCLUSIVE lock on the primary conflicts with them when replayed;
	// after max_standby_streaming_delay the replica cancels them.
	ctx := context.Background()
	tx, err := e.admin.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "lock table t in access exclusive mode"); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}

	r1, r2, r3 := <-got1, <-got2, <-got3
	if r1.err != nil || r1.n != 1 {
		t.Fatalf("retrying reader, QueryRow: %d, %v; want 1 row from the primary after the conflict", r1.n, r1.err)
	}
	if r3.err != nil || r3.n != 1 {
		t.Fatalf("retrying reader, Query: %d, %v; want 1 row from the primary after the conflict", r3.n, r3.err)
	}
	if st := retrying.Stats(); st.Retried != 2 || st.FellBack != 2 {
		t.Fatalf("retrying reader Stats = %+v, want two retries that fell back to the primary", st)
	}
	var ne *NodeError
	if !errors.Is(r2.err, ErrRecoveryConflict) || !errors.As(r2.err, &ne) || ne.Node != "replica1" {
		t.Fatalf("reader without retries: %v; want ErrRecoveryConflict from replica1", r2.err)
	}
	t.Logf("reported: %v", r2.err)
	// Traced: each read started on replica1, was retried once after a
	// recovery conflict there, and ended on the primary (the fallback).
	rec := h.snapshot()
	if len(rec.starts) != 2 || len(rec.ends) != 2 || len(rec.retries) != 2 || rec.lost != 0 {
		t.Fatalf("traced %d starts, %d ends, %d retries (%d without their context); want 2, 2, 2, 0", len(rec.starts), len(rec.ends), len(rec.retries), rec.lost)
	}
	for _, st := range rec.starts {
		if st.Node != "replica1" || st.Route != RouteReplica || st.SQL != q {
			t.Errorf("start %+v, want the query routed to replica1", st)
		}
	}
	for _, rt := range rec.retries {
		if rt.Node != "replica1" || rt.Attempt != 1 || !errors.Is(rt.Err, ErrRecoveryConflict) {
			t.Errorf("retry %+v, want a recovery conflict on replica1 at attempt 1", rt)
		}
	}
	for _, end := range rec.ends {
		if end.Err != nil || end.Node != "primary" || end.Route != RouteFallback || end.Attempts != 2 {
			t.Errorf("end %+v, want success on the primary (fallback) after 2 attempts", end)
		}
	}
}
