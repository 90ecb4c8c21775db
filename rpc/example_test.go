package rpc_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"time"

	"github.com/go-integration/patterns/rpc"
)

// A POST through the resilient client to a server protected by the
// idempotency middleware: the first attempt fails at the server's front, the
// retry carries the same Idempotency-Key, and the handler runs once.
func Example() {
	idem, err := rpc.Idempotency(rpc.NewMemoryStore())
	if err != nil {
		panic(err)
	}
	var runs, front atomic.Int32
	orders := idem(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		runs.Add(1)
		w.WriteHeader(http.StatusCreated)
		io.WriteString(w, "order created")
	}))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if front.Add(1) == 1 {
			w.Header().Set("Retry-After", "0")
			w.WriteHeader(http.StatusServiceUnavailable) // a proxy having a bad moment
			return
		}
		orders.ServeHTTP(w, r)
	}))
	defer srv.Close()

	client, err := rpc.NewClient(
		rpc.WithIdempotencyKeys(nil),                    // POSTs get a key, kept across retries
		rpc.WithAttemptTimeout(2*time.Second),           // each attempt
		rpc.WithBreaker(rpc.BreakerConfig{Failures: 5}), // per host
	)
	if err != nil {
		panic(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second) // the whole call
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, srv.URL+"/orders", strings.NewReader(`{"room":7}`))
	resp, err := client.Do(req)
	if err != nil {
		panic(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	fmt.Println(resp.StatusCode, string(body))
	fmt.Println("attempts:", front.Load(), "handler runs:", runs.Load())

	// Sending the same key again replays the stored response.
	req2, _ := http.NewRequest(http.MethodPost, srv.URL+"/orders", strings.NewReader(`{"room":7}`))
	req2.Header.Set(rpc.HeaderIdempotencyKey, "booking-42")
	for range 2 {
		resp, err := client.Do(req2.Clone(context.Background()))
		if err != nil {
			panic(err)
		}
		resp.Body.Close()
		fmt.Println(resp.StatusCode, "replayed:", resp.Header.Get(rpc.HeaderIdempotentReplayed) == "true")
	}
	// Output:
	// 201 order created
	// attempts: 2 handler runs: 1
	// 201 replayed: false
	// 201 replayed: true
}

// printTracer prints every attempt and breaker change. A tracer for
// OpenTelemetry would start a span in TraceAttemptStart, inject its context
// into data.Request.Header and return the span's context; TraceAttemptEnd
// would end it.
type printTracer struct{}

func (printTracer) TraceAttemptStart(ctx context.Context, d rpc.TraceAttemptStartData) context.Context {
	d.Request.Header.Set("X-Attempt", fmt.Sprint(d.Attempt)) // sent with the attempt
	return ctx
}

func (printTracer) TraceAttemptEnd(ctx context.Context, d rpc.TraceAttemptEndData) {
	fmt.Println("attempt", d.Attempt, d.StatusCode, d.Err != nil, "retry:", d.Retry)
}

func (printTracer) TraceBreakerChange(ctx context.Context, d rpc.TraceBreakerChangeData) {
	fmt.Println("breaker", d.From, "->", d.To)
}

// Tracers see every attempt and every breaker change, for logs, metrics and
// traces.
func ExampleWithTracer() {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusServiceUnavailable) // stays down
	}))
	defer srv.Close()
	client, err := rpc.NewClient(
		rpc.WithBackoff(rpc.BackoffFunc(func(int) time.Duration { return time.Millisecond })),
		rpc.WithBreaker(rpc.BreakerConfig{Failures: 3, OpenFor: time.Minute}),
		rpc.WithTracer(printTracer{}),
	)
	if err != nil {
		panic(err)
	}
	for range 2 {
		resp, err := client.Get(srv.URL)
		if err != nil {
			fmt.Println("error is ErrCircuitOpen:", errors.Is(err, rpc.ErrCircuitOpen))
			continue
		}
		resp.Body.Close()
		fmt.Println("status", resp.StatusCode)
	}
	// Output:
	// attempt 1 503 false retry: true
	// attempt 2 503 false retry: true
	// breaker closed -> open
	// attempt 3 503 false retry: false
	// status 503
	// attempt 1 0 true retry: false
	// error is ErrCircuitOpen: true
}
