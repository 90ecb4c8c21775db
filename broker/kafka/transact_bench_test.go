package kafka

import (
	"context"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-integration/patterns/broker"
)

// BenchmarkTransformPaired compares, in alternating rounds on one cluster,
// consume-transform-produce at-least-once (a Subscriber whose handler
// publishes its output with a Publisher before acknowledging, Concurrency
// 64 over 64 keys) with the exactly-once Transformer (one transaction per
// poll of up to DefaultTransactionRecords records). Both copy each 1 KiB
// input to an output topic; a round ends when every input is handled and
// its output acknowledged (committed, for the Transformer). Reported:
// "alo-records/s", "tx-records/s" and "tx/alo".
func BenchmarkTransformPaired(b *testing.B) {
	e := newBenchEnv(b)
	sub, err := NewSubscriber(e.brokers, WithLogger(testLogger()))
	if err != nil {
		b.Fatal(err)
	}
	defer sub.Close()
	pub, err := NewPublisher(e.brokers, WithLogger(testLogger()))
	if err != nil {
		b.Fatal(err)
	}
	defer pub.Close()
	tr, err := NewTransformer(e.brokers, "bench-tx", WithLogger(testLogger()))
	if err != nil {
		b.Fatal(err)
	}
	defer tr.Close()

	var n, round int
	var aloIn, txIn, aloOut, txOut string
	legs := []func(){
		func() { // at-least-once: Subscriber + Publisher
			var got atomic.Int64
			all := make(chan struct{})
			ctx, cancel := context.WithCancel(context.Background())
			errc := make(chan error, 1)
			go func() {
				errc <- sub.Subscribe(ctx, broker.Subscription{Topic: aloIn, Group: "alo-" + strconv.Itoa(round), Concurrency: 64},
					func(ctx context.Context, m broker.Message) error {
						if err := pub.Publish(ctx, aloOut, broker.Message{Key: m.Key, Payload: m.Payload}); err != nil {
							return err
						}
						if got.Add(1) == int64(n) {
							close(all)
						}
						return nil
					})
			}()
			<-all
			cancel()
			if err := <-errc; err != nil {
				b.Fatal(err)
			}
		},
		func() { // exactly once: Transformer
			base := tr.Stats().Handled
			ctx, cancel := context.WithCancel(context.Background())
			errc := make(chan error, 1)
			go func() {
				errc <- tr.Run(ctx, broker.Subscription{Topic: txIn, Group: "tx-" + strconv.Itoa(round)},
					func(_ context.Context, m broker.Message, emit Emit) error {
						emit(txOut, broker.Message{Key: m.Key, Payload: m.Payload})
						return nil
					})
			}()
			for tr.Stats().Handled-base < uint64(n) {
				select {
				case err := <-errc:
					b.Fatalf("Run returned: %v", err)
				case <-time.After(time.Millisecond):
				}
			}
			cancel()
			if err := <-errc; err != nil {
				b.Fatal(err)
			}
		},
	}
	var took [2]time.Duration
	b.SetBytes(2 * benchSize)
	b.ResetTimer()
	for done := 0; done < b.N; round, done = round+1, done+pairRound {
		n = min(pairRound, b.N-done)
		b.StopTimer()
		aloIn, txIn = e.fill(b, n), e.fill(b, n)
		aloOut, txOut = e.topic(b), e.topic(b)
		b.StartTimer()
		for k := range legs {
			leg := (round + k) % len(legs)
			start := time.Now()
			legs[leg]()
			took[leg] += time.Since(start)
		}
	}
	b.ReportMetric(float64(b.N)/took[0].Seconds(), "alo-records/s")
	b.ReportMetric(float64(b.N)/took[1].Seconds(), "tx-records/s")
	b.ReportMetric(took[0].Seconds()/took[1].Seconds(), "tx/alo")
}
