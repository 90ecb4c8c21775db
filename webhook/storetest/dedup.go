package storetest

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/go-integration/patterns/webhook"
)

// RunDedup runs the DedupStore conformance tests; newStore returns an empty store.
func RunDedup(t *testing.T, newStore func(t *testing.T) webhook.DedupStore) {
	ctx := context.Background()
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	begin := func(t *testing.T, s webhook.DedupStore, id string, now time.Time, want webhook.DedupState) {
		t.Helper()
		got, err := s.Begin(ctx, id, now, now.Add(time.Minute))
		if err != nil {
			t.Fatalf("Begin(%s): %v", id, err)
		}
		if got != want {
			t.Fatalf("Begin(%s) at %v = %v, want %v", id, now.Sub(t0), got, want)
		}
	}
	t.Run("Lifecycle", func(t *testing.T) {
		s := newStore(t)
		begin(t, s, "a", t0, webhook.DedupNew)
		begin(t, s, "a", t0, webhook.DedupInFlight)
		begin(t, s, "b", t0, webhook.DedupNew)
		if err := s.Done(ctx, "a", t0.Add(time.Hour)); err != nil {
			t.Fatal(err)
		}
		begin(t, s, "a", t0.Add(30*time.Minute), webhook.DedupDone)
		begin(t, s, "a", t0.Add(61*time.Minute), webhook.DedupNew) // expired
		if err := s.Forget(ctx, "b"); err != nil {
			t.Fatal(err)
		}
		begin(t, s, "b", t0, webhook.DedupNew)
		if err := s.Forget(ctx, "never-seen"); err != nil {
			t.Fatalf("Forget of an unknown id: %v", err)
		}
	})
	t.Run("ExpiredClaim", func(t *testing.T) {
		s := newStore(t)
		begin(t, s, "c", t0, webhook.DedupNew)
		// The claimer died: its lease (one minute) runs out and the ID is new again.
		begin(t, s, "c", t0.Add(59*time.Second), webhook.DedupInFlight)
		begin(t, s, "c", t0.Add(2*time.Minute), webhook.DedupNew)
	})
	t.Run("ConcurrentBegin", func(t *testing.T) {
		s := newStore(t)
		const n = 16
		var wg sync.WaitGroup
		var mu sync.Mutex
		got := map[webhook.DedupState]int{}
		for range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				st, err := s.Begin(ctx, "same", t0, t0.Add(time.Minute))
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				got[st]++
				mu.Unlock()
			}()
		}
		wg.Wait()
		if got[webhook.DedupNew] != 1 || got[webhook.DedupInFlight] != n-1 {
			t.Fatalf("states of %d concurrent Begins: %v, want exactly one new", n, got)
		}
	})
}
