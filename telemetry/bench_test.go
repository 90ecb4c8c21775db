package telemetry_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"runtime"
	"runtime/pprof"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
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

// Broker benchmarks: the same workload with no tracer, with Broker() on
// the global (no-op) providers, and with Broker() on the SDK recording
// every span (always-on sampler, batch span processor into an exporter
// that discards, a MeterProvider with a ManualReader). -count interleaves
// the three, so compare them within one run:
//
//	go test -run '^$' -bench 'BenchmarkBroker' -benchtime 200000x -count 5 ./telemetry/
//	go test -run '^$' -bench 'BenchmarkBrokerPublish' -benchtime 20000x -count 5 ./telemetry/

// discardExporter drops every span.
type discardExporter struct{}

func (discardExporter) ExportSpans(context.Context, []sdktrace.ReadOnlySpan) error { return nil }
func (discardExporter) Shutdown(context.Context) error                             { return nil }

// benchTracerProvider is the SDK set-up of the "sdk" benchmarks: every
// span recorded (always-on sampler) through a batch span processor into
// an exporter that discards, shut down when b ends.
func benchTracerProvider(b *testing.B) *sdktrace.TracerProvider {
	tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.AlwaysSample()),
		sdktrace.WithBatcher(discardExporter{}))
	b.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	return tp
}

// emptyTracer does nothing: what the adapters cost with any tracer.
type emptyTracer struct{}

func (emptyTracer) TracePublishStart(ctx context.Context, _ broker.TracePublishStartData) context.Context {
	return ctx
}
func (emptyTracer) TracePublishEnd(context.Context, broker.TracePublishEndData) {}
func (emptyTracer) TraceProcessStart(ctx context.Context, _ broker.TraceProcessStartData) context.Context {
	return ctx
}
func (emptyTracer) TraceProcessEnd(context.Context, broker.TraceProcessEndData) {}

// offTracer is emptyTracer with the enabler methods, always false: what
// the adapters' gate costs without any OpenTelemetry check behind it.
type offTracer struct{ emptyTracer }

func (offTracer) TracePublishEnabled(context.Context) bool                            { return false }
func (offTracer) TraceProcessEnabled(context.Context, string, map[string]string) bool { return false }

// floorTracer is the least any tracer that records a span per message
// with the SDK must do: a bare send span per Publish call, whose
// traceparent goes into each message, and a bare process span per handler
// call, a child of the context its message carries. No attributes, links,
// metrics, baggage or header limits: what the SDK and the header cost,
// without anything Broker() adds (compare "sdk" with it in the same run).
type floorTracer struct{ tr trace.Tracer }

func (f floorTracer) TracePublishStart(ctx context.Context, d broker.TracePublishStartData) context.Context {
	ctx, _ = f.tr.Start(ctx, "send")
	for i := range d.Messages {
		propagation.TraceContext{}.Inject(ctx, propagation.MapCarrier(d.Header(i)))
	}
	return ctx
}

func (floorTracer) TracePublishEnd(ctx context.Context, _ broker.TracePublishEndData) {
	trace.SpanFromContext(ctx).End()
}

func (f floorTracer) TraceProcessStart(ctx context.Context, d broker.TraceProcessStartData) context.Context {
	ctx = propagation.TraceContext{}.Extract(ctx, propagation.MapCarrier(d.Message.Header))
	ctx, _ = f.tr.Start(ctx, "process")
	return ctx
}

func (floorTracer) TraceProcessEnd(ctx context.Context, _ broker.TraceProcessEndData) {
	trace.SpanFromContext(ctx).End()
}

// benchTracers are the tracer set-ups compared: nil is no tracer.
func benchTracers(b *testing.B) []struct {
	name string
	tr   func() any
} {
	return []struct {
		name string
		tr   func() any
	}{
		{"none", func() any { return nil }},
		{"empty-tracer", func() any { return emptyTracer{} }},
		{"off-tracer", func() any { return offTracer{} }},
		{"global-noop", func() any {
			tel, err := telemetry.New()
			if err != nil {
				b.Fatal(err)
			}
			return tel.Broker()
		}},
		{"sdk", func() any {
			tp := benchTracerProvider(b)
			mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))
			b.Cleanup(func() { _ = mp.Shutdown(context.Background()) })
			tel, err := telemetry.New(telemetry.WithTracerProvider(tp), telemetry.WithMeterProvider(mp))
			if err != nil {
				b.Fatal(err)
			}
			return tel.Broker()
		}},
		{"sdk-floor", func() any { return floorTracer{tr: benchTracerProvider(b).Tracer("bench")} }},
	}
}

// BenchmarkBrokerMemory is broker/memory's BenchmarkPublishToHandler at
// concurrency 16 (1 KiB payloads, 64 keys, at most 4,096 messages in
// flight) with each tracer set-up.
func BenchmarkBrokerMemory(b *testing.B) {
	for _, bt := range benchTracers(b) {
		b.Run(bt.name, func(b *testing.B) {
			var opts []memory.Option
			if tr := bt.tr(); tr != nil {
				opts = append(opts, memory.WithTracer(tr))
			}
			br := memory.MustNew(opts...)
			defer br.Close()
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			s := broker.Subscription{Topic: "bench", Group: "g", Concurrency: 16}
			if err := br.Provision(ctx, s); err != nil {
				b.Fatal(err)
			}
			const window = 4096
			slots := make(chan struct{}, window)
			var handled atomic.Int64
			target := int64(b.N)
			done := make(chan struct{})
			subDone := make(chan struct{})
			go func() {
				defer close(subDone)
				_ = br.Subscribe(ctx, s, func(ctx context.Context, m broker.Message) error {
					<-slots
					if handled.Add(1) == target {
						close(done)
					}
					return nil
				})
			}()
			payload := make([]byte, 1024)
			keys := make([]string, 64)
			for i := range keys {
				keys[i] = fmt.Sprintf("rentals.france.k%d", i)
			}
			b.SetBytes(int64(len(payload)))
			b.ReportAllocs()
			b.ResetTimer()
			cpu0 := testenv.ProcessCPU()
			var i atomic.Int64
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					slots <- struct{}{}
					n := i.Add(1)
					m := broker.Message{ID: "id", Key: keys[n%64], Payload: payload}
					if err := br.Publish(ctx, "bench", m); err != nil {
						b.Error(err)
						return
					}
				}
			})
			<-done
			b.StopTimer()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msg/s")
			if cpu := testenv.ProcessCPU() - cpu0; cpu > 0 {
				b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N), "cpu-ns/op")
			}
			cancel()
			<-subDone
		})
	}
}

// reportRate reports the messages per second since start and the CPU
// time the whole process (client, and kfake when in-process) used per
// message since cpu0: a path that is not CPU-bound shows its tracer's cost
// there before it shows in msg/s.
func reportRate(b *testing.B, start time.Time, cpu0 time.Duration) {
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msg/s")
	if cpu := testenv.ProcessCPU() - cpu0; cpu > 0 {
		b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N), "cpu-ns/op")
	}
}

// benchParallel runs f b.N times over 16 goroutines.
func benchParallel(b *testing.B, f func() error) {
	var next atomic.Int64
	var wg sync.WaitGroup
	var failed atomic.Value
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(b.N) {
				if err := f(); err != nil {
					failed.Store(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if err, ok := failed.Load().(error); ok {
		b.Fatal(err)
	}
}

// BenchmarkBrokerPublishRabbitMQ: 16 goroutines publish 1 KiB
// persistent messages, confirmed, into a durable queue.
func BenchmarkBrokerPublishRabbitMQ(b *testing.B) {
	_, url := testenv.VHost(b)
	ctx := context.Background()
	s, err := rabbitmq.NewSubscriber(ctx, url, rabbitmq.WithLogger(quietLogger()))
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	payload := make([]byte, 1024)
	for _, bt := range benchTracers(b) {
		b.Run(bt.name, func(b *testing.B) {
			topic := testenv.Name(b, "r")
			if err := s.Provision(ctx, broker.Subscription{Topic: topic, Group: "g"}); err != nil {
				b.Fatal(err)
			}
			opts := []rabbitmq.PublisherOption{rabbitmq.WithLogger(quietLogger())}
			if tr := bt.tr(); tr != nil {
				opts = append(opts, rabbitmq.WithTracer(tr))
			}
			p, err := rabbitmq.NewPublisher(ctx, url, opts...)
			if err != nil {
				b.Fatal(err)
			}
			defer p.Close()
			b.SetBytes(int64(len(payload)))
			b.ReportAllocs()
			b.ResetTimer()
			start, cpu0 := time.Now(), testenv.ProcessCPU()
			benchParallel(b, func() error {
				return p.Publish(ctx, topic, broker.Message{Key: "k", Payload: payload})
			})
			reportRate(b, start, cpu0)
		})
	}
}

// BenchmarkBrokerPublishKafka: 16 goroutines publish 1 KiB records with
// 64 keys to 8 partitions of an in-process kfake cluster (or KAFKA_BROKERS).
func BenchmarkBrokerPublishKafka(b *testing.B) {
	bs := kafkaenv.Brokers(b)
	payload := make([]byte, 1024)
	keys := make([]string, 64)
	for i := range keys {
		keys[i] = fmt.Sprintf("k%d", i)
	}
	// header-only: Broker() on the no-op providers, each call's context
	// carrying a new random span context, so that every record carries a
	// traceparent as with the SDK but no span is recorded: what the header
	// itself costs (on kfake, whose log is in memory, mostly its bytes).
	tracers := append(benchTracers(b), struct {
		name string
		tr   func() any
	}{"header-only", func() any {
		tel, err := telemetry.New(telemetry.WithTracerProvider(tracenoop.NewTracerProvider()), telemetry.WithMeterProvider(metricnoop.NewMeterProvider()))
		if err != nil {
			b.Fatal(err)
		}
		return tel.Broker()
	}})
	for _, bt := range tracers {
		b.Run(bt.name, func(b *testing.B) {
			topic := testenv.Name(b, "k")
			opts := []kafka.PublisherOption{kafka.WithCreateTopics(kafka.Topic{Partitions: 8}), kafka.WithLogger(quietLogger())}
			if tr := bt.tr(); tr != nil {
				opts = append(opts, kafka.WithTracer(tr))
			}
			p, err := kafka.NewPublisher(bs, opts...)
			if err != nil {
				b.Fatal(err)
			}
			defer p.Close()
			ctx := context.Background()
			if err := p.Publish(ctx, topic, broker.Message{Key: "warm-up"}); err != nil {
				b.Fatal(err)
			}
			var i atomic.Int64
			b.SetBytes(int64(len(payload)))
			b.ReportAllocs()
			b.ResetTimer()
			start, cpu0 := time.Now(), testenv.ProcessCPU()
			benchParallel(b, func() error {
				n := i.Add(1)
				ctx := ctx
				if bt.name == "header-only" {
					ctx = randomSpanContext(ctx)
				}
				return p.Publish(ctx, topic, broker.Message{Key: keys[n%64], Payload: payload})
			})
			reportRate(b, start, cpu0)
		})
	}
}

// BenchmarkBrokerTracerCalls is the tracer's own cost per message,
// without a broker: one Publish call of one message and one handler call
// of it, on one goroutine.
func BenchmarkBrokerTracerCalls(b *testing.B) {
	for _, bt := range benchTracers(b) {
		if bt.name == "none" {
			continue
		}
		b.Run(bt.name, func(b *testing.B) {
			tr := bt.tr()
			pt, ct := tr.(broker.PublishTracer), tr.(broker.ProcessTracer)
			pts := []broker.PublishTracer{pt}
			ctx := context.Background()
			msgs := []broker.Message{{ID: "id", Key: "k", Payload: make([]byte, 1024)}}
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				// As the adapters call it: skipped when not enabled, and a
				// tracer that writes a header gets a copy.
				sent := msgs
				if pe, ok := pt.(broker.PublishTraceEnabler); !ok || pe.TracePublishEnabled(ctx) {
					var pctx context.Context
					pctx, sent = broker.StartPublish(ctx, pts, "memory", "bench", msgs)
					pt.TracePublishEnd(pctx, broker.TracePublishEndData{Duration: time.Microsecond})
				}
				m := sent[0]
				m.Attempt = 1
				if ce, ok := ct.(broker.ProcessTraceEnabler); !ok || ce.TraceProcessEnabled(ctx, "bench", m.Header) {
					hctx := ct.TraceProcessStart(ctx, broker.TraceProcessStartData{System: "memory", Topic: "bench", Group: "g", Message: m})
					ct.TraceProcessEnd(hctx, broker.TraceProcessEndData{Outcome: broker.OutcomeAcked, Duration: time.Microsecond})
				}
			}
		})
	}
}

// BenchmarkSDKSpanFloor is the least the SDK costs per message when it
// records every span: a send span and a process span started and ended,
// with no attributes, no propagation and no metrics, through the same
// provider set-up as the "sdk" benchmarks. No instrumentation that records
// both spans can cost less; compare it with BenchmarkBrokerTracerCalls/sdk
// (what Broker() adds on top), BenchmarkSDKSpanFloorWithAttributes (what
// the SDK costs for spans with Broker()'s attributes and link) and
// BenchmarkBrokerMemory/none (the whole memory broker path).
func BenchmarkSDKSpanFloor(b *testing.B) {
	tr := benchTracerProvider(b).Tracer("bench")
	ctx := context.Background()
	b.ReportAllocs()
	for range b.N {
		sctx, send := tr.Start(ctx, "send bench")
		send.End()
		_, proc := tr.Start(sctx, "process bench")
		proc.End()
	}
}

// BenchmarkSDKSpanFloorWithAttributes is BenchmarkSDKSpanFloor with the
// spans BenchmarkBrokerTracerCalls/sdk records: the same kinds, the same
// number and types of attributes (given at Start with
// trace.WithAttributes, options built per call the plain way), the
// process span linked to the send span, and its outcome attribute set at
// the end. Still no propagation and no metrics: what the SDK costs for
// Broker()'s spans when they are recorded without Broker()'s reuse of
// options and attribute slices.
func BenchmarkSDKSpanFloorWithAttributes(b *testing.B) {
	tr := benchTracerProvider(b).Tracer("bench")
	ctx := context.Background()
	payload := make([]byte, 1024)
	b.ReportAllocs()
	for range b.N {
		sctx, send := tr.Start(ctx, "send bench", trace.WithSpanKind(trace.SpanKindProducer),
			trace.WithAttributes(
				semconv.MessagingSystemKey.String("memory"),
				semconv.MessagingDestinationName("bench"),
				semconv.MessagingOperationTypeSend,
				semconv.MessagingOperationName("send"),
				semconv.MessagingMessageID("id")))
		send.End()
		_, proc := tr.Start(sctx, "process bench", trace.WithSpanKind(trace.SpanKindConsumer),
			trace.WithLinks(trace.Link{SpanContext: send.SpanContext()}),
			trace.WithAttributes(
				semconv.MessagingSystemKey.String("memory"),
				semconv.MessagingDestinationName("bench"),
				semconv.MessagingOperationTypeProcess,
				semconv.MessagingOperationName("process"),
				semconv.MessagingMessageID("id"),
				attribute.Int("patterns.messaging.attempt", 1),
				semconv.MessagingMessageBodySize(len(payload)),
				semconv.MessagingConsumerGroupName("g")))
		proc.SetAttributes(attribute.String("patterns.messaging.outcome", "ok"))
		proc.End()
	}
}

// randomSpanContext returns ctx carrying a new sampled remote span
// context with random IDs, as a root span of the SDK would have.
func randomSpanContext(ctx context.Context) context.Context {
	var tid trace.TraceID
	var sid trace.SpanID
	binary.LittleEndian.PutUint64(tid[:8], rand.Uint64())
	binary.LittleEndian.PutUint64(tid[8:], rand.Uint64())
	binary.LittleEndian.PutUint64(sid[:], rand.Uint64())
	return trace.ContextWithRemoteSpanContext(ctx, trace.NewSpanContext(trace.SpanContextConfig{
		TraceID: tid, SpanID: sid, TraceFlags: trace.FlagsSampled, Remote: true}))
}

// BenchmarkBrokerMemoryPaired is BenchmarkBrokerMemory with two tracer
// set-ups alternating in one process, "none" and the sub-benchmark's:
// one memory broker each, legs of 20,000 messages
// (published from GOMAXPROCS goroutines until every one is handled), the
// first leg of each round alternating. Machine drift then hits both
// alike, and the per-round ratio (its median, reported as "/none": above
// 1 is slower) is far steadier than separate runs; "/none-cpu" is the
// median ratio of the CPU time the whole process used during the legs
// (getrusage):
//
//	go test -run '^$' -bench BrokerMemoryPaired -benchtime 1000000x ./telemetry/
func BenchmarkBrokerMemoryPaired(b *testing.B) {
	tracers := map[string]func() any{}
	for _, bt := range benchTracers(b) {
		tracers[bt.name] = bt.tr
	}
	// "none" against itself is the harness's own bias; "empty-tracer" a
	// tracer without the enabler methods, so always called; "off-tracer"
	// one whose enablers say no at once (the gate's cost without the
	// OpenTelemetry checks that global-noop adds).
	for _, name := range []string{"none", "empty-tracer", "off-tracer", "global-noop", "sdk", "sdk-floor"} {
		b.Run(name, func(b *testing.B) {
			const leg = 20_000
			newOther := func() func(int) time.Duration {
				var opts []memory.Option
				if tr := tracers[name](); tr != nil {
					opts = append(opts, memory.WithTracer(tr))
				}
				return memoryLeg(b, name, memory.MustNew(opts...))
			}
			// Two brokers of each set-up, made in both orders: where a
			// broker and its buffers land in memory favours some over
			// others by a few percent, which this spreads over both.
			base1 := memoryLeg(b, "none", memory.MustNew())
			other1 := newOther()
			other2 := newOther()
			base2 := memoryLeg(b, "none", memory.MustNew())
			legs := []struct {
				run   func(int) time.Duration
				other bool
			}{{base1, false}, {other1, true}, {other2, true}, {base2, false}}
			var baseTook, otherTook time.Duration
			var ratios, cpuRatios []float64
			b.ResetTimer()
			for round, done := 0, 0; done < b.N; round, done = round+1, done+leg {
				n := min(leg, b.N-done)
				// Each leg publishes n/2 messages, the first leg rotating.
				var tb, to, cb, co time.Duration
				for k := range legs {
					l := legs[(round+k)%len(legs)]
					cpu0 := testenv.ProcessCPU()
					took := l.run(max(n/2, 1))
					cpu := testenv.ProcessCPU() - cpu0
					if l.other {
						to, co = to+took, co+cpu
					} else {
						tb, cb = tb+took, cb+cpu
					}
				}
				baseTook += tb
				otherTook += to
				ratios = append(ratios, to.Seconds()/tb.Seconds())
				if cb > 0 && co > 0 {
					cpuRatios = append(cpuRatios, co.Seconds()/cb.Seconds())
				}
			}
			b.StopTimer()
			slices.Sort(ratios)
			b.ReportMetric(float64(b.N)/baseTook.Seconds(), "none-msg/s")
			b.ReportMetric(float64(b.N)/otherTook.Seconds(), name+"-msg/s")
			b.ReportMetric(ratios[len(ratios)/2], name+"/none")
			if len(cpuRatios) > 0 {
				slices.Sort(cpuRatios)
				b.ReportMetric(cpuRatios[len(cpuRatios)/2], name+"/none-cpu")
			}
		})
	}
}

// memoryLeg subscribes to br (concurrency 16, at most 4,096 messages in
// flight) and returns a function that publishes n 1 KiB messages over 64
// keys from GOMAXPROCS goroutines and returns once all n are handled. Its
// goroutines carry the profiler label setup=name (-cpuprofile, then
// pprof -tagfocus setup=global-noop).
func memoryLeg(b *testing.B, name string, br *memory.Broker) func(n int) time.Duration {
	labels := pprof.Labels("setup", name)
	ctx, cancel := context.WithCancel(context.Background())
	s := broker.Subscription{Topic: "bench", Group: "g", Concurrency: 16}
	if err := br.Provision(ctx, s); err != nil {
		b.Fatal(err)
	}
	const window = 4096
	slots := make(chan struct{}, window)
	var handled, target atomic.Int64
	done := make(chan struct{}, 1)
	subDone := make(chan struct{})
	go pprof.Do(ctx, labels, func(ctx context.Context) {
		defer close(subDone)
		_ = br.Subscribe(ctx, s, func(context.Context, broker.Message) error {
			<-slots
			if handled.Add(1) == target.Load() {
				done <- struct{}{}
			}
			return nil
		})
	})
	b.Cleanup(func() {
		cancel()
		<-subDone
		_ = br.Close()
	})
	payload := make([]byte, 1024)
	keys := make([]string, 64)
	for i := range keys {
		keys[i] = fmt.Sprintf("rentals.france.k%d", i)
	}
	return func(n int) time.Duration {
		handled.Store(0)
		target.Store(int64(n))
		var next atomic.Int64
		var wg sync.WaitGroup
		start := time.Now()
		for range runtime.GOMAXPROCS(0) {
			wg.Go(func() {
				pprof.SetGoroutineLabels(pprof.WithLabels(ctx, labels))
				for {
					i := next.Add(1)
					if i > int64(n) {
						return
					}
					slots <- struct{}{}
					m := broker.Message{ID: "id", Key: keys[i%64], Payload: payload}
					if err := br.Publish(ctx, "bench", m); err != nil {
						b.Error(err)
						return
					}
				}
			})
		}
		wg.Wait()
		<-done
		return time.Since(start)
	}
}
