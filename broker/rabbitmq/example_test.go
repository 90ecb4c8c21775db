package rabbitmq_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"time"

	"github.com/go-integration/patterns/broker"
	"github.com/go-integration/patterns/broker/rabbitmq"
)

// Publish a booking event and handle it in the "billing" group, with
// dead-lettering after three attempts. (No Output: it needs a running RabbitMQ.)
func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	url := "amqp://guest:guest@127.0.0.1:5672/"

	pub, err := rabbitmq.NewPublisher(ctx, url, rabbitmq.WithConnectionName("bookings-api"))
	if err != nil {
		log.Fatal(err)
	}
	defer pub.Close()
	sub, err := rabbitmq.NewSubscriber(ctx, url, rabbitmq.WithRetryBackoff(100*time.Millisecond, 5*time.Second))
	if err != nil {
		log.Fatal(err)
	}
	defer sub.Close()

	s := broker.Subscription{Topic: "bookings", Group: "billing", Keys: []string{"rentals.france.*"}, Concurrency: 4, MaxAttempts: 3}
	if err := sub.Provision(ctx, s); err != nil { // the queue keeps messages from now on
		log.Fatal(err)
	}
	if err := pub.Publish(ctx, "bookings", broker.Message{Key: "rentals.france.nevache", Payload: []byte(`{"nights":3}`)}); err != nil {
		log.Fatal(err) // not confirmed: treat as unsent
	}
	done := make(chan struct{})
	go func() {
		_ = sub.Subscribe(ctx, s, func(ctx context.Context, m broker.Message) error {
			fmt.Printf("%s %s attempt %d\n", m.Key, m.Payload, m.Attempt)
			close(done)
			return nil // ack
		})
	}()
	<-done
}

// Publish with the mandatory flag so that a message no queue receives is an
// error instead of a silent drop.
func ExampleWithMandatory() {
	ctx := context.Background()
	pub, err := rabbitmq.NewPublisher(ctx, "amqp://guest:guest@127.0.0.1:5672/", rabbitmq.WithMandatory())
	if err != nil {
		log.Fatal(err)
	}
	defer pub.Close()
	err = pub.Publish(ctx, "audit", broker.Message{Key: "nobody.listens"})
	fmt.Println(errors.Is(err, broker.ErrUnroutable))
}

// Publish one event per request without waiting for its confirm: the
// outcome arrives on a callback, at most WithMaxInFlight per channel are
// unconfirmed, and Flush (or Close) waits for the rest. (No Output: it
// needs a running RabbitMQ.)
func ExamplePublisher_PublishAsync() {
	ctx := context.Background()
	pub, err := rabbitmq.NewPublisher(ctx, "amqp://guest:guest@127.0.0.1:5672/", rabbitmq.WithMaxInFlight(2048))
	if err != nil {
		log.Fatal(err)
	}
	defer pub.Close()
	for i := range 1000 {
		m := broker.Message{Key: fmt.Sprintf("booking.%d", i%16), Payload: []byte(`{"nights":3}`)}
		pub.PublishAsync(ctx, "bookings", m, func(m broker.Message, err error) {
			if err != nil {
				log.Printf("booking event %s not published: %v", m.ID, err)
			}
		})
	}
	if err := pub.Flush(ctx); err != nil {
		log.Fatal(err)
	}
}
