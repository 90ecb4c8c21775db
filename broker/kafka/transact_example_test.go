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

// Read orders, write one invoice per order, exactly once: the invoices and
// the orders' offsets commit in one Kafka transaction, and the Subscriber
// downstream reads committed records only. The example runs an in-process
// kfake cluster; use your brokers' addresses instead.
func ExampleTransformer() {
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "orders", "invoices"))
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
	if err := pub.Publish(ctx, "orders", broker.Message{ID: "order-1", Key: "order.1", Payload: []byte("2 books")}); err != nil {
		log.Fatal(err)
	}

	// An output's ID is derived from its input's: "order-1.0".
	// The transactional ID is stable per instance: "invoicer-0", "invoicer-1"...
	tr, err := kafka.NewTransformer(brokers, "invoicer-0", quiet)
	if err != nil {
		log.Fatal(err)
	}
	defer tr.Close()
	go func() {
		_ = tr.Run(ctx, broker.Subscription{Topic: "orders", Group: "invoicer"},
			func(ctx context.Context, m broker.Message, emit kafka.Emit) error {
				emit("invoices", broker.Message{Key: m.Key, Payload: []byte("invoice for " + string(m.Payload))})
				return nil
			})
	}()

	sub, err := kafka.NewSubscriber(brokers, quiet)
	if err != nil {
		log.Fatal(err)
	}
	defer sub.Close()
	got := make(chan string, 1)
	go func() {
		_ = sub.Subscribe(ctx, broker.Subscription{Topic: "invoices", Group: "mailer"}, func(_ context.Context, m broker.Message) error {
			got <- m.ID + " " + m.Key + ": " + string(m.Payload)
			return nil
		})
	}()
	fmt.Println(<-got)
	// Output: order-1.0 order.1: invoice for 2 books
}
