package telemetry_test

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric/noop"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/embedded"

	"github.com/go-integration/patterns/broker"
	"github.com/go-integration/patterns/broker/memory"
	"github.com/go-integration/patterns/telemetry"
)

// Broker() builds span attributes and start options in scratch space it
// reuses (see brokerSpanBuf): these tests check that no span ever sees
// another span's attributes or link.

// keepingTP is a TracerProvider whose spans keep the very slices given to
// SetAttributes, as an implementation other than the SDK may: a tracer
// that reused such a slice would change their attributes.
type keepingTP struct {
	embedded.TracerProvider
	mu    sync.Mutex
	spans []*keepingSpan
	next  atomic.Uint64
}

func (p *keepingTP) Tracer(string, ...trace.TracerOption) trace.Tracer { return keepingTracer{p: p} }

type keepingTracer struct {
	embedded.Tracer
	p *keepingTP
}

func (tr keepingTracer) Start(ctx context.Context, name string, opts ...trace.SpanStartOption) (context.Context, trace.Span) {
	cfg := trace.NewSpanStartConfig(opts...)
	var tid trace.TraceID
	parent := trace.SpanContextFromContext(ctx)
	if parent.IsValid() && !cfg.NewRoot() {
		tid = parent.TraceID()
	} else {
		binary.BigEndian.PutUint64(tid[8:], tr.p.next.Add(1))
	}
	var sid trace.SpanID
	binary.BigEndian.PutUint64(sid[:], tr.p.next.Add(1))
	s := &keepingSpan{name: name, links: cfg.Links(), attrs: [][]attribute.KeyValue{cfg.Attributes()},
		sc: trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid, TraceFlags: trace.FlagsSampled})}
	tr.p.mu.Lock()
	tr.p.spans = append(tr.p.spans, s)
	tr.p.mu.Unlock()
	return trace.ContextWithSpan(ctx, s), s
}

type keepingSpan struct {
	embedded.Span
	name  string
	sc    trace.SpanContext
	links []trace.Link
	mu    sync.Mutex
	attrs [][]attribute.KeyValue // as given, not copied
}

func (s *keepingSpan) SetAttributes(kv ...attribute.KeyValue) {
	s.mu.Lock()
	s.attrs = append(s.attrs, kv)
	s.mu.Unlock()
}

// attr returns the last value of attribute k the span was given.
func (s *keepingSpan) attr(k attribute.Key) (attribute.Value, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var v attribute.Value
	found := false
	for _, kvs := range s.attrs {
		for _, kv := range kvs {
			if kv.Key == k {
				v, found = kv.Value, true
			}
		}
	}
	return v, found
}

func (s *keepingSpan) End(...trace.SpanEndOption)              {}
func (s *keepingSpan) AddEvent(string, ...trace.EventOption)   {}
func (s *keepingSpan) AddLink(trace.Link)                      {}
func (s *keepingSpan) IsRecording() bool                       { return true }
func (s *keepingSpan) RecordError(error, ...trace.EventOption) {}
func (s *keepingSpan) SpanContext() trace.SpanContext          { return s.sc }
func (s *keepingSpan) SetStatus(codes.Code, string)            {}
func (s *keepingSpan) SetName(string)                          {}
func (s *keepingSpan) TracerProvider() trace.TracerProvider    { return nil }

// TestBrokerAttrsKeptByOtherSpans: with a span implementation that keeps
// the attribute slices it is given, every send and process span still
// has its own message's id after many more spans have started.
func TestBrokerAttrsKeptByOtherSpans(t *testing.T) {
	tp := &keepingTP{}
	tel, err := telemetry.New(telemetry.WithTracerProvider(tp), telemetry.WithMeterProvider(noop.NewMeterProvider()))
	if err != nil {
		t.Fatal(err)
	}
	tr := tel.Broker()
	pt, ct := tr.(broker.PublishTracer), tr.(broker.ProcessTracer)
	ctx := context.Background()
	const n = 20
	for i := range n {
		id := fmt.Sprintf("m%d", i)
		msgs := []broker.Message{{ID: id}}
		pctx := pt.TracePublishStart(ctx, broker.TracePublishStartData{System: "memory", Topic: "t", Messages: msgs})
		pt.TracePublishEnd(pctx, broker.TracePublishEndData{})
		m := msgs[0]
		m.Attempt = 1
		hctx := ct.TraceProcessStart(ctx, broker.TraceProcessStartData{System: "memory", Topic: "t", Group: "g", Message: m})
		ct.TraceProcessEnd(hctx, broker.TraceProcessEndData{Outcome: broker.OutcomeAcked})
	}
	if len(tp.spans) != 2*n {
		t.Fatalf("%d spans, want %d", len(tp.spans), 2*n)
	}
	for i, s := range tp.spans {
		want := fmt.Sprintf("m%d", i/2)
		if v, ok := s.attr(semconv.MessagingMessageIDKey); !ok || v.AsString() != want {
			t.Errorf("span %d %q: messaging.message.id = %q (present %v), want %q", i, s.name, v.AsString(), ok, want)
		}
		if i%2 == 1 {
			send := tp.spans[i-1]
			if l := s.links; len(l) != 1 || l[0].SpanContext.TraceID() != send.sc.TraceID() || l[0].SpanContext.SpanID() != send.sc.SpanID() {
				t.Errorf("span %d %q: links %v, want one to %v", i, s.name, s.links, send.sc)
			}
		}
	}
}

// TestBrokerSpansConcurrent: many goroutines publish and handle messages
// of their own through one Broker() on the SDK; every process span has
// its message's attributes and is linked to (and a child of) its own send
// span, whatever other spans started meanwhile.
func TestBrokerSpansConcurrent(t *testing.T) {
	e := newBTEnv(t)
	tr := e.tel.Broker()
	pt, ct := tr.(broker.PublishTracer), tr.(broker.ProcessTracer)
	const workers, each = 8, 50
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			ctx := context.Background()
			for i := range each {
				id := fmt.Sprintf("w%d-%d", w, i)
				msgs := []broker.Message{{ID: id, Payload: make([]byte, w*each+i)}}
				pctx, sent := broker.StartPublish(ctx, []broker.PublishTracer{pt}, "memory", "conc", msgs)
				pt.TracePublishEnd(pctx, broker.TracePublishEndData{Duration: time.Microsecond})
				m := sent[0]
				m.Attempt = 1 + i%3
				hctx := ct.TraceProcessStart(ctx, broker.TraceProcessStartData{System: "memory", Topic: "conc", Group: "g", Message: m})
				ct.TraceProcessEnd(hctx, broker.TraceProcessEndData{Outcome: broker.OutcomeAcked, Duration: time.Microsecond})
			}
		})
	}
	wg.Wait()
	sends := make(map[string]trace.SpanContext)
	for _, s := range e.spans("send conc") {
		sends[btAttrs(s)[semconv.MessagingMessageIDKey].AsString()] = s.SpanContext()
	}
	procs := e.spans("process conc")
	if len(sends) != workers*each || len(procs) != workers*each {
		t.Fatalf("%d send spans with distinct ids and %d process spans, want %d each", len(sends), len(procs), workers*each)
	}
	for _, s := range procs {
		a := btAttrs(s)
		id := a[semconv.MessagingMessageIDKey].AsString()
		var w, i int
		if _, err := fmt.Sscanf(id, "w%d-%d", &w, &i); err != nil {
			t.Fatalf("process span id %q: %v", id, err)
		}
		if got, want := a[semconv.MessagingMessageBodySizeKey].AsInt64(), int64(w*each+i); got != want {
			t.Errorf("process span of %s: body size %d, want %d", id, got, want)
		}
		if got, want := a["patterns.messaging.attempt"].AsInt64(), int64(1+i%3); got != want {
			t.Errorf("process span of %s: attempt %d, want %d", id, got, want)
		}
		if got := a["patterns.messaging.outcome"].AsString(); got != "ok" {
			t.Errorf("process span of %s: outcome %q, want ok", id, got)
		}
		send := sends[id]
		if len(s.Links()) != 1 || !btHasLink(s, send) || s.Parent().SpanID() != send.SpanID() {
			t.Errorf("process span of %s: parent %v, links %v, want both to be send span %v", id, s.Parent(), s.Links(), send)
		}
	}
}

// TestBrokerProcessSpansOverlap: a process span holds its scratch space
// from its start to its end (its message's attributes are set when it
// ends), so handler calls that overlap, started in one order and ended in
// the other, each end with their own message's attributes.
func TestBrokerProcessSpansOverlap(t *testing.T) {
	e := newBTEnv(t)
	ct := e.tel.Broker().(broker.ProcessTracer)
	ctx := context.Background()
	const n = 16
	var hctxs []context.Context
	for i := range n {
		m := broker.Message{ID: fmt.Sprintf("m%d", i), Payload: make([]byte, i), Attempt: 1 + i}
		hctxs = append(hctxs, ct.TraceProcessStart(ctx, broker.TraceProcessStartData{System: "memory", Topic: "overlap", Group: "g", Message: m}))
	}
	for i := n - 1; i >= 0; i-- { // odd ones failed and are retried
		end := broker.TraceProcessEndData{Outcome: broker.OutcomeAcked}
		if i%2 == 1 {
			end = broker.TraceProcessEndData{Outcome: broker.OutcomeRetry, Err: errors.New("boom")}
		}
		ct.TraceProcessEnd(hctxs[i], end)
	}
	procs := e.spans("process overlap")
	if len(procs) != n {
		t.Fatalf("%d process spans, want %d", len(procs), n)
	}
	for _, s := range procs {
		a := btAttrs(s)
		var i int
		if _, err := fmt.Sscanf(a[semconv.MessagingMessageIDKey].AsString(), "m%d", &i); err != nil {
			t.Fatalf("span with messaging.message.id %q: %v", a[semconv.MessagingMessageIDKey].AsString(), err)
		}
		if got := a[semconv.MessagingMessageBodySizeKey].AsInt64(); got != int64(i) {
			t.Errorf("m%d: body size %d, want %d", i, got, i)
		}
		if got := a["patterns.messaging.attempt"].AsInt64(); got != int64(1+i) {
			t.Errorf("m%d: attempt %d, want %d", i, got, 1+i)
		}
		want := "ok"
		if i%2 == 1 {
			want = "retry"
		}
		if got := a["patterns.messaging.outcome"].AsString(); got != want {
			t.Errorf("m%d: outcome %q, want %q", i, got, want)
		}
		if got := len(s.Attributes()); got != 9 {
			t.Errorf("m%d: %d attributes, want 9 (5 at the start, 3 of the message, the outcome): %v", i, got, s.Attributes())
		}
	}
}

// samplerRecorder samples every span and keeps the attributes each
// process span was created with: what a sampler can decide on.
type samplerRecorder struct {
	mu    sync.Mutex
	attrs [][]attribute.KeyValue
}

func (r *samplerRecorder) ShouldSample(p sdktrace.SamplingParameters) sdktrace.SamplingResult {
	if strings.HasPrefix(p.Name, "process ") {
		r.mu.Lock()
		r.attrs = append(r.attrs, slices.Clone(p.Attributes))
		r.mu.Unlock()
	}
	return sdktrace.SamplingResult{Decision: sdktrace.RecordAndSample, Tracestate: trace.SpanContextFromContext(p.ParentContext).TraceState()}
}

func (*samplerRecorder) Description() string { return "samplerRecorder" }

// TestBrokerProcessSpanSamplingAttributes: a sampler sees the attributes
// the semantic conventions name for sampling decisions on a process span
// (system, destination, operation type and name, consumer group), on a
// real subscription.
func TestBrokerProcessSpanSamplingAttributes(t *testing.T) {
	sampler := &samplerRecorder{}
	tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(sampler))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	tel, err := telemetry.New(telemetry.WithTracerProvider(tp), telemetry.WithMeterProvider(noop.NewMeterProvider()))
	if err != nil {
		t.Fatal(err)
	}
	br := memory.MustNew(memory.WithTracer(tel.Broker()))
	t.Cleanup(func() { _ = br.Close() })
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s := broker.Subscription{Topic: "sampled", Group: "g"}
	if err := br.Provision(ctx, s); err != nil {
		t.Fatal(err)
	}
	if err := br.Publish(ctx, "sampled", broker.Message{ID: "m1"}); err != nil {
		t.Fatal(err)
	}
	handled := make(chan struct{})
	go func() {
		_ = br.Subscribe(ctx, s, func(context.Context, broker.Message) error {
			close(handled)
			return nil
		})
	}()
	<-handled
	cancel()
	sampler.mu.Lock()
	defer sampler.mu.Unlock()
	if len(sampler.attrs) != 1 {
		t.Fatalf("the sampler was asked about %d process spans, want 1", len(sampler.attrs))
	}
	got := make(map[attribute.Key]string)
	for _, kv := range sampler.attrs[0] {
		got[kv.Key] = kv.Value.String()
	}
	want := map[attribute.Key]string{
		semconv.MessagingSystemKey:            "memory",
		semconv.MessagingDestinationNameKey:   "sampled",
		semconv.MessagingOperationTypeKey:     "process",
		semconv.MessagingOperationNameKey:     "process",
		semconv.MessagingConsumerGroupNameKey: "g",
	}
	if !maps.Equal(got, want) {
		t.Errorf("the sampler saw %v, want %v", got, want)
	}
}
