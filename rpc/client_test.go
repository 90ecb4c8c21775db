package rpc_test

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/go-integration/patterns/rpc"
)

// noWait makes retries immediate, so tests do not sleep.
var noWait = rpc.WithBackoff(rpc.BackoffFunc(func(int) time.Duration { return 0 }))

// attempts records every attempt a Transport traces.
type attempts struct {
	mu     sync.Mutex
	starts []rpc.TraceAttemptStartData
	a      []rpc.TraceAttemptEndData
}

func (r *attempts) TraceAttemptStart(ctx context.Context, d rpc.TraceAttemptStartData) context.Context {
	r.mu.Lock()
	r.starts = append(r.starts, d)
	r.mu.Unlock()
	return ctx
}

func (r *attempts) TraceAttemptEnd(_ context.Context, a rpc.TraceAttemptEndData) {
	r.mu.Lock()
	r.a = append(r.a, a)
	r.mu.Unlock()
}

func (r *attempts) all() []rpc.TraceAttemptEndData {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]rpc.TraceAttemptEndData(nil), r.a...)
}

func newClient(t *testing.T, opts ...rpc.TransportOption) (*http.Client, *rpc.Transport) {
	t.Helper()
	tr, err := rpc.NewTransport(append([]rpc.TransportOption{noWait}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	return &http.Client{Transport: tr}, tr
}

// script returns a handler answering the i-th request (from 0) with steps[i]
// (the last step repeats) and counting requests.
func script(hits *atomic.Int64, steps ...func(w http.ResponseWriter, r *http.Request)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		i := int(hits.Add(1)) - 1
		if i >= len(steps) {
			i = len(steps) - 1
		}
		steps[i](w, r)
	}
}

func status(code int, hdr ...string) func(http.ResponseWriter, *http.Request) {
	return func(w http.ResponseWriter, r *http.Request) {
		for i := 0; i+1 < len(hdr); i += 2 {
			w.Header().Set(hdr[i], hdr[i+1])
		}
		w.WriteHeader(code)
		_, _ = io.WriteString(w, http.StatusText(code))
	}
}

// reset closes the connection with a TCP RST, without any response.
func reset(w http.ResponseWriter, r *http.Request) {
	conn, _, err := w.(http.Hijacker).Hijack()
	if err != nil {
		panic(err)
	}
	if tc, ok := conn.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	conn.Close()
}

// hang blocks until the client gives up on the request.
func hang(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() }

func get(t *testing.T, c *http.Client, ctx context.Context, url string) (*http.Response, error) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.Do(req)
	if err == nil {
		t.Cleanup(func() { resp.Body.Close() })
	}
	return resp, err
}

func TestRetriesRetryableStatuses(t *testing.T) {
	for _, code := range []int{429, 502, 503, 504} {
		t.Run(http.StatusText(code), func(t *testing.T) {
			var hits atomic.Int64
			srv := httptest.NewServer(script(&hits, status(code), status(code), status(200)))
			defer srv.Close()
			rec := &attempts{}
			c, _ := newClient(t, rpc.WithTracer(rec))
			resp, err := get(t, c, context.Background(), srv.URL)
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != 200 || hits.Load() != 3 {
				t.Fatalf("status %d after %d hits, want 200 after 3", resp.StatusCode, hits.Load())
			}
			got := rec.all()
			if len(got) != 3 || !got[0].Retry || !got[1].Retry || got[2].Retry || got[0].StatusCode != code {
				t.Fatalf("attempts = %+v", got)
			}
		})
	}
}

func TestDoesNotRetryOtherStatuses(t *testing.T) {
	for _, code := range []int{400, 404, 409, 500, 501} {
		var hits atomic.Int64
		srv := httptest.NewServer(script(&hits, status(code), status(200)))
		c, _ := newClient(t)
		resp, err := get(t, c, context.Background(), srv.URL)
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != code || hits.Load() != 1 {
			t.Errorf("%d: got %d after %d hits, want no retry", code, resp.StatusCode, hits.Load())
		}
		srv.Close()
	}
}

func TestGivesUpAfterMaxAttemptsAndReturnsLastResponse(t *testing.T) {
	var hits atomic.Int64
	srv := httptest.NewServer(script(&hits, status(503)))
	defer srv.Close()
	rec := &attempts{}
	c, _ := newClient(t, rpc.WithMaxAttempts(4), rpc.WithoutBreaker(), rpc.WithTracer(rec))
	resp, err := get(t, c, context.Background(), srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 503 || string(body) != "Service Unavailable" || hits.Load() != 4 {
		t.Fatalf("got %d %q after %d hits", resp.StatusCode, body, hits.Load())
	}
	last := rec.all()[3]
	if !errors.Is(last.GiveUp, rpc.ErrMaxAttempts) {
		t.Fatalf("last attempt GiveUp = %v", last.GiveUp)
	}
}

func TestRetriesConnectionReset(t *testing.T) {
	var hits atomic.Int64
	srv := httptest.NewServer(script(&hits, reset, reset, status(200)))
	defer srv.Close()
	c, _ := newClient(t)
	resp, err := get(t, c, context.Background(), srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 || hits.Load() != 3 {
		t.Fatalf("status %d after %d hits", resp.StatusCode, hits.Load())
	}
}

func TestResetEveryTimeGivesError(t *testing.T) {
	var hits atomic.Int64
	srv := httptest.NewServer(script(&hits, reset))
	defer srv.Close()
	c, _ := newClient(t, rpc.WithoutBreaker())
	_, err := get(t, c, context.Background(), srv.URL)
	if err == nil || !errors.Is(err, rpc.ErrMaxAttempts) {
		t.Fatalf("err = %v, want one wrapping ErrMaxAttempts", err)
	}
	if hits.Load() < 3 {
		t.Fatalf("%d hits, want at least 3", hits.Load())
	}
}

func TestAttemptTimeoutRetriesAServerThatHangs(t *testing.T) {
	var hits atomic.Int64
	srv := httptest.NewServer(script(&hits, hang, status(200)))
	defer srv.Close()
	rec := &attempts{}
	c, _ := newClient(t, rpc.WithAttemptTimeout(100*time.Millisecond), rpc.WithTracer(rec))
	start := time.Now()
	resp, err := get(t, c, context.Background(), srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 || hits.Load() != 2 {
		t.Fatalf("status %d after %d hits", resp.StatusCode, hits.Load())
	}
	if el := time.Since(start); el < 100*time.Millisecond || el > 2*time.Second {
		t.Fatalf("took %v", el)
	}
	if a := rec.all()[0]; !errors.Is(a.Err, context.DeadlineExceeded) {
		t.Fatalf("first attempt error = %v, want deadline exceeded", a.Err)
	}
	// The response of the last attempt stays readable after the attempt
	// context is in place (it is released on Close).
	if b, err := io.ReadAll(resp.Body); err != nil || string(b) != "OK" {
		t.Fatalf("body %q, %v", b, err)
	}
}

func TestContextDeadlineBoundsTheWholeCall(t *testing.T) {
	var hits atomic.Int64
	srv := httptest.NewServer(script(&hits, status(503)))
	defer srv.Close()
	rec := &attempts{}
	// Backoff of 1s against a 300ms deadline: no retry can finish in time.
	tr, err := rpc.NewTransport(rpc.WithBackoff(rpc.BackoffFunc(func(int) time.Duration { return time.Second })),
		rpc.WithMaxAttempts(10), rpc.WithTracer(rec))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	resp, err := get(t, &http.Client{Transport: tr}, ctx, srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 503 || hits.Load() != 1 || time.Since(start) > 250*time.Millisecond {
		t.Fatalf("status %d, %d hits, %v: want the 503 at once", resp.StatusCode, hits.Load(), time.Since(start))
	}
	if a := rec.all()[0]; !errors.Is(a.GiveUp, context.DeadlineExceeded) {
		t.Fatalf("GiveUp = %v", a.GiveUp)
	}

	// A server that hangs: the caller's deadline ends the call with its error.
	srv2 := httptest.NewServer(http.HandlerFunc(hang))
	defer srv2.Close()
	ctx2, cancel2 := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel2()
	if _, err := get(t, &http.Client{Transport: tr}, ctx2, srv2.URL); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want deadline exceeded", err)
	}
}

func TestRetryAfterIsHonoured(t *testing.T) {
	t.Parallel()
	var hits atomic.Int64
	var times [2]time.Time
	var timesMu sync.Mutex
	srv := httptest.NewServer(script(&hits,
		func(w http.ResponseWriter, r *http.Request) {
			timesMu.Lock()
			times[0] = time.Now()
			timesMu.Unlock()
			status(503, "Retry-After", "2")(w, r)
		},
		func(w http.ResponseWriter, r *http.Request) {
			timesMu.Lock()
			times[1] = time.Now()
			timesMu.Unlock()
			status(200)(w, r)
		}))
	defer srv.Close()
	// The backoff alone would retry at once: only Retry-After can delay it.
	c, _ := newClient(t, rpc.WithMaxRetryAfter(5*time.Second))
	resp, err := get(t, c, context.Background(), srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 || hits.Load() != 2 {
		t.Fatalf("status %d after %d hits", resp.StatusCode, hits.Load())
	}
	timesMu.Lock()
	gap := times[1].Sub(times[0])
	timesMu.Unlock()
	if gap < 2*time.Second || gap > 5*time.Second {
		t.Fatalf("retried after %v, want Retry-After: 2 honoured", gap)
	}
}

func TestRetryAfterIsCapped(t *testing.T) {
	date := time.Now().Add(time.Hour).UTC().Format(http.TimeFormat)
	for _, ra := range []string{"120", date} {
		var hits atomic.Int64
		srv := httptest.NewServer(script(&hits, status(503, "Retry-After", ra), status(200)))
		rec := &attempts{}
		c, _ := newClient(t, rpc.WithMaxRetryAfter(20*time.Millisecond), rpc.WithTracer(rec))
		start := time.Now()
		resp, err := get(t, c, context.Background(), srv.URL)
		if err != nil {
			t.Fatal(err)
		}
		el := time.Since(start)
		a := rec.all()[0]
		if resp.StatusCode != 200 || a.Wait != 20*time.Millisecond || a.RetryAfter < time.Minute || el < 20*time.Millisecond || el > time.Second {
			t.Errorf("Retry-After %q: status %d, wait %v (asked %v), took %v", ra, resp.StatusCode, a.Wait, a.RetryAfter, el)
		}
		srv.Close()
	}
}

func TestExponentialBackoffFullJitter(t *testing.T) {
	b := rpc.ExponentialBackoff{Base: 10 * time.Millisecond, Max: 70 * time.Millisecond}
	for retry, ceil := range map[int]time.Duration{1: 10 * time.Millisecond, 2: 20 * time.Millisecond, 3: 40 * time.Millisecond, 4: 70 * time.Millisecond, 100: 70 * time.Millisecond} {
		var maxSeen time.Duration
		for range 500 {
			d := b.Delay(retry)
			if d < 0 || d > ceil {
				t.Fatalf("Delay(%d) = %v, want within [0, %v]", retry, d, ceil)
			}
			maxSeen = max(maxSeen, d)
		}
		if maxSeen < ceil/2 {
			t.Errorf("Delay(%d) never above %v in 500 draws: not jittered over the full range", retry, maxSeen)
		}
	}
}

func post(t *testing.T, c *http.Client, url, body string, hdr ...string) (*http.Response, error) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := c.Do(req)
	if err == nil {
		t.Cleanup(func() { resp.Body.Close() })
	}
	return resp, err
}

func TestPostWithoutKeyIsNeverRetried(t *testing.T) {
	for name, fault := range map[string]func(http.ResponseWriter, *http.Request){
		"503": status(503), "reset": reset, "429": status(429, "Retry-After", "0"),
	} {
		var hits atomic.Int64
		srv := httptest.NewServer(script(&hits, fault, status(200)))
		c, _ := newClient(t)
		resp, err := post(t, c, srv.URL, "payload")
		if hits.Load() != 1 {
			t.Errorf("%s: %d hits, want 1", name, hits.Load())
		}
		if name == "reset" && err == nil {
			t.Errorf("reset: got status %d, want an error", resp.StatusCode)
		}
		srv.Close()
	}
	// PATCH likewise.
	var hits atomic.Int64
	srv := httptest.NewServer(script(&hits, status(503), status(200)))
	defer srv.Close()
	c, _ := newClient(t)
	req, _ := http.NewRequest(http.MethodPatch, srv.URL, strings.NewReader("x"))
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if hits.Load() != 1 {
		t.Fatalf("PATCH: %d hits, want 1", hits.Load())
	}
}

func TestPostWithKeyIsRetriedWithTheSameBody(t *testing.T) {
	var mu sync.Mutex
	var bodies, keys []string
	var hits atomic.Int64
	record := func(next func(http.ResponseWriter, *http.Request)) func(http.ResponseWriter, *http.Request) {
		return func(w http.ResponseWriter, r *http.Request) {
			b, _ := io.ReadAll(r.Body)
			mu.Lock()
			bodies = append(bodies, string(b))
			keys = append(keys, r.Header.Get(rpc.HeaderIdempotencyKey))
			mu.Unlock()
			next(w, r)
		}
	}
	srv := httptest.NewServer(script(&hits, record(status(503)), record(reset), record(status(201))))
	defer srv.Close()
	c, _ := newClient(t)
	resp, err := post(t, c, srv.URL, "the payload", rpc.HeaderIdempotencyKey, "k-1")
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 201 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(bodies) != 3 {
		t.Fatalf("%d attempts, want 3", len(bodies))
	}
	for i := range bodies {
		if bodies[i] != "the payload" || keys[i] != "k-1" {
			t.Fatalf("attempt %d: body %q key %q", i+1, bodies[i], keys[i])
		}
	}
}

func TestBodyWithoutGetBodyIsSentOnce(t *testing.T) {
	var hits atomic.Int64
	srv := httptest.NewServer(script(&hits, status(503), status(200)))
	defer srv.Close()
	c, _ := newClient(t)
	req, _ := http.NewRequest(http.MethodPut, srv.URL, io.NopCloser(strings.NewReader("stream")))
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 503 || hits.Load() != 1 {
		t.Fatalf("status %d after %d hits: a body that cannot be replayed must not be retried", resp.StatusCode, hits.Load())
	}
}

func TestIdempotencyKeysAreAddedAndKeptAcrossRetries(t *testing.T) {
	var mu sync.Mutex
	var keys []string
	var hits atomic.Int64
	rec := func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		keys = append(keys, r.Method+" "+r.Header.Get(rpc.HeaderIdempotencyKey))
		mu.Unlock()
		if hits.Load() == 1 {
			w.WriteHeader(503)
		}
	}
	srv := httptest.NewServer(script(&hits, rec))
	defer srv.Close()
	c, _ := newClient(t, rpc.WithIdempotencyKeys(nil))

	req, _ := http.NewRequest(http.MethodPost, srv.URL, strings.NewReader("a"))
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if req.Header.Get(rpc.HeaderIdempotencyKey) != "" {
		t.Fatal("the caller's request was modified")
	}
	req2, _ := http.NewRequest(http.MethodGet, srv.URL, nil)
	resp, err = c.Do(req2)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()

	mu.Lock()
	defer mu.Unlock()
	if len(keys) != 3 {
		t.Fatalf("requests %q", keys)
	}
	if keys[0] != keys[1] || len(keys[0]) != len("POST ")+36 {
		t.Fatalf("POST retry keys %q, want one generated UUID on both attempts", keys[:2])
	}
	if keys[2] != "GET " {
		t.Fatalf("GET got a key: %q", keys[2])
	}
	if a, b := rpc.NewIdempotencyKey(), rpc.NewIdempotencyKey(); a == b {
		t.Fatal("keys repeat")
	}
}

// inProcess is a base RoundTripper that serves requests with a handler in
// this goroutine, without a listener: usable in a synctest bubble.
type inProcess struct{ h http.Handler }

func (p inProcess) RoundTrip(r *http.Request) (*http.Response, error) {
	rec := httptest.NewRecorder()
	p.h.ServeHTTP(rec, r)
	resp := rec.Result()
	resp.Request = r
	return resp, nil
}

// The breaker runs in a synctest bubble: its clock moves only when the test
// sleeps, so OpenFor passes exactly then, and the open breaker stays open
// however slowly the calls in between run on a loaded machine.
func TestBreakerOpensHalfOpensAndCloses(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var down atomic.Bool
		down.Store(true)
		var hits atomic.Int64
		srv := inProcess{http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			hits.Add(1)
			if down.Load() {
				w.WriteHeader(503)
			}
		})}
		const host = "backend.test"
		const url = "http://" + host + "/"
		onChange := &breakerChanges{}
		c, tr := newClient(t, rpc.WithBase(srv), rpc.WithMaxAttempts(1), rpc.WithTracer(onChange),
			rpc.WithBreaker(rpc.BreakerConfig{Failures: 3, OpenFor: 100 * time.Millisecond}))

		// The server stays down: three failures open the breaker.
		for range 3 {
			if resp, err := get(t, c, context.Background(), url); err != nil || resp.StatusCode != 503 {
				t.Fatalf("%v %v", resp, err)
			}
		}
		if s := tr.BreakerState(host); s != rpc.BreakerOpen {
			t.Fatalf("breaker %v after 3 failures", s)
		}
		// Open: calls fail fast without reaching the server.
		before := hits.Load()
		for range 5 {
			if _, err := get(t, c, context.Background(), url); !errors.Is(err, rpc.ErrCircuitOpen) {
				t.Fatalf("err = %v, want ErrCircuitOpen", err)
			}
		}
		if hits.Load() != before {
			t.Fatal("an open breaker let requests through")
		}
		time.Sleep(99 * time.Millisecond)
		if s := tr.BreakerState(host); s != rpc.BreakerOpen {
			t.Fatalf("breaker %v before OpenFor", s)
		}
		// After OpenFor: half-open; a failed trial opens it again.
		time.Sleep(2 * time.Millisecond)
		if s := tr.BreakerState(host); s != rpc.BreakerHalfOpen {
			t.Fatalf("breaker %v after OpenFor", s)
		}
		if resp, err := get(t, c, context.Background(), url); err != nil || resp.StatusCode != 503 {
			t.Fatalf("%v %v", resp, err)
		}
		if s := tr.BreakerState(host); s != rpc.BreakerOpen {
			t.Fatalf("breaker %v after failed trial", s)
		}
		// The server recovers: the next trial closes the breaker.
		down.Store(false)
		time.Sleep(101 * time.Millisecond)
		if resp, err := get(t, c, context.Background(), url); err != nil || resp.StatusCode != 200 {
			t.Fatalf("%v %v", resp, err)
		}
		if s := tr.BreakerState(host); s != rpc.BreakerClosed {
			t.Fatalf("breaker %v after successful trial", s)
		}
		onChange.mu.Lock()
		defer onChange.mu.Unlock()
		want := "closed>open open>half-open half-open>open open>half-open half-open>closed"
		if got := strings.Join(onChange.changes, " "); got != want {
			t.Fatalf("changes %q, want %q", got, want)
		}
	})
}

func TestFlappingServerIsRetriedAndKeepsTheBreakerClosed(t *testing.T) {
	var hits atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if hits.Add(1)%2 == 1 {
			w.WriteHeader(503) // every other request fails
		}
	}))
	defer srv.Close()
	c, tr := newClient(t, rpc.WithBreaker(rpc.BreakerConfig{Failures: 2}), rpc.WithoutRetryBudget())
	for i := range 20 {
		resp, err := get(t, c, context.Background(), srv.URL)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("call %d: %v %v", i, resp, err)
		}
	}
	if s := tr.BreakerState(strings.TrimPrefix(srv.URL, "http://")); s != rpc.BreakerClosed {
		t.Fatalf("breaker %v", s)
	}
	if hits.Load() != 40 {
		t.Fatalf("%d hits, want 40", hits.Load())
	}
}

func TestCancellationDoesNotOpenTheBreaker(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(hang))
	defer srv.Close()
	c, tr := newClient(t, rpc.WithBreaker(rpc.BreakerConfig{Failures: 2}))
	for range 5 {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
		_, err := get(t, c, ctx, srv.URL)
		cancel()
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("err = %v", err)
		}
	}
	if s := tr.BreakerState(strings.TrimPrefix(srv.URL, "http://")); s != rpc.BreakerClosed {
		t.Fatalf("breaker %v after cancelled calls, want closed", s)
	}
	// Attempt timeouts, by contrast, are the host's failures.
	c2, tr2 := newClient(t, rpc.WithBreaker(rpc.BreakerConfig{Failures: 2}), rpc.WithAttemptTimeout(20*time.Millisecond), rpc.WithMaxAttempts(2))
	_, err := get(t, c2, context.Background(), srv.URL)
	if err == nil {
		t.Fatal("want an error")
	}
	if s := tr2.BreakerState(strings.TrimPrefix(srv.URL, "http://")); s != rpc.BreakerOpen {
		t.Fatalf("breaker %v after two attempt timeouts, want open", s)
	}
}

func TestBreakersArePerHost(t *testing.T) {
	bad := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(503) }))
	defer bad.Close()
	good := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer good.Close()
	c, _ := newClient(t, rpc.WithMaxAttempts(1), rpc.WithBreaker(rpc.BreakerConfig{Failures: 1, OpenFor: time.Minute}))
	_, _ = get(t, c, context.Background(), bad.URL)
	if _, err := get(t, c, context.Background(), bad.URL); !errors.Is(err, rpc.ErrCircuitOpen) {
		t.Fatalf("bad host: %v", err)
	}
	if resp, err := get(t, c, context.Background(), good.URL); err != nil || resp.StatusCode != 200 {
		t.Fatalf("good host: %v %v", resp, err)
	}
}

func TestRetryBudgetLimitsRetriesDuringAnOutage(t *testing.T) {
	var hits atomic.Int64
	srv := httptest.NewServer(script(&hits, status(503)))
	defer srv.Close()
	rec := &attempts{}
	c, _ := newClient(t, rpc.WithMaxAttempts(5), rpc.WithoutBreaker(), rpc.WithRetryBudget(0.5, 0), rpc.WithTracer(rec))
	for range 10 {
		if _, err := get(t, c, context.Background(), srv.URL); err != nil {
			t.Fatal(err)
		}
	}
	// 10 calls deposit 10×0.5 = 5 retries; without a budget it would be 50 hits.
	if hits.Load() != 15 {
		t.Fatalf("%d hits, want 15", hits.Load())
	}
	exhausted := 0
	for _, a := range rec.all() {
		if errors.Is(a.GiveUp, rpc.ErrRetryBudgetExhausted) {
			exhausted++
		}
	}
	if exhausted != 10 {
		t.Fatalf("%d attempts gave up for the budget, want 10", exhausted)
	}

	// With network errors the error says why it was not retried.
	srv2 := httptest.NewServer(http.HandlerFunc(reset))
	defer srv2.Close()
	c2, _ := newClient(t, rpc.WithoutBreaker(), rpc.WithRetryBudget(0, 0))
	if _, err := get(t, c2, context.Background(), srv2.URL); !errors.Is(err, rpc.ErrRetryBudgetExhausted) {
		t.Fatalf("err = %v", err)
	}
}

func TestNewTransportRejectsBadOptions(t *testing.T) {
	for name, opts := range map[string][]rpc.TransportOption{
		"breaker conflict": {rpc.WithBreaker(rpc.BreakerConfig{}), rpc.WithoutBreaker()},
		"budget conflict":  {rpc.WithRetryBudget(1, 1), rpc.WithoutRetryBudget()},
		"attempts":         {rpc.WithMaxAttempts(0)},
		"status":           {rpc.WithRetryStatus(42)},
		"tracer":           {rpc.WithTracer("not a tracer")},
		"nil tracer":       {rpc.WithTracer(nil)},
		"idem tracer":      {rpc.WithTracer(idemTracerOnly{})},
		"backoff":          {rpc.WithBackoff(rpc.ExponentialBackoff{Base: time.Second, Max: time.Millisecond})},
		"negative backoff": {rpc.WithBackoff(rpc.ExponentialBackoff{Base: -1})},
		"base":             {rpc.WithBase(nil)},
	} {
		if _, err := rpc.NewTransport(opts...); !errors.Is(err, rpc.ErrInvalidOption) {
			t.Errorf("%s: err = %v", name, err)
		}
	}
	_, err := rpc.NewTransport(rpc.WithoutBreaker(), rpc.WithBreaker(rpc.BreakerConfig{}))
	if err == nil || !strings.Contains(err.Error(), "WithBreaker") || !strings.Contains(err.Error(), "WithoutBreaker") {
		t.Fatalf("err = %v, want both options named", err)
	}
}

// breakerChanges records breaker changes as "from>to", and the context
// they came with.
type breakerChanges struct {
	mu      sync.Mutex
	changes []string
	ctxs    []context.Context
}

func (b *breakerChanges) TraceBreakerChange(ctx context.Context, c rpc.TraceBreakerChangeData) {
	b.mu.Lock()
	b.changes = append(b.changes, c.From.String()+">"+c.To.String())
	b.ctxs = append(b.ctxs, ctx)
	b.mu.Unlock()
}

type idemTracerOnly struct{}

func (idemTracerOnly) TraceIdempotency(context.Context, rpc.TraceIdempotencyData) {}

// ctxTracer marks the context of every attempt and records what it sees.
type ctxTracer struct {
	attempts
	endVals []any
}

type attemptKey struct{}

func (c *ctxTracer) TraceAttemptStart(ctx context.Context, d rpc.TraceAttemptStartData) context.Context {
	c.attempts.TraceAttemptStart(ctx, d)
	d.Request.Header.Set("X-Trace", "attempt-"+d.Request.Header.Get("X-Caller")+"-"+string(rune('0'+d.Attempt)))
	return context.WithValue(ctx, attemptKey{}, d.Attempt)
}

func (c *ctxTracer) TraceAttemptEnd(ctx context.Context, d rpc.TraceAttemptEndData) {
	c.attempts.TraceAttemptEnd(ctx, d)
	c.mu.Lock()
	c.endVals = append(c.endVals, ctx.Value(attemptKey{}))
	c.mu.Unlock()
}

// Start carries the attempt's own request (headers a tracer adds are sent,
// the caller's request is untouched), the host and the attempt number; the
// context it returns is the attempt's and reaches End; End carries the
// outcome, retry decision, wait and Retry-After.
func TestAttemptTracerSeesEachAttempt(t *testing.T) {
	var hits atomic.Int64
	var mu sync.Mutex
	var seen []string
	srv := httptest.NewServer(script(&hits, func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r.Header.Get("X-Trace"))
		mu.Unlock()
		w.Header().Set("Retry-After", "0")
		w.WriteHeader(503)
	}, func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r.Header.Get("X-Trace"))
		mu.Unlock()
	}))
	defer srv.Close()
	tr := &ctxTracer{}
	c, _ := newClient(t, rpc.WithTracer(tr))
	req, _ := http.NewRequest("GET", srv.URL, nil)
	req.Header.Set("X-Caller", "c")
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if req.Header.Get("X-Trace") != "" {
		t.Fatal("the tracer's header leaked into the caller's request")
	}
	if strings.Join(seen, ",") != "attempt-c-1,attempt-c-2" {
		t.Fatalf("server saw X-Trace %q", seen)
	}
	host := strings.TrimPrefix(srv.URL, "http://")
	tr.mu.Lock()
	defer tr.mu.Unlock()
	if len(tr.starts) != 2 || tr.starts[0].Host != host || tr.starts[1].Attempt != 2 || tr.starts[0].Request.URL.String() != srv.URL {
		t.Fatalf("starts %+v", tr.starts)
	}
	e := tr.a
	if len(e) != 2 || e[0].StatusCode != 503 || !e[0].Retry || e[0].RetryAfter != 0 || e[0].Host != host || e[0].Duration <= 0 ||
		e[1].StatusCode != 200 || e[1].Retry || e[1].Attempt != 2 || e[1].Err != nil || e[1].GiveUp != nil {
		t.Fatalf("ends %+v", e)
	}
	if tr.endVals[0] != 1 || tr.endVals[1] != 2 {
		t.Fatalf("End got contexts with %v; want the ones Start returned", tr.endVals)
	}
}

// The error path: a network error retried until the maximum, then a breaker
// refusal (nothing sent) that End reports with ErrCircuitOpen; the breaker
// change is traced with the context of the attempt that caused it.
func TestTracersOnFailure(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(reset))
	defer srv.Close()
	tr := &ctxTracer{}
	bc := &breakerChanges{}
	c, _ := newClient(t, rpc.WithTracer(tr), rpc.WithTracer(bc), rpc.WithMaxAttempts(2), rpc.WithoutRetryBudget(),
		rpc.WithBreaker(rpc.BreakerConfig{Failures: 2, OpenFor: time.Minute}))
	if _, err := get(t, c, context.Background(), srv.URL); !errors.Is(err, rpc.ErrMaxAttempts) {
		t.Fatalf("err = %v; want ErrMaxAttempts", err)
	}
	if _, err := get(t, c, context.Background(), srv.URL); !errors.Is(err, rpc.ErrCircuitOpen) {
		t.Fatalf("err = %v; want ErrCircuitOpen", err)
	}
	e := tr.all()
	if len(e) != 3 || e[0].Err == nil || !e[0].Retry || e[1].Err == nil || !errors.Is(e[1].GiveUp, rpc.ErrMaxAttempts) ||
		!errors.Is(e[2].Err, rpc.ErrCircuitOpen) || !errors.Is(e[2].GiveUp, rpc.ErrCircuitOpen) || e[2].Attempt != 1 {
		t.Fatalf("ends %+v", e)
	}
	bc.mu.Lock()
	defer bc.mu.Unlock()
	if strings.Join(bc.changes, " ") != "closed>open" || bc.ctxs[0].Value(attemptKey{}) != 2 {
		t.Fatalf("breaker changes %q; want closed>open with the second attempt's context", bc.changes)
	}
}

func TestStats(t *testing.T) {
	var hits atomic.Int64
	srv := httptest.NewServer(script(&hits, status(503), status(503), status(200)))
	defer srv.Close()
	c, tr := newClient(t, rpc.WithMaxAttempts(2), rpc.WithRetryBudget(0, 0),
		rpc.WithBreaker(rpc.BreakerConfig{Failures: 2, OpenFor: time.Minute}))
	// 1st call: 503, the budget (ratio 0, nothing per second) refuses the retry.
	if resp, err := get(t, c, context.Background(), srv.URL); err != nil || resp.StatusCode != 503 {
		t.Fatalf("%v %v", resp, err)
	}
	// 2nd call: 503 again opens the breaker; 3rd: refused.
	if resp, err := get(t, c, context.Background(), srv.URL); err != nil || resp.StatusCode != 503 {
		t.Fatalf("%v %v", resp, err)
	}
	if _, err := get(t, c, context.Background(), srv.URL); !errors.Is(err, rpc.ErrCircuitOpen) {
		t.Fatal(err)
	}
	want := rpc.Stats{Requests: 3, Attempts: 2, BreakerRejected: 1, BreakerOpens: 1, BudgetExhausted: 2, Breakers: 1}
	if got := tr.Stats(); got != want {
		t.Fatalf("Stats = %+v, want %+v", got, want)
	}
	c2, tr2 := newClient(t, rpc.WithoutRetryBudget())
	if resp, err := get(t, c2, context.Background(), srv.URL); err != nil || resp.StatusCode != 200 {
		t.Fatalf("%v %v", resp, err)
	}
	if s := tr2.Stats(); s.Requests != 1 || s.Attempts != 1 || s.Retries != 0 {
		t.Fatalf("Stats = %+v", s)
	}
}
