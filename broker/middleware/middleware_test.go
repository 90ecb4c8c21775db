package middleware_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"go.uber.org/goleak"

	"github.com/go-integration/patterns/broker"
	"github.com/go-integration/patterns/broker/memory"
	"github.com/go-integration/patterns/broker/middleware"
	"github.com/go-integration/patterns/internal/testenv"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// run subscribes h on a fresh memory broker, publishes msgs and returns the
// broker; the subscription ends with the test.
func run(t *testing.T, s broker.Subscription, h broker.Handler, msgs ...broker.Message) *memory.Broker {
	t.Helper()
	b := memory.MustNew()
	ctx, cancel := context.WithCancel(context.Background())
	if err := b.Provision(ctx, s); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); _ = b.Subscribe(ctx, s, h) }()
	t.Cleanup(func() { cancel(); <-done; _ = b.Close() })
	if err := b.Publish(ctx, s.Topic, msgs...); err != nil {
		t.Fatal(err)
	}
	return b
}

// retry is middleware.Retry(opts...), failing t on an error.
func retry(t testing.TB, opts ...middleware.RetryOption) broker.Middleware {
	t.Helper()
	mw, err := middleware.Retry(opts...)
	if err != nil {
		t.Fatal(err)
	}
	return mw
}

// deadLetter is middleware.DeadLetter, failing t on an error.
func deadLetter(t testing.TB, pub broker.Publisher, topic, group string) broker.Middleware {
	t.Helper()
	mw, err := middleware.DeadLetter(pub, topic, group)
	if err != nil {
		t.Fatal(err)
	}
	return mw
}

// dedup is middleware.Dedup(s, opts...), failing t on an error.
func dedup(t testing.TB, s middleware.DedupStore, opts ...middleware.DedupOption) broker.Middleware {
	t.Helper()
	mw, err := middleware.Dedup(s, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return mw
}

// fast retries 4 times with short waits.
var fast = []middleware.RetryOption{middleware.WithMaxAttempts(4), middleware.WithBackoff(time.Millisecond, 5*time.Millisecond)}

func TestRetrySucceedsWithinOneDelivery(t *testing.T) {
	var calls atomic.Int32
	var deliveredAt atomic.Int32
	h := retry(t, fast...)(func(ctx context.Context, m broker.Message) error {
		if calls.Add(1) < 3 {
			return errors.New("flaky")
		}
		deliveredAt.Store(int32(m.Attempt))
		return nil
	})
	run(t, broker.Subscription{Topic: "t", Group: "g"}, h, broker.Message{Payload: []byte("x")})
	testenv.Eventually(t, 10*time.Second, "success", func() bool { return deliveredAt.Load() != 0 })
	if calls.Load() != 3 || deliveredAt.Load() != 1 {
		t.Fatalf("calls=%d broker attempt=%d, want 3 calls in the first delivery", calls.Load(), deliveredAt.Load())
	}
}

func TestRetryStopsOnPermanentAndAtMaxAttempts(t *testing.T) {
	var calls int
	h := retry(t, fast...)(func(ctx context.Context, m broker.Message) error {
		calls++
		return broker.Permanent(errors.New("bad input"))
	})
	err := h(context.Background(), broker.Message{})
	var re *middleware.RetryError
	if !errors.As(err, &re) || re.Attempts != 1 || calls != 1 || !broker.IsPermanent(err) {
		t.Fatalf("permanent: err=%v calls=%d", err, calls)
	}
	calls = 0
	h = retry(t, fast...)(func(ctx context.Context, m broker.Message) error { calls++; return errors.New("down") })
	err = h(context.Background(), broker.Message{})
	if !errors.As(err, &re) || re.Attempts != 4 || calls != 4 {
		t.Fatalf("max attempts: err=%v calls=%d", err, calls)
	}
}

func TestRetryHonoursContextAndElapsed(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	h := retry(t, middleware.WithMaxAttempts(100), middleware.WithBackoff(time.Hour, time.Hour))(func(ctx context.Context, m broker.Message) error { return errors.New("down") })
	start := time.Now()
	err := h(ctx, broker.Message{})
	if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > 5*time.Second {
		t.Fatalf("err=%v after %v: the backoff did not end with the context", err, time.Since(start))
	}
	var calls int
	h = retry(t, middleware.WithMaxAttempts(1000), middleware.WithBackoff(time.Millisecond, time.Millisecond), middleware.WithMaxElapsed(30*time.Millisecond))(
		func(ctx context.Context, m broker.Message) error { calls++; return errors.New("down") })
	if err := h(context.Background(), broker.Message{}); err == nil || calls >= 1000 {
		t.Fatalf("MaxElapsed ignored: %d calls", calls)
	}
}

func TestDeadLetterPublishesWithOriginHeaders(t *testing.T) {
	dlqBroker := memory.MustNew()
	defer dlqBroker.Close()
	ctx := context.Background()
	if err := dlqBroker.Provision(ctx, broker.Subscription{Topic: "orders.dlq", Group: "ops"}); err != nil {
		t.Fatal(err)
	}
	got := make(chan broker.Message, 1)
	go func() {
		_ = dlqBroker.Subscribe(ctx, broker.Subscription{Topic: "orders.dlq", Group: "ops"}, func(ctx context.Context, m broker.Message) error {
			got <- m
			return nil
		})
	}()
	h := broker.Chain(
		deadLetter(t, dlqBroker, "orders.dlq", "billing"),
		retry(t, fast...),
	)(func(ctx context.Context, m broker.Message) error { return errors.New("card declined") })
	b := run(t, broker.Subscription{Topic: "orders", Group: "billing"}, h,
		broker.Message{ID: "o1", Key: "eu.fr", Payload: []byte("order"), Header: map[string]string{"trace": "t"}})
	var m broker.Message
	select {
	case m = <-got:
	case <-time.After(10 * time.Second):
		t.Fatal("nothing dead-lettered")
	}
	want := map[string]string{
		broker.HeaderOriginTopic: "orders", broker.HeaderOriginKey: "eu.fr", broker.HeaderOriginGroup: "billing",
		broker.HeaderAttempts: "4", middleware.HeaderDeliveries: "1", "trace": "t",
	}
	for k, v := range want {
		if m.Header[k] != v {
			t.Errorf("header %s = %q, want %q", k, m.Header[k], v)
		}
	}
	if !strings.Contains(m.Header[broker.HeaderError], "card declined") || m.ID != "o1" || string(m.Payload) != "order" {
		t.Errorf("dead-lettered message %+v", m)
	}
	if _, err := time.Parse(time.RFC3339Nano, m.Header[broker.HeaderDeadLetteredAt]); err != nil {
		t.Errorf("dead-lettered-at: %v", err)
	}
	testenv.Eventually(t, 10*time.Second, "ack of the source message", func() bool { return b.Pending("orders", "billing") == 0 })
}

func TestDeadLetterKeepsMessageWhenPublishFails(t *testing.T) {
	closed := memory.MustNew()
	_ = closed.Close()
	var calls atomic.Int32
	h := deadLetter(t, closed, "x.dlq", "g")(func(ctx context.Context, m broker.Message) error {
		calls.Add(1)
		return errors.New("fails")
	})
	err := h(context.Background(), broker.Message{ID: "m"})
	if err == nil || !errors.Is(err, broker.ErrClosed) {
		t.Fatalf("err = %v: a failed dead-letter publish must not ack", err)
	}
	// On a broker the message is redelivered, not lost.
	run(t, broker.Subscription{Topic: "t", Group: "g"}, h, broker.Message{Payload: []byte("x")})
	testenv.Eventually(t, 10*time.Second, "redelivery", func() bool { return calls.Load() >= 3 })
}

func TestRecoverAndTimeout(t *testing.T) {
	err := middleware.Recover()(func(ctx context.Context, m broker.Message) error { panic("boom") })(context.Background(), broker.Message{})
	var pe *middleware.PanicError
	if !errors.Is(err, middleware.ErrPanic) || !errors.As(err, &pe) || pe.Value != "boom" || len(pe.Stack) == 0 {
		t.Fatalf("Recover: %v", err)
	}
	// Timeout inside Retry: every attempt gets a fresh deadline (Watermill #467).
	var deadlines []time.Duration
	h := broker.Chain(retry(t, fast...), func() broker.Middleware {
		mw, err := middleware.Timeout(50 * time.Millisecond)
		if err != nil {
			t.Fatal(err)
		}
		return mw
	}())(func(ctx context.Context, m broker.Message) error {
		dl, _ := ctx.Deadline()
		deadlines = append(deadlines, time.Until(dl))
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return errors.New("again")
	})
	_ = h(context.Background(), broker.Message{})
	if len(deadlines) != 4 {
		t.Fatalf("%d attempts", len(deadlines))
	}
	for i, d := range deadlines {
		if d < 30*time.Millisecond {
			t.Fatalf("attempt %d started with %v left: the deadline was not fresh", i+1, d)
		}
	}
}

func TestDedupHandlesEachIDOnce(t *testing.T) {
	store := middleware.NewMemoryDedupStore()
	var mu sync.Mutex
	handled := map[string]int{}
	var failOnce atomic.Bool
	h := dedup(t, store, middleware.WithHandledFor(time.Hour))(func(ctx context.Context, m broker.Message) error {
		if m.ID == "flaky" && !failOnce.Swap(true) {
			return errors.New("first try fails")
		}
		mu.Lock()
		handled[m.ID]++
		mu.Unlock()
		return nil
	})
	msgs := []broker.Message{{ID: "a"}, {ID: "a"}, {ID: "b"}, {ID: "flaky"}, {ID: "a"}, {ID: "b"}}
	b := run(t, broker.Subscription{Topic: "t", Group: "g", Concurrency: 4}, h, msgs...)
	testenv.Eventually(t, 10*time.Second, "all handled", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(handled) == 3 && b.Pending("t", "g") == 0
	})
	mu.Lock()
	defer mu.Unlock()
	for id, n := range handled {
		if n != 1 {
			t.Errorf("%s handled %d times", id, n)
		}
	}
	if c, _ := store.Claim(context.Background(), "flaky", time.Hour); c.Result != middleware.Handled {
		t.Errorf("flaky not remembered as handled after its redelivery succeeded: %v", c.Result)
	}
}

func TestDedupInProgressIsRedelivered(t *testing.T) {
	store := middleware.NewMemoryDedupStore()
	if c, _ := store.Claim(context.Background(), "x", time.Hour); c.Result != middleware.Claimed {
		t.Fatal("first claim")
	}
	err := dedup(t, store, middleware.WithHandledFor(time.Hour))(func(context.Context, broker.Message) error { return nil })(context.Background(), broker.Message{ID: "x"})
	if !errors.Is(err, middleware.ErrInProgress) {
		t.Fatalf("err = %v, want ErrInProgress", err)
	}
	// A claim expires: a crashed handler does not block the ID forever.
	synctest.Test(t, func(t *testing.T) {
		store := middleware.NewMemoryDedupStore()
		if c, _ := store.Claim(context.Background(), "y", time.Second); c.Result != middleware.Claimed {
			t.Fatal("claim y")
		}
		time.Sleep(time.Second)
		if c, _ := store.Claim(context.Background(), "y", time.Hour); c.Result != middleware.Claimed {
			t.Fatalf("expired claim still held: %v", c.Result)
		}
	})
}

// A handler that panics inside Dedup (Recover outside it, as the package
// documentation chains them) releases its claim like one that fails, so the
// redelivery runs instead of being refused as in progress until the TTL ends.
func TestDedupReleasesClaimWhenHandlerPanics(t *testing.T) {
	store := middleware.NewMemoryDedupStore()
	var calls atomic.Int32
	h := broker.Chain(middleware.Recover(), dedup(t, store, middleware.WithHandledFor(time.Hour)))(func(context.Context, broker.Message) error {
		if calls.Add(1) == 1 {
			panic("handler bug")
		}
		return nil
	})
	m := broker.Message{ID: "p", Attempt: 1}
	if err := h(context.Background(), m); !errors.Is(err, middleware.ErrPanic) {
		t.Fatalf("first delivery = %v, want ErrPanic", err)
	}
	m.Attempt = 2
	if err := h(context.Background(), m); err != nil {
		t.Fatalf("redelivery after a panic = %v, want the handler to run", err)
	}
	if n := calls.Load(); n != 2 {
		t.Fatalf("handler ran %d times, want 2", n)
	}
	if c, _ := store.Claim(context.Background(), "p", time.Hour); c.Result != middleware.Handled {
		t.Fatalf("after the redelivery succeeded the store says %v, want Handled", c.Result)
	}
}

// countingPublisher counts Publish calls and, like some publishers once a
// message is buffered, does not look at the context.
type countingPublisher struct{ n atomic.Int32 }

func (p *countingPublisher) Publish(context.Context, string, ...broker.Message) error {
	p.n.Add(1)
	return nil
}
func (p *countingPublisher) Close() error { return nil }

// A handler that fails because its context ended (the subscription is
// shutting down) has not shown the message to be bad: DeadLetter returns the
// error for the broker to redeliver instead of dead-lettering the message.
func TestDeadLetterNotWhenContextDone(t *testing.T) {
	pub := &countingPublisher{}
	h := broker.Chain(
		deadLetter(t, pub, "x.dlq", "g"),
		retry(t, fast...),
	)(func(ctx context.Context, m broker.Message) error {
		<-ctx.Done()
		return ctx.Err()
	})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := h(ctx, broker.Message{ID: "m", Attempt: 1}); !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want the handler's context.Canceled", err)
	}
	if n := pub.n.Load(); n != 0 {
		t.Fatalf("%d dead letters published for a message cut off by shutdown", n)
	}
}

// retryRecorder records TraceRetry calls.
type retryRecorder struct {
	mu   sync.Mutex
	data []middleware.TraceRetryData
}

func (r *retryRecorder) TraceRetry(_ context.Context, d middleware.TraceRetryData) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.data = append(r.data, d)
}

func TestRetryTracer(t *testing.T) {
	r := &retryRecorder{}
	down := errors.New("down")
	calls := 0
	h := retry(t, middleware.WithMaxAttempts(3), middleware.WithBackoff(time.Millisecond, 2*time.Millisecond), middleware.WithTracer(r))(
		func(ctx context.Context, m broker.Message) error { calls++; return down })
	err := h(context.Background(), broker.Message{ID: "m", Topic: "orders"})
	if !errors.Is(err, down) {
		t.Fatal(err)
	}
	if len(r.data) != 3 {
		t.Fatalf("traced %d attempts, want 3: %+v", len(r.data), r.data)
	}
	for i, d := range r.data {
		last := i == 2
		ceiling := []time.Duration{time.Millisecond, 2 * time.Millisecond, 0}[i]
		if d.MessageID != "m" || d.Topic != "orders" || d.Attempt != i+1 || d.Err != down || d.GaveUp != last || d.Wait < 0 || d.Wait > ceiling {
			t.Fatalf("attempt %d traced %+v", i+1, d)
		}
	}
	// A permanent error: one event, given up at once.
	r.data = nil
	perm := broker.Permanent(errors.New("bad input"))
	h = retry(t, middleware.WithTracer(r))(func(context.Context, broker.Message) error { return perm })
	if err := h(context.Background(), broker.Message{ID: "p"}); !broker.IsPermanent(err) {
		t.Fatal(err)
	}
	if len(r.data) != 1 || !r.data[0].GaveUp || r.data[0].Wait != 0 || !broker.IsPermanent(r.data[0].Err) {
		t.Fatalf("permanent: traced %+v", r.data)
	}
	// Success: nothing traced.
	r.data = nil
	if err := retry(t, middleware.WithTracer(r))(func(context.Context, broker.Message) error { return nil })(context.Background(), broker.Message{}); err != nil || len(r.data) != 0 {
		t.Fatalf("success: %v, traced %+v", err, r.data)
	}
}

// The waits Retry takes are full-jitter (internal/backoff): spread over
// [0, cap] with the cap doubling from the minimum to the maximum.
func TestRetryBackoffIsJitteredAndCapped(t *testing.T) {
	r := &retryRecorder{}
	h := retry(t, middleware.WithMaxAttempts(11), middleware.WithBackoff(time.Microsecond, 64*time.Microsecond), middleware.WithTracer(r))(
		func(context.Context, broker.Message) error { return errors.New("down") })
	for range 100 {
		_ = h(context.Background(), broker.Message{})
	}
	distinct := map[time.Duration]bool{}
	for _, d := range r.data {
		ceiling := min(time.Duration(1<<(d.Attempt-1))*time.Microsecond, 64*time.Microsecond)
		if d.GaveUp {
			ceiling = 0
		}
		if d.Wait < 0 || d.Wait > ceiling {
			t.Fatalf("attempt %d waited %v, outside [0, %v]", d.Attempt, d.Wait, ceiling)
		}
		distinct[d.Wait] = true
	}
	if len(distinct) < 30 {
		t.Fatalf("only %d distinct waits in %d: not jittered", len(distinct), len(r.data))
	}
}

func TestRetryRefusesBadOptions(t *testing.T) {
	for _, tc := range []struct {
		opt  middleware.RetryOption
		want string
	}{
		{nil, "nil option"},
		{middleware.WithMaxAttempts(0), "WithMaxAttempts(0)"},
		{middleware.WithBackoff(0, time.Second), "WithBackoff(0s, 1s)"},
		{middleware.WithBackoff(time.Second, time.Millisecond), "WithBackoff(1s, 1ms)"},
		{middleware.WithMaxElapsed(0), "WithMaxElapsed(0s)"},
		{middleware.WithTracer(struct{}{}), "implements none of RetryTracer"},
		{middleware.WithTracer(&dedupRecorder{}), "implements none of RetryTracer"},
	} {
		mw, err := middleware.Retry(tc.opt)
		if !errors.Is(err, middleware.ErrInvalidOption) || !strings.Contains(err.Error(), tc.want) || mw != nil {
			t.Errorf("Retry(%s) = %v; want ErrInvalidOption naming it", tc.want, err)
		}
	}
	// Several bad options are all named.
	_, err := middleware.Retry(middleware.WithMaxAttempts(-1), middleware.WithMaxElapsed(-1))
	if err == nil || !strings.Contains(err.Error(), "WithMaxAttempts(-1)") || !strings.Contains(err.Error(), "WithMaxElapsed(-1ns)") {
		t.Fatalf("two bad options: %v", err)
	}
}

// Timeout and DeadLetter refuse bad arguments at construction.
func TestTimeoutAndDeadLetterRefuseBadArguments(t *testing.T) {
	pub := &countingPublisher{}
	for name, build := range map[string]func() (broker.Middleware, error){
		"Timeout(0s)":               func() (broker.Middleware, error) { return middleware.Timeout(0) },
		"Timeout(-1s)":              func() (broker.Middleware, error) { return middleware.Timeout(-time.Second) },
		"DeadLetter: nil Publisher": func() (broker.Middleware, error) { return middleware.DeadLetter(nil, "x.dlq", "g") },
		"DeadLetter: empty topic":   func() (broker.Middleware, error) { return middleware.DeadLetter(pub, "", "g") },
	} {
		mw, err := build()
		if !errors.Is(err, middleware.ErrInvalidOption) || !strings.Contains(err.Error(), name) || mw != nil {
			t.Errorf("%s: %v (middleware returned: %v)", name, err, mw != nil)
		}
	}
	if pub.n.Load() != 0 {
		t.Fatal("published with an empty topic")
	}
}
