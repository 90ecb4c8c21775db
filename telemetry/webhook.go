package telemetry

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/go-integration/patterns/webhook"
)

// WebhookOption configures the tracer Webhook returns.
type WebhookOption interface{ applyWebhook(*webhookTracer) }

type webhookOpt func(*webhookTracer)

func (f webhookOpt) applyWebhook(w *webhookTracer) { f(w) }

// WithWebhookPropagation sets whether trace context crosses the boundary
// with webhook partners. Default false: a Sender sends no traceparent to an
// endpoint (it would tell a third party our trace ids and sampling), and a
// Receiver starts a new trace for every request, linked to the trace
// context the request carries, if valid. With true, the Sender injects the
// attempt's context into the request and the Receiver continues the
// sender's trace.
func WithWebhookPropagation(on bool) WebhookOption {
	return webhookOpt(func(w *webhookTracer) { w.propagate = on })
}

// Webhook returns the tracer for webhook.WithTracer. It implements
// webhook.AttemptTracer, webhook.DisableTracer and webhook.StoreErrorTracer
// (a Sender), and webhook.ReceiveTracer, webhook.RejectTracer and
// webhook.StoreErrorTracer (a Receiver). Nil options are ignored.
//
// Every delivery attempt is an HTTP client span "POST" with
// http.request.method, server.address, server.port, url.scheme (not
// url.full: endpoint URLs often carry a partner's secret),
// http.response.status_code, http.request.resend_count from the second
// attempt on, error.type and an Error status when the attempt failed, and
// patterns.webhook.message.id (the webhook-id), .event.type, .delivery.id,
// .endpoint.id, .attempt and .delivery.state. Its trace context is sent to
// the endpoint only with WithWebhookPropagation(true). Attempts are counted
// in patterns.webhook.attempts by patterns.webhook.outcome ("succeeded",
// "retrying", "failed": given up, "abandoned": cut off by Close) and, when a
// request was made, measured in http.client.request.duration.
//
// Disabling an endpoint is an event "webhook.endpoint.disabled" on the
// attempt's span, counted in patterns.webhook.endpoints.disabled by
// patterns.webhook.disable.reason ("gone": 410, "failing"); a store error
// an event "webhook.store.error" counted in patterns.webhook.store.errors by
// patterns.webhook.store.op.
//
// A received request is an HTTP server span named after its method ("POST")
// with the request's and webhook-id attributes, http.response.status_code,
// error.type (the rejection reason, or the status for 5xx), an Error status
// for 5xx answers only, and patterns.webhook.handled; when the request
// context already holds a span (an HTTP middleware made one), it is an
// internal child of it instead. Its duration goes to
// http.server.request.duration. A rejection is an event
// "webhook.rejected" counted in patterns.webhook.rejected by
// patterns.webhook.reject.reason (body_too_large, missing_header,
// invalid_message_id, invalid_timestamp, timestamp_too_old,
// timestamp_too_new, no_matching_signature, duplicate, in_flight,
// store_unavailable, other). A malformed or oversized traceparent or
// tracestate is ignored.
func (t *Telemetry) Webhook(opts ...WebhookOption) any {
	w := &webhookTracer{t: t}
	for _, o := range opts {
		if o != nil {
			o.applyWebhook(w)
		}
	}
	return w
}

// webhookTracer is what Webhook returns.
type webhookTracer struct {
	t         *Telemetry
	propagate bool
}

var (
	_ webhook.AttemptTracer    = (*webhookTracer)(nil)
	_ webhook.DisableTracer    = (*webhookTracer)(nil)
	_ webhook.StoreErrorTracer = (*webhookTracer)(nil)
	_ webhook.ReceiveTracer    = (*webhookTracer)(nil)
	_ webhook.RejectTracer     = (*webhookTracer)(nil)
)

// webhookInstruments are the instruments of Webhook (which shares
// http.client.request.duration with RPC).
type webhookInstruments struct {
	attempts           metric.Int64Counter
	disabled           metric.Int64Counter
	storeErrors        metric.Int64Counter
	rejected           metric.Int64Counter
	httpServerDuration metric.Float64Histogram
}

func (in *webhookInstruments) init(m metric.Meter) error {
	var err error
	var errs []error
	in.attempts, err = m.Int64Counter("patterns.webhook.attempts",
		metric.WithUnit("{attempt}"), metric.WithDescription("Webhook delivery attempts, by outcome."))
	errs = append(errs, err)
	in.disabled, err = m.Int64Counter("patterns.webhook.endpoints.disabled",
		metric.WithUnit("{endpoint}"), metric.WithDescription("Webhook endpoints a Sender disabled, by reason."))
	errs = append(errs, err)
	in.storeErrors, err = m.Int64Counter("patterns.webhook.store.errors",
		metric.WithUnit("{error}"), metric.WithDescription("Store failures a webhook Sender or Receiver survived, by operation."))
	errs = append(errs, err)
	in.rejected, err = m.Int64Counter("patterns.webhook.rejected",
		metric.WithUnit("{request}"), metric.WithDescription("Requests a webhook Receiver answered without calling the handler, by reason."))
	errs = append(errs, err)
	in.httpServerDuration, err = m.Float64Histogram("http.server.request.duration",
		metric.WithUnit("s"), metric.WithDescription("Duration of HTTP server requests."),
		metric.WithExplicitBucketBoundaries(durationBuckets...))
	errs = append(errs, err)
	return errors.Join(errs...)
}

const (
	keyWebhookMessageID     = attribute.Key("patterns.webhook.message.id")
	keyWebhookEventType     = attribute.Key("patterns.webhook.event.type")
	keyWebhookDeliveryID    = attribute.Key("patterns.webhook.delivery.id")
	keyWebhookEndpointID    = attribute.Key("patterns.webhook.endpoint.id")
	keyWebhookAttempt       = attribute.Key("patterns.webhook.attempt")
	keyWebhookState         = attribute.Key("patterns.webhook.delivery.state")
	keyWebhookNextAttempt   = attribute.Key("patterns.webhook.next_attempt")
	keyWebhookOutcome       = attribute.Key("patterns.webhook.outcome")
	keyWebhookDisableReason = attribute.Key("patterns.webhook.disable.reason")
	keyWebhookStoreOp       = attribute.Key("patterns.webhook.store.op")
	keyWebhookRejectReason  = attribute.Key("patterns.webhook.reject.reason")
	keyWebhookHandled       = attribute.Key("patterns.webhook.handled")
)

// TraceAttemptStart starts the attempt's client span; with propagation on,
// it injects its context into the request's header.
func (w *webhookTracer) TraceAttemptStart(ctx context.Context, d webhook.TraceAttemptStartData) context.Context {
	ctx, span := w.t.tracer.Start(ctx, http.MethodPost, rwClientOpts...)
	a := &httpAttempt{Context: ctx, key: webhookAttemptKey{}, span: span, method: http.MethodPost}
	recording := span.IsRecording()
	// The endpoint's address is only for the span and the duration
	// metric: with neither (no providers) the URL is not parsed.
	if recording || w.t.instr.rpc.httpClientDuration.Enabled(ctx) {
		if u, err := url.Parse(d.URL); err == nil {
			a.scheme = u.Scheme
			a.addr, a.port = hostPort(u.Host, u.Scheme)
		}
	}
	if recording {
		attrs := make([]attribute.KeyValue, 0, 11)
		attrs = append(attrs, semconv.HTTPRequestMethodPost, semconv.ServerAddress(a.addr), semconv.ServerPort(a.port),
			semconv.URLScheme(a.scheme), keyWebhookMessageID.String(d.MessageID), keyWebhookEventType.String(d.EventType),
			keyWebhookDeliveryID.String(d.DeliveryID), keyWebhookEndpointID.String(d.EndpointID), keyWebhookAttempt.Int(d.Attempt))
		if d.Attempt > 1 {
			attrs = append(attrs, semconv.HTTPRequestResendCount(d.Attempt-1))
		}
		span.SetAttributes(attrs...)
	}
	if w.propagate && d.Header != nil {
		w.t.prop.Inject(ctx, headerCarrier(d.Header))
	}
	return a
}

// TraceAttemptEnd ends the attempt's span and records its metrics.
func (w *webhookTracer) TraceAttemptEnd(ctx context.Context, d webhook.TraceAttemptEndData) {
	a, _ := ctx.Value(webhookAttemptKey{}).(*httpAttempt)
	if a == nil {
		return
	}
	outcome := webhookOutcome(d)
	errType := ""
	switch {
	case d.StatusCode >= 400 || (d.StatusCode != 0 && d.Err != nil):
		errType = strconv.Itoa(d.StatusCode)
	case d.Err != nil:
		errType = webhookErrorType(d.Err)
	}
	if span := a.span; span.IsRecording() {
		if d.StatusCode != 0 {
			span.SetAttributes(semconv.HTTPResponseStatusCode(d.StatusCode))
		}
		span.SetAttributes(keyWebhookState.String(string(d.State)), keyWebhookOutcome.String(outcome))
		if !d.NextAttempt.IsZero() && d.State == webhook.DeliveryPending {
			span.SetAttributes(keyWebhookNextAttempt.String(d.NextAttempt.UTC().Format(time.RFC3339Nano)))
		}
		if errType != "" {
			setSpanErrorType(span, errType, d.Err)
		}
	}
	a.span.End()

	in := w.t.instr
	if c := in.webhook.attempts; c.Enabled(ctx) {
		c.Add(ctx, 1, metric.WithAttributes(keyWebhookOutcome.String(outcome)))
	}
	if (d.StatusCode != 0 || d.Duration > 0) && in.rpc.httpClientDuration.Enabled(ctx) {
		in.rpc.recordHTTPClient(ctx, d.Duration, a.method, a.addr, a.port, a.scheme, d.StatusCode, errType)
	}
}

// webhookOutcome is patterns.webhook.outcome of an attempt.
func webhookOutcome(d webhook.TraceAttemptEndData) string {
	switch {
	case errors.Is(d.Err, webhook.ErrClosed):
		return "abandoned"
	case d.State == webhook.DeliverySucceeded:
		return "succeeded"
	case d.State == webhook.DeliveryPending:
		return "retrying"
	}
	return "failed"
}

// webhookErrorType is error.type of an attempt that got no response.
func webhookErrorType(err error) string {
	if et := commonErrorType(err); et != "" {
		return et
	}
	switch {
	case errors.Is(err, webhook.ErrBlockedAddress):
		return "blocked_address"
	case errors.Is(err, webhook.ErrClosed):
		return "closed"
	}
	return goErrorType(err)
}

// TraceDisable adds an event to the attempt's span and counts it.
func (w *webhookTracer) TraceDisable(ctx context.Context, d webhook.TraceDisableData) {
	reason := "failing"
	if strings.HasPrefix(d.Reason, "410") {
		reason = "gone"
	}
	if span := trace.SpanFromContext(ctx); span.IsRecording() {
		span.AddEvent("webhook.endpoint.disabled", trace.WithAttributes(
			keyWebhookEndpointID.String(d.Endpoint.ID), keyWebhookDisableReason.String(reason)))
	}
	if c := w.t.instr.webhook.disabled; c.Enabled(ctx) {
		c.Add(ctx, 1, metric.WithAttributes(keyWebhookDisableReason.String(reason)))
	}
}

// TraceStoreError adds an event to the current span and counts it.
func (w *webhookTracer) TraceStoreError(ctx context.Context, d webhook.TraceStoreErrorData) {
	if span := trace.SpanFromContext(ctx); span.IsRecording() {
		attrs := []attribute.KeyValue{keyWebhookStoreOp.String(d.Op)}
		if d.Err != nil {
			attrs = append(attrs, attribute.String("exception.message", d.Err.Error()))
		}
		span.AddEvent("webhook.store.error", trace.WithAttributes(attrs...))
	}
	if c := w.t.instr.webhook.storeErrors; c.Enabled(ctx) {
		c.Add(ctx, 1, metric.WithAttributes(keyWebhookStoreOp.String(d.Op)))
	}
}

type webhookReceiveKey struct{}

// webhookReceive is what TraceReceiveStart keeps for TraceReceiveEnd, and
// the context it returns (see httpAttempt).
type webhookReceive struct {
	context.Context
	span   trace.Span
	start  time.Time
	method string
	scheme string
	reason string // the rejection reason, set by TraceReject
}

func (rc *webhookReceive) Value(key any) any {
	if key == (webhookReceiveKey{}) {
		return rc
	}
	return rc.Context.Value(key)
}

// TraceReceiveStart starts the request's server span.
func (w *webhookTracer) TraceReceiveStart(ctx context.Context, d webhook.TraceReceiveStartData) context.Context {
	req := d.Request
	rc := &webhookReceive{start: time.Now(), method: httpMethod(req.Method), scheme: "http"}
	if req.TLS != nil {
		rc.scheme = "https"
	}
	name := rc.method
	if name == "_OTHER" {
		name = "HTTP"
	}
	var span trace.Span
	if trace.SpanContextFromContext(ctx).IsValid() {
		// An HTTP middleware made the server span: be its child.
		ctx, span = w.t.tracer.Start(ctx, name, rwInternalOpts...)
	} else {
		carrier := inboundCarrier{propagation.HeaderCarrier(req.Header)}
		if w.propagate {
			ctx, span = w.t.tracer.Start(w.t.prop.Extract(ctx, carrier), name, rwServerOpts...)
		} else {
			opts := []trace.SpanStartOption{rwServerOpts[0], trace.WithNewRoot()}
			if req.Header.Get("traceparent") != "" {
				if sc := trace.SpanContextFromContext(w.t.prop.Extract(context.Background(), carrier)); sc.IsValid() {
					opts = append(opts, trace.WithLinks(trace.Link{SpanContext: sc}))
				}
			}
			ctx, span = w.t.tracer.Start(ctx, name, opts...)
		}
	}
	rc.Context, rc.span = ctx, span
	if span.IsRecording() {
		attrs := make([]attribute.KeyValue, 0, 9)
		attrs = append(attrs, semconv.HTTPRequestMethodKey.String(rc.method), semconv.URLScheme(rc.scheme),
			semconv.URLPath(req.URL.Path))
		if rc.method != req.Method {
			attrs = append(attrs, semconv.HTTPRequestMethodOriginal(req.Method))
		}
		if addr, port := hostPort(req.Host, rc.scheme); addr != "" {
			attrs = append(attrs, semconv.ServerAddress(addr), semconv.ServerPort(port))
		}
		if host, _, err := net.SplitHostPort(req.RemoteAddr); err == nil {
			attrs = append(attrs, semconv.ClientAddress(host))
		}
		if ua := req.UserAgent(); ua != "" {
			attrs = append(attrs, semconv.UserAgentOriginal(ua))
		}
		if d.MessageID != "" {
			attrs = append(attrs, keyWebhookMessageID.String(d.MessageID))
		}
		span.SetAttributes(attrs...)
	}
	return rc
}

// TraceReceiveEnd ends the request's span and records its duration.
func (w *webhookTracer) TraceReceiveEnd(ctx context.Context, d webhook.TraceReceiveEndData) {
	rc, _ := ctx.Value(webhookReceiveKey{}).(*webhookReceive)
	if rc == nil {
		return
	}
	errType := rc.reason
	switch {
	case d.StatusCode >= 500:
		errType = strconv.Itoa(d.StatusCode)
	case errType == "" && d.Err != nil:
		errType = errTypeOf(d.Err)
	}
	if span := rc.span; span.IsRecording() {
		span.SetAttributes(semconv.HTTPResponseStatusCode(d.StatusCode), keyWebhookHandled.Bool(d.Handled))
		if errType != "" {
			span.SetAttributes(semconv.ErrorTypeKey.String(errType))
		}
		if d.Err != nil {
			span.RecordError(d.Err)
		}
		if d.StatusCode >= 500 {
			msg := ""
			if d.Err != nil {
				msg = d.Err.Error()
			}
			span.SetStatus(codes.Error, msg)
		}
	}
	rc.span.End()
	if h := w.t.instr.webhook.httpServerDuration; h.Enabled(ctx) {
		attrs := make([]attribute.KeyValue, 0, 4)
		attrs = append(attrs, semconv.HTTPRequestMethodKey.String(rc.method), semconv.URLScheme(rc.scheme),
			semconv.HTTPResponseStatusCode(d.StatusCode))
		if d.StatusCode >= 500 {
			attrs = append(attrs, semconv.ErrorTypeKey.String(errType))
		}
		h.Record(ctx, time.Since(rc.start).Seconds(), metric.WithAttributes(attrs...))
	}
}

// TraceReject adds an event to the request's span and counts it.
func (w *webhookTracer) TraceReject(ctx context.Context, d webhook.TraceRejectData) {
	reason := webhookRejectReason(d)
	if rc, _ := ctx.Value(webhookReceiveKey{}).(*webhookReceive); rc != nil {
		rc.reason = reason
	}
	if span := trace.SpanFromContext(ctx); span.IsRecording() {
		span.AddEvent("webhook.rejected", trace.WithAttributes(keyWebhookRejectReason.String(reason),
			semconv.HTTPResponseStatusCode(d.StatusCode)))
	}
	if c := w.t.instr.webhook.rejected; c.Enabled(ctx) {
		c.Add(ctx, 1, metric.WithAttributes(keyWebhookRejectReason.String(reason)))
	}
}

// webhookRejectReason is patterns.webhook.reject.reason.
func webhookRejectReason(d webhook.TraceRejectData) string {
	switch err := d.Err; {
	case errors.Is(err, webhook.ErrBodyTooLarge):
		return "body_too_large"
	case errors.Is(err, webhook.ErrMissingHeader):
		return "missing_header"
	case errors.Is(err, webhook.ErrInvalidMessageID):
		return "invalid_message_id"
	case errors.Is(err, webhook.ErrInvalidTimestamp):
		return "invalid_timestamp"
	case errors.Is(err, webhook.ErrTimestampTooOld):
		return "timestamp_too_old"
	case errors.Is(err, webhook.ErrTimestampTooNew):
		return "timestamp_too_new"
	case errors.Is(err, webhook.ErrNoMatchingSignature):
		return "no_matching_signature"
	case errors.Is(err, webhook.ErrDuplicate):
		return "duplicate"
	case errors.Is(err, webhook.ErrInFlight):
		return "in_flight"
	case d.StatusCode == http.StatusServiceUnavailable:
		return "store_unavailable"
	}
	return "other"
}
