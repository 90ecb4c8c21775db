package telemetry

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/go-integration/patterns/broker/outbox"
)

// Attributes of the outbox spans and metrics; the semantic conventions
// have none for them.
const (
	outboxAttrTable     = attribute.Key("patterns.outbox.table")     // the outbox table, as given to NewTable or WithTable
	outboxAttrWorker    = attribute.Key("patterns.outbox.worker")    // which worker of the relay ran the batch, from 0
	outboxAttrBuckets   = attribute.Key("patterns.outbox.buckets")   // the ordering buckets the batch claimed
	outboxAttrRows      = attribute.Key("patterns.outbox.rows")      // pending rows the batch read
	outboxAttrPublished = attribute.Key("patterns.outbox.published") // messages published and marked
	outboxAttrSetAside  = attribute.Key("patterns.outbox.set_aside") // messages the broker refused as invalid
	outboxAttrFailed    = attribute.Key("patterns.outbox.failed")    // messages whose publish failed
	outboxAttrLag       = attribute.Key("patterns.outbox.lag")       // seconds, see the batch.lag metric
	outboxAttrOutcome   = attribute.Key("patterns.outbox.outcome")   // see the outboxOutcome values
	outboxAttrCause     = attribute.Key("patterns.outbox.cause")     // why the relay waits: "batch" or "connection"
	outboxAttrFailures  = attribute.Key("patterns.outbox.failures")  // consecutive failures, on the backoff event
	outboxAttrWait      = attribute.Key("patterns.outbox.backoff")   // seconds, on the backoff event
)

// Values of outboxAttrOutcome on patterns.outbox.published.
const (
	outboxOutcomeOK       = "ok"        // confirmed by the broker and marked published
	outboxOutcomeSetAside = "set_aside" // refused by the broker as invalid: marked with the reason, not retried
	outboxOutcomeFailed   = "failed"    // the publish failed: the row stays pending and is published again
)

// outboxBatchSpan is the name of a relay batch's span, outboxBackoffEvent
// the event a backoff adds to the span in its context.
const (
	outboxBatchSpan    = "outbox relay batch"
	outboxBackoffEvent = "outbox.backoff"
)

// outboxBacklogTimeout bounds the query ObserveBacklog's callback runs at
// each collection.
const outboxBacklogTimeout = 5 * time.Second

// Outbox returns the tracer for broker/outbox. It implements
// outbox.AddTracer, to give to NewTable, and outbox.BatchTracer and
// outbox.BackoffTracer, to give to NewRelay; one value may go to both:
//
//	tr := tel.Outbox()
//	table, err := outbox.NewTable(outbox.DefaultTable, outbox.WithTracer(tr))
//	// ... table.Add(ctx, tx, "orders", msg) in the request's transaction
//	relay, err := outbox.NewRelay(pool, pub, outbox.WithTracer(tr))
//
// (the package-level outbox.Add traces nothing: trace through a Table).
//
//   - Each Add is a Producer span "create <topic>" (messaging.operation.type
//     "create"), a child of the caller's span, covering the insert; its
//     context is written into every message's Header (traceparent,
//     tracestate and baggage with the default propagator, replacing what
//     the caller put under those names) and stored in the row. With no
//     valid context (no provider and no span in the caller's context) the
//     headers are stored as given. When the relay publishes the row, the
//     Broker tracer continues that context: the send span, the consumer's
//     process span and the handler's work are in the trace of the request
//     that wrote the row.
//   - Each relay batch is an Internal span "outbox relay batch", a root
//     unless Run's context carries a span, with the table, worker, claimed
//     buckets, rows read, messages published, set aside and failed, and
//     the lag; a failed batch has an error status. The publisher's spans
//     (Broker) are its children.
//   - A backoff is an event on the span of its context, if any, and a
//     count.
//
// Metrics: patterns.outbox.published (messages, by outcome ok, set_aside
// or failed), patterns.outbox.batch.duration (claim to commit, error.type
// when the batch failed), patterns.outbox.batch.lag (for each batch that
// published, the age of its oldest published row when the broker
// confirmed it: from the insert, in the writer's transaction, to the
// publish) and patterns.outbox.backoffs, each with patterns.outbox.table;
// for the backlog, see ObserveBacklog.
func (t *Telemetry) Outbox() any { return &outboxTracer{t: t, fields: t.prop.Fields()} }

// outboxTracer is what Outbox returns.
type outboxTracer struct {
	t      *Telemetry
	fields []string  // the propagator's header names
	names  nameCache // "create <topic>"
}

var (
	_ outbox.AddTracer     = (*outboxTracer)(nil)
	_ outbox.BatchTracer   = (*outboxTracer)(nil)
	_ outbox.BackoffTracer = (*outboxTracer)(nil)
)

// outboxInstruments are the outbox tracer's metrics.
type outboxInstruments struct {
	published     metric.Int64Counter
	batchDuration metric.Float64Histogram
	batchLag      metric.Float64Histogram
	backoffs      metric.Int64Counter
	pending       metric.Int64ObservableGauge
	oldestAge     metric.Float64ObservableGauge
}

// outboxLagBuckets reach further than the durations': a relay behind a
// broker that was down for an hour publishes rows an hour old.
var outboxLagBuckets = []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600}

func (in *outboxInstruments) init(m metric.Meter) error {
	var err, e error
	in.published, e = m.Int64Counter("patterns.outbox.published", metric.WithUnit("{message}"),
		metric.WithDescription("Messages an outbox relay published (outcome ok), set aside as refused by the broker (set_aside), or failed to publish, to be published again (failed)."))
	err = errors.Join(err, e)
	in.batchDuration, e = m.Float64Histogram("patterns.outbox.batch.duration", metric.WithUnit("s"),
		metric.WithDescription("Duration of outbox relay batches, from the claim of their buckets to their commit or failure."),
		metric.WithExplicitBucketBoundaries(durationBuckets...))
	err = errors.Join(err, e)
	in.batchLag, e = m.Float64Histogram("patterns.outbox.batch.lag", metric.WithUnit("s"),
		metric.WithDescription("For each relay batch that published, the age of its oldest published row when the broker confirmed it."),
		metric.WithExplicitBucketBoundaries(outboxLagBuckets...))
	err = errors.Join(err, e)
	in.backoffs, e = m.Int64Counter("patterns.outbox.backoffs", metric.WithUnit("{backoff}"),
		metric.WithDescription("Waits of an outbox relay after a failed batch (cause batch) or a lost LISTEN connection (cause connection)."))
	err = errors.Join(err, e)
	in.pending, e = m.Int64ObservableGauge("patterns.outbox.pending", metric.WithUnit("{row}"),
		metric.WithDescription("Rows of an outbox table waiting to be published (ObserveBacklog)."))
	err = errors.Join(err, e)
	in.oldestAge, e = m.Float64ObservableGauge("patterns.outbox.oldest_pending.age", metric.WithUnit("s"),
		metric.WithDescription("Age of the oldest row of an outbox table waiting to be published, 0 when none (ObserveBacklog)."))
	return errors.Join(err, e)
}

// outboxAddOpts are the start options of a create span.
var outboxAddOpts = []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindProducer)}

// outboxAddKey is the context key of the create span, so that
// TraceAddEnd ends this tracer's span whatever other tracers put in the
// context after it.
type outboxAddKey struct{ o *outboxTracer }

// TraceAddStart starts the create span and writes its context into the
// messages' headers.
func (o *outboxTracer) TraceAddStart(ctx context.Context, d outbox.TraceAddStartData) context.Context {
	t := o.t
	ctx, span := t.tracer.Start(ctx, o.names.get("create ", d.Topic), outboxAddOpts...)
	if trace.SpanContextFromContext(ctx).IsValid() {
		// The row carries this context and nothing else: a tracestate or
		// baggage the caller's header held belongs to another trace. With
		// no context (no provider, no parent) the header stays as given.
		for i := range d.Messages {
			h := d.Messages[i].Header
			for _, f := range o.fields {
				delete(h, f)
			}
			t.prop.Inject(ctx, brokerCarrier(h))
		}
	}
	if !span.IsRecording() {
		return ctx
	}
	attrs := make([]attribute.KeyValue, 0, 5)
	attrs = append(attrs,
		semconv.MessagingDestinationName(d.Topic),
		semconv.MessagingOperationTypeCreate,
		semconv.MessagingOperationName("create"),
		outboxAttrTable.String(d.Table))
	if len(d.Messages) == 1 {
		attrs = append(attrs, semconv.MessagingMessageID(d.Messages[0].ID))
	} else {
		attrs = append(attrs, semconv.MessagingBatchMessageCount(len(d.Messages)))
	}
	span.SetAttributes(attrs...)
	return context.WithValue(ctx, outboxAddKey{o}, span)
}

// TraceAddEnd ends the create span, with an error status when the insert
// failed.
func (o *outboxTracer) TraceAddEnd(ctx context.Context, d outbox.TraceAddEndData) {
	span, _ := ctx.Value(outboxAddKey{o}).(trace.Span)
	if span == nil {
		return // not recording
	}
	if d.Err != nil {
		outboxFail(span, d.Err)
	}
	span.End()
}

// outboxBatch is what TraceBatchStart leaves in the context for
// TraceBatchEnd.
type outboxBatch struct {
	span  trace.Span
	table string
}

type outboxBatchKey struct{ o *outboxTracer }

var outboxBatchOpts = []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindInternal)}

// TraceBatchStart starts the batch's span; the publish runs in its context.
func (o *outboxTracer) TraceBatchStart(ctx context.Context, d outbox.TraceBatchStartData) context.Context {
	ctx, span := o.t.tracer.Start(ctx, outboxBatchSpan, outboxBatchOpts...)
	if span.IsRecording() {
		span.SetAttributes(
			outboxAttrTable.String(d.Table),
			outboxAttrWorker.Int(d.Worker),
			outboxAttrBuckets.IntSlice(d.Buckets))
	}
	return context.WithValue(ctx, outboxBatchKey{o}, &outboxBatch{span: span, table: d.Table})
}

// TraceBatchEnd ends the batch's span with its counts and records the
// metrics.
func (o *outboxTracer) TraceBatchEnd(ctx context.Context, d outbox.TraceBatchEndData) {
	b, _ := ctx.Value(outboxBatchKey{o}).(*outboxBatch)
	if b == nil {
		return
	}
	if b.span.IsRecording() {
		b.span.SetAttributes(
			outboxAttrRows.Int(d.Rows),
			outboxAttrPublished.Int(d.Published),
			outboxAttrSetAside.Int(d.SetAside),
			outboxAttrFailed.Int(d.Failed),
			outboxAttrLag.Float64(d.Lag.Seconds()))
		if d.Err != nil {
			outboxFail(b.span, d.Err)
		}
	}
	b.span.End()

	in := &o.t.instr.outbox
	table := outboxAttrTable.String(b.table)
	if in.published.Enabled(ctx) {
		for _, c := range [...]struct {
			n       int
			outcome string
		}{{d.Published, outboxOutcomeOK}, {d.SetAside, outboxOutcomeSetAside}, {d.Failed, outboxOutcomeFailed}} {
			if c.n > 0 {
				in.published.Add(ctx, int64(c.n), metric.WithAttributes(table, outboxAttrOutcome.String(c.outcome)))
			}
		}
	}
	if in.batchDuration.Enabled(ctx) {
		if d.Err != nil {
			in.batchDuration.Record(ctx, d.Duration.Seconds(), metric.WithAttributes(table, semconv.ErrorTypeKey.String(outboxErrorType(d.Err))))
		} else {
			in.batchDuration.Record(ctx, d.Duration.Seconds(), metric.WithAttributes(table))
		}
	}
	if d.Published > 0 && in.batchLag.Enabled(ctx) {
		in.batchLag.Record(ctx, d.Lag.Seconds(), metric.WithAttributes(table))
	}
}

// TraceBackoff counts the wait and adds an event to the span of ctx.
func (o *outboxTracer) TraceBackoff(ctx context.Context, d outbox.TraceBackoffData) {
	cause := "batch"
	if d.Worker < 0 {
		cause = "connection"
	}
	if span := trace.SpanFromContext(ctx); span.IsRecording() {
		attrs := []attribute.KeyValue{
			outboxAttrTable.String(d.Table), outboxAttrCause.String(cause), outboxAttrWorker.Int(d.Worker),
			outboxAttrFailures.Int(d.Failures), outboxAttrWait.Float64(d.Wait.Seconds()),
		}
		if d.Err != nil {
			attrs = append(attrs, semconv.ErrorTypeKey.String(outboxErrorType(d.Err)), attribute.String("exception.message", d.Err.Error()))
		}
		span.AddEvent(outboxBackoffEvent, trace.WithAttributes(attrs...))
	}
	in := &o.t.instr.outbox
	if in.backoffs.Enabled(ctx) {
		attrs := []attribute.KeyValue{outboxAttrTable.String(d.Table), outboxAttrCause.String(cause)}
		if d.Err != nil {
			attrs = append(attrs, semconv.ErrorTypeKey.String(outboxErrorType(d.Err)))
		}
		in.backoffs.Add(ctx, 1, metric.WithAttributes(attrs...))
	}
}

// outboxFail marks span as failed with err.
func outboxFail(span trace.Span, err error) {
	span.RecordError(err)
	span.SetStatus(codes.Error, err.Error())
	span.SetAttributes(semconv.ErrorTypeKey.String(outboxErrorType(err)))
}

// outboxErrorType is the low-cardinality error.type of an outbox error:
// the SQLSTATE of a PostgreSQL error, else the broker's kind of error.
func outboxErrorType(err error) string {
	if et := commonErrorType(err); et != "" {
		return et
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code
	}
	return brokerErrorType(err)
}

// ObserveBacklog reports r's table backlog as two observable gauges,
// patterns.outbox.pending (rows) and patterns.outbox.oldest_pending.age
// (seconds), with patterns.outbox.table. Nothing is queried on the
// publishing path: at each collection of the MeterProvider's readers (every
// export interval, or each Prometheus scrape) a callback runs
// r.Backlog, one count over the pending rows, bounded by 5 s (or the
// collection's own deadline if shorter). A failed query reports nothing
// for that collection and logs a warning; a closed relay reports nothing.
// The backlog is the table's, whichever relay asks: observe one relay per
// table. Call stop (idempotent) before closing the relay or the pool to
// unregister the callback.
func (t *Telemetry) ObserveBacklog(r *outbox.Relay) (stop func() error, err error) {
	if r == nil {
		return nil, fmt.Errorf("%w: ObserveBacklog needs a relay", ErrInvalidOption)
	}
	in := &t.instr.outbox
	reg, err := t.meter.RegisterCallback(func(ctx context.Context, obs metric.Observer) error {
		ctx, cancel := context.WithTimeout(ctx, outboxBacklogTimeout)
		defer cancel()
		b, err := r.Backlog(ctx)
		switch {
		case errors.Is(err, outbox.ErrClosed):
			return nil
		case err != nil:
			t.logger.Warn("telemetry: outbox backlog not observed", "error", err)
			return nil
		}
		attrs := metric.WithAttributes(outboxAttrTable.String(b.Table))
		obs.ObserveInt64(in.pending, b.Pending, attrs)
		obs.ObserveFloat64(in.oldestAge, b.OldestPending.Seconds(), attrs)
		return nil
	}, in.pending, in.oldestAge)
	if err != nil {
		return nil, fmt.Errorf("telemetry: ObserveBacklog: %w", err)
	}
	return sync.OnceValue(reg.Unregister), nil
}
