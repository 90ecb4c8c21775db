package main

import (
	"context"
	"io"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"testing"

	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/go-integration/patterns/broker"
	"github.com/go-integration/patterns/broker/memory"
)

// ran reports whether the step whose name starts with prefix ran (not
// skipped, not failed).
func (t *tour) ran(prefix string) bool {
	for _, r := range t.results {
		if strings.HasPrefix(r.name, prefix+" ") {
			return r.err == nil && r.skipped == ""
		}
	}
	return false
}

// childOf returns the one span named name, of kind kind, whose parent is
// parent, in parent's trace; nil, with an error, when there is none (or
// no parent).
func childOf(t *testing.T, spans []sdktrace.ReadOnlySpan, parent sdktrace.ReadOnlySpan, name string, kind trace.SpanKind) sdktrace.ReadOnlySpan {
	t.Helper()
	if parent == nil {
		return nil
	}
	var found []sdktrace.ReadOnlySpan
	for _, s := range spans {
		if s.Name() == name && s.Parent().SpanID() == parent.SpanContext().SpanID() {
			found = append(found, s)
		}
	}
	if len(found) != 1 {
		t.Errorf("%d spans %q under %q, want 1", len(found), name, parent.Name())
		return nil
	}
	s := found[0]
	if s.SpanKind() != kind {
		t.Errorf("span %q is of kind %s, want %s", name, s.SpanKind(), kind)
	}
	if s.SpanContext().TraceID() != parent.SpanContext().TraceID() {
		t.Errorf("span %q is in trace %s, its parent %q in %s", name, s.SpanContext().TraceID(), parent.Name(), parent.SpanContext().TraceID())
	}
	return s
}

// checkBookingTrace checks that the traced booking's chain is one trace,
// HTTP request -> outbox create -> relay send -> memory broker process ->
// rpc client -> its server, and that the printed tree shows it.
func checkBookingTrace(t *testing.T, tr *tour, out string) {
	spans := tr.obs.spans.Ended()
	req := findBookingSpan(spans, tracedBooking)
	if req == nil {
		t.Errorf("no POST /bookings span for %s", tracedBooking)
		return
	}
	if req.SpanKind() != trace.SpanKindServer || attr(req, "http.response.status_code") != "201" {
		t.Errorf("POST /bookings: kind %s, status %q; want server, 201", req.SpanKind(), attr(req, "http.response.status_code"))
	}
	create := childOf(t, spans, req, "create booking_created", trace.SpanKindProducer)
	send := childOf(t, spans, create, "send booking_created", trace.SpanKindProducer)
	process := childOf(t, spans, send, "process booking_created", trace.SpanKindConsumer)
	call := childOf(t, spans, process, "POST", trace.SpanKindClient)
	served := childOf(t, spans, call, "POST /emails", trace.SpanKindServer)
	chain := []sdktrace.ReadOnlySpan{req, create, send, process, call, served}
	if slices.Contains(chain, nil) {
		return
	}
	for _, s := range chain[1:] {
		if s.SpanContext().TraceID() != req.SpanContext().TraceID() {
			t.Errorf("%s is not in the request's trace", s.Name())
		}
	}
	for k, want := range map[string]string{
		"messaging.system": "memory", "messaging.destination.name": "booking_created", "patterns.messaging.outcome": "ok",
	} {
		if got := attr(process, attribute.Key(k)); got != want {
			t.Errorf("process span: %s=%q, want %q", k, got, want)
		}
	}
	// The relay's publish, in a trace of its own, links to the message's send span.
	linked := false
	for _, s := range spans {
		for _, l := range s.Links() {
			linked = linked || (l.SpanContext.SpanID() == send.SpanContext().SpanID() && s.Name() == "send booking_created")
		}
	}
	if !linked {
		t.Error("no relay publish span links to the booking's send span")
	}
	// The tree: one line per span, indented by depth.
	for depth, s := range chain {
		line := "\n   " + strings.Repeat("  ", depth) + s.Name() + " [" + s.SpanKind().String() + "] "
		if !strings.Contains(out, line) {
			t.Errorf("the printed tree lacks the line %q", strings.TrimPrefix(line, "\n"))
		}
	}
	if !strings.Contains(out, "app.booking.id="+tracedBooking+" http.response.status_code=201") {
		t.Error("the request's line lacks its booking and status")
	}
}

// checkBrokerTraces checks, on Kafka and on RabbitMQ (amqprpc), that the
// consumer's span continues the producer's: same trace, parent the send.
func checkBrokerTraces(t *testing.T, tr *tour) {
	spans := tr.obs.spans.Ended()
	byID := map[trace.SpanID]sdktrace.ReadOnlySpan{}
	for _, s := range spans {
		byID[s.SpanContext().SpanID()] = s
	}
	pairs := []struct{ step, child, parent string }{{"3.", "process booking_changes", "send booking_changes"}}
	if tr.ran("5b.") {
		pairs = append(pairs, struct{ step, child, parent string }{"5b.", "serve bookings-tour.availability.", "call bookings-tour.availability."})
	}
	for _, p := range pairs {
		n := 0
		for _, s := range spans {
			if !strings.HasPrefix(s.Name(), p.child) {
				continue
			}
			n++
			parent, ok := byID[s.Parent().SpanID()]
			if !ok || !strings.HasPrefix(parent.Name(), p.parent) || parent.SpanContext().TraceID() != s.SpanContext().TraceID() {
				t.Errorf("step %s: span %q has no parent %q in its trace", p.step, s.Name(), p.parent)
			}
		}
		if n == 0 {
			t.Errorf("step %s: no %q span", p.step, p.child)
		}
	}
}

// checkMetrics checks that the metrics of what the tour did are there.
func checkMetrics(t *testing.T, tr *tour, out string) {
	rm := tr.metrics
	value := func(metric string, by attribute.Key, key string) float64 {
		return metricValues(rm, metric, by, "ok")[key]
	}
	type want struct {
		step, metric string
		by           attribute.Key
		key          string
		exact        float64 // 0: any value above 0
	}
	wants := []want{
		{"2.", "messaging.client.sent.messages", "messaging.system", "memory", 0},
		{"3.", "messaging.client.sent.messages", "messaging.destination.name", "booking_changes", float64(len(bookingChanges))},
		{"2.", "messaging.process.duration", "patterns.messaging.outcome", "ok", 0},
		{"3.", "patterns.kafka.rebalance.partitions", "patterns.kafka.rebalance.event", "assigned", 0},
		{"1.", "patterns.outbox.published", "patterns.outbox.outcome", "ok", float64(len(sampleBookings))},
		{"5a.", "patterns.rpc.retries", "", "", 0},
		{"5a.", "patterns.rpc.breaker.changes", "patterns.rpc.breaker.to", "open", 1},
		{"5a.", "patterns.rpc.idempotency", "patterns.rpc.idempotency.outcome", "replayed", 1},
		{"4.", "patterns.webhook.attempts", "patterns.webhook.outcome", "succeeded", 0},
		{"4.", "patterns.webhook.rejected", "patterns.webhook.reject.reason", "no_matching_signature", 1},
		{"5b.", "patterns.amqprpc.call.duration", "error.type", "ok", 1},
		{"5b.", "patterns.amqprpc.call.duration", "error.type", "not_found", 1},
		{"6.", "patterns.shareddb.routed", "", "", 0},
		{"7.", "patterns.export.rows", "patterns.export.dataset", "bookings", 4},
		{"7.", "patterns.export.bytes", "patterns.export.dataset", "bookings", 0},
	}
	for _, w := range wants {
		if !tr.ran(w.step) {
			continue
		}
		switch got := value(w.metric, w.by, w.key); {
		case w.exact == 0 && got <= 0:
			t.Errorf("step %s: %s{%s=%q} = %g, want > 0", w.step, w.metric, w.by, w.key, got)
		case w.exact != 0 && got != w.exact:
			t.Errorf("step %s: %s{%s=%q} = %g, want %g", w.step, w.metric, w.by, w.key, got, w.exact)
		}
	}
	if tr.ran("6.") && strings.Contains(section(out, "6."), "replica1 (replica) served") {
		if _, ok := metricValues(rm, "patterns.shareddb.replica.lag", "patterns.shareddb.node", "")["replica1"]; !ok {
			t.Error("no replica lag reported for replica1")
		}
	}
	for _, line := range []string{"messages sent:", "messages processed:", "rpc retries:", "webhook attempts:"} {
		if !strings.Contains(out, "\n   "+line) {
			t.Errorf("the metrics summary lacks %q", line)
		}
	}
}

// With -metrics-addr, /metrics serves the metrics in the Prometheus format.
func TestMetricsEndpoint(t *testing.T) {
	obs, err := newObservability("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := obs.shutdown(); err != nil {
			t.Error(err)
		}
	}()
	b := memory.MustNew(memory.WithTracer(obs.tel.Broker()))
	defer b.Close()
	ctx := context.Background()
	if err := b.Publish(ctx, "booking_created", broker.Message{Key: "rentals.france.nevache", Payload: []byte("{}")}); err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get(obs.metricsURL)
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	want := regexp.MustCompile(`(?m)^messaging_client_sent_messages_total\{[^}]*messaging_system="memory"[^}]*\} 1$`)
	if resp.StatusCode != http.StatusOK || !want.Match(body) {
		t.Errorf("GET %s: %d, body lacks %s:\n%s", obs.metricsURL, resp.StatusCode, want, body)
	}
	if !strings.Contains(string(body), `service_name="bookings-tour"`) {
		t.Error("the metrics do not name the service")
	}
}

// A bad address is an error, not a tour without its endpoint.
func TestMetricsEndpointBadAddress(t *testing.T) {
	if _, err := newObservability("not an address"); err == nil {
		t.Fatal("newObservability accepted a bad address")
	}
}
