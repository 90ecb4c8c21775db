// Package brokertest is the conformance suite every broker adapter passes.
//
// An adapter's test calls Run with a Harness that makes a fresh publisher and
// subscriber for each test and declares, through Features, what the adapter
// can promise. A feature switched off skips its tests; each switch in an
// adapter's test carries a comment saying why.
//
//	func TestConformance(t *testing.T) {
//		brokertest.Run(t, brokertest.Harness{
//			New: func(t *testing.T) (broker.Publisher, broker.Subscriber) {
//				b := memory.MustNew()
//				return b, b
//			},
//			Traced: func(t *testing.T, tracer any) (broker.Publisher, broker.Subscriber) {
//				b := memory.MustNew(memory.WithTracer(tracer))
//				return b, b
//			},
//			Stats: func(p broker.Publisher, _ broker.Subscriber) (broker.PublisherStats, broker.SubscriberStats) {
//				st := p.(*memory.Broker).Stats()
//				return st.Publisher, st.Subscriber
//			},
//			Features: brokertest.AllFeatures(),
//		})
//	}
package brokertest

import (
	"testing"

	"github.com/go-integration/patterns/broker"
)

// Harness tells Run how to reach the adapter under test.
type Harness struct {
	// New returns a publisher and a subscriber connected to the same broker.
	// They may be the same value. Run closes both when the test ends (Close
	// must be idempotent, so the harness may close them too).
	New func(t *testing.T) (broker.Publisher, broker.Subscriber)
	// CreateTopic, when set, is called once for every topic a test uses
	// (including dead-letter topics) before anything is published to it.
	CreateTopic func(t *testing.T, topic string)
	// InvalidTopics are topic names the adapter refuses beyond the rules
	// every adapter shares (broker.ValidateTopic): for example RabbitMQ
	// passes "amq.reserved" (the server reserves "amq." exchanges), Kafka
	// "bad topic!" (Kafka allows only [a-zA-Z0-9._-]). The InvalidNames test
	// checks that each is refused at once, before anything is sent, as a
	// Subscribe topic and dead-letter topic (an error wrapping
	// broker.ErrInvalidSubscription) and as a Publish destination
	// (broker.ErrInvalidMessage).
	InvalidTopics []string
	// Traced returns a publisher and a subscriber like New, with tracer
	// installed on both through the adapter's WithTracer option. The
	// Tracing and Stats tests need it (they are skipped without it): tracer
	// implements broker.PublishTracer, broker.ProcessTracer and
	// broker.DeadLetterTracer.
	Traced func(t *testing.T, tracer any) (broker.Publisher, broker.Subscriber)
	// Stats returns the counters every adapter keeps of a publisher and a
	// subscriber made by Traced (for an adapter whose Stats returns its
	// own struct, the broker.PublisherStats and broker.SubscriberStats it
	// embeds). The Stats test needs it.
	Stats func(p broker.Publisher, s broker.Subscriber) (broker.PublisherStats, broker.SubscriberStats)
	// Features declares what the adapter promises.
	Features Features
}

// Features switches groups of tests on. The zero value runs only the basics
// every adapter must pass: publish then receive with payload and headers
// intact, redelivery after a handler error, topic isolation, errors after
// Close, idempotent Close and clean cancellation.
type Features struct {
	// Persistent: messages a group has not yet handled survive its
	// subscribers going away and reach the next member.
	Persistent bool
	// ConsumerGroups: members of one group compete; every group gets every message.
	ConsumerGroups bool
	// KeyFilter: Subscription.Keys patterns filter by routing key.
	KeyFilter bool
	// OrderPerKey: with Concurrency > 1 and one subscriber, messages of one key
	// are handled in publish order.
	OrderPerKey bool
	// DeadLetter: MaxAttempts and DeadLetterTopic move failing messages to the
	// dead-letter topic with the broker.Header* origin headers; with
	// MaxAttempts alone they go to Topic+".dlq", where a subscription of the
	// same group finds them even if it starts after they were dead-lettered.
	DeadLetter bool
	// Priority: a queue delivers higher Message.Priority first.
	Priority bool
	// Log: a topic is a log (Kafka). A message published while no group
	// was bound to its topic reaches a group that starts later, and a
	// group's key bindings are those of its members present. Off (memory,
	// RabbitMQ): such a message is dropped, as by an exchange without
	// bindings, and a group's bindings outlive the members that made them.
	Log bool
	// MaxPayload is the largest payload the adapter must carry; 0 means 1 MiB.
	MaxPayload int
	// Messages is how many messages the load tests send; 0 means 5,000.
	Messages int
}

// AllFeatures returns every feature switched on.
func AllFeatures() Features {
	return Features{Persistent: true, ConsumerGroups: true, KeyFilter: true, OrderPerKey: true, DeadLetter: true, Priority: true}
}
