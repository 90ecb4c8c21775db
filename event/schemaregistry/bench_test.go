package schemaregistry_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/go-integration/patterns/broker"
	"github.com/go-integration/patterns/broker/memory"
	"github.com/go-integration/patterns/event"
	"github.com/go-integration/patterns/event/avro"
	"github.com/go-integration/patterns/event/protobuf"
	"github.com/go-integration/patterns/event/protobuf/testpb"
)

// BenchmarkRegistryFraming measures publish→handle on the memory broker
// through the registry codec, producer and consumer with codecs and clients
// of their own, and reports registry-req/msg: the registry requests of both
// sides per event, which goes to 0 as b.N grows (the first message of the
// schema costs 3 requests on the producer and 1 on the consumer, then
// none). "bare" is the same flow with the inner codec unframed, to show the
// framing's own cost.
//
//	go test -run '^$' -bench BenchmarkRegistryFraming -benchmem ./event/schemaregistry
func BenchmarkRegistryFraming(b *testing.B) {
	ctx := context.Background()
	placed := &testpb.OrderPlaced{Order: "o-123456", Seq: 42, Items: []string{"tent", "stove", "mat"}, Total: 249.9}
	order := Order{Order: "o-123456", Seq: 42, Channel: "shop"}
	bareAvro, _ := avro.New()
	bareProto, _ := protobuf.New()

	type flavour struct {
		name   string
		framed bool
	}
	for _, fl := range []flavour{{"avro", true}, {"avro-bare", false}, {"protobuf", true}, {"protobuf-bare", false}} {
		b.Run(fl.name, func(b *testing.B) {
			f := newFake(b)
			isAvro := fl.name[:4] == "avro"
			codec := func() event.Codec {
				switch {
				case !fl.framed && isAvro:
					return bareAvro
				case !fl.framed:
					return bareProto
				case isAvro:
					return newAvro(b, f)
				}
				return newProto(b, f)
			}
			newReg := func() *event.Registry {
				r, err := event.NewRegistry(event.WithSource("/bench"))
				must(b, err)
				if isAvro {
					must(b, event.Register[Order](r, typeOrder, event.WithCodec(codec()), event.WithSchema(orderSchemaV2)))
				} else {
					must(b, event.Register[*testpb.OrderPlaced](r, typePlaced, event.WithCodec(codec()), event.WithSchema(testpb.OrderProto)))
				}
				return r
			}
			prod, cons := newReg(), newReg()
			rt, err := event.NewRouter(cons)
			must(b, err)
			var wg sync.WaitGroup
			if isAvro {
				must(b, event.Handle(rt, func(_ context.Context, e event.Event[Order]) error {
					if e.Data.Seq != 42 {
						b.Error("bad event")
					}
					wg.Done()
					return nil
				}))
			} else {
				must(b, event.Handle(rt, func(_ context.Context, e event.Event[*testpb.OrderPlaced]) error {
					if e.Data.Seq != 42 {
						b.Error("bad event")
					}
					wg.Done()
					return nil
				}))
			}
			br, err := memory.New(memory.WithLogger(quiet()))
			must(b, err)
			b.Cleanup(func() { _ = br.Close() })
			subCtx, cancel := context.WithCancel(ctx)
			s := broker.Subscription{Topic: "bench", Group: "g", DeadLetterTopic: "bench.dlq"}
			must(b, br.Provision(subCtx, s))
			done := make(chan error, 1)
			go func() { done <- br.Subscribe(subCtx, s, rt.Handler()) }()
			b.Cleanup(func() { cancel(); <-done })

			n := 0
			cpu0 := processCPU()
			for b.Loop() {
				wg.Add(1)
				var err error
				if isAvro {
					err = event.Publish(ctx, prod, br, "bench", "k", order)
				} else {
					err = event.Publish(ctx, prod, br, "bench", "k", placed)
				}
				if err != nil {
					b.Fatal(err)
				}
				if n++; n%64 == 0 {
					wg.Wait()
				}
			}
			waitTimeout(b, &wg)
			reportCPU(b, cpu0, n)
			b.ReportMetric(float64(f.requests.Load())/float64(n), "registry-req/msg")
			b.ReportMetric(float64(f.requests.Load()), "registry-req")
		})
	}
}

func waitTimeout(b *testing.B, wg *sync.WaitGroup) {
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		b.Fatal("events not handled")
	}
}

// BenchmarkCodec measures Marshal+Unmarshal of one event without a broker,
// framed and bare, after the first message: the framing's own cost.
//
//	go test -run '^$' -bench BenchmarkCodec -benchmem ./event/schemaregistry
func BenchmarkCodec(b *testing.B) {
	ctx := context.Background()
	f := newFake(b)
	bareAvro, _ := avro.New()
	bareProto, _ := protobuf.New()
	at := typeOf[Order](typeOrder, "orders", orderSchemaV2)
	pt := typeOf[*testpb.OrderPlaced](typePlaced, "orders-pb", testpb.OrderProto)
	order := Order{Order: "o-123456", Seq: 42, Channel: "shop"}
	placed := &testpb.OrderPlaced{Order: "o-123456", Seq: 42, Items: []string{"tent", "stove", "mat"}, Total: 249.9}
	for _, tc := range []struct {
		name  string
		codec event.Codec
		ti    event.TypeInfo
		v     any
		into  func() any
	}{
		{"avro", newAvro(b, f), at, order, func() any { return new(Order) }},
		{"avro-bare", bareAvro, at, order, func() any { return new(Order) }},
		{"protobuf", newProto(b, f), pt, placed, func() any { return new(testpb.OrderPlaced) }},
		{"protobuf-bare", bareProto, pt, placed, func() any { return new(testpb.OrderPlaced) }},
	} {
		b.Run(tc.name, func(b *testing.B) {
			before := f.requests.Load()
			cpu0 := processCPU()
			n := 0
			for b.Loop() {
				n++
				data, err := tc.codec.Marshal(ctx, tc.ti, tc.v)
				if err != nil {
					b.Fatal(err)
				}
				if err := tc.codec.Unmarshal(ctx, tc.ti, data, tc.into()); err != nil {
					b.Fatal(err)
				}
			}
			reportCPU(b, cpu0, n)
			b.ReportMetric(float64(f.requests.Load()-before), "registry-req")
		})
	}
}

// reportCPU reports the process's CPU time per operation.
func reportCPU(b *testing.B, cpu0 time.Duration, n int) {
	if cpu := processCPU() - cpu0; cpu > 0 && n > 0 {
		b.ReportMetric(float64(cpu.Nanoseconds())/float64(n), "cpu-ns/op")
	}
}
