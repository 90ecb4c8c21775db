package outbox

import (
	"context"
	"time"

	"github.com/go-integration/patterns/broker"
)

// AddTracer traces Table.Add: one Start and one End per call that passed
// its checks (a call refused with broker.ErrInvalidMessage, or with no
// messages, is not traced). Install it on a table with
// NewTable(name, WithTracer(t)); the package-level Add writes to a table
// without tracers.
//
// TraceAddStart is called once the messages were checked and their IDs
// and Times filled, before the rows are written: the headers a tracer adds
// to data.Messages are stored in the rows, so the relay publishes them (a
// propagator injects the caller's trace context there, and the publish
// continues that trace). The context it returns is the one the rows are
// written in, and the one TraceAddEnd receives, so a span can live in it.
// TraceAddEnd is called once the insert returned. Both are called
// synchronously, on the caller's goroutine, and must not block.
type AddTracer interface {
	TraceAddStart(ctx context.Context, data TraceAddStartData) context.Context
	TraceAddEnd(ctx context.Context, data TraceAddEndData)
}

// TraceAddStartData describes an Add call.
type TraceAddStartData struct {
	Table string // the outbox table, as given to NewTable
	Topic string // the topic the messages will be published to
	// Messages are the messages to be written, IDs and Times filled. They
	// are copies made for the tracers: each Header is a map of its own
	// (never nil, not the caller's), and what a tracer adds to it is
	// stored with the message and published with it; the other fields
	// are read from the caller's messages. Do not keep the slice.
	Messages []broker.Message
}

// TraceAddEndData is the outcome of an Add call.
type TraceAddEndData struct {
	// Err is what Add returned: nil when the rows were written (they are
	// published once the caller's transaction commits).
	Err error
	// Duration is the time from TraceAddStart to this call.
	Duration time.Duration
}

// BatchTracer traces the relay's batches. Install it with
// NewRelay(pool, pub, WithTracer(t)).
//
// TraceBatchStart is called once a batch has claimed its ordering buckets
// (a look that finds no bucket with pending rows is not a batch); the
// context it returns is the one the batch reads, publishes (the context
// given to broker.Publisher.Publish derives from it) and marks in, and the
// one TraceBatchEnd receives, so a span can live in it. TraceBatchEnd is
// called when the batch committed or failed. Both are called synchronously
// by the relay's worker and must not block.
type BatchTracer interface {
	TraceBatchStart(ctx context.Context, data TraceBatchStartData) context.Context
	TraceBatchEnd(ctx context.Context, data TraceBatchEndData)
}

// TraceBatchStartData describes a batch that claimed its buckets.
type TraceBatchStartData struct {
	Table   string // the outbox table, as given to WithTable
	Worker  int    // which worker of the relay runs the batch, from 0
	Buckets []int  // the ordering buckets the batch holds, in the order it reads them
}

// TraceBatchEndData is the outcome of a batch.
type TraceBatchEndData struct {
	// Rows is how many pending rows the batch read.
	Rows int
	// Published counts the messages the publisher confirmed, marked
	// published by the batch's commit.
	Published int
	// SetAside counts the messages the broker refused as invalid
	// (broker.ErrInvalidMessage or a broker.Permanent error): they are
	// marked with the reason in the error column and not retried.
	SetAside int
	// Failed counts the messages whose Publish failed: they stay pending
	// and are published again after the backoff.
	Failed int
	// Lag is the age, when the publisher confirmed it, of the oldest message
	// the batch published; zero when it published none.
	Lag time.Duration
	// Duration runs from the claim of the buckets to the commit (or failure).
	Duration time.Duration
	// Err is why the batch failed: a Publish error (some rows may still have
	// been published and marked) or a database error (nothing was marked).
	// Nil when every row read was published or set aside and committed.
	Err error
}

// BackoffTracer is told each time the relay waits after a failure. Install
// it with NewRelay(pool, pub, WithTracer(t)). TraceBackoff is called synchronously and must not block.
type BackoffTracer interface {
	TraceBackoff(ctx context.Context, data TraceBackoffData)
}

// TraceBackoffData describes a wait after a failure.
type TraceBackoffData struct {
	Table string // the outbox table, as given to WithTable
	// Worker is the worker whose batch failed, from 0; -1 when the LISTEN
	// connection was lost or the relay could not look up the table at start.
	Worker int
	// Failures counts the consecutive failures, from 1.
	Failures int
	Wait     time.Duration // how long the relay waits before trying again
	Err      error         // the failure
}
