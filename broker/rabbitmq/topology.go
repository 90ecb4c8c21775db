package rabbitmq

import (
	"errors"
	"fmt"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/go-integration/patterns/broker"
)

// topology is what one subscription needs on the broker: its exchange, its
// queue and bindings, and the dead-letter exchange and queue.
type topology struct {
	topic    string
	exchange string
	queue    string // "" for a private, server-named queue
	private  bool
	quorum   bool
	args     amqp.Table
	bindings []string

	dlTopic    string // dead-letter topic, "" for none
	dlExchange string
	dlQueue    string // "" when no dead-letter queue is declared
	dlArgs     amqp.Table
	dlBinding  string
}

func planTopology(cfg *config, s broker.Subscription) topology {
	r := route{cfg.exchange}
	t := topology{
		topic:    s.Topic,
		exchange: r.exchange(s.Topic),
		private:  s.Group == "",
		args:     amqp.Table{},
	}
	if !t.private {
		t.queue = cfg.queueName(s.Topic, s.Group)
		t.quorum = cfg.queueType == Quorum
	}
	keys := s.Keys
	if len(keys) == 0 {
		keys = []string{"#"}
	}
	seen := map[string]bool{}
	for _, k := range keys {
		b := r.key(s.Topic, k)
		if !seen[b] {
			seen[b] = true
			t.bindings = append(t.bindings, b)
		}
	}
	if t.quorum {
		t.args[amqp.QueueTypeArg] = amqp.QueueTypeQuorum
	}
	if cfg.maxPriority > 0 {
		t.args["x-max-priority"] = int64(cfg.maxPriority)
	}
	if cfg.messageTTL > 0 {
		t.args[amqp.QueueMessageTTLArg] = cfg.messageTTL.Milliseconds()
	}
	if cfg.maxLength > 0 {
		t.args[amqp.QueueMaxLenArg] = int64(cfg.maxLength)
	}
	if cfg.singleActive && !t.private {
		t.args[amqp.SingleActiveConsumerArg] = true
	}
	if dl := s.DeadLetterDestination(); dl != "" {
		t.dlTopic = dl
		t.dlExchange = r.exchange(dl)
		t.dlBinding = r.key(dl, "#")
		if cfg.exchange == "" {
			// native dead-lettering (TTL, max-length) keeps the routing key.
			t.args["x-dead-letter-exchange"] = t.dlExchange
		}
		if cfg.deadLetterQueue {
			g := s.Group
			if g == "" {
				g = "dlq"
			}
			// declared as a subscription to the dead-letter topic by this
			// subscriber would declare it, so that one does not conflict.
			dt := planTopology(cfg, broker.Subscription{Topic: dl, Group: g})
			t.dlQueue, t.dlArgs = dt.queue, dt.args
		}
	}
	for k, v := range cfg.queueArgs {
		t.args[k] = v
	}
	return t
}

// declare creates everything on ch (the subscription's own queue only when
// withQueue) and returns the queue's name (server-named for private subscriptions). Errors are wrapped with what was being declared;
// PRECONDITION_FAILED (a queue or exchange that exists with other arguments)
// and ACCESS_REFUSED also wrap broker.ErrInvalidSubscription.
func (t *topology) declare(ch *amqp.Channel, withQueue bool) (string, error) {
	if err := ch.ExchangeDeclare(t.exchange, amqp.ExchangeTopic, true, false, false, false, nil); err != nil {
		return "", declareError("exchange", t.exchange, err)
	}
	if t.dlExchange != "" {
		if t.dlExchange != t.exchange {
			if err := ch.ExchangeDeclare(t.dlExchange, amqp.ExchangeTopic, true, false, false, false, nil); err != nil {
				return "", declareError("dead-letter exchange", t.dlExchange, err)
			}
		}
		if t.dlQueue != "" {
			if _, err := ch.QueueDeclare(t.dlQueue, true, false, false, false, t.dlArgs); err != nil {
				return "", declareError("dead-letter queue", t.dlQueue, err)
			}
			if err := ch.QueueBind(t.dlQueue, t.dlBinding, t.dlExchange, false, nil); err != nil {
				return "", declareError("dead-letter binding of queue", t.dlQueue, err)
			}
		}
	}
	if !withQueue {
		return "", nil
	}
	q, err := ch.QueueDeclare(t.queue, !t.private, t.private, t.private, false, t.args)
	if err != nil {
		name := t.queue
		if t.private {
			name = "(server-named)"
		}
		return "", declareError("queue", name, err)
	}
	for _, b := range t.bindings {
		if err := ch.QueueBind(q.Name, b, t.exchange, false, nil); err != nil {
			return "", declareError(fmt.Sprintf("binding %q of queue", b), q.Name, err)
		}
	}
	return q.Name, nil
}

func declareError(what, name string, err error) error {
	var ae *amqp.Error
	if errors.As(err, &ae) {
		switch ae.Code {
		case amqp.PreconditionFailed:
			return fmt.Errorf("%w: rabbitmq: declare %s %q: it exists with other arguments or type (delete it or use the same options): %w", broker.ErrInvalidSubscription, what, name, err)
		case amqp.AccessRefused:
			return fmt.Errorf("%w: rabbitmq: declare %s %q: access refused: %w", broker.ErrInvalidSubscription, what, name, err)
		case amqp.ResourceLocked:
			return fmt.Errorf("%w: rabbitmq: declare %s %q: locked by another connection (exclusive): %w", broker.ErrInvalidSubscription, what, name, err)
		}
	}
	return fmt.Errorf("rabbitmq: declare %s %q: %w", what, name, err)
}
