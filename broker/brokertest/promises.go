package brokertest

// Tests of what the shared consumer engine (broker/engine) promises on every
// adapter: readiness, retries in place within a key's order, the concurrency
// bound, attempts counted exactly, names refused up front, panics as errors.

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-integration/patterns/broker"
)

// call is one handler call, for tests that check the exact sequence.
type call struct {
	id      string
	attempt int
}

// calls records handler calls in the order they started.
type calls struct {
	mu   sync.Mutex
	list []call
}

func (c *calls) add(m broker.Message) {
	c.mu.Lock()
	c.list = append(c.list, call{m.ID, m.Attempt})
	c.mu.Unlock()
}

func (c *calls) get() []call {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.list)
}

// A private subscription (no Group) receives every message published once
// Ready was called, without any wait in between.
func (s *suite) testReadyPrivate(t *testing.T) {
	p, sub := s.new(t)
	topic := s.topic(t, "")
	c := newCollector()
	subscribe(t, sub, broker.Subscription{Topic: topic, Concurrency: 4}, c.handler)
	const n, batch = 2000, 500
	for i := 0; i < n; i += batch {
		msgs := make([]broker.Message, batch)
		for j := range msgs {
			msgs[j] = broker.Message{ID: fmt.Sprint("m", i+j), Key: fmt.Sprint("k", (i+j)%16), Payload: []byte("x")}
		}
		publish(t, p, topic, msgs...)
	}
	c.waitUnique(t, n)
}

// A failed message is retried in place: later messages of its key wait for
// its success, messages of other keys do not.
func (s *suite) testOrderPerKeyUnderRetries(t *testing.T) {
	for _, conc := range []int{1, 4} {
		t.Run(fmt.Sprint("Concurrency", conc), func(t *testing.T) { s.retryKeepsOrder(t, conc) })
	}
	t.Run("OtherKeysNotBlocked", s.retryBlocksOnlyItsKey)
}

func (s *suite) retryKeepsOrder(t *testing.T, concurrency int) {
	p, sub := s.new(t)
	topic := s.topic(t, "")
	var seen calls
	c := newCollector()
	h := func(ctx context.Context, m broker.Message) error {
		seen.add(m)
		if m.ID == "1" && m.Attempt == 1 {
			return errors.New("first attempt of 1 fails")
		}
		c.add(m)
		return nil
	}
	subscribe(t, sub, broker.Subscription{Topic: topic, Group: "g", Concurrency: concurrency}, h)
	publish(t, p, topic,
		broker.Message{ID: "1", Key: "k", Payload: []byte("1")},
		broker.Message{ID: "2", Key: "k", Payload: []byte("2")},
		broker.Message{ID: "3", Key: "k", Payload: []byte("3")})
	c.waitUnique(t, 3)
	c.quiet(t, 3, 200*time.Millisecond)
	want := []call{{"1", 1}, {"1", 2}, {"2", 1}, {"3", 1}}
	if got := seen.get(); !slices.Equal(got, want) {
		t.Fatalf("handler calls (id, attempt) %v, want %v", got, want)
	}
}

func (s *suite) retryBlocksOnlyItsKey(t *testing.T) {
	p, sub := s.new(t)
	topic := s.topic(t, "")
	const others = 5
	var seen calls // calls for key k
	kc, oc := newCollector(), newCollector()
	othersDone := make(chan struct{})
	abort := make(chan struct{})
	var othersOnce, abortOnce sync.Once
	h := func(ctx context.Context, m broker.Message) error {
		if m.Key == "o" {
			oc.add(m)
			if oc.unique() == others {
				othersOnce.Do(func() { close(othersDone) })
			}
			return nil
		}
		seen.add(m)
		if m.ID == "k1" {
			if m.Attempt <= 3 {
				return fmt.Errorf("attempt %d of k1 fails", m.Attempt)
			}
			// k1 succeeds only once every message of key o was handled:
			// they must not wait behind k1's retries.
			select {
			case <-othersDone:
			case <-abort:
			case <-time.After(waitFor):
			}
		}
		kc.add(m)
		return nil
	}
	subscribe(t, sub, broker.Subscription{Topic: topic, Group: "g", Concurrency: 4}, h)
	t.Cleanup(func() { abortOnce.Do(func() { close(abort) }) }) // before subscribe's cleanup
	var msgs []broker.Message
	for i := 1; i <= 5; i++ {
		msgs = append(msgs,
			broker.Message{ID: fmt.Sprint("k", i), Key: "k", Payload: []byte("k")},
			broker.Message{ID: fmt.Sprint("o", i), Key: "o", Payload: []byte("o")})
	}
	publish(t, p, topic, msgs...)
	select {
	case <-othersDone:
	case <-time.After(waitFor):
		abortOnce.Do(func() { close(abort) })
		t.Fatalf("%d of %d messages of key o handled while k1 of key k was retrying: another key's retries blocked them", oc.unique(), others)
	}
	kc.waitUnique(t, 5)
	kc.quiet(t, 5, 200*time.Millisecond)
	want := []call{{"k1", 1}, {"k1", 2}, {"k1", 3}, {"k1", 4}, {"k2", 1}, {"k3", 1}, {"k4", 1}, {"k5", 1}}
	if got := seen.get(); !slices.Equal(got, want) {
		t.Fatalf("handler calls (id, attempt) for key k %v, want %v", got, want)
	}
}

// Concurrency handlers run at once over distinct keys, never more; a topic
// of several partitions (Kafka) must not cap it at one handler per partition.
func (s *suite) testConcurrencyReached(t *testing.T) {
	p, sub := s.new(t)
	topic := s.topic(t, "")
	const concurrency, keys, n = 8, 32, 64
	var running, peak atomic.Int32
	full := make(chan struct{})
	abort := make(chan struct{})
	var fullOnce, abortOnce sync.Once
	c := newCollector()
	h := func(ctx context.Context, m broker.Message) error {
		r := running.Add(1)
		for {
			cur := peak.Load()
			if r <= cur || peak.CompareAndSwap(cur, r) {
				break
			}
		}
		if r >= concurrency {
			fullOnce.Do(func() { close(full) })
		}
		select {
		case <-full:
		case <-abort:
		case <-time.After(waitFor):
		}
		running.Add(-1)
		c.add(m)
		return nil
	}
	subscribe(t, sub, broker.Subscription{Topic: topic, Group: "g", Concurrency: concurrency}, h)
	t.Cleanup(func() { abortOnce.Do(func() { close(abort) }) }) // before subscribe's cleanup
	msgs := make([]broker.Message, n)
	for i := range msgs {
		msgs[i] = broker.Message{ID: fmt.Sprint("m", i), Key: fmt.Sprint("k", i%keys), Payload: []byte("x")}
	}
	publish(t, p, topic, msgs...)
	select {
	case <-full:
	case <-time.After(waitFor):
		abortOnce.Do(func() { close(abort) })
		t.Fatalf("at most %d handlers ran at once over %d keys, want Concurrency = %d", peak.Load(), keys, concurrency)
	}
	c.waitUnique(t, n)
	if got := peak.Load(); got != concurrency {
		t.Fatalf("%d handlers ran at once, want at most Concurrency = %d", got, concurrency)
	}
}

// Members of one group with different Keys: the group's bindings are the
// union of its members' patterns, and the broker may hand any message bound
// to the group to any member (its queue or partitions are shared, whatever
// each member asked for). So a member may receive keys outside its own
// patterns, but no key matching some member's pattern is lost, and a key
// matching none is not delivered.
func (s *suite) testKeysWithinGroup(t *testing.T) {
	p, subA := s.new(t)
	_, subB := s.new(t)
	topic := s.topic(t, "")
	c := newCollector()
	var byA, byB atomic.Int32
	member := func(n *atomic.Int32) broker.Handler {
		return func(ctx context.Context, m broker.Message) error {
			n.Add(1)
			c.add(m)
			return nil
		}
	}
	subscribe(t, subA, broker.Subscription{Topic: topic, Group: "g", Keys: []string{"a.*"}}, member(&byA))
	subscribe(t, subB, broker.Subscription{Topic: topic, Group: "g", Keys: []string{"b.*"}}, member(&byB))
	var msgs []broker.Message
	for i := range 10 {
		for _, k := range []string{fmt.Sprint("a.", i), fmt.Sprint("b.", i)} {
			msgs = append(msgs, broker.Message{ID: k, Key: k, Payload: []byte(k)})
		}
		if i == 5 {
			msgs = append(msgs, broker.Message{ID: "c.0", Key: "c.0", Payload: []byte("no member binds it")})
		}
	}
	publish(t, p, topic, msgs...)
	c.waitUnique(t, 20)
	c.quiet(t, 20, 200*time.Millisecond)
	if _, ok := c.byID()["c.0"]; ok {
		t.Fatal("key c.0, which no member's pattern matches, was delivered")
	}
	t.Logf("the group handled all 20 keys: %d calls by member a.*, %d by member b.*", byA.Load(), byB.Load())
}

// Messages a closing subscriber held but never started go back to the group
// without counting an attempt: the next member handles each at Attempt 1.
func (s *suite) testAttemptExactAcrossClose(t *testing.T) {
	p, sub := s.new(t)
	topic := s.topic(t, "")
	sn := broker.Subscription{Topic: topic, Group: "g", Concurrency: 1}
	first := make(chan string, 1)
	release := make(chan struct{})
	var firstOnce, releaseOnce sync.Once
	var mu sync.Mutex
	var handled []call
	h := func(ctx context.Context, m broker.Message) error {
		mu.Lock()
		handled = append(handled, call{m.ID, m.Attempt})
		mu.Unlock()
		blocked := false
		firstOnce.Do(func() { blocked = true; first <- m.ID })
		if blocked {
			<-release
		}
		return nil
	}
	_, done := subscribe(t, sub, sn, h)
	t.Cleanup(func() { releaseOnce.Do(func() { close(release) }) }) // before subscribe's cleanup
	const n = 20
	msgs := make([]broker.Message, n)
	for i := range msgs {
		msgs[i] = broker.Message{ID: fmt.Sprint("m", i), Key: fmt.Sprint("k", i), Payload: []byte("x")}
	}
	publish(t, p, topic, msgs...)
	var firstID string
	select {
	case firstID = <-first:
	case <-time.After(waitFor):
		t.Fatal("handler never started")
	}
	closed := make(chan error, 1)
	go func() { closed <- sub.Close() }()
	select {
	case err := <-closed:
		t.Fatalf("Close returned %v while a handler was still running", err)
	case <-time.After(200 * time.Millisecond): // Close stops receiving meanwhile
	}
	releaseOnce.Do(func() { close(release) })
	select {
	case err := <-closed:
		if err != nil {
			t.Fatalf("Close: %v", err)
		}
	case <-time.After(waitFor):
		t.Fatal("Close did not return after the handler finished")
	}
	if _, ok := done.wait(waitFor); !ok {
		t.Fatal("Subscribe did not return after Close")
	}
	mu.Lock()
	got1 := slices.Clone(handled)
	mu.Unlock()
	if len(got1) != 1 {
		t.Fatalf("the closing subscriber called its handler %v, want only once (%s): it went on after Close", got1, firstID)
	}

	_, sub2 := s.new(t)
	c := newCollector()
	subscribe(t, sub2, sn, c.handler)
	c.waitUnique(t, n-1)
	c.quiet(t, n-1, 300*time.Millisecond)
	got := c.byID()
	if _, again := got[firstID]; again {
		t.Errorf("%s, handled while Close drained, was delivered again", firstID)
	}
	for _, m := range msgs {
		if m.ID == firstID {
			continue
		}
		if g, ok := got[m.ID]; !ok {
			t.Errorf("%s never reached the group's next member", m.ID)
		} else if g.Attempt != 1 {
			t.Errorf("%s reached the next member at Attempt %d, want 1: the graceful Close counted an attempt", m.ID, g.Attempt)
		}
	}
	if d := c.duplicates(); d != 0 {
		t.Errorf("the next member received %d duplicates", d)
	}
}

// Names no adapter (or this adapter) can carry are refused at once, before
// anything is sent, and do not disturb the Subscriber's other subscriptions.
func (s *suite) testInvalidNames(t *testing.T) {
	p, sub := s.new(t)
	topic := s.topic(t, "")
	c := newCollector()
	subscribe(t, sub, broker.Subscription{Topic: topic, Group: "g"}, c.handler)
	publish(t, p, topic, broker.Message{ID: "before", Payload: []byte("x")})
	c.waitUnique(t, 1)

	ok := func(context.Context, broker.Message) error { return nil }
	bad := append([]string{strings.Repeat("t", 300), "caf\xe9"}, s.h.InvalidTopics...)
	for _, name := range bad {
		q := fmt.Sprintf("%.40q", name)
		refusedAtOnce(t, "Subscribe to topic "+q, broker.ErrInvalidSubscription, func(ctx context.Context) error {
			return sub.Subscribe(ctx, broker.Subscription{Topic: name, Group: "g"}, ok)
		})
		refusedAtOnce(t, "Subscribe with dead-letter topic "+q, broker.ErrInvalidSubscription, func(ctx context.Context) error {
			return sub.Subscribe(ctx, broker.Subscription{Topic: topic, Group: "invalid-dlt", MaxAttempts: 1, DeadLetterTopic: name}, ok)
		})
		refusedAtOnce(t, "Publish to topic "+q, broker.ErrInvalidMessage, func(ctx context.Context) error {
			return p.Publish(ctx, name, broker.Message{Payload: []byte("x")})
		})
	}

	publish(t, p, topic, broker.Message{ID: "after", Payload: []byte("y")})
	c.waitUnique(t, 2)
}

// refusedAtOnce checks that f returns an error wrapping want within a second.
func refusedAtOnce(t *testing.T, what string, want error, f func(context.Context) error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	res := make(chan error, 1)
	go func() { res <- f(ctx) }()
	select {
	case err := <-res:
		if !errors.Is(err, want) {
			t.Errorf("%s = %v, want an error wrapping %v", what, err, want)
		}
	case <-time.After(time.Second):
		cancel()
		select {
		case err := <-res:
			t.Errorf("%s did not return within 1s (it returned %v once cancelled), want an error wrapping %v at once", what, err, want)
		case <-time.After(waitFor):
			t.Errorf("%s did not return within 1s, nor %v after its context was cancelled", what, waitFor)
		}
	}
}

// A panicking handler's attempts fail with a *broker.PanicError: the dead
// letter's x-error carries the panic value, not the stack.
func (s *suite) testPanicErrorValue(t *testing.T) {
	p, sub := s.new(t)
	topic := s.topic(t, "")
	dlq := s.topic(t, ".dlq")
	dead := newCollector()
	subscribe(t, sub, broker.Subscription{Topic: dlq, Group: "dlq"}, dead.handler)
	var tries atomic.Int32
	h := func(ctx context.Context, m broker.Message) error {
		tries.Add(1)
		panic("boom")
	}
	subscribe(t, sub, broker.Subscription{Topic: topic, Group: "g", MaxAttempts: 2, DeadLetterTopic: dlq}, h)
	publish(t, p, topic, broker.Message{ID: "panics", Key: "k", Payload: []byte("x")})
	dead.waitUnique(t, 1)
	m, ok := dead.byID()["panics"]
	if !ok {
		t.Fatalf("dead-letter topic received %v, not the panicking message", keysOf(dead.byID()))
	}
	xe := m.Header[broker.HeaderError]
	if !strings.HasPrefix(xe, broker.ErrHandlerPanic.Error()) || !strings.Contains(xe, "boom") {
		t.Errorf("dead-letter header %s = %q, want %q followed by the panic value %q", broker.HeaderError, xe, broker.ErrHandlerPanic.Error(), "boom")
	}
	if strings.Contains(xe, "goroutine ") {
		t.Errorf("dead-letter header %s carries a stack trace: %q", broker.HeaderError, xe)
	}
	if got := m.Header[broker.HeaderAttempts]; got != "2" {
		t.Errorf("dead-letter header %s = %q, want \"2\"", broker.HeaderAttempts, got)
	}
	if n := tries.Load(); n != 2 {
		t.Errorf("panicking handler called %d times, want MaxAttempts = 2", n)
	}
}

// testUnbound checks the two rows where a log differs from a queue: what
// happens to a message published while no group is bound to its topic, and
// whether a group's bindings outlive the member that made them.
func (s *suite) testUnbound(t *testing.T) {
	p, sub := s.new(t)
	topic := s.topic(t, "")
	publish(t, p, topic, broker.Message{ID: "early", Key: "b.1", Payload: []byte("x")})

	// A member bound to b.* joins and leaves; then a member bound to a.* joins the same group.
	first := newCollector()
	cancel, done := subscribe(t, sub, broker.Subscription{Topic: topic, Group: "late", Keys: []string{"b.*"}}, first.handler)
	if s.f.Log {
		first.waitUnique(t, 1) // the log kept "early" for the group
	}
	cancel()
	if _, ok := done.wait(waitFor); !ok {
		t.Fatal("Subscribe did not return after its context was cancelled")
	}
	second := newCollector()
	subscribe(t, sub, broker.Subscription{Topic: topic, Group: "late", Keys: []string{"a.*"}}, second.handler)
	publish(t, p, topic,
		broker.Message{ID: "b-after", Key: "b.2", Payload: []byte("x")},
		broker.Message{ID: "a-after", Key: "a.1", Payload: []byte("x")})
	if s.f.Log {
		second.waitUnique(t, 1)
		second.quiet(t, 1, 300*time.Millisecond)
		if _, ok := second.byID()["a-after"]; !ok {
			t.Fatalf("got %v, want only a-after: the group's bindings are its present members'", keysOf(second.byID()))
		}
		return
	}
	second.waitUnique(t, 2)
	second.quiet(t, 2, 300*time.Millisecond)
	got := second.byID()
	if _, ok := got["early"]; ok {
		t.Fatal("a message published while no group was bound reached a group made later")
	}
	if _, ok := got["b-after"]; !ok {
		t.Fatalf("got %v: the group's b.* binding did not outlive the member that made it", keysOf(got))
	}
	if f := first.byID(); len(f) != 0 {
		t.Fatalf("the first member got %v; nothing was published for it while it ran", keysOf(f))
	}
}
