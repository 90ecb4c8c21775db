package memory_test

import (
	"context"
	"testing"

	"github.com/go-integration/patterns/broker"
	"github.com/go-integration/patterns/broker/memory"
)

// readingTracer reads what an OpenTelemetry tracer without a provider
// reads (the headers, for trace context) and writes nothing.
type readingTracer struct{}

func (readingTracer) TracePublishStart(ctx context.Context, d broker.TracePublishStartData) context.Context {
	for _, m := range d.Messages {
		_ = m.Header["traceparent"]
	}
	return ctx
}
func (readingTracer) TracePublishEnd(context.Context, broker.TracePublishEndData) {}
func (readingTracer) TraceProcessStart(ctx context.Context, d broker.TraceProcessStartData) context.Context {
	_ = d.Message.Header["traceparent"]
	return ctx
}
func (readingTracer) TraceProcessEnd(context.Context, broker.TraceProcessEndData) {}

// roundTripAllocs returns the allocations of one Publish of a message
// and its handler call, on a broker with opts.
func roundTripAllocs(t *testing.T, header map[string]string, opts ...memory.Option) float64 {
	b := memory.MustNew(opts...)
	defer b.Close()
	ctx, cancel := context.WithCancel(context.Background())
	s := broker.Subscription{Topic: "allocs", Group: "g"}
	if err := b.Provision(ctx, s); err != nil {
		t.Fatal(err)
	}
	handled := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- b.Subscribe(ctx, s, func(context.Context, broker.Message) error {
			handled <- struct{}{}
			return nil
		})
	}()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	m := broker.Message{ID: "id", Key: "k", Payload: []byte("payload"), Header: header}
	return testing.AllocsPerRun(500, func() {
		if err := b.Publish(ctx, "allocs", m); err != nil {
			t.Fatal(err)
		}
		<-handled
	})
}

// A tracer that writes nothing (OpenTelemetry without a provider) adds no
// allocation to a Publish and its handler call: the adapters copy a
// message or its Header only when a tracer writes to it.
func TestTracerThatWritesNothingAddsNoAllocation(t *testing.T) {
	for _, h := range []map[string]string{nil, {"k": "v"}} {
		none := roundTripAllocs(t, h)
		traced := roundTripAllocs(t, h, memory.WithTracer(readingTracer{}))
		if traced > none {
			t.Errorf("header %v: %v allocations per message with a tracer that writes nothing, %v without tracer", h, traced, none)
		}
	}
}

// headerTracer adds a header to each message, as a recording tracer adds
// trace context.
type headerTracer struct{}

func (headerTracer) TracePublishStart(ctx context.Context, d broker.TracePublishStartData) context.Context {
	for i := range d.Messages {
		d.Header(i)["traceparent"] = "tp-" + d.Messages[i].ID
	}
	return ctx
}
func (headerTracer) TracePublishEnd(context.Context, broker.TracePublishEndData) {}

// What a tracer adds to the Header is sent; the caller's messages and maps
// are not modified.
func TestTracerHeadersAreSentAndCallersMapsUntouched(t *testing.T) {
	b := memory.MustNew(memory.WithTracer(headerTracer{}))
	defer b.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s := broker.Subscription{Topic: "hdr", Group: "g"}
	if err := b.Provision(ctx, s); err != nil {
		t.Fatal(err)
	}
	caller := map[string]string{"k": "v"}
	msgs := []broker.Message{{ID: "a", Header: caller}, {ID: "b"}}
	if err := b.Publish(ctx, "hdr", msgs...); err != nil {
		t.Fatal(err)
	}
	if len(caller) != 1 || caller["k"] != "v" || len(msgs[0].Header) != 1 || msgs[1].Header != nil {
		t.Errorf("the caller's messages changed: %+v", msgs)
	}
	got := make(chan broker.Message, 2)
	done := make(chan error, 1)
	sctx, scancel := context.WithCancel(ctx)
	go func() {
		done <- b.Subscribe(sctx, s, func(_ context.Context, m broker.Message) error {
			got <- m
			return nil
		})
	}()
	for range 2 {
		m := <-got
		if m.Header["traceparent"] != "tp-"+m.ID || (m.ID == "a" && m.Header["k"] != "v") {
			t.Errorf("message %s delivered with Header %v", m.ID, m.Header)
		}
	}
	scancel()
	if err := <-done; err != nil {
		t.Error(err)
	}
}
