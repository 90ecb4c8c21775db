package outbox_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/goleak"

	"github.com/go-integration/patterns/broker"
	"github.com/go-integration/patterns/broker/memory"
	"github.com/go-integration/patterns/broker/outbox"
	"github.com/go-integration/patterns/internal/testenv"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// env is one test's schema with the default outbox table, a writer pool and
// an in-memory broker.
type env struct {
	dsn   string
	db    *pgxpool.Pool
	mem   *memory.Broker
	topic string
}

func newEnv(t testing.TB) *env {
	t.Helper()
	_, dsn := testenv.Schema(t)
	e := &env{dsn: dsn, mem: memory.MustNew(), topic: testenv.Name(t, "topic")}
	t.Cleanup(func() { _ = e.mem.Close() })
	e.db = testenv.Pool(t, dsn)
	if err := outbox.Migrate(context.Background(), e.db); err != nil {
		t.Fatal(err)
	}
	return e
}

// add writes msgs in one committed transaction.
func (e *env) add(t testing.TB, msgs ...broker.Message) {
	t.Helper()
	ctx := context.Background()
	tx, err := e.db.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx.Rollback(ctx) }()
	if err := outbox.Add(ctx, tx, e.topic, msgs...); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
}

// run starts a relay until the test ends or stop is called; stop cancels Run
// and returns its error, which must be nil. The relay logs to the test
// unless opts hold another WithLogger (later options win).
func run(t testing.TB, pool *pgxpool.Pool, pub broker.Publisher, opts ...outbox.Option) (r *outbox.Relay, stop func() error) {
	t.Helper()
	opts = append([]outbox.Option{outbox.WithLogger(slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelInfo})))}, opts...)
	r, err := outbox.NewRelay(pool, pub, opts...)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	stop = sync.OnceValue(func() error {
		cancel()
		return <-done
	})
	t.Cleanup(func() {
		if err := stop(); err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return r, stop
}

// msg is message number n of key, its payload n in decimal.
func msg(key string, n int) broker.Message {
	return broker.Message{Key: key, Payload: []byte(strconv.Itoa(n))}
}

// collector subscribes to a topic and checks order per key as messages
// arrive: payloads of each key must come as 0, 1, 2, ... where a repeat of an
// ID already seen counts as a duplicate, not a break of order.
type collector struct {
	mu         sync.Mutex
	deliveries map[string]int // by ID
	next       map[string]int // by key: the payload expected next
	unique     int
	dups       int
	violations []string
	changed    chan struct{}
}

func (e *env) collect(t testing.TB, concurrency int) *collector {
	t.Helper()
	c := &collector{deliveries: map[string]int{}, next: map[string]int{}, changed: make(chan struct{}, 1)}
	s := broker.Subscription{Topic: e.topic, Group: "g", Concurrency: concurrency}
	ctx, cancel := context.WithCancel(context.Background())
	if err := e.mem.Provision(ctx, s); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- e.mem.Subscribe(ctx, s, c.handle) }()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return c
}

func (c *collector) handle(_ context.Context, m broker.Message) error {
	n, err := strconv.Atoi(string(m.Payload))
	c.mu.Lock()
	defer c.mu.Unlock()
	c.deliveries[m.ID]++
	switch {
	case c.deliveries[m.ID] > 1:
		c.dups++
	case err != nil:
		c.violations = append(c.violations, fmt.Sprintf("key %s: payload %q", m.Key, m.Payload))
		c.unique++
	default:
		c.unique++
		if n != c.next[m.Key] {
			c.violations = append(c.violations, fmt.Sprintf("key %s: got %d, want %d", m.Key, n, c.next[m.Key]))
		}
		c.next[m.Key] = n + 1
	}
	select {
	case c.changed <- struct{}{}:
	default:
	}
	return nil
}

// wait blocks until n distinct messages arrived, failing after timeout.
func (c *collector) wait(t testing.TB, n int, timeout time.Duration) {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		c.mu.Lock()
		got := c.unique
		c.mu.Unlock()
		if got >= n {
			return
		}
		select {
		case <-c.changed:
		case <-deadline.C:
			t.Fatalf("after %v: %d of %d messages arrived", timeout, got, n)
		}
	}
}

func (c *collector) check(t testing.TB, unique int) (dups int) {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.unique != unique {
		t.Errorf("%d distinct messages arrived, want %d", c.unique, unique)
	}
	for i, v := range c.violations {
		if i == 10 {
			t.Errorf("... and %d more order violations", len(c.violations)-10)
			break
		}
		t.Errorf("order broken: %s", v)
	}
	return c.dups
}

// faultyPublisher wraps a real publisher (the memory broker) with faults
// turned on by the test: down makes every Publish fail; after runs once a
// Publish was confirmed.
type faultyPublisher struct {
	broker.Publisher
	down   atomic.Bool
	calls  atomic.Int64
	after  func(topic string, msgs []broker.Message)
	refuse func(m broker.Message) bool // refuse a call holding such a message as invalid
}

var errBrokerDown = errors.New("test: broker down")

func (p *faultyPublisher) Publish(ctx context.Context, topic string, msgs ...broker.Message) error {
	p.calls.Add(1)
	if p.down.Load() {
		return fmt.Errorf("%w: %w", broker.ErrNotConfirmed, errBrokerDown)
	}
	for _, m := range msgs {
		if p.refuse != nil && p.refuse(m) {
			return fmt.Errorf("%w: test: message %s refused", broker.ErrInvalidMessage, m.ID)
		}
	}
	if err := p.Publisher.Publish(ctx, topic, msgs...); err != nil {
		return err
	}
	if p.after != nil {
		p.after(topic, msgs)
	}
	return nil
}

// tracer records what a relay traces. The context TraceBatchStart returns
// carries a value that TraceBatchEnd (and a traced publisher) must see.
type tracer struct {
	mu       sync.Mutex
	starts   []outbox.TraceBatchStartData
	ends     []outbox.TraceBatchEndData
	backoffs []outbox.TraceBackoffData
	lost     int // TraceBatchEnd calls without the context of TraceBatchStart

	ended     chan outbox.TraceBatchEndData // every end, dropped when full
	backedOff chan outbox.TraceBackoffData  // every backoff, dropped when full
}

type batchKey struct{}

func newTracer() *tracer {
	return &tracer{ended: make(chan outbox.TraceBatchEndData, 64), backedOff: make(chan outbox.TraceBackoffData, 64)}
}

func (tr *tracer) TraceBatchStart(ctx context.Context, d outbox.TraceBatchStartData) context.Context {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	tr.starts = append(tr.starts, d)
	return context.WithValue(ctx, batchKey{}, len(tr.starts))
}

func (tr *tracer) TraceBatchEnd(ctx context.Context, d outbox.TraceBatchEndData) {
	tr.mu.Lock()
	if ctx.Value(batchKey{}) == nil {
		tr.lost++
	}
	tr.ends = append(tr.ends, d)
	tr.mu.Unlock()
	select {
	case tr.ended <- d:
	default:
	}
}

func (tr *tracer) TraceBackoff(_ context.Context, d outbox.TraceBackoffData) {
	tr.mu.Lock()
	tr.backoffs = append(tr.backoffs, d)
	tr.mu.Unlock()
	select {
	case tr.backedOff <- d:
	default:
	}
}

// totals sums the ends: batches that published or set aside something,
// messages published, failed batches.
func (tr *tracer) totals() (batches, published, failed int) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	for _, e := range tr.ends {
		if e.Published+e.SetAside > 0 { // committed
			batches++
		}
		published += e.Published
		if e.Err != nil {
			failed++
		}
	}
	return batches, published, failed
}

// levels counts log records by level and passes them on to next.
type levels struct {
	slog.Handler
	warn, info *atomic.Int64
}

func newLevels(t testing.TB) *levels {
	return &levels{Handler: slog.NewTextHandler(t.Output(), nil), warn: new(atomic.Int64), info: new(atomic.Int64)}
}

func (h *levels) Handle(ctx context.Context, r slog.Record) error {
	switch r.Level {
	case slog.LevelWarn:
		h.warn.Add(1)
	case slog.LevelInfo:
		h.info.Add(1)
	}
	return h.Handler.Handle(ctx, r)
}

func (h *levels) WithAttrs(as []slog.Attr) slog.Handler {
	return &levels{Handler: h.Handler.WithAttrs(as), warn: h.warn, info: h.info}
}

func (h *levels) WithGroup(name string) slog.Handler {
	return &levels{Handler: h.Handler.WithGroup(name), warn: h.warn, info: h.info}
}
