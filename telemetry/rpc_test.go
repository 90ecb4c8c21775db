package telemetry_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/go-integration/patterns/rpc"
	"github.com/go-integration/patterns/telemetry"
)

// rwRig is a Telemetry on the SDK with an in-memory span recorder and a
// manual metric reader (shared by the rpc, amqprpc and webhook tests).
type rwRig struct {
	tel    *telemetry.Telemetry
	tp     *sdktrace.TracerProvider
	spans  *tracetest.SpanRecorder
	reader *sdkmetric.ManualReader
	prop   propagation.TextMapPropagator
}

func newRWRig(t *testing.T) *rwRig {
	t.Helper()
	r := &rwRig{spans: tracetest.NewSpanRecorder(), reader: sdkmetric.NewManualReader(),
		prop: propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})}
	r.tp = sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(r.spans), sdktrace.WithSampler(sdktrace.AlwaysSample()))
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(r.reader))
	t.Cleanup(func() {
		_ = r.tp.Shutdown(context.Background())
		_ = mp.Shutdown(context.Background())
	})
	tel, err := telemetry.New(telemetry.WithTracerProvider(r.tp), telemetry.WithMeterProvider(mp), telemetry.WithPropagator(r.prop))
	if err != nil {
		t.Fatal(err)
	}
	r.tel = tel
	return r
}

// named returns the ended spans called name, in the order they ended.
func (r *rwRig) named(name string) []sdktrace.ReadOnlySpan {
	var out []sdktrace.ReadOnlySpan
	for _, s := range r.spans.Ended() {
		if s.Name() == name {
			out = append(out, s)
		}
	}
	return out
}

func (r *rwRig) collect(t *testing.T) metricdata.ResourceMetrics {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := r.reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	return rm
}

// rwSum is the value of the counter name for exactly the attributes attrs
// (0 when absent).
func rwSum(t *testing.T, rm metricdata.ResourceMetrics, name string, attrs ...attribute.KeyValue) int64 {
	t.Helper()
	m, ok := findMetric(rm, name)
	if !ok {
		return 0
	}
	sum, ok := m.Data.(metricdata.Sum[int64])
	if !ok {
		t.Fatalf("%s is a %T, not an int64 sum", name, m.Data)
	}
	want := attribute.NewSet(attrs...)
	for _, dp := range sum.DataPoints {
		if dp.Attributes.Equals(&want) {
			return dp.Value
		}
	}
	return 0
}

// rwTotal is the sum of the counter name over all its attributes.
func rwTotal(t *testing.T, rm metricdata.ResourceMetrics, name string) int64 {
	t.Helper()
	m, ok := findMetric(rm, name)
	if !ok {
		return 0
	}
	var n int64
	for _, dp := range m.Data.(metricdata.Sum[int64]).DataPoints {
		n += dp.Value
	}
	return n
}

// rwHist is the count of the histogram name for exactly attrs, and the
// total count over all attributes.
func rwHist(t *testing.T, rm metricdata.ResourceMetrics, name string, attrs ...attribute.KeyValue) (count, total uint64) {
	t.Helper()
	m, ok := findMetric(rm, name)
	if !ok {
		return 0, 0
	}
	h, ok := m.Data.(metricdata.Histogram[float64])
	if !ok {
		t.Fatalf("%s is a %T, not a float64 histogram", name, m.Data)
	}
	want := attribute.NewSet(attrs...)
	for _, dp := range h.DataPoints {
		total += dp.Count
		if dp.Attributes.Equals(&want) {
			count = dp.Count
		}
	}
	return count, total
}

func rwAttr(s sdktrace.ReadOnlySpan, key attribute.Key) (attribute.Value, bool) {
	for _, kv := range s.Attributes() {
		if kv.Key == key {
			return kv.Value, true
		}
	}
	return attribute.Value{}, false
}

func rwWantAttr(t *testing.T, s sdktrace.ReadOnlySpan, key attribute.Key, want any) {
	t.Helper()
	v, ok := rwAttr(s, key)
	if !ok {
		t.Errorf("span %s: no attribute %s (want %v)", s.Name(), key, want)
		return
	}
	if got := v.AsInterface(); got != want {
		t.Errorf("span %s: %s = %v (%T), want %v (%T)", s.Name(), key, got, got, want, want)
	}
}

func rwNoAttr(t *testing.T, s sdktrace.ReadOnlySpan, key attribute.Key) {
	t.Helper()
	if v, ok := rwAttr(s, key); ok {
		t.Errorf("span %s: unexpected %s = %v", s.Name(), key, v.String())
	}
}

func rwEvent(s sdktrace.ReadOnlySpan, name string) (sdktrace.Event, bool) {
	for _, e := range s.Events() {
		if e.Name == name {
			return e, true
		}
	}
	return sdktrace.Event{}, false
}

func rwEventAttr(e sdktrace.Event, key attribute.Key) string {
	for _, kv := range e.Attributes {
		if kv.Key == key {
			return kv.Value.String()
		}
	}
	return ""
}

// rwPort is the port srv listens on.
func rwPort(srv *httptest.Server) int64 { return int64(srv.Listener.Addr().(*net.TCPAddr).Port) }

func fastBackoff() rpc.TransportOption {
	return rpc.WithBackoff(rpc.BackoffFunc(func(int) time.Duration { return time.Millisecond }))
}

// Each attempt is a client span under the caller's span; the retry carries
// http.request.resend_count; the server receives each attempt's own
// traceparent, so what it does continues the caller's trace; the metrics
// count both attempts and the retry exactly.
func TestRPCAttemptSpansRetryAndPropagation(t *testing.T) {
	rig := newRWRig(t)
	var mu sync.Mutex
	var got []trace.SpanContext // what the server extracted, per request
	var calls int
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sc := trace.SpanContextFromContext(rig.prop.Extract(r.Context(), propagation.HeaderCarrier(r.Header)))
		mu.Lock()
		got = append(got, sc)
		calls++
		n := calls
		mu.Unlock()
		if n == 1 {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		io.WriteString(w, "ok")
	}))
	defer srv.Close()

	c, err := rpc.NewClient(rpc.WithTracer(rig.tel.RPC()), fastBackoff())
	if err != nil {
		t.Fatal(err)
	}
	ctx, parent := rig.tp.Tracer("test").Start(context.Background(), "caller")
	u := strings.Replace(srv.URL, "http://", "http://user:secret@", 1) + "/orders?sig=abc&page=2"
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	parent.End()
	if req.Header.Get("traceparent") != "" {
		t.Fatal("the caller's request was changed")
	}

	spans := rig.named("GET")
	if len(spans) != 2 {
		t.Fatalf("%d GET spans, want 2", len(spans))
	}
	for i, s := range spans {
		if s.SpanKind() != trace.SpanKindClient {
			t.Errorf("span %d kind %v", i, s.SpanKind())
		}
		if s.Parent().SpanID() != parent.SpanContext().SpanID() || s.SpanContext().TraceID() != parent.SpanContext().TraceID() {
			t.Errorf("span %d is not a child of the caller's span", i)
		}
		if got[i].TraceID() != parent.SpanContext().TraceID() || got[i].SpanID() != s.SpanContext().SpanID() || !got[i].IsRemote() {
			t.Errorf("server saw %v on request %d, want the attempt's span %v", got[i], i, s.SpanContext())
		}
		rwWantAttr(t, s, "http.request.method", "GET")
		rwWantAttr(t, s, "server.address", "127.0.0.1")
		v, _ := rwAttr(s, "url.full")
		if full := v.AsString(); !strings.Contains(full, "REDACTED:REDACTED@") || strings.Contains(full, "secret") ||
			!strings.Contains(full, "sig=REDACTED") || !strings.Contains(full, "page=2") {
			t.Errorf("url.full = %q", full)
		}
	}
	first, second := spans[0], spans[1]
	rwWantAttr(t, first, "http.response.status_code", int64(503))
	rwWantAttr(t, first, "error.type", "503")
	rwNoAttr(t, first, "http.request.resend_count")
	if first.Status().Code != codes.Error {
		t.Errorf("503 attempt status %v", first.Status())
	}
	rwWantAttr(t, second, "http.response.status_code", int64(200))
	rwWantAttr(t, second, "http.request.resend_count", int64(1))
	rwNoAttr(t, second, "error.type")
	if second.Status().Code != codes.Unset {
		t.Errorf("200 attempt status %v", second.Status())
	}

	rm := rig.collect(t)
	port := rwPort(srv)
	base := []attribute.KeyValue{attribute.String("http.request.method", "GET"), attribute.String("server.address", "127.0.0.1"),
		attribute.Int64("server.port", port), attribute.String("url.scheme", "http")}
	if n, total := rwHist(t, rm, "http.client.request.duration", append(base, attribute.Int("http.response.status_code", 503), attribute.String("error.type", "503"))...); n != 1 || total != 2 {
		t.Errorf("duration count for 503 = %d (total %d), want 1 (2)", n, total)
	}
	if n, _ := rwHist(t, rm, "http.client.request.duration", append(base, attribute.Int("http.response.status_code", 200))...); n != 1 {
		t.Errorf("duration count for 200 = %d, want 1", n)
	}
	if n := rwSum(t, rm, "patterns.rpc.retries", base[:3]...); n != 1 {
		t.Errorf("retries = %d, want 1", n)
	}
	if n := rwTotal(t, rm, "patterns.rpc.give_ups"); n != 0 {
		t.Errorf("give_ups = %d, want 0", n)
	}
}

// A retryable failure that runs out of attempts is counted with its reason
// and every attempt is an Error span; a transport error has an error.type.
func TestRPCGiveUpAndTransportError(t *testing.T) {
	rig := newRWRig(t)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusBadGateway)
	}))
	defer srv.Close()
	c, err := rpc.NewClient(rpc.WithTracer(rig.tel.RPC()), fastBackoff(), rpc.WithMaxAttempts(2), rpc.WithoutBreaker())
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadGateway {
		t.Fatalf("status %d", resp.StatusCode)
	}
	spans := rig.named("GET")
	if len(spans) != 2 {
		t.Fatalf("%d spans", len(spans))
	}
	rwWantAttr(t, spans[1], "patterns.rpc.give_up.reason", "max_attempts")
	rwNoAttr(t, spans[0], "patterns.rpc.give_up.reason")

	// A refused connection: a transport error, not retried (POST without a key).
	dead := httptest.NewServer(http.NotFoundHandler())
	deadURL := dead.URL
	dead.Close()
	if _, err := c.Post(deadURL, "text/plain", strings.NewReader("x")); err == nil {
		t.Fatal("POST to a closed server succeeded")
	}
	post := rig.named("POST")
	if len(post) != 1 || post[0].Status().Code != codes.Error || len(post[0].Events()) == 0 {
		t.Fatalf("POST spans %v", post)
	}
	if v, ok := rwAttr(post[0], "error.type"); !ok || v.AsString() == "" || v.AsString() == "_OTHER" {
		t.Errorf("error.type of a refused connection = %q", v.String())
	}

	rm := rig.collect(t)
	if n := rwSum(t, rm, "patterns.rpc.give_ups", attribute.String("http.request.method", "GET"), attribute.String("server.address", "127.0.0.1"),
		attribute.Int64("server.port", rwPort(srv)),
		attribute.String("patterns.rpc.give_up.reason", "max_attempts")); n != 1 {
		t.Errorf("give_ups{max_attempts} = %d, want 1", n)
	}
	if n := rwTotal(t, rm, "patterns.rpc.retries"); n != 1 {
		t.Errorf("retries = %d, want 1", n)
	}
	if _, total := rwHist(t, rm, "http.client.request.duration"); total != 3 {
		t.Errorf("durations recorded %d, want 3", total)
	}
}

// The breaker opening is an event on the attempt that opened it and a
// counter; a refused attempt is an Error span with error.type circuit_open
// and no duration (nothing was sent).
func TestRPCBreakerChange(t *testing.T) {
	rig := newRWRig(t)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusInternalServerError)
	}))
	defer srv.Close()
	c, err := rpc.NewClient(rpc.WithTracer(rig.tel.RPC()), rpc.WithMaxAttempts(1),
		rpc.WithBreaker(rpc.BreakerConfig{Failures: 2, OpenFor: time.Hour}))
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		resp, err := c.Get(srv.URL)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	if _, err := c.Get(srv.URL); !errors.Is(err, rpc.ErrCircuitOpen) {
		t.Fatalf("third call err = %v, want ErrCircuitOpen", err)
	}
	spans := rig.named("GET")
	if len(spans) != 3 {
		t.Fatalf("%d spans", len(spans))
	}
	if _, ok := rwEvent(spans[0], "rpc.breaker.change"); ok {
		t.Error("first failure changed the breaker")
	}
	e, ok := rwEvent(spans[1], "rpc.breaker.change")
	if !ok || rwEventAttr(e, "patterns.rpc.breaker.from") != "closed" || rwEventAttr(e, "patterns.rpc.breaker.to") != "open" {
		t.Fatalf("second attempt's events %v", spans[1].Events())
	}
	rwWantAttr(t, spans[2], "error.type", "circuit_open")
	rwWantAttr(t, spans[2], "patterns.rpc.give_up.reason", "circuit_open")
	if spans[2].Status().Code != codes.Error {
		t.Error("refused attempt not an error")
	}

	rm := rig.collect(t)
	port := rwPort(srv)
	if n := rwSum(t, rm, "patterns.rpc.breaker.changes", attribute.String("server.address", "127.0.0.1"), attribute.Int64("server.port", port),
		attribute.String("patterns.rpc.breaker.from", "closed"), attribute.String("patterns.rpc.breaker.to", "open")); n != 1 {
		t.Errorf("breaker changes closed→open = %d, want 1", n)
	}
	if n := rwTotal(t, rm, "patterns.rpc.breaker.changes"); n != 1 {
		t.Errorf("breaker changes = %d, want 1", n)
	}
	if _, total := rwHist(t, rm, "http.client.request.duration"); total != 2 {
		t.Errorf("durations recorded %d, want 2 (the refusal sent nothing)", total)
	}
}

// The Idempotency middleware's outcomes are counted and are events on the
// request's span.
func TestRPCIdempotencyCounters(t *testing.T) {
	rig := newRWRig(t)
	mw, err := rpc.Idempotency(rpc.NewMemoryStore(), rpc.WithTracer(rig.tel.RPC()))
	if err != nil {
		t.Fatal(err)
	}
	h := mw(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusCreated)
		io.WriteString(w, "created")
	}))
	// A stand-in for an HTTP server middleware: a server span per request.
	tracer := rig.tp.Tracer("test")
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, span := tracer.Start(r.Context(), "server", trace.WithSpanKind(trace.SpanKindServer))
		defer span.End()
		h.ServeHTTP(w, r.WithContext(ctx))
	}))
	defer srv.Close()
	post := func(key, body string) int {
		req, _ := http.NewRequest(http.MethodPost, srv.URL, bytes.NewBufferString(body))
		req.Header.Set(rpc.HeaderIdempotencyKey, key)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	key := rpc.NewIdempotencyKey()
	if s := post(key, "a"); s != http.StatusCreated {
		t.Fatalf("first %d", s)
	}
	if s := post(key, "a"); s != http.StatusCreated {
		t.Fatalf("replay %d", s)
	}
	if s := post(key, "a"); s != http.StatusCreated {
		t.Fatalf("replay %d", s)
	}
	if s := post(key, "b"); s != http.StatusUnprocessableEntity {
		t.Fatalf("mismatch %d", s)
	}

	rm := rig.collect(t)
	for outcome, want := range map[string]int64{"stored": 1, "replayed": 2, "mismatch": 1} {
		if n := rwSum(t, rm, "patterns.rpc.idempotency", attribute.String("patterns.rpc.idempotency.outcome", outcome)); n != want {
			t.Errorf("idempotency{%s} = %d, want %d", outcome, n, want)
		}
	}
	if n := rwTotal(t, rm, "patterns.rpc.idempotency"); n != 4 {
		t.Errorf("idempotency total = %d, want 4", n)
	}
	spans := rig.named("server")
	if len(spans) != 4 {
		t.Fatalf("%d server spans", len(spans))
	}
	for i, want := range []string{"stored", "replayed", "replayed", "mismatch"} {
		e, ok := rwEvent(spans[i], "rpc.idempotency")
		if !ok || rwEventAttr(e, "patterns.rpc.idempotency.outcome") != want {
			t.Errorf("request %d events %v, want outcome %s", i, spans[i].Events(), want)
		}
	}
}

// With the no-op defaults nothing is injected and the client works.
func TestRPCNoProvider(t *testing.T) {
	tel, err := telemetry.New(telemetry.WithTracerProvider(noop.NewTracerProvider()))
	if err != nil {
		t.Fatal(err)
	}
	var header http.Header
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { header = r.Header.Clone() }))
	defer srv.Close()
	c, err := rpc.NewClient(rpc.WithTracer(tel.RPC()))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if header.Get("traceparent") != "" {
		t.Errorf("traceparent %q sent without a span", header.Get("traceparent"))
	}
}
