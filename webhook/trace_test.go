package webhook_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/go-integration/patterns/webhook"
)

type ctxKey struct{}

// recordingTracer implements every tracer interface and records calls.
type recordingTracer struct {
	name string
	mu   sync.Mutex
	log  *[]string // shared by several tracers to check their order
	// recorded data
	starts    []webhook.TraceAttemptStartData
	ends      []webhook.TraceAttemptEndData
	endCtxOK  []bool
	disables  []webhook.TraceDisableData
	storeErrs []webhook.TraceStoreErrorData
	recvStart []webhook.TraceReceiveStartData
	recvEnd   []webhook.TraceReceiveEndData
	rejects   []webhook.TraceRejectData
}

func newRecordingTracer(name string, log *[]string) *recordingTracer {
	return &recordingTracer{name: name, log: log}
}

func (r *recordingTracer) note(what string) {
	if r.log != nil {
		*r.log = append(*r.log, r.name+" "+what)
	}
}

func (r *recordingTracer) TraceAttemptStart(ctx context.Context, d webhook.TraceAttemptStartData) context.Context {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.starts = append(r.starts, d)
	r.note("start")
	d.Header.Set("Traceparent", "00-"+r.name)
	return context.WithValue(ctx, ctxKey{}, r.name)
}

func (r *recordingTracer) TraceAttemptEnd(ctx context.Context, d webhook.TraceAttemptEndData) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.ends = append(r.ends, d)
	r.endCtxOK = append(r.endCtxOK, ctx.Value(ctxKey{}) != nil)
	r.note("end")
}

func (r *recordingTracer) TraceDisable(_ context.Context, d webhook.TraceDisableData) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.disables = append(r.disables, d)
}

func (r *recordingTracer) TraceStoreError(_ context.Context, d webhook.TraceStoreErrorData) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.storeErrs = append(r.storeErrs, d)
}

func (r *recordingTracer) TraceReceiveStart(ctx context.Context, d webhook.TraceReceiveStartData) context.Context {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.recvStart = append(r.recvStart, d)
	return context.WithValue(ctx, ctxKey{}, r.name)
}

func (r *recordingTracer) TraceReceiveEnd(_ context.Context, d webhook.TraceReceiveEndData) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.recvEnd = append(r.recvEnd, d)
}

func (r *recordingTracer) TraceReject(_ context.Context, d webhook.TraceRejectData) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.rejects = append(r.rejects, d)
}

// An attempt's Start data names what a client span needs, a header a tracer
// adds reaches the endpoint, the context Start returns is the request's
// (the transport sees it) and End's, and End carries the outcome: success,
// an error status with its retry, giving up, and a transport error.
func TestAttemptTracer(t *testing.T) {
	var order []string
	a, b := newRecordingTracer("a", &order), newRecordingTracer("b", &order)
	es := newEndpointServer(t, func(n int, w http.ResponseWriter, _ *http.Request) {
		if n == 1 {
			http.Error(w, "busy", http.StatusServiceUnavailable)
		}
	})
	var transportSaw []any
	store := webhook.NewMemoryStore()
	ctx := context.Background()
	secret := webhook.NewSecret()
	if err := store.SaveEndpoint(ctx, webhook.Endpoint{ID: "ep", URL: es.URL + "/hook", Secrets: []string{secret}}); err != nil {
		t.Fatal(err)
	}
	s, err := webhook.NewSender(store, webhook.WithTracer(a), webhook.WithTracer(b),
		webhook.WithAllowedNetworks(loopback...), webhook.WithSchedule(0, 0), webhook.WithJitter(0),
		webhook.WithTransport(func(base *http.Transport) http.RoundTripper {
			return roundTripFunc(func(r *http.Request) (*http.Response, error) {
				transportSaw = append(transportSaw, r.Context().Value(ctxKey{}))
				return base.RoundTrip(r)
			})
		}))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	m, _, err := s.Send(ctx, webhook.Message{ID: "msg_t", Type: "invoice.paid", Payload: []byte(`{}`)})
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if n, err := s.RunOnce(ctx); n != 1 || err != nil {
			t.Fatalf("RunOnce = %d, %v", n, err)
		}
	}
	if len(a.starts) != 2 || len(a.ends) != 2 || len(b.ends) != 2 {
		t.Fatalf("a: %d starts, %d ends; b: %d ends", len(a.starts), len(a.ends), len(b.ends))
	}
	st := a.starts[0]
	if st.MessageID != m.ID || st.EventType != "invoice.paid" || st.EndpointID != "ep" || st.URL != es.URL+"/hook" ||
		st.Attempt != 1 || st.DeliveryID == "" || a.starts[1].Attempt != 2 {
		t.Fatalf("start data %+v, second attempt %d", st, a.starts[1].Attempt)
	}
	if want := "a start,b start,a end,b end,a start,b start,a end,b end"; join(order) != want {
		t.Fatalf("tracer calls %q, want %q", join(order), want)
	}
	// The later tracer's header and context win; the transport ran in it.
	if h := es.requests()[0].header; h.Get("Traceparent") != "00-b" || h.Get("Webhook-Signature") == "" {
		t.Fatalf("request header %v", h)
	}
	if len(transportSaw) != 2 || transportSaw[0] != "b" || !a.endCtxOK[0] {
		t.Fatalf("transport saw context values %v; End got Start's context: %v", transportSaw, a.endCtxOK)
	}
	first, second := a.ends[0], a.ends[1]
	if first.StatusCode != 503 || first.Err == nil || first.State != webhook.DeliveryPending || first.NextAttempt.IsZero() ||
		first.Duration <= 0 || first.Attempt.Number != 1 || !bytes.Equal(first.Attempt.ResponseBody, []byte("busy\n")) {
		t.Fatalf("first end %+v", first)
	}
	if second.StatusCode != 200 || second.Err != nil || second.State != webhook.DeliverySucceeded {
		t.Fatalf("second end %+v", second)
	}
	if st := s.Stats(); st.Attempts != 2 || st.Succeeded != 1 || st.Failed != 1 || st.RetriesScheduled != 1 || st.GaveUp != 0 || st.InFlight != 0 {
		t.Fatalf("Stats = %+v", st)
	}
}

func join(s []string) string {
	out := ""
	for i, x := range s {
		if i > 0 {
			out += ","
		}
		out += x
	}
	return out
}

// The error path: the SSRF guard refuses the endpoint, the schedule has one
// attempt, so End reports the transport error (wrapping ErrBlockedAddress),
// no status, and a delivery given up; a 410 disables the endpoint.
func TestAttemptTracerErrors(t *testing.T) {
	tr := newRecordingTracer("t", nil)
	store := webhook.NewMemoryStore()
	ctx := context.Background()
	gone := newEndpointServer(t, func(_ int, w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusGone) })
	for id, u := range map[string]string{"blocked": "http://10.0.0.1:9/", "gone": gone.URL} {
		if err := store.SaveEndpoint(ctx, webhook.Endpoint{ID: id, URL: u, Secrets: []string{webhook.NewSecret()}}); err != nil {
			t.Fatal(err)
		}
	}
	s, err := webhook.NewSender(store, webhook.WithTracer(tr), webhook.WithSchedule(0),
		webhook.WithAllowedNetworks(loopback...))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, _, err := s.Send(ctx, webhook.Message{ID: "msg_e", Type: "t"}); err != nil {
		t.Fatal(err)
	}
	if n, err := s.RunOnce(ctx); n != 2 || err != nil {
		t.Fatalf("RunOnce = %d, %v", n, err)
	}
	var blocked, goneEnd webhook.TraceAttemptEndData
	for _, d := range tr.ends {
		if d.StatusCode == 0 {
			blocked = d
		} else {
			goneEnd = d
		}
	}
	if !errors.Is(blocked.Err, webhook.ErrBlockedAddress) || blocked.State != webhook.DeliveryFailed || !blocked.NextAttempt.IsZero() {
		t.Fatalf("blocked attempt end %+v", blocked)
	}
	if goneEnd.StatusCode != http.StatusGone || goneEnd.Err == nil || goneEnd.State != webhook.DeliveryFailed {
		t.Fatalf("410 attempt end %+v", goneEnd)
	}
	if len(tr.disables) != 1 || tr.disables[0].Endpoint.ID != "gone" || !tr.disables[0].Endpoint.Disabled || tr.disables[0].Reason == "" {
		t.Fatalf("disables %+v", tr.disables)
	}
	if st := s.Stats(); st.Attempts != 2 || st.Failed != 2 || st.GaveUp != 2 || st.EndpointsDisabled != 1 {
		t.Fatalf("Stats = %+v", st)
	}
}

// A Receiver's tracer sees every request (Start with the request and the
// unverified ID, End with the status), the handler runs in Start's context,
// and rejections are point events with their reason and status.
func TestReceiveTracer(t *testing.T) {
	tr := newRecordingTracer("r", nil)
	secret := webhook.NewSecret()
	v, _ := webhook.NewVerifier([]string{secret})
	var handlerSaw any
	r := mustReceiver(t, v, webhook.WithTracer(tr))
	h := r.Handler(func(ctx context.Context, _ webhook.Event) error {
		handlerSaw = ctx.Value(ctxKey{})
		return nil
	})
	signer, _ := webhook.NewSigner(secret)
	post := func(id string, sign bool) int {
		body := []byte(`{}`)
		req := httptest.NewRequest(http.MethodPost, "/", bytes.NewReader(body))
		if sign {
			signer.SignHeader(req.Header, id, time.Now(), body)
		} else {
			req.Header.Set("Webhook-Id", id)
			req.Header.Set("Webhook-Timestamp", "1")
			req.Header.Set("Webhook-Signature", "v1,bad")
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec.Code
	}
	if post("msg_ok", true) != 204 || post("msg_ok", true) != 200 || post("msg_bad", false) != 401 {
		t.Fatal("unexpected status codes")
	}
	if handlerSaw != "r" {
		t.Fatalf("handler context value %v, want the tracer's", handlerSaw)
	}
	if len(tr.recvStart) != 3 || tr.recvStart[0].MessageID != "msg_ok" || tr.recvStart[0].Request == nil {
		t.Fatalf("receive starts %+v", tr.recvStart)
	}
	e := tr.recvEnd
	if len(e) != 3 || e[0].StatusCode != 204 || !e[0].Handled || e[0].Err != nil ||
		e[1].StatusCode != 200 || e[1].Handled || !errors.Is(e[1].Err, webhook.ErrDuplicate) ||
		e[2].StatusCode != 401 || !errors.Is(e[2].Err, webhook.ErrTimestampTooOld) {
		t.Fatalf("receive ends %+v", e)
	}
	rj := tr.rejects
	if len(rj) != 2 || rj[0].StatusCode != 200 || !errors.Is(rj[0].Err, webhook.ErrDuplicate) || rj[0].MessageID != "msg_ok" ||
		rj[1].StatusCode != 401 || rj[1].Request == nil {
		t.Fatalf("rejects %+v", rj)
	}
	if st := r.Stats(); st.Requests != 3 || st.Handled != 1 || st.Rejected != 2 || st.Duplicates != 1 || st.HandlerFailed != 0 {
		t.Fatalf("Stats = %+v", st)
	}
}

// A dedup store failure: 503 with a generic message, the cause to the
// tracer (as a store error and as the rejection's reason) and the log.
func TestReceiveTracerDedupDown(t *testing.T) {
	tr := newRecordingTracer("r", nil)
	h := &captureHandler{}
	secret := webhook.NewSecret()
	v, _ := webhook.NewVerifier([]string{secret})
	r := mustReceiver(t, v, webhook.WithTracer(tr), webhook.WithDedup(failingDedup{}), webhook.WithLogger(slog.New(h)))
	signer, _ := webhook.NewSigner(secret)
	body := []byte(`{}`)
	req := httptest.NewRequest(http.MethodPost, "/", bytes.NewReader(body))
	signer.SignHeader(req.Header, "msg_d", time.Now(), body)
	rec := httptest.NewRecorder()
	r.Handler(func(context.Context, webhook.Event) error { return nil }).ServeHTTP(rec, req)
	if rec.Code != 503 || bytes.Contains(rec.Body.Bytes(), []byte("store down")) {
		t.Fatalf("answer %d %q", rec.Code, rec.Body)
	}
	if len(tr.storeErrs) != 1 || tr.storeErrs[0].Op != "dedup begin" || !errors.Is(tr.storeErrs[0].Err, errStoreDown) {
		t.Fatalf("store errors %+v", tr.storeErrs)
	}
	if len(tr.rejects) != 1 || !errors.Is(tr.rejects[0].Err, errStoreDown) || tr.rejects[0].StatusCode != 503 {
		t.Fatalf("rejects %+v", tr.rejects)
	}
	if lines := h.errorLines(); len(lines) != 1 {
		t.Fatalf("log lines %q", lines)
	}
	if st := r.Stats(); st.StoreErrors != 1 || st.Rejected != 1 {
		t.Fatalf("Stats = %+v", st)
	}
}

// A handler that panics: the receive trace still ends (a span is never left
// open), the claim is forgotten so a redelivery is handled, and the panic
// goes on to net/http.
func TestReceiveTracerHandlerPanics(t *testing.T) {
	tr := newRecordingTracer("r", nil)
	secret := webhook.NewSecret()
	v, _ := webhook.NewVerifier([]string{secret})
	r := mustReceiver(t, v, webhook.WithTracer(tr))
	calls := 0
	h := r.Handler(func(context.Context, webhook.Event) error {
		calls++
		if calls == 1 {
			panic("handler bug")
		}
		return nil
	})
	signer, _ := webhook.NewSigner(secret)
	post := func() (code int, panicked any) {
		body := []byte(`{}`)
		req := httptest.NewRequest(http.MethodPost, "/", bytes.NewReader(body))
		signer.SignHeader(req.Header, "msg_p", time.Now(), body)
		rec := httptest.NewRecorder()
		defer func() { panicked = recover() }()
		h.ServeHTTP(rec, req)
		return rec.Code, nil
	}
	if _, p := post(); p != "handler bug" {
		t.Fatalf("panic %v did not reach the caller", p)
	}
	if len(tr.recvEnd) != 1 || !errors.Is(tr.recvEnd[0].Err, webhook.ErrHandlerPanic) || tr.recvEnd[0].StatusCode != 500 || !tr.recvEnd[0].Handled {
		t.Fatalf("receive ends after a panic: %+v", tr.recvEnd)
	}
	if code, p := post(); p != nil || code != 204 || calls != 2 {
		t.Fatalf("redelivery after the panic: %d, %v, %d calls; want 204 and the handler called again", code, p, calls)
	}
	if len(tr.recvStart) != 2 || len(tr.recvEnd) != 2 {
		t.Fatalf("%d starts and %d ends, want 2 of each", len(tr.recvStart), len(tr.recvEnd))
	}
}
