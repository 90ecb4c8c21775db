package rpc_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-integration/patterns/internal/testenv"
	"github.com/go-integration/patterns/rpc"
	"github.com/go-integration/patterns/rpc/rpctest"
)

func TestMemoryStoreConformance(t *testing.T) {
	rpctest.Run(t, rpctest.Harness{
		New:      func(t *testing.T) rpc.IdempotencyStore { return rpc.NewMemoryStore() },
		Features: rpctest.Features{Cancellation: true},
	})
}

// orders is a handler that creates an order per request and counts runs.
type orders struct {
	runs  atomic.Int64
	delay time.Duration
	gate  chan struct{} // when set, each run waits for it
}

func (o *orders) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	n := o.runs.Add(1)
	if o.gate != nil {
		<-o.gate
	}
	if o.delay > 0 {
		time.Sleep(o.delay)
	}
	body, _ := io.ReadAll(r.Body)
	w.Header().Set("Location", fmt.Sprintf("/orders/%d", n))
	w.Header().Add("X-Multi", "a")
	w.Header().Add("X-Multi", "b")
	w.WriteHeader(http.StatusCreated)
	fmt.Fprintf(w, "order %d: %s", n, body)
}

func middleware(t testing.TB, store rpc.IdempotencyStore, opts ...rpc.IdempotencyOption) func(http.Handler) http.Handler {
	t.Helper()
	mw, err := rpc.Idempotency(store, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return mw
}

func serve(h http.Handler, method, target, body string, hdr ...string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(method, target, strings.NewReader(body))
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, req)
	return w
}

type problemBody struct {
	Type   string `json:"type"`
	Title  string `json:"title"`
	Status int    `json:"status"`
	Detail string `json:"detail"`
}

func wantProblem(t *testing.T, w *httptest.ResponseRecorder, status int) {
	t.Helper()
	if w.Code != status {
		t.Fatalf("status %d, want %d (body %s)", w.Code, status, w.Body)
	}
	if ct := w.Header().Get("Content-Type"); ct != "application/problem+json" {
		t.Fatalf("Content-Type %q", ct)
	}
	var p problemBody
	if err := json.Unmarshal(w.Body.Bytes(), &p); err != nil || p.Status != status || p.Title == "" {
		t.Fatalf("problem %s: %+v %v", w.Body, p, err)
	}
}

const key = rpc.HeaderIdempotencyKey

func TestIdempotencyMissingKeyIs400(t *testing.T) {
	o := &orders{}
	h := middleware(t, rpc.NewMemoryStore())(o)
	wantProblem(t, serve(h, "POST", "/orders", "x"), 400)
	wantProblem(t, serve(h, "PATCH", "/orders/1", "x"), 400)
	wantProblem(t, serve(h, "POST", "/orders", "x", key, strings.Repeat("k", 256)), 400)
	wantProblem(t, serve(h, "POST", "/orders", "x", key, "bad\x01key"), 400)
	wantProblem(t, serve(h, "POST", "/orders", "x", key, `""`), 400)
	if o.runs.Load() != 0 {
		t.Fatal("handler ran without a valid key")
	}
	// Methods not configured pass through without a key.
	if w := serve(h, "GET", "/orders", ""); w.Code != 201 || o.runs.Load() != 1 {
		t.Fatalf("GET: %d", w.Code)
	}
}

func TestIdempotencyReplaysTheFirstResponse(t *testing.T) {
	o := &orders{}
	h := middleware(t, rpc.NewMemoryStore())(o)
	first := serve(h, "POST", "/orders", "book", key, "k1")
	if first.Code != 201 || first.Header().Get(rpc.HeaderIdempotentReplayed) != "" {
		t.Fatalf("first: %d %v", first.Code, first.Header())
	}
	for range 3 {
		again := serve(h, "POST", "/orders", "book", key, `"k1"`) // sf-string form: same key
		if again.Code != 201 || again.Body.String() != first.Body.String() ||
			again.Header().Get("Location") != "/orders/1" ||
			strings.Join(again.Header().Values("X-Multi"), ",") != "a,b" ||
			again.Header().Get(rpc.HeaderIdempotentReplayed) != "true" {
			t.Fatalf("replay: %d %q %v", again.Code, again.Body, again.Header())
		}
	}
	if o.runs.Load() != 1 {
		t.Fatalf("handler ran %d times", o.runs.Load())
	}
	// Another key is another request.
	if w := serve(h, "POST", "/orders", "book", key, "k2"); w.Body.String() != "order 2: book" {
		t.Fatalf("k2: %q", w.Body)
	}
}

func TestIdempotencyDifferentPayloadIs422(t *testing.T) {
	o := &orders{}
	h := middleware(t, rpc.NewMemoryStore())(o)
	serve(h, "POST", "/orders", "book", key, "k1")
	wantProblem(t, serve(h, "POST", "/orders", "book twice", key, "k1"), 422)
	wantProblem(t, serve(h, "POST", "/other", "book", key, "k1"), 422)
	wantProblem(t, serve(h, "PATCH", "/orders", "book", key, "k1"), 422)
	if o.runs.Load() != 1 {
		t.Fatalf("handler ran %d times", o.runs.Load())
	}
}

func TestIdempotencyConcurrentSameKeyIs409(t *testing.T) {
	o := &orders{gate: make(chan struct{})}
	h := middleware(t, rpc.NewMemoryStore())(o)
	done := make(chan *httptest.ResponseRecorder)
	go func() { done <- serve(h, "POST", "/orders", "book", key, "k1") }()
	testenv.Eventually(t, 5*time.Second, "the first request runs", func() bool { return o.runs.Load() > 0 })
	wantProblem(t, serve(h, "POST", "/orders", "book", key, "k1"), 409)
	close(o.gate)
	if w := <-done; w.Code != 201 {
		t.Fatalf("first: %d", w.Code)
	}
	if w := serve(h, "POST", "/orders", "book", key, "k1"); w.Code != 201 || w.Header().Get(rpc.HeaderIdempotentReplayed) != "true" {
		t.Fatalf("after: %d", w.Code)
	}
}

type principalKey struct{}

func TestIdempotencyKeysAreScopedPerCaller(t *testing.T) {
	o := &orders{}
	scope := rpc.WithScope(func(r *http.Request) string { p, _ := r.Context().Value(principalKey{}).(string); return p })
	mw := middleware(t, rpc.NewMemoryStore(), scope)(o)
	auth := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mw.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), principalKey{}, r.Header.Get("X-User"))))
	})
	alice := serve(auth, "POST", "/orders", "book", key, "same", "X-User", "alice")
	bob := serve(auth, "POST", "/orders", "book", key, "same", "X-User", "bob")
	if alice.Body.String() == bob.Body.String() || bob.Header().Get(rpc.HeaderIdempotentReplayed) != "" {
		t.Fatalf("bob saw alice's response: %q", bob.Body)
	}
	// A scope that looks like a prefix of another does not collide.
	x := serve(auth, "POST", "/orders", "book", key, "b:c", "X-User", "a")
	y := serve(auth, "POST", "/orders", "book", key, "c", "X-User", "a:b")
	if x.Body.String() == y.Body.String() {
		t.Fatal("scopes collided")
	}
	if again := serve(auth, "POST", "/orders", "book", key, "same", "X-User", "alice"); again.Body.String() != alice.Body.String() {
		t.Fatalf("alice's replay: %q", again.Body)
	}
	if o.runs.Load() != 4 {
		t.Fatalf("handler ran %d times, want 4", o.runs.Load())
	}
}

func TestIdempotencyKeysExpire(t *testing.T) {
	o := &orders{}
	h := middleware(t, rpc.NewMemoryStore(), rpc.WithTTL(50*time.Millisecond))(o)
	serve(h, "POST", "/orders", "book", key, "k1")
	time.Sleep(80 * time.Millisecond)
	if w := serve(h, "POST", "/orders", "other", key, "k1"); w.Code != 201 || w.Header().Get(rpc.HeaderIdempotentReplayed) != "" {
		t.Fatalf("after expiry: %d %v", w.Code, w.Header())
	}
	if o.runs.Load() != 2 {
		t.Fatalf("runs %d", o.runs.Load())
	}
}

func TestIdempotencyRetryableStatusesAreNotKept(t *testing.T) {
	var runs atomic.Int64
	h := middleware(t, rpc.NewMemoryStore())(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if runs.Add(1) == 1 {
			w.WriteHeader(503)
			return
		}
		w.WriteHeader(200)
	}))
	if w := serve(h, "POST", "/", "x", key, "k"); w.Code != 503 {
		t.Fatal(w.Code)
	}
	if w := serve(h, "POST", "/", "x", key, "k"); w.Code != 200 || runs.Load() != 2 {
		t.Fatalf("retry after 503: %d, runs %d", w.Code, runs.Load())
	}
}

func TestIdempotencyPanicReleasesTheKey(t *testing.T) {
	var runs atomic.Int64
	h := middleware(t, rpc.NewMemoryStore())(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if runs.Add(1) == 1 {
			panic("boom")
		}
	}))
	func() {
		defer func() {
			if recover() == nil {
				t.Fatal("panic swallowed")
			}
		}()
		serve(h, "POST", "/", "x", key, "k")
	}()
	if w := serve(h, "POST", "/", "x", key, "k"); w.Code != 200 || runs.Load() != 2 {
		t.Fatalf("after panic: %d, runs %d", w.Code, runs.Load())
	}
}

func TestIdempotencyBodyTooLargeIs413(t *testing.T) {
	o := &orders{}
	h := middleware(t, rpc.NewMemoryStore(), rpc.WithMaxBodyBytes(8))(o)
	wantProblem(t, serve(h, "POST", "/", "123456789", key, "k"), 413)
	if w := serve(h, "POST", "/", "12345678", key, "k"); w.Code != 201 || o.runs.Load() != 1 {
		t.Fatalf("%d", w.Code)
	}
}

type failingStore struct{ rpc.IdempotencyStore }

func (failingStore) Begin(context.Context, string, string, time.Duration) (rpc.Claim, error) {
	return rpc.Claim{}, errors.New("store down")
}

func TestIdempotencyStoreDownIs503(t *testing.T) {
	o := &orders{}
	h := middleware(t, failingStore{})(o)
	w := serve(h, "POST", "/", "x", key, "k")
	wantProblem(t, w, 503)
	if w.Header().Get("Retry-After") == "" || o.runs.Load() != 0 {
		t.Fatal("want Retry-After and no run")
	}
}

func TestIdempotencyRejectsBadOptions(t *testing.T) {
	for name, opt := range map[string]rpc.IdempotencyOption{
		"ttl": rpc.WithTTL(0), "lock": rpc.WithLockTimeout(-1), "methods": rpc.WithMethods(),
		"scope": rpc.WithScope(nil), "body": rpc.WithMaxBodyBytes(0),
		"store status": rpc.WithStoreStatus(nil), "fingerprint": rpc.WithFingerprint(nil), "logger": rpc.WithLogger(nil),
		"tracer": rpc.WithTracer(struct{}{}), "attempt tracer": rpc.WithTracer(&attempts{}), "nil": nil,
	} {
		if _, err := rpc.Idempotency(rpc.NewMemoryStore(), opt); !errors.Is(err, rpc.ErrInvalidOption) {
			t.Errorf("%s: %v", name, err)
		}
	}
	if _, err := rpc.Idempotency(nil); !errors.Is(err, rpc.ErrInvalidOption) {
		t.Error("nil store accepted")
	}
}

// TestRetriedPostRunsTheHandlerOnce sends 50 concurrent POSTs with one key
// through the resilient client to a server whose front fails often (503,
// connection resets). The client retries 409 too, until every caller gets
// the one stored response. The handler must run exactly once.
func TestRetriedPostRunsTheHandlerOnce(t *testing.T) {
	o := &orders{delay: 20 * time.Millisecond}
	h := middleware(t, rpc.NewMemoryStore())(o)
	var front atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch front.Add(1) % 4 {
		case 1:
			w.WriteHeader(503)
		case 2:
			reset(w, r)
		default:
			h.ServeHTTP(w, r)
		}
	}))
	defer srv.Close()
	c, _ := newClient(t,
		rpc.WithBackoff(rpc.ExponentialBackoff{Base: 5 * time.Millisecond, Max: 20 * time.Millisecond}),
		rpc.WithRetryStatus(409, 429, 502, 503, 504), rpc.WithMaxAttempts(100),
		rpc.WithoutRetryBudget(), rpc.WithoutBreaker())

	const n = 50
	var wg sync.WaitGroup
	bodies := make([]string, n)
	replayed := make([]bool, n)
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			req, _ := http.NewRequestWithContext(ctx, "POST", srv.URL+"/orders", strings.NewReader("book room 7"))
			req.Header.Set(key, "retry-me")
			resp, err := c.Do(req)
			if err != nil {
				errs[i] = err
				return
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != 201 {
				errs[i] = fmt.Errorf("status %d: %s", resp.StatusCode, b)
			}
			bodies[i] = string(b)
			replayed[i] = resp.Header.Get(rpc.HeaderIdempotentReplayed) == "true"
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	if o.runs.Load() != 1 {
		t.Fatalf("handler ran %d times, want 1", o.runs.Load())
	}
	fresh := 0
	for i := range n {
		if bodies[i] != "order 1: book room 7" {
			t.Fatalf("caller %d got %q", i, bodies[i])
		}
		if !replayed[i] {
			fresh++
		}
	}
	if fresh != 1 {
		t.Fatalf("%d callers got a fresh response, want 1 (the rest replayed)", fresh)
	}
	t.Logf("%d requests reached the server for %d calls", front.Load(), n)
}

func TestIdempotencyKeepsOnlyTheHandlersHeaders(t *testing.T) {
	o := &orders{}
	inner := middleware(t, rpc.NewMemoryStore())(o)
	var n atomic.Int64
	outer := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Request-Id", fmt.Sprint(n.Add(1))) // set by an outer middleware
		inner.ServeHTTP(w, r)
	})
	serve(outer, "POST", "/", "x", key, "k")
	w := serve(outer, "POST", "/", "x", key, "k")
	if w.Header().Get("X-Request-Id") != "2" || w.Header().Get("Location") != "/orders/1" {
		t.Fatalf("replayed headers %v: want the outer header of this request and the handler's of the first", w.Header())
	}
}

func TestIdempotencyReadsTheWholeBodyWhateverContentLength(t *testing.T) {
	var got atomic.Value
	h := middleware(t, rpc.NewMemoryStore())(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got.Store(string(b))
	}))
	req := httptest.NewRequest("POST", "/", strings.NewReader("longer than announced"))
	req.ContentLength = 3
	req.Header.Set(key, "k")
	h.ServeHTTP(httptest.NewRecorder(), req)
	if got.Load() != "longer than announced" {
		t.Fatalf("handler read %q", got.Load())
	}
}

// The middleware traces every keyed request's outcome with the request's
// context, the client's key and scope, the status answered and the store's
// error.
func TestIdempotencyTracesOutcomes(t *testing.T) {
	tr := &outcomeRec{}
	store := rpc.NewMemoryStore()
	scope := rpc.WithScope(func(r *http.Request) string { return "alice" })
	mw, err := rpc.Idempotency(store, scope, rpc.WithTracer(tr))
	if err != nil {
		t.Fatal(err)
	}
	gate := make(chan struct{})
	entered := make(chan struct{}, 1)
	h := mw(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/slow":
			entered <- struct{}{}
			<-gate
		case "/busy":
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		w.WriteHeader(http.StatusCreated)
	}))
	do := func(path, body, k string) int {
		req := httptest.NewRequest("POST", path, strings.NewReader(body))
		req = req.WithContext(context.WithValue(req.Context(), reqKey{}, k))
		req.Header.Set(rpc.HeaderIdempotencyKey, k)
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		return w.Code
	}
	do("/", "a", "k1")     // stored
	do("/", "a", "k1")     // replayed
	do("/", "b", "k1")     // mismatch
	do("/busy", "a", "k2") // released (503 not kept)
	done := make(chan struct{})
	go func() { do("/slow", "a", "k3"); close(done) }()
	<-entered
	do("/slow", "a", "k3") // in progress
	close(gate)
	<-done
	failing, err := rpc.Idempotency(failingStore{}, rpc.WithTracer(tr))
	if err != nil {
		t.Fatal(err)
	}
	req := httptest.NewRequest("POST", "/", strings.NewReader("a"))
	req.Header.Set(rpc.HeaderIdempotencyKey, "k4")
	failing(http.NotFoundHandler()).ServeHTTP(httptest.NewRecorder(), req)

	want := []string{
		"k1 alice stored 201", "k1 alice replayed 201", "k1 alice mismatch 422", "k2 alice released 503",
		"k3 alice in-progress 409", "k3 alice stored 201", "k4  store-failed 503",
	}
	got := tr.all()
	if len(got) != len(want) {
		t.Fatalf("traced %d outcomes %+v; want %q", len(got), got, want)
	}
	for i, d := range got {
		if s := fmt.Sprintf("%s %s %s %d", d.Key, d.Scope, d.Outcome, d.StatusCode); s != want[i] {
			t.Errorf("outcome %d = %q, want %q", i, s, want[i])
		}
		if d.Outcome == rpc.IdempotencyStoreFailed {
			if d.Err == nil {
				t.Errorf("store failure traced without its error")
			}
			continue
		}
		if d.Err != nil || tr.ctxVals[i] != d.Key {
			t.Errorf("outcome %d: err %v, context value %v; want no error and the request's context", i, d.Err, tr.ctxVals[i])
		}
	}
}

type outcomeRec struct {
	mu      sync.Mutex
	d       []rpc.TraceIdempotencyData
	ctxVals []any
}

func (o *outcomeRec) TraceIdempotency(ctx context.Context, d rpc.TraceIdempotencyData) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.d = append(o.d, d)
	o.ctxVals = append(o.ctxVals, ctx.Value(reqKey{}))
}

// reqKey marks a request's context, to check tracers get it.
type reqKey struct{}

func (o *outcomeRec) all() []rpc.TraceIdempotencyData {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]rpc.TraceIdempotencyData(nil), o.d...)
}
