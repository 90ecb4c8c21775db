package event_test

import (
	"context"
	"encoding/json"
	"sync"
	"testing"
	"time"

	"github.com/go-integration/patterns/broker"
	"github.com/go-integration/patterns/broker/memory"
	"github.com/go-integration/patterns/event"
)

// BenchmarkTypedJSON measures publish→handle on the memory broker, one
// event per iteration, waiting for every 64th to be handled so the queue
// stays short: "typed" through Publish and a Router (CloudEvents
// attributes in headers), "manual" with hand-written json.Marshal/Unmarshal
// and a type header, the flow the package replaces. Target: typed at least
// 0.8x the manual rate. Besides ns/op (wall time, which suffers on a loaded
// machine) it reports cpu-ns/op, the process's CPU time per event.
// "manual-ce" is the hand-written flow carrying the same CloudEvents headers,
// to separate the cost of the envelope from that of the typed layer.
//
//	go test -run '^$' -bench BenchmarkTypedJSON -benchmem -count 6 ./event
func BenchmarkTypedJSON(b *testing.B) {
	v := OrderPlaced{Order: "o-123456", Seq: 42, Items: []string{"tent", "stove", "mat"}, Total: 249.9}
	b.Run("typed", func(b *testing.B) {
		reg := registry(b)
		rt, err := event.NewRouter(reg)
		must(b, err)
		var wg sync.WaitGroup
		must(b, event.Handle(rt, func(_ context.Context, e event.Event[OrderPlaced]) error {
			if e.Data.Seq != 42 {
				b.Error("bad event")
			}
			wg.Done()
			return nil
		}))
		pub := benchBroker(b, rt.Handler())
		ctx := context.Background()
		n := 0
		cpu0 := processCPU()
		for b.Loop() {
			wg.Add(1)
			if err := event.Publish(ctx, reg, pub, "bench", "orders.o1", v); err != nil {
				b.Fatal(err)
			}
			if n++; n%64 == 0 {
				wg.Wait()
			}
		}
		wg.Wait()
		reportCPU(b, cpu0)
	})
	b.Run("manual", func(b *testing.B) {
		var wg sync.WaitGroup
		h := func(_ context.Context, m broker.Message) error {
			switch m.Header["type"] {
			case typePlaced:
				var e OrderPlaced
				if err := json.Unmarshal(m.Payload, &e); err != nil {
					return broker.Permanent(err)
				}
				if e.Seq != 42 {
					b.Error("bad event")
				}
				wg.Done()
				return nil
			}
			return broker.Permanent(event.ErrUnknownType)
		}
		pub := benchBroker(b, h)
		ctx := context.Background()
		n := 0
		cpu0 := processCPU()
		for b.Loop() {
			wg.Add(1)
			data, err := json.Marshal(v)
			if err != nil {
				b.Fatal(err)
			}
			if err := pub.Publish(ctx, "bench", broker.Message{Key: "orders.o1", Payload: data, Header: map[string]string{"type": typePlaced}}); err != nil {
				b.Fatal(err)
			}
			if n++; n%64 == 0 {
				wg.Wait()
			}
		}
		wg.Wait()
		reportCPU(b, cpu0)
	})
	// manual-ce is manual with the same CloudEvents headers typed writes,
	// written and read by hand: what the envelope itself costs.
	b.Run("manual-ce", func(b *testing.B) {
		var wg sync.WaitGroup
		h := func(_ context.Context, m broker.Message) error {
			if m.Header["ce_specversion"] != "1.0" || m.Header["ce_id"] == "" || m.Header["ce_source"] == "" {
				return broker.Permanent(event.ErrMissingAttribute)
			}
			if _, err := time.Parse(time.RFC3339Nano, m.Header["ce_time"]); err != nil {
				return broker.Permanent(err)
			}
			switch m.Header["ce_type"] {
			case typePlaced:
				var e OrderPlaced
				if err := json.Unmarshal(m.Payload, &e); err != nil {
					return broker.Permanent(err)
				}
				if e.Seq != 42 {
					b.Error("bad event")
				}
				wg.Done()
				return nil
			}
			return broker.Permanent(event.ErrUnknownType)
		}
		pub := benchBroker(b, h)
		ctx := context.Background()
		n := 0
		cpu0 := processCPU()
		for b.Loop() {
			wg.Add(1)
			data, err := json.Marshal(v)
			if err != nil {
				b.Fatal(err)
			}
			id, now := broker.NewID(), time.Now()
			m := broker.Message{ID: id, Key: "orders.o1", Payload: data, Time: now, Header: map[string]string{
				"ce_specversion": "1.0", "ce_id": id, "ce_source": "/tests/orders", "ce_type": typePlaced,
				"ce_time": now.UTC().Format(time.RFC3339Nano), "ce_dataversion": "1", "content-type": "application/json",
			}}
			if err := pub.Publish(ctx, "bench", m); err != nil {
				b.Fatal(err)
			}
			if n++; n%64 == 0 {
				wg.Wait()
			}
		}
		wg.Wait()
		reportCPU(b, cpu0)
	})
}

// benchBroker returns a memory broker whose "bench" topic is consumed by h.
func benchBroker(b *testing.B, h broker.Handler) broker.Publisher {
	mb, err := memory.New(memory.WithLogger(quiet()))
	must(b, err)
	ctx, cancel := context.WithCancel(context.Background())
	s := broker.Subscription{Topic: "bench", Group: "g", DeadLetterTopic: "bench.dlq"}
	must(b, mb.Provision(ctx, s))
	done := make(chan struct{})
	go func() { defer close(done); _ = mb.Subscribe(ctx, s, h) }()
	b.Cleanup(func() { cancel(); <-done; _ = mb.Close() })
	return mb
}

func reportCPU(b *testing.B, cpu0 time.Duration) {
	if cpu := processCPU() - cpu0; cpu > 0 {
		b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N), "cpu-ns/op")
	}
}
