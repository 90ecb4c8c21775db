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

// BenchmarkPublishAsyncPaired alternates, in rounds of 5,000 messages,
// raw amqp091-go (16 goroutines, a channel each, 128 deferred confirms in
// flight each, as in bench/, but through the same kind of topic exchange
// as ours and with a message ID and timestamp), the same with the header
// that carries Message.Time in nanoseconds (rawTime: then the server gets
// the very messages ours sends), and PublishAsync from 16 goroutines on 16
// channels of 128 in flight, on 1 channel of 2048 and with the defaults (1
// channel of DefaultMaxInFlight), and reports each one's rate and its
// ratios to raw and rawTime.
//
//	go test -run '^$' -bench PublishAsyncPaired -benchtime 40000x ./broker/rabbitmq/
func BenchmarkPublishAsyncPaired(b *testing.B) {
	const window, round = 128, 5000
	_, url := testenv.VHost(b)
	ch := admin(b, url)
	rawTopic, rawTimeTopic := testenv.Name(b, "raw"), testenv.Name(b, "rawtime")
	ours16, ours1, oursDef := testenv.Name(b, "ours16"), testenv.Name(b, "ours1"), testenv.Name(b, "oursdef")
	topics := []string{rawTopic, rawTimeTopic, ours16, ours1, oursDef}
	for _, t := range topics {
		q := benchQueue(b, ch, t)
		b.Cleanup(func() { _, _ = ch.QueueDelete(q, false, false, false) })
	}
	conn, err := amqp.Dial(url)
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	chans := make([]*amqp.Channel, benchPublishers)
	for i := range chans {
		if chans[i], err = conn.Channel(); err != nil {
			b.Fatal(err)
		}
		if err := chans[i].Confirm(false); err != nil {
			b.Fatal(err)
		}
	}
	p16 := newPublisher(b, url, rabbitmq.WithChannels(benchPublishers), rabbitmq.WithMaxInFlight(window))
	p1 := newPublisher(b, url, rabbitmq.WithMaxInFlight(benchPublishers*window))
	pDef := newPublisher(b, url)
	ctx := context.Background()
	var failed atomic.Int64
	done := func(_ broker.Message, err error) {
		if err != nil {
			failed.Add(1)
		}
	}
	keys := make([]string, 64)
	for i := range keys {
		keys[i] = fmt.Sprint("k", i)
	}
	var n int
	// raw publishes n messages; withTime adds the header in which
	// broker/rabbitmq carries Message.Time in nanoseconds (the AMQP
	// timestamp has seconds), so that the server gets the same messages.
	raw := func(topic string, withTime bool) func() {
		return func() {
			var wg sync.WaitGroup
			for g, pch := range chans {
				count := n / len(chans)
				if g < n%len(chans) {
					count++
				}
				wg.Go(func() {
					pending := make([]*amqp.DeferredConfirmation, 0, window)
					for i := range count {
						now := time.Now()
						pub := amqp.Publishing{DeliveryMode: amqp.Persistent, MessageId: broker.NewID(), Timestamp: now, Body: payload1K}
						if withTime {
							pub.Headers = amqp.Table{"x-patterns-time": now.UnixNano()}
						}
						dc, err := pch.PublishWithDeferredConfirmWithContext(ctx, topic, keys[i%64], false, false, pub)
						if err != nil {
							failed.Add(1)
							return
						}
						pending = append(pending, dc)
						if len(pending) == window {
							if !pending[0].Wait() {
								failed.Add(1)
							}
							pending = append(pending[:0], pending[1:]...)
						}
					}
					for _, dc := range pending {
						if !dc.Wait() {
							failed.Add(1)
						}
					}
				})
			}
			wg.Wait()
		}
	}
	ours := func(p *rabbitmq.Publisher, topic string) func() {
		return func() {
			var next atomic.Int64
			var wg sync.WaitGroup
			for range benchPublishers {
				wg.Go(func() {
					for {
						i := int(next.Add(1) - 1)
						if i >= n {
							return
						}
						p.PublishAsync(ctx, topic, broker.Message{Key: keys[i%64], Payload: payload1K}, done)
					}
				})
			}
			wg.Wait()
			if err := p.Flush(ctx); err != nil {
				b.Fatal(err)
			}
		}
	}
	legs := []func(){raw(rawTopic, false), raw(rawTimeTopic, true), ours(p16, ours16), ours(p1, ours1), ours(pDef, oursDef)}
	var took [5]time.Duration
	b.SetBytes(int64(len(payload1K)) * int64(len(legs)))
	b.ResetTimer()
	for r, sent := 0, 0; sent < b.N; r, sent = r+1, sent+round {
		n = min(round, b.N-sent)
		for k := range legs {
			leg := (r + k) % len(legs)
			start := time.Now()
			legs[leg]()
			took[leg] += time.Since(start)
		}
		for _, t := range topics {
			_, _ = ch.QueuePurge(rabbitmq.DefaultQueueName(t, "g"), false)
		}
	}
	b.StopTimer()
	if f := failed.Load(); f > 0 {
		b.Fatalf("%d failed", f)
	}
	rate := func(d time.Duration) float64 { return float64(b.N) / d.Seconds() }
	b.ReportMetric(rate(took[0]), "raw-msg/s")
	b.ReportMetric(rate(took[2]), "ours16ch-msg/s")
	b.ReportMetric(rate(took[3]), "ours1ch-msg/s")
	b.ReportMetric(took[0].Seconds()/took[2].Seconds(), "ours16ch/raw")
	b.ReportMetric(took[0].Seconds()/took[3].Seconds(), "ours1ch/raw")
	b.ReportMetric(took[0].Seconds()/took[4].Seconds(), "oursDefault/raw")
	b.ReportMetric(took[1].Seconds()/took[2].Seconds(), "ours16ch/rawTime")
	b.ReportMetric(took[1].Seconds()/took[3].Seconds(), "ours1ch/rawTime")
}
