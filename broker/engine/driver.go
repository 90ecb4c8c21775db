package engine

import (
	"context"

	"github.com/go-integration/patterns/broker"
)

// Driver is what an adapter implements so that the Engine can consume
// through it: open a receiver for a subscription and publish dead letters.
// A Driver does no dispatching, retrying or dead-letter bookkeeping of its
// own; it should not retry either (the Engine reopens a broken Receiver
// with jittered backoff).
type Driver interface {
	// Open declares what s needs on the broker (queue, bindings, group)
	// and starts receiving. Every message published after Open returned
	// must reach the receiver. A refusal that reopening cannot fix (a
	// name the broker rejects, a queue that exists with other arguments)
	// must wrap broker.ErrInvalidSubscription: the Engine then fails the
	// Subscribe call instead of reopening.
	Open(ctx context.Context, s broker.Subscription, c Control) (Receiver, error)
	// DeadLetter publishes m, already carrying the broker.Header*
	// dead-letter headers, to topic and returns once the broker confirmed
	// it. from is the delivery it came from, for native extras (RabbitMQ's
	// x-death, Kafka's partition and offset).
	DeadLetter(ctx context.Context, topic string, m broker.Message, from *Delivery) error
}

// Receiver is one open subscription on the broker.
type Receiver interface {
	// Receive waits until messages arrive, passes at most max of them to
	// deliver (which copies them and returns at once) and returns nil. It
	// returns ctx's error when ctx ends first, and any other error when the
	// receiver broke (lost connection, deleted queue): the Engine then
	// gives back what it holds, closes the receiver and opens a new one.
	Receive(ctx context.Context, max int, deliver func([]Delivery)) error
	// Ack settles d: handled, dead-lettered or dropped. It is called once
	// per delivery, from any goroutine.
	Ack(d *Delivery)
	// Release hands ds back to the broker unhandled, in the order they
	// were received, for this or another member of the group. The Engine
	// calls it only while it stops or revokes (see Control.Revoke).
	Release(ds []*Delivery)
	// Close stops receiving. Messages received but neither acked nor
	// released go back to the broker.
	Close() error
}

// Redecoder is implemented by receivers that can rebuild a delivery's
// message as the broker sent it; the Engine calls it before each retry, so
// that an attempt never sees what a failed one changed in the Header map.
// Without it the Engine copies the Header of the delivery it received.
type Redecoder interface {
	Redecode(d *Delivery) broker.Message
}

// Control is how a driver tells the Engine about changes it did not ask
// for.
type Control interface {
	// Revoke is for brokers that move messages between members on their
	// own (Kafka rebalances). The Engine handles every message it holds
	// for which match returns true (so the next owner does not handle them
	// again), except that one waiting for a retry, or failing meanwhile,
	// is released with its key's later messages; after the drain timeout
	// it cancels running handlers and releases the rest. Then it returns,
	// and only then may the driver give the partitions away. match must
	// answer the same for every message of one key.
	Revoke(match func(*Delivery) bool)
}

// Delivery is one received message.
type Delivery struct {
	// Msg is the message as it reaches the handler's first attempt; the
	// driver fills it, Topic and Key included. Msg.Attempt is the number
	// of failed attempts the broker itself recorded before this delivery
	// (zero for most); the Engine adds its own.
	Msg broker.Message
	// Tag and Ref are the driver's: a delivery tag, an offset, the
	// native delivery. The Engine never reads them.
	Tag uint64
	Ref any
	// Part groups deliveries whose acknowledgements the driver tracks
	// together (a Kafka partition); the Engine never reads it.
	Part int32
}
