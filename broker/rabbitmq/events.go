package rabbitmq

import (
	"sync/atomic"
)

// EventKind says what an Event reports.
type EventKind int

// Event kinds.
const (
	EventConnected         EventKind = iota + 1 // first connection made
	EventDisconnected                           // connection lost (Err says why)
	EventReconnected                            // connection made again after a loss
	EventPublished                              // a message was sent (not yet confirmed)
	EventConfirmed                              // the broker confirmed a message
	EventRepublished                            // a message whose confirm was lost or refused was sent again
	EventNacked                                 // the broker refused a message
	EventReturned                               // a mandatory message was returned unroutable
	EventDelivered                              // a handler ran on a message (one per attempt, reported when it returned)
	EventRetried                                // a failed message was handed back for another attempt
	EventDeadLettered                           // a message was moved to the dead-letter topic
	EventDropped                                // a permanently failing message had no dead-letter topic
	EventConsumerCancelled                      // the server cancelled a consumer (queue deleted)
	EventBlocked                                // the broker blocked publishing (resource alarm)
	EventUnblocked                              // the broker lifted the block
)

var eventNames = map[EventKind]string{
	EventConnected: "connected", EventDisconnected: "disconnected", EventReconnected: "reconnected",
	EventPublished: "published", EventConfirmed: "confirmed", EventRepublished: "republished",
	EventNacked: "nacked", EventReturned: "returned", EventDelivered: "delivered",
	EventRetried: "retried", EventDeadLettered: "dead-lettered", EventDropped: "dropped",
	EventConsumerCancelled: "consumer-cancelled", EventBlocked: "blocked", EventUnblocked: "unblocked",
}

// String returns the kind's name, such as "confirmed".
func (k EventKind) String() string {
	if s, ok := eventNames[k]; ok {
		return s
	}
	return "unknown"
}

// Event is what a hook (WithHook) receives. Fields that do not apply are zero.
type Event struct {
	Kind      EventKind
	Topic     string
	Queue     string
	MessageID string
	Attempt   int
	Err       error
}

// Stats are counters since the Publisher or Subscriber was created.
type Stats struct {
	Connects, Reconnects, Disconnects         uint64
	Published, Confirmed, Republished         uint64
	Nacked, Returned                          uint64
	Delivered, Retried, DeadLettered, Dropped uint64
	ConsumerCancels                           uint64
}

type observer struct {
	hook     func(Event)
	counters [EventUnblocked + 1]atomic.Uint64
}

func (o *observer) emit(e Event) {
	o.counters[e.Kind].Add(1)
	if o.hook != nil {
		o.hook(e)
	}
}

func (o *observer) stats() Stats {
	c := func(k EventKind) uint64 { return o.counters[k].Load() }
	return Stats{
		Connects: c(EventConnected), Reconnects: c(EventReconnected), Disconnects: c(EventDisconnected),
		Published: c(EventPublished), Confirmed: c(EventConfirmed), Republished: c(EventRepublished),
		Nacked: c(EventNacked), Returned: c(EventReturned),
		Delivered: c(EventDelivered), Retried: c(EventRetried), DeadLettered: c(EventDeadLettered),
		Dropped: c(EventDropped), ConsumerCancels: c(EventConsumerCancelled),
	}
}
