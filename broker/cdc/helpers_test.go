package cdc_test

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/goleak"

	"github.com/go-integration/patterns/broker"
	"github.com/go-integration/patterns/broker/cdc"
	"github.com/go-integration/patterns/broker/memory"
	"github.com/go-integration/patterns/internal/testenv"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// env is one test's schema, slot, publication and state table.
type env struct {
	schema, dsn string
	db          *pgxpool.Pool
	slot, pub   string
	state       string
}

func newEnv(t testing.TB) *env {
	t.Helper()
	schema, dsn := testenv.Schema(t)
	e := &env{schema: schema, dsn: dsn, slot: testenv.Name(t, "slot"), pub: testenv.Name(t, "pub"), state: schema + ".cdc_state"}
	e.db = testenv.Pool(t, dsn)
	// Registered after the schema: runs before it is dropped.
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		for {
			err := cdc.DropWithState(ctx, dsn, e.slot, e.pub, e.state)
			if err == nil {
				return
			}
			if !errors.Is(err, cdc.ErrSlotInUse) || ctx.Err() != nil {
				t.Errorf("drop slot %s: %v", e.slot, err)
				return
			}
			time.Sleep(50 * time.Millisecond) // the walsender of a closed source is exiting
		}
	})
	return e
}

func (e *env) exec(t testing.TB, sql string, args ...any) {
	t.Helper()
	if _, err := e.db.Exec(context.Background(), sql, args...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

// opts are the options every test source uses, before its own.
func (e *env) opts(t testing.TB, more ...cdc.Option) []cdc.Option {
	return append([]cdc.Option{
		cdc.WithSlot(e.slot), cdc.WithPublication(e.pub), cdc.WithStateTable(e.state),
		cdc.WithStatusInterval(200 * time.Millisecond), cdc.WithBackoff(10*time.Millisecond, 100*time.Millisecond),
		cdc.WithDrainTimeout(5 * time.Second),
		cdc.WithLogger(slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelInfo}))),
	}, more...)
}

// start creates a source and runs it until the test ends or stop is called;
// stop closes it and returns Run's error.
func (e *env) start(t testing.TB, pub broker.Publisher, opts ...cdc.Option) (s *cdc.Source, stop func() error) {
	t.Helper()
	s, err := cdc.New(context.Background(), e.dsn, pub, e.opts(t, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Run(context.Background()) }()
	stop = sync.OnceValue(func() error {
		_ = s.Close()
		return <-done
	})
	t.Cleanup(func() {
		if err := stop(); err != nil && !errors.Is(err, cdc.ErrClosed) {
			t.Errorf("Run: %v", err)
		}
	})
	return s, stop
}

// rec is one published message.
type rec struct {
	topic string
	m     broker.Message
}

// recorder is a publisher that records what it publishes (after the inner
// publisher, when set, confirmed it) and fails while fail is set.
type recorder struct {
	inner broker.Publisher
	fail  atomic.Bool
	hang  atomic.Bool // record, then wait for ctx to end and fail: a lost confirmation
	calls atomic.Int64

	mu   sync.Mutex
	msgs []rec
}

func newRecorder(t testing.TB) *recorder {
	mem := memory.MustNew()
	t.Cleanup(func() { _ = mem.Close() })
	return &recorder{inner: mem}
}

func (r *recorder) Publish(ctx context.Context, topic string, msgs ...broker.Message) error {
	r.calls.Add(1)
	if r.fail.Load() {
		return errors.New("recorder: broker down")
	}
	if r.inner != nil {
		if err := r.inner.Publish(ctx, topic, msgs...); err != nil {
			return err
		}
	}
	r.mu.Lock()
	for _, m := range msgs {
		r.msgs = append(r.msgs, rec{topic, m})
	}
	r.mu.Unlock()
	if r.hang.Load() {
		<-ctx.Done()
		return ctx.Err()
	}
	return nil
}

func (r *recorder) Close() error { return nil }

func (r *recorder) all() []rec {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]rec(nil), r.msgs...)
}

func (r *recorder) len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.msgs)
}

// envelope is the Debezium change event value.
type envelope struct {
	Before      json.RawMessage `json:"before"`
	After       json.RawMessage `json:"after"`
	Source      map[string]any  `json:"source"`
	Op          string          `json:"op"`
	TsMs        int64           `json:"ts_ms"`
	Transaction any             `json:"transaction"`
}

func decode(t testing.TB, m broker.Message) envelope {
	t.Helper()
	var e envelope
	d := json.NewDecoder(bytesReader(m.Payload))
	d.UseNumber()
	if err := d.Decode(&e); err != nil {
		t.Fatalf("payload %s: %v", m.Payload, err)
	}
	return e
}

func decodeInto(t testing.TB, b []byte, v any) {
	t.Helper()
	d := json.NewDecoder(bytesReader(b))
	d.UseNumber()
	if err := d.Decode(v); err != nil {
		t.Fatalf("payload %s: %v", b, err)
	}
}

// compact returns raw JSON as it came, "" for null.
func compact(t testing.TB, raw json.RawMessage) string {
	t.Helper()
	if string(raw) == "null" || raw == nil {
		return ""
	}
	return string(raw)
}

// quietLogger discards: benchmarks measure, they do not log.
func quietLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

// streaming waits until s streams: every transaction committed afterwards
// reaches it as a streamed change (not as a snapshot row).
func (e *env) streaming(t testing.TB, s *cdc.Source) {
	t.Helper()
	testenv.Eventually(t, 30*time.Second, "the source streams", func() bool { return s.Stats().Streams > 0 })
}
