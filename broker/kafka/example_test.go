package kafka_test

import (
	"context"
	"fmt"
	"io"
	"log"
	"log/slog"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/go-integration/patterns/broker"
	"github.com/go-integration/patterns/broker/kafka"
)

// Publish events keyed by booking and handle them in a consumer group, with
// retries and a dead-letter topic. The example runs an in-process kfake
// cluster; use your brokers' addresses instead.
func Example() {
	// An in-process Kafka (kfake: one broker on a random port) so the example
	// runs anywhere; replace with your brokers' addresses, for example
	// brokers := []string{"kafka-1:9092", "kafka-2:9092"}.
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		log.Fatal(err)
	}
	defer cluster.Close()
	brokers := cluster.ListenAddrs()
	quiet := kafka.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil)))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	pub, err := kafka.NewPublisher(brokers, quiet)
	if err != nil {
		log.Fatal(err)
	}
	defer pub.Close()
	sub, err := kafka.NewSubscriber(brokers, quiet, kafka.WithCreateTopics(kafka.Topic{Partitions: 1}))
	if err != nil {
		log.Fatal(err)
	}
	defer sub.Close()

	s := broker.Subscription{Topic: "bookings", Group: "billing", Keys: []string{"booking.*"}, Concurrency: 4, MaxAttempts: 3}
	if err := sub.Provision(ctx, s); err != nil { // creates bookings and bookings.dlq
		log.Fatal(err)
	}
	err = pub.Publish(ctx, "bookings",
		broker.Message{Key: "booking.1", Payload: []byte("created")},
		broker.Message{Key: "invoice.1", Payload: []byte("filtered out")},
		broker.Message{Key: "booking.1", Payload: []byte("paid")},
	)
	if err != nil {
		log.Fatal(err)
	}

	got := make(chan string)
	go func() {
		_ = sub.Subscribe(ctx, s, func(ctx context.Context, m broker.Message) error {
			got <- m.Key + " " + string(m.Payload)
			return nil
		})
	}()
	fmt.Println(<-got)
	fmt.Println(<-got)
	// Output:
	// booking.1 created
	// booking.1 paid
}

// Replay a topic from a point in time, without a consumer group.
func ExampleAtTime() {
	// An in-process Kafka (kfake: one broker on a random port) so the example
	// runs anywhere; replace with your brokers' addresses, for example
	// brokers := []string{"kafka-1:9092", "kafka-2:9092"}.
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		log.Fatal(err)
	}
	defer cluster.Close()
	brokers := cluster.ListenAddrs()
	quiet := kafka.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil)))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	admin, err := kafka.NewAdmin(brokers, quiet)
	if err != nil {
		log.Fatal(err)
	}
	defer admin.Close()
	if err := admin.EnsureTopic(ctx, kafka.Topic{Name: "prices", Partitions: 1, Retention: 7 * 24 * time.Hour}); err != nil {
		log.Fatal(err)
	}
	pub, err := kafka.NewPublisher(brokers, quiet)
	if err != nil {
		log.Fatal(err)
	}
	defer pub.Close()
	monday := time.Date(2026, 11, 23, 0, 0, 0, 0, time.UTC)
	for i, price := range []string{"10", "11", "12"} {
		m := broker.Message{Key: "nevache", Payload: []byte(price), Time: monday.AddDate(0, 0, i)}
		if err := pub.Publish(ctx, "prices", m); err != nil {
			log.Fatal(err)
		}
	}

	reader, err := kafka.NewSubscriber(brokers, quiet, kafka.WithStartAt(kafka.AtTime(monday.AddDate(0, 0, 1))))
	if err != nil {
		log.Fatal(err)
	}
	defer reader.Close()
	got := make(chan broker.Message)
	go func() {
		_ = reader.Subscribe(ctx, broker.Subscription{Topic: "prices"}, func(ctx context.Context, m broker.Message) error {
			got <- m
			return nil
		})
	}()
	for range 2 {
		m := <-got
		fmt.Println(m.Time.Format(time.DateOnly), string(m.Payload))
	}
	// Output:
	// 2026-11-24 11
	// 2026-11-25 12
}

// pager is a kafka.PartitionHealthTracer that passes stuck and recovered
// partitions on (to a pager, here to the example).
type pager struct{ events chan string }

func (p pager) TracePartitionStuck(_ context.Context, d kafka.TracePartitionStuckData) {
	p.events <- fmt.Sprintf("stuck: %s/%d at offset %d, lag %d", d.Topic, d.Partition, d.Committed, d.Lag)
}

func (p pager) TracePartitionRecovered(_ context.Context, d kafka.TracePartitionRecoveredData) {
	p.events <- fmt.Sprintf("recovered: %s/%d at offset %d", d.Topic, d.Partition, d.Committed)
}

// Be told when a record blocks its partition: lag above zero and the
// committed offset unchanged for longer than WithStuckAfter.
func ExampleWithStuckAfter() {
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		log.Fatal(err)
	}
	defer cluster.Close()
	brokers := cluster.ListenAddrs()
	quiet := kafka.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil)))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	pub, err := kafka.NewPublisher(brokers, quiet, kafka.WithCreateTopics(kafka.Topic{Partitions: 1}))
	if err != nil {
		log.Fatal(err)
	}
	defer pub.Close()
	p := pager{events: make(chan string, 2)}
	sub, err := kafka.NewSubscriber(brokers, quiet, kafka.WithStuckAfter(100*time.Millisecond), kafka.WithTracer(p))
	if err != nil {
		log.Fatal(err)
	}
	defer sub.Close()
	if err := pub.Publish(ctx, "payments", broker.Message{Key: "payment.1", Payload: []byte("hangs")}); err != nil {
		log.Fatal(err)
	}

	release := make(chan struct{})
	go func() {
		_ = sub.Subscribe(ctx, broker.Subscription{Topic: "payments", Group: "ledger"}, func(ctx context.Context, m broker.Message) error {
			<-release // a handler that hangs, until the example lets it go
			return nil
		})
	}()
	fmt.Println(<-p.events)
	fmt.Println(sub.Partitions()[0].Stuck)
	close(release)
	fmt.Println(<-p.events)
	// Output:
	// stuck: payments/0 at offset 0, lag 1
	// true
	// recovered: payments/0 at offset 1
}
