package middleware_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"time"

	"github.com/go-integration/patterns/broker"
	"github.com/go-integration/patterns/broker/memory"
	"github.com/go-integration/patterns/broker/middleware"
)

func ExampleRetry() {
	retry, err := middleware.Retry(middleware.WithMaxAttempts(3), middleware.WithBackoff(time.Millisecond, 10*time.Millisecond))
	if err != nil {
		log.Fatal(err)
	}
	timeout, err := middleware.Timeout(time.Second)
	if err != nil {
		log.Fatal(err)
	}
	calls := 0
	h := broker.Chain(
		middleware.Recover(),
		retry,
		timeout,
	)(func(ctx context.Context, m broker.Message) error {
		calls++
		if calls < 3 {
			return errors.New("partner API unavailable")
		}
		return nil
	})
	err = h(context.Background(), broker.Message{ID: "b-1"})
	fmt.Println(err, calls)
	// Output:
	// <nil> 3
}

// A message delivered twice is handled once. Publishers retry and relays
// republish after a lost confirmation, so the same message ID can arrive
// again; Dedup acknowledges the duplicate without calling the handler.
func ExampleDedup() {
	b := memory.MustNew()
	defer b.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s := broker.Subscription{Topic: "bookings", Group: "billing"}
	if err := b.Provision(ctx, s); err != nil {
		log.Fatal(err)
	}

	handled := make(chan string)
	dedup, err := middleware.Dedup(middleware.NewMemoryDedupStore(), middleware.WithHandledFor(24*time.Hour))
	if err != nil {
		log.Fatal(err)
	}
	h := dedup(func(ctx context.Context, m broker.Message) error {
		handled <- m.ID + " " + string(m.Payload)
		return nil
	})
	stopped := make(chan error)
	go func() { stopped <- b.Subscribe(ctx, s, h) }()

	// The same message ID twice, then another message with the same key: the
	// key's order means the duplicate was seen when b-2 arrives.
	created := broker.Message{ID: "b-1", Key: "booking.1", Payload: []byte("created")}
	paid := broker.Message{ID: "b-2", Key: "booking.1", Payload: []byte("paid")}
	if err := b.Publish(ctx, "bookings", created, created, paid); err != nil {
		log.Fatal(err)
	}
	fmt.Println(<-handled)
	fmt.Println(<-handled)
	cancel()
	<-stopped
	// Output:
	// b-1 created
	// b-2 paid
}

// A message that keeps failing goes to a dead-letter topic through a
// publisher, with headers saying where and why it failed, and is acknowledged
// on its own topic. DeadLetter sits outside Retry, so only a message that
// used up its retries is dead-lettered.
func ExampleDeadLetter() {
	b := memory.MustNew() // the publisher for dead letters may be any broker.Publisher
	defer b.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s := broker.Subscription{Topic: "bookings", Group: "billing"}
	dlq := broker.Subscription{Topic: "bookings.dlq", Group: "ops"}
	for _, sub := range []broker.Subscription{s, dlq} {
		if err := b.Provision(ctx, sub); err != nil {
			log.Fatal(err)
		}
	}

	retry, err := middleware.Retry(middleware.WithMaxAttempts(3), middleware.WithBackoff(time.Millisecond, 10*time.Millisecond))
	if err != nil {
		log.Fatal(err)
	}
	deadLetter, err := middleware.DeadLetter(b, "bookings.dlq", "billing")
	if err != nil {
		log.Fatal(err)
	}
	h := broker.Chain(
		deadLetter,
		retry,
	)(func(ctx context.Context, m broker.Message) error {
		return errors.New("invoice service rejected the booking")
	})
	dead := make(chan broker.Message)
	stopped := make(chan error, 2)
	go func() { stopped <- b.Subscribe(ctx, s, h) }()
	go func() {
		stopped <- b.Subscribe(ctx, dlq, func(ctx context.Context, m broker.Message) error {
			dead <- m
			return nil
		})
	}()

	err = b.Publish(ctx, "bookings", broker.Message{ID: "b-1", Key: "booking.1", Payload: []byte("created")})
	if err != nil {
		log.Fatal(err)
	}
	m := <-dead
	fmt.Println(m.Topic, m.ID, string(m.Payload))
	for _, k := range []string{broker.HeaderOriginTopic, broker.HeaderOriginGroup, broker.HeaderAttempts, broker.HeaderError} {
		fmt.Printf("%s: %s\n", k, m.Header[k])
	}
	cancel()
	<-stopped
	<-stopped
	fmt.Println("left on bookings:", b.Pending("bookings", "billing"))
	// Output:
	// bookings.dlq b-1 created
	// x-origin-topic: bookings
	// x-origin-group: billing
	// x-attempts: 3
	// x-error: after 3 attempts: invoice service rejected the booking
	// left on bookings: 0
}

// printDedup is a DedupTracer: it prints each Dedup decision.
type printDedup struct{}

func (printDedup) TraceDedup(_ context.Context, d middleware.TraceDedupData) {
	fmt.Println("dedup", d.MessageID, d.Result)
}

// A tracer sees every Dedup decision: a first delivery is claimed, a
// duplicate skipped. OpenTelemetry adapters implement the same interface.
func ExampleWithTracer() {
	dedup, err := middleware.Dedup(middleware.NewMemoryDedupStore(), middleware.WithTracer(printDedup{}))
	if err != nil {
		log.Fatal(err)
	}
	h := dedup(func(ctx context.Context, m broker.Message) error { return nil })
	for range 2 {
		if err := h(context.Background(), broker.Message{ID: "b-1", Topic: "bookings"}); err != nil {
			log.Fatal(err)
		}
	}
	// Output:
	// dedup b-1 claimed
	// dedup b-1 skipped
}
