package brokertest

// Tests of broker.AsyncPublisher, run when the adapter's publisher
// implements it: one outcome per call, delivery after a nil outcome,
// invalid input refused at once, Flush and Close semantics, order per key.

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-integration/patterns/broker"
)

// asyncOf returns p as a broker.AsyncPublisher, or skips t.
func asyncOf(t *testing.T, p broker.Publisher) broker.AsyncPublisher {
	t.Helper()
	ap, ok := p.(broker.AsyncPublisher)
	if !ok {
		t.Skipf("%T does not implement broker.AsyncPublisher", p)
	}
	return ap
}

// outcomes records the outcomes of PublishAsync calls by message ID.
type outcomes struct {
	mu    sync.Mutex
	got   map[string]int // outcomes per ID
	errs  map[string]error
	total atomic.Int64 // outcomes delivered
	ch    chan struct{}
}

func newOutcomes() *outcomes {
	return &outcomes{got: map[string]int{}, errs: map[string]error{}, ch: make(chan struct{}, 1)}
}

// done is the callback handed to PublishAsync.
func (o *outcomes) done(m broker.Message, err error) {
	o.mu.Lock()
	o.got[m.ID]++
	if err != nil {
		o.errs[m.ID] = err
	}
	o.mu.Unlock()
	o.total.Add(1)
	select {
	case o.ch <- struct{}{}:
	default:
	}
}

// check fails t unless each of ids had exactly one outcome and no other
// outcome arrived; it returns the IDs whose outcome was nil.
func (o *outcomes) check(t *testing.T, ids []string) []string {
	t.Helper()
	o.mu.Lock()
	defer o.mu.Unlock()
	var ok []string
	for _, id := range ids {
		switch n := o.got[id]; {
		case n == 0:
			t.Errorf("message %s: no outcome", id)
		case n > 1:
			t.Errorf("message %s: %d outcomes, want exactly one", id, n)
		case o.errs[id] == nil:
			ok = append(ok, id)
		}
	}
	if len(o.got) != len(ids) {
		t.Errorf("outcomes for %d message IDs, want %d", len(o.got), len(ids))
	}
	return ok
}

// asyncSubscribed returns p as an AsyncPublisher, a new topic, and a
// collector that sub feeds from the topic's group "g" with concurrency.
func (s *suite) asyncSubscribed(t *testing.T, p broker.Publisher, sub broker.Subscriber, concurrency int) (broker.AsyncPublisher, string, *collector) {
	t.Helper()
	ap := asyncOf(t, p)
	topic := s.topic(t, "")
	c := newCollector()
	subscribe(t, sub, broker.Subscription{Topic: topic, Group: "g", Concurrency: concurrency}, c.handler)
	return ap, topic, c
}

// Every call gets exactly one outcome, on time for Flush, and a message
// with a nil outcome is delivered. IDs left empty are filled.
func (s *suite) testAsyncOutcomes(t *testing.T) {
	p, sub := s.new(t)
	ap, topic, c := s.asyncSubscribed(t, p, sub, 8)
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	o := newOutcomes()
	n := s.f.Messages
	var mu sync.Mutex
	var ids []string
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := g; i < n; i += 4 {
				m := broker.Message{Key: fmt.Sprint("k", i%16), Payload: []byte(fmt.Sprint(i))}
				if i%2 == 0 {
					m.ID = fmt.Sprint("m", i) // odd ones: PublishAsync fills the ID
				}
				ap.PublishAsync(ctx, topic, m, func(m broker.Message, err error) {
					if m.ID == "" {
						t.Errorf("done got a message without ID")
					}
					mu.Lock()
					ids = append(ids, m.ID)
					mu.Unlock()
					o.done(m, err)
				})
			}
		})
	}
	wg.Wait()
	if err := ap.Flush(ctx); err != nil {
		t.Fatalf("Flush: %v", err)
	}
	if got := o.total.Load(); got != int64(n) {
		t.Fatalf("%d outcomes when Flush returned, want %d", got, n)
	}
	mu.Lock()
	ok := o.check(t, ids)
	mu.Unlock()
	if len(ok) != n {
		t.Errorf("%d of %d outcomes nil on a healthy broker; first errors: %v", len(ok), n, firstErrors(o, 3))
	}
	c.waitUnique(t, len(ok))
	got := c.byID()
	for _, id := range ok {
		if _, in := got[id]; !in {
			t.Fatalf("message %s had a nil outcome but was not delivered", id)
		}
	}
}

func firstErrors(o *outcomes, n int) []error {
	o.mu.Lock()
	defer o.mu.Unlock()
	var out []error
	for _, err := range o.errs {
		if len(out) == n {
			break
		}
		out = append(out, err)
	}
	return out
}

// Invalid input gets its error outcome before PublishAsync returns, and
// nothing is sent: the valid messages around it are delivered alone.
func (s *suite) testAsyncInvalid(t *testing.T) {
	p, sub := s.new(t)
	ap, topic, c := s.asyncSubscribed(t, p, sub, 0)
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	bad := append([]string{"", strings.Repeat("t", broker.MaxNameLen+1), "bad\xff"}, s.h.InvalidTopics...)
	o := newOutcomes()
	ap.PublishAsync(ctx, topic, broker.Message{ID: "before", Payload: []byte("x")}, o.done)
	for i, bt := range bad {
		var got error
		called := 0
		ap.PublishAsync(ctx, bt, broker.Message{ID: fmt.Sprint("bad", i), Payload: []byte("x")}, func(_ broker.Message, err error) {
			called++
			got = err
		})
		if called != 1 {
			t.Errorf("PublishAsync to %q: done called %d times before it returned, want once", bt, called)
		} else if !errors.Is(got, broker.ErrInvalidMessage) {
			t.Errorf("PublishAsync to %q: outcome %v, want ErrInvalidMessage", bt, got)
		}
	}
	ap.PublishAsync(ctx, topic, broker.Message{ID: "after", Payload: []byte("x")}, o.done)
	if err := ap.Flush(ctx); err != nil {
		t.Fatalf("Flush: %v", err)
	}
	if ok := o.check(t, []string{"before", "after"}); len(ok) != 2 {
		t.Fatalf("valid messages failed: %v", firstErrors(o, 2))
	}
	c.waitUnique(t, 2)
	if got := c.byID(); len(got) != 2 {
		t.Errorf("delivered %d messages, want only before and after", len(got))
	}
}

// Close flushes: when it returns every call has had its outcome (nil or
// an error, once); calls after Close get ErrClosed; Flush after Close
// returns at once.
func (s *suite) testAsyncClose(t *testing.T) {
	p, sub := s.new(t)
	ap, topic, c := s.asyncSubscribed(t, p, sub, 4)
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	o := newOutcomes()
	n := min(s.f.Messages, 2000)
	ids := make([]string, n)
	for i := range n {
		ids[i] = fmt.Sprint("c", i)
		ap.PublishAsync(ctx, topic, broker.Message{ID: ids[i], Key: fmt.Sprint("k", i%8), Payload: []byte("x")}, o.done)
	}
	if err := p.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if got := o.total.Load(); got != int64(n) {
		t.Fatalf("%d outcomes when Close returned, want %d", got, n)
	}
	ok := o.check(t, ids)
	for id, err := range o.errs {
		if !errors.Is(err, broker.ErrNotConfirmed) && !errors.Is(err, broker.ErrClosed) {
			t.Errorf("message %s failed with %v, want ErrNotConfirmed or ErrClosed", id, err)
		}
	}
	var got error
	called := 0
	ap.PublishAsync(ctx, topic, broker.Message{ID: "late", Payload: []byte("x")}, func(_ broker.Message, err error) {
		called++
		got = err
	})
	if called != 1 || !errors.Is(got, broker.ErrClosed) {
		t.Errorf("PublishAsync after Close: %d outcomes before it returned, %v; want one, ErrClosed", called, got)
	}
	if err := ap.Flush(ctx); err != nil {
		t.Errorf("Flush after Close: %v", err)
	}
	if any(p) == any(sub) {
		// Close ended the subscription too: a new member of the group
		// receives the rest.
		if !s.f.Persistent {
			return
		}
		_, sub2 := s.new(t)
		subscribe(t, sub2, broker.Subscription{Topic: topic, Group: "g", Concurrency: 4}, c.handler)
	}
	c.waitUnique(t, len(ok))
	delivered := c.byID()
	for _, id := range ok {
		if _, in := delivered[id]; !in {
			t.Fatalf("message %s had a nil outcome but was not delivered", id)
		}
	}
}

// Successive calls from one goroutine with the same key are delivered in
// call order (first copies: duplicates may follow).
func (s *suite) testAsyncOrderPerKey(t *testing.T) {
	p, sub := s.new(t)
	ap, topic, c := s.asyncSubscribed(t, p, sub, 8)
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	const keys, per = 8, 250
	o := newOutcomes()
	for i := range keys * per {
		k := i % keys
		ap.PublishAsync(ctx, topic, broker.Message{ID: fmt.Sprintf("k%d-%04d", k, i/keys), Key: fmt.Sprint("k", k), Payload: []byte("x")}, o.done)
	}
	if err := ap.Flush(ctx); err != nil {
		t.Fatalf("Flush: %v", err)
	}
	if errs := firstErrors(o, 3); len(errs) > 0 {
		t.Fatalf("outcomes failed: %v", errs)
	}
	c.waitUnique(t, keys*per)
	c.mu.Lock()
	msgs := c.msgs // first copies, in handling order
	c.mu.Unlock()
	last := map[string]string{}
	for _, m := range msgs {
		if prev, ok := last[m.Key]; ok && m.ID < prev {
			t.Fatalf("key %s: %s handled after %s", m.Key, m.ID, prev)
		}
		last[m.Key] = m.ID
	}
}

// A context already ended gets an error outcome wrapping its error, and
// the message is not delivered.
func (s *suite) testAsyncCancelled(t *testing.T) {
	p, sub := s.new(t)
	ap, topic, c := s.asyncSubscribed(t, p, sub, 0)
	dead, cancel := context.WithCancel(context.Background())
	cancel()
	o := newOutcomes()
	ap.PublishAsync(dead, topic, broker.Message{ID: "dead", Payload: []byte("x")}, o.done)
	ctx, cancel2 := context.WithTimeout(context.Background(), waitFor)
	defer cancel2()
	ap.PublishAsync(ctx, topic, broker.Message{ID: "live", Payload: []byte("x")}, o.done)
	if err := ap.Flush(ctx); err != nil {
		t.Fatalf("Flush: %v", err)
	}
	o.check(t, []string{"dead", "live"})
	o.mu.Lock()
	deadErr, liveErr := o.errs["dead"], o.errs["live"]
	o.mu.Unlock()
	if !errors.Is(deadErr, context.Canceled) {
		t.Errorf("outcome with a cancelled context: %v, want context.Canceled", deadErr)
	}
	if liveErr != nil {
		t.Fatalf("outcome with a live context: %v", liveErr)
	}
	c.waitUnique(t, 1)
	c.quiet(t, 1, 300*time.Millisecond)
	if _, in := c.byID()["dead"]; in {
		t.Error("a message published with a cancelled context was delivered")
	}
}

// Publish tracers see each PublishAsync call as a call of one message:
// Start when it is made (with the caller's context), End with its outcome
// before done runs; what Start writes reaches the subscriber, and Stats
// count the calls.
func (s *suite) testAsyncTrace(t *testing.T) {
	tr := &recorder{}
	p, sub := s.traced(t, tr)
	ap, topic, c := s.asyncSubscribed(t, p, sub, 0)
	ctx, cancel := context.WithTimeout(context.WithValue(context.Background(), callerKey{}, true), waitFor)
	defer cancel()
	ended := func(id string) bool {
		tr.mu.Lock()
		defer tr.mu.Unlock()
		for _, sp := range tr.pubs {
			if len(sp.start.Messages) == 1 && sp.start.Messages[0].ID == id {
				return sp.end != nil
			}
		}
		return false
	}
	o := newOutcomes()
	done := func(m broker.Message, err error) {
		if !ended(m.ID) {
			t.Errorf("message %s: done ran before TracePublishEnd", m.ID)
		}
		o.done(m, err)
	}
	ap.PublishAsync(ctx, topic, broker.Message{ID: "a", Key: "x", Payload: []byte("a")}, done)
	ap.PublishAsync(ctx, topic, broker.Message{Key: "y", Payload: []byte("b")}, done)
	ap.PublishAsync(ctx, "", broker.Message{ID: "bad", Payload: []byte("c")}, done)
	if err := ap.Flush(ctx); err != nil {
		t.Fatalf("Flush: %v", err)
	}
	if o.total.Load() != 3 {
		t.Fatalf("%d outcomes, want 3", o.total.Load())
	}
	c.waitUnique(t, 2)
	for _, m := range c.byID() {
		if m.Header[headerPublishTrace] == "" {
			t.Errorf("message %s delivered without the header TracePublishStart added", m.ID)
		}
	}
	tr.check(t)
	tr.mu.Lock()
	if len(tr.pubs) != 3 {
		t.Errorf("%d TracePublishStart calls, want 3 (one per PublishAsync)", len(tr.pubs))
	}
	for _, sp := range tr.pubs {
		if !sp.callerCtx {
			t.Errorf("%s: TracePublishStart did not get the caller's context", sp.name)
		}
		if sp.end == nil {
			t.Errorf("%s: not ended", sp.name)
			continue
		}
		bad := len(sp.start.Messages) == 1 && sp.start.Messages[0].ID == "bad"
		if bad != (sp.end.Err != nil) || (bad && !errors.Is(sp.end.Err, broker.ErrInvalidMessage)) {
			t.Errorf("%s: ended with %v", sp.name, sp.end.Err)
		}
	}
	tr.mu.Unlock()
	if s.h.Stats != nil {
		ps, _ := s.h.Stats(p, sub)
		if ps.Published < 2 || ps.Failed < 1 || ps.InFlight != 0 {
			t.Errorf("publisher stats %+v, want 2 published, 1 failed, none in flight", ps)
		}
	}
}
