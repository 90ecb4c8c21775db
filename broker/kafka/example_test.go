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
