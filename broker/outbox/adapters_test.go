package outbox_test

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/go-integration/patterns/broker"
	"github.com/go-integration/patterns/broker/kafka"
	"github.com/go-integration/patterns/broker/rabbitmq"
	"github.com/go-integration/patterns/internal/testenv"
	"github.com/go-integration/patterns/internal/testenv/kafkaenv"
)

// The relay publishes through the real adapters as it does through the memory
// broker: every committed message arrives, in order per key.

func TestRelayToRabbitMQ(t *testing.T) {
	t.Parallel()
	_, url := testenv.VHost(t)
	ctx := context.Background()
	pub, err := rabbitmq.NewPublisher(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pub.Close() })
	sub, err := rabbitmq.NewSubscriber(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Close() })
	relayThrough(t, pub, sub)
}

func TestRelayToKafka(t *testing.T) {
	t.Parallel()
	brokers := kafkaenv.Brokers(t)
	pub, err := kafka.NewPublisher(brokers)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pub.Close() })
	sub, err := kafka.NewSubscriber(brokers,
		kafka.WithGroupTimeouts(2*time.Second, 10*time.Second, 100*time.Millisecond),
		kafka.WithCommitInterval(200*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Close() })
	relayThrough(t, pub, sub)
}

// relayThrough writes 10 keys × 50 messages to the outbox, relays them
// through pub and checks what sub receives.
func relayThrough(t *testing.T, pub broker.Publisher, sub broker.Subscriber) {
	t.Helper()
	e := newEnv(t)
	ctx := context.Background()
	s := broker.Subscription{Topic: e.topic, Group: "g", Concurrency: 4}
	if err := sub.(broker.Provisioner).Provision(ctx, s); err != nil {
		t.Fatal(err)
	}
	const keys, perKey = 10, 50
	var mu sync.Mutex
	next := map[string]int{}
	seen := map[string]bool{}
	var disorder []string
	done := make(chan struct{})
	sctx, cancel := context.WithCancel(ctx)
	subDone := make(chan error, 1)
	go func() {
		subDone <- sub.Subscribe(sctx, s, func(_ context.Context, m broker.Message) error {
			n, _ := strconv.Atoi(string(m.Payload))
			mu.Lock()
			defer mu.Unlock()
			if seen[m.ID] {
				return nil // a redelivery: at-least-once
			}
			seen[m.ID] = true
			if n != next[m.Key] {
				disorder = append(disorder, fmt.Sprintf("%s: got %d, want %d", m.Key, n, next[m.Key]))
			}
			next[m.Key] = n + 1
			if len(seen) == keys*perKey {
				close(done)
			}
			return nil
		})
	}()
	t.Cleanup(func() { cancel(); <-subDone })
	run(t, e.db, pub)
	for i := range perKey {
		batch := make([]broker.Message, 0, keys)
		for k := range keys {
			batch = append(batch, msg(fmt.Sprintf("rentals.k%d", k), i))
		}
		e.add(t, batch...)
	}
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		mu.Lock()
		defer mu.Unlock()
		t.Fatalf("received %d of %d messages", len(seen), keys*perKey)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(disorder) > 0 {
		t.Fatalf("order per key broken: %v", disorder)
	}
}
