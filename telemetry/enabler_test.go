package telemetry_test

import (
	"context"
	"testing"
	"time"

	"go.opentelemetry.io/otel/baggage"
	"go.opentelemetry.io/otel/metric/noop"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"

	"github.com/go-integration/patterns/broker"
	"github.com/go-integration/patterns/broker/memory"
	"github.com/go-integration/patterns/telemetry"
)

// TestBrokerTraceEnabled: on no-op providers Broker() tells the adapters
// to skip it unless there is trace context or baggage to pass on; with a
// real TracerProvider it is always enabled.
func TestBrokerTraceEnabled(t *testing.T) {
	tel, err := telemetry.New(telemetry.WithTracerProvider(tracenoop.NewTracerProvider()), telemetry.WithMeterProvider(noop.NewMeterProvider()))
	if err != nil {
		t.Fatal(err)
	}
	tr := tel.Broker()
	pe, ok := tr.(broker.PublishTraceEnabler)
	ce, ok2 := tr.(broker.ProcessTraceEnabler)
	if !ok || !ok2 {
		t.Fatal("Broker() implements neither enabler")
	}
	ctx := context.Background()
	sc := trace.NewSpanContext(trace.SpanContextConfig{TraceID: trace.TraceID{1}, SpanID: trace.SpanID{2}, TraceFlags: trace.FlagsSampled, Remote: true})
	member, _ := baggage.NewMember("tenant", "t1")
	bag, _ := baggage.New(member)
	for _, c := range []struct {
		name string
		ctx  context.Context
		want bool
	}{
		{"empty context", ctx, false},
		{"span context", trace.ContextWithSpanContext(ctx, sc), true},
		{"baggage", baggage.ContextWithBaggage(ctx, bag), true},
	} {
		if got := pe.TracePublishEnabled(c.ctx); got != c.want {
			t.Errorf("TracePublishEnabled(%s) = %v, want %v", c.name, got, c.want)
		}
	}
	for _, c := range []struct {
		name   string
		header map[string]string
		want   bool
	}{
		{"no header", nil, false},
		{"other headers", map[string]string{"k": "v"}, false},
		{"traceparent", map[string]string{"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}, true},
		{"baggage", map[string]string{"baggage": "tenant=t1"}, true},
	} {
		if got := ce.TraceProcessEnabled(ctx, "t", c.header); got != c.want {
			t.Errorf("TraceProcessEnabled(%s) = %v, want %v", c.name, got, c.want)
		}
	}

	sdk, err := telemetry.New(telemetry.WithTracerProvider(sdktrace.NewTracerProvider()), telemetry.WithMeterProvider(noop.NewMeterProvider()))
	if err != nil {
		t.Fatal(err)
	}
	st := sdk.Broker()
	if !st.(broker.PublishTraceEnabler).TracePublishEnabled(ctx) || !st.(broker.ProcessTraceEnabler).TraceProcessEnabled(ctx, "t", nil) {
		t.Error("with an SDK TracerProvider Broker() must always be enabled")
	}
}

// TestBrokerTraceNoopPassesContextOn: on no-op providers a Publish in a
// context carrying a span context still writes it into the message (the
// enabler lets the call through) and the handler runs in it.
func TestBrokerTraceNoopPassesContextOn(t *testing.T) {
	tel, err := telemetry.New(telemetry.WithTracerProvider(tracenoop.NewTracerProvider()), telemetry.WithMeterProvider(noop.NewMeterProvider()))
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
	ch := make(chan got, 2)
	btSubscribe(t, b, broker.Subscription{Topic: "t", Group: "g"}, func(ctx context.Context, m broker.Message) error {
		ch <- got{trace.SpanContextFromContext(ctx), m}
		return nil
	})
	sc := trace.NewSpanContext(trace.SpanContextConfig{TraceID: trace.TraceID{1}, SpanID: trace.SpanID{2}, TraceFlags: trace.FlagsSampled, Remote: true})
	btPublish(t, trace.ContextWithSpanContext(context.Background(), sc), b, "t", broker.Message{ID: "a"})
	select {
	case g := <-ch:
		if g.m.Header["traceparent"] == "" || g.sc.TraceID() != sc.TraceID() {
			t.Errorf("header %v, handler context %v: want the publisher's span context passed on", g.m.Header, g.sc)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("not handled")
	}
}
