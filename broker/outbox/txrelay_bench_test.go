package outbox_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/go-integration/patterns/broker"
	"github.com/go-integration/patterns/broker/kafka"
	"github.com/go-integration/patterns/broker/outbox"
	"github.com/go-integration/patterns/internal/testenv"
	"github.com/go-integration/patterns/internal/testenv/kafkaenv"
)

// BenchmarkRelayKafka drains a backlog of b.N committed rows (200-byte
// payloads, 50 keys, batches of 500) to an in-process Kafka, at least once
// through a kafka.Publisher and exactly once through a kafka.TxPublisher
// (a transaction and a checkpoint read per batch).
func BenchmarkRelayKafka(b *testing.B) {
	brokers := kafkaenv.Brokers(b)
	for _, mode := range []string{"at-least-once", "exactly-once"} {
		b.Run(mode, func(b *testing.B) {
			e := newEnv(b)
			ctx := context.Background()
			payload := make([]byte, 200)
			for i := 0; i < b.N; i += 1000 {
				msgs := make([]broker.Message, 0, 1000)
				for j := i; j < min(i+1000, b.N); j++ {
					msgs = append(msgs, broker.Message{Key: fmt.Sprintf("orders.k%02d", j%50), Payload: payload})
				}
				if err := outbox.Add(ctx, e.db, e.topic, msgs...); err != nil {
					b.Fatal(err)
				}
			}
			var pub broker.Publisher
			var err error
			create := kafka.WithCreateTopics(kafka.Topic{Partitions: 8})
			log := kafka.WithLogger(quiet)
			if mode == "exactly-once" {
				pub, err = kafka.NewTxPublisher(brokers, testenv.Name(b, "tx"), testenv.Name(b, "ck"), create, log)
			} else {
				pub, err = kafka.NewPublisher(brokers, create, log)
			}
			if err != nil {
				b.Fatal(err)
			}
			defer pub.Close()
			r, err := outbox.NewRelay(e.db, pub, outbox.WithLogger(quiet), outbox.WithoutCleanup())
			if err != nil {
				b.Fatal(err)
			}
			rctx, cancel := context.WithCancel(ctx)
			done := make(chan error, 1)
			b.ResetTimer()
			go func() { done <- r.Run(rctx) }()
			for r.Stats().Published < uint64(b.N) {
				select {
				case err := <-done:
					b.Fatalf("Run returned: %v", err)
				case <-time.After(time.Millisecond):
				}
			}
			b.StopTimer()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msg/s")
			cancel()
			if err := <-done; err != nil {
				b.Fatal(err)
			}
		})
	}
}
