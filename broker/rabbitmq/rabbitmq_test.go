package rabbitmq_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"go.uber.org/goleak"

	"github.com/go-integration/patterns/broker"
	"github.com/go-integration/patterns/broker/brokertest"
	"github.com/go-integration/patterns/broker/rabbitmq"
	"github.com/go-integration/patterns/internal/testenv"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func ctxT(t testing.TB, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func newPublisher(t testing.TB, url string, opts ...rabbitmq.PublisherOption) *rabbitmq.Publisher {
	t.Helper()
	p, err := rabbitmq.NewPublisher(ctxT(t, 30*time.Second), url, opts...)
	if err != nil {
		t.Fatalf("NewPublisher: %v", err)
	}
	t.Cleanup(func() { _ = p.Close() })
	return p
}

func newSubscriber(t testing.TB, url string, opts ...rabbitmq.SubscriberOption) *rabbitmq.Subscriber {
	t.Helper()
	s, err := rabbitmq.NewSubscriber(ctxT(t, 30*time.Second), url, opts...)
	if err != nil {
		t.Fatalf("NewSubscriber: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func TestConformance(t *testing.T) {
	t.Parallel()
	_, url := testenv.VHost(t)
	brokertest.Run(t, brokertest.Harness{
		New: func(t *testing.T) (broker.Publisher, broker.Subscriber) {
			// Priority needs x-max-priority on the queue; classic queues support it.
			return newPublisher(t, url), newSubscriber(t, url, rabbitmq.WithMaxPriority(9))
		},
		Traced: func(t *testing.T, tracer any) (broker.Publisher, broker.Subscriber) {
			return newPublisher(t, url, rabbitmq.WithTracer(tracer)), newSubscriber(t, url, rabbitmq.WithTracer(tracer))
		},
		Stats: stats,
		Features: brokertest.Features{
			Persistent:     true, // durable queues per group, persistent messages
			ConsumerGroups: true, // a group is one queue its members share
			KeyFilter:      true, // topic-exchange bindings
			OrderPerKey:    true, // handlers are picked by key
			DeadLetter:     true, // republished to the dead-letter exchange with headers
			Priority:       true, // x-max-priority classic queues (WithMaxPriority)
		},
		InvalidTopics: []string{"amq.reserved"}, // RabbitMQ refuses to declare amq.* exchanges
	})
}

// stats is the conformance suite's Harness.Stats.
func stats(p broker.Publisher, s broker.Subscriber) (broker.PublisherStats, broker.SubscriberStats) {
	return p.(*rabbitmq.Publisher).Stats().PublisherStats, s.(*rabbitmq.Subscriber).Stats().SubscriberStats
}

// TestConformanceQuorum runs the suite on quorum queues: order per key under
// retries and exact attempts must not depend on the queue type.
func TestConformanceQuorum(t *testing.T) {
	t.Parallel()
	_, url := testenv.VHost(t)
	brokertest.Run(t, brokertest.Harness{
		New: func(t *testing.T) (broker.Publisher, broker.Subscriber) {
			return newPublisher(t, url), newSubscriber(t, url, rabbitmq.WithQueueType(rabbitmq.Quorum))
		},
		Traced: func(t *testing.T, tracer any) (broker.Publisher, broker.Subscriber) {
			return newPublisher(t, url, rabbitmq.WithTracer(tracer)), newSubscriber(t, url, rabbitmq.WithTracer(tracer), rabbitmq.WithQueueType(rabbitmq.Quorum))
		},
		Stats: stats,
		Features: brokertest.Features{
			Persistent: true, ConsumerGroups: true, KeyFilter: true, OrderPerKey: true, DeadLetter: true,
			Priority: false, // quorum queues have no priorities
		},
		InvalidTopics: []string{"amq.reserved"},
	})
}

// collector records deliveries by message ID.
type collector struct {
	mu    sync.Mutex
	seen  map[string]int
	msgs  map[string]broker.Message
	total int
	ch    chan struct{}
}

func newCollector() *collector {
	return &collector{seen: map[string]int{}, msgs: map[string]broker.Message{}, ch: make(chan struct{}, 1)}
}

func (c *collector) handle(_ context.Context, m broker.Message) error {
	c.mu.Lock()
	c.seen[m.ID]++
	c.total++
	if _, ok := c.msgs[m.ID]; !ok {
		c.msgs[m.ID] = m
	}
	c.mu.Unlock()
	select {
	case c.ch <- struct{}{}:
	default:
	}
	return nil
}

func (c *collector) get(id string) (broker.Message, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	m, ok := c.msgs[id]
	return m, ok
}

func (c *collector) unique() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.seen)
}

func (c *collector) duplicates() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.total - len(c.seen)
}

// waitFor waits until every id arrived, failing t after d.
func (c *collector) waitFor(t testing.TB, d time.Duration, ids ...string) {
	t.Helper()
	deadline := time.After(d)
	for {
		c.mu.Lock()
		missing := 0
		first := ""
		for _, id := range ids {
			if c.seen[id] == 0 {
				if missing == 0 {
					first = id
				}
				missing++
			}
		}
		c.mu.Unlock()
		if missing == 0 {
			return
		}
		select {
		case <-c.ch:
		case <-time.After(50 * time.Millisecond):
		case <-deadline:
			t.Fatalf("after %v, %d of %d messages missing (first: %s)", d, missing, len(ids), first)
		}
	}
}

// run starts Subscribe in the background; the returned function cancels it
// and returns what Subscribe returned.
func run(t testing.TB, s *rabbitmq.Subscriber, sub broker.Subscription, h broker.Handler) func() error {
	t.Helper()
	if sub.Group != "" {
		if err := s.Provision(ctxT(t, 30*time.Second), sub); err != nil {
			t.Fatalf("Provision: %v", err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Subscribe(ctx, sub, h) }()
	var once sync.Once
	var err error
	stop := func() error {
		once.Do(func() {
			cancel()
			select {
			case err = <-done:
			case <-time.After(30 * time.Second):
				err = errors.New("Subscribe did not return within 30s of its context's end")
			}
		})
		return err
	}
	t.Cleanup(func() {
		if err := stop(); err != nil {
			t.Errorf("Subscribe: %v", err)
		}
	})
	return stop
}

// admin opens a raw amqp091 channel on url for setting up faults.
func admin(t testing.TB, url string) *amqp.Channel {
	t.Helper()
	conn, err := amqp.Dial(url)
	if err != nil {
		t.Fatalf("admin dial: %v", err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	ch, err := conn.Channel()
	if err != nil {
		t.Fatalf("admin channel: %v", err)
	}
	return ch
}

func ids(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s%d", prefix, i)
	}
	return out
}

// TestInvalidOptions: every bad option value fails the constructor with
// ErrInvalidOption naming it, before any connection is made (the URL points
// nowhere).
func TestInvalidOptions(t *testing.T) {
	t.Parallel()
	const nowhere = "amqp://guest:guest@127.0.0.1:1/"
	ctx := ctxT(t, 10*time.Second)
	pubs := map[string]rabbitmq.PublisherOption{
		"WithLogger":           rabbitmq.WithLogger(nil),
		"WithChannels":         rabbitmq.WithChannels(0),
		"WithMaxMessageSize":   rabbitmq.WithMaxMessageSize(-1),
		"WithDialTimeout":      rabbitmq.WithDialTimeout(0),
		"WithReconnectBackoff": rabbitmq.WithReconnectBackoff(time.Second, time.Millisecond),
		"WithTracer":           rabbitmq.WithTracer(struct{ Name string }{"not a tracer"}),
	}
	for name, o := range pubs {
		if _, err := rabbitmq.NewPublisher(ctx, nowhere, o); !errors.Is(err, rabbitmq.ErrInvalidOption) || !strings.Contains(err.Error(), name) {
			t.Errorf("NewPublisher with a bad %s: %v, want ErrInvalidOption naming it", name, err)
		}
	}
	subs := map[string]rabbitmq.SubscriberOption{
		"WithDrainTimeout": rabbitmq.WithDrainTimeout(-time.Second),
		"WithRetryBackoff": rabbitmq.WithRetryBackoff(0, time.Second),
		"WithMessageTTL":   rabbitmq.WithMessageTTL(-time.Second),
		"WithMaxLength":    rabbitmq.WithMaxLength(-1),
		"WithQueueType":    rabbitmq.WithQueueType("lazy"),
		"WithQueueName":    rabbitmq.WithQueueName(nil),
		"WithTracer":       rabbitmq.WithTracer(nil),
	}
	for name, o := range subs {
		if _, err := rabbitmq.NewSubscriber(ctx, nowhere, o); !errors.Is(err, rabbitmq.ErrInvalidOption) || !strings.Contains(err.Error(), name) {
			t.Errorf("NewSubscriber with a bad %s: %v, want ErrInvalidOption naming it", name, err)
		}
	}
	if _, err := rabbitmq.NewSubscriber(ctx, nowhere, rabbitmq.WithQueueType(rabbitmq.Quorum), rabbitmq.WithMaxPriority(5)); !errors.Is(err, rabbitmq.ErrInvalidOption) ||
		!strings.Contains(err.Error(), "WithQueueType(Quorum)") || !strings.Contains(err.Error(), "WithMaxPriority") {
		t.Errorf("quorum with priorities: %v, want ErrInvalidOption naming both", err)
	}
}

// TestOptionsAreTypedPerSide: a subscriber-only option is not a
// PublisherOption (so passing it to NewPublisher does not compile), and
// the reverse; shared options are both.
func TestOptionsAreTypedPerSide(t *testing.T) {
	pubT := reflect.TypeFor[rabbitmq.PublisherOption]()
	subT := reflect.TypeFor[rabbitmq.SubscriberOption]()
	for name, o := range map[string]any{
		"WithRetryBackoff": rabbitmq.WithRetryBackoff(time.Millisecond, time.Second),
		"WithQueueType":    rabbitmq.WithQueueType(rabbitmq.Quorum), "WithMaxPriority": rabbitmq.WithMaxPriority(1),
	} {
		if reflect.TypeOf(o).Implements(pubT) {
			t.Errorf("%s is a PublisherOption", name)
		}
	}
	for name, o := range map[string]any{"WithChannels": rabbitmq.WithChannels(2), "WithMandatory": rabbitmq.WithMandatory(), "WithTransient": rabbitmq.WithTransient()} {
		if reflect.TypeOf(o).Implements(subT) {
			t.Errorf("%s is a SubscriberOption", name)
		}
	}
	for name, o := range map[string]any{"WithLogger": rabbitmq.WithLogger(slog.Default()), "WithExchange": rabbitmq.WithExchange("x"), "WithDrainTimeout": rabbitmq.WithDrainTimeout(time.Second)} {
		if !reflect.TypeOf(o).Implements(pubT) || !reflect.TypeOf(o).Implements(subT) {
			t.Errorf("%s is not an option of both sides", name)
		}
	}
}
