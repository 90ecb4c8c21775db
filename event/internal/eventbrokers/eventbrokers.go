// Package eventbrokers is the broker set-up shared by the event packages'
// tests: the memory broker, RabbitMQ and Kafka (kfake) with short retry
// backoffs, a helper that subscribes until the test ends, and a collector of
// dead letters.
package eventbrokers

import (
	"context"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/go-integration/patterns/broker"
	"github.com/go-integration/patterns/broker/kafka"
	"github.com/go-integration/patterns/broker/memory"
	"github.com/go-integration/patterns/broker/rabbitmq"
	"github.com/go-integration/patterns/internal/testenv"
	"github.com/go-integration/patterns/internal/testenv/kafkaenv"
)

// Pair is one broker under test.
type Pair struct {
	Pub broker.Publisher
	Sub broker.Subscriber
}

// Case names a broker and makes a Pair for one test, closed when it ends.
type Case struct {
	Name string
	Make func(t *testing.T) Pair
}

// Cases are the brokers every cross-broker test runs on; the first is the
// in-memory one.
var Cases = []Case{
	{"memory", func(t *testing.T) Pair {
		b, err := memory.New(memory.WithLogger(quiet()), memory.WithRetryBackoff(time.Millisecond, 5*time.Millisecond))
		must(t, err)
		t.Cleanup(func() { _ = b.Close() })
		return Pair{b, b}
	}},
	{"rabbitmq", func(t *testing.T) Pair {
		_, url := testenv.VHost(t)
		ctx := context.Background()
		pub, err := rabbitmq.NewPublisher(ctx, url, rabbitmq.WithLogger(quiet()))
		must(t, err)
		t.Cleanup(func() { _ = pub.Close() })
		sub, err := rabbitmq.NewSubscriber(ctx, url, rabbitmq.WithLogger(quiet()),
			rabbitmq.WithRetryBackoff(time.Millisecond, 5*time.Millisecond), rabbitmq.WithDrainTimeout(5*time.Second))
		must(t, err)
		t.Cleanup(func() { _ = sub.Close() })
		return Pair{pub, sub}
	}},
	{"kafka", func(t *testing.T) Pair {
		bs := kafkaenv.Brokers(t)
		pub, err := kafka.NewPublisher(bs, kafka.WithLogger(quiet()))
		must(t, err)
		t.Cleanup(func() { _ = pub.Close() })
		// An external cluster rebalances slower than kfake.
		session := 2 * time.Second
		if kafkaenv.External() {
			session = 6 * time.Second
		}
		sub, err := kafka.NewSubscriber(bs, kafka.WithLogger(quiet()),
			kafka.WithGroupTimeouts(session, 10*time.Second, 100*time.Millisecond),
			kafka.WithRetryBackoff(time.Millisecond, 5*time.Millisecond),
			kafka.WithCommitInterval(200*time.Millisecond), kafka.WithDrainTimeout(5*time.Second))
		must(t, err)
		t.Cleanup(func() { _ = sub.Close() })
		return Pair{pub, sub}
	}},
}

// Run subscribes h on p for s until the test ends; it provisions s first, so
// everything published after Run returns reaches it, and waits for Ready.
func Run(t *testing.T, p Pair, s broker.Subscription, h broker.Handler) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	must(t, p.Sub.(broker.Provisioner).Provision(ctx, s))
	ready := make(chan struct{})
	s.Ready = func() { close(ready) }
	done := make(chan error, 1)
	go func() { done <- p.Sub.Subscribe(ctx, s, h) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Subscribe %s: %v", s.Topic, err)
		}
	})
	select {
	case <-ready:
	case err := <-done:
		done <- err // for the cleanup's receive
		t.Fatalf("Subscribe %s ended: %v", s.Topic, err)
	case <-time.After(30 * time.Second):
		t.Fatalf("Subscribe %s: not ready", s.Topic)
	}
}

// Collector gathers messages (dead letters) by ID.
type Collector struct {
	mu  sync.Mutex
	got map[string]broker.Message
}

// NewCollector returns an empty Collector.
func NewCollector() *Collector { return &Collector{got: map[string]broker.Message{}} }

// Handle is a broker.Handler that keeps m, the last delivery of an ID winning.
func (c *Collector) Handle(_ context.Context, m broker.Message) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.got[m.ID] = m
	return nil
}

// Len is the number of distinct IDs collected.
func (c *Collector) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.got)
}

// Get returns the message collected with id.
func (c *Collector) Get(id string) (broker.Message, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	m, ok := c.got[id]
	return m, ok
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
