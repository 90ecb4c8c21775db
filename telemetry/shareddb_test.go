package telemetry_test

import (
	"context"
	"errors"
	"log/slog"
	"strconv"
	"testing"
	"testing/synctest"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/go-integration/patterns/internal/testenv"
	"github.com/go-integration/patterns/shareddb"
	"github.com/go-integration/patterns/telemetry"
)

// The helpers of shareddb_test.go and filetransfer_test.go are prefixed
// "sf" (shareddb, filetransfer): other files of the package have their own.

// sfEnv is a Telemetry on SDK providers recording in memory.
type sfEnv struct {
	tel    *telemetry.Telemetry
	tp     *sdktrace.TracerProvider
	spans  *tracetest.SpanRecorder
	reader *sdkmetric.ManualReader
}

func sfNew(t testing.TB, opts ...telemetry.Option) *sfEnv {
	t.Helper()
	e := &sfEnv{spans: tracetest.NewSpanRecorder(), reader: sdkmetric.NewManualReader()}
	e.tp = sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(e.spans))
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(e.reader))
	t.Cleanup(func() {
		_ = e.tp.Shutdown(context.Background())
		_ = mp.Shutdown(context.Background())
	})
	tel, err := telemetry.New(append([]telemetry.Option{telemetry.WithTracerProvider(e.tp), telemetry.WithMeterProvider(mp)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	e.tel = tel
	return e
}

// parent starts a span the test's work runs under.
func (e *sfEnv) parent(ctx context.Context, name string) (context.Context, trace.Span) {
	return e.tp.Tracer("test").Start(ctx, name)
}

// ended returns the ended spans named name, in the order they ended.
func (e *sfEnv) ended(name string) []sdktrace.ReadOnlySpan {
	var out []sdktrace.ReadOnlySpan
	for _, s := range e.spans.Ended() {
		if s.Name() == name {
			out = append(out, s)
		}
	}
	return out
}

func (e *sfEnv) metrics(t testing.TB) metricdata.ResourceMetrics {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := e.reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	return rm
}

// sfSets lists the attribute sets of a metric's points.
func sfSets(rm metricdata.ResourceMetrics, name string) []attribute.Set {
	m, _ := findMetric(rm, name)
	var out []attribute.Set
	switch d := m.Data.(type) {
	case metricdata.Sum[int64]:
		for _, p := range d.DataPoints {
			out = append(out, p.Attributes)
		}
	case metricdata.Gauge[int64]:
		for _, p := range d.DataPoints {
			out = append(out, p.Attributes)
		}
	case metricdata.Gauge[float64]:
		for _, p := range d.DataPoints {
			out = append(out, p.Attributes)
		}
	case metricdata.Histogram[float64]:
		for _, p := range d.DataPoints {
			out = append(out, p.Attributes)
		}
	}
	return out
}

// sfInt returns the value of an int64 sum or gauge point with exactly attrs.
func sfInt(rm metricdata.ResourceMetrics, name string, attrs ...attribute.KeyValue) (int64, bool) {
	m, _ := findMetric(rm, name)
	want := attribute.NewSet(attrs...)
	var points []metricdata.DataPoint[int64]
	switch d := m.Data.(type) {
	case metricdata.Sum[int64]:
		points = d.DataPoints
	case metricdata.Gauge[int64]:
		points = d.DataPoints
	}
	for _, p := range points {
		if p.Attributes.Equals(&want) {
			return p.Value, true
		}
	}
	return 0, false
}

// sfFloatGauge returns the value of a float64 gauge point with exactly attrs.
func sfFloatGauge(rm metricdata.ResourceMetrics, name string, attrs ...attribute.KeyValue) (float64, bool) {
	m, _ := findMetric(rm, name)
	want := attribute.NewSet(attrs...)
	if d, ok := m.Data.(metricdata.Gauge[float64]); ok {
		for _, p := range d.DataPoints {
			if p.Attributes.Equals(&want) {
				return p.Value, true
			}
		}
	}
	return 0, false
}

// sfHist returns the count and sum of a histogram point with exactly attrs.
func sfHist(rm metricdata.ResourceMetrics, name string, attrs ...attribute.KeyValue) (uint64, float64) {
	m, _ := findMetric(rm, name)
	want := attribute.NewSet(attrs...)
	if d, ok := m.Data.(metricdata.Histogram[float64]); ok {
		for _, p := range d.DataPoints {
			if p.Attributes.Equals(&want) {
				return p.Count, p.Sum
			}
		}
	}
	return 0, 0
}

// sfAttr returns a span's attribute.
func sfAttr(s sdktrace.ReadOnlySpan, key string) (attribute.Value, bool) {
	for _, kv := range s.Attributes() {
		if string(kv.Key) == key {
			return kv.Value, true
		}
	}
	return attribute.Value{}, false
}

// sfWantAttrs checks a span's attributes; a nil want means absent.
func sfWantAttrs(t *testing.T, what string, s sdktrace.ReadOnlySpan, want map[string]any) {
	t.Helper()
	for k, w := range want {
		v, ok := sfAttr(s, k)
		if w == nil {
			if ok {
				t.Errorf("%s: %s = %v, want none", what, k, v.String())
			}
			continue
		}
		if !ok || v.AsInterface() != w {
			t.Errorf("%s: %s = %v (set %t), want %v", what, k, v.AsInterface(), ok, w)
		}
	}
}

// sfChildOf checks that s is a child of parent.
func sfChildOf(t *testing.T, what string, s sdktrace.ReadOnlySpan, parent trace.SpanContext) {
	t.Helper()
	if s.Parent().SpanID() != parent.SpanID() || s.SpanContext().TraceID() != parent.TraceID() {
		t.Errorf("%s: parent %v in trace %v, want %v in %v", what, s.Parent().SpanID(), s.SpanContext().TraceID(), parent.SpanID(), parent.TraceID())
	}
}

// sdbReader is a ReplicaReader with quick checks and a quiet logger,
// closed when the test ends.
func sdbReader(t *testing.T, primaryURL string, opts ...shareddb.Option) *shareddb.ReplicaReader {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	opts = append([]shareddb.Option{
		// Quick, with room for a loaded machine: a check that times out
		// marks the node down.
		shareddb.WithCheckInterval(500 * time.Millisecond),
		shareddb.WithCheckTimeout(500 * time.Millisecond),
		shareddb.WithPoolConfig(func(_ string, c *pgxpool.Config) { c.MaxConns = 3 }),
		shareddb.WithLogger(slog.New(slog.DiscardHandler)),
	}, opts...)
	r, err := shareddb.New(ctx, primaryURL, opts...)
	if err != nil {
		t.Fatalf("shareddb.New: %v", err)
	}
	t.Cleanup(func() { _ = r.Close() })
	return r
}

// sdbHostPort returns the host and port of a database URL.
func sdbHostPort(t *testing.T, url string) (string, int) {
	t.Helper()
	c, err := pgx.ParseConfig(url)
	if err != nil {
		t.Fatal(err)
	}
	return c.Host, int(c.Port)
}

// sdbWaitHealthy waits until the reader's replica is healthy.
func sdbWaitHealthy(t *testing.T, r *shareddb.ReplicaReader) {
	t.Helper()
	testenv.Eventually(t, 10*time.Second, "replica healthy", func() bool { return r.Status()[1].Healthy })
}

func attrS(k, v string) attribute.KeyValue { return attribute.String(k, v) }
func attrI(k string, v int) attribute.KeyValue {
	return attribute.Int(k, v)
}

// A scripted run on the real primary and replica: each routed read is a
// client span under the caller's span with its node, role and route; a
// fallback, a refusal and a server error show up as such; the metrics
// count exactly what ran.
func TestSharedDBReadSpansAndMetrics(t *testing.T) {
	primaryURL, replicaURL := testenv.DatabaseURL(t), testenv.ReplicaDatabaseURL(t)
	pHost, pPort := sdbHostPort(t, primaryURL)
	rHost, rPort := sdbHostPort(t, replicaURL)
	e := sfNew(t)
	tr := e.tel.SharedDB()
	// Any lag: the replica serves every read while healthy, however far
	// behind other tests' writes put it.
	r := sdbReader(t, primaryURL, shareddb.WithReplicas(replicaURL), shareddb.WithMaxLag(-1), shareddb.WithTracer(tr))
	// The same tracer on a reader whose replica never answers: it falls back.
	down := "postgres://postgres@127.0.0.1:1/test?connect_timeout=1"
	r2 := sdbReader(t, primaryURL, shareddb.WithReplicas(down), shareddb.WithTracer(tr))
	sdbWaitHealthy(t, r)

	ctx, req := e.parent(context.Background(), "request")
	var inRecovery bool
	if err := r.QueryRow(ctx, "select pg_is_in_recovery()").Scan(&inRecovery); err != nil || !inRecovery {
		t.Fatalf("read on the replica: in recovery %t, %v", inRecovery, err)
	}
	errRead := r.QueryRow(ctx, "select no_such_column from no_such_table").Scan(new(int))
	if errRead == nil {
		t.Fatal("bad query: no error")
	}
	if err := r.QueryRow(ctx, "select 1 where false").Scan(new(int)); !errors.Is(err, pgx.ErrNoRows) {
		t.Fatalf("empty read: %v", err)
	}
	rows, err := r.Query(ctx, "select generate_series(1, 3)")
	if err != nil {
		t.Fatal(err)
	}
	if n, err := pgx.CollectRows(rows, pgx.RowTo[int32]); err != nil || len(n) != 3 {
		t.Fatalf("Query = %v, %v", n, err)
	}
	req.End()

	ctx2, job := e.parent(context.Background(), "job")
	if err := r2.QueryRow(ctx2, "select pg_is_in_recovery()").Scan(&inRecovery); err != nil || inRecovery {
		t.Fatalf("fallback read: in recovery %t, %v", inRecovery, err)
	}
	if err := r2.With(shareddb.WithFallback(shareddb.FallbackRefuse)).QueryRow(ctx2, "select 1").Scan(new(int)); !errors.Is(err, shareddb.ErrNoFreshReplica) {
		t.Fatalf("refused read: %v", err)
	}
	job.End()

	spans := e.ended("postgresql")
	if len(spans) != 6 {
		t.Fatalf("%d postgresql spans, want 6", len(spans))
	}
	for i, s := range spans {
		if s.SpanKind() != trace.SpanKindClient {
			t.Errorf("span %d: kind %v, want client", i, s.SpanKind())
		}
		parent := req.SpanContext()
		if i >= 4 {
			parent = job.SpanContext()
		}
		sfChildOf(t, "span "+strconv.Itoa(i), s, parent)
		sfWantAttrs(t, "span "+strconv.Itoa(i), s, map[string]any{"db.system.name": "postgresql", "db.query.text": nil})
	}
	onReplica := map[string]any{
		"patterns.shareddb.node": "replica1", "patterns.shareddb.role": "replica", "patterns.shareddb.route": "replica",
		"server.address": rHost, "server.port": int64(rPort), "patterns.shareddb.attempts": int64(1),
		"patterns.shareddb.max_lag": float64(-1), "patterns.shareddb.operation": "query_row",
	}
	sfWantAttrs(t, "replica read", spans[0], onReplica)
	if known, ok := sfAttr(spans[0], "patterns.shareddb.replica.lag_known"); !ok {
		t.Error("replica read: no lag_known")
	} else if _, hasLag := sfAttr(spans[0], "patterns.shareddb.replica.lag"); hasLag != known.AsBool() {
		t.Errorf("replica read: lag set %t, lag known %t", hasLag, known.AsBool())
	}
	if _, ok := sfAttr(spans[0], "patterns.shareddb.replica.lag_bytes"); !ok {
		t.Error("replica read: no lag_bytes")
	}
	if spans[0].Status().Code != codes.Unset || len(spans[0].Events()) != 0 {
		t.Errorf("replica read: status %v, events %v", spans[0].Status(), spans[0].Events())
	}

	sfWantAttrs(t, "bad query", spans[1], map[string]any{"patterns.shareddb.node": "replica1", "error.type": "42P01", "db.response.status_code": "42P01"})
	if st := spans[1].Status(); st.Code != codes.Error || st.Description != errRead.Error() {
		t.Errorf("bad query: status %v, want error %q", st, errRead)
	}
	if ev := spans[1].Events(); len(ev) != 1 || ev[0].Name != "exception" {
		t.Errorf("bad query: events %v, want the exception", ev)
	}

	sfWantAttrs(t, "empty read", spans[2], map[string]any{"patterns.shareddb.route": "replica", "error.type": nil})
	if spans[2].Status().Code != codes.Unset {
		t.Errorf("empty read (pgx.ErrNoRows): status %v, want unset", spans[2].Status())
	}
	sfWantAttrs(t, "Query", spans[3], map[string]any{"patterns.shareddb.operation": "query", "patterns.shareddb.route": "replica"})

	sfWantAttrs(t, "fallback", spans[4], map[string]any{
		"patterns.shareddb.node": "primary", "patterns.shareddb.role": "primary", "patterns.shareddb.route": "fallback",
		"server.address": pHost, "server.port": int64(pPort), "patterns.shareddb.replica.lag": nil,
		"patterns.shareddb.max_lag": shareddb.DefaultMaxLag.Seconds(),
	})
	if spans[4].Status().Code != codes.Unset {
		t.Errorf("fallback: status %v", spans[4].Status())
	}
	sfWantAttrs(t, "refused", spans[5], map[string]any{
		"patterns.shareddb.route": "none", "patterns.shareddb.node": nil, "server.address": nil,
		"error.type": "no_fresh_replica", "patterns.shareddb.attempts": int64(0),
	})
	if spans[5].Status().Code != codes.Error {
		t.Errorf("refused: status %v", spans[5].Status())
	}

	rm := e.metrics(t)
	for route, want := range map[string]int64{"replica": 4, "fallback": 1, "none": 1} {
		if got, _ := sfInt(rm, "patterns.shareddb.routed", attrS("patterns.shareddb.route", route)); got != want {
			t.Errorf("routed{%s} = %d, want %d", route, got, want)
		}
	}
	if n := len(sfSets(rm, "patterns.shareddb.routed")); n != 3 {
		t.Errorf("routed has %d series, want 3", n)
	}
	replica := []attribute.KeyValue{
		attrS("db.system.name", "postgresql"), attrS("patterns.shareddb.route", "replica"),
		attrS("patterns.shareddb.node", "replica1"), attrS("patterns.shareddb.role", "replica"),
		attrS("server.address", rHost), attrI("server.port", rPort),
	}
	durations := []struct {
		attrs []attribute.KeyValue
		count uint64
	}{
		{replica, 3},
		{append(replica[:len(replica):len(replica)], attrS("error.type", "42P01")), 1},
		{[]attribute.KeyValue{
			attrS("db.system.name", "postgresql"), attrS("patterns.shareddb.route", "fallback"),
			attrS("patterns.shareddb.node", "primary"), attrS("patterns.shareddb.role", "primary"),
			attrS("server.address", pHost), attrI("server.port", pPort),
		}, 1},
		{[]attribute.KeyValue{attrS("db.system.name", "postgresql"), attrS("patterns.shareddb.route", "none"), attrS("error.type", "no_fresh_replica")}, 1},
	}
	for _, d := range durations {
		s := attribute.NewSet(d.attrs...)
		if n, sum := sfHist(rm, "db.client.operation.duration", d.attrs...); n != d.count || sum <= 0 {
			t.Errorf("db.client.operation.duration{%s}: count %d, sum %g; want count %d", s.Encoded(attribute.DefaultEncoder()), n, sum, d.count)
		}
	}
	if n := len(sfSets(rm, "db.client.operation.duration")); n != len(durations) {
		t.Errorf("db.client.operation.duration has %d series, want %d", n, len(durations))
	}

	// The gauges of the last checks: both readers' primary is one node.
	node := func(name, host string, port int, role string) []attribute.KeyValue {
		return []attribute.KeyValue{attrS("patterns.shareddb.node", name), attrS("patterns.shareddb.role", role), attrS("server.address", host), attrI("server.port", port)}
	}
	testenv.Eventually(t, 10*time.Second, "gauges of every node", func() bool {
		rm = e.metrics(t)
		return len(sfSets(rm, "patterns.shareddb.node.healthy")) == 3
	})
	for _, c := range []struct {
		attrs []attribute.KeyValue
		want  int64
	}{{node("primary", pHost, pPort, "primary"), 1}, {node("replica1", rHost, rPort, "replica"), 1}, {node("replica1", "127.0.0.1", 1, "replica"), 0}} {
		if got, ok := sfInt(rm, "patterns.shareddb.node.healthy", c.attrs...); !ok || got != c.want {
			t.Errorf("node.healthy%v = %d (%t), want %d", c.attrs, got, ok, c.want)
		}
	}
	if _, ok := sfInt(rm, "patterns.shareddb.replica.lag_bytes", node("replica1", rHost, rPort, "replica")...); !ok {
		t.Error("no replica.lag_bytes for the replica")
	}
	if sets := sfSets(rm, "patterns.shareddb.replica.lag_bytes"); len(sets) != 1 {
		t.Errorf("replica.lag_bytes series %v, want the live replica's only", sets)
	}
	if sets := sfSets(rm, "patterns.shareddb.replica.lag"); len(sets) > 1 {
		t.Errorf("replica.lag series %v, want at most the live replica's", sets)
	}
}

// WithDBQueryText puts the SQL on the span; a reader without replicas
// routes to the primary (route primary).
func TestSharedDBQueryText(t *testing.T) {
	e := sfNew(t, telemetry.WithDBQueryText(true))
	r := sdbReader(t, testenv.DatabaseURL(t), shareddb.WithTracer(e.tel.SharedDB()))
	const sql = "select $1::int + 1"
	var n int
	if err := r.QueryRow(context.Background(), sql, 41).Scan(&n); err != nil || n != 42 {
		t.Fatalf("read = %d, %v", n, err)
	}
	spans := e.ended("postgresql")
	if len(spans) != 1 {
		t.Fatalf("%d spans", len(spans))
	}
	sfWantAttrs(t, "read", spans[0], map[string]any{
		"db.query.text": sql, "patterns.shareddb.route": "primary", "patterns.shareddb.node": "primary",
		"patterns.shareddb.replica.lag_known": nil, "patterns.shareddb.token": nil,
	})
	if spans[0].Parent().IsValid() {
		t.Error("a read without a parent span has a parent")
	}
}

// A read that loses its replica connection is retried on the primary: one
// span, a "retry" event, the node that served it at the end, and the
// retry and the node going down counted.
func TestSharedDBRetryEvent(t *testing.T) {
	primaryURL, replicaURL := testenv.DatabaseURL(t), testenv.ReplicaDatabaseURL(t)
	pHost, pPort := sdbHostPort(t, primaryURL)
	rHost, rPort := sdbHostPort(t, replicaURL)
	e := sfNew(t)
	r := sdbReader(t, primaryURL, shareddb.WithReplicas(replicaURL), shareddb.WithMaxLag(-1), shareddb.WithTracer(e.tel.SharedDB()))
	sdbWaitHealthy(t, r)
	ctx := context.Background()
	admin, err := pgx.Connect(ctx, replicaURL)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)

	marker := testenv.Name(t, "retry")
	done := make(chan error, 1)
	pctx, parent := e.parent(ctx, "request")
	go func() {
		// Sleeps on the replica until terminated; returns at once on the primary.
		done <- r.QueryRow(pctx, "select 1 from pg_sleep(case when pg_is_in_recovery() then 30 else 0 end) /* "+marker+" */").Scan(new(int))
	}()
	testenv.Eventually(t, 10*time.Second, "read terminated on the replica", func() bool {
		var n int
		err := admin.QueryRow(ctx, "select count(pg_terminate_backend(pid)) from pg_stat_activity where query like '%' || $1 || '%' and pid <> pg_backend_pid()", marker).Scan(&n)
		return err == nil && n > 0
	})
	if err := <-done; err != nil {
		t.Fatalf("retried read: %v", err)
	}
	parent.End()

	spans := e.ended("postgresql")
	if len(spans) != 1 {
		t.Fatalf("%d spans, want 1", len(spans))
	}
	s := spans[0]
	sfChildOf(t, "retried read", s, parent.SpanContext())
	sfWantAttrs(t, "retried read", s, map[string]any{
		"patterns.shareddb.attempts": int64(2), "patterns.shareddb.node": "primary", "patterns.shareddb.role": "primary",
		"patterns.shareddb.route": "fallback", "server.address": pHost, "server.port": int64(pPort), "error.type": nil,
	})
	if s.Status().Code != codes.Unset {
		t.Errorf("retried read: status %v", s.Status())
	}
	ev := s.Events()
	if len(ev) != 1 || ev[0].Name != "retry" {
		t.Fatalf("events %v, want one retry", ev)
	}
	got := map[string]any{}
	for _, kv := range ev[0].Attributes {
		got[string(kv.Key)] = kv.Value.AsInterface()
	}
	for k, w := range map[string]any{"patterns.shareddb.node": "replica1", "patterns.shareddb.attempt": int64(1), "error.type": "57P01", "server.address": rHost, "server.port": int64(rPort)} {
		if got[k] != w {
			t.Errorf("retry event: %s = %v, want %v", k, got[k], w)
		}
	}
	if _, ok := got["error.message"]; !ok {
		t.Error("retry event without error.message")
	}

	rm := e.metrics(t)
	replica := []attribute.KeyValue{attrS("patterns.shareddb.node", "replica1"), attrS("server.address", rHost), attrI("server.port", rPort)}
	if n, _ := sfInt(rm, "patterns.shareddb.retries", replica...); n != 1 {
		t.Errorf("retries = %d, want 1", n)
	}
	if n, _ := sfInt(rm, "patterns.shareddb.node.changes", append(replica, attrS("patterns.shareddb.change", "down"))...); n != 1 {
		t.Errorf("node.changes{down} = %d, want 1 (series %v)", n, sfSets(rm, "patterns.shareddb.node.changes"))
	}
	if n, _ := sfInt(rm, "patterns.shareddb.routed", attrS("patterns.shareddb.route", "replica")); n != 1 {
		t.Errorf("routed{replica} = %d, want 1 (the first decision)", n)
	}
}

// The gauges follow the last check: the lag disappears when it is no
// longer known, and a node no longer checked (its reader closed) stops
// being reported.
func TestSharedDBGaugesFollowChecks(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := sfNew(t)
		tr := e.tel.SharedDB().(shareddb.CheckTracer)
		ctx := context.Background()
		st := shareddb.NodeStatus{
			Name: "replica1", Addr: "db2.example:5433", Role: shareddb.RoleReplica, Healthy: true, InRecovery: true,
			Streaming: true, Lag: 1500 * time.Millisecond, LagKnown: true, LagBytes: 4096, CheckedAt: time.Now(),
		}
		tr.TraceCheck(ctx, shareddb.TraceCheckData{NodeStatus: st})
		attrs := []attribute.KeyValue{attrS("patterns.shareddb.node", "replica1"), attrS("patterns.shareddb.role", "replica"), attrS("server.address", "db2.example"), attrI("server.port", 5433)}
		rm := e.metrics(t)
		if v, ok := sfFloatGauge(rm, "patterns.shareddb.replica.lag", attrs...); !ok || v != 1.5 {
			t.Errorf("replica.lag = %g (%t), want 1.5", v, ok)
		}
		if v, _ := sfInt(rm, "patterns.shareddb.replica.lag_bytes", attrs...); v != 4096 {
			t.Errorf("replica.lag_bytes = %d, want 4096", v)
		}
		if v, _ := sfInt(rm, "patterns.shareddb.node.healthy", attrs...); v != 1 {
			t.Errorf("node.healthy = %d, want 1", v)
		}

		// The WAL receiver stopped: the lag is unknown, not the last value.
		time.Sleep(time.Second)
		st.Streaming, st.LagKnown, st.Lag, st.CheckedAt = false, false, 0, time.Now()
		tr.TraceCheck(ctx, shareddb.TraceCheckData{NodeStatus: st})
		rm = e.metrics(t)
		if v, ok := sfFloatGauge(rm, "patterns.shareddb.replica.lag", attrs...); ok {
			t.Errorf("replica.lag = %g while unknown, want no value", v)
		}
		if v, _ := sfInt(rm, "patterns.shareddb.replica.lag_bytes", attrs...); v != 4096 {
			t.Errorf("replica.lag_bytes = %d, want 4096", v)
		}

		// A failed check: unhealthy, no lag bytes.
		time.Sleep(time.Second)
		st.Healthy, st.LastError, st.CheckedAt = false, errors.New("connection refused"), time.Now()
		tr.TraceCheck(ctx, shareddb.TraceCheckData{NodeStatus: st})
		rm = e.metrics(t)
		if v, ok := sfInt(rm, "patterns.shareddb.node.healthy", attrs...); !ok || v != 0 {
			t.Errorf("node.healthy = %d (%t), want 0", v, ok)
		}
		if _, ok := sfInt(rm, "patterns.shareddb.replica.lag_bytes", attrs...); ok {
			t.Error("replica.lag_bytes reported after a failed check")
		}

		// No check for 30 s: forgotten.
		time.Sleep(29 * time.Second)
		if _, ok := sfInt(e.metrics(t), "patterns.shareddb.node.healthy", attrs...); !ok {
			t.Error("node forgotten before 30 s without a check")
		}
		time.Sleep(2 * time.Second)
		if sets := sfSets(e.metrics(t), "patterns.shareddb.node.healthy"); len(sets) != 0 {
			t.Errorf("node.healthy %v after 31 s without a check, want none", sets)
		}
	})
}

// Without providers (the global no-op ones) reads work and nothing is recorded.
func TestSharedDBNoProvider(t *testing.T) {
	tel, err := telemetry.New()
	if err != nil {
		t.Fatal(err)
	}
	r := sdbReader(t, testenv.DatabaseURL(t), shareddb.WithTracer(tel.SharedDB()))
	var n int
	if err := r.QueryRow(context.Background(), "select 1").Scan(&n); err != nil || n != 1 {
		t.Fatalf("read = %d, %v", n, err)
	}
}

// BenchmarkSharedDBTracerNoop is the tracer's cost per read without providers.
func BenchmarkSharedDBTracerNoop(b *testing.B) {
	tel, err := telemetry.New()
	if err != nil {
		b.Fatal(err)
	}
	tr := tel.SharedDB().(shareddb.QueryTracer)
	ctx := context.Background()
	start := shareddb.TraceQueryStartData{Op: shareddb.OpQueryRow, SQL: "select 1", Node: "replica1", Addr: "127.0.0.1:5433", Role: shareddb.RoleReplica, Route: shareddb.RouteReplica, LagKnown: true}
	end := shareddb.TraceQueryEndData{Node: "replica1", Addr: "127.0.0.1:5433", Role: shareddb.RoleReplica, Route: shareddb.RouteReplica, Attempts: 1, Duration: time.Millisecond}
	b.ReportAllocs()
	for b.Loop() {
		tr.TraceQueryEnd(tr.TraceQueryStart(ctx, start), end)
	}
}

// BenchmarkSharedDBTracerSDK is the tracer's cost per read with the SDK recording.
func BenchmarkSharedDBTracerSDK(b *testing.B) {
	tp := sdktrace.NewTracerProvider() // sampling every span, exporting none
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))
	b.Cleanup(func() { _ = tp.Shutdown(context.Background()); _ = mp.Shutdown(context.Background()) })
	tel, err := telemetry.New(telemetry.WithTracerProvider(tp), telemetry.WithMeterProvider(mp))
	if err != nil {
		b.Fatal(err)
	}
	tr := tel.SharedDB().(shareddb.QueryTracer)
	ctx := context.Background()
	start := shareddb.TraceQueryStartData{Op: shareddb.OpQueryRow, SQL: "select 1", Node: "replica1", Addr: "127.0.0.1:5433", Role: shareddb.RoleReplica, Route: shareddb.RouteReplica, LagKnown: true}
	end := shareddb.TraceQueryEndData{Node: "replica1", Addr: "127.0.0.1:5433", Role: shareddb.RoleReplica, Route: shareddb.RouteReplica, Attempts: 1, Duration: time.Millisecond}
	b.ReportAllocs()
	for b.Loop() {
		tr.TraceQueryEnd(tr.TraceQueryStart(ctx, start), end)
	}
}
