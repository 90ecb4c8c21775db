package telemetry_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/go-integration/patterns/telemetry"
	"github.com/go-integration/patterns/webhook"
)

// whPartner is an endpoint answering the scripted statuses in turn (then
// 200) and keeping the headers it got.
type whPartner struct {
	srv      *httptest.Server
	mu       sync.Mutex
	statuses []int
	headers  []http.Header
}

func newWHPartner(t *testing.T, statuses ...int) *whPartner {
	p := &whPartner{statuses: statuses}
	p.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		p.mu.Lock()
		p.headers = append(p.headers, r.Header.Clone())
		code := http.StatusOK
		if len(p.statuses) > 0 {
			code, p.statuses = p.statuses[0], p.statuses[1:]
		}
		p.mu.Unlock()
		w.WriteHeader(code)
	}))
	t.Cleanup(p.srv.Close)
	return p
}

func (p *whPartner) got() []http.Header {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]http.Header(nil), p.headers...)
}

// whSender is a Sender over store delivering message m to p's endpoint,
// every attempt due at once; it returns the message as sent.
func whSender(t *testing.T, store webhook.Store, p *whPartner, tracer any, schedule ...time.Duration) *webhook.Sender {
	t.Helper()
	if err := store.SaveEndpoint(context.Background(), webhook.Endpoint{ID: "ep_1", URL: p.srv.URL + "/hooks", Secrets: []string{webhook.NewSecret()}}); err != nil {
		t.Fatal(err)
	}
	if len(schedule) == 0 {
		schedule = []time.Duration{0, 0, 0}
	}
	s, err := webhook.NewSender(store, webhook.WithTracer(tracer), webhook.WithoutSSRFGuard(), webhook.WithJitter(0),
		webhook.WithSchedule(schedule...), webhook.WithLogger(whQuiet))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// runOnce makes the due attempts in ctx and wants n of them.
func runOnce(t *testing.T, ctx context.Context, s *webhook.Sender, n int) {
	t.Helper()
	got, err := s.RunOnce(ctx)
	if err != nil || got != n {
		t.Fatalf("RunOnce = %d, %v; want %d", got, err, n)
	}
}

// Every delivery attempt is a client span under the caller's span, with the
// webhook's ids and the outcome; no traceparent goes to the partner by
// default; attempts are counted by outcome and measured exactly.
func TestWebhookAttemptSpansNoPropagationByDefault(t *testing.T) {
	rig := newRWRig(t)
	p := newWHPartner(t, http.StatusInternalServerError)
	s := whSender(t, webhook.NewMemoryStore(), p, rig.tel.Webhook())
	ctx, parent := rig.tp.Tracer("test").Start(context.Background(), "caller")
	m, n, err := s.Send(ctx, webhook.Message{Type: "invoice.paid", Payload: []byte(`{}`)})
	if err != nil || n != 1 {
		t.Fatalf("Send = %d, %v", n, err)
	}
	runOnce(t, ctx, s, 1)
	runOnce(t, ctx, s, 1)
	parent.End()

	for i, h := range p.got() {
		if h.Get("traceparent") != "" || h.Get("tracestate") != "" || h.Get("baggage") != "" {
			t.Errorf("request %d carried trace context to the partner: %v", i, h)
		}
	}
	spans := rig.named("POST")
	if len(spans) != 2 {
		t.Fatalf("%d POST spans", len(spans))
	}
	for i, sp := range spans {
		if sp.SpanKind() != trace.SpanKindClient || sp.Parent().SpanID() != parent.SpanContext().SpanID() {
			t.Errorf("attempt %d: kind %v parent %v", i, sp.SpanKind(), sp.Parent())
		}
		rwWantAttr(t, sp, "http.request.method", "POST")
		rwWantAttr(t, sp, "server.address", "127.0.0.1")
		rwWantAttr(t, sp, "server.port", rwPort(p.srv))
		rwWantAttr(t, sp, "patterns.webhook.message.id", m.ID)
		rwWantAttr(t, sp, "patterns.webhook.event.type", "invoice.paid")
		rwWantAttr(t, sp, "patterns.webhook.endpoint.id", "ep_1")
		rwWantAttr(t, sp, "patterns.webhook.attempt", int64(i+1))
		rwNoAttr(t, sp, "url.full")
	}
	first, second := spans[0], spans[1]
	rwWantAttr(t, first, "http.response.status_code", int64(500))
	rwWantAttr(t, first, "error.type", "500")
	rwWantAttr(t, first, "patterns.webhook.outcome", "retrying")
	rwWantAttr(t, first, "patterns.webhook.delivery.state", "pending")
	rwNoAttr(t, first, "http.request.resend_count")
	if first.Status().Code != codes.Error {
		t.Errorf("500 attempt status %v", first.Status())
	}
	rwWantAttr(t, second, "http.response.status_code", int64(200))
	rwWantAttr(t, second, "http.request.resend_count", int64(1))
	rwWantAttr(t, second, "patterns.webhook.outcome", "succeeded")
	rwNoAttr(t, second, "error.type")
	if second.Status().Code != codes.Unset {
		t.Errorf("200 attempt status %v", second.Status())
	}

	rm := rig.collect(t)
	for outcome, want := range map[string]int64{"retrying": 1, "succeeded": 1, "failed": 0} {
		if n := rwSum(t, rm, "patterns.webhook.attempts", attribute.String("patterns.webhook.outcome", outcome)); n != want {
			t.Errorf("attempts{%s} = %d, want %d", outcome, n, want)
		}
	}
	base := []attribute.KeyValue{attribute.String("http.request.method", "POST"), attribute.String("server.address", "127.0.0.1"),
		attribute.Int64("server.port", rwPort(p.srv)), attribute.String("url.scheme", "http")}
	bad, total := rwHist(t, rm, "http.client.request.duration", append(base, attribute.Int("http.response.status_code", 500), attribute.String("error.type", "500"))...)
	good, _ := rwHist(t, rm, "http.client.request.duration", append(base, attribute.Int("http.response.status_code", 200))...)
	if bad != 1 || good != 1 || total != 2 {
		t.Errorf("durations: 500 %d, 200 %d, total %d; want 1, 1, 2", bad, good, total)
	}
}

// With WithWebhookPropagation(true) the partner gets the attempt's
// traceparent, and a Receiver with the option continues the sender's trace.
func TestWebhookPropagationOption(t *testing.T) {
	rig := newRWRig(t)
	secret := webhook.NewSecret()
	v, err := webhook.NewVerifier([]string{secret})
	if err != nil {
		t.Fatal(err)
	}
	tel := rig.tel.Webhook(telemetry.WithWebhookPropagation(true), nil)
	recv, err := webhook.NewReceiver(v, webhook.WithTracer(tel))
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var headers []http.Header
	handlerTrace := make(chan trace.SpanContext, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		headers = append(headers, r.Header.Clone())
		mu.Unlock()
		recv.Handler(func(ctx context.Context, e webhook.Event) error {
			handlerTrace <- trace.SpanContextFromContext(ctx)
			return nil
		}).ServeHTTP(w, r)
	}))
	defer srv.Close()
	store := webhook.NewMemoryStore()
	if err := store.SaveEndpoint(context.Background(), webhook.Endpoint{ID: "ep_1", URL: srv.URL, Secrets: []string{secret}}); err != nil {
		t.Fatal(err)
	}
	s, err := webhook.NewSender(store, webhook.WithTracer(tel), webhook.WithoutSSRFGuard(), webhook.WithLogger(whQuiet))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, _, err := s.Send(context.Background(), webhook.Message{Type: "t", Payload: []byte(`{}`)}); err != nil {
		t.Fatal(err)
	}
	runOnce(t, context.Background(), s, 1)

	attempt := rig.named("POST")
	if len(attempt) != 2 {
		t.Fatalf("%d POST spans, want the attempt and the receive", len(attempt))
	}
	// The receiver's span ends first (inside the attempt).
	recvSpan, sendSpan := attempt[0], attempt[1]
	if sendSpan.SpanKind() != trace.SpanKindClient || recvSpan.SpanKind() != trace.SpanKindServer {
		t.Fatalf("kinds %v %v", sendSpan.SpanKind(), recvSpan.SpanKind())
	}
	tp := headers[0].Get("traceparent")
	sc := trace.SpanContextFromContext(propagation.TraceContext{}.Extract(context.Background(), propagation.HeaderCarrier(headers[0])))
	if tp == "" || sc.SpanID() != sendSpan.SpanContext().SpanID() {
		t.Fatalf("partner got traceparent %q, want the attempt span %v", tp, sendSpan.SpanContext())
	}
	if recvSpan.Parent().SpanID() != sendSpan.SpanContext().SpanID() || recvSpan.SpanContext().TraceID() != sendSpan.SpanContext().TraceID() {
		t.Errorf("receive span parent %v, want the attempt", recvSpan.Parent())
	}
	if h := <-handlerTrace; h.SpanID() != recvSpan.SpanContext().SpanID() {
		t.Errorf("handler ran in %v, want the receive span", h)
	}
	rwWantAttr(t, recvSpan, "patterns.webhook.handled", true)
	rwWantAttr(t, recvSpan, "http.response.status_code", int64(http.StatusNoContent))
}

// whRecv is a Receiver behind an httptest server with the given tracer.
func whRecv(t *testing.T, tracer any) (url string, sign func(r *http.Request, id string, body []byte), handled func() int) {
	t.Helper()
	secret := webhook.NewSecret()
	v, err := webhook.NewVerifier([]string{secret})
	if err != nil {
		t.Fatal(err)
	}
	recv, err := webhook.NewReceiver(v, webhook.WithTracer(tracer), webhook.WithLogger(whQuiet))
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	n := 0
	srv := httptest.NewServer(recv.Handler(func(ctx context.Context, e webhook.Event) error {
		mu.Lock()
		n++
		mu.Unlock()
		return nil
	}))
	t.Cleanup(srv.Close)
	signer, err := webhook.NewSigner(secret)
	if err != nil {
		t.Fatal(err)
	}
	return srv.URL, func(r *http.Request, id string, body []byte) {
			if err := signer.SignHeader(r.Header, id, time.Now(), body); err != nil {
				t.Fatal(err)
			}
		}, func() int {
			mu.Lock()
			defer mu.Unlock()
			return n
		}
}

// A Receiver without the option starts a new trace per request, linked to
// a valid incoming traceparent; a malformed or oversized one is ignored and
// the request handled. Rejections are events and counted by reason; the
// request durations are measured.
//
// With WithWebhookPropagation(true) a valid traceparent is the span's
// parent instead, and a bad one is still ignored.
func TestWebhookReceiverSpansAndRejections(t *testing.T) {
	for _, propagate := range []bool{false, true} {
		t.Run(fmt.Sprintf("propagate=%v", propagate), func(t *testing.T) { testWebhookReceiver(t, propagate) })
	}
}

func testWebhookReceiver(t *testing.T, propagate bool) {
	rig := newRWRig(t)
	url, sign, handled := whRecv(t, rig.tel.Webhook(telemetry.WithWebhookPropagation(propagate)))
	const good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	post := func(id, traceparent string, signed bool) int {
		body := []byte(`{"n":1}`)
		req, _ := http.NewRequest(http.MethodPost, url+"/in", strings.NewReader(string(body)))
		if signed {
			sign(req, id, body)
		} else {
			req.Header.Set("webhook-id", id)
			req.Header.Set("webhook-timestamp", "1")
			req.Header.Set("webhook-signature", "v1,AAAA")
		}
		if traceparent != "" {
			req.Header.Set("traceparent", traceparent)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	cases := []struct {
		id, traceparent string
		signed          bool
		status          int
		link            bool
		reason          string
	}{
		{"msg_a", good, true, http.StatusNoContent, true, ""},
		{"msg_b", "00-zz", true, http.StatusNoContent, false, ""},
		{"msg_c", good + strings.Repeat("-0", 2000), true, http.StatusNoContent, false, ""},
		{"msg_a", "", true, http.StatusOK, false, "duplicate"},
		{"msg_d", "", false, http.StatusUnauthorized, false, "timestamp_too_old"},
	}
	for _, c := range cases {
		if got := post(c.id, c.traceparent, c.signed); got != c.status {
			t.Fatalf("%s: status %d, want %d", c.id, got, c.status)
		}
	}
	if n := handled(); n != 3 {
		t.Fatalf("handled %d, want 3", n)
	}
	spans := rig.named("POST")
	if len(spans) != len(cases) {
		t.Fatalf("%d spans", len(spans))
	}
	for i, s := range spans {
		c := cases[i]
		if s.SpanKind() != trace.SpanKindServer {
			t.Errorf("%d: kind %v", i, s.SpanKind())
		}
		switch {
		case propagate && c.link: // the valid traceparent is the parent
			if s.Parent().TraceID().String() != "4bf92f3577b34da6a3ce929d0e0e4736" || !s.Parent().IsRemote() || len(s.Links()) != 0 {
				t.Errorf("%d: parent %v links %v, want the remote parent", i, s.Parent(), s.Links())
			}
		case s.Parent().IsValid():
			t.Errorf("%d: parent %v, want a root span", i, s.Parent())
		case c.link != (len(s.Links()) == 1):
			t.Errorf("%d: links %v, want link %v", i, s.Links(), c.link)
		case c.link && s.Links()[0].SpanContext.TraceID().String() != "4bf92f3577b34da6a3ce929d0e0e4736":
			t.Errorf("%d: link %v", i, s.Links()[0].SpanContext)
		}
		rwWantAttr(t, s, "http.response.status_code", int64(c.status))
		rwWantAttr(t, s, "patterns.webhook.handled", c.reason == "")
		rwWantAttr(t, s, "patterns.webhook.message.id", c.id)
		rwWantAttr(t, s, "url.path", "/in")
		if s.Status().Code != codes.Unset {
			t.Errorf("%d: status %v (4xx is not a server error)", i, s.Status())
		}
		if c.reason != "" {
			rwWantAttr(t, s, "error.type", c.reason)
			e, ok := rwEvent(s, "webhook.rejected")
			if !ok || rwEventAttr(e, "patterns.webhook.reject.reason") != c.reason {
				t.Errorf("%d: events %v", i, s.Events())
			}
		}
	}

	rm := rig.collect(t)
	for reason, want := range map[string]int64{"duplicate": 1, "timestamp_too_old": 1} {
		if n := rwSum(t, rm, "patterns.webhook.rejected", attribute.String("patterns.webhook.reject.reason", reason)); n != want {
			t.Errorf("rejected{%s} = %d, want %d", reason, n, want)
		}
	}
	if n := rwTotal(t, rm, "patterns.webhook.rejected"); n != 2 {
		t.Errorf("rejected total %d, want 2", n)
	}
	base := []attribute.KeyValue{attribute.String("http.request.method", "POST"), attribute.String("url.scheme", "http")}
	n204, total := rwHist(t, rm, "http.server.request.duration", append(base, attribute.Int("http.response.status_code", 204))...)
	n401, _ := rwHist(t, rm, "http.server.request.duration", append(base, attribute.Int("http.response.status_code", 401))...)
	if n204 != 3 || n401 != 1 || total != 5 {
		t.Errorf("server durations: 204 %d, 401 %d, total %d; want 3, 1, 5", n204, n401, total)
	}
}

// A 410 disables the endpoint: an event on the attempt's span and a counter;
// the attempt is counted as failed.
func TestWebhookDisableAndStoreError(t *testing.T) {
	rig := newRWRig(t)
	p := newWHPartner(t, http.StatusGone)
	s := whSender(t, webhook.NewMemoryStore(), p, rig.tel.Webhook())
	if _, _, err := s.Send(context.Background(), webhook.Message{Type: "t", Payload: []byte(`{}`)}); err != nil {
		t.Fatal(err)
	}
	runOnce(t, context.Background(), s, 1)
	spans := rig.named("POST")
	if len(spans) != 1 {
		t.Fatalf("%d spans", len(spans))
	}
	e, ok := rwEvent(spans[0], "webhook.endpoint.disabled")
	if !ok || rwEventAttr(e, "patterns.webhook.disable.reason") != "gone" || rwEventAttr(e, "patterns.webhook.endpoint.id") != "ep_1" {
		t.Errorf("events %v", spans[0].Events())
	}
	rwWantAttr(t, spans[0], "patterns.webhook.outcome", "failed")

	// A store whose Record fails: an event on the attempt and a counter.
	rig2 := newRWRig(t)
	p2 := newWHPartner(t)
	s2 := whSender(t, &failingRecord{MemoryStore: webhook.NewMemoryStore()}, p2, rig2.tel.Webhook())
	if _, _, err := s2.Send(context.Background(), webhook.Message{Type: "t", Payload: []byte(`{}`)}); err != nil {
		t.Fatal(err)
	}
	runOnce(t, context.Background(), s2, 1)
	spans = rig2.named("POST")
	if len(spans) != 1 {
		t.Fatalf("%d spans", len(spans))
	}
	if e, ok := rwEvent(spans[0], "webhook.store.error"); !ok || rwEventAttr(e, "patterns.webhook.store.op") != "record" {
		t.Errorf("events %v", spans[0].Events())
	}

	rm := rig.collect(t)
	if n := rwSum(t, rm, "patterns.webhook.endpoints.disabled", attribute.String("patterns.webhook.disable.reason", "gone")); n != 1 {
		t.Errorf("disabled{gone} = %d, want 1", n)
	}
	if n := rwSum(t, rm, "patterns.webhook.attempts", attribute.String("patterns.webhook.outcome", "failed")); n != 1 {
		t.Errorf("attempts{failed} = %d, want 1", n)
	}
	rm2 := rig2.collect(t)
	if n := rwSum(t, rm2, "patterns.webhook.store.errors", attribute.String("patterns.webhook.store.op", "record")); n != 1 {
		t.Errorf("store errors{record} = %d, want 1", n)
	}
}

// whQuiet drops the webhook packages' logs.
var whQuiet = slog.New(slog.DiscardHandler)

type failingRecord struct{ *webhook.MemoryStore }

func (f *failingRecord) Record(context.Context, webhook.Delivery, webhook.Attempt) (time.Time, error) {
	return time.Time{}, errors.New("test: store down")
}

// When an HTTP middleware already made the server span, the receive span is
// its internal child.
func TestWebhookReceiverUnderAServerSpan(t *testing.T) {
	rig := newRWRig(t)
	secret := webhook.NewSecret()
	v, _ := webhook.NewVerifier([]string{secret})
	recv, err := webhook.NewReceiver(v, webhook.WithTracer(rig.tel.Webhook()))
	if err != nil {
		t.Fatal(err)
	}
	h := recv.Handler(func(context.Context, webhook.Event) error { return nil })
	tracer := rig.tp.Tracer("test")
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, span := tracer.Start(r.Context(), "middleware", trace.WithSpanKind(trace.SpanKindServer))
		defer span.End()
		h.ServeHTTP(w, r.WithContext(ctx))
	}))
	defer srv.Close()
	signer, _ := webhook.NewSigner(secret)
	body := []byte(`{}`)
	req, _ := http.NewRequest(http.MethodPost, srv.URL, strings.NewReader(string(body)))
	signer.SignHeader(req.Header, "msg_x", time.Now(), body)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	mw, recvSpans := rig.named("middleware"), rig.named("POST")
	if len(mw) != 1 || len(recvSpans) != 1 {
		t.Fatalf("%d middleware, %d receive spans", len(mw), len(recvSpans))
	}
	if recvSpans[0].SpanKind() != trace.SpanKindInternal || recvSpans[0].Parent().SpanID() != mw[0].SpanContext().SpanID() {
		t.Errorf("receive span kind %v parent %v", recvSpans[0].SpanKind(), recvSpans[0].Parent())
	}
}
