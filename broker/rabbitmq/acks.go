package rabbitmq

import (
	"log/slog"
	"slices"
	"sync"

	amqp "github.com/rabbitmq/amqp091-go"
)

// acker sends a channel's acknowledgements. Handlers finish in about the
// order their messages arrived, so instead of one basic.ack frame (and one
// write) per message it acks the longest done prefix of the outstanding
// delivery tags with one multiple-ack, as RabbitMQ recommends; a done tag
// behind one still running is acked on its own at once, so a slow or
// retrying message never holds the others' prefetch slots.
type acker struct {
	ch  *amqp.Channel
	log *slog.Logger

	send sync.Mutex // held while frames go out: a nack is on the wire before a multiple-ack passes its tag

	mu      sync.Mutex
	pending []tagState // received, neither acked nor nacked on the wire, in tag order
	wake    chan struct{}
	stop    chan struct{}
	stopped chan struct{}
}

type tagState struct {
	tag  uint64
	done bool
}

func newAcker(ch *amqp.Channel, log *slog.Logger) *acker {
	a := &acker{ch: ch, log: log, wake: make(chan struct{}, 1), stop: make(chan struct{}), stopped: make(chan struct{})}
	go a.loop()
	return a
}

// track registers a received tag; tags arrive in increasing order.
func (a *acker) track(tag uint64) {
	a.mu.Lock()
	a.pending = append(a.pending, tagState{tag: tag})
	a.mu.Unlock()
}

func (a *acker) find(tag uint64) (int, bool) {
	return slices.BinarySearchFunc(a.pending, tag, func(s tagState, t uint64) int {
		switch {
		case s.tag < t:
			return -1
		case s.tag > t:
			return 1
		}
		return 0
	})
}

// ack marks tag done; the loop sends it.
func (a *acker) ack(tag uint64) {
	a.mu.Lock()
	if i, ok := a.find(tag); ok {
		a.pending[i].done = true
	}
	a.mu.Unlock()
	select {
	case a.wake <- struct{}{}:
	default:
	}
}

// nack hands tags back to the queue at once.
func (a *acker) nack(tags []uint64) {
	a.send.Lock()
	defer a.send.Unlock()
	for _, t := range tags {
		_ = a.ch.Nack(t, false, true)
	}
	a.mu.Lock()
	a.pending = slices.DeleteFunc(a.pending, func(s tagState) bool { return slices.Contains(tags, s.tag) })
	a.mu.Unlock()
}

func (a *acker) loop() {
	defer close(a.stopped)
	for {
		select {
		case <-a.wake:
			a.flush()
		case <-a.stop:
			a.flush()
			return
		}
	}
}

// flush sends what is done: one multiple-ack for the done prefix, single
// acks for done tags behind an outstanding one.
func (a *acker) flush() {
	a.send.Lock()
	defer a.send.Unlock()
	a.mu.Lock()
	i := 0
	for i < len(a.pending) && a.pending[i].done {
		i++
	}
	var last uint64
	if i > 0 {
		last = a.pending[i-1].tag
	}
	var singles []uint64
	kept := a.pending[:0]
	for _, s := range a.pending[i:] {
		if s.done {
			singles = append(singles, s.tag)
		} else {
			kept = append(kept, s)
		}
	}
	a.pending = kept
	a.mu.Unlock()
	var err error
	if last != 0 {
		err = a.ch.Ack(last, true)
	}
	for _, t := range singles {
		if e := a.ch.Ack(t, false); e != nil {
			err = e
		}
	}
	if err != nil {
		a.log.Debug("rabbitmq: ack failed; the messages will be redelivered", "err", err)
	}
}

// close sends what is done and stops the loop.
func (a *acker) close() {
	select {
	case <-a.stop:
	default:
		close(a.stop)
	}
	<-a.stopped
}
