package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	"github.com/go-integration/patterns/rpc"
)

// httpCalls shows the resilient HTTP client: a POST retried with an
// Idempotency-Key runs the server's handler once, and a circuit breaker stops
// calling a pricing service that is down until it recovers.
func httpCalls(ctx context.Context, t *tour) error {
	t.printf("   The front end books through the booking service over HTTP. Networks lose\n")
	t.printf("   answers, so the client retries; an Idempotency-Key makes the retry safe.\n")

	// The booking service: POST /bookings behind the Idempotency middleware.
	var runs atomic.Int32
	idem, err := rpc.Idempotency(rpc.NewMemoryStore(), rpc.WithTracer(t.tel.RPC()))
	if err != nil {
		return err
	}
	book := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := runs.Add(1)
		t.printf("   booking service: handler runs (run #%d), books chalet-17, answers 201\n", n)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusCreated)
		fmt.Fprint(w, `{"id":"b-2001","rental":"chalet-17"}`)
	})
	// A load balancer in front loses the first answer (as a timeout would):
	// the booking was made, but the client sees 502.
	var seen atomic.Int32
	lossy := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if seen.Add(1) == 1 {
			idem(book).ServeHTTP(httptest.NewRecorder(), r)
			t.printf("   load balancer: the answer is lost on the way back, client gets 502\n")
			http.Error(w, "bad gateway", http.StatusBadGateway)
			return
		}
		idem(book).ServeHTTP(w, r)
	})
	mux := http.NewServeMux()
	mux.Handle("POST /bookings", t.obs.serve("POST /bookings", lossy))
	bookingSrv := httptest.NewServer(mux)
	defer bookingSrv.Close()

	// The pricing service is down (503) until it is told to recover.
	var healthy atomic.Bool
	pricingSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !healthy.Load() {
			http.Error(w, "maintenance", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprint(w, `{"rental":"chalet-17","per_night_eur":180}`)
	}))
	defer pricingSrv.Close()

	const openFor = 300 * time.Millisecond
	client, err := rpc.NewClient(
		rpc.WithIdempotencyKeys(nil),
		rpc.WithMaxAttempts(3),
		rpc.WithBackoff(rpc.BackoffFunc(func(int) time.Duration { return 20 * time.Millisecond })),
		rpc.WithAttemptTimeout(2*time.Second),
		rpc.WithBreaker(rpc.BreakerConfig{Failures: 3, OpenFor: openFor}),
		rpc.WithTracer(t.tel.RPC()),
		rpc.WithTracer(callTracer{t: t, pricingURL: pricingSrv.URL}),
	)
	if err != nil {
		return err
	}
	defer client.CloseIdleConnections()

	// 1. A POST whose first answer is lost.
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, bookingSrv.URL+"/bookings", strings.NewReader(`{"rental":"chalet-17","nights":4}`))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated || resp.Header.Get(rpc.HeaderIdempotentReplayed) != "true" {
		return fmt.Errorf("POST /bookings: %d (replayed %q), want a replayed 201", resp.StatusCode, resp.Header.Get(rpc.HeaderIdempotentReplayed))
	}
	if n := runs.Load(); n != 1 {
		return fmt.Errorf("the booking handler ran %d times, want once", n)
	}
	t.printf("   client got %d %s with Idempotent-Replayed: true; the handler ran once: one booking, not two\n", resp.StatusCode, strings.TrimSpace(string(body)))

	// 2. The pricing service is down: retries, then the breaker opens.
	get := func() (int, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, pricingSrv.URL+"/prices/chalet-17", nil)
		if err != nil {
			return 0, err
		}
		resp, err := client.Do(req)
		if err != nil {
			return 0, err
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode, nil
	}
	t.printf("   the pricing service goes down for maintenance (503)\n")
	code, err := get()
	if err != nil || code != http.StatusServiceUnavailable {
		return fmt.Errorf("GET prices while down: %d, %v; want 503 after the retries", code, err)
	}
	start := time.Now()
	_, err = get()
	if !errors.Is(err, rpc.ErrCircuitOpen) {
		return fmt.Errorf("GET prices with the breaker open: %v, want ErrCircuitOpen", err)
	}
	t.printf("   the next call fails fast without touching the service (%s): %v\n", time.Since(start).Round(time.Microsecond), errors.Unwrap(err))

	healthy.Store(true)
	t.printf("   the pricing service is back; after %s the breaker lets a trial call through\n", openFor)
	select {
	case <-time.After(openFor + 50*time.Millisecond):
	case <-ctx.Done():
		return ctx.Err()
	}
	if code, err := get(); err != nil || code != http.StatusOK {
		return fmt.Errorf("GET prices after recovery: %d, %v", code, err)
	}
	return nil
}

// hostName names a breaker's host for the story.
func hostName(host, pricingURL string) string {
	if u, err := url.Parse(pricingURL); err == nil && u.Host == host {
		return "pricing"
	}
	return host
}

// callTracer prints every attempt and breaker change of the tour's client
// (an rpc.AttemptTracer and rpc.BreakerTracer).
type callTracer struct {
	t          *tour
	pricingURL string
}

type callKey struct{}

func (c callTracer) TraceAttemptStart(ctx context.Context, d rpc.TraceAttemptStartData) context.Context {
	return context.WithValue(ctx, callKey{}, d.Request.Method+" "+d.Request.URL.Path)
}

func (c callTracer) TraceAttemptEnd(ctx context.Context, a rpc.TraceAttemptEndData) {
	what := fmt.Sprint(a.StatusCode)
	if a.Err != nil {
		what = a.Err.Error()
	}
	next := "done"
	switch {
	case a.Retry:
		next = "retry in " + a.Wait.Round(time.Millisecond).String()
	case a.GiveUp != nil:
		next = "give up: " + a.GiveUp.Error()
	}
	c.t.printf("   client: %s attempt %d -> %s (%s)\n", ctx.Value(callKey{}), a.Attempt, what, next)
}

func (c callTracer) TraceBreakerChange(_ context.Context, d rpc.TraceBreakerChangeData) {
	c.t.printf("   client: circuit breaker for the %s host: %s -> %s\n", hostName(d.Host, c.pricingURL), d.From, d.To)
}
