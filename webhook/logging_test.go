package webhook_test

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-integration/patterns/internal/testenv"
	"github.com/go-integration/patterns/webhook"
)

// captureHandler is a slog.Handler that keeps the records it gets.
type captureHandler struct {
	mu      sync.Mutex
	records []slog.Record
}

func (h *captureHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *captureHandler) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.records = append(h.records, r.Clone())
	return nil
}
func (h *captureHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *captureHandler) WithGroup(string) slog.Handler      { return h }

// errorLines returns the messages and "err" attributes of records at level
// Warn and above.
func (h *captureHandler) errorLines() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []string
	for _, r := range h.records {
		if r.Level < slog.LevelWarn {
			continue
		}
		line := r.Message
		r.Attrs(func(a slog.Attr) bool {
			if a.Key == "err" {
				line += ": " + a.Value.String()
			}
			return true
		})
		out = append(out, line)
	}
	return out
}

var errStoreDown = errors.New("store down")

// failingStore fails Claim, or Record, as asked.
type failingStore struct {
	*webhook.MemoryStore
	claim, record bool
}

func (s failingStore) Claim(ctx context.Context, now time.Time, lease time.Duration, limit int) ([]webhook.Delivery, error) {
	if s.claim {
		return nil, errStoreDown
	}
	return s.MemoryStore.Claim(ctx, now, lease, limit)
}

func (s failingStore) Record(ctx context.Context, d webhook.Delivery, a webhook.Attempt) (time.Time, error) {
	if s.record {
		return time.Time{}, errStoreDown
	}
	return s.MemoryStore.Record(ctx, d, a)
}

// runUntilLogged runs s until h has a line containing want (or 5 s pass).
func runUntilLogged(t *testing.T, s *webhook.Sender, h *captureHandler, want string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	defer func() { cancel(); <-done }()
	testenv.Eventually(t, 5*time.Second, "a log line containing "+want, func() bool {
		return slices.ContainsFunc(h.errorLines(), func(l string) bool { return strings.Contains(l, want) })
	})
}

// Without WithLogger, store failures go to slog.Default().
func TestStoreErrorsAreLoggedByDefault(t *testing.T) {
	h := &captureHandler{}
	old := slog.Default()
	slog.SetDefault(slog.New(h))
	t.Cleanup(func() { slog.SetDefault(old) })

	s, err := webhook.NewSender(failingStore{MemoryStore: webhook.NewMemoryStore(), claim: true},
		webhook.WithPollInterval(5*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	runUntilLogged(t, s, h, "claim: store down")
}

// WithLogger receives store failures: a failing Record, here.
func TestStoreErrorsGoToWithLogger(t *testing.T) {
	h := &captureHandler{}
	ctx := context.Background()
	es := newEndpointServer(t, func(int, http.ResponseWriter, *http.Request) {})
	store := webhook.NewMemoryStore()
	if err := store.SaveEndpoint(ctx, webhook.Endpoint{ID: "e", URL: es.URL, Secrets: []string{webhook.NewSecret()}}); err != nil {
		t.Fatal(err)
	}
	s, err := webhook.NewSender(failingStore{MemoryStore: store, record: true},
		webhook.WithAllowedNetworks(loopback...), webhook.WithLogger(slog.New(h)))
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Send(ctx, webhook.Message{ID: "m1", Type: "t"}); err != nil {
		t.Fatal(err)
	}
	if n, err := s.RunOnce(ctx); n != 1 || err != nil {
		t.Fatalf("RunOnce = %d, %v", n, err)
	}
	lines := h.errorLines()
	if len(lines) != 1 || !strings.Contains(lines[0], "record attempt 1 of delivery") || !strings.Contains(lines[0], "store down") {
		t.Fatalf("log lines %q; want one about the failed record", lines)
	}
}

// storeErrorTracer records TraceStoreError calls.
type storeErrorTracer chan webhook.TraceStoreErrorData

func (c storeErrorTracer) TraceStoreError(_ context.Context, d webhook.TraceStoreErrorData) {
	select {
	case c <- d:
	default:
	}
}

// A StoreErrorTracer sees store failures, which are still logged (before
// tracers, WithOnError replaced the logging), and Stats counts them.
func TestStoreErrorsAreTracedAndLogged(t *testing.T) {
	h := &captureHandler{}
	got := make(storeErrorTracer, 100)
	s, err := webhook.NewSender(failingStore{MemoryStore: webhook.NewMemoryStore(), claim: true},
		webhook.WithPollInterval(5*time.Millisecond), webhook.WithLogger(slog.New(h)), webhook.WithTracer(got))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	d := <-got
	cancel()
	<-done
	if d.Op != "claim" || !errors.Is(d.Err, errStoreDown) {
		t.Fatalf("TraceStoreError got %+v", d)
	}
	if lines := h.errorLines(); len(lines) == 0 || !strings.Contains(lines[0], "claim: store down") {
		t.Fatalf("log lines %q; want the claim failure logged too", lines)
	}
	if st := s.Stats(); st.StoreErrors == 0 {
		t.Fatalf("Stats = %+v, want StoreErrors counted", st)
	}
}
