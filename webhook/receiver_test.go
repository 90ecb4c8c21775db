package webhook_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-integration/patterns/webhook"
)

type receiverFixture struct {
	secret string
	signer *webhook.Signer
	srv    *httptest.Server
	calls  atomic.Int32
}

func newReceiverFixture(t *testing.T, fn func(ctx context.Context, e webhook.Event) error, opts ...webhook.ReceiverOption) *receiverFixture {
	t.Helper()
	f := &receiverFixture{secret: webhook.NewSecret()}
	var err error
	if f.signer, err = webhook.NewSigner(f.secret); err != nil {
		t.Fatal(err)
	}
	v, err := webhook.NewVerifier([]string{f.secret})
	if err != nil {
		t.Fatal(err)
	}
	r := mustReceiver(t, v, opts...)
	f.srv = httptest.NewServer(r.Handler(func(ctx context.Context, e webhook.Event) error {
		f.calls.Add(1)
		return fn(ctx, e)
	}))
	t.Cleanup(f.srv.Close)
	return f
}

// post sends a signed request; mutate may tamper with it after signing.
func (f *receiverFixture) post(t *testing.T, id string, body []byte, mutate func(*http.Request)) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, f.srv.URL, bytes.NewReader(body))
	f.signer.SignHeader(req.Header, id, time.Now(), body)
	if mutate != nil {
		mutate(req)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestReceiver(t *testing.T) {
	var got webhook.Event
	f := newReceiverFixture(t, func(_ context.Context, e webhook.Event) error { got = e; return nil })
	body := []byte(`{"type":"order.created"}`)
	if code, msg := f.post(t, "msg_1", body, nil); code != http.StatusNoContent {
		t.Fatalf("valid request: %d %s", code, msg)
	}
	if got.ID != "msg_1" || string(got.Body) != string(body) || time.Since(got.Timestamp) > time.Minute {
		t.Fatalf("event: %+v", got)
	}
	// A replay of the same ID is acknowledged but not handled again.
	if code, _ := f.post(t, "msg_1", body, nil); code != http.StatusOK {
		t.Fatalf("replay: %d", code)
	}
	if n := f.calls.Load(); n != 1 {
		t.Fatalf("handler called %d times, want 1", n)
	}

	cases := []struct {
		name   string
		mutate func(*http.Request)
		want   int
	}{
		{"tampered body", func(r *http.Request) { r.Body = io.NopCloser(strings.NewReader(`{"type":"order.deleted"}`)) }, 401},
		{"missing signature", func(r *http.Request) { r.Header.Del("webhook-signature") }, 400},
		{"missing id", func(r *http.Request) { r.Header.Del("webhook-id") }, 400},
		{"bad timestamp", func(r *http.Request) { r.Header.Set("webhook-timestamp", "soon") }, 400},
		{"old timestamp", func(r *http.Request) {
			f.signer.SignHeader(r.Header, "msg_2", time.Now().Add(-time.Hour), body)
		}, 401},
		{"other secret", func(r *http.Request) {
			s, _ := webhook.NewSigner(webhook.NewSecret())
			s.SignHeader(r.Header, "msg_2", time.Now(), body)
		}, 401},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := f.calls.Load()
			if code, msg := f.post(t, "msg_2", body, c.mutate); code != c.want {
				t.Fatalf("got %d %s, want %d", code, msg, c.want)
			}
			if f.calls.Load() != before {
				t.Fatal("handler called for a rejected request")
			}
		})
	}
}

func TestReceiverBodyLimit(t *testing.T) {
	var rejected atomic.Value
	f := newReceiverFixture(t, func(context.Context, webhook.Event) error { return nil },
		webhook.WithMaxBodyBytes(1000),
		webhook.WithTracer(onReject(func(_ *http.Request, err error) { rejected.Store(err) })))
	if code, _ := f.post(t, "ok", make([]byte, 1000), nil); code != http.StatusNoContent {
		t.Fatalf("body at the limit: %d", code)
	}
	if code, _ := f.post(t, "big", make([]byte, 1001), nil); code != http.StatusRequestEntityTooLarge {
		t.Fatalf("body over the limit: %d", code)
	}
	// Without a Content-Length (chunked), the limit still holds while reading.
	chunked := func(r *http.Request) {
		r.Body = io.NopCloser(io.MultiReader(bytes.NewReader(make([]byte, 5000))))
		r.ContentLength = -1
	}
	if code, _ := f.post(t, "big2", nil, chunked); code != http.StatusRequestEntityTooLarge {
		t.Fatalf("chunked body over the limit: %d", code)
	}
	if err, _ := rejected.Load().(error); !errors.Is(err, webhook.ErrBodyTooLarge) {
		t.Fatalf("OnReject got %v", err)
	}
	if f.calls.Load() != 1 {
		t.Fatalf("handler calls %d", f.calls.Load())
	}
}

func TestReceiverDefaultLimitIsOneMiB(t *testing.T) {
	f := newReceiverFixture(t, func(context.Context, webhook.Event) error { return nil })
	if code, _ := f.post(t, "big", make([]byte, 1<<20+1), nil); code != http.StatusRequestEntityTooLarge {
		t.Fatalf("1 MiB + 1: %d", code)
	}
	if code, _ := f.post(t, "fits", make([]byte, 1<<20), nil); code != http.StatusNoContent {
		t.Fatalf("1 MiB: %d", code)
	}
}

func TestReceiverHandlerFailureAllowsRetry(t *testing.T) {
	var fail atomic.Bool
	fail.Store(true)
	f := newReceiverFixture(t, func(context.Context, webhook.Event) error {
		if fail.Load() {
			return errors.New("database down")
		}
		return nil
	})
	body := []byte("{}")
	if code, _ := f.post(t, "msg_f", body, nil); code != http.StatusInternalServerError {
		t.Fatalf("failing handler: %d", code)
	}
	fail.Store(false)
	if code, _ := f.post(t, "msg_f", body, nil); code != http.StatusNoContent {
		t.Fatalf("retry after failure: %d", code)
	}
	if code, _ := f.post(t, "msg_f", body, nil); code != http.StatusOK {
		t.Fatalf("replay after success: %d", code)
	}
	if n := f.calls.Load(); n != 2 {
		t.Fatalf("handler calls %d, want 2", n)
	}
}

func TestReceiverStatusError(t *testing.T) {
	f := newReceiverFixture(t, func(context.Context, webhook.Event) error {
		return &webhook.StatusError{Code: http.StatusUnprocessableEntity, Err: errors.New("unknown event type")}
	})
	if code, _ := f.post(t, "msg_s", []byte("{}"), nil); code != http.StatusUnprocessableEntity {
		t.Fatalf("StatusError: %d", code)
	}
}

func TestReceiverInFlight(t *testing.T) {
	entered, release := make(chan struct{}), make(chan struct{})
	f := newReceiverFixture(t, func(context.Context, webhook.Event) error {
		close(entered)
		<-release
		return nil
	})
	done := make(chan int)
	go func() {
		code, _ := f.post(t, "msg_i", []byte("{}"), nil)
		done <- code
	}()
	<-entered
	if code, _ := f.post(t, "msg_i", []byte("{}"), nil); code != http.StatusConflict {
		t.Fatalf("concurrent duplicate: %d, want 409", code)
	}
	close(release)
	if code := <-done; code != http.StatusNoContent {
		t.Fatalf("first request: %d", code)
	}
}

func TestReceiverMiddlewarePassesRawBody(t *testing.T) {
	secret := webhook.NewSecret()
	v, _ := webhook.NewVerifier([]string{secret})
	r := mustReceiver(t, v, webhook.WithoutDedup())
	body := []byte("raw \x00\xff bytes")
	var seen []byte
	var ev webhook.Event
	h := r.Middleware(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		seen, _ = io.ReadAll(req.Body)
		ev, _ = webhook.EventFromContext(req.Context())
		w.WriteHeader(http.StatusAccepted)
	}))
	s, _ := webhook.NewSigner(secret)
	for range 2 { // no dedup store: both are handled
		req := httptest.NewRequest(http.MethodPost, "/", bytes.NewReader(body))
		s.SignHeader(req.Header, "msg_m", time.Now(), body)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != http.StatusAccepted || !bytes.Equal(seen, body) || ev.ID != "msg_m" {
			t.Fatalf("code %d body %q event %+v", rec.Code, seen, ev)
		}
	}
}

// A nil Verifier is caught at construction, not by a nil dereference on the
// first request (which net/http would swallow, dropping every webhook).
func TestNewReceiverNilVerifier(t *testing.T) {
	if _, err := webhook.NewReceiver(nil); !errors.Is(err, webhook.ErrInvalidOption) || !strings.Contains(err.Error(), "nil Verifier") {
		t.Fatalf("NewReceiver(nil) = %v, want ErrInvalidOption naming the nil Verifier", err)
	}
}

// A handler slower than the dedup lease: the lease expires (the receiver's
// clock moves past it), a retry of the delivery claims the ID and succeeds;
// the first handler then fails late. Its Forget is refused as stale, so the
// ID stays handled: a third delivery is a duplicate, not a third run.
func TestReceiverStaleOwnerDoesNotOverwrite(t *testing.T) {
	var clock atomic.Int64
	clock.Store(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC).UnixNano())
	now := func() time.Time { return time.Unix(0, clock.Load()) }
	var runs atomic.Int32
	firstIn, firstGo := make(chan struct{}), make(chan struct{})
	stale := make(chan error, 4)
	f := newReceiverFixture(t, func(context.Context, webhook.Event) error {
		if runs.Add(1) == 1 {
			close(firstIn)
			<-firstGo // outlives the lease
			return errors.New("first handler failed late")
		}
		return nil
	}, webhook.WithDedupTimes(time.Minute, time.Hour), webhook.WithClock(now),
		webhook.WithTracer(onStoreError(func(err error) {
			if errors.Is(err, webhook.ErrStaleClaim) {
				stale <- err
			}
		})))
	type result struct {
		code int
		msg  string
	}
	first := make(chan result, 1)
	go func() {
		code, msg := f.post(t, "msg_slow", []byte("{}"), nil)
		first <- result{code, msg}
	}()
	<-firstIn
	if code, _ := f.post(t, "msg_slow", []byte("{}"), nil); code != http.StatusConflict {
		t.Fatalf("retry within the lease: %d, want 409", code)
	}
	clock.Add(int64(2 * time.Minute)) // the first claim's lease expires
	if code, msg := f.post(t, "msg_slow", []byte("{}"), nil); code != http.StatusNoContent {
		t.Fatalf("retry after the lease: %d %q, want 204 (handled again)", code, msg)
	}
	close(firstGo)
	if r := <-first; r.code != http.StatusInternalServerError {
		t.Fatalf("first delivery: %d %q, want its own 500", r.code, r.msg)
	}
	select {
	case <-stale:
	case <-time.After(5 * time.Second):
		t.Fatal("the first handler's stale Forget was not reported")
	}
	if code, _ := f.post(t, "msg_slow", []byte("{}"), nil); code != http.StatusOK {
		t.Fatalf("delivery after the second succeeded: %d, want 200 (duplicate)", code)
	}
	if n := runs.Load(); n != 2 {
		t.Fatalf("handler ran %d times, want 2", n)
	}
}
