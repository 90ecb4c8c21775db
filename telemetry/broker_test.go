package telemetry_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"

	"github.com/go-integration/patterns/broker"
	"github.com/go-integration/patterns/broker/kafka"
	"github.com/go-integration/patterns/broker/memory"
	"github.com/go-integration/patterns/broker/rabbitmq"
	"github.com/go-integration/patterns/internal/testenv"
	"github.com/go-integration/patterns/internal/testenv/kafkaenv"
	"github.com/go-integration/patterns/telemetry"
)

// btEnv is the SDK the broker tests record into.
type btEnv struct {
	tel    *telemetry.Telemetry
	rec    *tracetest.SpanRecorder
	tp     *sdktrace.TracerProvider
	reader *sdkmetric.ManualReader
}

func newBTEnv(t *testing.T) *btEnv {
	t.Helper()
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.AlwaysSample()), sdktrace.WithSpanProcessor(rec))
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	t.Cleanup(func() {
		_ = tp.Shutdown(context.Background())
		_ = mp.Shutdown(context.Background())
	})
	tel, err := telemetry.New(telemetry.WithTracerProvider(tp), telemetry.WithMeterProvider(mp),
		telemetry.WithPropagator(propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})))
	if err != nil {
		t.Fatal(err)
	}
	return &btEnv{tel: tel, rec: rec, tp: tp, reader: reader}
}

// spans returns the ended spans named name.
func (e *btEnv) spans(name string) []sdktrace.ReadOnlySpan {
	var out []sdktrace.ReadOnlySpan
	for _, s := range e.rec.Ended() {
		if s.Name() == name {
			out = append(out, s)
		}
	}
	return out
}

// waitSpans waits until n spans named name have ended and returns them.
func (e *btEnv) waitSpans(t *testing.T, name string, n int) []sdktrace.ReadOnlySpan {
	t.Helper()
	testenv.Eventually(t, 30*time.Second, fmt.Sprintf("%d spans %q", n, name), func() bool { return len(e.spans(name)) >= n })
	return e.spans(name)
}

// processOnly hides a tracer's publish side, for a publisher without
// tracer on the memory broker (whose tracers are the broker's).
type processOnly struct{ t any }

func (p processOnly) TraceProcessStart(ctx context.Context, d broker.TraceProcessStartData) context.Context {
	return p.t.(broker.ProcessTracer).TraceProcessStart(ctx, d)
}

func (p processOnly) TraceProcessEnd(ctx context.Context, d broker.TraceProcessEndData) {
	p.t.(broker.ProcessTracer).TraceProcessEnd(ctx, d)
}

func (p processOnly) TraceDeadLetter(ctx context.Context, d broker.TraceDeadLetterData) {
	p.t.(broker.DeadLetterTracer).TraceDeadLetter(ctx, d)
}

// btAdapter builds a publisher and a subscriber on one broker: the
// subscriber with tracer tr, the publisher with it too or, when
// tracedPub is false, without tracer.
type btAdapter struct {
	name  string
	setup func(t *testing.T, tr any, tracedPub bool) (broker.Publisher, broker.Subscriber)
	topic func(t *testing.T) string
}

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func btAdapters() []btAdapter {
	return []btAdapter{
		{
			name: "memory",
			setup: func(t *testing.T, tr any, tracedPub bool) (broker.Publisher, broker.Subscriber) {
				if !tracedPub {
					tr = processOnly{tr}
				}
				b, err := memory.New(memory.WithTracer(tr), memory.WithRetryBackoff(time.Millisecond, 5*time.Millisecond), memory.WithLogger(quietLogger()))
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { _ = b.Close() })
				return b, b
			},
			topic: func(t *testing.T) string { return testenv.Name(t, "m") },
		},
		{
			name: "rabbitmq",
			setup: func(t *testing.T, tr any, tracedPub bool) (broker.Publisher, broker.Subscriber) {
				_, url := testenv.VHost(t)
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				popts := []rabbitmq.PublisherOption{rabbitmq.WithLogger(quietLogger())}
				if tracedPub {
					popts = append(popts, rabbitmq.WithTracer(tr))
				}
				p, err := rabbitmq.NewPublisher(ctx, url, popts...)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { _ = p.Close() })
				s, err := rabbitmq.NewSubscriber(ctx, url, rabbitmq.WithTracer(tr), rabbitmq.WithLogger(quietLogger()),
					rabbitmq.WithRetryBackoff(time.Millisecond, 5*time.Millisecond))
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { _ = s.Close() })
				return p, s
			},
			topic: func(t *testing.T) string { return testenv.Name(t, "r") },
		},
		{
			name: "kafka",
			setup: func(t *testing.T, tr any, tracedPub bool) (broker.Publisher, broker.Subscriber) {
				bs := kafkaenv.Brokers(t)
				create := kafka.WithCreateTopics(kafka.Topic{Partitions: 2})
				popts := []kafka.PublisherOption{create, kafka.WithLogger(quietLogger())}
				if tracedPub {
					popts = append(popts, kafka.WithTracer(tr))
				}
				p, err := kafka.NewPublisher(bs, popts...)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { _ = p.Close() })
				session := 2 * time.Second
				if kafkaenv.External() {
					session = 6 * time.Second
				}
				s, err := kafka.NewSubscriber(bs, create, kafka.WithTracer(tr), kafka.WithLogger(quietLogger()),
					kafka.WithGroupTimeouts(session, 10*time.Second, 100*time.Millisecond),
					kafka.WithRetryBackoff(time.Millisecond, 5*time.Millisecond),
					kafka.WithCommitInterval(100*time.Millisecond), kafka.WithDrainTimeout(5*time.Second),
					kafka.WithStartAt(kafka.Earliest()))
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { _ = s.Close() })
				return p, s
			},
			topic: func(t *testing.T) string { return testenv.Name(t, "k") },
		},
	}
}

// btSubscribe runs Subscribe in the background until the test ends and
// returns once the subscription receives.
func btSubscribe(t *testing.T, s broker.Subscriber, sub broker.Subscription, h broker.Handler) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan struct{})
	sub.Ready = func() { close(ready) }
	done := make(chan error, 1)
	go func() { done <- s.Subscribe(ctx, sub, h) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Errorf("Subscribe did not return 30 s after cancel")
		}
	})
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("Subscribe(%+v): %v", sub, err)
	case <-time.After(60 * time.Second):
		t.Fatalf("Subscribe(%+v) not ready within 60 s", sub)
	}
}

func btPublish(t *testing.T, ctx context.Context, p broker.Publisher, topic string, msgs ...broker.Message) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := p.Publish(ctx, topic, msgs...); err != nil {
		t.Fatalf("Publish: %v", err)
	}
}

func btAttrs(s sdktrace.ReadOnlySpan) map[attribute.Key]attribute.Value {
	m := make(map[attribute.Key]attribute.Value)
	for _, kv := range s.Attributes() {
		m[kv.Key] = kv.Value
	}
	return m
}

// btCheckAttrs fails t unless span has every attribute of want (values
// given as strings, compared with Value.Emit).
func btCheckAttrs(t *testing.T, span sdktrace.ReadOnlySpan, want map[string]string) {
	t.Helper()
	got := btAttrs(span)
	for k, v := range want {
		if g, ok := got[attribute.Key(k)]; !ok || g.String() != v {
			t.Errorf("span %q: attribute %s = %q (present %v), want %q", span.Name(), k, g.String(), ok, v)
		}
	}
}

func btHasLink(s sdktrace.ReadOnlySpan, sc trace.SpanContext) bool {
	for _, l := range s.Links() {
		if l.SpanContext.TraceID() == sc.TraceID() && l.SpanContext.SpanID() == sc.SpanID() {
			return true
		}
	}
	return false
}

// TestBrokerTraceEndToEnd: a message published within a span reaches
// the handler in a process span of the same trace, whose parent is the
// send span and which links to it; the handler's context carries the
// process span.
func TestBrokerTraceEndToEnd(t *testing.T) {
	for _, a := range btAdapters() {
		t.Run(a.name, func(t *testing.T) {
			t.Parallel()
			e := newBTEnv(t)
			tr := e.tel.Broker()
			p, s := a.setup(t, tr, true)
			topic := a.topic(t)
			handled := make(chan trace.SpanContext, 1)
			btSubscribe(t, s, broker.Subscription{Topic: topic, Group: "g"}, func(ctx context.Context, m broker.Message) error {
				handled <- trace.SpanContextFromContext(ctx)
				return nil
			})
			ctx, parent := e.tp.Tracer("test").Start(context.Background(), "request")
			btPublish(t, ctx, p, topic, broker.Message{ID: "m1", Key: "rentals.fr", Payload: []byte("hello")})
			parent.End()
			var hsc trace.SpanContext
			select {
			case hsc = <-handled:
			case <-time.After(30 * time.Second):
				t.Fatal("the handler did not run")
			}
			send := e.waitSpans(t, "send "+topic, 1)[0]
			proc := e.waitSpans(t, "process "+topic, 1)[0]

			if send.SpanKind() != trace.SpanKindProducer || send.Parent().SpanID() != parent.SpanContext().SpanID() {
				t.Errorf("send span kind %v parent %v, want a producer child of the request", send.SpanKind(), send.Parent())
			}
			btCheckAttrs(t, send, map[string]string{
				"messaging.system": a.name, "messaging.destination.name": topic,
				"messaging.operation.type": "send", "messaging.message.id": "m1",
			})
			if _, ok := btAttrs(send)["messaging.batch.message_count"]; ok {
				t.Errorf("a one-message call has messaging.batch.message_count")
			}
			if proc.SpanKind() != trace.SpanKindConsumer {
				t.Errorf("process span kind %v", proc.SpanKind())
			}
			if proc.SpanContext().TraceID() != parent.SpanContext().TraceID() {
				t.Errorf("process span trace %v, want the request's %v", proc.SpanContext().TraceID(), parent.SpanContext().TraceID())
			}
			if proc.Parent().SpanID() != send.SpanContext().SpanID() || !proc.Parent().IsRemote() {
				t.Errorf("process span parent %v, want the send span %v (remote)", proc.Parent(), send.SpanContext())
			}
			if !btHasLink(proc, send.SpanContext()) {
				t.Errorf("process span links %v, want one to the send span", proc.Links())
			}
			if !hsc.Equal(proc.SpanContext()) {
				t.Errorf("the handler ran in %v, want the process span %v", hsc, proc.SpanContext())
			}
			want := map[string]string{
				"messaging.system": a.name, "messaging.destination.name": topic,
				"messaging.consumer.group.name": "g", "messaging.message.id": "m1",
				"messaging.operation.type": "process", "patterns.messaging.attempt": "1",
				"patterns.messaging.outcome": "ok", "messaging.message.body.size": "5",
			}
			switch a.name {
			case "kafka":
				want["messaging.kafka.offset"] = "0"
				want["messaging.kafka.message.key"] = "rentals.fr"
				if id := btAttrs(proc)["messaging.destination.partition.id"].AsString(); id != "0" && id != "1" {
					t.Errorf("partition id %q", id)
				}
			case "rabbitmq":
				want["messaging.rabbitmq.destination.routing_key"] = "rentals.fr"
			}
			btCheckAttrs(t, proc, want)
			if proc.Status().Code == codes.Error {
				t.Errorf("process span status %v", proc.Status())
			}
		})
	}
}

// TestBrokerTraceScripted: a scripted run (5 messages in one call; one
// fails once, one panics once, one fails for good after 3 attempts) gives
// retry then ok spans, a dead letter carrying the failed attempt's
// context, and exact metric values.
func TestBrokerTraceScripted(t *testing.T) {
	for _, a := range btAdapters() {
		t.Run(a.name, func(t *testing.T) {
			t.Parallel()
			e := newBTEnv(t)
			tr := e.tel.Broker()
			p, s := a.setup(t, tr, true)
			topic := a.topic(t)
			dlq := topic + ".dlq"
			var mu sync.Mutex
			calls := map[string]int{}
			okCh := make(chan string, 10)
			boom := errors.New("boom")
			btSubscribe(t, s, broker.Subscription{Topic: topic, Group: "g", MaxAttempts: 3, Concurrency: 4}, func(ctx context.Context, m broker.Message) error {
				mu.Lock()
				calls[m.ID]++
				n := calls[m.ID]
				mu.Unlock()
				switch {
				case m.ID == "m1" && n == 1:
					return boom
				case m.ID == "m2" && n == 1:
					panic("m2 panics")
				case m.ID == "m3":
					return boom
				}
				okCh <- m.ID
				return nil
			})
			dead := make(chan broker.Message, 1)
			btSubscribe(t, s, broker.Subscription{Topic: dlq, Group: "g"}, func(ctx context.Context, m broker.Message) error {
				dead <- m
				return nil
			})
			var msgs []broker.Message
			for i := range 5 {
				msgs = append(msgs, broker.Message{ID: fmt.Sprintf("m%d", i), Key: fmt.Sprintf("k%d", i), Payload: []byte("x")})
			}
			btPublish(t, context.Background(), p, topic, msgs...)
			for range 4 {
				select {
				case <-okCh:
				case <-time.After(30 * time.Second):
					t.Fatal("not every message was handled")
				}
			}
			var dl broker.Message
			select {
			case dl = <-dead:
			case <-time.After(30 * time.Second):
				t.Fatal("no dead letter")
			}
			// 9 attempts on the topic, 1 on the dead-letter topic.
			procs := e.waitSpans(t, "process "+topic, 9)
			send := e.waitSpans(t, "send "+topic, 1)[0]
			btCheckAttrs(t, send, map[string]string{"messaging.batch.message_count": "5"})

			byMsg := map[string][]sdktrace.ReadOnlySpan{}
			for _, sp := range procs {
				id := btAttrs(sp)["messaging.message.id"].AsString()
				byMsg[id] = append(byMsg[id], sp)
				if sp.Parent().SpanID() != send.SpanContext().SpanID() {
					t.Errorf("process span of %s: parent %v, want the send span", id, sp.Parent())
				}
			}
			for _, sps := range byMsg {
				// By attempt: a retry may end before the failed attempt's span.
				sort.Slice(sps, func(i, j int) bool {
					return btAttrs(sps[i])["patterns.messaging.attempt"].AsInt64() < btAttrs(sps[j])["patterns.messaging.attempt"].AsInt64()
				})
			}
			outcomes := func(id string) string {
				var o []string
				for _, sp := range byMsg[id] {
					a := btAttrs(sp)
					o = append(o, a["patterns.messaging.attempt"].String()+":"+a["patterns.messaging.outcome"].String())
				}
				return strings.Join(o, " ")
			}
			for id, want := range map[string]string{
				"m0": "1:ok", "m1": "1:retry 2:ok", "m2": "1:panicked 2:ok",
				"m3": "1:retry 2:retry 3:dead_lettered", "m4": "1:ok",
			} {
				if got := outcomes(id); got != want {
					t.Errorf("%s: attempts %q, want %q", id, got, want)
				}
			}
			for _, sp := range byMsg["m1"] {
				failed := btAttrs(sp)["patterns.messaging.outcome"].AsString() == "retry"
				if failed != (sp.Status().Code == codes.Error) {
					t.Errorf("m1 span %v: status %v", btAttrs(sp), sp.Status())
				}
			}
			last := byMsg["m3"][2]
			var ev *sdktrace.Event
			for i, x := range last.Events() {
				if x.Name == "dead_letter" {
					ev = &last.Events()[i]
				}
			}
			if ev == nil {
				t.Errorf("the last attempt of m3 has no dead_letter event: %v", last.Events())
			} else if got := attribute.NewSet(ev.Attributes...); got.HasValue("patterns.messaging.dead_letter.destination") == false {
				t.Errorf("dead_letter event attributes %v", ev.Attributes)
			}
			// The dead letter carries the failed attempt's context, and its
			// process span continues it.
			wantTP := fmt.Sprintf("00-%s-%s-01", last.SpanContext().TraceID(), last.SpanContext().SpanID())
			if dl.Header["traceparent"] != wantTP {
				t.Errorf("dead letter traceparent %q, want %q", dl.Header["traceparent"], wantTP)
			}
			dlProc := e.waitSpans(t, "process "+dlq, 1)[0]
			if dlProc.Parent().SpanID() != last.SpanContext().SpanID() || dlProc.SpanContext().TraceID() != send.SpanContext().TraceID() {
				t.Errorf("dead letter's process span parent %v, want the failed attempt", dlProc.Parent())
			}

			// Metrics. A handler call's span ends before its metrics are
			// recorded (and the dead letter can be handled before both):
			// wait for the last call's.
			onTopic := attribute.String("messaging.destination.name", topic)
			var rm metricdata.ResourceMetrics
			testenv.Eventually(t, 30*time.Second, "the metrics of 9 handler calls and 1 dead letter", func() bool {
				rm = metricdata.ResourceMetrics{}
				if err := e.reader.Collect(context.Background(), &rm); err != nil {
					t.Fatal(err)
				}
				return btCount(t, rm, "messaging.process.duration", onTopic) >= 9 && btSum(t, rm, "patterns.messaging.dead_letters", onTopic) >= 1
			})
			if got := btSum(t, rm, "messaging.client.sent.messages", onTopic); got != 5 {
				t.Errorf("sent messages %d, want 5", got)
			}
			if got := btCount(t, rm, "messaging.client.operation.duration", onTopic); got != 1 {
				t.Errorf("send durations %d, want 1 (one call)", got)
			}
			if got := btSum(t, rm, "messaging.client.consumed.messages", onTopic); got != 9 {
				t.Errorf("consumed %d, want 9", got)
			}
			if got := btSum(t, rm, "patterns.messaging.redeliveries", onTopic); got != 4 {
				t.Errorf("redeliveries %d, want 4", got)
			}
			if got := btSum(t, rm, "patterns.messaging.dead_letters", onTopic); got != 1 {
				t.Errorf("dead letters %d, want 1", got)
			}
			for outcome, want := range map[string]uint64{"ok": 4, "retry": 3, "panicked": 1, "dead_lettered": 1} {
				if got := btCount(t, rm, "messaging.process.duration", onTopic, attribute.String("patterns.messaging.outcome", outcome)); got != want {
					t.Errorf("process durations with outcome %s: %d, want %d", outcome, got, want)
				}
			}
			if got := btCount(t, rm, "messaging.process.duration", onTopic, attribute.String("error.type", "panic")); got != 1 {
				t.Errorf("process durations with error.type panic: %d, want 1", got)
			}
			if got := btCount(t, rm, "messaging.process.duration", onTopic, attribute.String("messaging.consumer.group.name", "g"), attribute.String("messaging.system", a.name)); got != 9 {
				t.Errorf("process durations of group g on %s: %d, want 9", a.name, got)
			}
		})
	}
}

// findMetric finds the metric named name (the metric tests of every area
// use it).
func findMetric(rm metricdata.ResourceMetrics, name string) (metricdata.Metrics, bool) {
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name == name {
				return m, true
			}
		}
	}
	return metricdata.Metrics{}, false
}

func btMatch(set attribute.Set, want []attribute.KeyValue) bool {
	for _, kv := range want {
		if v, ok := set.Value(kv.Key); !ok || v != kv.Value {
			return false
		}
	}
	return true
}

// btSum adds up the points of counter name that have every attribute of want.
func btSum(t *testing.T, rm metricdata.ResourceMetrics, name string, want ...attribute.KeyValue) int64 {
	t.Helper()
	m, ok := findMetric(rm, name)
	if !ok {
		return 0
	}
	sum, ok := m.Data.(metricdata.Sum[int64])
	if !ok {
		t.Fatalf("%s is a %T", name, m.Data)
	}
	var n int64
	for _, p := range sum.DataPoints {
		if btMatch(p.Attributes, want) {
			n += p.Value
		}
	}
	return n
}

// btCount adds up the counts of histogram name's points that have every
// attribute of want.
func btCount(t *testing.T, rm metricdata.ResourceMetrics, name string, want ...attribute.KeyValue) uint64 {
	t.Helper()
	m, ok := findMetric(rm, name)
	if !ok {
		return 0
	}
	h, ok := m.Data.(metricdata.Histogram[float64])
	if !ok {
		t.Fatalf("%s is a %T", name, m.Data)
	}
	if m.Unit != "s" {
		t.Errorf("%s unit %q", name, m.Unit)
	}
	var n uint64
	for _, p := range h.DataPoints {
		if btMatch(p.Attributes, want) {
			n += p.Count
		}
	}
	return n
}

// TestBrokerTraceBadContext: messages published without a tracer, with
// a malformed or oversized traceparent or an oversized tracestate, are
// handled; a bad traceparent gives a new root span, an oversized
// tracestate is dropped and the traceparent kept.
func TestBrokerTraceBadContext(t *testing.T) {
	const valid = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
	for _, a := range btAdapters() {
		t.Run(a.name, func(t *testing.T) {
			t.Parallel()
			e := newBTEnv(t)
			p, s := a.setup(t, e.tel.Broker(), false)
			topic := a.topic(t)
			handled := make(chan string, 10)
			btSubscribe(t, s, broker.Subscription{Topic: topic, Group: "g"}, func(ctx context.Context, m broker.Message) error {
				handled <- m.ID
				return nil
			})
			cases := map[string]map[string]string{
				"short":  {"traceparent": "00-bad"},
				"long":   {"traceparent": valid + "-00000000000000000000000000000000"},
				"badhex": {"traceparent": strings.Replace(valid, "0af7", "zzzz", 1)},
				"zero":   {"traceparent": "00-00000000000000000000000000000000-b7ad6b7169203331-01"},
				// A later version may be longer: accepted by the W3C parser, not here.
				"future": {"traceparent": "01" + valid[2:] + "-extra"},
				// Valid members (values up to 256 bytes), 600 bytes in all.
				"hugestate":  {"traceparent": valid, "tracestate": "a=" + strings.Repeat("b", 198) + ",c=" + strings.Repeat("d", 198) + ",e=" + strings.Repeat("f", 198)},
				"goodparent": {"traceparent": valid, "tracestate": "a=b"},
			}
			var msgs []broker.Message
			for id, h := range cases {
				msgs = append(msgs, broker.Message{ID: id, Key: id, Header: h})
			}
			btPublish(t, context.Background(), p, topic, msgs...)
			for range cases {
				select {
				case <-handled:
				case <-time.After(30 * time.Second):
					t.Fatal("not every message was handled")
				}
			}
			procs := e.waitSpans(t, "process "+topic, len(cases))
			if n := len(e.spans("send " + topic)); n != 0 {
				t.Fatalf("%d send spans from a publisher without tracer", n)
			}
			for _, sp := range procs {
				id := btAttrs(sp)["messaging.message.id"].AsString()
				switch id {
				case "hugestate", "goodparent":
					if sp.Parent().TraceID().String() != "0af7651916cd43dd8448eb211c80319c" || len(sp.Links()) != 1 {
						t.Errorf("%s: parent %v links %v, want the traceparent's span", id, sp.Parent(), sp.Links())
					}
					wantState := map[string]string{"hugestate": "", "goodparent": "a=b"}[id]
					if got := sp.SpanContext().TraceState().String(); got != wantState {
						t.Errorf("%s: tracestate %q, want %q", id, got, wantState)
					}
				default:
					if sp.Parent().IsValid() || len(sp.Links()) != 0 {
						t.Errorf("%s: parent %v links %v, want a new root", id, sp.Parent(), sp.Links())
					}
				}
				if sp.Status().Code == codes.Error {
					t.Errorf("%s: status %v", id, sp.Status())
				}
			}
		})
	}
}

// TestBrokerTraceCreationContext: a message whose Header already carries
// a trace context (an outbox row written during a request) gets a send
// span of its own, a child of that context, which the call's span links
// to; the consumer continues the request's trace.
func TestBrokerTraceCreationContext(t *testing.T) {
	for _, a := range btAdapters() {
		t.Run(a.name, func(t *testing.T) {
			t.Parallel()
			e := newBTEnv(t)
			p, s := a.setup(t, e.tel.Broker(), true)
			topic := a.topic(t)
			handled := make(chan trace.SpanContext, 2)
			btSubscribe(t, s, broker.Subscription{Topic: topic, Group: "g"}, func(ctx context.Context, m broker.Message) error {
				handled <- trace.SpanContextFromContext(ctx)
				return nil
			})
			tracer := e.tp.Tracer("test")
			// The request that wrote the outbox row.
			rctx, request := tracer.Start(context.Background(), "request")
			created := map[string]string{}
			propagation.TraceContext{}.Inject(rctx, propagation.MapCarrier(created))
			request.End()
			// The relay publishes it with a plain message, in its own span.
			relayCtx, relay := tracer.Start(context.Background(), "relay")
			btPublish(t, relayCtx, p, topic,
				broker.Message{ID: "from-outbox", Key: "a", Header: created},
				broker.Message{ID: "plain", Key: "b"})
			relay.End()
			if created["traceparent"] == "" || len(created) != 1 {
				t.Fatalf("Publish changed the caller's header: %v", created)
			}
			for range 2 {
				select {
				case <-handled:
				case <-time.After(30 * time.Second):
					t.Fatal("the handler did not run")
				}
			}
			sends := e.waitSpans(t, "send "+topic, 2)
			var call, own sdktrace.ReadOnlySpan
			for _, sp := range sends {
				if sp.Parent().SpanID() == relay.SpanContext().SpanID() {
					call = sp
				}
				if sp.Parent().SpanID() == request.SpanContext().SpanID() {
					own = sp
				}
			}
			if call == nil || own == nil {
				t.Fatalf("send spans %v: want one child of the relay, one of the request", sends)
			}
			if own.SpanKind() != trace.SpanKindProducer || own.SpanContext().TraceID() != request.SpanContext().TraceID() {
				t.Errorf("the message's send span: kind %v trace %v", own.SpanKind(), own.SpanContext().TraceID())
			}
			btCheckAttrs(t, own, map[string]string{"messaging.message.id": "from-outbox", "messaging.destination.name": topic})
			if !btHasLink(call, own.SpanContext()) {
				t.Errorf("the call's span links %v, want one to the message's send span", call.Links())
			}
			procs := e.waitSpans(t, "process "+topic, 2)
			for _, sp := range procs {
				switch id := btAttrs(sp)["messaging.message.id"].AsString(); id {
				case "from-outbox":
					if sp.Parent().SpanID() != own.SpanContext().SpanID() || sp.SpanContext().TraceID() != request.SpanContext().TraceID() {
						t.Errorf("from-outbox process span parent %v, want the message's send span in the request's trace", sp.Parent())
					}
				case "plain":
					if sp.Parent().SpanID() != call.SpanContext().SpanID() || sp.SpanContext().TraceID() != relay.SpanContext().TraceID() {
						t.Errorf("plain process span parent %v, want the call's send span", sp.Parent())
					}
				}
			}
		})
	}
}

// TestBrokerTracePublishError: a refused Publish ends its span with an
// error status and counts its messages with error.type.
func TestBrokerTracePublishError(t *testing.T) {
	e := newBTEnv(t)
	b, err := memory.New(memory.WithTracer(e.tel.Broker()))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if err := b.Publish(context.Background(), "", broker.Message{}, broker.Message{}); !errors.Is(err, broker.ErrInvalidMessage) {
		t.Fatalf("Publish to an empty topic: %v", err)
	}
	spans := e.spans("send ")
	if len(spans) != 1 || spans[0].Status().Code != codes.Error || len(spans[0].Events()) == 0 {
		t.Fatalf("send spans %v: want one with an error status and the error recorded", spans)
	}
	var rm metricdata.ResourceMetrics
	if err := e.reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	if got := btSum(t, rm, "messaging.client.sent.messages", attribute.String("error.type", "invalid_message"), attribute.String("messaging.system", "memory")); got != 2 {
		t.Errorf("failed messages %d, want 2", got)
	}
	if got := btCount(t, rm, "messaging.client.operation.duration", attribute.String("error.type", "invalid_message")); got != 1 {
		t.Errorf("failed calls %d, want 1", got)
	}
}

// TestBrokerTraceNoop: with no-op providers messages flow, the handler's
// context is the subscriber's, and no trace context is written.
func TestBrokerTraceNoop(t *testing.T) {
	tel, err := telemetry.New(telemetry.WithTracerProvider(tracenoop.NewTracerProvider()), telemetry.WithMeterProvider(noop.NewMeterProvider()))
	if err != nil {
		t.Fatal(err)
	}
	b, err := memory.New(memory.WithTracer(tel.Broker()))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	got := make(chan broker.Message, 1)
	btSubscribe(t, b, broker.Subscription{Topic: "t", Group: "g"}, func(ctx context.Context, m broker.Message) error {
		if trace.SpanContextFromContext(ctx).IsValid() {
			t.Errorf("a valid span context without a provider")
		}
		got <- m
		return nil
	})
	btPublish(t, context.Background(), b, "t", broker.Message{ID: "x"})
	select {
	case m := <-got:
		if len(m.Header) != 0 {
			t.Errorf("header %v, want nothing written by the no-op providers", m.Header)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("not handled")
	}
}

// TestBrokerTracerInterfaces: Broker's value is accepted by every
// adapter's WithTracer.
func TestBrokerTracerInterfaces(t *testing.T) {
	tel, err := telemetry.New()
	if err != nil {
		t.Fatal(err)
	}
	tr := tel.Broker()
	if _, ok := tr.(broker.PublishTracer); !ok {
		t.Error("not a broker.PublishTracer")
	}
	if _, ok := tr.(broker.ProcessTracer); !ok {
		t.Error("not a broker.ProcessTracer")
	}
	if _, ok := tr.(broker.DeadLetterTracer); !ok {
		t.Error("not a broker.DeadLetterTracer")
	}
	if _, err := memory.New(memory.WithTracer(tr)); err != nil {
		t.Errorf("memory.WithTracer: %v", err)
	}
}

// TestBrokerTraceGlobalProvider: on the global providers, Broker starts
// no span while no provider is installed (trace context in a message
// still reaches the handler's context and stays in the header) and
// traces once one is. It runs in a child process, as it installs a
// global provider.
func TestBrokerTraceGlobalProvider(t *testing.T) {
	if os.Getenv("BT_GLOBAL_CHILD") != "1" {
		cmd := exec.Command(os.Args[0], "-test.run=^TestBrokerTraceGlobalProvider$", "-test.count=1", "-test.v")
		cmd.Env = append(os.Environ(), "BT_GLOBAL_CHILD=1")
		out, err := cmd.CombinedOutput()
		if err != nil || !strings.Contains(string(out), "--- PASS: TestBrokerTraceGlobalProvider") {
			t.Fatalf("child: %v\n%s", err, out)
		}
		return
	}
	const tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
	tel, err := telemetry.New() // no global provider yet
	if err != nil {
		t.Fatal(err)
	}
	b, err := memory.New(memory.WithTracer(tel.Broker()))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	type got struct {
		sc trace.SpanContext
		m  broker.Message
	}
	ch := make(chan got, 4)
	btSubscribe(t, b, broker.Subscription{Topic: "t", Group: "g"}, func(ctx context.Context, m broker.Message) error {
		ch <- got{trace.SpanContextFromContext(ctx), m}
		return nil
	})
	next := func() got {
		select {
		case g := <-ch:
			return g
		case <-time.After(10 * time.Second):
			t.Fatal("not handled")
		}
		return got{}
	}
	btPublish(t, context.Background(), b, "t", broker.Message{ID: "a", Header: map[string]string{"traceparent": tp}})
	g := next()
	if g.m.Header["traceparent"] != tp || g.sc.TraceID().String() != "0af7651916cd43dd8448eb211c80319c" || !g.sc.IsRemote() {
		t.Errorf("without provider: header %v, handler context %v: want the message's context passed on", g.m.Header, g.sc)
	}

	rec := tracetest.NewSpanRecorder()
	otel.SetTracerProvider(sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec)))
	btPublish(t, context.Background(), b, "t", broker.Message{ID: "b"})
	g = next()
	testenv.Eventually(t, 10*time.Second, "2 spans", func() bool { return len(rec.Ended()) == 2 })
	sp := rec.Ended()
	// The memory broker hands the message over before Publish returns, so
	// the process span may end first.
	if sp[0].Name() == "process t" {
		sp[0], sp[1] = sp[1], sp[0]
	}
	if sp[0].Name() != "send t" || sp[1].Name() != "process t" || !g.sc.Equal(sp[1].SpanContext()) {
		t.Errorf("after SetTracerProvider: spans %v %v, handler in %v", sp[0].Name(), sp[1].Name(), g.sc)
	}
}

// TestBrokerTraceNoopAllocs: with no-op providers a message's Publish
// and handler calls allocate nothing in the tracer.
func TestBrokerTraceNoopAllocs(t *testing.T) {
	tel, err := telemetry.New(telemetry.WithTracerProvider(tracenoop.NewTracerProvider()), telemetry.WithMeterProvider(noop.NewMeterProvider()))
	if err != nil {
		t.Fatal(err)
	}
	tr := tel.Broker()
	pt, ct := tr.(broker.PublishTracer), tr.(broker.ProcessTracer)
	ctx := context.Background()
	msgs := []broker.Message{{ID: "id", Header: map[string]string{}}}
	allocs := testing.AllocsPerRun(100, func() {
		pctx := pt.TracePublishStart(ctx, broker.TracePublishStartData{System: "memory", Topic: "t", Messages: msgs})
		pt.TracePublishEnd(pctx, broker.TracePublishEndData{})
		hctx := ct.TraceProcessStart(ctx, broker.TraceProcessStartData{System: "memory", Topic: "t", Group: "g", Message: msgs[0]})
		ct.TraceProcessEnd(hctx, broker.TraceProcessEndData{Outcome: broker.OutcomeAcked})
	})
	if allocs != 0 {
		t.Errorf("%v allocations per message with no-op providers", allocs)
	}
}

// Tracing a broker: Broker's value goes to the adapter's WithTracer (here
// the memory broker's, which traces both sides). A message published
// within a span is handled in a process span of the same trace.
func ExampleTelemetry_Broker() {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	tel, err := telemetry.New(telemetry.WithTracerProvider(tp))
	if err != nil {
		panic(err)
	}
	b := memory.MustNew(memory.WithTracer(tel.Broker()))
	defer b.Close()

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sub := broker.Subscription{Topic: "bookings", Group: "mailer"}
	if err := b.Provision(ctx, sub); err != nil {
		panic(err)
	}
	done := make(chan struct{})
	go func() {
		_ = b.Subscribe(ctx, sub, func(ctx context.Context, m broker.Message) error {
			defer close(done)
			// ctx carries the process span: spans started here are its children.
			_, span := tp.Tracer("mailer").Start(ctx, "send mail")
			span.End()
			return nil
		})
	}()

	rctx, request := tp.Tracer("api").Start(context.Background(), "POST /bookings")
	if err := b.Publish(rctx, "bookings", broker.Message{Key: "booking.created"}); err != nil {
		panic(err)
	}
	request.End()
	<-done
	cancel()
	_ = b.Close() // waits for the handler call to end, and its span with it

	for _, s := range rec.Ended() {
		fmt.Printf("%s (%s), same trace: %v\n", s.Name(), s.SpanKind(), s.SpanContext().TraceID() == request.SpanContext().TraceID())
	}
	// Unordered output:
	// POST /bookings (internal), same trace: true
	// send bookings (producer), same trace: true
	// send mail (internal), same trace: true
	// process bookings (consumer), same trace: true
}
