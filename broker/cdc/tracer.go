package cdc

import (
	"context"
	"time"

	"github.com/jackc/pglogrepl"

	"github.com/go-integration/patterns/broker"
	"github.com/go-integration/patterns/internal/hooks"
)

// PublishTracer traces the source's Publish calls, one Start and one End
// per attempt (a retried batch is traced again). Install it with
// New(..., WithTracer(t)).
//
// TracePublishStart is called before Publish; the context it returns is
// the one Publish runs in and the one TracePublishEnd receives, so a span
// can live in it (and a broker tracer below continues it). Both are called
// synchronously by the source's publishing goroutine and must not block.
type PublishTracer interface {
	TracePublishStart(ctx context.Context, data TracePublishStartData) context.Context
	TracePublishEnd(ctx context.Context, data TracePublishEndData)
}

// TracePublishStartData describes a Publish call.
type TracePublishStartData struct {
	Topic string // prefix.schema.table
	// Messages are the call's messages, lent read-only: do not change or
	// keep them.
	Messages []broker.Message
	Snapshot bool // snapshot rows (op r) rather than streamed changes
	Attempt  int  // 1 for the first attempt of the batch
}

// TracePublishEndData is the outcome of a Publish call.
type TracePublishEndData struct {
	Err      error         // what Publish returned
	Duration time.Duration // from TracePublishStart to this call
}

// ConfirmTracer traces the position the source confirms: TraceConfirm is
// called each time it moves forward (before the server hears of it, at
// the next status update). It is called synchronously and must not block.
type ConfirmTracer interface {
	TraceConfirm(ctx context.Context, data TraceConfirmData)
}

// TraceConfirmData is a new confirmed position.
type TraceConfirmData struct {
	LSN pglogrepl.LSN // every change before it was published
	// Oldest is the commit time of the oldest transaction received and not
	// yet confirmed, zero when none: the time lag.
	Oldest time.Time
}

const tracerNames = "cdc.PublishTracer, cdc.ConfirmTracer"

type tracerOption struct{ t any }

func (o tracerOption) apply(c *config) {
	if err := hooks.Check(o.t, tracerNames, hooks.Is[PublishTracer](), hooks.Is[ConfirmTracer]()); err != nil {
		c.invalid("WithTracer: %v", err)
		return
	}
	c.tracers = append(c.tracers, o.t)
}

// WithTracer installs t, a value implementing PublishTracer and/or
// ConfirmTracer; a value implementing neither is refused with
// ErrInvalidOption. It may be given several times: tracers are called in
// the order given.
func WithTracer(t any) Option { return tracerOption{t} }
