package storetest

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/go-integration/patterns/webhook"
)

// runDedup runs the DedupStore conformance tests.
func runDedup(t *testing.T, h Harness) {
	newStore := h.NewDedup
	ctx := context.Background()
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	begin := func(t *testing.T, s webhook.DedupStore, id string, now time.Time, want webhook.DedupState) string {
		t.Helper()
		got, err := s.Begin(ctx, id, now, now.Add(time.Minute))
		if err != nil {
			t.Fatalf("Begin(%s): %v", id, err)
		}
		if got.State != want {
			t.Fatalf("Begin(%s) at %v = %v, want %v", id, now.Sub(t0), got.State, want)
		}
		if (got.Token != "") != (want == webhook.DedupNew) {
			t.Fatalf("Begin(%s) at %v = %v with token %q: want a token exactly with DedupNew", id, now.Sub(t0), got.State, got.Token)
		}
		return got.Token
	}
	stale := func(t *testing.T, what string, err error) {
		t.Helper()
		if !errors.Is(err, webhook.ErrStaleClaim) {
			t.Fatalf("%s = %v; want ErrStaleClaim", what, err)
		}
	}
	t.Run("Lifecycle", func(t *testing.T) {
		s := newStore(t)
		a := begin(t, s, "a", t0, webhook.DedupNew)
		begin(t, s, "a", t0, webhook.DedupInFlight)
		b := begin(t, s, "b", t0, webhook.DedupNew)
		if a == b {
			t.Fatalf("two claims got the same token %q", a)
		}
		if err := s.Done(ctx, "a", a, t0.Add(time.Hour)); err != nil {
			t.Fatal(err)
		}
		// Within b's lease: an expired claim may be swept (MemoryDedup
		// sweeps as time passes), and its Forget is then stale.
		if err := s.Forget(ctx, "b", b); err != nil {
			t.Fatal(err)
		}
		begin(t, s, "b", t0, webhook.DedupNew)
		begin(t, s, "a", t0.Add(30*time.Minute), webhook.DedupDone)
		begin(t, s, "a", t0.Add(61*time.Minute), webhook.DedupNew) // expired
		stale(t, "Forget of an unknown id", s.Forget(ctx, "never-seen", b))
		stale(t, "Done of an unknown id", s.Done(ctx, "never-seen", b, t0.Add(time.Hour)))
	})
	t.Run("ExpiredClaim", func(t *testing.T) {
		s := newStore(t)
		begin(t, s, "c", t0, webhook.DedupNew)
		// The claimer died: its lease (one minute) runs out and the ID is new again.
		begin(t, s, "c", t0.Add(59*time.Second), webhook.DedupInFlight)
		begin(t, s, "c", t0.Add(2*time.Minute), webhook.DedupNew)
	})
	t.Run("WrongTokenChangesNothing", func(t *testing.T) {
		s := newStore(t)
		tok := begin(t, s, "w", t0, webhook.DedupNew)
		for _, bad := range []string{"", "not-the-token", tok + "x"} {
			stale(t, "Done with token "+bad, s.Done(ctx, "w", bad, t0.Add(time.Hour)))
			stale(t, "Forget with token "+bad, s.Forget(ctx, "w", bad))
		}
		begin(t, s, "w", t0.Add(time.Second), webhook.DedupInFlight)
		if err := s.Done(ctx, "w", tok, t0.Add(time.Hour)); err != nil {
			t.Fatal(err)
		}
		stale(t, "Forget of a done id with a wrong token", s.Forget(ctx, "w", "not-the-token"))
		begin(t, s, "w", t0.Add(30*time.Minute), webhook.DedupDone)
	})
	// A claim whose lease expired is taken over by a second Begin; the first
	// owner can then neither mark the ID done nor forget it, and the second
	// owner's claim and its Done stay intact.
	t.Run("StaleOwnerIsRefused", func(t *testing.T) {
		s := newStore(t)
		first, err := s.Begin(ctx, "s", t0, t0.Add(time.Millisecond)) // a very short lease
		if err != nil || first.State != webhook.DedupNew {
			t.Fatalf("Begin = %+v, %v", first, err)
		}
		second := begin(t, s, "s", t0.Add(time.Second), webhook.DedupNew) // lease expired: taken over
		if second == first.Token {
			t.Fatalf("the second claim got the first one's token %q", second)
		}
		stale(t, "stale Done", s.Done(ctx, "s", first.Token, t0.Add(time.Hour)))
		stale(t, "stale Forget", s.Forget(ctx, "s", first.Token))
		begin(t, s, "s", t0.Add(2*time.Second), webhook.DedupInFlight) // still the second owner's claim
		if err := s.Done(ctx, "s", second, t0.Add(time.Hour)); err != nil {
			t.Fatalf("second owner's Done: %v", err)
		}
		stale(t, "stale Forget after the second owner's Done", s.Forget(ctx, "s", first.Token))
		stale(t, "stale Done after the second owner's Done", s.Done(ctx, "s", first.Token, t0.Add(2*time.Hour)))
		begin(t, s, "s", t0.Add(30*time.Minute), webhook.DedupDone)
		begin(t, s, "s", t0.Add(61*time.Minute), webhook.DedupNew) // the second owner's keep, not the stale one's
	})
	t.Run("ConcurrentBegin", func(t *testing.T) {
		if h.Features.NoConcurrency {
			t.Skip("Features.NoConcurrency")
		}
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
				got[st.State]++
				mu.Unlock()
			}()
		}
		wg.Wait()
		if got[webhook.DedupNew] != 1 || got[webhook.DedupInFlight] != n-1 {
			t.Fatalf("states of %d concurrent Begins: %v, want exactly one new", n, got)
		}
	})
}
