package kafka

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/go-integration/patterns/broker"
	"github.com/go-integration/patterns/internal/testenv"
)

// stuckAfter is the threshold the health tests use.
const stuckAfter = 300 * time.Millisecond

// logCapture is a slog.Handler that keeps every record.
type logCapture struct {
	mu   sync.Mutex
	recs []slog.Record
}

func (c *logCapture) Enabled(context.Context, slog.Level) bool { return true }
func (c *logCapture) WithAttrs([]slog.Attr) slog.Handler       { return c }
func (c *logCapture) WithGroup(string) slog.Handler            { return c }
func (c *logCapture) Handle(_ context.Context, r slog.Record) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.recs = append(c.recs, r.Clone())
	return nil
}

// lines returns the attributes of the records at level whose message
// starts with prefix.
func (c *logCapture) lines(level slog.Level, prefix string) []map[string]any {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []map[string]any
	for _, r := range c.recs {
		if r.Level != level || !strings.HasPrefix(r.Message, prefix) {
			continue
		}
		m := map[string]any{}
		r.Attrs(func(a slog.Attr) bool { m[a.Key] = a.Value.Any(); return true })
		out = append(out, m)
	}
	return out
}

// healthTracer records PartitionHealthTracer calls, with when they came.
type healthTracer struct {
	mu          sync.Mutex
	stuck       []TracePartitionStuckData
	stuckAt     []time.Time
	recovered   []TracePartitionRecoveredData
	recoveredAt []time.Time
}

func (h *healthTracer) TracePartitionStuck(_ context.Context, d TracePartitionStuckData) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.stuck = append(h.stuck, d)
	h.stuckAt = append(h.stuckAt, time.Now())
}

func (h *healthTracer) TracePartitionRecovered(_ context.Context, d TracePartitionRecoveredData) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.recovered = append(h.recovered, d)
	h.recoveredAt = append(h.recoveredAt, time.Now())
}

func (h *healthTracer) counts() (stuck, recovered int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.stuck), len(h.recovered)
}

// blockingHandler blocks the record with key "blocked" until release is
// closed (or its context ends) and handles the others at once.
type blockingHandler struct {
	release chan struct{}
	started chan *kgo.Record // the blocked record, once its handler runs
	mu      sync.Mutex
	handled map[string]int
}

func newBlockingHandler() *blockingHandler {
	return &blockingHandler{release: make(chan struct{}), started: make(chan *kgo.Record, 1), handled: map[string]int{}}
}

func (b *blockingHandler) handle(ctx context.Context, m broker.Message) error {
	if m.Key == "blocked" {
		select {
		case b.started <- m.Raw.(*kgo.Record):
		default:
		}
		select {
		case <-b.release:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	b.mu.Lock()
	b.handled[m.Key]++
	b.mu.Unlock()
	return nil
}

func (b *blockingHandler) count() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := 0
	for _, c := range b.handled {
		n += c
	}
	return n
}

// stuckSetup publishes one "blocked" record and 30 others over 3
// partitions, subscribes with a blocking handler and waits until the
// blocked record's handler runs and every other record was handled.
func stuckSetup(t *testing.T, opts ...SubscriberOption) (s *Subscriber, topic string, b *blockingHandler, blocked *kgo.Record, stop func() error) {
	t.Helper()
	e := newEnv(t)
	topic = e.topic(3)
	msgs := []broker.Message{{Key: "blocked", Payload: []byte("x")}}
	for i := range 30 {
		msgs = append(msgs, broker.Message{Key: fmt.Sprintf("k%d", i), Payload: []byte("x")})
	}
	if err := e.publisher().Publish(ctxT(t, 10*time.Second), topic, msgs...); err != nil {
		t.Fatal(err)
	}
	s = e.subscriber(append([]SubscriberOption{WithStuckAfter(stuckAfter)}, opts...)...)
	b = newBlockingHandler()
	stop = subscribe(t, s, broker.Subscription{Topic: topic, Group: "health", Concurrency: 4}, b.handle)
	select {
	case blocked = <-b.started:
	case <-time.After(20 * time.Second):
		t.Fatal("the blocked record never reached its handler")
	}
	testenv.Eventually(t, 20*time.Second, "the other records handled", func() bool { return b.count() == 30 })
	return s, topic, b, blocked, stop
}

// TestPartitionStuckAndRecovered: a handler blocking on one key stalls its
// partition while the others go on; the partition is reported stuck (log
// line, tracer, Partitions) within the threshold plus one check period,
// and recovered once the handler returns. The other partitions are never
// reported.
func TestPartitionStuckAndRecovered(t *testing.T) {
	logs := &logCapture{}
	ht := &healthTracer{}
	s, topic, b, blocked, stop := stuckSetup(t, WithTracer(ht), WithLogger(slog.New(logs)))
	p := blocked.Partition

	testenv.Eventually(t, 10*time.Second, "the stuck event", func() bool { n, _ := ht.counts(); return n > 0 })
	ht.mu.Lock()
	st, at := ht.stuck[0], ht.stuckAt[0]
	ht.mu.Unlock()
	if st.Topic != topic || st.Group != "health" || st.Partition != p || st.Committed != blocked.Offset ||
		st.Lag <= 0 || st.HighWatermark != st.Committed+st.Lag || st.Threshold != stuckAfter || st.Since.IsZero() {
		t.Errorf("stuck event %+v, want partition %d stuck at offset %d with lag", st, p, blocked.Offset)
	}
	if took := at.Sub(st.Since); took < stuckAfter || took > stuckAfter+checkPeriod(stuckAfter)+500*time.Millisecond {
		t.Errorf("reported %v after the offset last moved, want within %v plus the %v check period", took, stuckAfter, checkPeriod(stuckAfter))
	}

	var stuck []PartitionStatus
	for _, ps := range s.Partitions() {
		if ps.Stuck {
			stuck = append(stuck, ps)
			continue
		}
		if ps.Lag != 0 {
			t.Errorf("partition %+v: every record of it was handled, want no lag", ps)
		}
	}
	if len(stuck) != 1 || stuck[0].Partition != p || stuck[0].Committed != blocked.Offset || stuck[0].Lag != st.Lag ||
		stuck[0].Topic != topic || stuck[0].Group != "health" || !stuck[0].Since.Equal(st.Since) {
		t.Errorf("stuck partitions %+v, want only partition %d at offset %d", stuck, p, blocked.Offset)
	}
	warns := logs.lines(slog.LevelWarn, "kafka: partition stuck")
	if len(warns) != 1 {
		t.Fatalf("stuck log lines %v, want one", warns)
	}
	w := warns[0]
	if w["topic"] != topic || w["group"] != "health" || w["partition"] != int64(p) || w["lag"] != st.Lag ||
		w["committed_offset"] != blocked.Offset || !w["stuck_since"].(time.Time).Equal(st.Since) {
		t.Errorf("stuck log line %v", w)
	}

	close(b.release)
	testenv.Eventually(t, 10*time.Second, "the recovered event", func() bool { _, n := ht.counts(); return n > 0 })
	ht.mu.Lock()
	rec := ht.recovered[0]
	ht.mu.Unlock()
	if rec.Partition != p || rec.Topic != topic || rec.Group != "health" || rec.Released || rec.Committed <= blocked.Offset || rec.StuckFor < stuckAfter {
		t.Errorf("recovered event %+v", rec)
	}
	for _, ps := range s.Partitions() {
		if ps.Stuck {
			t.Errorf("partition %+v still stuck after the recovered event", ps)
		}
	}
	if infos := logs.lines(slog.LevelInfo, "kafka: stuck partition recovered"); len(infos) != 1 || infos[0]["partition"] != int64(p) {
		t.Errorf("recovered log lines %v, want one for partition %d", infos, p)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if n, r := ht.counts(); n != 1 || r != 1 {
		t.Errorf("%d stuck and %d recovered events, want one each", n, r)
	}
	if ps := s.Partitions(); len(ps) != 0 {
		t.Errorf("Partitions after Subscribe returned: %+v, want none", ps)
	}
}

// TestStuckPartitionReleased: a partition that stops being consumed while
// stuck (here: Subscribe ends; a revoke takes the same path) is forgotten,
// and its episode ends with a recovered event marked Released.
func TestStuckPartitionReleased(t *testing.T) {
	ht := &healthTracer{}
	s, _, _, blocked, stop := stuckSetup(t, WithTracer(ht), WithDrainTimeout(100*time.Millisecond))
	testenv.Eventually(t, 10*time.Second, "the stuck event", func() bool { n, _ := ht.counts(); return n > 0 })
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	ht.mu.Lock()
	defer ht.mu.Unlock()
	if len(ht.stuck) != 1 || len(ht.recovered) != 1 {
		t.Fatalf("events: stuck %+v, recovered %+v; want one each", ht.stuck, ht.recovered)
	}
	if r := ht.recovered[0]; !r.Released || r.Partition != blocked.Partition || r.Committed != blocked.Offset || r.StuckFor < stuckAfter {
		t.Errorf("recovered event %+v, want the release of partition %d at offset %d", r, blocked.Partition, blocked.Offset)
	}
	if ps := s.Partitions(); len(ps) != 0 {
		t.Errorf("Partitions after Subscribe returned: %+v, want none", ps)
	}
}

// TestSlowConsumerNotStuck: a consumer that is slow but moves (20 ms per
// record, lag above zero for more than five thresholds) is never reported.
func TestSlowConsumerNotStuck(t *testing.T) {
	e := newEnv(t)
	topic := e.topic(1)
	const n = 80
	msgs := make([]broker.Message, n)
	for i := range msgs {
		msgs[i] = broker.Message{Key: "one", Payload: []byte("x")}
	}
	if err := e.publisher().Publish(ctxT(t, 10*time.Second), topic, msgs...); err != nil {
		t.Fatal(err)
	}
	logs := &logCapture{}
	ht := &healthTracer{}
	s := e.subscriber(WithStuckAfter(stuckAfter), WithTracer(ht), WithLogger(slog.New(logs)))
	var mu sync.Mutex
	var lags []int64
	handled := 0
	stop := subscribe(t, s, broker.Subscription{Topic: topic, Group: "slow"}, func(ctx context.Context, m broker.Message) error {
		time.Sleep(20 * time.Millisecond) // the work, not a wait for readiness
		mu.Lock()
		defer mu.Unlock()
		handled++
		if ps := s.Partitions(); len(ps) == 1 {
			lags = append(lags, ps[0].Lag)
		}
		return nil
	})
	start := time.Now()
	testenv.Eventually(t, 30*time.Second, "every record handled", func() bool { mu.Lock(); defer mu.Unlock(); return handled == n })
	if took := time.Since(start); took < 4*stuckAfter {
		t.Errorf("the run took only %v, want several thresholds", took)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(lags) != n || lags[0] != n || lags[n-1] != 1 || slices.Contains(lags, 0) {
		t.Errorf("lag seen by the handler: %v, want %d down to 1", lags, n)
	}
	if st, rec := ht.counts(); st != 0 || rec != 0 {
		t.Errorf("a slow consumer was reported: %d stuck, %d recovered events", st, rec)
	}
	if w := logs.lines(slog.LevelWarn, "kafka: partition stuck"); len(w) != 0 {
		t.Errorf("stuck log lines for a slow consumer: %v", w)
	}
}

// TestStuckLagWhilePollingHeldUp: when the engine holds MaxInFlight records
// it stops polling, so no fetch brings new high watermarks; the health
// check looks the end offsets up itself, and the lag counts the records
// waiting unfetched.
func TestStuckLagWhilePollingHeldUp(t *testing.T) {
	e := newEnv(t)
	topic := e.topic(1)
	pub := e.publisher()
	if err := pub.Publish(ctxT(t, 10*time.Second), topic, broker.Message{Key: "blocked", Payload: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	ht := &healthTracer{}
	s := e.subscriber(WithStuckAfter(stuckAfter), WithTracer(ht), WithDrainTimeout(100*time.Millisecond))
	b := newBlockingHandler()
	subscribe(t, s, broker.Subscription{Topic: topic, Group: "held", MaxInFlight: 1}, b.handle)
	select {
	case <-b.started:
	case <-time.After(20 * time.Second):
		t.Fatal("the blocked record never reached its handler")
	}
	var more []broker.Message
	for range 5 {
		more = append(more, broker.Message{Key: "later", Payload: []byte("x")})
	}
	if err := pub.Publish(ctxT(t, 10*time.Second), topic, more...); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 10*time.Second, "lag 6 from the end offsets", func() bool {
		ps := s.Partitions()
		return len(ps) == 1 && ps[0].Lag == 6 && ps[0].HighWatermark == 6 && ps[0].Stuck
	})
	close(b.release)
	testenv.Eventually(t, 10*time.Second, "recovered, no lag", func() bool {
		ps := s.Partitions()
		_, rec := ht.counts()
		return rec == 1 && len(ps) == 1 && ps[0].Lag == 0 && !ps[0].Stuck
	})
}

// TestStuckAfterOption: WithStuckAfter refuses what cannot be a threshold,
// and WithTracer takes a value that only traces partition health.
func TestStuckAfterOption(t *testing.T) {
	bs := []string{"127.0.0.1:1"}
	for _, d := range []time.Duration{0, -time.Second, 5, 9 * time.Millisecond} {
		s, err := NewSubscriber(bs, WithStuckAfter(d))
		if !errors.Is(err, ErrInvalidOption) || !strings.Contains(err.Error(), "WithStuckAfter") {
			t.Errorf("WithStuckAfter(%v): %v, want ErrInvalidOption naming the option", d, err)
		}
		if s != nil {
			s.Close()
		}
	}
	s, err := NewSubscriber(bs, WithStuckAfter(minStuckAfter), WithTracer(&healthTracer{}))
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	_, err = NewSubscriber(bs, WithTracer(struct{ TracePartitionStuk func() }{}))
	if !errors.Is(err, ErrInvalidOption) || !strings.Contains(err.Error(), "kafka.PartitionHealthTracer") {
		t.Errorf("a value that is no tracer: %v, want ErrInvalidOption listing kafka.PartitionHealthTracer", err)
	}
	if got := checkPeriod(DefaultStuckAfter); got != 15*time.Second {
		t.Errorf("check period for the default threshold %v, want 15s", got)
	}
}
