// Package tracing is what the broker adapters share of tracing and
// statistics beyond the engine (which traces and counts the consuming
// side): a Recorder wraps each Publish call in StartAt and End, so that
// Publish is traced and counted the same on every adapter, and Check
// validates a WithTracer value.
package tracing

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/go-integration/patterns/broker"
	"github.com/go-integration/patterns/internal/hooks"
)

// brokerTracerNames lists the broker tracer interfaces, for error messages.
const brokerTracerNames = "broker.PublishTracer, broker.ProcessTracer, broker.DeadLetterTracer"

// Check returns an error when t implements none of the broker tracer
// interfaces nor any interface extra checks (an adapter's own, named in
// extraNames); the adapter wraps it in its ErrInvalidOption.
func Check(t any, extraNames string, extra ...func(any) bool) error {
	names := brokerTracerNames
	if extraNames != "" {
		names += ", " + extraNames
	}
	checks := append([]func(any) bool{hooks.Is[broker.PublishTracer](), hooks.Is[broker.ProcessTracer](), hooks.Is[broker.DeadLetterTracer]()}, extra...)
	return hooks.Check(t, names, checks...)
}

// Recorder traces and counts one publisher's calls. Its zero value is not
// usable; New makes one.
type Recorder struct {
	system  string
	tracers []broker.PublishTracer
	gate    Gate[broker.PublishTraceEnabler]

	// The in-flight gauge is started minus ended, so that a call costs
	// two atomic additions. started is added to by the publishing
	// goroutines, published and failed mostly by the client's completion
	// goroutine (asynchronous publishing): the padding keeps them on
	// separate cache lines, so the two sides do not take the line from
	// each other on every message.
	started           atomic.Uint64
	_                 [56]byte
	published, failed atomic.Uint64
}

// New returns a Recorder for the adapter named system ("rabbitmq"),
// calling the broker.PublishTracer values among tracers in order.
func New(system string, tracers []any) *Recorder {
	ts := hooks.Pick[broker.PublishTracer](tracers)
	return &Recorder{system: system, tracers: ts, gate: NewGate[broker.PublishTraceEnabler](ts)}
}

// Call is one traced call, from StartAt to End.
type Call struct {
	n      int
	traced bool // the tracers were called: End must be too
	start  Mono
}

// StartAt begins a Publish call of msgs (IDs and Times already filled) to
// topic at now, the time read for broker.Prepare (so that a traced call
// does not read the clock again). It returns the context the tracers made
// and the messages to publish: msgs itself unless a tracer wrote a header
// (broker.TracePublishStartData.Header), then a copy carrying the
// tracers' Header maps. The caller's messages and maps are never
// modified, and a call whose tracers write nothing does not allocate.
func (r *Recorder) StartAt(ctx context.Context, now time.Time, topic string, msgs []broker.Message) (context.Context, []broker.Message, Call) {
	r.started.Add(uint64(len(msgs)))
	c := Call{n: len(msgs)}
	if !r.gate.Enabled(func(e broker.PublishTraceEnabler) bool { return e.TracePublishEnabled(ctx) }) {
		return ctx, msgs, c
	}
	c.traced = true
	c.start = MonoOf(now)
	ctx, msgs = broker.StartPublish(ctx, r.tracers, r.system, topic, msgs)
	return ctx, msgs, c
}

// End ends c with the call's result: it counts the messages as published
// or failed and calls the tracers' TracePublishEnd with ctx, the context
// StartAt returned.
func (r *Recorder) End(ctx context.Context, c Call, err error) {
	if err == nil {
		r.published.Add(uint64(c.n))
	} else {
		r.failed.Add(uint64(c.n))
	}
	if !c.traced {
		return
	}
	d := broker.TracePublishEndData{Err: err, Duration: c.start.Since()}
	for _, t := range r.tracers {
		t.TracePublishEnd(ctx, d)
	}
}

// Stats returns the counters.
func (r *Recorder) Stats() broker.PublisherStats {
	st := broker.PublisherStats{Published: r.published.Load(), Failed: r.failed.Load()}
	// Read last, so that it counts every call ended above.
	st.InFlight = int64(r.started.Load() - st.Published - st.Failed)
	return st
}
