package rabbitmq_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/go-integration/patterns/broker"
	"github.com/go-integration/patterns/broker/rabbitmq"
	"github.com/go-integration/patterns/internal/testenv"
)

// Benchmarks compare this adapter with raw amqp091-go in the same run against
// the same server: 1 KiB persistent messages into a durable queue.
//
//	go test -run '^$' -bench . -benchtime 20000x ./broker/rabbitmq/
const benchPublishers = 16

var payload1K = make([]byte, 1024)

// benchQueue declares a topic exchange with a durable queue bound to it.
func benchQueue(b *testing.B, ch *amqp.Channel, topic string) string {
	b.Helper()
	if err := ch.ExchangeDeclare(topic, amqp.ExchangeTopic, true, false, false, false, nil); err != nil {
		b.Fatal(err)
	}
	q := rabbitmq.DefaultQueueName(topic, "g")
	if _, err := ch.QueueDeclare(q, true, false, false, false, nil); err != nil {
		b.Fatal(err)
	}
	if err := ch.QueueBind(q, "#", topic, false, nil); err != nil {
		b.Fatal(err)
	}
	return q
}

// parallel runs f for b.N items split over benchPublishers goroutines.
func parallel(b *testing.B, f func() error) {
	var next atomic.Int64
	var wg sync.WaitGroup
	var failed atomic.Value
	for range benchPublishers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(b.N) {
				if err := f(); err != nil {
					failed.Store(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if err, ok := failed.Load().(error); ok {
		b.Fatal(err)
	}
}

func BenchmarkPublish(b *testing.B) {
	_, url := testenv.VHost(b)
	ch := admin(b, url)
	for _, channels := range []int{1, 4} {
		// one channel is the plain raw client; four matches our default pool.
		b.Run(fmt.Sprintf("raw-amqp091-deferred-confirms-%dch", channels), func(b *testing.B) {
			topic := testenv.Name(b, "raw")
			benchQueue(b, ch, topic)
			conn, err := amqp.Dial(url)
			if err != nil {
				b.Fatal(err)
			}
			defer conn.Close()
			chans := make([]*amqp.Channel, channels)
			for i := range chans {
				if chans[i], err = conn.Channel(); err != nil {
					b.Fatal(err)
				}
				if err := chans[i].Confirm(false); err != nil {
					b.Fatal(err)
				}
			}
			var rr atomic.Uint64
			ctx := context.Background()
			b.SetBytes(int64(len(payload1K)))
			b.ResetTimer()
			start := time.Now()
			parallel(b, func() error {
				pch := chans[rr.Add(1)%uint64(channels)]
				dc, err := pch.PublishWithDeferredConfirmWithContext(ctx, topic, "k", false, false, amqp.Publishing{
					DeliveryMode: amqp.Persistent, MessageId: broker.NewID(), Timestamp: time.Now(), Body: payload1K,
				})
				if err != nil {
					return err
				}
				if !dc.Wait() {
					b.Error("nack")
				}
				return nil
			})
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msg/s")
		})
	}
	for _, channels := range []int{1, 2, 4} {
		b.Run(fmt.Sprintf("patterns-publisher-%dch", channels), func(b *testing.B) {
			benchPublisher(b, ch, url, rabbitmq.WithChannels(channels))
		})
	}
}

func benchPublisher(b *testing.B, ch *amqp.Channel, url string, opts ...rabbitmq.PublisherOption) {
	{
		topic := testenv.Name(b, "ours")
		benchQueue(b, ch, topic)
		p := newPublisher(b, url, opts...)
		ctx := context.Background()
		b.SetBytes(int64(len(payload1K)))
		b.ResetTimer()
		start := time.Now()
		parallel(b, func() error {
			return p.Publish(ctx, topic, broker.Message{Key: "k", Payload: payload1K})
		})
		b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msg/s")
	}
}

// fill publishes n messages to topic (not timed).
func fill(b *testing.B, url, topic string, n int) {
	b.Helper()
	p := newPublisher(b, url)
	batch := make([]broker.Message, 0, 500)
	for i := 0; i < n; i++ {
		batch = append(batch, broker.Message{Key: "k", Payload: payload1K})
		if len(batch) == cap(batch) || i == n-1 {
			if err := p.Publish(context.Background(), topic, batch...); err != nil {
				b.Fatal(err)
			}
			batch = batch[:0]
		}
	}
	_ = p.Close()
}

func BenchmarkConsume(b *testing.B) {
	_, url := testenv.VHost(b)
	ch := admin(b, url)
	const prefetch = 16 // the subscriber's default for Concurrency 1
	b.Run("raw-amqp091-ack-each", func(b *testing.B) {
		topic := testenv.Name(b, "raw")
		q := benchQueue(b, ch, topic)
		fill(b, url, topic, b.N)
		conn, err := amqp.Dial(url)
		if err != nil {
			b.Fatal(err)
		}
		defer conn.Close()
		cch, err := conn.Channel()
		if err != nil {
			b.Fatal(err)
		}
		if err := cch.Qos(prefetch, 0, false); err != nil {
			b.Fatal(err)
		}
		b.SetBytes(int64(len(payload1K)))
		b.ResetTimer()
		start := time.Now()
		deliveries, err := cch.Consume(q, "", false, false, false, false, nil)
		if err != nil {
			b.Fatal(err)
		}
		for i := 0; i < b.N; i++ {
			d := <-deliveries
			if err := d.Ack(false); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msg/s")
	})
	b.Run("patterns-subscriber", func(b *testing.B) {
		topic := testenv.Name(b, "ours")
		benchQueue(b, ch, topic)
		fill(b, url, topic, b.N)
		s := newSubscriber(b, url)
		var n atomic.Int64
		done := make(chan struct{})
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		b.SetBytes(int64(len(payload1K)))
		b.ResetTimer()
		start := time.Now()
		errc := make(chan error, 1)
		go func() {
			errc <- s.Subscribe(ctx, broker.Subscription{Topic: topic, Group: "g", MaxInFlight: prefetch}, func(context.Context, broker.Message) error {
				if n.Add(1) == int64(b.N) {
					close(done)
				}
				return nil
			})
		}()
		select {
		case <-done:
		case err := <-errc:
			b.Fatalf("Subscribe returned early: %v", err)
		}
		b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msg/s")
		b.StopTimer()
		cancel()
		if err := <-errc; err != nil {
			b.Fatal(err)
		}
	})
}
