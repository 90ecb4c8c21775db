package telemetry

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/go-integration/patterns/rpc"
)

// RPC returns the tracer for rpc.WithTracer. It implements
// rpc.AttemptTracer and rpc.BreakerTracer (give it to rpc.NewTransport or
// rpc.NewClient) and rpc.IdempotencyTracer (give it to rpc.Idempotency).
//
// Every attempt of a Transport is an HTTP client span named after the method
// ("GET"), with http.request.method, server.address, server.port, url.full
// (credentials and signature query values redacted),
// http.response.status_code, http.request.resend_count from the second
// attempt on, and error.type plus an Error status for a transport error or a
// status of 400 and above. The attempt's trace context is injected into the
// attempt's request (the rpc client talks to the application's own
// services). Each attempt sent is measured in http.client.request.duration
// (seconds); a circuit breaker's refusal is not, as nothing was sent.
// patterns.rpc.retries counts the attempts after the first that were sent,
// patterns.rpc.give_ups the retryable failures not retried, by reason
// (max_attempts, retry_budget, circuit_open, deadline, canceled).
//
// A breaker change is an event "rpc.breaker.change" on the attempt's span and
// counted in patterns.rpc.breaker.changes by server.address, server.port and
// patterns.rpc.breaker.from/to ("closed", "open", "half-open"); the gauge
// patterns.rpc.breaker.state is each host's state since its last change
// (0 closed, 1 half-open, 2 open, by server.address and server.port), so
// that an open breaker shows without a query over the changes. An
// Idempotency outcome is an event "rpc.idempotency" on the request's span
// (the server span of an HTTP middleware, if any) and counted in
// patterns.rpc.idempotency by patterns.rpc.idempotency.outcome ("stored",
// "replayed", "mismatch", "in-progress", "released", "stale",
// "store-failed").
func (t *Telemetry) RPC() any { return &rpcTracer{t: t} }

// rpcTracer is what RPC returns.
type rpcTracer struct{ t *Telemetry }

var (
	_ rpc.AttemptTracer     = (*rpcTracer)(nil)
	_ rpc.BreakerTracer     = (*rpcTracer)(nil)
	_ rpc.IdempotencyTracer = (*rpcTracer)(nil)
)

// rpcInstruments are the instruments of RPC (and, for
// http.client.request.duration, of Webhook).
type rpcInstruments struct {
	httpClientDuration metric.Float64Histogram
	retries            metric.Int64Counter
	giveUps            metric.Int64Counter
	breakerChanges     metric.Int64Counter
	breakerState       metric.Int64ObservableGauge // fed by breakerStates
	breakerStates      breakerStates
	idempotency        metric.Int64Counter
}

func (in *rpcInstruments) init(m metric.Meter) error {
	var err error
	var errs []error
	in.httpClientDuration, err = m.Float64Histogram("http.client.request.duration",
		metric.WithUnit("s"), metric.WithDescription("Duration of HTTP client requests (one per attempt)."),
		metric.WithExplicitBucketBoundaries(durationBuckets...))
	errs = append(errs, err)
	in.retries, err = m.Int64Counter("patterns.rpc.retries",
		metric.WithUnit("{attempt}"), metric.WithDescription("Attempts after the first that an rpc Transport sent."))
	errs = append(errs, err)
	in.giveUps, err = m.Int64Counter("patterns.rpc.give_ups",
		metric.WithUnit("{request}"), metric.WithDescription("Retryable failures an rpc Transport did not retry, by reason."))
	errs = append(errs, err)
	in.breakerChanges, err = m.Int64Counter("patterns.rpc.breaker.changes",
		metric.WithUnit("{change}"), metric.WithDescription("Circuit breaker state changes, by host and states."))
	errs = append(errs, err)
	in.breakerState, err = initBreakerState(m, &in.breakerStates)
	errs = append(errs, err)
	in.idempotency, err = m.Int64Counter("patterns.rpc.idempotency",
		metric.WithUnit("{request}"), metric.WithDescription("Requests the rpc Idempotency middleware handled with a key, by outcome."))
	errs = append(errs, err)
	return errors.Join(errs...)
}

// recordHTTPClient records one request sent, of RPC or Webhook, in
// http.client.request.duration; status 0 (no response) and errType ""
// are left out.
func (in *rpcInstruments) recordHTTPClient(ctx context.Context, dur time.Duration, method, addr string, port int, scheme string, status int, errType string) {
	attrs := make([]attribute.KeyValue, 0, 6)
	attrs = append(attrs, semconv.HTTPRequestMethodKey.String(method),
		semconv.ServerAddress(addr), semconv.ServerPort(port), semconv.URLScheme(scheme))
	if status != 0 {
		attrs = append(attrs, semconv.HTTPResponseStatusCode(status))
	}
	if errType != "" {
		attrs = append(attrs, semconv.ErrorTypeKey.String(errType))
	}
	in.httpClientDuration.Record(ctx, dur.Seconds(), metric.WithAttributes(attrs...))
}

// Attribute keys of this module's own (not semantic-convention) attributes.
const (
	keyRPCBreakerFrom       = attribute.Key("patterns.rpc.breaker.from")
	keyRPCBreakerTo         = attribute.Key("patterns.rpc.breaker.to")
	keyRPCGiveUpReason      = attribute.Key("patterns.rpc.give_up.reason")
	keyRPCIdempotencyResult = attribute.Key("patterns.rpc.idempotency.outcome")
	keyRPCIdempotencyScope  = attribute.Key("patterns.rpc.idempotency.scope")
	keyRPCRetryWait         = attribute.Key("patterns.rpc.retry.wait")
)

type (
	rpcAttemptKey     struct{}
	webhookAttemptKey struct{}
)

// httpAttempt is what the RPC and Webhook tracers' TraceAttemptStart keeps
// for their TraceAttemptEnd: it is the context TraceAttemptStart returns
// (one allocation for the state and the context value), found again under
// key, one per tracer so that one's attempt is never taken for the other's.
type httpAttempt struct {
	context.Context
	key    any // rpcAttemptKey{} or webhookAttemptKey{}
	span   trace.Span
	method string // the semantic-convention method ("_OTHER" for unknown ones)
	addr   string
	port   int
	scheme string
}

func (a *httpAttempt) Value(key any) any {
	if key == a.key {
		return a
	}
	return a.Context.Value(key)
}

// setSpanErrorType marks an HTTP client attempt's span failed with
// error.type; an error status without an error (4xx, 5xx) has no message.
func setSpanErrorType(span trace.Span, errType string, err error) {
	span.SetAttributes(semconv.ErrorTypeKey.String(errType))
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
		return
	}
	span.SetStatus(codes.Error, "")
}

// Span start options of RPC, AMQPRPC and Webhook, made once, not per span.
var (
	rwClientOpts   = []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindClient)}
	rwServerOpts   = []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindServer)}
	rwInternalOpts = []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindInternal)}
)

// TraceAttemptStart starts the attempt's client span and injects its
// context into the attempt's request header.
func (r *rpcTracer) TraceAttemptStart(ctx context.Context, d rpc.TraceAttemptStartData) context.Context {
	req := d.Request
	a := &httpAttempt{key: rpcAttemptKey{}, method: httpMethod(req.Method), scheme: req.URL.Scheme}
	a.addr, a.port = hostPort(d.Host, req.URL.Scheme)
	name := a.method
	if name == "_OTHER" {
		name = "HTTP"
	}
	ctx, span := r.t.tracer.Start(ctx, name, rwClientOpts...)
	a.Context, a.span = ctx, span
	if span.IsRecording() {
		attrs := make([]attribute.KeyValue, 0, 7)
		attrs = append(attrs, semconv.HTTPRequestMethodKey.String(a.method),
			semconv.ServerAddress(a.addr), semconv.ServerPort(a.port), semconv.URLFull(redactURL(req.URL)))
		if a.method != req.Method {
			attrs = append(attrs, semconv.HTTPRequestMethodOriginal(req.Method))
		}
		if d.Attempt > 1 {
			attrs = append(attrs, semconv.HTTPRequestResendCount(d.Attempt-1))
		}
		span.SetAttributes(attrs...)
	}
	r.t.prop.Inject(ctx, headerCarrier(req.Header))
	return a
}

// TraceAttemptEnd ends the attempt's span and records its metrics.
func (r *rpcTracer) TraceAttemptEnd(ctx context.Context, d rpc.TraceAttemptEndData) {
	a, _ := ctx.Value(rpcAttemptKey{}).(*httpAttempt)
	if a == nil {
		return
	}
	refused := errors.Is(d.Err, rpc.ErrCircuitOpen) // nothing was sent
	errType := ""
	switch {
	case d.Err != nil:
		errType = rpcErrorType(d.Err)
	case d.StatusCode >= 400:
		errType = strconv.Itoa(d.StatusCode)
	}
	giveUp := ""
	if d.GiveUp != nil {
		giveUp = rpcGiveUpReason(d.GiveUp)
	}
	if span := a.span; span.IsRecording() {
		if d.StatusCode != 0 {
			span.SetAttributes(semconv.HTTPResponseStatusCode(d.StatusCode))
		}
		if errType != "" {
			setSpanErrorType(span, errType, d.Err)
		}
		if d.Retry {
			span.SetAttributes(keyRPCRetryWait.String(d.Wait.String()))
		}
		if giveUp != "" {
			span.SetAttributes(keyRPCGiveUpReason.String(giveUp))
		}
	}
	a.span.End()

	in := &r.t.instr.rpc
	if !refused && in.httpClientDuration.Enabled(ctx) {
		in.recordHTTPClient(ctx, d.Duration, a.method, a.addr, a.port, a.scheme, d.StatusCode, errType)
	}
	if !refused && d.Attempt > 1 && in.retries.Enabled(ctx) {
		in.retries.Add(ctx, 1, metric.WithAttributes(semconv.HTTPRequestMethodKey.String(a.method),
			semconv.ServerAddress(a.addr), semconv.ServerPort(a.port)))
	}
	if giveUp != "" && in.giveUps.Enabled(ctx) {
		in.giveUps.Add(ctx, 1, metric.WithAttributes(semconv.HTTPRequestMethodKey.String(a.method),
			semconv.ServerAddress(a.addr), semconv.ServerPort(a.port), keyRPCGiveUpReason.String(giveUp)))
	}
}

// TraceBreakerChange adds an event to the attempt's span and counts the
// change.
func (r *rpcTracer) TraceBreakerChange(ctx context.Context, d rpc.TraceBreakerChangeData) {
	addr, port := hostPort(d.Host, "")
	from, to := d.From.String(), d.To.String()
	if span := trace.SpanFromContext(ctx); span.IsRecording() {
		span.AddEvent("rpc.breaker.change", trace.WithAttributes(semconv.ServerAddress(addr),
			keyRPCBreakerFrom.String(from), keyRPCBreakerTo.String(to)))
	}
	r.t.instr.rpc.breakerStates.set(breakerHost{addr, port}, d.To)
	if c := r.t.instr.rpc.breakerChanges; c.Enabled(ctx) {
		attrs := []attribute.KeyValue{semconv.ServerAddress(addr), keyRPCBreakerFrom.String(from), keyRPCBreakerTo.String(to)}
		if port != 0 {
			attrs = append(attrs, semconv.ServerPort(port))
		}
		c.Add(ctx, 1, metric.WithAttributes(attrs...))
	}
}

// TraceIdempotency adds an event to the request's span and counts the
// outcome.
func (r *rpcTracer) TraceIdempotency(ctx context.Context, d rpc.TraceIdempotencyData) {
	outcome := d.Outcome.String()
	if span := trace.SpanFromContext(ctx); span.IsRecording() {
		attrs := []attribute.KeyValue{keyRPCIdempotencyResult.String(outcome), semconv.HTTPResponseStatusCode(d.StatusCode)}
		if d.Scope != "" {
			attrs = append(attrs, keyRPCIdempotencyScope.String(d.Scope))
		}
		if d.Err != nil {
			attrs = append(attrs, semconv.ErrorTypeKey.String(errTypeOf(d.Err)), attribute.String("exception.message", d.Err.Error()))
		}
		span.AddEvent("rpc.idempotency", trace.WithAttributes(attrs...))
	}
	if c := r.t.instr.rpc.idempotency; c.Enabled(ctx) {
		c.Add(ctx, 1, metric.WithAttributes(keyRPCIdempotencyResult.String(outcome)))
	}
}

// rpcErrorType is error.type for an rpc attempt's error.
func rpcErrorType(err error) string {
	if et := commonErrorType(err); et != "" {
		return et
	}
	if errors.Is(err, rpc.ErrCircuitOpen) {
		return "circuit_open"
	}
	return goErrorType(err)
}

// rpcGiveUpReason names TraceAttemptEndData.GiveUp.
func rpcGiveUpReason(err error) string {
	switch {
	case errors.Is(err, rpc.ErrMaxAttempts):
		return "max_attempts"
	case errors.Is(err, rpc.ErrRetryBudgetExhausted):
		return "retry_budget"
	case errors.Is(err, rpc.ErrCircuitOpen):
		return "circuit_open"
	case errors.Is(err, context.DeadlineExceeded):
		return "deadline"
	case errors.Is(err, context.Canceled):
		return "canceled"
	}
	return "other"
}

// The helpers below are shared by RPC, AMQPRPC and Webhook.

// errTypeOf is a low-cardinality error.type for err: the shared
// vocabulary (commonErrorType), else goErrorType.
func errTypeOf(err error) string {
	if et := commonErrorType(err); et != "" {
		return et
	}
	return goErrorType(err)
}

// goErrorType is the Go type of the first error in err's chain that is not
// a plain wrapper, or "_OTHER": the last resort of the component error-type
// functions, which have asked commonErrorType already.
func goErrorType(err error) string {
	for e := err; e != nil; e = errors.Unwrap(e) {
		switch t := fmt.Sprintf("%T", e); t {
		case "*fmt.wrapError", "*fmt.wrapErrors", "*errors.errorString", "*errors.joinError":
		default:
			return t
		}
	}
	return "_OTHER"
}

// httpMethod is the semantic conventions' http.request.method: a known
// method, or "_OTHER".
func httpMethod(m string) string {
	switch m {
	case http.MethodGet, http.MethodPost, http.MethodPut, http.MethodDelete, http.MethodHead,
		http.MethodPatch, http.MethodOptions, http.MethodConnect, http.MethodTrace:
		return m
	case "":
		return http.MethodGet
	}
	return "_OTHER"
}

// hostPort splits a URL host into server.address and server.port, the
// port defaulting by scheme (0 when unknown).
func hostPort(host, scheme string) (string, int) {
	h, p, err := net.SplitHostPort(host)
	if err != nil {
		h = host
		if len(h) > 1 && h[0] == '[' && h[len(h)-1] == ']' {
			h = h[1 : len(h)-1]
		}
		switch scheme {
		case "http":
			return h, 80
		case "https":
			return h, 443
		}
		return h, 0
	}
	port, _ := strconv.Atoi(p)
	return h, port
}

// redactedQuery are the query parameters whose values url.full redacts, as
// the semantic conventions recommend.
var redactedQuery = []string{"AWSAccessKeyId", "Signature", "sig", "X-Goog-Signature"}

// redactURL is url.full for u: user information and the values of the
// signature query parameters replaced by "REDACTED".
func redactURL(u *url.URL) string {
	if u.User == nil && u.RawQuery == "" {
		return u.String()
	}
	c := *u
	if c.User != nil {
		c.User = url.UserPassword("REDACTED", "REDACTED")
	}
	if c.RawQuery != "" {
		q := c.Query()
		changed := false
		for _, k := range redactedQuery {
			if q.Has(k) {
				q.Set(k, "REDACTED")
				changed = true
			}
		}
		if changed {
			c.RawQuery = q.Encode()
		}
	}
	return c.String()
}

// inboundCarrier hides what the propagator must not parse: a malformed or
// oversized traceparent or tracestate reads as absent, so the span becomes a
// new root (or, for a bad tracestate only, keeps the traceparent).
type inboundCarrier struct{ propagation.TextMapCarrier }

func (c inboundCarrier) Get(key string) string { return inbound(key, c.TextMapCarrier.Get(key)) }
