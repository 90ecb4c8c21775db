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
// overhead per request. The request and the response writer are as cheap as
// possible, so that they do not drown the difference.
func BenchmarkIdempotency(b *testing.B) {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusCreated)
		io.WriteString(w, `{"id":"order-1","status":"booked"}`)
	})
	const body = `{"room":7,"from":"2026-01-01","to":"2026-01-08","guest":"ada"}`
	keys := make([]string, 4096)
	for i := range keys {
		keys[i] = "key-" + strconv.Itoa(i)
	}
	base := httptest.NewRequest(http.MethodPost, "/orders", nil)
	serve := func(hd http.Handler, key string) {
		r := *base
		r.Header = http.Header{rpc.HeaderIdempotencyKey: {key}}
		r.Body = io.NopCloser(strings.NewReader(body))
		r.ContentLength = int64(len(body))
		hd.ServeHTTP(&discardWriter{h: http.Header{}}, &r)
	}
	b.Run("bare", func(b *testing.B) {
		b.ReportAllocs()
		defer reportCPU(b)()
		for i := 0; b.Loop(); i++ {
			serve(h, keys[i%len(keys)])
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
		defer reportCPU(b)()
		for i := 0; b.Loop(); i++ {
			serve(m, keys[i%len(keys)])
		}
	})
	b.Run("replay", func(b *testing.B) {
		mw, _ := rpc.Idempotency(rpc.NewMemoryStore())
		m := mw(h)
		serve(m, "k")
		b.ReportAllocs()
		defer reportCPU(b)()
		for b.Loop() {
			serve(m, "k")
		}
	})
}

type discardWriter struct {
	h    http.Header
	code int
}

func (w *discardWriter) Header() http.Header         { return w.h }
func (w *discardWriter) WriteHeader(code int)        { w.code = code }
func (w *discardWriter) Write(p []byte) (int, error) { return len(p), nil }

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
