package telemetry

import (
	"context"
	"errors"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/go-integration/patterns/rpc/amqprpc"
)

// AMQPRPC returns the tracer for amqprpc.WithTracer. It implements
// amqprpc.CallTracer (a Client), amqprpc.ServeTracer (a Server) and
// amqprpc.ConnectionTracer (both).
//
// A call is a client span "call <queue>" with messaging.system "rabbitmq",
// messaging.operation.name "call", messaging.operation.type "send",
// messaging.destination.name and messaging.rabbitmq.destination.routing_key
// the queue, messaging.message.conversation_id the correlation id and
// messaging.message.body.size; its context is injected into the request's
// header. A served request is a server span "serve <queue>" whose parent is
// the caller's span, extracted from the request's header (a malformed or
// oversized traceparent or tracestate is ignored: the span is a new root);
// the handler runs in it. A handler's error (an *amqprpc.Error's Code is
// error.type), a failed call or reply is the span's Error status.
//
// Metrics: patterns.amqprpc.call.duration and patterns.amqprpc.serve.duration
// (seconds, by messaging.destination.name and error.type), and
// patterns.amqprpc.connection.events by patterns.amqprpc.role ("client",
// "server") and patterns.amqprpc.connection.event ("up", "lost",
// "dial-failed"), also an event "amqprpc.connection" on the current span.
func (t *Telemetry) AMQPRPC() any { return &amqprpcTracer{t: t} }

// amqprpcTracer is what AMQPRPC returns.
type amqprpcTracer struct {
	t          *Telemetry
	callNames  nameCache // "call <queue>"
	serveNames nameCache // "serve <queue>"
}

var (
	_ amqprpc.CallTracer       = (*amqprpcTracer)(nil)
	_ amqprpc.ServeTracer      = (*amqprpcTracer)(nil)
	_ amqprpc.ConnectionTracer = (*amqprpcTracer)(nil)
)

// amqprpcInstruments are the instruments of AMQPRPC.
type amqprpcInstruments struct {
	callDuration  metric.Float64Histogram
	serveDuration metric.Float64Histogram
	connections   metric.Int64Counter
}

func (in *amqprpcInstruments) init(m metric.Meter) error {
	var err error
	var errs []error
	in.callDuration, err = m.Float64Histogram("patterns.amqprpc.call.duration",
		metric.WithUnit("s"), metric.WithDescription("Duration of amqprpc calls, from publishing the request to the reply."),
		metric.WithExplicitBucketBoundaries(durationBuckets...))
	errs = append(errs, err)
	in.serveDuration, err = m.Float64Histogram("patterns.amqprpc.serve.duration",
		metric.WithUnit("s"), metric.WithDescription("Duration of amqprpc requests served, handler and reply."),
		metric.WithExplicitBucketBoundaries(durationBuckets...))
	errs = append(errs, err)
	in.connections, err = m.Int64Counter("patterns.amqprpc.connection.events",
		metric.WithUnit("{event}"), metric.WithDescription("amqprpc connections made, lost and failed, by role."))
	errs = append(errs, err)
	return errors.Join(errs...)
}

const (
	keyAMQPRPCRole         = attribute.Key("patterns.amqprpc.role")
	keyAMQPRPCConnEvent    = attribute.Key("patterns.amqprpc.connection.event")
	keyAMQPRPCFailures     = attribute.Key("patterns.amqprpc.connection.failures")
	keyAMQPRPCRedelivered  = attribute.Key("patterns.amqprpc.redelivered")
	keyAMQPRPCReplyBody    = attribute.Key("patterns.amqprpc.reply.body.size")
	amqprpcOperationCall   = "call"
	amqprpcOperationServe  = "serve"
	amqprpcReplyFailedType = "reply_failed"
)

type amqprpcSpanKey struct{}

// amqprpcSpan is the context the Start methods return: ctx with the span
// under amqprpcSpanKey (see httpAttempt).
type amqprpcSpan struct {
	context.Context
	span trace.Span
}

func (s *amqprpcSpan) Value(key any) any {
	if key == (amqprpcSpanKey{}) {
		return s.span
	}
	return s.Context.Value(key)
}

// TraceCallStart starts the call's client span and injects its context
// into the request's header.
func (r *amqprpcTracer) TraceCallStart(ctx context.Context, d amqprpc.TraceCallStartData) context.Context {
	ctx, span := r.t.tracer.Start(ctx, r.callNames.get(amqprpcOperationCall+" ", d.Queue), rwClientOpts...)
	if span.IsRecording() {
		span.SetAttributes(semconv.MessagingSystemRabbitMQ,
			semconv.MessagingOperationName(amqprpcOperationCall), semconv.MessagingOperationTypeSend,
			semconv.MessagingDestinationName(d.Queue), semconv.MessagingRabbitMQDestinationRoutingKey(d.Queue),
			semconv.MessagingMessageConversationID(d.CorrelationID), semconv.MessagingMessageBodySize(d.BodySize))
	}
	r.t.prop.Inject(ctx, brokerCarrier(d.Header))
	return &amqprpcSpan{ctx, span}
}

// TraceCallEnd ends the call's span and records its duration.
func (r *amqprpcTracer) TraceCallEnd(ctx context.Context, d amqprpc.TraceCallEndData) {
	errType := ""
	if d.Err != nil {
		errType = amqprpcErrorType(d.Err)
	}
	if span, ok := ctx.Value(amqprpcSpanKey{}).(trace.Span); ok {
		if span.IsRecording() {
			if d.Err != nil {
				setSpanErrorType(span, errType, d.Err)
			} else {
				span.SetAttributes(keyAMQPRPCReplyBody.Int(d.ReplySize))
			}
		}
		span.End()
	}
	r.recordDuration(ctx, r.t.instr.amqprpc.callDuration, d.Queue, errType, d.Duration.Seconds())
}

func (r *amqprpcTracer) recordDuration(ctx context.Context, h metric.Float64Histogram, queue, errType string, secs float64) {
	if !h.Enabled(ctx) {
		return
	}
	attrs := make([]attribute.KeyValue, 0, 3)
	attrs = append(attrs, semconv.MessagingSystemRabbitMQ, semconv.MessagingDestinationName(queue))
	if errType != "" {
		attrs = append(attrs, semconv.ErrorTypeKey.String(errType))
	}
	h.Record(ctx, secs, metric.WithAttributes(attrs...))
}

// TraceServeStart starts the server span, a child of the caller's span
// when the request's header carries valid trace context.
func (r *amqprpcTracer) TraceServeStart(ctx context.Context, d amqprpc.TraceServeStartData) context.Context {
	if len(d.Header) > 0 {
		ctx = r.t.prop.Extract(ctx, inboundCarrier{propagation.MapCarrier(d.Header)})
	}
	ctx, span := r.t.tracer.Start(ctx, r.serveNames.get(amqprpcOperationServe+" ", d.Queue), rwServerOpts...)
	if span.IsRecording() {
		span.SetAttributes(semconv.MessagingSystemRabbitMQ,
			semconv.MessagingOperationName(amqprpcOperationServe), semconv.MessagingOperationTypeProcess,
			semconv.MessagingDestinationName(d.Queue), semconv.MessagingRabbitMQDestinationRoutingKey(d.Queue),
			semconv.MessagingMessageConversationID(d.CorrelationID), semconv.MessagingMessageBodySize(d.BodySize),
			keyAMQPRPCRedelivered.Bool(d.Redelivered))
	}
	return &amqprpcSpan{ctx, span}
}

// TraceServeEnd ends the server span and records its duration.
func (r *amqprpcTracer) TraceServeEnd(ctx context.Context, d amqprpc.TraceServeEndData) {
	errType := ""
	switch {
	case d.Err != nil:
		errType = amqprpcErrorType(d.Err)
	case d.ReplyErr != nil:
		errType = amqprpcReplyFailedType
	}
	if span, ok := ctx.Value(amqprpcSpanKey{}).(trace.Span); ok {
		if span.IsRecording() && errType != "" {
			span.SetAttributes(semconv.ErrorTypeKey.String(errType))
			for _, err := range []error{d.Err, d.ReplyErr} {
				if err != nil {
					span.RecordError(err)
				}
			}
			status := errors.Join(d.Err, d.ReplyErr)
			span.SetStatus(codes.Error, status.Error())
		}
		span.End()
	}
	r.recordDuration(ctx, r.t.instr.amqprpc.serveDuration, d.Queue, errType, d.Duration.Seconds())
}

// TraceConnection counts the event and adds it to the current span.
func (r *amqprpcTracer) TraceConnection(ctx context.Context, d amqprpc.TraceConnectionData) {
	ev := d.Event.String()
	if span := trace.SpanFromContext(ctx); span.IsRecording() {
		attrs := []attribute.KeyValue{keyAMQPRPCRole.String(d.Role), keyAMQPRPCConnEvent.String(ev)}
		if d.Failures > 0 {
			attrs = append(attrs, keyAMQPRPCFailures.Int(d.Failures))
		}
		if d.Err != nil {
			attrs = append(attrs, attribute.String("exception.message", d.Err.Error()))
		}
		span.AddEvent("amqprpc.connection", trace.WithAttributes(attrs...))
	}
	if c := r.t.instr.amqprpc.connections; c.Enabled(ctx) {
		attrs := []attribute.KeyValue{semconv.MessagingSystemRabbitMQ, keyAMQPRPCRole.String(d.Role), keyAMQPRPCConnEvent.String(ev)}
		if d.Queue != "" {
			attrs = append(attrs, semconv.MessagingDestinationName(d.Queue))
		}
		c.Add(ctx, 1, metric.WithAttributes(attrs...))
	}
}

// amqprpcErrorType is error.type for a call's or handler's error: an
// *amqprpc.Error's Code, or what the sentinel says.
func amqprpcErrorType(err error) string {
	if et := commonErrorType(err); et != "" {
		return et
	}
	var re *amqprpc.Error
	switch {
	case errors.As(err, &re):
		if re.Code != "" {
			return re.Code
		}
		return "error"
	case errors.Is(err, amqprpc.ErrNoRoute):
		return "no_route"
	case errors.Is(err, amqprpc.ErrConnectionLost):
		return "connection_lost"
	case errors.Is(err, amqprpc.ErrClosed):
		return "closed"
	}
	return goErrorType(err)
}
