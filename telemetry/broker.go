package telemetry

import (
	"context"
	"errors"
	"reflect"
	"strconv"
	"sync"
	"sync/atomic"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/baggage"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"

	"github.com/go-integration/patterns/broker"
)

// Attributes of the broker spans and metrics where the semantic
// conventions have none.
const (
	// brokerAttrAttempt is the handler call a process span is for:
	// broker.Message.Attempt, 1 for the first delivery.
	brokerAttrAttempt = attribute.Key("patterns.messaging.attempt")
	// brokerAttrOutcome is what became of a message after a handler call:
	// one of the brokerOutcome* values.
	brokerAttrOutcome = attribute.Key("patterns.messaging.outcome")
	// brokerAttrDeadLetterTopic is where a dead letter went, on the
	// process span's dead-letter event.
	brokerAttrDeadLetterTopic = attribute.Key("patterns.messaging.dead_letter.destination")
)

// Values of brokerAttrOutcome.
const (
	brokerOutcomeOK           = "ok"
	brokerOutcomeRetry        = "retry"
	brokerOutcomeDeadLettered = "dead_lettered"
	brokerOutcomeDropped      = "dropped"
	brokerOutcomeReleased     = "released"
	brokerOutcomePanicked     = "panicked"
)

// brokerEventDeadLetter is the name of the event a process span gets
// when its message is dead-lettered.
const brokerEventDeadLetter = "dead_letter"

// Broker returns the tracer for the WithTracer option of the broker
// adapters (broker/memory, broker/rabbitmq, broker/kafka, and any adapter
// on broker/engine). It implements broker.PublishTracer,
// broker.ProcessTracer and broker.DeadLetterTracer:
//
//   - Each Publish call is a Producer span "send <topic>" whose context
//     is written into every message's Header (W3C traceparent and
//     tracestate with the default propagator). A message whose Header
//     already carries a trace context (an outbox row keeps the context of
//     the request that added it) gets a Producer span "send <topic>" of
//     its own, a child of that context, whose context is written instead
//     and which the call's span links to: that request's trace goes on
//     through the relay to the consumer.
//   - Each handler call is a Consumer span "process <topic>", a child of
//     the context the message carries and linked to it (a new root when it
//     carries none, or a malformed one), with the message's
//     id, attempt, Kafka partition and offset or RabbitMQ routing key. The
//     handler runs in its context. It ends with the attribute
//     patterns.messaging.outcome: "ok", "retry", "dead_lettered",
//     "dropped", "released" or "panicked" (a panic, whether the message
//     was then retried or dead-lettered), and an error status when the
//     handler failed. Its attempt is patterns.messaging.attempt. The
//     attributes the semantic conventions name for sampling (system,
//     destination, operation, consumer group) are given when it starts,
//     so that a sampler sees them; the message's are set with the outcome
//     when it ends. (A send span gets all of its attributes right after
//     it starts: giving them at creation made the SDK copy and grow them
//     twice more, about +0.8 µs per Publish call on the development
//     machine.)
//   - A dead letter is a "dead_letter" event on the process span (with
//     patterns.messaging.dead_letter.destination and error.type), and the
//     dead letter carries the process span's context.
//
// A received traceparent that is not 55 characters long or does not
// parse is ignored (the process span is a new root and the message is
// handled as usual); a tracestate over 512 bytes or a baggage over 8192
// is dropped. What it writes is capped to those limits by dropping whole
// list-members (see docs/telemetry.md).
//
// With trace/noop's TracerProvider, or the global one while none is
// installed, no span is started at all (spans start once
// otel.SetTracerProvider is called); the trace context a message or the
// caller's context carries still travels.
//
// Metrics, all with messaging.system and messaging.destination.name:
// messaging.client.sent.messages and messaging.client.operation.duration
// (Publish calls, with error.type when one failed);
// messaging.client.consumed.messages and messaging.process.duration
// (handler calls, with messaging.consumer.group.name, the latter with
// patterns.messaging.outcome and error.type); patterns.messaging.redeliveries
// (handler calls after a message's first) and patterns.messaging.dead_letters.
//
// Give the same value to a publisher and a subscriber, or one each: it
// keeps no per-adapter state.
func (t *Telemetry) Broker() any {
	return &brokerTracer{t: t, w3cOnly: brokerW3COnly(t), tpKind: brokerTPKind(t.tp), mpKind: brokerMPKind(t.mp)}
}

// brokerTracer is what Broker returns.
type brokerTracer struct {
	t *Telemetry
	// w3cOnly: the propagator reads only traceparent, tracestate and
	// baggage, so a header without traceparent carries no context.
	w3cOnly bool
	// tpKind tells noSpans whether spans are no-ops, mpKind noMetrics
	// whether instruments are.
	tpKind, mpKind int
	sendNames      nameCache
	procNames      nameCache
	attrs          brokerAttrCache
}

var (
	_ broker.PublishTracer       = (*brokerTracer)(nil)
	_ broker.ProcessTracer       = (*brokerTracer)(nil)
	_ broker.DeadLetterTracer    = (*brokerTracer)(nil)
	_ broker.PublishTraceEnabler = (*brokerTracer)(nil)
	_ broker.ProcessTraceEnabler = (*brokerTracer)(nil)
)

// brokerInstruments are the broker tracer's metrics.
type brokerInstruments struct {
	sent         metric.Int64Counter
	sendDuration metric.Float64Histogram
	consumed     metric.Int64Counter
	procDuration metric.Float64Histogram
	redeliveries metric.Int64Counter
	deadLetters  metric.Int64Counter
}

func (in *brokerInstruments) init(m metric.Meter) error {
	var err, e error
	in.sent, e = m.Int64Counter("messaging.client.sent.messages", metric.WithUnit("{message}"),
		metric.WithDescription("Messages a publisher sent or tried to send (error.type when the call failed)."))
	err = errors.Join(err, e)
	in.sendDuration, e = m.Float64Histogram("messaging.client.operation.duration", metric.WithUnit("s"),
		metric.WithDescription("Duration of Publish calls."), metric.WithExplicitBucketBoundaries(durationBuckets...))
	err = errors.Join(err, e)
	in.consumed, e = m.Int64Counter("messaging.client.consumed.messages", metric.WithUnit("{message}"),
		metric.WithDescription("Messages handed to a handler, each attempt counted."))
	err = errors.Join(err, e)
	in.procDuration, e = m.Float64Histogram("messaging.process.duration", metric.WithUnit("s"),
		metric.WithDescription("Duration of handler calls with their settling, by outcome."), metric.WithExplicitBucketBoundaries(durationBuckets...))
	err = errors.Join(err, e)
	in.redeliveries, e = m.Int64Counter("patterns.messaging.redeliveries", metric.WithUnit("{message}"),
		metric.WithDescription("Handler calls on a message after its first (attempt > 1)."))
	err = errors.Join(err, e)
	in.deadLetters, e = m.Int64Counter("patterns.messaging.dead_letters", metric.WithUnit("{message}"),
		metric.WithDescription("Messages published to a dead-letter topic."))
	return errors.Join(err, e)
}

// Span start options, shared so that starting a span does not allocate them.
var (
	brokerSendOpts     = []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindProducer)}
	brokerKindConsumer = trace.WithSpanKind(trace.SpanKindConsumer)
	brokerNewRoot      = trace.WithNewRoot()
)

// brokerMaxAttrs bounds the attributes a broker span is given in one
// SetAttributes call: 5 for a send span, and for a process span of a
// Kafka record 7 (its message's, set with the outcome when it ends).
const brokerMaxAttrs = 8

// brokerSpanBuf is scratch space for starting a span, taken from
// brokerSpanBufs and put back once the span has its attributes, so that
// neither the link option nor the attribute slice is allocated per span.
//
// Start options: an implementation reads them only through
// trace.NewSpanStartConfig (their method is unexported), which copies
// links into the SpanConfig it returns, so the link option and its slice
// can be reused with any implementation once Start has returned.
// Attributes: the OpenTelemetry SDK's SetAttributes copies what it keeps,
// so the slice is reused only for an SDK span (brokerSpanCopies); any
// other span gets a slice of its own, which it may keep.
type brokerSpanBuf struct {
	attrs   [brokerMaxAttrs]attribute.KeyValue
	link    [1]trace.Link
	linkOpt trace.SpanStartOption // trace.WithLinks(link[:]...), made on first use
	opts    [3]trace.SpanStartOption
}

var brokerSpanBufs = sync.Pool{New: func() any { return new(brokerSpanBuf) }}

// withLink returns the start option for a link to sc.
func (buf *brokerSpanBuf) withLink(sc trace.SpanContext) trace.SpanStartOption {
	buf.link[0] = trace.Link{SpanContext: sc}
	if buf.linkOpt == nil {
		buf.linkOpt = trace.WithLinks(buf.link[:]...)
	}
	return buf.linkOpt
}

// attrsFor returns an empty slice with room for brokerMaxAttrs
// attributes to give span: buf's own when span copies what it is given.
func (buf *brokerSpanBuf) attrsFor(span trace.Span) []attribute.KeyValue {
	if brokerSpanCopies(span) {
		return buf.attrs[:0]
	}
	return make([]attribute.KeyValue, 0, brokerMaxAttrs)
}

// release clears what buf holds (no message stays reachable from the
// pool), its first n attributes and its link, and puts it back.
func (buf *brokerSpanBuf) release(n int) {
	clear(buf.attrs[:min(n, len(buf.attrs))])
	buf.link[0] = trace.Link{}
	clear(buf.opts[:])
	brokerSpanBufs.Put(buf)
}

// brokerSDKTrace is the package of the OpenTelemetry SDK's spans.
const brokerSDKTrace = "go.opentelemetry.io/otel/sdk/trace"

// brokerSpanCopies reports whether span is the OpenTelemetry SDK's, whose
// SetAttributes copies the attributes it keeps (normalised, into a slice
// of its own) and does not keep the slice it is given.
func brokerSpanCopies(span trace.Span) bool {
	rt := reflect.TypeOf(span)
	return rt != nil && rt.Kind() == reflect.Pointer && rt.Elem().PkgPath() == brokerSDKTrace
}

// startSend starts a send span: for message i of d when i >= 0 (with its
// messaging.message.id), else for the whole Publish call (with the id
// of its only message, or the batch's message count).
func (b *brokerTracer) startSend(ctx context.Context, d broker.TracePublishStartData, i int) (context.Context, trace.Span) {
	ctx, span := b.t.tracer.Start(ctx, b.sendNames.get("send ", d.Topic), brokerSendOpts...)
	if !span.IsRecording() {
		return ctx, span
	}
	buf := brokerSpanBufs.Get().(*brokerSpanBuf)
	attrs := append(buf.attrsFor(span),
		semconv.MessagingSystemKey.String(d.System),
		semconv.MessagingDestinationName(d.Topic),
		semconv.MessagingOperationTypeSend,
		semconv.MessagingOperationName("send"))
	switch {
	case i >= 0:
		attrs = append(attrs, semconv.MessagingMessageID(d.Messages[i].ID))
	case len(d.Messages) == 1:
		attrs = append(attrs, semconv.MessagingMessageID(d.Messages[0].ID))
	case len(d.Messages) > 1:
		attrs = append(attrs, semconv.MessagingBatchMessageCount(len(d.Messages)))
	}
	span.SetAttributes(attrs...)
	buf.release(len(attrs))
	return ctx, span
}

// publishCall is the context TracePublishStart returns when there is
// something to end or record: it carries the call's span, its
// per-message spans and what the metrics need.
type publishCall struct {
	context.Context
	b             *brokerTracer
	span          trace.Span
	msgSpans      []trace.Span
	system, topic string
	n             int
}

func (c *publishCall) Value(key any) any {
	if k, ok := key.(*brokerTracer); ok && k == c.b {
		return c
	}
	return c.Context.Value(key)
}

// TracePublishStart starts the call's span and writes trace context into
// the messages' headers.
func (b *brokerTracer) TracePublishStart(ctx context.Context, d broker.TracePublishStartData) context.Context {
	t := b.t
	var span trace.Span // nil without spans
	recording := false
	if !b.noSpans() {
		ctx, span = b.startSend(ctx, d, -1)
		recording = span.IsRecording()
	}
	var msgSpans []trace.Span
	callSC := trace.SpanContextFromContext(ctx)
	// With the W3C propagators there is nothing to write without a valid
	// span context or baggage: the headers are then left alone (not
	// copied: see broker.TracePublishStartData.Header).
	inject := !b.w3cOnly || callSC.IsValid() || baggage.FromContext(ctx).Len() > 0
	for i := range d.Messages {
		m := &d.Messages[i] // read-only
		h := brokerCarrier(m.Header)
		if !b.w3cOnly || h.Get("traceparent") != "" {
			// The message may carry its creation context: continue it.
			mctx := t.prop.Extract(ctx, h)
			if sc := trace.SpanContextFromContext(mctx); sc.IsValid() && !sc.Equal(callSC) {
				if span == nil {
					continue // no spans: the header keeps its context
				}
				ms := b.messageSpan(mctx, d, i)
				msgSpans = append(msgSpans, ms)
				if recording {
					span.AddLink(trace.Link{SpanContext: ms.SpanContext()})
				}
				continue
			}
		}
		if inject {
			t.prop.Inject(ctx, brokerCarrier(d.Header(i)))
		}
	}
	in := &t.instr.broker
	if !recording && msgSpans == nil && !in.sent.Enabled(ctx) && !in.sendDuration.Enabled(ctx) {
		// Nothing to record: a span that does not record has nothing to end.
		return ctx
	}
	return &publishCall{Context: ctx, b: b, span: span, msgSpans: msgSpans, system: d.System, topic: d.Topic, n: len(d.Messages)}
}

// messageSpan starts the send span of message i of d, whose Header
// carries its creation context (extracted into mctx), a child of it, and
// writes its context into the Header.
func (b *brokerTracer) messageSpan(mctx context.Context, d broker.TracePublishStartData, i int) trace.Span {
	mctx, ms := b.startSend(mctx, d, i)
	b.t.prop.Inject(mctx, brokerCarrier(d.Header(i)))
	return ms
}

// noSpans reports whether starting a span is known to do nothing: the
// TracerProvider is trace/noop's, or the global one while no provider has
// been installed (otel.SetTracerProvider). Spans are then not started at
// all, and trace context already in a context or a message still
// travels. (OpenTelemetry's eBPF auto-instrumentation, which hooks the
// global no-op tracer, does not see broker spans.)
func (b *brokerTracer) noSpans() bool {
	switch b.tpKind {
	case brokerTPNoop:
		return true
	case brokerTPGlobal:
		return otel.GetTracerProvider() == b.t.tp
	}
	return false
}

// noMetrics reports whether recording a measurement is known to do
// nothing: the MeterProvider is metric/noop's, or the global one while no
// provider has been installed (otel.SetMeterProvider).
func (b *brokerTracer) noMetrics() bool {
	switch b.mpKind {
	case brokerTPNoop:
		return true
	case brokerTPGlobal:
		return otel.GetMeterProvider() == b.t.mp
	}
	return false
}

// TracePublishEnabled implements broker.PublishTraceEnabler: with no-op
// (or not yet installed global) providers a Publish call has nothing to
// do unless ctx carries trace context or baggage to write into the
// messages. The adapters then skip the tracer for the call, which is what
// keeps an installed but unconfigured Broker() nearly free.
func (b *brokerTracer) TracePublishEnabled(ctx context.Context) bool {
	if !b.w3cOnly || !b.noSpans() || !b.noMetrics() {
		return true
	}
	if sp := trace.SpanFromContext(ctx); sp != noSpan && sp.SpanContext().IsValid() {
		return true
	}
	return baggage.FromContext(ctx).Len() > 0
}

// noSpan is what trace.SpanFromContext returns for a context without a
// span: comparing with it is cheaper than copying a SpanContext.
var noSpan = trace.SpanFromContext(context.Background())

// TraceProcessEnabled implements broker.ProcessTraceEnabler: with no-op
// providers a handler call has nothing to do unless the message carries
// trace context or baggage for the handler's context.
func (b *brokerTracer) TraceProcessEnabled(_ context.Context, _ string, header map[string]string) bool {
	if !b.w3cOnly || !b.noSpans() || !b.noMetrics() {
		return true
	}
	return header["traceparent"] != "" || header["baggage"] != ""
}

// brokerMPKind is brokerTPKind for a MeterProvider.
func brokerMPKind(mp metric.MeterProvider) int {
	if _, ok := mp.(metricnoop.MeterProvider); ok {
		return brokerTPNoop
	}
	if rt := reflect.TypeOf(mp); rt.Kind() == reflect.Pointer && rt.Elem().PkgPath() == "go.opentelemetry.io/otel/internal/global" {
		return brokerTPGlobal
	}
	return brokerTPOther
}

// Kinds of TracerProvider and MeterProvider, for noSpans and noMetrics.
const (
	brokerTPOther = iota
	brokerTPNoop
	brokerTPGlobal
)

func brokerTPKind(tp trace.TracerProvider) int {
	if _, ok := tp.(tracenoop.TracerProvider); ok {
		return brokerTPNoop
	}
	if rt := reflect.TypeOf(tp); rt.Kind() == reflect.Pointer && rt.Elem().PkgPath() == "go.opentelemetry.io/otel/internal/global" {
		return brokerTPGlobal
	}
	return brokerTPOther
}

// brokerW3COnly reports whether t's propagator reads nothing but
// traceparent, tracestate and baggage, so that a header without
// traceparent carries no trace context.
func brokerW3COnly(t *Telemetry) bool {
	for _, f := range t.prop.Fields() {
		if f != "traceparent" && f != "tracestate" && f != "baggage" {
			return false
		}
	}
	return true
}

// TracePublishEnd ends the call's spans and records its metrics.
func (b *brokerTracer) TracePublishEnd(ctx context.Context, d broker.TracePublishEndData) {
	c, _ := ctx.Value(b).(*publishCall)
	if c == nil {
		return
	}
	if d.Err != nil {
		brokerFail(c.span, d.Err)
		for _, s := range c.msgSpans {
			brokerFail(s, d.Err)
		}
	}
	for _, s := range c.msgSpans {
		s.End()
	}
	if c.span != nil {
		c.span.End()
	}

	in := &b.t.instr.broker
	errType := ""
	if d.Err != nil {
		errType = brokerErrorType(d.Err)
	}
	sent, timed := in.sent.Enabled(ctx), in.sendDuration.Enabled(ctx)
	if !sent && !timed {
		return
	}
	// One entry holds both instruments' attribute sets: one lookup.
	o := b.attrs.get(brokerAttrKey{kind: brokerAttrSend, system: c.system, topic: c.topic, errType: errType})
	if sent {
		in.sent.Add(ctx, int64(c.n), o.add...)
	}
	if timed {
		in.sendDuration.Record(ctx, d.Duration.Seconds(), o.rec...)
	}
}

// brokerFail marks span as failed with err.
func brokerFail(span trace.Span, err error) {
	if span == nil || !span.IsRecording() {
		return
	}
	span.RecordError(err)
	span.SetStatus(codes.Error, err.Error())
}

// processCall is the context TraceProcessStart returns when there is
// something to end or record.
type processCall struct {
	context.Context
	b                    *brokerTracer
	span                 trace.Span
	system, topic, group string
	// tail holds the recording span's attributes that are set when it
	// ends, with room for the outcome; buf, when not nil, is the pooled
	// buffer tail lives in, put back once the span has them.
	tail []attribute.KeyValue
	buf  *brokerSpanBuf
}

func (c *processCall) Value(key any) any {
	if k, ok := key.(*brokerTracer); ok && k == c.b {
		return c
	}
	return c.Context.Value(key)
}

// TraceProcessStart starts the handler call's span, a child of the
// context the message carries.
func (b *brokerTracer) TraceProcessStart(ctx context.Context, d broker.TraceProcessStartData) context.Context {
	t := b.t
	m := &d.Message
	before := trace.SpanContextFromContext(ctx)
	pctx := ctx
	if !b.w3cOnly || m.Header["traceparent"] != "" || m.Header["baggage"] != "" {
		// Only then can the message carry a context.
		pctx = t.prop.Extract(ctx, brokerCarrier(m.Header))
	}
	sc := trace.SpanContextFromContext(pctx)
	fromMsg := sc.IsValid() && !sc.Equal(before)
	var span trace.Span // nil without spans
	var tail []attribute.KeyValue
	var buf *brokerSpanBuf
	consumedKey := brokerAttrKey{kind: brokerAttrConsumed, system: d.System, topic: d.Topic, group: d.Group}
	var co *brokerAttrOpts // the consumedKey entry, once looked up
	if !b.noSpans() {
		co = b.attrs.get(consumedKey)
		ctx, span, tail, buf = b.startProcess(pctx, d, sc, fromMsg, co.spanHead)
	} else if fromMsg {
		ctx = pctx // the publisher's context travels on from the handler
	}
	recording := span != nil && span.IsRecording()
	in := &t.instr.broker
	metrics := false
	if in.consumed.Enabled(ctx) {
		metrics = true
		if co == nil {
			co = b.attrs.get(consumedKey)
		}
		in.consumed.Add(ctx, 1, co.add...)
	}
	if m.Attempt > 1 && in.redeliveries.Enabled(ctx) {
		metrics = true
		o := b.attrs.get(brokerAttrKey{kind: brokerAttrGroup, system: d.System, topic: d.Topic, group: d.Group})
		in.redeliveries.Add(ctx, 1, o.add...)
	}
	if !recording && !metrics && !in.procDuration.Enabled(ctx) && !in.deadLetters.Enabled(ctx) {
		return ctx
	}
	return &processCall{Context: ctx, b: b, span: span, system: d.System, topic: d.Topic, group: d.Group, tail: tail, buf: buf}
}

// startProcess starts the process span of d in pctx: a child of sc and
// linked to it when fromMsg (sc is the context the message carries), else
// a new root (no context from the publisher, or a malformed one, whatever
// span the subscriber's context carries).
//
// The attributes the semantic conventions name for sampling decisions
// (system, destination, operation, consumer group) are given at creation,
// so that a sampler sees them. The rest, about the message, are returned
// as tail, to be set with the outcome when the span ends: the SDK sizes a
// span's attribute slice to each SetAttributes call, so one call at the
// end, rather than one after Start and another for the outcome, saves it
// growing and copying the slice once more. buf, when not nil, is the
// pooled buffer tail lives in.
func (b *brokerTracer) startProcess(pctx context.Context, d broker.TraceProcessStartData, sc trace.SpanContext, fromMsg bool, head trace.SpanStartOption) (context.Context, trace.Span, []attribute.KeyValue, *brokerSpanBuf) {
	buf := brokerSpanBufs.Get().(*brokerSpanBuf)
	opts := append(buf.opts[:0], brokerKindConsumer, head)
	if fromMsg {
		opts = append(opts, buf.withLink(sc))
	} else {
		opts = append(opts, brokerNewRoot)
	}
	ctx, span := b.t.tracer.Start(pctx, b.procNames.get("process ", d.Topic), opts...)
	if !span.IsRecording() {
		buf.release(0)
		return ctx, span, nil, nil
	}
	tail := b.processAttrs(buf.attrsFor(span), d)
	if !brokerSpanCopies(span) {
		// tail is a slice of its own, which the span may keep.
		buf.release(0)
		buf = nil
	}
	return ctx, span, tail, buf
}

// processAttrs appends the attributes a process span gets when it ends,
// but for the outcome, to attrs (at most brokerMaxAttrs-1 of them).
func (b *brokerTracer) processAttrs(attrs []attribute.KeyValue, d broker.TraceProcessStartData) []attribute.KeyValue {
	m := &d.Message
	attrs = append(attrs,
		semconv.MessagingMessageID(m.ID),
		brokerAttrAttempt.Int(m.Attempt),
		semconv.MessagingMessageBodySize(len(m.Payload)))
	switch raw := m.Raw.(type) {
	case *kgo.Record:
		attrs = append(attrs,
			semconv.MessagingDestinationPartitionID(strconv.FormatInt(int64(raw.Partition), 10)),
			semconv.MessagingKafkaOffset(int(raw.Offset)))
		if m.Key != "" {
			attrs = append(attrs, semconv.MessagingKafkaMessageKey(m.Key))
		}
	case *amqp.Delivery:
		attrs = append(attrs,
			semconv.MessagingRabbitMQDestinationRoutingKey(raw.RoutingKey),
			semconv.MessagingRabbitMQMessageDeliveryTag(int(raw.DeliveryTag)))
	default:
		if d.System == "rabbitmq" && m.Key != "" {
			attrs = append(attrs, semconv.MessagingRabbitMQDestinationRoutingKey(m.Key))
		}
	}
	return attrs
}

// TraceProcessEnd ends the handler call's span with its outcome and
// records the metrics.
func (b *brokerTracer) TraceProcessEnd(ctx context.Context, d broker.TraceProcessEndData) {
	c, _ := ctx.Value(b).(*processCall)
	if c == nil {
		return
	}
	outcome := brokerOutcome(d.Outcome, d.Err)
	if c.span != nil {
		if c.span.IsRecording() {
			attrs := append(c.tail, brokerAttrOutcome.String(outcome))
			c.span.SetAttributes(attrs...)
			if c.buf != nil {
				c.buf.release(len(attrs))
				c.buf = nil
			}
			c.tail = nil
			if d.Err != nil {
				brokerFail(c.span, d.Err)
			}
		}
		c.span.End()
	}

	in := &b.t.instr.broker
	if in.procDuration.Enabled(ctx) {
		errType := ""
		if d.Err != nil {
			errType = brokerErrorType(d.Err)
		}
		o := b.attrs.get(brokerAttrKey{kind: brokerAttrProcess, system: c.system, topic: c.topic, group: c.group, outcome: outcome, errType: errType})
		in.procDuration.Record(ctx, d.Duration.Seconds(), o.rec...)
	}
	if d.Outcome == broker.OutcomeDeadLettered && in.deadLetters.Enabled(ctx) {
		o := b.attrs.get(brokerAttrKey{kind: brokerAttrGroup, system: c.system, topic: c.topic, group: c.group})
		in.deadLetters.Add(ctx, 1, o.add...)
	}
}

// TraceDeadLetter adds an event to the process span and writes its
// context into the dead letter's header.
func (b *brokerTracer) TraceDeadLetter(ctx context.Context, d broker.TraceDeadLetterData) {
	span := trace.SpanFromContext(ctx)
	if c, _ := ctx.Value(b).(*processCall); c != nil && c.span != nil && !c.span.SpanContext().Equal(span.SpanContext()) {
		// Another tracer's span is current: ours is the dead letter's parent.
		span = c.span
		ctx = trace.ContextWithSpan(ctx, span)
	}
	if span.IsRecording() {
		attrs := []attribute.KeyValue{brokerAttrDeadLetterTopic.String(d.DeadLetterTopic)}
		if d.Err != nil {
			attrs = append(attrs, semconv.ErrorTypeKey.String(brokerErrorType(d.Err)), attribute.String("exception.message", d.Err.Error()))
		}
		span.AddEvent(brokerEventDeadLetter, trace.WithAttributes(attrs...))
	}
	if d.Message.Header != nil {
		b.t.prop.Inject(ctx, brokerCarrier(d.Message.Header))
	}
}

// brokerOutcome names what became of a message; a panic is "panicked"
// whatever followed it.
func brokerOutcome(o broker.Outcome, err error) string {
	if err != nil && brokerPanicked(err) {
		return brokerOutcomePanicked
	}
	switch o {
	case broker.OutcomeAcked:
		return brokerOutcomeOK
	case broker.OutcomeRetry:
		return brokerOutcomeRetry
	case broker.OutcomeDeadLettered:
		return brokerOutcomeDeadLettered
	case broker.OutcomeDropped:
		return brokerOutcomeDropped
	case broker.OutcomeReleased:
		return brokerOutcomeReleased
	}
	return "unknown"
}

// brokerPanicked reports whether err is or wraps a *broker.PanicError.
// (Apart from brokerOutcome so that a call without an error does not
// allocate the target errors.As needs.)
func brokerPanicked(err error) bool {
	var pe *broker.PanicError
	return errors.As(err, &pe)
}

// brokerErrorType is the low-cardinality error.type of a broker error.
func brokerErrorType(err error) string {
	if et := commonErrorType(err); et != "" {
		return et
	}
	switch {
	case errors.Is(err, broker.ErrHandlerPanic):
		return "panic"
	case errors.Is(err, broker.ErrInvalidMessage):
		return "invalid_message"
	case errors.Is(err, broker.ErrUnroutable):
		return "unroutable"
	case errors.Is(err, broker.ErrNotConfirmed):
		return "not_confirmed"
	case errors.Is(err, broker.ErrClosed):
		return "closed"
	}
	return semconv.ErrorTypeOther.Value.AsString()
}

// brokerCarrier is a message Header (or any string map: an amqprpc
// request's, an outbox row's) as a propagation.TextMapCarrier that hides
// a received traceparent, tracestate or baggage outside the limits
// (inbound), so that the propagator ignores it, and caps what the
// propagator writes (outbound).
type brokerCarrier map[string]string

// Get returns the header's value for key, "" for an invalid traceparent,
// tracestate or baggage.
func (c brokerCarrier) Get(key string) string { return inbound(key, c[key]) }

// Set sets the header key to value cut to the limits, or removes it when
// nothing is left.
func (c brokerCarrier) Set(key, value string) {
	if v := outbound(key, value); v != "" {
		c[key] = v
	} else {
		delete(c, key)
	}
}

// Keys lists the header's keys.
func (c brokerCarrier) Keys() []string {
	keys := make([]string, 0, len(c))
	for k := range c {
		keys = append(keys, k)
	}
	return keys
}

// nameCache holds span names ("send orders") per topic or queue (broker,
// outbox and amqprpc spans) so that
// starting a span does not build its name. It is copied on write and
// bounded: past nameCacheMax topics names are built each time.
type nameCache struct {
	mu sync.Mutex
	m  atomic.Pointer[map[string]string]
}

const nameCacheMax = 1024

func (c *nameCache) get(prefix, topic string) string {
	if m := c.m.Load(); m != nil {
		if s, ok := (*m)[topic]; ok {
			return s
		}
	}
	s := prefix + topic
	c.mu.Lock()
	defer c.mu.Unlock()
	old := c.m.Load()
	if old != nil && len(*old) >= nameCacheMax {
		return s
	}
	n := 0
	if old != nil {
		n = len(*old)
	}
	nm := make(map[string]string, n+1)
	if old != nil {
		for k, v := range *old {
			nm[k] = v
		}
	}
	nm[topic] = s
	c.m.Store(&nm)
	return s
}

// brokerAttrKind says which metric a brokerAttrKey's attributes are for.
type brokerAttrKind uint8

const (
	// brokerAttrSend: add for messaging.client.sent.messages, rec for
	// messaging.client.operation.duration (which adds the operation type).
	brokerAttrSend brokerAttrKind = iota
	brokerAttrConsumed
	brokerAttrGroup // redeliveries and dead letters
	brokerAttrProcess
)

// brokerAttrKey identifies one metric attribute set.
type brokerAttrKey struct {
	kind                                   brokerAttrKind
	system, topic, group, outcome, errType string
}

// brokerAttrOpts are the measurement options of one attribute set, made
// once so that recording a measurement does not build the set.
type brokerAttrOpts struct {
	add []metric.AddOption
	rec []metric.RecordOption
	// spanHead (brokerAttrConsumed) gives a process span the attributes
	// it is created with.
	spanHead trace.SpanStartOption
}

// brokerAttrCache holds brokerAttrOpts per key, copied on write and
// bounded like nameCache.
type brokerAttrCache struct {
	mu sync.Mutex
	m  atomic.Pointer[map[brokerAttrKey]*brokerAttrOpts]
}

const brokerAttrCacheMax = 4096

func (c *brokerAttrCache) get(k brokerAttrKey) *brokerAttrOpts {
	if m := c.m.Load(); m != nil {
		if o, ok := (*m)[k]; ok {
			return o
		}
	}
	o := k.opts()
	c.mu.Lock()
	defer c.mu.Unlock()
	old := c.m.Load()
	n := 0
	if old != nil {
		n = len(*old)
	}
	if n >= brokerAttrCacheMax {
		return o
	}
	nm := make(map[brokerAttrKey]*brokerAttrOpts, n+1)
	if old != nil {
		for k, v := range *old {
			nm[k] = v
		}
	}
	nm[k] = o
	c.m.Store(&nm)
	return o
}

// opts builds the attribute sets of k.
func (k brokerAttrKey) opts() *brokerAttrOpts {
	attrs := make([]attribute.KeyValue, 0, 7)
	attrs = append(attrs, semconv.MessagingSystemKey.String(k.system), semconv.MessagingDestinationName(k.topic))
	switch k.kind {
	case brokerAttrSend:
		attrs = append(attrs, semconv.MessagingOperationName("send"))
	case brokerAttrConsumed, brokerAttrProcess:
		attrs = append(attrs, semconv.MessagingOperationName("process"))
		if k.kind == brokerAttrProcess {
			attrs = append(attrs, semconv.MessagingOperationTypeProcess, brokerAttrOutcome.String(k.outcome))
		}
	}
	if k.group != "" {
		attrs = append(attrs, semconv.MessagingConsumerGroupName(k.group))
	}
	if k.errType != "" {
		attrs = append(attrs, semconv.ErrorTypeKey.String(k.errType))
	}
	o := metric.WithAttributeSet(attribute.NewSet(attrs...))
	if k.kind == brokerAttrSend {
		// The duration's set: the same and the operation type.
		attrs = append(attrs, semconv.MessagingOperationTypeSend)
		return &brokerAttrOpts{add: []metric.AddOption{o}, rec: []metric.RecordOption{metric.WithAttributeSet(attribute.NewSet(attrs...))}}
	}
	opts := &brokerAttrOpts{add: []metric.AddOption{o}, rec: []metric.RecordOption{o}}
	if k.kind == brokerAttrConsumed {
		head := []attribute.KeyValue{semconv.MessagingSystemKey.String(k.system), semconv.MessagingDestinationName(k.topic),
			semconv.MessagingOperationTypeProcess, semconv.MessagingOperationName("process")}
		if k.group != "" {
			head = append(head, semconv.MessagingConsumerGroupName(k.group))
		}
		opts.spanHead = trace.WithAttributes(head...)
	}
	return opts
}
