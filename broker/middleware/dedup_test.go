package middleware_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/go-integration/patterns/broker"
	"github.com/go-integration/patterns/broker/middleware"
)

// A handler slower than its claim's lifetime: another delivery takes the ID
// over meanwhile. The slow handler's success must not mark the ID handled
// for the new owner (whose handling may still fail), and Dedup says so.
func TestDedupStaleDoneIsRefused(t *testing.T) {
	clock := newFakeClock()
	store := middleware.NewMemoryDedupStoreWithClock(clock.Now)
	cfg := middleware.DedupConfig{Handled: time.Hour, InProgress: time.Minute}
	var newOwner middleware.Claim
	h := middleware.DedupWith(store, cfg)(func(ctx context.Context, m broker.Message) error {
		clock.Advance(2 * time.Minute) // the handler outlives its claim
		var err error
		newOwner, err = store.Claim(ctx, m.ID, time.Minute)
		if err != nil || newOwner.Result != middleware.Claimed {
			t.Fatalf("takeover claim = %+v, %v", newOwner, err)
		}
		return nil
	})
	err := h(context.Background(), broker.Message{ID: "slow"})
	if !errors.Is(err, middleware.ErrStaleClaim) {
		t.Fatalf("Dedup = %v, want an error wrapping ErrStaleClaim", err)
	}
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
}

// A failing handler that outlived its claim must not release the new owner's claim.
func TestDedupStaleReleaseIsRefused(t *testing.T) {
	clock := newFakeClock()
	store := middleware.NewMemoryDedupStoreWithClock(clock.Now)
	handlerErr := errors.New("partner down")
	h := middleware.DedupWith(store, middleware.DedupConfig{InProgress: time.Minute})(func(ctx context.Context, m broker.Message) error {
		clock.Advance(2 * time.Minute)
		if c, err := store.Claim(ctx, m.ID, time.Minute); err != nil || c.Result != middleware.Claimed {
			t.Fatalf("takeover claim = %+v, %v", c, err)
		}
		return handlerErr
	})
	err := h(context.Background(), broker.Message{ID: "slow"})
	if !errors.Is(err, handlerErr) || !errors.Is(err, middleware.ErrStaleClaim) {
		t.Fatalf("Dedup = %v, want the handler's error joined with ErrStaleClaim", err)
	}
	if c, _ := store.Claim(context.Background(), "slow", time.Minute); c.Result != middleware.InProgress {
		t.Fatalf("after the stale Release the store says %v, want InProgress (the new owner's claim)", c.Result)
	}
}

// A consumer that hangs (or crashed) holding a claim blocks redeliveries of
// its ID for the in-progress lifetime only, not for the handled lifetime.
func TestDedupInProgressLifetimeIsSeparate(t *testing.T) {
	clock := newFakeClock()
	store := middleware.NewMemoryDedupStoreWithClock(clock.Now)
	cfg := middleware.DedupConfig{Handled: 24 * time.Hour, InProgress: 30 * time.Second}
	entered, unblock := make(chan struct{}), make(chan struct{})
	calls := 0
	h := middleware.DedupWith(store, cfg)(func(ctx context.Context, m broker.Message) error {
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
	clock.Advance(31 * time.Second)
	if err := h(context.Background(), broker.Message{ID: "m", Attempt: 3}); err != nil {
		t.Fatalf("redelivery after the in-progress lifetime = %v, want it handled", err)
	}
	if c, _ := store.Claim(context.Background(), "m", time.Second); c.Result != middleware.Handled {
		t.Fatalf("after the redelivery the store says %v, want Handled", c.Result)
	}
	clock.Advance(23 * time.Hour)
	if c, _ := store.Claim(context.Background(), "m", time.Second); c.Result != middleware.Handled {
		t.Fatalf("within the handled lifetime the store says %v, want Handled", c.Result)
	}
	close(unblock)
	if err := <-first; !errors.Is(err, middleware.ErrStaleClaim) {
		t.Fatalf("the hung delivery's result = %v, want ErrStaleClaim", err)
	}
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
		mw                func(middleware.DedupStore) broker.Middleware
		wantClaim, wantOK time.Duration
	}{
		{"Dedup", func(s middleware.DedupStore) broker.Middleware { return middleware.Dedup(s, 2*time.Hour) },
			middleware.DefaultInProgress, 2 * time.Hour},
		{"DedupWith", func(s middleware.DedupStore) broker.Middleware {
			return middleware.DedupWith(s, middleware.DedupConfig{Handled: 3 * time.Hour, InProgress: 30 * time.Second})
		}, 30 * time.Second, 3 * time.Hour},
		{"DedupWithDefaults", func(s middleware.DedupStore) broker.Middleware {
			return middleware.DedupWith(s, middleware.DedupConfig{})
		}, middleware.DefaultInProgress, middleware.DefaultHandled},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := &recordingStore{DedupStore: middleware.NewMemoryDedupStore()}
			if err := tc.mw(s)(nop)(context.Background(), broker.Message{ID: "m"}); err != nil {
				t.Fatal(err)
			}
			if s.claimTTL != tc.wantClaim || s.doneTTL != tc.wantOK {
				t.Fatalf("claim lifetime %v, handled lifetime %v; want %v, %v", s.claimTTL, s.doneTTL, tc.wantClaim, tc.wantOK)
			}
		})
	}
}
