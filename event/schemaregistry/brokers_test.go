package schemaregistry_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/go-integration/patterns/broker"
	"github.com/go-integration/patterns/broker/kafka"
	"github.com/go-integration/patterns/broker/memory"
	"github.com/go-integration/patterns/broker/rabbitmq"
	"github.com/go-integration/patterns/internal/testenv"
	"github.com/go-integration/patterns/internal/testenv/kafkaenv"
)

// TestMain fails the package when a test leaves goroutines behind.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

type pair struct {
	pub broker.Publisher
	sub broker.Subscriber
}

var brokers = []struct {
	name string
	make func(t *testing.T) pair
}{
	{"memory", func(t *testing.T) pair {
		b, err := memory.New(memory.WithLogger(quiet()), memory.WithRetryBackoff(time.Millisecond, 5*time.Millisecond))
		must(t, err)
		t.Cleanup(func() { _ = b.Close() })
		return pair{b, b}
	}},
	{"rabbitmq", func(t *testing.T) pair {
		_, url := testenv.VHost(t)
		ctx := context.Background()
		pub, err := rabbitmq.NewPublisher(ctx, url, rabbitmq.WithLogger(quiet()))
		must(t, err)
		t.Cleanup(func() { _ = pub.Close() })
		sub, err := rabbitmq.NewSubscriber(ctx, url, rabbitmq.WithLogger(quiet()),
			rabbitmq.WithRetryBackoff(time.Millisecond, 5*time.Millisecond), rabbitmq.WithDrainTimeout(5*time.Second))
		must(t, err)
		t.Cleanup(func() { _ = sub.Close() })
		return pair{pub, sub}
	}},
	{"kafka", func(t *testing.T) pair {
		bs := kafkaenv.Brokers(t)
		pub, err := kafka.NewPublisher(bs, kafka.WithLogger(quiet()))
		must(t, err)
		t.Cleanup(func() { _ = pub.Close() })
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
		return pair{pub, sub}
	}},
}

// run subscribes h for s until the test ends, provisioned first so that
// everything published after run returns reaches it.
func run(t *testing.T, p pair, s broker.Subscription, h broker.Handler) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	must(t, p.sub.(broker.Provisioner).Provision(ctx, s))
	ready := make(chan struct{})
	s.Ready = func() { close(ready) }
	done := make(chan error, 1)
	go func() { done <- p.sub.Subscribe(ctx, s, h) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Subscribe %s: %v", s.Topic, err)
		}
	})
	select {
	case <-ready:
	case err := <-done:
		done <- err
		t.Fatalf("Subscribe %s ended: %v", s.Topic, err)
	case <-time.After(30 * time.Second):
		t.Fatalf("Subscribe %s: not ready", s.Topic)
	}
}

// collector gathers messages (dead letters) by ID.
type collector struct {
	mu  sync.Mutex
	got map[string]broker.Message
}

func newCollector() *collector { return &collector{got: map[string]broker.Message{}} }

func (c *collector) handle(_ context.Context, m broker.Message) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.got[m.ID] = m
	return nil
}

func (c *collector) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.got)
}

func (c *collector) get(id string) (broker.Message, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	m, ok := c.got[id]
	return m, ok
}
