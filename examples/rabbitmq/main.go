// Command rabbitmq publishes booking events to RabbitMQ with publisher
// confirms and handles them in a consumer group whose failing message is
// retried and then dead-lettered, all through the portable broker API.
//
// It needs RabbitMQ (AMQP_URL, default amqp://guest:guest@127.0.0.1:5672/) and
// deletes the exchanges and queues it declared at the end.
//
//	go run ./examples/rabbitmq
package main

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/go-integration/patterns/broker"
	"github.com/go-integration/patterns/broker/rabbitmq"
)

func main() {
	// Ctrl-C or SIGTERM cancels ctx, so run still cleans up after itself.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Stdout)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "rabbitmq:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, w io.Writer) (err error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	amqpURL := os.Getenv("AMQP_URL")
	if amqpURL == "" {
		amqpURL = "amqp://guest:guest@127.0.0.1:5672/"
	}
	pub, err := rabbitmq.NewPublisher(ctx, amqpURL, rabbitmq.WithConnectionName("example-bookings-api"))
	if err != nil {
		host := "the AMQP_URL host"
		if u, perr := url.Parse(amqpURL); perr == nil {
			host = u.Host // without the credentials
		}
		return fmt.Errorf("needs RabbitMQ at %s: start it with scripts/services (%w)", host, err)
	}
	defer pub.Close()
	sub, err := rabbitmq.NewSubscriber(ctx, amqpURL, rabbitmq.WithRetryBackoff(10*time.Millisecond, 200*time.Millisecond))
	if err != nil {
		return err
	}
	defer sub.Close()

	// A topic is a durable topic exchange; a group is a durable queue bound
	// with the subscription's patterns. MaxAttempts adds <topic>.dlq.
	topic := "example_bookings_" + strings.ToLower(rand.Text()[:8])
	billing := broker.Subscription{Topic: topic, Group: "billing", Keys: []string{"rentals.#"}, MaxAttempts: 3}
	dlq := broker.Subscription{Topic: billing.DeadLetterDestination(), Group: "billing"}
	if err := sub.Provision(ctx, billing); err != nil { // queues keep messages from now on
		return err
	}
	defer func() {
		sub.Close() // stop consuming first, or a subscriber would declare the queues again
		err = errors.Join(err, deleteTopology(pub, billing, dlq))
	}()

	err = pub.Publish(ctx, topic, // returns once RabbitMQ confirmed both
		broker.Message{Key: "rentals.france.nevache", Payload: []byte(`{"nights":3}`)},
		broker.Message{Key: "rentals.italy.cortina", Payload: []byte(`{"nights":-1}`)},
	)
	if err != nil {
		return fmt.Errorf("not confirmed, treat as unsent: %w", err)
	}
	fmt.Fprintf(w, "published 2 messages to exchange %s, confirmed: %d\n", topic, pub.Stats().Published)

	lines := make(chan string, 8)
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 2)
	go func() {
		done <- sub.Subscribe(runCtx, billing, func(ctx context.Context, m broker.Message) error {
			if m.Key == "rentals.italy.cortina" {
				lines <- fmt.Sprintf("billing: %s attempt %d failed", m.Key, m.Attempt)
				return errors.New("invalid booking: negative nights")
			}
			lines <- fmt.Sprintf("billing: %s %s handled", m.Key, m.Payload)
			return nil // ack
		})
	}()
	go func() {
		done <- sub.Subscribe(runCtx, dlq, func(ctx context.Context, m broker.Message) error {
			lines <- fmt.Sprintf("dead letter: %s from %s after %s attempts: %s", m.Key,
				m.Header[broker.HeaderOriginGroup], m.Header[broker.HeaderAttempts], m.Header[broker.HeaderError])
			return nil
		})
	}()
	for n := 0; n < 5; n++ { // handled, 3 failed attempts, the dead letter
		select {
		case l := <-lines:
			fmt.Fprintln(w, l)
		case err := <-done: // only a failure ends Subscribe early
			stop()
			return fmt.Errorf("subscribe ended early: %w", errors.Join(err, ctx.Err()))
		case <-ctx.Done():
			stop()
			return fmt.Errorf("waiting for deliveries: %w", ctx.Err())
		}
	}
	stop()
	for range 2 {
		if err := <-done; err != nil {
			return err
		}
	}
	st := sub.Stats()
	fmt.Fprintf(w, "subscriber: received %d, handled %d, retried %d, dead-lettered %d\n", st.Received, st.Handled, st.Retried, st.DeadLettered)
	return nil
}

// deleteTopology removes what the subscriptions declared: their exchanges
// and their queues. A service keeps them.
func deleteTopology(pub *rabbitmq.Publisher, subs ...broker.Subscription) error {
	conn := pub.Conn()
	if conn == nil {
		return errors.New("delete topology: no connection")
	}
	ch, err := conn.Channel()
	if err != nil {
		return err
	}
	defer ch.Close()
	for _, s := range subs {
		q := rabbitmq.DefaultQueueName(s.Topic, s.Group)
		if _, err := ch.QueueDelete(q, false, false, false); err != nil {
			return fmt.Errorf("delete queue %s: %w", q, err)
		}
		if err := ch.ExchangeDelete(s.Topic, false, false); err != nil {
			return fmt.Errorf("delete exchange %s: %w", s.Topic, err)
		}
	}
	return nil
}
