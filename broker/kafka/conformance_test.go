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
	brokertest.Run(t, brokertest.Harness{
		New: func(t *testing.T) (broker.Publisher, broker.Subscriber) {
			p, err := NewPublisher(brokers, quickPub(MaxMessageBytes(maxMessage))...)
			if err != nil {
				t.Fatal(err)
			}
			s, err := NewSubscriber(brokers, quick(MaxMessageBytes(maxMessage))...)
			if err != nil {
				t.Fatal(err)
			}
			return p, s
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
