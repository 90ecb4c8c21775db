package middleware_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/go-integration/patterns/broker"
	"github.com/go-integration/patterns/broker/middleware"
)

// The tests below run in testing/synctest bubbles: the memory store reads
// time.Now, so time.Sleep moves its clock at once.

// A handler slower than its claim's lifetime: another delivery takes the ID
// over meanwhile. The slow handler's success must not mark the ID handled
// for the new owner (whose handling may still fail), and Dedup says so.
func TestDedupStaleDoneIsRefused(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		store := middleware.NewMemoryDedupStore()
		tr := &dedupRecorder{}
		var newOwner middleware.Claim
		h := dedup(t, store, middleware.WithHandledFor(time.Hour), middleware.WithInProgressFor(time.Minute), middleware.WithTracer(tr))(
			func(ctx context.Context, m broker.Message) error {
				time.Sleep(2 * time.Minute) // the handler outlives its claim
				var err error
				newOwner, err = store.Claim(ctx, m.ID, time.Minute)
				if err != nil || newOwner.Result != middleware.Claimed {
					t.Fatalf("takeover claim = %+v, %v", newOwner, err)
				}
				return nil
			})
		err := h(context.Background(), broker.Message{ID: "slow", Topic: "orders"})
		if !errors.Is(err, middleware.ErrStaleClaim) {
			t.Fatalf("Dedup = %v, want an error wrapping ErrStaleClaim", err)
		}
		tr.want(t, "claimed slow orders <nil>", "stale-claim slow orders dedup done slow: middleware: done \"slow\": middleware: dedup claim is no longer owned by this delivery")
		if c, _ := store.Claim(context.Background(), "slow", time.Minute); c.Result != middleware.InProgress {
			t.Fatalf("after the stale Done the store says %v, want InProgress (the new owner's claim)", c.Result)
		}
		// The new owner fails: its Release works, and the next delivery runs.
		if err := store.Release(context.Background(), "slow", newOwner.Token); err != nil {
			t.Fatalf("new owner's Release: %v", err)
		}
		if c, _ := store.Claim(context.Background(), "slow", time.Minute); c.Result != middleware.Claimed {
			t.Fatalf("after the new owner released, Claim = %v, want Claimed", c.Result)
		}
	})
}

// A failing handler that outlived its claim must not release the new owner's claim.
func TestDedupStaleReleaseIsRefused(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		store := middleware.NewMemoryDedupStore()
		handlerErr := errors.New("partner down")
		tr := &dedupRecorder{}
		h := dedup(t, store, middleware.WithInProgressFor(time.Minute), middleware.WithTracer(tr))(func(ctx context.Context, m broker.Message) error {
			time.Sleep(2 * time.Minute)
			if c, err := store.Claim(ctx, m.ID, time.Minute); err != nil || c.Result != middleware.Claimed {
				t.Fatalf("takeover claim = %+v, %v", c, err)
			}
			return handlerErr
		})
		err := h(context.Background(), broker.Message{ID: "slow"})
		if !errors.Is(err, handlerErr) || !errors.Is(err, middleware.ErrStaleClaim) {
			t.Fatalf("Dedup = %v, want the handler's error joined with ErrStaleClaim", err)
		}
		if len(tr.got) != 2 || tr.data[1].Result != middleware.DedupStaleClaim || !errors.Is(tr.data[1].Err, middleware.ErrStaleClaim) {
			t.Fatalf("traced %q, want claimed then stale-claim", tr.got)
		}
		if c, _ := store.Claim(context.Background(), "slow", time.Minute); c.Result != middleware.InProgress {
			t.Fatalf("after the stale Release the store says %v, want InProgress (the new owner's claim)", c.Result)
		}
	})
}

// A consumer that hangs (or crashed) holding a claim blocks redeliveries of
// its ID for the in-progress lifetime only, not for the handled lifetime.
func TestDedupInProgressLifetimeIsSeparate(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		store := middleware.NewMemoryDedupStore()
		entered, unblock := make(chan struct{}), make(chan struct{})
		calls := 0
		h := dedup(t, store, middleware.WithHandledFor(24*time.Hour), middleware.WithInProgressFor(30*time.Second))(
			func(ctx context.Context, m broker.Message) error {
				calls++
				if calls == 1 {
					close(entered)
					<-unblock
				}
				return nil
			})
		first := make(chan error, 1)
		go func() { first <- h(context.Background(), broker.Message{ID: "m", Attempt: 1}) }()
		<-entered
		if err := h(context.Background(), broker.Message{ID: "m", Attempt: 2}); !errors.Is(err, middleware.ErrInProgress) {
			t.Fatalf("redelivery while the claim is held = %v, want ErrInProgress", err)
		}
		time.Sleep(31 * time.Second)
		if err := h(context.Background(), broker.Message{ID: "m", Attempt: 3}); err != nil {
			t.Fatalf("redelivery after the in-progress lifetime = %v, want it handled", err)
		}
		if c, _ := store.Claim(context.Background(), "m", time.Second); c.Result != middleware.Handled {
			t.Fatalf("after the redelivery the store says %v, want Handled", c.Result)
		}
		time.Sleep(23 * time.Hour)
		if c, _ := store.Claim(context.Background(), "m", time.Second); c.Result != middleware.Handled {
			t.Fatalf("within the handled lifetime the store says %v, want Handled", c.Result)
		}
		close(unblock)
		if err := <-first; !errors.Is(err, middleware.ErrStaleClaim) {
			t.Fatalf("the hung delivery's result = %v, want ErrStaleClaim", err)
		}
	})
}

// recordingStore records the lifetimes Dedup passes to its store.
type recordingStore struct {
	middleware.DedupStore
	claimTTL, doneTTL time.Duration
}

func (s *recordingStore) Claim(ctx context.Context, id string, ttl time.Duration) (middleware.Claim, error) {
	s.claimTTL = ttl
	return s.DedupStore.Claim(ctx, id, ttl)
}

func (s *recordingStore) Done(ctx context.Context, id, token string, ttl time.Duration) error {
	s.doneTTL = ttl
	return s.DedupStore.Done(ctx, id, token, ttl)
}

func TestDedupLifetimes(t *testing.T) {
	nop := func(context.Context, broker.Message) error { return nil }
	for _, tc := range []struct {
		name              string
		opts              []middleware.DedupOption
		wantClaim, wantOK time.Duration
	}{
		{"Defaults", nil, middleware.DefaultInProgress, middleware.DefaultHandled},
		{"HandledFor", []middleware.DedupOption{middleware.WithHandledFor(2 * time.Hour)}, middleware.DefaultInProgress, 2 * time.Hour},
		{"Both", []middleware.DedupOption{middleware.WithHandledFor(3 * time.Hour), middleware.WithInProgressFor(30 * time.Second)},
			30 * time.Second, 3 * time.Hour},
		{"LastWins", []middleware.DedupOption{middleware.WithInProgressFor(time.Second), middleware.WithInProgressFor(2 * time.Second)},
			2 * time.Second, middleware.DefaultHandled},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := &recordingStore{DedupStore: middleware.NewMemoryDedupStore()}
			if err := dedup(t, s, tc.opts...)(nop)(context.Background(), broker.Message{ID: "m"}); err != nil {
				t.Fatal(err)
			}
			if s.claimTTL != tc.wantClaim || s.doneTTL != tc.wantOK {
				t.Fatalf("claim lifetime %v, handled lifetime %v; want %v, %v", s.claimTTL, s.doneTTL, tc.wantClaim, tc.wantOK)
			}
		})
	}
}

type notATracer struct{}

func (notATracer) TraceDedupp(context.Context, middleware.TraceDedupData) {} // misspelt

func TestDedupRefusesBadOptions(t *testing.T) {
	store := middleware.NewMemoryDedupStore()
	for _, tc := range []struct {
		name  string
		store middleware.DedupStore
		opts  []middleware.DedupOption
		want  string
	}{
		{"NilStore", nil, nil, "nil DedupStore"},
		{"NilOption", store, []middleware.DedupOption{nil}, "nil option"},
		{"HandledZero", store, []middleware.DedupOption{middleware.WithHandledFor(0)}, "WithHandledFor(0s)"},
		{"InProgressNegative", store, []middleware.DedupOption{middleware.WithInProgressFor(-time.Second)}, "WithInProgressFor(-1s)"},
		{"TracerNil", store, []middleware.DedupOption{middleware.WithTracer(nil)}, "WithTracer"},
		{"TracerMisspelt", store, []middleware.DedupOption{middleware.WithTracer(notATracer{})}, "notATracer implements none of DedupTracer"},
		{"RetryTracerOnly", store, []middleware.DedupOption{middleware.WithTracer(&retryRecorder{})}, "implements none of DedupTracer"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mw, err := middleware.Dedup(tc.store, tc.opts...)
			if !errors.Is(err, middleware.ErrInvalidOption) || !strings.Contains(err.Error(), tc.want) || mw != nil {
				t.Fatalf("Dedup = %v, %v; want ErrInvalidOption naming %q", mw != nil, err, tc.want)
			}
		})
	}
}

// dedupRecorder records TraceDedup calls as "result id topic err".
type dedupRecorder struct {
	mu   sync.Mutex
	got  []string
	data []middleware.TraceDedupData
}

func (r *dedupRecorder) TraceDedup(ctx context.Context, d middleware.TraceDedupData) {
	if ctx.Value(ctxKey{}) != nil && ctx.Value(ctxKey{}) != "v" {
		panic("tracer called without the handler's context")
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.data = append(r.data, d)
	errText := "<nil>"
	if d.Err != nil {
		errText = d.Err.Error()
	}
	r.got = append(r.got, d.Result.String()+" "+d.MessageID+" "+d.Topic+" "+errText)
}

func (r *dedupRecorder) want(t *testing.T, want ...string) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	if strings.Join(r.got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("traced:\n%s\nwant:\n%s", strings.Join(r.got, "\n"), strings.Join(want, "\n"))
	}
	r.got, r.data = nil, nil
}

type ctxKey struct{}

// failingStore fails what it is told to.
type failingStore struct {
	middleware.DedupStore
	claim, done error
}

func (s failingStore) Claim(ctx context.Context, id string, ttl time.Duration) (middleware.Claim, error) {
	if s.claim != nil {
		return middleware.Claim{}, s.claim
	}
	return s.DedupStore.Claim(ctx, id, ttl)
}

func (s failingStore) Done(ctx context.Context, id, token string, ttl time.Duration) error {
	if s.done != nil {
		return s.done
	}
	return s.DedupStore.Done(ctx, id, token, ttl)
}

func TestDedupTracer(t *testing.T) {
	ctx := context.WithValue(context.Background(), ctxKey{}, "v")
	store := middleware.NewMemoryDedupStore()
	a, b := &dedupRecorder{}, &dedupRecorder{}
	var order []string
	var orderMu sync.Mutex
	seen := func(r string) func(context.Context, middleware.TraceDedupData) {
		return func(context.Context, middleware.TraceDedupData) {
			orderMu.Lock()
			order = append(order, r)
			orderMu.Unlock()
		}
	}
	handlerErr := errors.New("handler failed")
	fail := true
	mw := dedup(t, store, middleware.WithTracer(a), middleware.WithTracer(dedupFunc(seen("1"))), middleware.WithTracer(b), middleware.WithTracer(dedupFunc(seen("2"))))
	h := mw(func(ctx context.Context, m broker.Message) error {
		if fail {
			return handlerErr
		}
		if m.ID == "" {
			return nil
		}
		if c, _ := store.Claim(ctx, m.ID, time.Hour); c.Result != middleware.InProgress {
			t.Errorf("inside the handler the ID is %v", c.Result)
		}
		// a second delivery while this one runs
		if err := mwNop(mw)(ctx, m); !errors.Is(err, middleware.ErrInProgress) {
			t.Errorf("concurrent delivery = %v", err)
		}
		return nil
	})
	m := broker.Message{ID: "m1", Topic: "orders"}
	if err := h(ctx, m); !errors.Is(err, handlerErr) {
		t.Fatal(err)
	}
	a.want(t, "claimed m1 orders <nil>") // a failed handler: released, nothing more to trace
	fail = false
	if err := h(ctx, m); err != nil {
		t.Fatal(err)
	}
	a.want(t, "claimed m1 orders <nil>", "in-progress m1 orders <nil>")
	if err := h(ctx, m); err != nil {
		t.Fatal(err)
	}
	a.want(t, "skipped m1 orders <nil>")
	if err := h(ctx, broker.Message{Topic: "orders"}); err != nil { // no ID: not traced
		t.Fatal(err)
	}
	a.want(t)
	b.mu.Lock()
	if len(b.got) != 4 {
		t.Fatalf("second tracer saw %d events, want 4", len(b.got))
	}
	b.mu.Unlock()
	if strings.Join(order, "")[:4] != "1212" {
		t.Fatalf("tracers called in order %v, want the order they were given", order)
	}

	// Store failures: the claim, then Done.
	down := errors.New("database down")
	fs := failingStore{DedupStore: middleware.NewMemoryDedupStore(), claim: down}
	r := &dedupRecorder{}
	err := dedup(t, fs, middleware.WithTracer(r))(func(context.Context, broker.Message) error { return nil })(ctx, m)
	if !errors.Is(err, down) || len(r.data) != 1 || r.data[0].Result != middleware.DedupError || !errors.Is(r.data[0].Err, down) {
		t.Fatalf("claim failure: %v, traced %q", err, r.got)
	}
	r.want(t, "error m1 orders dedup claim m1: database down")
	fs = failingStore{DedupStore: middleware.NewMemoryDedupStore(), done: down}
	err = dedup(t, fs, middleware.WithTracer(r))(func(context.Context, broker.Message) error { return nil })(ctx, m)
	if !errors.Is(err, down) {
		t.Fatalf("done failure: %v", err)
	}
	r.want(t, "claimed m1 orders <nil>", "error m1 orders dedup done m1: database down")
}

type dedupFunc func(context.Context, middleware.TraceDedupData)

func (f dedupFunc) TraceDedup(ctx context.Context, d middleware.TraceDedupData) { f(ctx, d) }

func mwNop(mw broker.Middleware) broker.Handler {
	return mw(func(context.Context, broker.Message) error { return nil })
}

func TestDedupResultString(t *testing.T) {
	for r, want := range map[middleware.DedupResult]string{
		middleware.DedupClaimed: "claimed", middleware.DedupSkipped: "skipped", middleware.DedupInProgress: "in-progress",
		middleware.DedupStaleClaim: "stale-claim", middleware.DedupError: "error", 42: "DedupResult(42)",
	} {
		if r.String() != want {
			t.Errorf("%d.String() = %q, want %q", int(r), r.String(), want)
		}
	}
}
