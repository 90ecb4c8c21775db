package memory

import (
	"math/bits"
	"sort"
	"sync"

	"github.com/go-integration/patterns/broker"
)

// maxPriority is the highest priority level kept apart; higher values count as
// maxPriority, as RabbitMQ queues clamp to x-max-priority.
const maxPriority = 9

// envelope is one message waiting in, or taken from, a group's queue.
type envelope struct {
	msg broker.Message
	seq uint64 // arrival order in the group, to requeue in order
}

// blockSize is how many envelopes one block of a fifo holds.
const blockSize = 128

type block struct {
	items      [blockSize]envelope
	head, tail int
	next       *block
}

// fifo is a queue of fixed-size blocks: pushing never copies what is queued,
// however long the queue grows while nobody consumes.
type fifo struct {
	first, last *block
	n           int
	spare       *block // one emptied block kept for reuse
}

func (q *fifo) len() int { return q.n }

func (q *fifo) newBlock() *block {
	if b := q.spare; b != nil {
		q.spare = nil
		return b
	}
	return new(block)
}

func (q *fifo) push(e envelope) {
	if q.last == nil || q.last.tail == blockSize {
		b := q.newBlock()
		if q.last == nil {
			q.first = b
		} else {
			q.last.next = b
		}
		q.last = b
	}
	q.last.items[q.last.tail] = e
	q.last.tail++
	q.n++
}

func (q *fifo) pop() envelope {
	b := q.first
	e := b.items[b.head]
	b.items[b.head] = envelope{}
	b.head++
	q.n--
	if b.head == b.tail {
		q.first = b.next
		if q.first == nil {
			q.last = nil
		}
		*b = block{}
		q.spare = b
	}
	return e
}

// pushFront puts es (already in order) ahead of everything queued.
func (q *fifo) pushFront(es []envelope) {
	for i := len(es) - 1; i >= 0; i-- {
		if q.first == nil || q.first.head == 0 {
			b := q.newBlock()
			b.head, b.tail = blockSize, blockSize
			b.next = q.first
			q.first = b
			if q.last == nil {
				q.last = b
			}
		}
		q.first.head--
		q.first.items[q.first.head] = es[i]
		q.n++
	}
}

// group is a queue with its bindings: the named consumer group of a topic, or
// the private group of one Subscribe call. Members compete for its messages.
type group struct {
	topic, name string
	anonymous   bool

	mu       sync.Mutex
	matchAll bool
	patterns broker.Patterns
	levels   [maxPriority + 1]fifo
	nonEmpty uint16 // bit i set when levels[i] has messages
	size     int
	seq      uint64
	waiters  int
	signal   chan struct{} // closed and replaced when a message arrives for waiters
}

func newGroup(topic, name string, anonymous bool) *group {
	return &group{topic: topic, name: name, anonymous: anonymous, signal: make(chan struct{})}
}

// bind adds patterns to the group's bindings; no patterns binds every key.
func (g *group) bind(ps broker.Patterns) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(ps) == 0 {
		g.matchAll = true
		return
	}
	g.patterns = append(g.patterns, ps...)
}

func (g *group) matches(key string) bool {
	return g.matchAll || (len(g.patterns) > 0 && g.patterns.Match(key))
}

func level(p uint8) int {
	if p > maxPriority {
		return maxPriority
	}
	return int(p)
}

// offer queues m when the group's bindings match its key.
func (g *group) offer(m *broker.Message) {
	g.mu.Lock()
	if !g.matches(m.Key) {
		g.mu.Unlock()
		return
	}
	e := envelope{msg: *m, seq: g.seq}
	g.seq++
	// Every group gets its own copy, as from a real broker: handlers may keep or change it.
	e.msg.Payload = cloneBytes(m.Payload)
	e.msg.Header = cloneHeader(m.Header)
	l := level(m.Priority)
	g.levels[l].push(e)
	g.nonEmpty |= 1 << l
	g.size++
	g.wakeLocked()
	g.mu.Unlock()
}

func (g *group) wakeLocked() {
	if g.waiters > 0 {
		close(g.signal)
		g.signal = make(chan struct{})
		g.waiters = 0
	}
}

// take moves up to len(buf) messages, highest priority first, into buf. When
// the queue is empty it returns 0 and a channel closed on the next arrival.
func (g *group) take(buf []envelope) (int, <-chan struct{}) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.size == 0 {
		g.waiters++
		return 0, g.signal
	}
	n := 0
	for n < len(buf) && g.size > 0 {
		l := 15 - bits.LeadingZeros16(g.nonEmpty)
		buf[n] = g.levels[l].pop()
		n++
		g.size--
		if g.levels[l].len() == 0 {
			g.nonEmpty &^= 1 << l
		}
	}
	return n, nil
}

// requeue puts messages taken but not handled back at the front, in arrival order.
func (g *group) requeue(es []envelope) {
	if len(es) == 0 {
		return
	}
	sort.Slice(es, func(i, j int) bool { return es[i].seq < es[j].seq })
	g.mu.Lock()
	defer g.mu.Unlock()
	var byLevel [maxPriority + 1][]envelope
	for _, e := range es {
		l := level(e.msg.Priority)
		byLevel[l] = append(byLevel[l], e)
	}
	for l, part := range byLevel {
		if len(part) > 0 {
			g.levels[l].pushFront(part)
			g.nonEmpty |= 1 << l
			g.size += len(part)
		}
	}
	g.wakeLocked()
}

// pending reports how many messages wait in the group.
func (g *group) pending() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.size
}

func cloneBytes(b []byte) []byte {
	if b == nil {
		return nil
	}
	return append(make([]byte, 0, len(b)), b...)
}

// cloneHeader copies h; an empty h (such as the map a tracer that writes
// nothing was once given) is nil, so that it costs no allocation.
func cloneHeader(h map[string]string) map[string]string {
	if len(h) == 0 {
		return nil
	}
	c := make(map[string]string, len(h))
	for k, v := range h {
		c[k] = v
	}
	return c
}
