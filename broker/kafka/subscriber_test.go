package kafka

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-integration/patterns/broker"
	"github.com/go-integration/patterns/internal/testenv"
)

// Keys filter on the client with broker's matcher; skipped records are
// committed, so the group has no lag left.
func TestKeysSkippedAreCommitted(t *testing.T) {
	e := newEnv(t)
	topic := e.topic(2)
	p := e.publisher()
	var msgs []broker.Message
	for i := range 40 {
		key := "bookings.italy.rome"
		if i%4 == 0 {
			key = fmt.Sprintf("rentals.france.%d", i)
		}
		msgs = append(msgs, broker.Message{Key: key, Payload: []byte("x")})
	}
	if err := p.Publish(ctxT(t, 10*time.Second), topic, msgs...); err != nil {
		t.Fatal(err)
	}
	s := e.subscriber()
	var mu sync.Mutex
	var keys []string
	stop := subscribe(t, s, broker.Subscription{Topic: topic, Group: "fr", Keys: []string{"rentals.france.*", "rentals.#"}}, func(_ context.Context, m broker.Message) error {
		mu.Lock()
		keys = append(keys, m.Key)
		mu.Unlock()
		return nil
	})
	testenv.Eventually(t, 20*time.Second, "every record consumed", func() bool { st := s.Stats(); return st.Received+st.Skipped == 40 })
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	if len(keys) != 10 {
		t.Errorf("handled %d records (%v), want the 10 rentals.france ones, each once", len(keys), keys)
	}
	mu.Unlock()
	if st := s.Stats(); st.Skipped != 30 || st.Handled != 10 || st.Commits == 0 {
		t.Errorf("stats %+v: want 30 skipped, 10 handled, commits", st)
	}
	lag, err := e.admin.Lag(ctxT(t, 10*time.Second), "fr", topic)
	if err != nil {
		t.Fatal(err)
	}
	for part, l := range lag {
		if l != 0 {
			t.Errorf("partition %d lag %d: skipped records were not committed", part, l)
		}
	}
}

// A handler that outlives DrainTimeout has its context cancelled; its record
// is not committed (and not dead-lettered), so the group gets it again.
func TestDrainTimeoutCancelsHandler(t *testing.T) {
	e := newEnv(t)
	topic := e.topic(1)
	p := e.publisher()
	if err := p.Publish(ctxT(t, 10*time.Second), topic, broker.Message{ID: "stuck", Payload: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	s := e.subscriber(WithDrainTimeout(200 * time.Millisecond))
	sub := broker.Subscription{Topic: topic, Group: "g", MaxAttempts: 1, DeadLetterTopic: topic + "_dead"}
	if err := s.Provision(ctxT(t, 10*time.Second), sub); err != nil {
		t.Fatal(err)
	}
	started := make(chan struct{})
	var cancelled atomic.Bool
	stop := subscribe(t, s, sub, func(ctx context.Context, m broker.Message) error {
		close(started)
		<-ctx.Done()
		cancelled.Store(true)
		return ctx.Err()
	})
	<-started
	begin := time.Now()
	if err := stop(); err != nil {
		t.Fatalf("Subscribe = %v, want nil after cancel", err)
	}
	if took := time.Since(begin); took < 200*time.Millisecond || took > 5*time.Second {
		t.Errorf("Subscribe returned %v after cancel, want about the 200 ms drain timeout", took)
	}
	if !cancelled.Load() {
		t.Error("the handler's context was not cancelled after the drain timeout")
	}
	if st := s.Stats(); st.DeadLettered != 0 {
		t.Errorf("a record cancelled by shutdown was dead-lettered: %+v", st)
	}
	again := make(chan string, 1)
	subscribe(t, e.subscriber(), sub, func(_ context.Context, m broker.Message) error {
		again <- m.ID
		return nil
	})
	select {
	case id := <-again:
		if id != "stuck" {
			t.Errorf("got %s", id)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the record cut off by the drain timeout was not redelivered")
	}
}

// A permanent error with no dead-letter topic drops the record (logged,
// counted) and the partition moves on.
func TestPermanentWithoutDeadLetterIsDropped(t *testing.T) {
	e := newEnv(t)
	topic := e.topic(1)
	p := e.publisher()
	if err := p.Publish(ctxT(t, 10*time.Second), topic, broker.Message{ID: "bad"}, broker.Message{ID: "good"}); err != nil {
		t.Fatal(err)
	}
	s := e.subscriber()
	var tries atomic.Int32
	done := make(chan struct{})
	subscribe(t, s, broker.Subscription{Topic: topic, Group: "g"}, func(_ context.Context, m broker.Message) error {
		if m.ID == "bad" {
			tries.Add(1)
			return broker.Permanent(errors.New("unknown schema"))
		}
		close(done)
		return nil
	})
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("the record behind the dropped one was not handled")
	}
	if st := s.Stats(); st.Dropped != 1 || tries.Load() != 1 {
		t.Errorf("stats %+v, tries %d: want 1 dropped after 1 try", st, tries.Load())
	}
}

// Handlers receive the Subscribe context's values, and Subscribe calls on
// one Subscriber run side by side.
func TestHandlerContextValues(t *testing.T) {
	e := newEnv(t)
	topic := e.topic(1)
	p := e.publisher()
	if err := p.Publish(ctxT(t, 10*time.Second), topic, broker.Message{ID: "v"}); err != nil {
		t.Fatal(err)
	}
	type key struct{}
	ctx, cancel := context.WithCancel(context.WithValue(context.Background(), key{}, "tenant-7"))
	defer cancel()
	s := e.subscriber()
	got := make(chan any, 1)
	errc := make(chan error, 1)
	go func() {
		errc <- s.Subscribe(ctx, broker.Subscription{Topic: topic, Group: "g"}, func(ctx context.Context, m broker.Message) error {
			got <- ctx.Value(key{})
			return nil
		})
	}()
	select {
	case v := <-got:
		if v != "tenant-7" {
			t.Errorf("handler context value %v", v)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("no delivery")
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; !errors.Is(err, broker.ErrClosed) {
		t.Errorf("Subscribe after Close = %v, want ErrClosed", err)
	}
}

// Each attempt gets the message as published: a handler that changed the
// header map of a failed attempt does not change what the retry or the dead
// letter sees (as with the memory broker, whose retries get fresh copies).
func TestRetrySeesHeaderAsPublished(t *testing.T) {
	e := newEnv(t)
	topic := e.topic(1)
	p := e.publisher()
	if err := p.Publish(ctxT(t, 10*time.Second), topic, broker.Message{ID: "m", Key: "k", Header: map[string]string{"trace": "t1"}, Payload: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	s := e.subscriber()
	seen := make(chan map[string]string, 2)
	subscribe(t, s, broker.Subscription{Topic: topic, Group: "g"}, func(_ context.Context, m broker.Message) error {
		h := make(map[string]string, len(m.Header))
		for k, v := range m.Header {
			h[k] = v
		}
		seen <- h
		if m.Attempt == 1 {
			delete(m.Header, "trace")
			m.Header["scratch"] = "attempt 1"
			return errors.New("fail once")
		}
		return nil
	})
	for i := 1; i <= 2; i++ {
		select {
		case h := <-seen:
			if len(h) != 1 || h["trace"] != "t1" {
				t.Errorf("attempt %d saw header %v, want map[trace:t1]", i, h)
			}
		case <-time.After(20 * time.Second):
			t.Fatalf("attempt %d not made", i)
		}
	}
}
