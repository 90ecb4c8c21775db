package memory_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"go.uber.org/goleak"

	"github.com/go-integration/patterns/broker"
	"github.com/go-integration/patterns/broker/brokertest"
	"github.com/go-integration/patterns/broker/memory"
	"github.com/go-integration/patterns/internal/testenv"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestConformance(t *testing.T) {
	// One broker per test; every New hands out a Client of it, as a real
	// adapter opens another connection to the same server. Every feature is on:
	// only persistence across process restarts is out of reach, and the suite
	// does not ask for it.
	brokertest.Run(t, brokertest.Harness{
		New: func(t *testing.T) (broker.Publisher, broker.Subscriber) {
			c := brokerFor(t).Client()
			return c, c
		},
		Traced: func(t *testing.T, tracer any) (broker.Publisher, broker.Subscriber) {
			b := memory.MustNew(memory.WithTracer(tracer))
			t.Cleanup(func() { _ = b.Close() })
			return b, b
		},
		Stats: func(p broker.Publisher, _ broker.Subscriber) (broker.PublisherStats, broker.SubscriberStats) {
			st := p.(*memory.Broker).Stats()
			return st.Publisher, st.Subscriber
		},
		Features: brokertest.AllFeatures(),
	})
}

var brokers sync.Map // test name -> *memory.Broker

// brokerFor returns the broker of t's conformance test, made on first use.
func brokerFor(t *testing.T) *memory.Broker {
	b, loaded := brokers.LoadOrStore(t.Name(), memory.MustNew())
	if !loaded {
		t.Cleanup(func() { brokers.Delete(t.Name()); _ = b.(*memory.Broker).Close() })
	}
	return b.(*memory.Broker)
}

func TestPublishToTopicWithoutGroupsIsDropped(t *testing.T) {
	b := memory.MustNew()
	defer b.Close()
	ctx := context.Background()
	if err := b.Publish(ctx, "nobody", broker.Message{Payload: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	if err := b.Provision(ctx, broker.Subscription{Topic: "nobody", Group: "late"}); err != nil {
		t.Fatal(err)
	}
	if n := b.Pending("nobody", "late"); n != 0 {
		t.Fatalf("a group created after the publish holds %d messages", n)
	}
	if err := b.Publish(ctx, "nobody", broker.Message{Payload: []byte("y")}); err != nil {
		t.Fatal(err)
	}
	if n := b.Pending("nobody", "late"); n != 1 {
		t.Fatalf("pending = %d, want 1", n)
	}
}

// The bubble lets the test wait until every goroutine has reacted to the
// cancel (synctest.Wait) before it looks at the handler's context: a
// context wrongly derived from Subscribe's would be cancelled by then.
func TestHandlerContextOutlivesCancelledSubscribe(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := memory.MustNew(memory.WithDrainTimeout(time.Second))
		defer b.Close()
		ctx, cancel := context.WithCancel(context.Background())
		started, release := make(chan struct{}), make(chan struct{})
		ctxErrDuringDrain := make(chan error, 1)
		done := make(chan error, 1)
		if err := b.Provision(ctx, broker.Subscription{Topic: "t", Group: "g"}); err != nil {
			t.Fatal(err)
		}
		go func() {
			done <- b.Subscribe(ctx, broker.Subscription{Topic: "t", Group: "g"}, func(hctx context.Context, m broker.Message) error {
				close(started)
				<-release // Subscribe's ctx is cancelled meanwhile
				ctxErrDuringDrain <- hctx.Err()
				return nil
			})
		}()
		if err := b.Publish(ctx, "t", broker.Message{Payload: []byte("x")}); err != nil {
			t.Fatal(err)
		}
		<-started
		cancel()
		synctest.Wait() // everything has seen the cancel; the drain timeout has not passed
		close(release)
		if err := <-done; err != nil {
			t.Fatalf("Subscribe = %v, want nil after cancel", err)
		}
		if err := <-ctxErrDuringDrain; err != nil {
			t.Fatalf("handler's context was cancelled before the drain timeout: %v", err)
		}
		if n := b.Pending("t", "g"); n != 0 {
			t.Fatalf("%d messages pending: the drained handler's message was requeued", n)
		}
	})
}

func TestDrainTimeoutCancelsStuckHandlers(t *testing.T) {
	b := memory.MustNew(memory.WithDrainTimeout(50 * time.Millisecond))
	started := make(chan struct{})
	go func() {
		_ = b.Subscribe(context.Background(), broker.Subscription{Topic: "t", Group: "g"}, func(ctx context.Context, m broker.Message) error {
			close(started)
			<-ctx.Done()
			return ctx.Err()
		})
	}()
	for b.Pending("t", "g") == 0 {
		_ = b.Publish(context.Background(), "t", broker.Message{Payload: []byte("x")})
		select {
		case <-started:
		case <-time.After(10 * time.Millisecond):
			continue
		}
		break
	}
	closed := make(chan struct{})
	go func() { _ = b.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("Close hung on a handler that waits for its context")
	}
}

// A message whose handler keeps failing when its subscription stops goes back
// to the group ahead of the later messages of its key that waited behind it.
func TestRequeueOnStopKeepsOrderPerKey(t *testing.T) {
	b := memory.MustNew()
	defer b.Close()
	s := broker.Subscription{Topic: "t", Group: "g"}
	if err := b.Provision(context.Background(), s); err != nil {
		t.Fatal(err)
	}
	if err := b.Publish(context.Background(), "t",
		broker.Message{ID: "1", Key: "k", Payload: []byte("1")},
		broker.Message{ID: "2", Key: "k", Payload: []byte("2")}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	failing := make(chan struct{})
	var once sync.Once
	done := make(chan error, 1)
	go func() {
		done <- b.Subscribe(ctx, s, func(_ context.Context, m broker.Message) error {
			if m.ID == "1" && m.Attempt >= 2 {
				once.Do(func() { close(failing) }) // "2" is taken and waits behind it
			}
			return errors.New("not yet")
		})
	}()
	<-failing
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Subscribe = %v", err)
	}
	var mu sync.Mutex
	var order []string
	ctx2, cancel2 := context.WithCancel(context.Background())
	go func() {
		done <- b.Subscribe(ctx2, s, func(_ context.Context, m broker.Message) error {
			mu.Lock()
			order = append(order, m.ID)
			if len(order) == 2 {
				cancel2()
			}
			mu.Unlock()
			return nil
		})
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("second Subscribe = %v", err)
		}
	case <-time.After(5 * time.Second):
		cancel2()
		<-done
		t.Fatal("the second subscription did not get both messages")
	}
	if len(order) != 2 || order[0] != "1" || order[1] != "2" {
		t.Fatalf("redelivery order %v, want [1 2]", order)
	}
}

// As the RabbitMQ adapter declares a dead-letter queue, a subscription with a
// dead-letter topic keeps its dead letters in a group of that topic (named
// after its own group) even when nobody subscribed to the topic yet.
func TestDeadLettersKeptWithoutSubscriber(t *testing.T) {
	b := memory.MustNew()
	defer b.Close()
	s := broker.Subscription{Topic: "orders", Group: "billing", MaxAttempts: 1}
	ctx, cancel := context.WithCancel(context.Background())
	if err := b.Provision(ctx, s); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		done <- b.Subscribe(ctx, s, func(context.Context, broker.Message) error { return errors.New("bad") })
	}()
	if err := b.Publish(ctx, "orders", broker.Message{ID: "o1", Payload: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 5*time.Second, "a dead letter", func() bool { return b.Pending("orders.dlq", "billing") > 0 })
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if n := b.Pending("orders.dlq", "billing"); n != 1 {
		t.Fatalf("%d dead letters kept in orders.dlq/billing, want 1", n)
	}
	if n := b.Pending("orders", "billing"); n != 0 {
		t.Fatalf("%d messages still pending on orders", n)
	}
}

func TestInvalidOptions(t *testing.T) {
	for name, opt := range map[string]memory.Option{
		"WithLogger(nil)":           memory.WithLogger(nil),
		"WithDrainTimeout(0)":       memory.WithDrainTimeout(0),
		"WithRetryBackoff(0, 1s)":   memory.WithRetryBackoff(0, time.Second),
		"WithRetryBackoff(1s, 1ms)": memory.WithRetryBackoff(time.Second, time.Millisecond),
		"nil option":                nil,
		"WithTracer(nil)":           memory.WithTracer(nil),
		"WithTracer(misspelt)":      memory.WithTracer(misspelt{}),
	} {
		b, err := memory.New(opt)
		if !errors.Is(err, memory.ErrInvalidOption) || b != nil {
			t.Errorf("New(%s) = %v, %v; want ErrInvalidOption", name, b, err)
		}
	}
	// A value implementing one tracer interface is enough.
	if _, err := memory.New(memory.WithTracer(endOnly{})); err != nil {
		t.Errorf("New(WithTracer(a DeadLetterTracer)): %v", err)
	}
}

// misspelt looks like a tracer but implements none of the interfaces.
type misspelt struct{}

func (misspelt) TracePublishBegin(ctx context.Context, _ broker.TracePublishStartData) context.Context {
	return ctx
}

type endOnly struct{}

func (endOnly) TraceDeadLetter(context.Context, broker.TraceDeadLetterData) {}
