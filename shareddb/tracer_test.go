package shareddb

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/go-integration/patterns/internal/testenv"
	"github.com/jackc/pgx/v5"
)

func TestTracerSeesFallbacksAndFailures(t *testing.T) {
	e := setup(t, "create table items (id int primary key)", "insert into items values (1), (2)")
	e.waitReplica(t)
	h, second := &recorder{}, &recorder{}
	// An unreachable replica: every read falls back or is refused.
	r := e.reader(t, WithReplicas("postgres://postgres@127.0.0.1:1/test"), WithTracer(h), WithTracer(second))
	ctx := context.Background()

	// Fallback: a Query, traced until its rows are closed.
	rows, err := r.Query(ctx, "select id from items order by id")
	if err != nil {
		t.Fatal(err)
	}
	if n := len(h.snapshot().ends); n != 0 {
		t.Fatalf("Query traced as ended (%d) before its rows were read", n)
	}
	if ids, err := pgx.CollectRows(rows, pgx.RowTo[int32]); err != nil || len(ids) != 2 {
		t.Fatalf("Query = %v, %v", ids, err)
	}
	// Refused.
	err = r.With(WithFallback(FallbackRefuse)).QueryRow(ctx, "select 1").Scan(new(int))
	if !errors.Is(err, ErrNoFreshReplica) {
		t.Fatalf("refusing read: %v", err)
	}
	// A server error on the primary.
	err = r.QueryRow(ctx, "select no_such_column from items").Scan(new(int))
	var ne *NodeError
	if !errors.As(err, &ne) || ne.Node != "primary" {
		t.Fatalf("bad query: %v", err)
	}
	// An error while reading rows.
	rows, err = r.Query(ctx, "select 1/(id-2) from items order by id")
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
	}
	rows.Close()
	rowsErr := rows.Err()
	if rowsErr == nil {
		t.Fatal("division by zero not reported")
	}
	// Pool and Acquire are traced too.
	if _, name, err := r.Pool(ctx); err != nil || name != "primary" {
		t.Fatalf("Pool = %s, %v", name, err)
	}
	c, err := r.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	c.Release()

	rec := h.snapshot()
	if len(rec.starts) != 6 || len(rec.ends) != 6 || rec.lost != 0 {
		t.Fatalf("traced %d starts, %d ends, %d without their context; want 6, 6, 0", len(rec.starts), len(rec.ends), rec.lost)
	}
	type want struct {
		op    Op
		route Route
		node  string
		err   func(error) bool
	}
	isNil := func(err error) bool { return err == nil }
	wants := []want{
		{OpQuery, RouteFallback, "primary", isNil},
		{OpQueryRow, RouteNone, "", func(err error) bool { return errors.Is(err, ErrNoFreshReplica) }},
		{OpQueryRow, RouteFallback, "primary", func(err error) bool { return errors.As(err, &ne) && strings.Contains(err.Error(), "no_such_column") }},
		{OpQuery, RouteFallback, "primary", func(err error) bool { return err != nil && err.Error() == rowsErr.Error() }},
		{OpPool, RouteFallback, "primary", isNil},
		{OpAcquire, RouteFallback, "primary", isNil},
	}
	for i, w := range wants {
		st, end := rec.starts[i], rec.ends[i]
		if st.Op != w.op || st.Route != w.route || st.Node != w.node || st.LagKnown || st.Lag != 0 {
			t.Errorf("start %d = %+v, want %s routed %s to %q", i, st, w.op, w.route, w.node)
		}
		if end.Route != w.route || end.Node != w.node || !w.err(end.Err) || end.Duration <= 0 {
			t.Errorf("end %d = %+v, want %s on %q", i, end, w.route, w.node)
		}
		if w.node != "" && (end.Attempts != 1 || end.Role != RolePrimary || end.Addr == "") {
			t.Errorf("end %d = %+v, want one attempt on the primary", i, end)
		}
	}
	if other := second.snapshot(); len(other.starts) != 6 || len(other.ends) != 6 {
		t.Fatalf("second tracer got %d starts, %d ends; want 6, 6", len(other.starts), len(other.ends))
	}
	if st := r.Stats(); st.Routed != 5 || st.FellBack != 5 || st.Refused != 1 {
		t.Fatalf("Stats = %+v", st)
	}
}

func TestTracerSeesTokenWaits(t *testing.T) {
	e := setup(t, "create table ticks (id int)")
	e.waitReplica(t)
	h := &recorder{}
	r := e.reader(t, WithReplicas(e.replicaURL), WithTracer(h), WithTokenWait(0))
	ctx := context.Background()

	// A token no replica is known to have reached and no time to wait
	// (WithTokenWait(0), no deadline): the primary. A check may see the
	// replica reach it first: then try again.
	for i := 0; ; i++ {
		e.exec(t, "insert into ticks values ($1)", i)
		tok, err := CurrentToken(ctx, e.admin)
		if err != nil {
			t.Fatal(err)
		}
		before := len(h.snapshot().starts)
		var rec bool
		if err := r.With(WithToken(tok)).QueryRow(ctx, "select pg_is_in_recovery()").Scan(&rec); err != nil {
			t.Fatal(err)
		}
		st := h.snapshot().starts[before]
		if st.Token != tok {
			t.Fatalf("start token %v, want %v", st.Token, tok)
		}
		if rec && i < 5 {
			continue
		}
		if rec || st.Route != RouteTokenFallback || st.Node != "primary" {
			t.Fatalf("token read: on replica %v, start %+v; want the primary by token fallback", rec, st)
		}
		break
	}
	// A token beyond the primary: refused, traced with no node.
	cur, err := CurrentToken(ctx, e.admin)
	if err != nil {
		t.Fatal(err)
	}
	err = r.With(WithToken(TokenAt(cur.LSN()+1<<40))).QueryRow(ctx, "select 1").Scan(new(int))
	if !errors.Is(err, ErrInvalidToken) {
		t.Fatalf("token ahead: %v", err)
	}
	rec := h.snapshot()
	if end := rec.ends[len(rec.ends)-1]; end.Route != RouteNone || end.Node != "" || !errors.Is(end.Err, ErrInvalidToken) || end.Attempts != 0 {
		t.Fatalf("end of a read with a bad token = %+v", end)
	}
}

func TestReaderMaxLagZeroMeansCaughtUp(t *testing.T) {
	e := setup(t)
	e.waitReplica(t)
	h := &recorder{}
	r := e.reader(t, WithReplicas(e.replicaURL), WithMaxLag(0), WithTracer(h))
	testenv.Eventually(t, 10*time.Second, "replica caught up", func() bool {
		s := r.Status()[1]
		return s.Healthy && s.LagKnown && s.Lag == 0
	})
	if !onReplica(t, r) {
		t.Fatal("caught-up replica did not serve a WithMaxLag(0) reader")
	}
	if st := h.snapshot().starts[0]; st.MaxLag != 0 || st.Route != RouteReplica {
		t.Fatalf("start = %+v, want max lag 0 on the replica", st)
	}
}

func TestCloseDrainsThenCancels(t *testing.T) {
	e := setup(t)
	h := &recorder{}
	// On the primary only, where pg_stat_activity shows the reads running.
	r := e.reader(t, WithDrainTimeout(time.Second), WithTracer(h))
	ctx := context.Background()

	// A read shorter than the drain timeout finishes; a longer one is
	// cancelled on the server once the timeout passes.
	short, long := make(chan error, 1), make(chan error, 1)
	run := func(sleep string, ch chan error) {
		rows, err := r.Query(ctx, "select pg_sleep("+sleep+") -- drain test")
		if err == nil {
			for rows.Next() {
			}
			rows.Close()
			err = rows.Err()
		}
		ch <- err
	}
	go run("0.5", short)
	go run("20", long)
	testenv.Eventually(t, 5*time.Second, "both reads running on the server", func() bool {
		var n int
		_ = e.admin.QueryRow(ctx, "select count(*) from pg_stat_activity where query like 'select pg_sleep(%) -- drain test' and state = 'active'").Scan(&n)
		return n == 2
	})
	begin := time.Now()
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	took := time.Since(begin)
	if err := <-short; err != nil {
		t.Fatalf("short read during Close: %v, want it drained", err)
	}
	err := <-long
	if !errors.Is(err, ErrClosed) {
		t.Fatalf("long read cancelled by Close: %v, want ErrClosed", err)
	}
	if took < time.Second || took > 6*time.Second {
		t.Fatalf("Close took %v, want the drain timeout (1s) and a cancel", took)
	}
	t.Logf("Close took %v; long read: %v", took, err)
	ends := h.snapshot().ends
	if len(ends) != 2 {
		t.Fatalf("traced %d ends, want 2", len(ends))
	}

	// Everything fails with ErrClosed afterwards, and Close is idempotent.
	if err := r.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	checks := map[string]error{
		"QueryRow": r.QueryRow(ctx, "select 1").Scan(new(int)),
		"ReadTx":   r.ReadTx(ctx, pgx.TxOptions{}, func(pgx.Tx) error { return nil }),
		"Verify":   r.Verify(ctx),
	}
	_, checks["Query"] = r.Query(ctx, "select 1")
	_, checks["BeginTx"] = r.BeginTx(ctx, pgx.TxOptions{})
	_, checks["Acquire"] = r.Acquire(ctx)
	_, _, checks["Pool"] = r.Pool(ctx)
	_, checks["Token"] = r.Token(ctx)
	_, checks["View.Query"] = r.With(WithMaxLag(time.Second)).Query(ctx, "select 1")
	for name, err := range checks {
		if !errors.Is(err, ErrClosed) {
			t.Errorf("%s after Close: %v, want ErrClosed", name, err)
		}
	}
	if n := len(h.snapshot().starts); n != 2 {
		t.Fatalf("reads after Close were traced (%d starts)", n)
	}
}

func TestFaultCloseEndsTokenWaits(t *testing.T) {
	testenv.FaultTest(t) // pauses replay on the replica
	e := setup(t, "create table ticks (id int)")
	e.waitReplica(t)
	r := e.reader(t, WithReplicas(e.replicaURL), WithTokenWait(time.Minute))
	pauseReplay(t)
	e.exec(t, "insert into ticks values (1)")
	tok, err := CurrentToken(context.Background(), e.admin)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		var rec bool
		err := r.With(WithToken(tok)).QueryRow(context.Background(), "select pg_is_in_recovery()").Scan(&rec)
		if err == nil && rec {
			err = errors.New("served by the paused replica")
		}
		done <- err
	}()
	testenv.Eventually(t, 5*time.Second, "read waiting for the token", func() bool { return r.Stats().Waited == 1 })
	begin := time.Now()
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("token read during Close: %v, want it served by the primary", err)
	}
	if took := time.Since(begin); took > 5*time.Second {
		t.Fatalf("Close took %v: it waited for the token wait", took)
	}
}
