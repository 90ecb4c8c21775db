package telemetry_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/go-integration/patterns/broker"
	"github.com/go-integration/patterns/broker/memory"
	"github.com/go-integration/patterns/broker/outbox"
	"github.com/go-integration/patterns/internal/testenv"
	"github.com/go-integration/patterns/telemetry"
)

// outboxObs is a Telemetry on the SDK with in-memory recorders.
type outboxObs struct {
	tel    *telemetry.Telemetry
	tp     *sdktrace.TracerProvider
	spans  *tracetest.SpanRecorder
	reader *sdkmetric.ManualReader
	logs   *outboxLogBuffer
}

// outboxLogBuffer is a bytes.Buffer safe for the concurrent writes of a
// logger.
type outboxLogBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *outboxLogBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *outboxLogBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func newOutboxObs(t testing.TB) *outboxObs {
	t.Helper()
	o := &outboxObs{spans: tracetest.NewSpanRecorder(), reader: sdkmetric.NewManualReader(), logs: &outboxLogBuffer{}}
	o.tp = sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.AlwaysSample()), sdktrace.WithSpanProcessor(o.spans))
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(o.reader))
	t.Cleanup(func() {
		_ = o.tp.Shutdown(context.Background())
		_ = mp.Shutdown(context.Background())
	})
	tel, err := telemetry.New(telemetry.WithTracerProvider(o.tp), telemetry.WithMeterProvider(mp),
		telemetry.WithLogger(slog.New(slog.NewTextHandler(o.logs, nil))))
	if err != nil {
		t.Fatal(err)
	}
	o.tel = tel
	return o
}

// ended returns the ended spans called name.
func (o *outboxObs) ended(name string) []sdktrace.ReadOnlySpan {
	var out []sdktrace.ReadOnlySpan
	for _, s := range o.spans.Ended() {
		if s.Name() == name {
			out = append(out, s)
		}
	}
	return out
}

// collect returns the metrics of the scope, by name.
func (o *outboxObs) collect(t testing.TB) map[string]metricdata.Metrics {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := o.reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	out := map[string]metricdata.Metrics{}
	for _, sm := range rm.ScopeMetrics {
		if sm.Scope.Name != telemetry.ScopeName {
			continue
		}
		for _, m := range sm.Metrics {
			out[m.Name] = m
		}
	}
	return out
}

// outboxAttrs renders an attribute set as "k=v,k=v" in key order.
func outboxAttrs(s attribute.Set) string {
	var parts []string
	for _, kv := range s.ToSlice() {
		parts = append(parts, string(kv.Key)+"="+kv.Value.String())
	}
	return strings.Join(parts, ",")
}

// outboxSums returns a counter's values by attribute set.
func outboxSums(t testing.TB, m metricdata.Metrics) map[string]int64 {
	t.Helper()
	sum, ok := m.Data.(metricdata.Sum[int64])
	if !ok {
		t.Fatalf("%s: %T, want an int64 sum", m.Name, m.Data)
	}
	out := map[string]int64{}
	for _, dp := range sum.DataPoints {
		out[outboxAttrs(dp.Attributes)] = dp.Value
	}
	return out
}

// outboxHist returns a histogram's data points by attribute set.
func outboxHist(t testing.TB, m metricdata.Metrics) map[string]metricdata.HistogramDataPoint[float64] {
	t.Helper()
	h, ok := m.Data.(metricdata.Histogram[float64])
	if !ok {
		t.Fatalf("%s: %T, want a float64 histogram", m.Name, m.Data)
	}
	out := map[string]metricdata.HistogramDataPoint[float64]{}
	for _, dp := range h.DataPoints {
		out[outboxAttrs(dp.Attributes)] = dp
	}
	return out
}

func outboxAttr(s sdktrace.ReadOnlySpan, key string) (attribute.Value, bool) {
	for _, kv := range s.Attributes() {
		if string(kv.Key) == key {
			return kv.Value, true
		}
	}
	return attribute.Value{}, false
}

// outboxDB is one test's schema with the default outbox table.
func outboxDB(t testing.TB) *pgxpool.Pool {
	t.Helper()
	_, dsn := testenv.Schema(t)
	pool, err := pgxpool.New(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	if err := outbox.Migrate(context.Background(), pool); err != nil {
		t.Fatal(err)
	}
	return pool
}

// outboxRun runs r until the test ends or stop is called.
func outboxRun(t testing.TB, r *outbox.Relay) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	stop = sync.OnceFunc(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	t.Cleanup(stop)
	return stop
}

// outboxAdd writes msgs through tbl in one committed transaction, in ctx.
func outboxAdd(t testing.TB, ctx context.Context, pool *pgxpool.Pool, tbl *outbox.Table, topic string, msgs ...broker.Message) {
	t.Helper()
	tx, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx.Rollback(ctx) }()
	if err := tbl.Add(ctx, tx, topic, msgs...); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
}

// outboxReceived is a message as a handler got it, with its context's span.
type outboxReceived struct {
	msg broker.Message
	sc  trace.SpanContext
}

// outboxSubscribe subscribes to topic on b and passes every message on.
func outboxSubscribe(t testing.TB, b *memory.Broker, topic string) <-chan outboxReceived {
	t.Helper()
	got := make(chan outboxReceived, 64)
	s := broker.Subscription{Topic: topic, Group: "g"}
	ctx, cancel := context.WithCancel(context.Background())
	if err := b.Provision(ctx, s); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		done <- b.Subscribe(ctx, s, func(ctx context.Context, m broker.Message) error {
			got <- outboxReceived{msg: m, sc: trace.SpanContextFromContext(ctx)}
			return nil
		})
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return got
}

func outboxReceive(t testing.TB, got <-chan outboxReceived) outboxReceived {
	t.Helper()
	select {
	case r := <-got:
		return r
	case <-time.After(30 * time.Second):
		t.Fatal("no message within 30s")
		return outboxReceived{}
	}
}

// One trace from the request that wrote the rows to the consumer's
// handler: request → create (Add) → send (the relay's publish, in the
// batch) → process → the handler's context.
func TestOutboxTraceFromAddToConsumer(t *testing.T) {
	t.Parallel()
	o := newOutboxObs(t)
	pool := outboxDB(t)
	tr := o.tel.Outbox()
	tbl, err := outbox.NewTable(outbox.DefaultTable, outbox.WithTracer(tr))
	if err != nil {
		t.Fatal(err)
	}
	mem, err := memory.New(memory.WithTracer(o.tel.Broker()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = mem.Close() })
	topic := testenv.Name(t, "orders")
	got := outboxSubscribe(t, mem, topic)

	// The request: a span around the business transaction. The caller's
	// header holds a stale trace context of its own, which the row must
	// not keep.
	own := map[string]string{"app": "x", "traceparent": "00-garbage", "tracestate": strings.Repeat("k=v,", 200)}
	msgs := []broker.Message{
		{Key: "a", Payload: []byte("1"), Header: own},
		{Key: "b", Payload: []byte("2")},
	}
	ctx, req := o.tp.Tracer("test").Start(context.Background(), "POST /orders")
	outboxAdd(t, ctx, pool, tbl, topic, msgs...)
	req.End()
	reqSC := req.SpanContext()

	// The caller's messages keep their headers.
	if own["traceparent"] != "00-garbage" || len(own) != 3 || msgs[1].Header != nil {
		t.Errorf("the caller's headers changed: %v, %v", own, msgs[1].Header)
	}

	// The create span: a Producer child of the request, covering the insert.
	creates := o.ended("create " + topic)
	if len(creates) != 1 {
		t.Fatalf("%d create spans, want 1", len(creates))
	}
	create := creates[0]
	if create.SpanKind() != trace.SpanKindProducer || create.Parent().SpanID() != reqSC.SpanID() || create.SpanContext().TraceID() != reqSC.TraceID() {
		t.Errorf("create span: kind %v parent %v trace %v; want Producer, child of %v", create.SpanKind(), create.Parent(), create.SpanContext().TraceID(), reqSC)
	}
	for key, want := range map[string]string{
		"messaging.destination.name":    topic,
		"messaging.operation.type":      "create",
		"messaging.operation.name":      "create",
		"messaging.batch.message_count": "2",
		"patterns.outbox.table":         "outbox",
	} {
		if v, ok := outboxAttr(create, key); !ok || v.String() != want {
			t.Errorf("create span %s = %q, want %q", key, v.String(), want)
		}
	}
	if create.Status().Code != codes.Unset {
		t.Errorf("create span status %v", create.Status())
	}

	// The rows carry the create span's context, and only it.
	wantTP := fmt.Sprintf("00-%s-%s-01", create.SpanContext().TraceID(), create.SpanContext().SpanID())
	for _, m := range msgs {
		var h map[string]string
		if err := pool.QueryRow(context.Background(), `select header from outbox where id = $1`, m.ID).Scan(&h); err != nil {
			t.Fatal(err)
		}
		if h["traceparent"] != wantTP {
			t.Errorf("row %s traceparent %q, want %q", m.ID, h["traceparent"], wantTP)
		}
		if _, ok := h["tracestate"]; ok {
			t.Errorf("row %s kept the caller's tracestate", m.ID)
		}
		if m.Key == "a" && h["app"] != "x" {
			t.Errorf("row %s lost the caller's header: %v", m.ID, h)
		}
	}

	// The relay publishes; the consumer's handler is in the request's trace.
	r, err := outbox.NewRelay(pool, mem, outbox.WithTracer(tr), outbox.WithPollInterval(10*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	stop := outboxRun(t, r)
	for range 2 {
		rc := outboxReceive(t, got)
		if rc.sc.TraceID() != reqSC.TraceID() {
			t.Errorf("handler of %s runs in trace %v, want the request's %v", rc.msg.ID, rc.sc.TraceID(), reqSC.TraceID())
		}
	}
	testenv.Eventually(t, 10*time.Second, "two process spans and a batch span ended", func() bool {
		return len(o.ended("process "+topic)) == 2 && len(o.ended("outbox relay batch")) == 1
	})
	stop()

	batch := o.ended("outbox relay batch")[0]
	if batch.SpanKind() != trace.SpanKindInternal {
		t.Errorf("batch span kind %v", batch.SpanKind())
	}
	for key, want := range map[string]string{
		"patterns.outbox.table":     "outbox",
		"patterns.outbox.worker":    "0",
		"patterns.outbox.rows":      "2",
		"patterns.outbox.published": "2",
		"patterns.outbox.set_aside": "0",
		"patterns.outbox.failed":    "0",
	} {
		if v, ok := outboxAttr(batch, key); !ok || v.String() != want {
			t.Errorf("batch span %s = %q, want %q", key, v.String(), want)
		}
	}
	if v, ok := outboxAttr(batch, "patterns.outbox.buckets"); !ok || len(v.AsInt64Slice()) == 0 {
		t.Errorf("batch span buckets %v", v.String())
	}
	if v, ok := outboxAttr(batch, "patterns.outbox.lag"); !ok || v.AsFloat64() <= 0 {
		t.Errorf("batch span lag %v", v.String())
	}

	// The publish call's span is a child of the batch span; each message
	// has a send span of its own, a child of its create span, and the
	// consumer's process span is a child of that send span: one trace from
	// the request to the handler.
	msgSends := map[trace.SpanID]bool{}
	calls := 0
	for _, s := range o.ended("send " + topic) {
		switch s.Parent().SpanID() {
		case create.SpanContext().SpanID():
			msgSends[s.SpanContext().SpanID()] = true
			if s.SpanContext().TraceID() != reqSC.TraceID() || s.SpanKind() != trace.SpanKindProducer {
				t.Errorf("message send span: trace %v kind %v", s.SpanContext().TraceID(), s.SpanKind())
			}
		case batch.SpanContext().SpanID():
			calls++
		default:
			t.Errorf("send span with parent %v: neither the create span nor the batch span", s.Parent().SpanID())
		}
	}
	if len(msgSends) != 2 || calls != 1 {
		t.Errorf("%d message send spans (want 2, children of the create span) and %d call spans (want 1, child of the batch)", len(msgSends), calls)
	}
	for _, p := range o.ended("process " + topic) {
		if p.SpanContext().TraceID() != reqSC.TraceID() || !msgSends[p.Parent().SpanID()] {
			t.Errorf("process span in trace %v with parent %v, want the request's trace %v under a message's send span",
				p.SpanContext().TraceID(), p.Parent().SpanID(), reqSC.TraceID())
		}
	}
}

// refusingPublisher fails its first Publish call as not confirmed, and
// refuses as invalid any call holding a message whose header has "bad".
type refusingPublisher struct {
	broker.Publisher
	calls atomic.Int64
}

var errOutboxBrokerDown = errors.New("test: broker down")

func (p *refusingPublisher) Publish(ctx context.Context, topic string, msgs ...broker.Message) error {
	if p.calls.Add(1) == 1 {
		return fmt.Errorf("%w: %w", broker.ErrNotConfirmed, errOutboxBrokerDown)
	}
	for _, m := range msgs {
		if m.Header["bad"] != "" {
			return fmt.Errorf("%w: test: %s refused", broker.ErrInvalidMessage, m.ID)
		}
	}
	return p.Publisher.Publish(ctx, topic, msgs...)
}

// A scripted relay run: five rows, the first publish fails (a failed
// batch, a backoff), then four are published and one is set aside. The
// spans and metrics say exactly that.
func TestOutboxRelayBatchSpansAndMetrics(t *testing.T) {
	t.Parallel()
	o := newOutboxObs(t)
	pool := outboxDB(t)
	mem := memory.MustNew()
	t.Cleanup(func() { _ = mem.Close() })
	topic := testenv.Name(t, "orders")
	got := outboxSubscribe(t, mem, topic)

	msgs := make([]broker.Message, 5)
	for i := range msgs {
		msgs[i] = broker.Message{Key: fmt.Sprint("k", i), Payload: []byte{byte('0' + i)}}
	}
	msgs[2].Header = map[string]string{"bad": "yes"}
	if err := outbox.Add(context.Background(), pool, topic, msgs...); err != nil {
		t.Fatal(err)
	}

	pub := &refusingPublisher{Publisher: mem}
	r, err := outbox.NewRelay(pool, pub, outbox.WithTracer(o.tel.Outbox()), outbox.WithPollInterval(10*time.Millisecond),
		outbox.WithBackoff(time.Millisecond, time.Millisecond), outbox.WithoutListen())
	if err != nil {
		t.Fatal(err)
	}
	stop := outboxRun(t, r)
	for range 4 {
		outboxReceive(t, got)
	}
	testenv.Eventually(t, 10*time.Second, "4 published and 1 set aside", func() bool {
		s := r.Stats()
		return s.Published == 4 && s.SetAside == 1
	})
	stop()

	// Spans: the failed batch, then the one that published.
	batches := o.ended("outbox relay batch")
	if len(batches) != 2 {
		t.Fatalf("%d batch spans, want 2", len(batches))
	}
	failed, ok := batches[0], batches[1]
	if failed.Status().Code != codes.Error || !strings.Contains(failed.Status().Description, "broker down") {
		t.Errorf("failed batch status %v", failed.Status())
	}
	if v, _ := outboxAttr(failed, "error.type"); v.String() != "not_confirmed" {
		t.Errorf("failed batch error.type %q", v.String())
	}
	if n := len(failed.Events()); n != 1 || failed.Events()[0].Name != "exception" {
		t.Errorf("failed batch events %v, want one exception", failed.Events())
	}
	if ok.Status().Code != codes.Unset {
		t.Errorf("second batch status %v", ok.Status())
	}
	for span, want := range map[sdktrace.ReadOnlySpan]map[string]string{
		failed: {"patterns.outbox.rows": "5", "patterns.outbox.published": "0", "patterns.outbox.set_aside": "0", "patterns.outbox.failed": "5"},
		ok:     {"patterns.outbox.rows": "5", "patterns.outbox.published": "4", "patterns.outbox.set_aside": "1", "patterns.outbox.failed": "0"},
	} {
		for key, w := range want {
			if v, _ := outboxAttr(span, key); v.String() != w {
				t.Errorf("batch %v: %s = %q, want %q", span.SpanContext().SpanID(), key, v.String(), w)
			}
		}
	}
	// Batch spans are roots (Run's context has no span).
	for _, b := range batches {
		if b.Parent().IsValid() {
			t.Errorf("batch span has parent %v", b.Parent())
		}
	}

	// Metrics.
	ms := o.collect(t)
	const table = "patterns.outbox.table=outbox"
	wantSums := map[string]int64{
		"patterns.outbox.outcome=ok," + table:        4,
		"patterns.outbox.outcome=set_aside," + table: 1,
		"patterns.outbox.outcome=failed," + table:    5,
	}
	if got := outboxSums(t, ms["patterns.outbox.published"]); fmt.Sprint(got) != fmt.Sprint(wantSums) {
		t.Errorf("patterns.outbox.published = %v, want %v", got, wantSums)
	}
	backoffs := map[string]int64{"error.type=not_confirmed,patterns.outbox.cause=batch," + table: 1}
	if got := outboxSums(t, ms["patterns.outbox.backoffs"]); fmt.Sprint(got) != fmt.Sprint(backoffs) {
		t.Errorf("patterns.outbox.backoffs = %v, want %v", got, backoffs)
	}
	dur := outboxHist(t, ms["patterns.outbox.batch.duration"])
	if len(dur) != 2 || dur[table].Count != 1 || dur["error.type=not_confirmed,"+table].Count != 1 {
		t.Errorf("patterns.outbox.batch.duration = %v, want one ok and one failed batch", dur)
	}
	lag := outboxHist(t, ms["patterns.outbox.batch.lag"])
	if len(lag) != 1 || lag[table].Count != 1 || lag[table].Sum <= 0 {
		t.Errorf("patterns.outbox.batch.lag = %v, want one batch", lag)
	}
	if ms["patterns.outbox.batch.duration"].Unit != "s" || ms["patterns.outbox.batch.lag"].Unit != "s" || ms["patterns.outbox.published"].Unit != "{message}" {
		t.Error("units")
	}
}

// The backlog gauges read the table at collection time: pending rows and
// the age of the oldest; after stop, nothing.
func TestOutboxBacklogGauges(t *testing.T) {
	t.Parallel()
	o := newOutboxObs(t)
	pool := outboxDB(t)
	mem := memory.MustNew()
	t.Cleanup(func() { _ = mem.Close() })
	ctx := context.Background()

	r, err := outbox.NewRelay(pool, mem) // never run: rows stay pending
	if err != nil {
		t.Fatal(err)
	}
	stop, err := o.tel.ObserveBacklog(r)
	if err != nil {
		t.Fatal(err)
	}
	// Empty table: zero and zero.
	ms := o.collect(t)
	outboxGauges(t, ms, 0, 0, 0)

	msgs := []broker.Message{{Key: "a"}, {Key: "b"}, {Key: "c"}}
	if err := outbox.Add(ctx, pool, "orders", msgs...); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `update outbox set created_at = now() - interval '90 seconds' where id = $1`, msgs[0].ID); err != nil {
		t.Fatal(err)
	}
	ms = o.collect(t)
	outboxGauges(t, ms, 3, 90, 100)

	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if err := stop(); err != nil {
		t.Errorf("second stop: %v", err)
	}
	ms = o.collect(t)
	if m, ok := ms["patterns.outbox.pending"]; ok && len(m.Data.(metricdata.Gauge[int64]).DataPoints) > 0 {
		t.Errorf("pending reported after stop: %v", m.Data)
	}
}

// outboxGauges checks the backlog gauges: pending rows, and an oldest age
// within [minAge, maxAge] seconds.
func outboxGauges(t testing.TB, ms map[string]metricdata.Metrics, pending int64, minAge, maxAge float64) {
	t.Helper()
	p, ok := ms["patterns.outbox.pending"].Data.(metricdata.Gauge[int64])
	if !ok || len(p.DataPoints) != 1 {
		t.Fatalf("patterns.outbox.pending = %v", ms["patterns.outbox.pending"].Data)
	}
	if dp := p.DataPoints[0]; dp.Value != pending || outboxAttrs(dp.Attributes) != "patterns.outbox.table=outbox" {
		t.Errorf("pending = %d %s, want %d on table outbox", dp.Value, outboxAttrs(dp.Attributes), pending)
	}
	a, ok := ms["patterns.outbox.oldest_pending.age"].Data.(metricdata.Gauge[float64])
	if !ok || len(a.DataPoints) != 1 {
		t.Fatalf("patterns.outbox.oldest_pending.age = %v", ms["patterns.outbox.oldest_pending.age"].Data)
	}
	if v := a.DataPoints[0].Value; v < minAge || v > maxAge {
		t.Errorf("oldest pending age = %v s, want %v to %v", v, minAge, maxAge)
	}
	if ms["patterns.outbox.pending"].Unit != "{row}" || ms["patterns.outbox.oldest_pending.age"].Unit != "s" {
		t.Error("units")
	}
}

// A backlog that cannot be read (a missing table) or a closed relay
// reports nothing, without failing the collection; a failure is logged.
func TestOutboxBacklogFailures(t *testing.T) {
	t.Parallel()
	o := newOutboxObs(t)
	pool := outboxDB(t)
	mem := memory.MustNew()
	t.Cleanup(func() { _ = mem.Close() })

	if _, err := o.tel.ObserveBacklog(nil); !errors.Is(err, telemetry.ErrInvalidOption) {
		t.Errorf("ObserveBacklog(nil) = %v, want ErrInvalidOption", err)
	}
	missing, err := outbox.NewRelay(pool, mem, outbox.WithTable("missing"))
	if err != nil {
		t.Fatal(err)
	}
	closed, err := outbox.NewRelay(pool, mem)
	if err != nil {
		t.Fatal(err)
	}
	_ = closed.Close()
	for _, r := range []*outbox.Relay{missing, closed} {
		stop, err := o.tel.ObserveBacklog(r)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = stop() }()
	}
	ms := o.collect(t)
	if m, ok := ms["patterns.outbox.pending"]; ok && len(m.Data.(metricdata.Gauge[int64]).DataPoints) > 0 {
		t.Errorf("pending reported: %v", m.Data)
	}
	if logs := o.logs.String(); strings.Count(logs, "outbox backlog not observed") != 1 || !strings.Contains(logs, "missing") {
		t.Errorf("logs: %q, want one warning about the missing table", logs)
	}
}

// The tracer's value goes to NewTable and NewRelay alike; a Table without
// it stores the headers as given.
func TestOutboxTracerOptions(t *testing.T) {
	t.Parallel()
	o := newOutboxObs(t)
	pool := outboxDB(t)
	mem := memory.MustNew()
	t.Cleanup(func() { _ = mem.Close() })
	if _, err := outbox.NewTable("outbox", outbox.WithTracer(o.tel.Outbox())); err != nil {
		t.Errorf("NewTable: %v", err)
	}
	if _, err := outbox.NewRelay(pool, mem, outbox.WithTracer(o.tel.Outbox())); err != nil {
		t.Errorf("NewRelay: %v", err)
	}
	// The broker tracer is not an outbox tracer.
	if _, err := outbox.NewTable("outbox", outbox.WithTracer(o.tel.Broker())); !errors.Is(err, outbox.ErrInvalidOption) {
		t.Errorf("NewTable with the broker tracer: %v", err)
	}
	if _, err := outbox.NewRelay(pool, mem, outbox.WithTracer(o.tel.Broker())); !errors.Is(err, outbox.ErrInvalidOption) {
		t.Errorf("NewRelay with the broker tracer: %v", err)
	}

	// The package-level Add, in a traced request, stores no trace context.
	ctx, span := o.tp.Tracer("test").Start(context.Background(), "request")
	defer span.End()
	m := []broker.Message{{Key: "a"}}
	if err := outbox.Add(ctx, pool, "orders", m...); err != nil {
		t.Fatal(err)
	}
	var null bool
	if err := pool.QueryRow(ctx, `select header is null from outbox where id = $1`, m[0].ID).Scan(&null); err != nil || !null {
		t.Errorf("untraced Add stored a header (null %v, %v)", null, err)
	}
	if n := len(o.ended("create orders")); n != 0 {
		t.Errorf("%d create spans from an untraced Add", n)
	}
}

// A failed insert ends the create span with an error status (the
// SQLSTATE as error.type).
func TestOutboxAddErrorSpan(t *testing.T) {
	t.Parallel()
	o := newOutboxObs(t)
	pool := outboxDB(t)
	tbl, err := outbox.NewTable("missing", outbox.WithTracer(o.tel.Outbox()))
	if err != nil {
		t.Fatal(err)
	}
	if err := tbl.Add(context.Background(), pool, "orders", broker.Message{Key: "a"}); err == nil {
		t.Fatal("Add to a missing table succeeded")
	}
	spans := o.ended("create orders")
	if len(spans) != 1 {
		t.Fatalf("%d create spans", len(spans))
	}
	s := spans[0]
	if s.Status().Code != codes.Error {
		t.Errorf("status %v", s.Status())
	}
	if v, _ := outboxAttr(s, "error.type"); v.String() != "42P01" { // undefined_table
		t.Errorf("error.type %q, want 42P01", v.String())
	}
	if v, _ := outboxAttr(s, "messaging.message.id"); v.String() == "" {
		t.Error("a one-message create span has no messaging.message.id")
	}
	if s.Parent().IsValid() {
		t.Errorf("create span without a caller's span has parent %v", s.Parent())
	}
}

// With no provider (the OpenTelemetry no-op defaults) and no span in the
// caller's context, a traced Add stores the headers as given and costs a
// few allocations; with a remote parent in the context (an incoming
// request's), the rows carry it.
func TestOutboxAddWithoutProvider(t *testing.T) {
	tel, err := telemetry.New() // the global no-op providers
	if err != nil {
		t.Fatal(err)
	}
	traced, err := outbox.NewTable("outbox", outbox.WithTracer(tel.Outbox()))
	if err != nil {
		t.Fatal(err)
	}
	plain, err := outbox.NewTable("outbox")
	if err != nil {
		t.Fatal(err)
	}
	var seen map[string]string
	exec := outboxExec(func(args []any) { seen = outboxStoredHeader(args) })
	ctx := context.Background()
	msgs := []broker.Message{{ID: "1", Key: "a", Time: time.Now(), Header: map[string]string{"h": "v"}}}
	if err := traced.Add(ctx, exec, "orders", msgs...); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(seen) != "map[h:v]" {
		t.Errorf("stored header %v, want map[h:v]", seen)
	}
	noop := func() { _ = plain.Add(ctx, outboxExec(nil), "orders", msgs...) }
	withTel := func() { _ = traced.Add(ctx, outboxExec(nil), "orders", msgs...) }
	base, cost := testing.AllocsPerRun(200, noop), testing.AllocsPerRun(200, withTel)
	t.Logf("allocations per Add of one message: no tracer %v, telemetry without provider %v", base, cost)
	// The copies of the messages and their headers (outbox), the no-op
	// span in the context (OpenTelemetry's global tracer): against the
	// insert's own allocations and a database round trip, nothing.
	if cost-base > 8 {
		t.Errorf("telemetry without a provider costs %v allocations per Add, want at most 8", cost-base)
	}

	// A remote parent (as otelhttp extracts from a request) is carried.
	sc := trace.NewSpanContext(trace.SpanContextConfig{TraceID: trace.TraceID{1}, SpanID: trace.SpanID{2}, TraceFlags: trace.FlagsSampled, Remote: true})
	if err := traced.Add(trace.ContextWithRemoteSpanContext(ctx, sc), exec, "orders", msgs...); err != nil {
		t.Fatal(err)
	}
	if want := "00-01000000000000000000000000000000-0200000000000000-01"; seen["traceparent"] != want {
		t.Errorf("stored traceparent %q, want %q", seen["traceparent"], want)
	}
}

// outboxExec is an outbox.Execer that hands the insert's arguments to f.
type outboxExec func(args []any)

func (f outboxExec) Exec(_ context.Context, _ string, args ...any) (pgconn.CommandTag, error) {
	if f != nil {
		f(args)
	}
	return pgconn.CommandTag{}, nil
}

// outboxStoredHeader decodes the header of the first row of an insert.
func outboxStoredHeader(args []any) map[string]string {
	hs := args[4].([]*string)
	if hs[0] == nil {
		return nil
	}
	var h map[string]string
	if err := json.Unmarshal([]byte(*hs[0]), &h); err != nil {
		panic(err)
	}
	return h
}
