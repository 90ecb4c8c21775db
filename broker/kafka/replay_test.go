package kafka

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/go-integration/patterns/broker"
	"github.com/go-integration/patterns/internal/testenv"
)

// timed publishes n messages with timestamps base+i ms in one call: with a
// 50 ms linger each partition gets them as one record batch, so a cut time
// falls inside a batch.
func timed(t *testing.T, e *env, topic string, base time.Time, n int) {
	t.Helper()
	p := e.publisher(WithLinger(50 * time.Millisecond))
	msgs := make([]broker.Message, n)
	for i := range msgs {
		msgs[i] = broker.Message{ID: strconv.Itoa(i), Key: fmt.Sprint("k", i%7), Payload: []byte("x"), Time: base.Add(time.Duration(i) * time.Millisecond)}
	}
	if err := p.Publish(ctxT(t, 10*time.Second), topic, msgs...); err != nil {
		t.Fatal(err)
	}
}

// collectIDs subscribes and gathers message IDs as ints.
type ids struct {
	mu  sync.Mutex
	got map[int]int
}

func (c *ids) handler(_ context.Context, m broker.Message) error {
	i, err := strconv.Atoi(m.ID)
	if err != nil {
		return nil
	}
	c.mu.Lock()
	c.got[i]++
	c.mu.Unlock()
	return nil
}

func (c *ids) count() int { c.mu.Lock(); defer c.mu.Unlock(); return len(c.got) }

// exactly checks that the IDs received are exactly from..to-1. Records of a
// partition arrive in offset order and earlier records precede later ones,
// so once every wanted record arrived, an unwanted earlier one would have too.
func (c *ids) exactly(t *testing.T, from, to int) {
	t.Helper()
	testenv.Eventually(t, 20*time.Second, fmt.Sprintf("records %d..%d", from, to-1), func() bool { return c.count() >= to-from })
	c.mu.Lock()
	defer c.mu.Unlock()
	for i := range c.got {
		if i < from || i >= to {
			t.Errorf("received record %d, outside %d..%d", i, from, to-1)
		}
	}
	if len(c.got) != to-from {
		t.Errorf("received %d distinct records, want %d", len(c.got), to-from)
	}
}

// Replay from a timestamp returns exactly the records at or after it.
//
// The check is exact, also when the time falls inside a record batch: kfake
// answers ListOffsets for a timestamp (02_list_offsets.go, offsetForTimestamp)
// by scanning the records of the first batch whose max timestamp reaches it
// and returning the first record at or after the time, as Kafka does; the
// broker then serves the whole batch from its start and franz-go drops the
// records below the requested offset. So no earlier record is delivered.
func TestReplayFromTimestamp(t *testing.T) {
	e := newEnv(t)
	topic := e.topic(3)
	base := time.UnixMilli(1_750_000_000_000)
	const n, cut = 300, 137
	timed(t, e, topic, base, n)

	r := e.subscriber(WithStartAt(AtTime(base.Add(cut * time.Millisecond))))
	c := &ids{got: map[int]int{}}
	subscribe(t, r, broker.Subscription{Topic: topic}, c.handler)
	c.exactly(t, cut, n)

	// A time between two records' milliseconds is rounded down to its millisecond.
	r2 := e.subscriber(WithStartAt(AtTime(base.Add(cut*time.Millisecond + 400*time.Microsecond))))
	c2 := &ids{got: map[int]int{}}
	subscribe(t, r2, broker.Subscription{Topic: topic}, c2.handler)
	c2.exactly(t, cut, n)

	// A time after every record starts at the end: nothing arrives, new records do.
	r3 := e.subscriber(WithStartAt(AtTime(base.Add(time.Hour))))
	c3 := &ids{got: map[int]int{}}
	subscribe(t, r3, broker.Subscription{Topic: topic}, c3.handler)
	onlyRun(t, r3)
	p := e.publisher()
	if err := p.Publish(ctxT(t, 10*time.Second), topic, broker.Message{ID: "1000", Payload: []byte("late")}); err != nil {
		t.Fatal(err)
	}
	c3.exactly(t, 1000, 1001)
}

// A group's committed offsets move back to a timestamp with
// Admin.ResetOffsets, and its next subscriber replays from there.
func TestResetGroupToTimestamp(t *testing.T) {
	e := newEnv(t)
	topic := e.topic(3)
	base := time.UnixMilli(1_760_000_000_000)
	const n, cut = 200, 55
	timed(t, e, topic, base, n)
	sub := broker.Subscription{Topic: topic, Group: "replay", Concurrency: 3}
	s := e.subscriber()
	c := &ids{got: map[int]int{}}
	stop := subscribe(t, s, sub, c.handler)
	c.exactly(t, 0, n)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if err := e.admin.ResetOffsets(ctxT(t, 10*time.Second), "replay", topic, AtTime(base.Add(cut*time.Millisecond))); err != nil {
		t.Fatal(err)
	}
	c2 := &ids{got: map[int]int{}}
	subscribe(t, e.subscriber(), sub, c2.handler)
	c2.exactly(t, cut, n)
}

// A reader without a group sees only what is published after it starts by
// default; WithStartAt(Earliest()) reads the whole topic; AtOffsets starts at
// given offsets.
func TestReaderWithoutGroup(t *testing.T) {
	e := newEnv(t)
	topic := e.topic(1)
	p := e.publisher()
	pub := func(from, to int) {
		t.Helper()
		var msgs []broker.Message
		for i := from; i < to; i++ {
			msgs = append(msgs, broker.Message{ID: strconv.Itoa(i), Payload: []byte("x")})
		}
		if err := p.Publish(ctxT(t, 10*time.Second), topic, msgs...); err != nil {
			t.Fatal(err)
		}
	}
	pub(0, 10)
	latest := e.subscriber()
	cl := &ids{got: map[int]int{}}
	subscribe(t, latest, broker.Subscription{Topic: topic, Concurrency: 2}, cl.handler)
	onlyRun(t, latest) // started: its start offsets are resolved
	pub(10, 20)
	cl.exactly(t, 10, 20)

	whole := e.subscriber(WithStartAt(Earliest()))
	cw := &ids{got: map[int]int{}}
	subscribe(t, whole, broker.Subscription{Topic: topic}, cw.handler)
	cw.exactly(t, 0, 20)

	at := e.subscriber(WithStartAt(AtOffsets(map[int32]int64{0: 15})))
	ca := &ids{got: map[int]int{}}
	subscribe(t, at, broker.Subscription{Topic: topic}, ca.handler)
	ca.exactly(t, 15, 20)
}

// With WithStartAt(Latest()), Provision pins the group's start at the current
// end: older records are not delivered, records published after Provision are.
func TestProvisionPinsLatest(t *testing.T) {
	e := newEnv(t)
	topic := e.topic(2)
	timed(t, e, topic, time.UnixMilli(1_770_000_000_000), 50)
	s := e.subscriber(WithStartAt(Latest()))
	sub := broker.Subscription{Topic: topic, Group: "late"}
	if err := s.Provision(ctxT(t, 10*time.Second), sub); err != nil {
		t.Fatal(err)
	}
	p := e.publisher()
	for i := 50; i < 60; i++ {
		if err := p.Publish(ctxT(t, 10*time.Second), topic, broker.Message{ID: strconv.Itoa(i), Key: fmt.Sprint(i), Payload: []byte("x")}); err != nil {
			t.Fatal(err)
		}
	}
	c := &ids{got: map[int]int{}}
	subscribe(t, s, sub, c.handler)
	c.exactly(t, 50, 60)
}

// WithStartAt(AtOffsets) for a new group: Subscribe pins the offsets before
// joining, so the group starts exactly there; a group with commits ignores it.
func TestGroupStartsAtOffsets(t *testing.T) {
	e := newEnv(t)
	topic := e.topic(1)
	timed(t, e, topic, time.UnixMilli(1_780_000_000_000), 30)
	s := e.subscriber(WithStartAt(AtOffsets(map[int32]int64{0: 12})))
	sub := broker.Subscription{Topic: topic, Group: "from12"}
	c := &ids{got: map[int]int{}}
	stop := subscribe(t, s, sub, c.handler)
	c.exactly(t, 12, 30)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	lag, err := e.admin.Lag(ctxT(t, 10*time.Second), "from12", topic)
	if err != nil || lag[0] != 0 {
		t.Fatalf("lag %v, %v after handling", lag, err)
	}
	// Committed offsets win over StartAt on the next run: nothing is replayed.
	p := e.publisher()
	if err := p.Publish(ctxT(t, 10*time.Second), topic, broker.Message{ID: "30"}); err != nil {
		t.Fatal(err)
	}
	c2 := &ids{got: map[int]int{}}
	subscribe(t, e.subscriber(WithStartAt(AtOffsets(map[int32]int64{0: 0}))), sub, c2.handler)
	c2.exactly(t, 30, 31)
}
