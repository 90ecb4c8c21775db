package memory_test

import (
	"context"
	"fmt"
	"sort"
	"sync"

	"github.com/go-integration/patterns/broker"
	"github.com/go-integration/patterns/broker/memory"
)

// Two services bound with wildcard patterns, as on a RabbitMQ topic exchange.
func Example() {
	b := memory.MustNew()
	defer b.Close()
	ctx, cancel := context.WithCancel(context.Background())

	var mu sync.Mutex
	var got []string
	var wg sync.WaitGroup
	wg.Add(3) // france gets 1, all gets 2
	subscribe := func(group string, keys ...string) {
		s := broker.Subscription{Topic: "bookings", Group: group, Keys: keys}
		_ = b.Provision(ctx, s)
		go b.Subscribe(ctx, s, func(ctx context.Context, m broker.Message) error {
			mu.Lock()
			got = append(got, group+" <- "+m.Key)
			mu.Unlock()
			wg.Done()
			return nil
		})
	}
	subscribe("france", "rentals.france.*")
	subscribe("all", "rentals.#")

	_ = b.Publish(ctx, "bookings",
		broker.Message{Key: "rentals.france.nevache", Payload: []byte(`{"id":1}`)},
		broker.Message{Key: "rentals.italy.cortina", Payload: []byte(`{"id":2}`)},
	)
	wg.Wait()
	cancel()
	sort.Strings(got)
	for _, g := range got {
		fmt.Println(g)
	}
	// Output:
	// all <- rentals.france.nevache
	// all <- rentals.italy.cortina
	// france <- rentals.france.nevache
}

// traceparent is a tracer that propagates a made-up trace context: the
// producer's Start injects it into each message's Header, the consumer's
// Start reads it and puts it in the handler's context.
type traceparent struct{}

type traceKey struct{}

func (traceparent) TracePublishStart(ctx context.Context, d broker.TracePublishStartData) context.Context {
	for i := range d.Messages {
		d.Header(i)["traceparent"] = "00-trace-" + d.Topic
	}
	return ctx
}

func (traceparent) TracePublishEnd(ctx context.Context, d broker.TracePublishEndData) {}

func (traceparent) TraceProcessStart(ctx context.Context, d broker.TraceProcessStartData) context.Context {
	return context.WithValue(ctx, traceKey{}, d.Message.Header["traceparent"])
}

func (traceparent) TraceProcessEnd(ctx context.Context, d broker.TraceProcessEndData) {
	fmt.Println("processed:", d.Outcome)
}

// A tracer carries trace context from Publish to the handler; Stats count
// what happened.
func ExampleWithTracer() {
	b := memory.MustNew(memory.WithTracer(traceparent{}))
	defer b.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s := broker.Subscription{Topic: "bookings", Group: "billing"}
	_ = b.Provision(ctx, s)
	done := make(chan struct{})
	go b.Subscribe(ctx, s, func(ctx context.Context, m broker.Message) error {
		fmt.Println("handler runs in trace", ctx.Value(traceKey{}))
		close(done)
		return nil
	})
	_ = b.Publish(ctx, "bookings", broker.Message{Key: "rentals.france.nevache"})
	<-done
	cancel()
	_ = b.Close() // waits for the handler to settle
	st := b.Stats()
	fmt.Printf("published %d, handled %d\n", st.Publisher.Published, st.Subscriber.Handled)
	// Output:
	// handler runs in trace 00-trace-bookings
	// processed: acked
	// published 1, handled 1
}

// PublishAsync hands a message over and reports its outcome to a callback;
// Flush waits for every outcome. The same code runs on every adapter
// (broker.AsyncPublisher).
func ExampleBroker_PublishAsync() {
	b := memory.MustNew()
	defer b.Close()
	ctx := context.Background()
	_ = b.Provision(ctx, broker.Subscription{Topic: "bookings", Group: "billing"})

	var ap broker.AsyncPublisher = b
	var mu sync.Mutex
	failed := 0
	for i := range 3 {
		ap.PublishAsync(ctx, "bookings", broker.Message{Key: "booking.42", Payload: fmt.Appendf(nil, `{"n":%d}`, i)},
			func(m broker.Message, err error) {
				if err != nil {
					mu.Lock()
					failed++
					mu.Unlock()
				}
			})
	}
	ap.PublishAsync(ctx, "", broker.Message{}, func(_ broker.Message, err error) {
		fmt.Println("empty topic:", err)
	})
	if err := ap.Flush(ctx); err != nil {
		fmt.Println(err)
	}
	fmt.Println("failed:", failed, "pending for billing:", b.Pending("bookings", "billing"))
	// Output:
	// empty topic: broker: invalid message: empty topic
	// failed: 0 pending for billing: 3
}
