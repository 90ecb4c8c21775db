package broker_test

import (
	"context"
	"testing"

	"github.com/go-integration/patterns/broker"
)

// writer adds key=value to each message through Header, and records what
// it read in Messages.
type writer struct {
	key, value string
	saw        []map[string]string
}

func (w *writer) TracePublishStart(ctx context.Context, d broker.TracePublishStartData) context.Context {
	for i, m := range d.Messages {
		seen := map[string]string{}
		for k, v := range m.Header {
			seen[k] = v
		}
		w.saw = append(w.saw, seen)
		if w.key != "" {
			d.Header(i)[w.key] = w.value
		}
	}
	return ctx
}

func (*writer) TracePublishEnd(context.Context, broker.TracePublishEndData) {}

// Tracers that write get copies: the caller's slice and maps are left
// alone, a later tracer sees what an earlier one wrote, and the messages
// to send carry it all.
func TestStartPublishCopiesOnWrite(t *testing.T) {
	caller := map[string]string{"k": "v"}
	msgs := []broker.Message{{ID: "a", Header: caller}, {ID: "b"}}
	a, b := &writer{key: "ta", value: "1"}, &writer{key: "tb", value: "2"}
	_, sent := broker.StartPublish(context.Background(), []broker.PublishTracer{a, b}, "test", "t", msgs)
	if len(caller) != 1 || msgs[1].Header != nil || len(msgs[0].Header) != 1 {
		t.Errorf("the caller's messages changed: %+v", msgs)
	}
	if &sent[0] == &msgs[0] {
		t.Fatal("tracers wrote, but the caller's slice is sent")
	}
	want := []map[string]string{{"k": "v", "ta": "1", "tb": "2"}, {"ta": "1", "tb": "2"}}
	for i, w := range want {
		if len(sent[i].Header) != len(w) {
			t.Errorf("message %d sent with %v, want %v", i, sent[i].Header, w)
		}
		for k, v := range w {
			if sent[i].Header[k] != v {
				t.Errorf("message %d sent with %v, want %v", i, sent[i].Header, w)
			}
		}
	}
	if len(b.saw) != 2 || b.saw[0]["ta"] != "1" || b.saw[1]["ta"] != "1" {
		t.Errorf("the second tracer read %v, want what the first wrote", b.saw)
	}
	if len(a.saw) != 2 || a.saw[0]["k"] != "v" || len(a.saw[1]) != 0 {
		t.Errorf("the first tracer read %v", a.saw)
	}
}

// Tracers that do not write cost no copy and no allocation.
func TestStartPublishWithoutWritesDoesNotAllocate(t *testing.T) {
	msgs := []broker.Message{{ID: "a", Header: map[string]string{"k": "v"}}, {ID: "b"}}
	ctx := context.Background()
	r := &readOnly{}
	tracers := []broker.PublishTracer{r, r}
	allocs := testing.AllocsPerRun(100, func() {
		_, sent := broker.StartPublish(ctx, tracers, "test", "t", msgs)
		if &sent[0] != &msgs[0] {
			t.Fatal("no tracer wrote, but the messages were copied")
		}
	})
	if allocs != 0 {
		t.Errorf("%v allocations per call", allocs)
	}
	if r.n != 2*101 {
		t.Errorf("tracers called %d times, want %d", r.n, 2*101)
	}
}

// readOnly reads the messages' headers and writes nothing.
type readOnly struct{ n int }

func (r *readOnly) TracePublishStart(ctx context.Context, d broker.TracePublishStartData) context.Context {
	r.n++
	for _, m := range d.Messages {
		_ = m.Header["traceparent"]
	}
	return ctx
}

func (*readOnly) TracePublishEnd(context.Context, broker.TracePublishEndData) {}

// Data built by hand (a tracer's own test) writes in place.
func TestTracePublishStartDataHeaderByHand(t *testing.T) {
	d := broker.TracePublishStartData{Messages: []broker.Message{{ID: "a"}}}
	d.Header(0)["x"] = "y"
	if d.Messages[0].Header["x"] != "y" {
		t.Errorf("Header on hand-built data: %+v", d.Messages)
	}
}

// Past 64 messages (the bit set's size) copy on write works the same.
func TestStartPublishManyMessages(t *testing.T) {
	msgs := make([]broker.Message, 70)
	for i := range msgs {
		msgs[i].Header = map[string]string{"i": "x"}
	}
	a, b := &writer{key: "ta", value: "1"}, &writer{key: "tb", value: "2"}
	_, sent := broker.StartPublish(context.Background(), []broker.PublishTracer{a, b}, "test", "t", msgs)
	for i := range msgs {
		if len(msgs[i].Header) != 1 {
			t.Fatalf("caller's message %d changed: %v", i, msgs[i].Header)
		}
		if h := sent[i].Header; len(h) != 3 || h["ta"] != "1" || h["tb"] != "2" || h["i"] != "x" {
			t.Fatalf("message %d sent with %v", i, h)
		}
	}
}
