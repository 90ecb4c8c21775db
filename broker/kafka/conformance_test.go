package kafka

import (
	"context"
	"testing"
	"time"

	"github.com/go-integration/patterns/broker"
	"github.com/go-integration/patterns/broker/brokertest"
	"github.com/go-integration/patterns/internal/testenv/kafkaenv"
)

// maxMessage lets the conformance suite's 1 MiB payload through: Kafka's
// default max.message.bytes (1 MiB + 12 bytes) counts the batch and record
// overhead too, so topics and producer get 2 MiB.
const maxMessage = 2 << 20

func TestConformance(t *testing.T) {
	brokers := kafkaenv.Brokers(t)
	admin, err := NewAdmin(brokers, WithLogger(testLogger()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { admin.Close() })
	newPubSub := func(t *testing.T, opts ...PubSubOption) (broker.Publisher, broker.Subscriber) {
		popts := []PublisherOption{WithMaxMessageBytes(maxMessage)}
		sopts := []SubscriberOption{WithMaxMessageBytes(maxMessage)}
		for _, o := range opts {
			popts, sopts = append(popts, o), append(sopts, o)
		}
		p, err := NewPublisher(brokers, quickPub(popts...)...)
		if err != nil {
			t.Fatal(err)
		}
		s, err := NewSubscriber(brokers, quick(sopts...)...)
		if err != nil {
			t.Fatal(err)
		}
		return p, s
	}
	brokertest.Run(t, brokertest.Harness{
		New: func(t *testing.T) (broker.Publisher, broker.Subscriber) { return newPubSub(t) },
		Traced: func(t *testing.T, tracer any) (broker.Publisher, broker.Subscriber) {
			return newPubSub(t, WithTracer(tracer))
		},
		Stats: func(p broker.Publisher, s broker.Subscriber) (broker.PublisherStats, broker.SubscriberStats) {
			return p.(*Publisher).Stats(), s.(*Subscriber).Stats().SubscriberStats
		},
		CreateTopic: func(t *testing.T, topic string) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			err := admin.EnsureTopic(ctx, Topic{Name: topic, Partitions: 4, Config: map[string]string{"max.message.bytes": "2097152"}})
			if err != nil {
				t.Fatal(err)
			}
		},
		Features: brokertest.Features{
			Persistent:     true,    // records stay in the log; groups commit only what was handled
			ConsumerGroups: true,    // Subscription.Group is the Kafka consumer group
			KeyFilter:      true,    // on the client, with the group's Keys union; skipped records are committed
			OrderPerKey:    true,    // the engine runs a key's messages one at a time, in offset order
			DeadLetter:     true,    // published to the dead-letter topic with origin partition and offset
			Priority:       false,   // Kafka has no priorities: a partition is a log read in order
			Log:            true,    // a topic is a log; a group's Keys union is its present members'
			MaxPayload:     1 << 20, // with max.message.bytes raised to 2 MiB, see maxMessage
		},
	})
}
