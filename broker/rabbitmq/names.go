package rabbitmq

import (
	"fmt"

	"github.com/go-integration/patterns/broker"
	"github.com/go-integration/patterns/internal/amqpname"
)

// Names are checked before anything is sent: a name AMQP cannot carry does
// not fail gently on the wire (amqp091-go closes the connection when a short
// string is over 255 bytes, RabbitMQ closes it on invalid UTF-8, and closes
// the channel when asked to declare an "amq." name), so retrying it would
// only reconnect again and again.

// validateTopic checks the names topic maps to (see route): the exchange it
// is published to, which the adapter declares, and in shared-exchange mode
// (WithExchange) the routing key the topic starts. Errors wrap sentinel:
// broker.ErrInvalidMessage for Publish, broker.ErrInvalidSubscription for
// Subscribe and Provision.
func validateTopic(cfg *config, topic string, sentinel error) error {
	if err := checkTopicNames(cfg, topic, ""); err != nil {
		return fmt.Errorf("%w: rabbitmq: %w", sentinel, err)
	}
	return nil
}

// checkTopicNames is validateTopic without the sentinel; role ("dead-letter ")
// prefixes what each error names.
func checkTopicNames(cfg *config, topic, role string) error {
	if topic == "" {
		return fmt.Errorf("empty %stopic", role)
	}
	r := route{cfg.exchange}
	if r.shared != "" {
		if err := amqpname.Check("shared exchange name (WithExchange)", r.shared, true); err != nil {
			return err
		}
		// the topic is the routing key of a keyless message; a key adds "."
		// and itself, and Publish checks each message's routing key.
		return amqpname.Check(role+"routing key", r.key(topic, ""), false)
	}
	return amqpname.Check(role+"exchange name", r.exchange(topic), true)
}

// validateSubscriptionNames checks every name planTopology(cfg, s) declares
// or binds, before anything is sent: the exchanges of the topic and of the
// dead-letter topic, the group's queue, the dead-letter queue and each
// binding key. Errors wrap broker.ErrInvalidSubscription and name what is
// wrong and where, for example `broker: invalid subscription: rabbitmq:
// queue name "orders:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"… is 300 bytes, AMQP
// allows 255`.
//
// A private subscription's queue (empty Group) is named by the server: only
// its exchanges, bindings and dead-letter queue are checked.
func validateSubscriptionNames(cfg *config, s broker.Subscription) error {
	if err := checkSubscriptionNames(cfg, s); err != nil {
		return fmt.Errorf("%w: rabbitmq: %w", broker.ErrInvalidSubscription, err)
	}
	return nil
}

func checkSubscriptionNames(cfg *config, s broker.Subscription) error {
	if err := checkTopicNames(cfg, s.Topic, ""); err != nil {
		return err
	}
	t := planTopology(cfg, s)
	if !t.private {
		if t.queue == "" {
			return fmt.Errorf("the queue name function (WithQueueName) returned an empty name for topic %s, group %s", amqpname.Quote(s.Topic), amqpname.Quote(s.Group))
		}
		if err := amqpname.Check("queue name", t.queue, true); err != nil {
			return err
		}
	}
	for _, b := range t.bindings {
		if err := amqpname.Check("binding key", b, false); err != nil {
			return err
		}
	}
	if t.dlTopic == "" {
		return nil
	}
	if err := checkTopicNames(cfg, t.dlTopic, "dead-letter "); err != nil {
		return err
	}
	if err := amqpname.Check("dead-letter binding key", t.dlBinding, false); err != nil {
		return err
	}
	if cfg.deadLetterQueue {
		if t.dlQueue == "" {
			return fmt.Errorf("the queue name function (WithQueueName) returned an empty name for dead-letter topic %s", amqpname.Quote(t.dlTopic))
		}
		if err := amqpname.Check("dead-letter queue name", t.dlQueue, true); err != nil {
			return err
		}
	}
	return nil
}
