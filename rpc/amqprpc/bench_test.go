package amqprpc_test

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-integration/patterns/internal/testenv"
	"github.com/go-integration/patterns/rpc/amqprpc"
)

// BenchmarkRoundTrip measures request-reply with 32 concurrent callers:
// amqprpc against the real RabbitMQ, and one HTTP round trip on loopback in
// the same run for comparison. It reports calls/s and p50/p99 latency.
func BenchmarkRoundTrip(b *testing.B) {
	_, url := testenv.VHost(b)
	queue := testenv.Name(b, "q")
	echo := func(ctx context.Context, req amqprpc.Message) (amqprpc.Message, error) { return req, nil }
	startServer(b, url, queue, echo, amqprpc.WithConcurrency(32))
	c := newClient(b, url)
	payload := bytes.Repeat([]byte("x"), 128)

	b.Run("amqprpc", func(b *testing.B) {
		concurrent(b, 32, func() error {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_, err := c.Call(ctx, queue, amqprpc.Message{Body: payload})
			return err
		})
	})

	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		w.Write(body)
	}))
	defer srv.Close()
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = 64
	hc := &http.Client{Transport: tr}
	b.Run("http-loopback", func(b *testing.B) {
		concurrent(b, 32, func() error {
			resp, err := hc.Post(srv.URL, "application/octet-stream", bytes.NewReader(payload))
			if err != nil {
				return err
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			return resp.Body.Close()
		})
	})
}

// concurrent runs b.N calls of f on n goroutines and reports throughput and
// latency percentiles.
func concurrent(b *testing.B, n int, f func() error) {
	var next atomic.Int64
	lat := make([][]time.Duration, n)
	var wg sync.WaitGroup
	b.ResetTimer()
	start := time.Now()
	for g := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(b.N) {
				t0 := time.Now()
				if err := f(); err != nil {
					b.Error(err)
					return
				}
				lat[g] = append(lat[g], time.Since(t0))
			}
		}()
	}
	wg.Wait()
	el := time.Since(start)
	b.StopTimer()
	all := slices.Concat(lat...)
	if len(all) == 0 {
		return
	}
	slices.Sort(all)
	pct := func(p float64) float64 { return float64(all[int(p*float64(len(all)-1))].Microseconds()) }
	b.ReportMetric(float64(len(all))/el.Seconds(), "calls/s")
	b.ReportMetric(pct(0.50), "p50-µs")
	b.ReportMetric(pct(0.99), "p99-µs")
}
