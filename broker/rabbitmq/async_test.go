package rabbitmq_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-integration/patterns/broker"
	"github.com/go-integration/patterns/broker/rabbitmq"
	"github.com/go-integration/patterns/internal/testenv"
)

// asyncOutcomes counts PublishAsync outcomes by message ID.
type asyncOutcomes struct {
	mu   sync.Mutex
	n    map[string]int
	errs map[string]error
}

func (o *asyncOutcomes) done(m broker.Message, err error) {
	o.mu.Lock()
	o.n[m.ID]++
	if err != nil {
		o.errs[m.ID] = err
	}
	o.mu.Unlock()
}

// TestPublishAsyncConnectionLoss cuts the publisher's connection twice
// while 10,000 messages are published asynchronously from 4 goroutines
// over 4 channels: every call gets exactly one outcome, Flush returns, every
// message with a nil outcome is delivered, and the first copies of each
// key's messages arrive in call order.
func TestPublishAsyncConnectionLoss(t *testing.T) {
	t.Parallel()
	_, url := testenv.VHost(t)
	px, pxURL := newProxy(t, url)
	p := newPublisher(t, pxURL, rabbitmq.WithChannels(4), rabbitmq.WithMaxInFlight(64), rabbitmq.WithConnectionName("async-loss"))
	s := newSubscriber(t, url)
	c := newCollector()
	var orderMu sync.Mutex
	firsts := map[string][]int{} // key -> sequence numbers of first copies, in handling order
	handle := func(ctx context.Context, m broker.Message) error {
		orderMu.Lock()
		if _, seen := c.get(m.ID); !seen {
			var seq int
			_, _ = fmt.Sscanf(string(m.Payload), "%d", &seq)
			firsts[m.Key] = append(firsts[m.Key], seq)
		}
		orderMu.Unlock()
		return c.handle(ctx, m)
	}
	run(t, s, broker.Subscription{Topic: "async", Group: "g", Concurrency: 8}, handle)

	const n, publishers, keys = 10000, 4, 8
	o := &asyncOutcomes{n: map[string]int{}, errs: map[string]error{}}
	ctx := ctxT(t, 90*time.Second)
	var calls atomic.Int64
	var cuts sync.WaitGroup
	var wg sync.WaitGroup
	for w := range publishers {
		wg.Go(func() {
			for i := w; i < n; i += publishers {
				if k := calls.Add(1); k == n/4 || k == n*3/4 {
					cuts.Go(px.cut)
				}
				m := broker.Message{ID: fmt.Sprint("m", i), Key: fmt.Sprintf("w%d.k%d", w, i%keys), Payload: fmt.Append(nil, i)}
				p.PublishAsync(ctx, "async", m, o.done)
			}
		})
	}
	wg.Wait()
	cuts.Wait()
	flushed := make(chan error, 1)
	go func() { flushed <- p.Flush(ctx) }()
	select {
	case err := <-flushed:
		if err != nil {
			t.Fatalf("Flush: %v", err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("Flush did not return within 60s: an outcome hangs")
	}

	o.mu.Lock()
	var ok []string
	for i := range n {
		id := fmt.Sprint("m", i)
		switch got := o.n[id]; {
		case got != 1:
			t.Errorf("message %s: %d outcomes, want exactly one", id, got)
		case o.errs[id] != nil:
			t.Errorf("message %s failed across a short outage: %v", id, o.errs[id])
		default:
			ok = append(ok, id)
		}
	}
	o.mu.Unlock()
	c.waitFor(t, 60*time.Second, ok...)

	orderMu.Lock()
	for key, seqs := range firsts {
		for i := 1; i < len(seqs); i++ {
			if seqs[i] < seqs[i-1] {
				t.Errorf("key %s: message %d arrived after %d", key, seqs[i], seqs[i-1])
				break
			}
		}
	}
	orderMu.Unlock()
	st := p.Stats()
	if st.Reconnects < 1 {
		t.Errorf("the publisher did not reconnect (stats %+v)", st)
	}
	if st.InFlight != 0 || st.Published != n {
		t.Errorf("stats %+v, want %d published, none in flight", st.PublisherStats, n)
	}
	t.Logf("%d messages, all delivered; %d duplicates; %d republished; %d reconnects", n, c.duplicates(), st.Republished, st.Reconnects)
}

// TestPublishAsyncBackpressure: with the broker's confirms held back
// (the proxy mutes it), PublishAsync blocks once the channel holds
// WithMaxInFlight messages and gives up when its context ends; Close
// then fails the unconfirmed ones after the drain timeout.
func TestPublishAsyncBackpressure(t *testing.T) {
	t.Parallel()
	_, url := testenv.VHost(t)
	px, pxURL := newProxy(t, url)
	p := newPublisher(t, pxURL, rabbitmq.WithMaxInFlight(8), rabbitmq.WithDrainTimeout(300*time.Millisecond))
	o := &asyncOutcomes{n: map[string]int{}, errs: map[string]error{}}
	// Declare the exchange first: the declare is an RPC the muted proxy would hold.
	if err := p.Publish(ctxT(t, 10*time.Second), "bp", broker.Message{ID: "first"}); err != nil {
		t.Fatal(err)
	}
	px.muted.Store(true)
	for i := range 8 {
		p.PublishAsync(context.Background(), "bp", broker.Message{ID: fmt.Sprint("m", i)}, o.done)
	}
	start := time.Now()
	var blocked error
	p.PublishAsync(ctxT(t, 200*time.Millisecond), "bp", broker.Message{ID: "blocked"}, func(_ broker.Message, err error) { blocked = err })
	if took := time.Since(start); took < 150*time.Millisecond {
		t.Errorf("PublishAsync over the in-flight bound returned after %v, want it to block until its context ended", took)
	}
	if !errors.Is(blocked, context.DeadlineExceeded) || !errors.Is(blocked, broker.ErrNotConfirmed) {
		t.Errorf("PublishAsync over the bound: %v, want ErrNotConfirmed and the context's error", blocked)
	}
	if st := p.Stats(); st.InFlight != 8 {
		t.Errorf("in flight %d, want 8", st.InFlight)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	for i := range 8 {
		id := fmt.Sprint("m", i)
		if o.n[id] != 1 || !errors.Is(o.errs[id], broker.ErrNotConfirmed) {
			t.Errorf("message %s after Close: %d outcomes, %v; want one, ErrNotConfirmed", id, o.n[id], o.errs[id])
		}
	}
}

// TestPublishAsyncUnroutable: with WithMandatory, a message no queue
// receives gets ErrUnroutable, and one that a queue receives gets nil, in
// the same stream.
func TestPublishAsyncUnroutable(t *testing.T) {
	t.Parallel()
	_, url := testenv.VHost(t)
	p := newPublisher(t, url, rabbitmq.WithMandatory())
	s := newSubscriber(t, url)
	c := newCollector()
	run(t, s, broker.Subscription{Topic: "routed", Group: "g", Keys: []string{"yes.#"}}, c.handle)
	o := &asyncOutcomes{n: map[string]int{}, errs: map[string]error{}}
	ctx := ctxT(t, 30*time.Second)
	for i := range 50 {
		key := "yes.k"
		if i%5 == 0 {
			key = "no.k"
		}
		p.PublishAsync(ctx, "routed", broker.Message{ID: fmt.Sprint("m", i), Key: key}, o.done)
	}
	if err := p.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	var routed []string
	o.mu.Lock()
	for i := range 50 {
		id := fmt.Sprint("m", i)
		err := o.errs[id]
		switch {
		case o.n[id] != 1:
			t.Errorf("%s: %d outcomes", id, o.n[id])
		case i%5 == 0 && !errors.Is(err, broker.ErrUnroutable):
			t.Errorf("%s (unbound key): %v, want ErrUnroutable", id, err)
		case i%5 != 0 && err != nil:
			t.Errorf("%s (bound key): %v", id, err)
		case i%5 != 0:
			routed = append(routed, id)
		}
	}
	o.mu.Unlock()
	c.waitFor(t, 20*time.Second, routed...)
	if st := p.Stats(); st.Returned != 10 {
		t.Errorf("returned %d, want 10", st.Returned)
	}
}
