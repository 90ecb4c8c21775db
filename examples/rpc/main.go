// Command rpc calls a flaky service with the resilient client: a GET that gets
// 503 twice and then 200, and a POST whose first response is lost at a proxy
// after the server did the work. The client retries the POST with the same
// Idempotency-Key, and the server's idempotency middleware replays the stored
// response instead of booking twice.
//
//	go run ./examples/rpc
package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/signal"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/go-integration/patterns/rpc"
)

func main() {
	// Ctrl-C or SIGTERM cancels ctx, so run still cleans up after itself.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Stdout)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "rpc:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, w io.Writer) error {
	// The server: GET /rooms/7 is overloaded at first; POST /bookings is
	// idempotent by its Idempotency-Key.
	idem, err := rpc.Idempotency(rpc.NewMemoryStore()) // rpc/pgstore when several servers share keys
	if err != nil {
		return err
	}
	var roomCalls, bookingRuns, bookingRequests atomic.Int32
	var mu sync.Mutex
	keys := map[string]bool{} // Idempotency-Keys the server saw
	mux := http.NewServeMux()
	mux.HandleFunc("GET /rooms/7", func(rw http.ResponseWriter, r *http.Request) {
		if roomCalls.Add(1) <= 2 {
			http.Error(rw, "overloaded", http.StatusServiceUnavailable)
			return
		}
		io.WriteString(rw, `{"room":7,"free":true}`)
	})
	bookings := idem(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		n := bookingRuns.Add(1) // the side effect that must happen once
		rw.WriteHeader(http.StatusCreated)
		fmt.Fprintf(rw, `{"booking":"b-%d"}`, n)
	}))
	mux.HandleFunc("POST /bookings", func(rw http.ResponseWriter, r *http.Request) {
		mu.Lock()
		keys[r.Header.Get(rpc.HeaderIdempotencyKey)] = true
		mu.Unlock()
		if bookingRequests.Add(1) == 1 { // a proxy loses the first answer after the work is done
			bookings.ServeHTTP(httptest.NewRecorder(), r)
			http.Error(rw, "upstream connection reset", http.StatusBadGateway)
			return
		}
		bookings.ServeHTTP(rw, r)
	})
	srv := httptest.NewServer(mux)
	defer srv.Close()

	// The client: retries with backoff, a deadline per attempt, a breaker per
	// host, and an Idempotency-Key on every POST, kept across its retries.
	client, err := rpc.NewClient(
		rpc.WithIdempotencyKeys(nil),
		rpc.WithAttemptTimeout(2*time.Second),
		rpc.WithBackoff(rpc.ExponentialBackoff{Base: 20 * time.Millisecond, Max: 200 * time.Millisecond}),
		rpc.WithTracer(attemptPrinter{w}),
	)
	if err != nil {
		return err
	}
	defer client.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second) // bounds each whole call, retries included
	defer cancel()

	for _, c := range []struct{ method, path, body string }{
		{http.MethodGet, "/rooms/7", ""},
		{http.MethodPost, "/bookings", `{"room":7,"nights":3}`},
	} {
		fmt.Fprintf(w, "%s %s\n", c.method, c.path)
		req, err := http.NewRequestWithContext(ctx, c.method, srv.URL+c.path, strings.NewReader(c.body))
		if err != nil {
			return err
		}
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			return err
		}
		fmt.Fprintf(w, "  -> %d %s, replayed: %t\n", resp.StatusCode, strings.TrimSpace(string(body)),
			resp.Header.Get(rpc.HeaderIdempotentReplayed) == "true")
	}
	mu.Lock()
	defer mu.Unlock()
	fmt.Fprintf(w, "booking handler ran %d time(s) for %d requests with %d Idempotency-Key(s)\n",
		bookingRuns.Load(), bookingRequests.Load(), len(keys))
	return nil
}

// attemptPrinter prints the outcome of every attempt (an rpc.AttemptTracer).
type attemptPrinter struct{ w io.Writer }

func (p attemptPrinter) TraceAttemptStart(ctx context.Context, _ rpc.TraceAttemptStartData) context.Context {
	return ctx
}

func (p attemptPrinter) TraceAttemptEnd(_ context.Context, a rpc.TraceAttemptEndData) {
	fmt.Fprintf(p.w, "  attempt %d: %d, retry: %t\n", a.Attempt, a.StatusCode, a.Retry)
}
