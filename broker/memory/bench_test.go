package memory_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/go-integration/patterns/broker"
	"github.com/go-integration/patterns/broker/memory"
)

// BenchmarkPublishToHandler measures end to end: from Publish to the handler's
// return, 1 KiB payloads, 64 keys, one publishing goroutine per core. At most
// 4,096 messages are in flight (published, not yet handled), as in a steady
// state; without that bound publishers outrun handlers and the benchmark
// measures page faults of an ever-growing backlog instead of the broker.
func BenchmarkPublishToHandler(b *testing.B) {
	for _, conc := range []int{1, 16} {
		b.Run(fmt.Sprintf("concurrency=%d", conc), func(b *testing.B) {
			br := memory.MustNew()
			defer br.Close()
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			s := broker.Subscription{Topic: "bench", Group: "g", Concurrency: conc}
			if err := br.Provision(ctx, s); err != nil {
				b.Fatal(err)
			}
			const window = 4096
			slots := make(chan struct{}, window)
			var handled atomic.Int64
			target := int64(b.N)
			done := make(chan struct{})
			go func() {
				_ = br.Subscribe(ctx, s, func(ctx context.Context, m broker.Message) error {
					<-slots
					if handled.Add(1) == target {
						close(done)
					}
					return nil
				})
			}()
			payload := make([]byte, 1024)
			keys := make([]string, 64)
			for i := range keys {
				keys[i] = fmt.Sprintf("rentals.france.k%d", i)
			}
			b.SetBytes(int64(len(payload)))
			b.ReportAllocs()
			b.ResetTimer()
			var i atomic.Int64
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					slots <- struct{}{}
					n := i.Add(1)
					m := broker.Message{ID: "id", Key: keys[n%64], Payload: payload}
					if err := br.Publish(ctx, "bench", m); err != nil {
						b.Error(err)
						return
					}
				}
			})
			<-done
			b.StopTimer()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msg/s")
		})
	}
}
