package rpc_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/go-integration/patterns/rpc"
)

// BenchmarkClient compares a successful GET on loopback through a plain
// http.Client with the same through rpc.Transport (breaker, budget, hooks
// off), in the same run.
func BenchmarkClient(b *testing.B) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, `{"ok":true}`)
	}))
	defer srv.Close()
	newBase := func() *http.Transport {
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.MaxIdleConnsPerHost = 64
		return t
	}
	run := func(b *testing.B, c *http.Client) {
		b.ReportAllocs()
		defer reportCPU(b)()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				resp, err := c.Get(srv.URL)
				if err != nil {
					b.Error(err)
					return
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		})
	}
	b.Run("http.Client", func(b *testing.B) { run(b, &http.Client{Transport: newBase()}) })
	b.Run("rpc.Transport", func(b *testing.B) {
		tr, err := rpc.NewTransport(rpc.WithBase(newBase()))
		if err != nil {
			b.Fatal(err)
		}
		run(b, &http.Client{Transport: tr})
	})
	b.Run("rpc.Transport+attemptTimeout", func(b *testing.B) {
		tr, err := rpc.NewTransport(rpc.WithBase(newBase()), rpc.WithAttemptTimeout(5e9))
		if err != nil {
			b.Fatal(err)
		}
		run(b, &http.Client{Transport: tr})
	})
}

// BenchmarkIdempotency measures the middleware with the memory store against
// the bare handler, in process (no network), so the difference is its
// overhead per request.
func BenchmarkIdempotency(b *testing.B) {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusCreated)
		io.WriteString(w, `{"id":"order-1","status":"booked"}`)
	})
	body := `{"room":7,"from":"2026-01-01","to":"2026-01-08","guest":"ada"}`
	req := func(key string) *http.Request {
		r := httptest.NewRequest(http.MethodPost, "/orders", strings.NewReader(body))
		if key != "" {
			r.Header.Set(rpc.HeaderIdempotencyKey, key)
		}
		return r
	}
	b.Run("bare", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			h.ServeHTTP(httptest.NewRecorder(), req("k"+strconv.Itoa(i%4096)))
		}
	})
	// Every request is a first request: it claims its key, runs the handler
	// and stores the response. Keys cycle over 4096 with a TTL of 1ns so the
	// store stays at a steady size (an ever-growing map would measure the
	// garbage collector scanning it instead).
	b.Run("first", func(b *testing.B) {
		mw, _ := rpc.Idempotency(rpc.NewMemoryStore(), rpc.WithTTL(time.Nanosecond))
		m := mw(h)
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			m.ServeHTTP(httptest.NewRecorder(), req("k"+strconv.Itoa(i%4096)))
		}
	})
	b.Run("replay", func(b *testing.B) {
		mw, _ := rpc.Idempotency(rpc.NewMemoryStore())
		m := mw(h)
		m.ServeHTTP(httptest.NewRecorder(), req("k"))
		b.ReportAllocs()
		for b.Loop() {
			m.ServeHTTP(httptest.NewRecorder(), req("k"))
		}
	})
}

// reportCPU reports the process's CPU time (user+system) per operation, a
// figure less disturbed than wall time by other processes on a shared machine.
func reportCPU(b *testing.B) func() {
	start := cpuTime()
	return func() {
		b.ReportMetric(float64(cpuTime()-start)/float64(b.N), "cpu-ns/op")
	}
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// stub answers every request at once, without a network, so that
// BenchmarkTransportOverhead measures only what rpc.Transport adds.
type stub struct{}

func (stub) RoundTrip(r *http.Request) (*http.Response, error) {
	return &http.Response{StatusCode: 200, Header: http.Header{}, Body: http.NoBody, Request: r}, nil
}

// BenchmarkTransportOverhead is the cost rpc.Transport adds to one
// successful request (breaker, budget, classification), next to the same
// request on the bare base RoundTripper.
func BenchmarkTransportOverhead(b *testing.B) {
	req := httptest.NewRequest(http.MethodGet, "http://example.test/x", nil)
	b.Run("base", func(b *testing.B) {
		var rt http.RoundTripper = stub{}
		b.ReportAllocs()
		for b.Loop() {
			resp, _ := rt.RoundTrip(req)
			resp.Body.Close()
		}
	})
	b.Run("rpc.Transport", func(b *testing.B) {
		rt, _ := rpc.NewTransport(rpc.WithBase(stub{}))
		b.ReportAllocs()
		for b.Loop() {
			resp, _ := rt.RoundTrip(req)
			resp.Body.Close()
		}
	})
}
