package rabbitmq_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-integration/patterns/broker"
	"github.com/go-integration/patterns/broker/rabbitmq"
	"github.com/go-integration/patterns/internal/testenv"
)

// streamThroughFault publishes n messages from 16 goroutines while a
// subscriber consumes them, calls fault once a tenth of them are confirmed
// (rabbitmqctl takes a second or two to act), holds the last tenth back until
// the publisher saw the connection drop, then checks that every message whose Publish returned nil was delivered.
func streamThroughFault(t *testing.T, url string, n int, fault func()) {
	t.Helper()
	var pubDown, subDown atomic.Bool
	pubLost, subLost := make(chan struct{}), make(chan struct{})
	var pubOnce, subOnce sync.Once
	logs := &syncBuffer{}
	p := newPublisher(t, url, rabbitmq.WithConnectionName("fault-publisher"), rabbitmq.WithLogger(slog.New(slog.NewTextHandler(logs, nil))), rabbitmq.WithTracer(connTracer(func(_ context.Context, d rabbitmq.TraceConnectionData) {
		if d.Event == rabbitmq.ConnectionLost {
			pubDown.Store(true)
			pubOnce.Do(func() { close(pubLost) })
		}
	})))
	s := newSubscriber(t, url, rabbitmq.WithConnectionName("fault-subscriber"), rabbitmq.WithTracer(connTracer(func(_ context.Context, d rabbitmq.TraceConnectionData) {
		if d.Event == rabbitmq.ConnectionLost {
			subDown.Store(true)
			subOnce.Do(func() { close(subLost) })
		}
	})))
	topic := "stream"
	c := newCollector()
	run(t, s, broker.Subscription{Topic: topic, Group: "g", Concurrency: 8}, c.handle)
	// A private subscription gets a new server-named queue after the drop.
	private := newCollector()
	run(t, s, broker.Subscription{Topic: topic, Keys: []string{"after"}}, private.handle)

	const publishers = 16
	var confirmed atomic.Int64
	var failed atomic.Int64
	var faultOnce sync.Once
	var mu sync.Mutex
	var ok []string
	ctx := ctxT(t, 60*time.Second)
	var wg sync.WaitGroup
	for w := range publishers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += publishers {
				if i >= n*9/10 {
					// keep the last tenth for after the drop, so that it hits mid-stream.
					select {
					case <-pubLost:
					case <-time.After(20 * time.Second):
					}
				}
				id := fmt.Sprint("m", i)
				pctx, cancel := context.WithTimeout(ctx, 20*time.Second)
				err := p.Publish(pctx, topic, broker.Message{ID: id, Key: fmt.Sprint("k", i%32), Payload: make([]byte, 256)})
				cancel()
				if err != nil {
					failed.Add(1)
					t.Logf("Publish %s: %v", id, err)
					continue
				}
				mu.Lock()
				ok = append(ok, id)
				mu.Unlock()
				if confirmed.Add(1) == int64(n/10) {
					faultOnce.Do(func() { go fault() })
				}
			}
		}()
	}
	wg.Wait()
	for _, lost := range []chan struct{}{pubLost, subLost} {
		select {
		case <-lost:
		case <-time.After(10 * time.Second):
			t.Fatal("the fault did not drop the connections")
		}
	}
	c.waitFor(t, 30*time.Second, ok...)
	if f := failed.Load(); f > 0 {
		// each Publish had 20s, far longer than the outage: it should have ridden through.
		t.Errorf("%d Publish calls failed across a short outage", f)
	}
	// Messages published before the private queue is back are not kept for
	// it (it is private): publish until one arrives.
	for i := 0; ; i++ {
		id := fmt.Sprint("after", i)
		if err := p.Publish(ctx, topic, broker.Message{ID: id, Key: "after"}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(50 * time.Millisecond)
		if _, ok := private.get(id); ok {
			break
		}
		if ctx.Err() != nil {
			t.Fatal("the private subscription did not resume")
		}
	}
	if out := logs.String(); !strings.Contains(out, "connection lost") || !strings.Contains(out, "rabbitmq: reconnected") {
		t.Errorf("publisher log lacks the drop and the reconnect:\n%s", out)
	}
	ps, ss := p.Stats(), s.Stats()
	if ps.Reconnects == 0 || ss.Reconnects == 0 {
		t.Errorf("reconnects: publisher %d, subscriber %d; want both > 0", ps.Reconnects, ss.Reconnects)
	}
	t.Logf("%d published (%d confirmed, %d failed with an error), all confirmed delivered; %d duplicates; publisher republished %d; reconnects pub=%d sub=%d",
		n, len(ok), failed.Load(), c.duplicates(), ps.Republished, ps.Reconnects, ss.Reconnects)
}

// syncBuffer is a bytes.Buffer safe for concurrent writers (log handlers).
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// TestCloseAllConnections drops every connection of the test's vhost while
// 10,000 messages are published from 16 goroutines and consumed.
func TestCloseAllConnections(t *testing.T) {
	t.Parallel()
	vhost, url := testenv.VHost(t)
	streamThroughFault(t, url, 10000, func() {
		if out, err := testenv.Rabbitmqctl("close_all_connections", "--vhost", vhost, "fault injected by TestCloseAllConnections"); err != nil {
			t.Errorf("close_all_connections: %v: %s", err, out)
		}
	})
}

// TestQueueDeletedUnderConsumer deletes the group's queue while it is
// consumed: the server cancels the consumer, the subscriber declares the queue
// and its bindings again and resumes.
func TestQueueDeletedUnderConsumer(t *testing.T) {
	t.Parallel()
	_, url := testenv.VHost(t)
	p := newPublisher(t, url)
	s := newSubscriber(t, url)
	c := newCollector()
	run(t, s, broker.Subscription{Topic: "orders", Group: "billing"}, c.handle)
	ctx := ctxT(t, 30*time.Second)
	if err := p.Publish(ctx, "orders", broker.Message{ID: "before"}); err != nil {
		t.Fatal(err)
	}
	c.waitFor(t, 10*time.Second, "before")
	ch := admin(t, url)
	if _, err := ch.QueueDelete(rabbitmq.DefaultQueueName("orders", "billing"), false, false, false); err != nil {
		t.Fatalf("delete queue: %v", err)
	}
	testenv.Eventually(t, 10*time.Second, "the subscriber to notice the cancelled consumer",
		func() bool { return s.Stats().ConsumerCancels > 0 })
	// Publish until the redeclared queue receives: messages published while no
	// queue was bound are dropped by RabbitMQ, which this test does not hide.
	for i := 0; ; i++ {
		id := fmt.Sprint("after", i)
		if err := p.Publish(ctx, "orders", broker.Message{ID: id}); err != nil {
			t.Fatal(err)
		}
		select {
		case <-time.After(100 * time.Millisecond):
		case <-ctx.Done():
			t.Fatal("the subscriber did not resume after its queue was deleted")
		}
		if _, ok := c.get(id); ok {
			break
		}
	}
}

// TestPublishDuringOutage makes the test's vhost unreachable (permissions
// revoked, connections closed): Publish waits until its context ends and
// returns ErrNotConfirmed; a Publish with a longer context succeeds once the
// broker is reachable again, and the subscriber resumes.
func TestPublishDuringOutage(t *testing.T) {
	t.Parallel()
	vhost, url := testenv.VHost(t)
	p := newPublisher(t, url)
	closing := newPublisher(t, url)
	s := newSubscriber(t, url)
	c := newCollector()
	run(t, s, broker.Subscription{Topic: "outage", Group: "g"}, c.handle)
	if err := p.Publish(ctxT(t, 10*time.Second), "outage", broker.Message{ID: "before"}); err != nil {
		t.Fatal(err)
	}
	if out, err := testenv.Rabbitmqctl("clear_permissions", "-p", vhost, "guest"); err != nil {
		t.Fatalf("clear_permissions: %v: %s", err, out)
	}
	if out, err := testenv.Rabbitmqctl("close_all_connections", "--vhost", vhost, "outage"); err != nil {
		t.Fatalf("close_all_connections: %v: %s", err, out)
	}
	testenv.Eventually(t, 10*time.Second, "the publisher to notice the closed connection",
		func() bool { return p.Conn() == nil })
	start := time.Now()
	err := p.Publish(ctxT(t, time.Second), "outage", broker.Message{ID: "lost"})
	if !errors.Is(err, broker.ErrNotConfirmed) || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Publish during the outage: %v, want ErrNotConfirmed after the deadline", err)
	}
	if took := time.Since(start); took < 900*time.Millisecond || took > 3*time.Second {
		t.Errorf("Publish returned after %v with a 1s context", took)
	}
	// Close ends a Publish waiting through the outage with ErrClosed.
	closed := make(chan error, 1)
	go func() { closed <- closing.Publish(ctxT(t, 30*time.Second), "outage", broker.Message{ID: "closed"}) }()
	// In flight during the outage, it can only wait for the connection.
	testenv.Eventually(t, 10*time.Second, "the Publish to be in flight", func() bool { return closing.Stats().InFlight == 1 })
	_ = closing.Close()
	select {
	case err := <-closed:
		if !errors.Is(err, broker.ErrClosed) {
			t.Errorf("Publish interrupted by Close: %v, want ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Error("Close did not end a Publish waiting for the connection")
	}
	// A publish that outlives the outage succeeds.
	errc := make(chan error, 1)
	go func() { errc <- p.Publish(ctxT(t, 30*time.Second), "outage", broker.Message{ID: "waited"}) }()
	testenv.Eventually(t, 10*time.Second, "the Publish to be in flight", func() bool { return p.Stats().InFlight == 1 })
	if out, err := testenv.Rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*"); err != nil {
		t.Fatalf("set_permissions: %v: %s", err, out)
	}
	if err := <-errc; err != nil {
		t.Fatalf("Publish across the outage: %v", err)
	}
	c.waitFor(t, 20*time.Second, "before", "waited")
}

// connTracer is a rabbitmq.ConnectionTracer made of a function.
type connTracer func(context.Context, rabbitmq.TraceConnectionData)

func (f connTracer) TraceConnection(ctx context.Context, d rabbitmq.TraceConnectionData) { f(ctx, d) }
