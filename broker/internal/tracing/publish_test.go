package tracing

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/go-integration/patterns/broker"
)

type pubTracer struct{ starts, ends int }

func (p *pubTracer) TracePublishStart(ctx context.Context, d broker.TracePublishStartData) context.Context {
	p.starts++
	for i := range d.Messages {
		d.Header(i)["t"] = "x"
	}
	return ctx
}

func (p *pubTracer) TracePublishEnd(context.Context, broker.TracePublishEndData) { p.ends++ }

// Without tracers a call costs no allocation and hands the caller's
// messages through.
func TestUntracedDoesNotAllocate(t *testing.T) {
	r := New("test", []any{"not a publish tracer"})
	msgs := []broker.Message{{ID: "a"}}
	ctx := context.Background()
	allocs := testing.AllocsPerRun(100, func() {
		c, ms, call := r.StartAt(ctx, time.Now(), "t", msgs)
		if &ms[0] != &msgs[0] {
			t.Fatal("untraced Start copied the messages")
		}
		r.End(c, call, nil)
	})
	if allocs != 0 {
		t.Errorf("%v allocations per untraced call", allocs)
	}
	if st := r.Stats(); st.Published != 101 || st.InFlight != 0 {
		t.Errorf("stats %+v", st)
	}
}

// With tracers they get copies with Header maps of their own.
func TestTracedCopies(t *testing.T) {
	tr := &pubTracer{}
	r := New("test", []any{tr})
	caller := map[string]string{"k": "v"}
	msgs := []broker.Message{{ID: "a", Header: caller}, {ID: "b"}}
	ctx, ms, call := r.StartAt(context.Background(), time.Now(), "t", msgs)
	if st := r.Stats(); st.InFlight != 2 {
		t.Errorf("in flight %d, want 2", st.InFlight)
	}
	r.End(ctx, call, errors.New("refused"))
	if len(caller) != 1 || msgs[1].Header != nil {
		t.Errorf("the caller's messages changed: %+v", msgs)
	}
	if ms[0].Header["t"] != "x" || ms[0].Header["k"] != "v" || ms[1].Header["t"] != "x" {
		t.Errorf("traced copies %+v", ms)
	}
	if tr.starts != 1 || tr.ends != 1 {
		t.Errorf("tracer called %d/%d times", tr.starts, tr.ends)
	}
	if st := r.Stats(); st != (broker.PublisherStats{Failed: 2}) {
		t.Errorf("stats %+v", st)
	}
}

func TestCheck(t *testing.T) {
	if err := Check(&pubTracer{}, ""); err != nil {
		t.Error(err)
	}
	if err := Check(struct{}{}, "x.OwnTracer"); err == nil || !strings.Contains(err.Error(), "x.OwnTracer") {
		t.Errorf("Check(struct{}{}) = %v, want an error naming the adapter's interfaces", err)
	}
	own := func(v any) bool { _, ok := v.(string); return ok }
	if err := Check("a string", "x.OwnTracer", own); err != nil {
		t.Errorf("a value implementing the adapter's own interface: %v", err)
	}
}

type readTracer struct{}

func (readTracer) TracePublishStart(ctx context.Context, d broker.TracePublishStartData) context.Context {
	_ = d.Messages[0].Header["traceparent"]
	return ctx
}

func (readTracer) TracePublishEnd(context.Context, broker.TracePublishEndData) {}

// A tracer that writes no header costs no copy and no allocation.
func TestTracedWithoutWritesDoesNotCopy(t *testing.T) {
	r := New("test", []any{readTracer{}})
	msgs := []broker.Message{{ID: "a", Header: map[string]string{"k": "v"}}}
	ctx := context.Background()
	allocs := testing.AllocsPerRun(100, func() {
		c, ms, call := r.StartAt(ctx, time.Now(), "t", msgs)
		if &ms[0] != &msgs[0] {
			t.Fatal("Start copied the messages though no tracer wrote")
		}
		r.End(c, call, nil)
	})
	if allocs != 0 {
		t.Errorf("%v allocations per call", allocs)
	}
}

// offTracer is a pubTracer that reports itself disabled.
type offTracer struct{ pubTracer }

func (*offTracer) TracePublishEnabled(context.Context) bool { return false }

func TestGate(t *testing.T) {
	off, plain := &offTracer{}, &pubTracer{}
	ctx := context.Background()
	msgs := []broker.Message{{ID: "a"}}

	r := New("test", []any{off})
	c, ms, call := r.StartAt(ctx, time.Now(), "t", msgs)
	r.End(c, call, nil)
	if off.starts != 0 || off.ends != 0 || &ms[0] != &msgs[0] {
		t.Errorf("a disabled tracer was called (%d/%d) or the messages copied", off.starts, off.ends)
	}
	if st := r.Stats(); st.Published != 1 {
		t.Errorf("an untraced call was not counted: %+v", st)
	}

	// One tracer that is not an enabler: both are called.
	r = New("test", []any{off, plain})
	c, ms, call = r.StartAt(ctx, time.Now(), "t", msgs)
	r.End(c, call, nil)
	if off.starts != 1 || off.ends != 1 || plain.starts != 1 || plain.ends != 1 || ms[0].Header["t"] != "x" {
		t.Errorf("with a non-enabler both tracers must be called: %d/%d and %d/%d, header %v", off.starts, off.ends, plain.starts, plain.ends, ms[0].Header)
	}

	g := NewGate[broker.PublishTraceEnabler]([]broker.PublishTracer{off, off})
	asked := 0
	if g.Enabled(func(e broker.PublishTraceEnabler) bool { asked++; return asked == 2 }) != true || asked != 2 {
		t.Errorf("a gate is enabled when any enabler is; asked %d", asked)
	}
	var none Gate[broker.PublishTraceEnabler]
	if none.Enabled(func(broker.PublishTraceEnabler) bool { return true }) {
		t.Error("a gate without tracers is enabled")
	}
}
