package rabbitmq_test

import (
	"context"
	"testing"
	"time"

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

func newPublisher(t testing.TB, url string, opts ...rabbitmq.Option) *rabbitmq.Publisher {
	t.Helper()
	p, err := rabbitmq.NewPublisher(ctxT(t, 30*time.Second), url, opts...)
	if err != nil {
		t.Fatalf("NewPublisher: %v", err)
	}
	t.Cleanup(func() { _ = p.Close() })
	return p
}

func newSubscriber(t testing.TB, url string, opts ...rabbitmq.Option) *rabbitmq.Subscriber {
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
		Features: brokertest.Features{
			Persistent:     true, // durable queues per group, persistent messages
			ConsumerGroups: true, // a group is one queue its members share
			KeyFilter:      true, // topic-exchange bindings
			OrderPerKey:    true, // handlers are picked by key
			DeadLetter:     true, // republished to the dead-letter exchange with headers
			Priority:       true, // x-max-priority classic queues (WithMaxPriority)
		},
	})
}
