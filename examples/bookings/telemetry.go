package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	"go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	semconv "go.opentelemetry.io/otel/semconv/v1.37.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/go-integration/patterns/telemetry"
)

// observability is the tour's OpenTelemetry set-up. Every component gets its
// tracer from tel (tel.Broker(), tel.Outbox(), tel.RPC(), ...); the SDK
// keeps the run's spans and metrics in memory, and at the end the tour prints
// the trace of one booking and a summary of the metrics. A service would
// export them instead (OTLP to a collector, Jaeger, Tempo): only the SDK
// set-up below changes, not the components.
type observability struct {
	tel     *telemetry.Telemetry
	tracer  trace.Tracer // the tour's own spans: the requests its services receive
	prop    propagation.TextMapPropagator
	spans   *tracetest.SpanRecorder
	metrics *sdkmetric.ManualReader
	tp      *sdktrace.TracerProvider
	mp      *sdkmetric.MeterProvider

	metricsURL string       // where /metrics is served, "" when it is not
	srv        *http.Server // the /metrics server
	srvDone    chan error
}

// bookingIDKey is the attribute that names the booking of a POST /bookings span.
const bookingIDKey = attribute.Key("app.booking.id")

// newObservability sets up the SDK and telemetry. With a metricsAddr
// (":9464"), the metrics are also served at http://metricsAddr/metrics by
// the OpenTelemetry Prometheus exporter until shutdown.
func newObservability(metricsAddr string) (*observability, error) {
	o := &observability{
		spans:   tracetest.NewSpanRecorder(),
		metrics: sdkmetric.NewManualReader(),
		prop:    propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}),
	}
	service := resource.NewSchemaless(semconv.ServiceName("bookings-tour"))
	o.tp = sdktrace.NewTracerProvider(sdktrace.WithResource(service),
		sdktrace.WithSampler(sdktrace.AlwaysSample()), sdktrace.WithSpanProcessor(o.spans))
	readers := []sdkmetric.Option{sdkmetric.WithResource(service), sdkmetric.WithReader(o.metrics)}
	var ln net.Listener
	registry := prometheus.NewRegistry()
	if metricsAddr != "" {
		exporter, err := otelprom.New(otelprom.WithRegisterer(registry))
		if err != nil {
			return nil, fmt.Errorf("prometheus exporter: %w", err)
		}
		readers = append(readers, sdkmetric.WithReader(exporter))
		if ln, err = net.Listen("tcp", metricsAddr); err != nil {
			return nil, fmt.Errorf("-metrics-addr: %w", err)
		}
	}
	o.mp = sdkmetric.NewMeterProvider(readers...)
	tel, err := telemetry.New(telemetry.WithTracerProvider(o.tp), telemetry.WithMeterProvider(o.mp), telemetry.WithPropagator(o.prop))
	if err != nil {
		if ln != nil {
			ln.Close()
		}
		return nil, err
	}
	o.tel = tel
	o.tracer = o.tp.Tracer("bookings-tour")
	if ln != nil {
		mux := http.NewServeMux()
		mux.Handle("GET /metrics", promhttp.HandlerFor(registry, promhttp.HandlerOpts{}))
		o.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
		o.srvDone = make(chan error, 1)
		o.metricsURL = "http://" + ln.Addr().String() + "/metrics"
		go func() { o.srvDone <- o.srv.Serve(ln) }()
	}
	return o, nil
}

// shutdown stops the /metrics server and the providers.
func (o *observability) shutdown() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var errs []error
	if o.srv != nil {
		errs = append(errs, o.srv.Shutdown(ctx))
		if err := <-o.srvDone; !errors.Is(err, http.ErrServerClosed) {
			errs = append(errs, err)
		}
	}
	errs = append(errs, o.tp.Shutdown(ctx), o.mp.Shutdown(ctx))
	return errors.Join(errs...)
}

// startRequest starts the server span of an incoming request to route
// ("POST /bookings"), continuing the caller's trace from header (a new trace
// without one). End it with endRequest.
func (o *observability) startRequest(ctx context.Context, header http.Header, route string, attrs ...attribute.KeyValue) (context.Context, trace.Span) {
	ctx = o.prop.Extract(ctx, propagation.HeaderCarrier(header))
	method, path, _ := strings.Cut(route, " ")
	attrs = append(attrs, semconv.HTTPRequestMethodKey.String(method), semconv.HTTPRoute(path))
	return o.tracer.Start(ctx, route, trace.WithSpanKind(trace.SpanKindServer), trace.WithAttributes(attrs...))
}

// endRequest ends a span of startRequest with the response's status.
func endRequest(span trace.Span, status int) {
	span.SetAttributes(semconv.HTTPResponseStatusCode(status))
	if status >= 500 {
		span.SetStatus(codes.Error, http.StatusText(status))
	}
	span.End()
}

// serve wraps h, the handler of route, in a server span (as otelhttp would).
func (o *observability) serve(route string, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, span := o.startRequest(r.Context(), r.Header, route)
		sw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
		defer func() { endRequest(span, sw.status) }()
		h.ServeHTTP(sw, r.WithContext(ctx))
	})
}

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(status int) {
	w.status = status
	w.ResponseWriter.WriteHeader(status)
}

// collect reads the metrics of the run so far.
func (o *observability) collect(ctx context.Context) (metricdata.ResourceMetrics, error) {
	var rm metricdata.ResourceMetrics
	err := o.metrics.Collect(ctx, &rm)
	return rm, err
}

// report prints the trace of booking id (a tree, one span a line) and the
// summary of the metrics in rm.
func (o *observability) report(w io.Writer, id string, rm metricdata.ResourceMetrics) {
	spans := o.spans.Ended()
	fmt.Fprintf(w, "\n== Telemetry: the trace of booking %s\n", id)
	root := findBookingSpan(spans, id)
	if root == nil {
		fmt.Fprintf(w, "   no trace: step 1 did not take the booking\n")
	} else {
		tid := root.SpanContext().TraceID()
		fmt.Fprintf(w, "   trace %s: the request, the outbox row, the relay, the broker, the handler and its call\n", tid)
		printTrace(w, spans, tid, 0)
		for _, other := range linkingTraces(spans, tid) {
			fmt.Fprintf(w, "   linked from trace %s:\n", other)
			printTrace(w, spans, other, 1)
		}
		fmt.Fprintf(w, "   other traces of the run, by root span: %s\n", otherTraces(spans, tid))
	}
	fmt.Fprintf(w, "\n== Telemetry: metrics of the run\n")
	for _, s := range summary {
		if v := metricValues(rm, s.metric, s.by, s.none); len(v) > 0 {
			fmt.Fprintf(w, "   %-22s %s  (%s)\n", s.label+":", formatValues(v), s.metric)
		}
	}
	if o.metricsURL != "" {
		fmt.Fprintf(w, "   all of them at %s in the Prometheus format\n", o.metricsURL)
	}
}

// findBookingSpan returns the POST /bookings span of booking id.
func findBookingSpan(spans []sdktrace.ReadOnlySpan, id string) sdktrace.ReadOnlySpan {
	for _, s := range spans {
		if s.Name() == "POST /bookings" && attr(s, bookingIDKey) == id {
			return s
		}
	}
	return nil
}

// printTrace prints the spans of trace tid as a tree, children in start
// order, indented by depth levels.
func printTrace(w io.Writer, spans []sdktrace.ReadOnlySpan, tid trace.TraceID, depth int) {
	children := map[trace.SpanID][]sdktrace.ReadOnlySpan{}
	ids := map[trace.SpanID]bool{}
	var trc []sdktrace.ReadOnlySpan
	for _, s := range spans {
		if s.SpanContext().TraceID() == tid {
			trc = append(trc, s)
			ids[s.SpanContext().SpanID()] = true
		}
	}
	slices.SortFunc(trc, func(a, b sdktrace.ReadOnlySpan) int { return a.StartTime().Compare(b.StartTime()) })
	var roots []sdktrace.ReadOnlySpan
	for _, s := range trc {
		if p := s.Parent().SpanID(); ids[p] {
			children[p] = append(children[p], s)
		} else {
			roots = append(roots, s)
		}
	}
	var walk func(s sdktrace.ReadOnlySpan, depth int)
	walk = func(s sdktrace.ReadOnlySpan, depth int) {
		fmt.Fprintf(w, "   %s%s\n", strings.Repeat("  ", depth), spanLine(s))
		for _, c := range children[s.SpanContext().SpanID()] {
			walk(c, depth+1)
		}
	}
	for _, r := range roots {
		walk(r, depth)
	}
}

// lineAttrs are the attributes a span's line shows, when it has them.
var lineAttrs = []attribute.Key{
	bookingIDKey,
	semconv.MessagingSystemKey, semconv.MessagingDestinationNameKey, semconv.MessagingConsumerGroupNameKey,
	"patterns.messaging.outcome", "patterns.outbox.published",
	semconv.HTTPResponseStatusCodeKey, semconv.ServerAddressKey,
	semconv.DBSystemNameKey, "patterns.shareddb.node", "patterns.export.day",
	semconv.ErrorTypeKey,
}

// spanLine is "name [kind] duration key=value ...".
func spanLine(s sdktrace.ReadOnlySpan) string {
	var b strings.Builder
	d := s.EndTime().Sub(s.StartTime())
	fmt.Fprintf(&b, "%s [%s] %s", s.Name(), s.SpanKind(), formatDuration(d))
	for _, k := range lineAttrs {
		if v := attr(s, k); v != "" {
			fmt.Fprintf(&b, " %s=%s", k, v)
		}
	}
	if s.Status().Code == codes.Error {
		fmt.Fprintf(&b, " ERROR %s", s.Status().Description)
	}
	return b.String()
}

func formatDuration(d time.Duration) string {
	if d < time.Millisecond {
		return fmt.Sprintf("%.2fms", float64(d)/float64(time.Millisecond))
	}
	return fmt.Sprintf("%.1fms", float64(d)/float64(time.Millisecond))
}

func attr(s sdktrace.ReadOnlySpan, k attribute.Key) string {
	for _, a := range s.Attributes() {
		if a.Key == k {
			return a.Value.String()
		}
	}
	return ""
}

// linkingTraces returns the traces with a span linked to a span of tid (the
// relay's batch, whose publish links to each message's send span).
func linkingTraces(spans []sdktrace.ReadOnlySpan, tid trace.TraceID) []trace.TraceID {
	var out []trace.TraceID
	for _, s := range spans {
		for _, l := range s.Links() {
			if other := s.SpanContext().TraceID(); l.SpanContext.TraceID() == tid && other != tid && !slices.Contains(out, other) {
				out = append(out, other)
			}
		}
	}
	return out
}

// otherTraces counts the traces other than tid by the name of their root span.
func otherTraces(spans []sdktrace.ReadOnlySpan, tid trace.TraceID) string {
	counts := map[string]int{}
	for _, s := range spans {
		if !s.Parent().IsValid() && s.SpanContext().TraceID() != tid {
			counts[fmt.Sprintf("%s [%s]", s.Name(), s.SpanKind())]++
		}
	}
	names := slices.Sorted(maps.Keys(counts))
	for i, n := range names {
		names[i] = fmt.Sprintf("%d %s", counts[n], n)
	}
	return strings.Join(names, ", ")
}

// summary lists the metrics the tour prints: the label, the metric, the
// attribute its values are split by ("" for a total) and the name of the
// values without that attribute.
var summary = []struct {
	label, metric string
	by            attribute.Key
	none          string
}{
	{"messages sent", "messaging.client.sent.messages", semconv.MessagingSystemKey, ""},
	{"messages processed", "messaging.process.duration", "patterns.messaging.outcome", ""},
	{"redeliveries", "patterns.messaging.redeliveries", semconv.MessagingSystemKey, ""},
	{"dead letters", "patterns.messaging.dead_letters", semconv.MessagingSystemKey, ""},
	{"outbox published", "patterns.outbox.published", "patterns.outbox.outcome", ""},
	{"rpc retries", "patterns.rpc.retries", "", ""},
	{"rpc give-ups", "patterns.rpc.give_ups", "patterns.rpc.give_up.reason", ""},
	{"rpc breaker changes", "patterns.rpc.breaker.changes", "patterns.rpc.breaker.to", ""},
	{"idempotency", "patterns.rpc.idempotency", "patterns.rpc.idempotency.outcome", ""},
	{"amqprpc calls", "patterns.amqprpc.call.duration", semconv.ErrorTypeKey, "ok"},
	{"webhook attempts", "patterns.webhook.attempts", "patterns.webhook.outcome", ""},
	{"webhooks rejected", "patterns.webhook.rejected", "patterns.webhook.reject.reason", ""},
	{"reads routed", "patterns.shareddb.routed", "patterns.shareddb.route", ""},
	{"replica lag (s)", "patterns.shareddb.replica.lag", "patterns.shareddb.node", ""},
	{"kafka partitions", "patterns.kafka.rebalance.partitions", "patterns.kafka.rebalance.event", ""},
	{"kafka stuck", "patterns.kafka.partition.stuck_events", "", ""},
	{"export rows", "patterns.export.rows", "patterns.export.dataset", ""},
	{"export bytes", "patterns.export.bytes", "patterns.export.dataset", ""},
}

// metricValues returns the value of metric in rm split by the attribute by:
// the sum of a counter, the count of a histogram, the last value of a
// gauge. Points without the attribute count under none.
func metricValues(rm metricdata.ResourceMetrics, metric string, by attribute.Key, none string) map[string]float64 {
	out := map[string]float64{}
	group := func(set attribute.Set) string {
		if by == "" {
			return ""
		}
		if v, ok := set.Value(by); ok {
			return v.String()
		}
		return none
	}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name != metric {
				continue
			}
			switch d := m.Data.(type) {
			case metricdata.Sum[int64]:
				for _, p := range d.DataPoints {
					out[group(p.Attributes)] += float64(p.Value)
				}
			case metricdata.Sum[float64]:
				for _, p := range d.DataPoints {
					out[group(p.Attributes)] += p.Value
				}
			case metricdata.Histogram[float64]:
				for _, p := range d.DataPoints {
					out[group(p.Attributes)] += float64(p.Count)
				}
			case metricdata.Gauge[int64]:
				for _, p := range d.DataPoints {
					out[group(p.Attributes)] = float64(p.Value)
				}
			case metricdata.Gauge[float64]:
				for _, p := range d.DataPoints {
					out[group(p.Attributes)] = p.Value
				}
			}
		}
	}
	return out
}

// formatValues is "a 1, b 2", or "3" for a total.
func formatValues(v map[string]float64) string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(v)) {
		num := fmt.Sprintf("%g", v[k])
		if k == "" {
			parts = append(parts, num)
		} else {
			parts = append(parts, k+" "+num)
		}
	}
	return strings.Join(parts, ", ")
}
