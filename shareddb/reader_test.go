package shareddb

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/go-integration/patterns/internal/testenv"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

func TestRoutesReadsToTheReplica(t *testing.T) {
	e := setup(t, "create table items (id int primary key, name text)", "insert into items values (1, 'one'), (2, 'two')")
	e.waitReplica(t)
	h := &recorder{}
	r := e.reader(t, WithReplicas(e.replicaURL), WithTracer(h))
	ctx := context.Background()

	if !onReplica(t, r) {
		t.Fatal("read went to the primary, want the replica")
	}
	var name string
	if err := r.QueryRow(ctx, "select name from items where id = $1", 2).Scan(&name); err != nil || name != "two" {
		t.Fatalf("QueryRow = %q, %v; want two", name, err)
	}
	rows, err := r.Query(ctx, "select id from items order by id")
	if err != nil {
		t.Fatal(err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[int32])
	if err != nil || len(ids) != 2 || ids[0] != 1 || ids[1] != 2 {
		t.Fatalf("Query = %v, %v; want [1 2]", ids, err)
	}
	err = r.ReadTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead}, func(tx pgx.Tx) error {
		var ro string
		if err := tx.QueryRow(ctx, "show transaction_read_only").Scan(&ro); err != nil {
			return err
		}
		if ro != "on" {
			t.Errorf("transaction_read_only = %s in ReadTx", ro)
		}
		return tx.QueryRow(ctx, "select count(*) from items").Scan(new(int))
	})
	if err != nil {
		t.Fatalf("ReadTx: %v", err)
	}

	st := r.Stats()
	if st.Routed != 4 || st.FellBack != 0 || st.Refused != 0 {
		t.Fatalf("Stats = %+v, want 4 routed, none fallen back or refused", st)
	}
	status := r.Status()
	if len(status) != 2 || status[0].Role != RolePrimary || status[1].Role != RoleReplica {
		t.Fatalf("Status roles = %+v", status)
	}
	p, rep := status[0], status[1]
	if !p.Healthy || p.InRecovery || p.CurrentLSN == 0 || p.LastError != nil {
		t.Fatalf("primary status = %+v", p)
	}
	if !rep.Healthy || !rep.InRecovery || !rep.LagKnown || rep.ReplayLSN == 0 || rep.Latency <= 0 || rep.Routed != 4 {
		t.Fatalf("replica status = %+v", rep)
	}
	rec := h.snapshot()
	if len(rec.starts) != 4 || len(rec.ends) != 4 || rec.lost != 0 {
		t.Fatalf("traced %d starts, %d ends, %d without their context; want 4, 4, 0", len(rec.starts), len(rec.ends), rec.lost)
	}
	wantOps := []Op{OpQueryRow, OpQueryRow, OpQuery, OpReadTx}
	for i, st := range rec.starts {
		if st.Op != wantOps[i] || st.Route != RouteReplica || st.Node != "replica1" || st.Role != RoleReplica || st.Addr == "" || !st.LagKnown || st.MaxLag != DefaultMaxLag {
			t.Errorf("start %d = %+v, want %s routed to replica1", i, st, wantOps[i])
		}
		if end := rec.ends[i]; end.Err != nil || end.Node != "replica1" || end.Route != RouteReplica || end.Attempts != 1 || end.Duration <= 0 {
			t.Errorf("end %d = %+v, want a success on replica1 in one attempt", i, end)
		}
	}
	if st := rec.starts[1]; st.SQL != "select name from items where id = $1" || len(st.Args) != 1 || st.Args[0] != 2 {
		t.Errorf("start of QueryRow: SQL %q args %v", st.SQL, st.Args)
	}
	testenv.Eventually(t, 2*time.Second, "checks traced", func() bool { return len(h.snapshot().checks) >= 4 })
	for _, c := range h.snapshot().checks {
		if (c.Name != "primary" && c.Name != "replica1") || !c.Healthy || c.Duration <= 0 || c.CheckedAt.IsZero() {
			t.Errorf("check = %+v", c)
		}
	}
}

func TestIdleReplicaHasZeroLag(t *testing.T) {
	e := setup(t)
	r := e.reader(t, WithReplicas(e.replicaURL))
	// A caught-up replica has zero lag however old its last replayed transaction is.
	testenv.Eventually(t, 10*time.Second, "replica lag 0", func() bool {
		s := r.Status()[1]
		return s.Healthy && s.Streaming && s.LagKnown && s.Lag == 0
	})
	old := 10 * time.Second
	if got := ptr(old.Seconds()); true {
		lag, known := replicaLag(true, 100, ptr64(100), 100, got)
		if !known || lag != 0 {
			t.Fatalf("caught-up replica: lag %v known %v, want 0 (idle-safe)", lag, known)
		}
		lag, known = replicaLag(true, 200, ptr64(200), 100, got)
		if !known || lag != old {
			t.Fatalf("received but not replayed: lag %v known %v, want %v", lag, known, old)
		}
		if _, known = replicaLag(true, 200, nil, 100, nil); known {
			t.Fatal("restarted replica behind the primary: lag known, want unknown")
		}
		if lag, known = replicaLag(true, 0, ptr64(50), 50, got); !known || lag != 0 {
			t.Fatalf("primary unknown, all received replayed: lag %v known %v, want 0", lag, known)
		}
		// Without a streaming WAL receiver, "replayed all received" says nothing.
		if _, known = replicaLag(false, 100, ptr64(100), 100, got); known {
			t.Fatal("caught up but WAL receiver not streaming: lag known, want unknown")
		}
		if _, known = replicaLag(false, 0, ptr64(50), 50, got); known {
			t.Fatal("primary unknown, WAL receiver not streaming: lag known, want unknown")
		}
	}
}

func ptr(f float64) *float64 { return &f }
func ptr64(i int64) *int64   { return &i }

func TestReaderNeverWrites(t *testing.T) {
	e := setup(t, "create table items (id int primary key)")
	// Primary only: the reader's primary connections are read-only too.
	r := e.reader(t, WithPoolConfig(func(_ string, c *pgxpool.Config) { c.MaxConns = 1 }))
	ctx := context.Background()

	err := r.QueryRow(ctx, "insert into items values (1) returning id").Scan(new(int))
	if !errors.Is(err, ErrReadOnly) {
		t.Fatalf("insert through QueryRow: %v, want ErrReadOnly", err)
	}
	var ne *NodeError
	if !errors.As(err, &ne) || ne.Node != "primary" {
		t.Fatalf("error %v does not name the node", err)
	}
	rows, err := r.Query(ctx, "insert into items values (2) returning id")
	if err != nil {
		t.Fatal(err)
	}
	rows.Close()
	if err := rows.Err(); !errors.Is(err, ErrReadOnly) {
		t.Fatalf("insert through Query: %v, want ErrReadOnly", err)
	}
	if _, err := r.BeginTx(ctx, pgx.TxOptions{AccessMode: pgx.ReadWrite}); !errors.Is(err, ErrReadOnly) {
		t.Fatalf("BeginTx ReadWrite: %v, want ErrReadOnly", err)
	}
	tx, err := r.BeginTx(ctx, pgx.TxOptions{})
	if err != nil {
		t.Fatal(err)
	}
	_, err = tx.Exec(ctx, "insert into items values (3)")
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "25006" {
		t.Fatalf("insert in BeginTx: %v, want read_only_sql_transaction", err)
	}
	_ = tx.Rollback(ctx)

	// default_transaction_read_only is only a default: a transaction that has
	// not queried yet could be switched to read-write. The reader's cannot.
	tx, err = r.BeginTx(ctx, pgx.TxOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "set transaction read write"); err == nil {
		_, err = tx.Exec(ctx, "insert into items values (5)")
		t.Errorf("BeginTx: set transaction read write succeeded (then insert: %v)", err)
		_ = tx.Commit(ctx)
	} else {
		_ = tx.Rollback(ctx)
	}
	err = r.ReadTx(ctx, pgx.TxOptions{BeginQuery: "begin read write"}, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "set transaction read write"); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, "insert into items values (6)")
		return err
	})
	if err == nil {
		t.Errorf("ReadTx: set transaction read write and insert succeeded")
	}

	// A connection someone switched to read-write is destroyed on release, not reused.
	c, err := r.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Exec(ctx, "set default_transaction_read_only = off"); err != nil {
		t.Fatal(err)
	}
	c.Release()
	err = r.QueryRow(ctx, "insert into items values (4) returning id").Scan(new(int))
	if !errors.Is(err, ErrReadOnly) {
		t.Fatalf("insert after a released read-write connection: %v, want ErrReadOnly", err)
	}

	var n int
	if err := e.admin.QueryRow(ctx, "select count(*) from items").Scan(&n); err != nil || n != 0 {
		t.Fatalf("items has %d rows (%v), want 0: the reader wrote", n, err)
	}
}

func TestZeroReplicasReadFromThePrimaryWithAWarning(t *testing.T) {
	e := setup(t)
	var logs logBuffer
	r := e.reader(t, WithLogger(slog.New(slog.NewTextHandler(&logs, nil))))
	if !strings.Contains(logs.String(), "no replicas configured") {
		t.Fatalf("no warning about zero replicas; log: %s", logs.String())
	}
	if onReplica(t, r) || onReplica(t, r.With(WithMaxLag(0))) {
		t.Fatal("read went to a server in recovery, want the primary")
	}
	if st := r.Stats(); st.Routed != 2 || st.FellBack != 0 {
		t.Fatalf("Stats = %+v, want 2 routed, 0 fallen back", st)
	}
}

func TestReadYourWrites(t *testing.T) {
	e := setup(t, "create table events (id int primary key)")
	e.waitReplica(t)
	r := e.reader(t, WithReplicas(e.replicaURL))
	for i := 1; i <= 20; i++ {
		e.exec(t, "insert into events values ($1)", i)
		tok, err := CurrentToken(context.Background(), e.admin)
		if err != nil {
			t.Fatal(err)
		}
		// The token travels as text.
		tok, err = ParseToken(tok.String())
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		var n int
		err = r.With(WithToken(tok)).QueryRow(ctx, "select count(*) from events").Scan(&n)
		cancel()
		if err != nil || n != i {
			t.Fatalf("after write %d, read with its token saw %d rows (%v)", i, n, err)
		}
	}
	if st := r.Stats(); st.Routed < 20 {
		t.Fatalf("Stats = %+v", st)
	}
	// The reader's own Token covers everything committed before it.
	tok, err := r.Token(context.Background())
	if err != nil || tok.IsZero() {
		t.Fatalf("Token = %v, %v", tok, err)
	}
}

func TestAcquireAndPoolGiveTheChosenNode(t *testing.T) {
	e := setup(t, "create table ticks (id int)")
	r := e.reader(t, WithReplicas(e.replicaURL))
	ctx := context.Background()
	c, err := r.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var rec bool
	var ro string
	err = c.QueryRow(ctx, "select pg_is_in_recovery(), current_setting('default_transaction_read_only')").Scan(&rec, &ro)
	c.Release()
	if err != nil || !rec || ro != "on" {
		t.Fatalf("acquired conn: in recovery %v, read-only %s, %v; want a read-only replica conn", rec, ro, err)
	}
	p, name, err := r.Pool(ctx)
	if err != nil || name != "replica1" || !onReplica(t, p) {
		t.Fatalf("Pool = %s, %v; want replica1", name, err)
	}
	// A token no replica is known to have reached, with no time left to wait
	// (deadline within FallbackReserve), sends the read to the primary. A
	// check may see the replica reach it first: then try again.
	for i := 0; ; i++ {
		e.exec(t, "insert into ticks values ($1)", i)
		tok, err := CurrentToken(ctx, e.admin)
		if err != nil {
			t.Fatal(err)
		}
		short, cancel := context.WithTimeout(ctx, DefaultFallbackReserve/2)
		pc, name, err := r.With(WithToken(tok)).Pool(short)
		cancel()
		if err == nil && name == "replica1" && i < 5 {
			continue
		}
		if err != nil || name != "primary" || onReplica(t, pc) {
			t.Fatalf("Pool with a token no replica reached = %s, %v; want primary", name, err)
		}
		break
	}
}

func TestCloseRefusesReads(t *testing.T) {
	e := setup(t)
	r := e.reader(t, WithReplicas(e.replicaURL))
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if err := r.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	ctx := context.Background()
	if err := r.QueryRow(ctx, "select 1").Scan(new(int)); !errors.Is(err, ErrClosed) {
		t.Fatalf("QueryRow after Close: %v", err)
	}
	if _, err := r.Query(ctx, "select 1"); !errors.Is(err, ErrClosed) {
		t.Fatalf("Query after Close: %v", err)
	}
	if _, err := r.Acquire(ctx); !errors.Is(err, ErrClosed) {
		t.Fatalf("Acquire after Close: %v", err)
	}
}

func TestBadOptions(t *testing.T) {
	replica := testenv.ReplicaDatabaseURL(t)
	primary := testenv.DatabaseURL(t)
	quiet := WithLogger(slog.New(slog.DiscardHandler))
	ctx := context.Background()
	many := make([]string, maxReplicas+1)
	for i := range many {
		many[i] = replica
	}
	cases := []struct {
		name    string
		primary string
		opts    []Option
		want    error
		text    string
	}{
		{"no primary", "", nil, ErrInvalidOption, "primary URL is empty"},
		{"bad primary URL", "postgres://%zz", nil, ErrInvalidOption, "primary URL"},
		{"bad replica URL", primary, []Option{WithReplicas("host=127.0.0.1 port=notaport")}, ErrInvalidOption, "WithReplicas: replica1 URL"},
		{"empty replica URL", primary, []Option{WithReplicas("")}, ErrInvalidOption, "WithReplicas: empty URL"},
		{"too many replicas", primary, []Option{WithReplicas(many...)}, ErrInvalidOption, "WithReplicas: 64 replicas, at most 63"},
		{"refuse without replicas", primary, []Option{WithFallback(FallbackRefuse)}, ErrInvalidOption, "WithFallback(FallbackRefuse) conflicts with no WithReplicas"},
		{"unknown fallback", primary, []Option{WithFallback(7)}, ErrInvalidOption, "WithFallback(7): unknown Fallback"},
		{"negative byte lag", primary, []Option{WithMaxLagBytes(-1)}, ErrInvalidOption, "WithMaxLagBytes(-1): negative"},
		{"timeout over interval", primary, []Option{WithCheckInterval(time.Second), WithCheckTimeout(2 * time.Second)}, ErrInvalidOption, "WithCheckTimeout(2s) conflicts with WithCheckInterval(1s)"},
		{"zero interval", primary, []Option{WithCheckInterval(0)}, ErrInvalidOption, "WithCheckInterval(0s): not positive"},
		{"zero timeout", primary, []Option{WithCheckTimeout(0)}, ErrInvalidOption, "WithCheckTimeout(0s): not positive"},
		{"negative token wait", primary, []Option{WithTokenWait(-time.Second)}, ErrInvalidOption, "WithTokenWait(-1s): negative"},
		{"negative reserve", primary, []Option{WithFallbackReserve(-time.Second)}, ErrInvalidOption, "WithFallbackReserve(-1s): negative"},
		{"negative retries", primary, []Option{WithRetries(-1)}, ErrInvalidOption, "WithRetries(-1): negative"},
		{"nil picker", primary, []Option{WithPicker(nil)}, ErrInvalidOption, "WithPicker(nil)"},
		{"nil pool config", primary, []Option{WithPoolConfig(nil)}, ErrInvalidOption, "WithPoolConfig(nil)"},
		{"nil logger", primary, []Option{WithLogger(nil)}, ErrInvalidOption, "WithLogger(nil)"},
		{"nil contract", primary, []Option{WithContract(nil)}, ErrInvalidOption, "WithContract(nil)"},
		{"empty contract", primary, []Option{WithContract(&Contract{})}, ErrInvalidOption, "WithContract: shareddb: invalid option: contract declares no tables"},
		{"zero drain timeout", primary, []Option{WithDrainTimeout(0)}, ErrInvalidOption, "WithDrainTimeout(0s): not positive"},
		{"tracer of no kind", primary, []Option{WithTracer(42)}, ErrInvalidOption, "WithTracer: tracer int implements none of QueryTracer, QueryRetryTracer, CheckTracer, NodeChangeTracer"},
		{"nil tracer", primary, []Option{WithTracer(nil)}, ErrInvalidOption, "WithTracer: tracer is nil"},
		{"nil option", primary, []Option{nil}, ErrInvalidOption, "nil Option"},
		{"two bad options", primary, []Option{WithRetries(-1), WithCheckInterval(-time.Second)}, ErrInvalidOption, "WithRetries(-1): negative\nWithCheckInterval(-1s): not positive"},
		{"replica is a primary", primary, []Option{WithReplicas(primary)}, ErrNotReplica, "is not in recovery (pg_is_in_recovery() = false)"},
		{"primary in recovery", replica, []Option{WithReplicas(replica)}, ErrPrimaryInRecovery, "it is a standby"},
		{"contract on a missing table", primary, []Option{WithContract(&Contract{Tables: []Table{{Schema: "public", Name: "no_such_table_shareddb", Columns: []Column{{Name: "id", Type: "int"}}}}})}, ErrContract, "missing table public.no_such_table_shareddb"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r, err := New(ctx, c.primary, append([]Option{quiet}, c.opts...)...)
			if err == nil {
				r.Close()
				t.Fatal("New succeeded")
			}
			if !errors.Is(err, c.want) || !strings.Contains(err.Error(), c.text) {
				t.Fatalf("New: %v; want %v mentioning %q", err, c.want, c.text)
			}
		})
	}
	t.Run("unreachable primary", func(t *testing.T) {
		_, err := New(ctx, "postgres://postgres@127.0.0.1:1/test", quiet, WithCheckTimeout(500*time.Millisecond))
		if err == nil || !strings.Contains(err.Error(), "primary 127.0.0.1:1 is unreachable") {
			t.Fatalf("New: %v", err)
		}
	})
}

func TestBadReadOptions(t *testing.T) {
	e := setup(t)
	h := &recorder{}
	r := e.reader(t, WithReplicas(e.replicaURL), WithTracer(h))
	ctx := context.Background()
	cases := []struct {
		name string
		opts []ReadOption
		text string
	}{
		{"negative byte lag", []ReadOption{WithMaxLagBytes(-5)}, "WithMaxLagBytes(-5): negative"},
		{"unknown fallback", []ReadOption{WithFallback(Fallback(9))}, "WithFallback(9): unknown Fallback"},
		{"nil option", []ReadOption{WithMaxLag(time.Second), nil}, "nil ReadOption"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			v := r.With(c.opts...)
			check := func(what string, err error) {
				t.Helper()
				if !errors.Is(err, ErrInvalidOption) || !strings.Contains(err.Error(), c.text) {
					t.Errorf("%s: %v; want ErrInvalidOption mentioning %q", what, err, c.text)
				}
			}
			check("QueryRow", v.QueryRow(ctx, "select 1").Scan(new(int)))
			_, err := v.Query(ctx, "select 1")
			check("Query", err)
			_, err = v.BeginTx(ctx, pgx.TxOptions{})
			check("BeginTx", err)
			check("ReadTx", v.ReadTx(ctx, pgx.TxOptions{}, func(pgx.Tx) error { return nil }))
			_, err = v.Acquire(ctx)
			check("Acquire", err)
			_, _, err = v.Pool(ctx)
			check("Pool", err)
		})
	}
	if st, rec := r.Stats(), h.snapshot(); st.Routed != 0 || len(rec.starts) != 0 {
		t.Fatalf("reads with bad options were routed (%+v) or traced (%d)", st, len(rec.starts))
	}
	// The reader's own limits are not changed by a View.
	if !onReplica(t, r) {
		t.Fatal("reader's read did not go to the replica")
	}
}

func TestUnreachableReplicaIsSkipped(t *testing.T) {
	e := setup(t)
	var logs logBuffer
	r := e.reader(t, WithReplicas("postgres://postgres@127.0.0.1:1/test", e.replicaURL), WithLogger(slog.New(slog.NewTextHandler(&logs, nil))))
	if !strings.Contains(logs.String(), "replica unreachable at start") {
		t.Fatalf("no warning; log: %s", logs.String())
	}
	for range 5 {
		if !onReplica(t, r) {
			t.Fatal("read did not go to the reachable replica")
		}
	}
	s := r.Status()[1]
	if s.Healthy || s.LastError == nil || s.Routed != 0 {
		t.Fatalf("unreachable replica status = %+v", s)
	}
}

func TestRefusalExplainsWhy(t *testing.T) {
	e := setup(t)
	r := e.reader(t, WithReplicas("postgres://postgres@127.0.0.1:1/test"), WithFallback(FallbackRefuse))
	err := r.QueryRow(context.Background(), "select 1").Scan(new(int))
	if !errors.Is(err, ErrNoFreshReplica) || !strings.Contains(err.Error(), "replica1 (127.0.0.1:1): unhealthy") {
		t.Fatalf("QueryRow: %v; want ErrNoFreshReplica naming the unhealthy replica", err)
	}
	// Per read, the policy can be relaxed.
	if onReplica(t, r.With(WithFallback(FallbackPrimary))) {
		t.Fatal("fallback read went to a replica")
	}
	if st := r.Stats(); st.Refused != 1 || st.FellBack != 1 {
		t.Fatalf("Stats = %+v, want 1 refused, 1 fallen back", st)
	}
}

func TestPickers(t *testing.T) {
	c := []Candidate{
		{Name: "a", Lag: time.Second, LagBytes: 100, Latency: 3 * time.Millisecond},
		{Name: "b", Lag: 0, LagBytes: 0, Latency: 5 * time.Millisecond},
		{Name: "c", Lag: 0, LagBytes: 0, Latency: time.Millisecond},
	}
	if got := c[LeastLag().Pick(c)].Name; got != "c" {
		t.Errorf("LeastLag picked %s, want c (no lag, lower latency than b)", got)
	}
	if got := c[LowestLatency().Pick(c)].Name; got != "c" {
		t.Errorf("LowestLatency picked %s, want c", got)
	}
	rr := RoundRobin()
	var got []string
	for range 6 {
		got = append(got, c[rr.Pick(c)].Name)
	}
	if strings.Join(got, "") != "abcabc" {
		t.Errorf("RoundRobin picked %v, want a b c a b c", got)
	}
}

func TestClassify(t *testing.T) {
	cases := []struct {
		err  error
		want errKind
	}{
		{&pgconn.PgError{Code: "40001", Message: "canceling statement due to conflict with recovery"}, errConflict},
		{&pgconn.PgError{Code: "25006", Message: "cannot execute INSERT in a read-only transaction"}, errReadOnly},
		{&pgconn.PgError{Code: "57P01", Message: "terminating connection due to administrator command"}, errDown},
		{&pgconn.PgError{Code: "42P01", Message: "relation does not exist"}, errOther},
	}
	for _, c := range cases {
		if got := classify(c.err); got != c.want {
			t.Errorf("classify(%v) = %v, want %v", c.err, got, c.want)
		}
	}
}

func TestRoundRobinSpreadsReadsOverReplicas(t *testing.T) {
	e := setup(t)
	// The same server twice: two nodes to the reader.
	r := e.reader(t, WithReplicas(e.replicaURL, e.replicaURL), WithPicker(RoundRobin()))
	testenv.Eventually(t, 5*time.Second, "both replicas fresh", func() bool {
		s := r.Status()
		return s[1].Healthy && s[1].LagKnown && s[2].Healthy && s[2].LagKnown
	})
	for range 10 {
		if !onReplica(t, r) {
			t.Fatal("read went to the primary")
		}
	}
	s := r.Status()
	if s[1].Routed != 5 || s[2].Routed != 5 {
		t.Fatalf("routed %d and %d, want 5 and 5", s[1].Routed, s[2].Routed)
	}
}

func TestTokenAheadOfThePrimaryIsRefused(t *testing.T) {
	e := setup(t)
	e.waitReplica(t)
	r := e.reader(t, WithReplicas(e.replicaURL))
	cur, err := CurrentToken(context.Background(), e.admin)
	if err != nil {
		t.Fatal(err)
	}
	// A token no write made: far beyond the primary's position.
	bad, err := ParseToken(TokenAt(cur.LSN() + 1<<40).String())
	if err != nil {
		t.Fatal(err)
	}
	v := r.With(WithToken(bad))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	start := time.Now()
	err = v.QueryRow(ctx, "select 1").Scan(new(int))
	if took := time.Since(start); !errors.Is(err, ErrInvalidToken) || took > time.Second {
		t.Fatalf("read with a token beyond the primary: %v after %v; want ErrInvalidToken at once", err, took)
	}
	t.Logf("refused: %v", err)
	if _, _, err := v.Pool(ctx); !errors.Is(err, ErrInvalidToken) {
		t.Fatalf("Pool with a token beyond the primary: %v, want ErrInvalidToken", err)
	}
	// Without replicas too.
	solo := e.reader(t)
	if err := solo.With(WithToken(bad)).QueryRow(ctx, "select 1").Scan(new(int)); !errors.Is(err, ErrInvalidToken) {
		t.Fatalf("reader without replicas: %v, want ErrInvalidToken", err)
	}

	// A token just issued (ahead of what the checker last saw) is valid.
	e.exec(t, "create table t (id int)")
	tok, err := CurrentToken(context.Background(), e.admin)
	if err != nil {
		t.Fatal(err)
	}
	if err := v.r.With(WithToken(tok)).QueryRow(ctx, "select count(*) from t").Scan(new(int)); err != nil {
		t.Fatalf("read with a fresh token: %v", err)
	}
}
