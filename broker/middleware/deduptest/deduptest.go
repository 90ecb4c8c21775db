// Package deduptest is the conformance suite every middleware.DedupStore
// passes. A store's test calls Run with a Harness:
//
//	func TestConformance(t *testing.T) {
//		deduptest.Run(t, deduptest.Harness{
//			New: func(t *testing.T) (middleware.DedupStore, func(time.Duration)) {
//				return newStore(t), nil // nil: the suite sleeps to let time pass
//			},
//		})
//	}
//
// The suite covers claims (new, in progress, handled), Release, owner tokens
// (a stale Done or Release is refused with middleware.ErrStaleClaim and
// changes nothing), expiry of claims and of handled entries, 50 concurrent
// claimers of one ID, and empty and long IDs.
package deduptest

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-integration/patterns/broker/middleware"
)

// Harness tells Run how to make the store under test.
type Harness struct {
	// New returns an empty store (or one whose IDs no other test uses) and
	// advance, a function that lets at least d pass on the store's clock.
	// A store with an injectable clock moves it; advance may be nil for a
	// store on a real clock (a database's now()), and the suite then sleeps
	// d plus a millisecond. The suite lets at most a few hundred
	// milliseconds pass in all.
	New func(t *testing.T) (store middleware.DedupStore, advance func(d time.Duration))
}

// Lifetimes the suite uses. Long ones never expire during a test; short ones
// expire after one advance.
const (
	long  = time.Hour
	short = time.Millisecond
	// handledShort must stay unexpired between two consecutive calls (on a
	// real clock too) and expire after an advance of it.
	handledShort = 200 * time.Millisecond
)

func (h Harness) make(t *testing.T) (middleware.DedupStore, func(time.Duration)) {
	t.Helper()
	s, advance := h.New(t)
	if advance == nil {
		advance = func(d time.Duration) { time.Sleep(d + time.Millisecond) }
	}
	return s, advance
}

func claim(t *testing.T, s middleware.DedupStore, id string, ttl time.Duration, want middleware.ClaimResult) middleware.Claim {
	t.Helper()
	c, err := s.Claim(context.Background(), id, ttl)
	if err != nil {
		t.Fatalf("Claim(%.20q): %v", id, err)
	}
	if c.Result != want {
		t.Fatalf("Claim(%.20q) = %v, want %v", id, c.Result, want)
	}
	if (c.Token != "") != (want == middleware.Claimed) {
		t.Fatalf("Claim(%.20q) = %v with token %q: a token comes with Claimed only", id, c.Result, c.Token)
	}
	return c
}

func stale(t *testing.T, what string, err error) {
	t.Helper()
	if !errors.Is(err, middleware.ErrStaleClaim) {
		t.Fatalf("%s = %v, want an error wrapping ErrStaleClaim", what, err)
	}
}

func ok(t *testing.T, what string, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// Run runs the conformance tests, each on a store from h.New.
func Run(t *testing.T, h Harness) {
	ctx := context.Background()

	t.Run("ClaimThenInProgressThenHandled", func(t *testing.T) {
		s, _ := h.make(t)
		c := claim(t, s, "m1", long, middleware.Claimed)
		claim(t, s, "m1", long, middleware.InProgress)
		claim(t, s, "m2", long, middleware.Claimed) // IDs are independent
		ok(t, "Done", s.Done(ctx, "m1", c.Token, long))
		claim(t, s, "m1", long, middleware.Handled)
		claim(t, s, "m1", long, middleware.Handled)
	})

	t.Run("ReleaseLetsTheNextClaimWin", func(t *testing.T) {
		s, _ := h.make(t)
		c := claim(t, s, "m", long, middleware.Claimed)
		ok(t, "Release", s.Release(ctx, "m", c.Token))
		c2 := claim(t, s, "m", long, middleware.Claimed)
		if c2.Token == c.Token {
			t.Fatalf("the new claim reuses the released token %q", c.Token)
		}
		stale(t, "Release with the released token", s.Release(ctx, "m", c.Token))
		stale(t, "Done with the released token", s.Done(ctx, "m", c.Token, long))
		claim(t, s, "m", long, middleware.InProgress)
		ok(t, "Done by the new owner", s.Done(ctx, "m", c2.Token, long))
		claim(t, s, "m", long, middleware.Handled)
	})

	t.Run("WrongTokenChangesNothing", func(t *testing.T) {
		s, _ := h.make(t)
		stale(t, "Done of an ID never claimed", s.Done(ctx, "none", "x", long))
		stale(t, "Release of an ID never claimed", s.Release(ctx, "none", "x"))
		claim(t, s, "none", long, middleware.Claimed) // the refused calls left nothing behind
		c := claim(t, s, "m", long, middleware.Claimed)
		stale(t, "Done with a wrong token", s.Done(ctx, "m", c.Token+"x", long))
		stale(t, "Release with a wrong token", s.Release(ctx, "m", "not-"+c.Token))
		claim(t, s, "m", long, middleware.InProgress)
		ok(t, "Done", s.Done(ctx, "m", c.Token, long))
		stale(t, "Release after Done", s.Release(ctx, "m", c.Token))
		claim(t, s, "m", long, middleware.Handled)
	})

	t.Run("ExpiredClaimIsTakenOverAndTheStaleOwnerRefused", func(t *testing.T) {
		s, advance := h.make(t)
		old := claim(t, s, "m", short, middleware.Claimed)
		advance(short)
		cur := claim(t, s, "m", long, middleware.Claimed)
		if cur.Token == old.Token {
			t.Fatalf("the takeover kept the stale token %q", old.Token)
		}
		stale(t, "stale Done", s.Done(ctx, "m", old.Token, long))
		claim(t, s, "m", long, middleware.InProgress) // not marked handled by the stale owner
		stale(t, "stale Release", s.Release(ctx, "m", old.Token))
		claim(t, s, "m", long, middleware.InProgress) // not released by the stale owner
		ok(t, "Done by the new owner", s.Done(ctx, "m", cur.Token, long))
		claim(t, s, "m", long, middleware.Handled)
		stale(t, "stale Release after the new owner's Done", s.Release(ctx, "m", old.Token))
		claim(t, s, "m", long, middleware.Handled)
	})

	t.Run("HandledExpires", func(t *testing.T) {
		s, advance := h.make(t)
		c := claim(t, s, "m", long, middleware.Claimed)
		ok(t, "Done", s.Done(ctx, "m", c.Token, handledShort))
		claim(t, s, "m", long, middleware.Handled)
		c2 := claim(t, s, "long", long, middleware.Claimed)
		ok(t, "Done", s.Done(ctx, "long", c2.Token, long))
		advance(handledShort)
		c3 := claim(t, s, "m", long, middleware.Claimed)
		if c3.Token == c.Token {
			t.Fatalf("the new claim reuses the token %q", c.Token)
		}
		claim(t, s, "long", long, middleware.Handled)
		stale(t, "Done with the expired handled entry's token", s.Done(ctx, "m", c.Token, long))
		claim(t, s, "m", long, middleware.InProgress)
	})

	t.Run("ConcurrentClaimersOneWins", func(t *testing.T) {
		s, _ := h.make(t)
		const n = 50
		var wg sync.WaitGroup
		results := make([]middleware.Claim, n)
		errs := make([]error, n)
		start := make(chan struct{})
		for i := range n {
			wg.Go(func() {
				<-start
				results[i], errs[i] = s.Claim(ctx, "contended", long)
			})
		}
		close(start)
		wg.Wait()
		won := -1
		for i := range n {
			if errs[i] != nil {
				t.Fatalf("claimer %d: %v", i, errs[i])
			}
			switch results[i].Result {
			case middleware.Claimed:
				if won >= 0 {
					t.Fatalf("claimers %d and %d both won", won, i)
				}
				won = i
			case middleware.InProgress:
			default:
				t.Fatalf("claimer %d got %v", i, results[i].Result)
			}
		}
		if won < 0 {
			t.Fatal("no claimer won")
		}
		// Concurrent Done and Release with the losers' (empty) tokens and
		// the winner's: only the winner's Done counts.
		for i := range n {
			wg.Go(func() {
				if i == won {
					errs[i] = s.Done(ctx, "contended", results[i].Token, long)
				} else if i%2 == 0 {
					errs[i] = s.Release(ctx, "contended", results[i].Token)
				} else {
					errs[i] = s.Done(ctx, "contended", "t"+strconv.Itoa(i), long)
				}
			})
		}
		wg.Wait()
		for i := range n {
			if i == won {
				ok(t, "winner's Done", errs[i])
			} else {
				stale(t, "loser's Done or Release", errs[i])
			}
		}
		claim(t, s, "contended", long, middleware.Handled)
	})

	t.Run("EmptyAndLongIDs", func(t *testing.T) {
		s, _ := h.make(t)
		c := claim(t, s, "", long, middleware.Claimed)
		claim(t, s, " ", long, middleware.Claimed)
		ok(t, "Done of the empty ID", s.Done(ctx, "", c.Token, long))
		claim(t, s, "", long, middleware.Handled)

		var b strings.Builder
		for i := 0; b.Len() < 64<<10; i++ {
			b.WriteString(strconv.Itoa(i * 7919))
		}
		longA := b.String() + "a"
		longB := b.String() + "b" // the same 64 KiB prefix
		ca := claim(t, s, longA, long, middleware.Claimed)
		claim(t, s, longB, long, middleware.Claimed)
		claim(t, s, longA, long, middleware.InProgress)
		ok(t, "Done of a long ID", s.Done(ctx, longA, ca.Token, long))
		claim(t, s, longA, long, middleware.Handled)
		claim(t, s, longB, long, middleware.InProgress)

		odd := "id\x00with nul, \xff invalid UTF-8 and ünïcode"
		co := claim(t, s, odd, long, middleware.Claimed)
		claim(t, s, "id", long, middleware.Claimed)
		ok(t, "Release of an odd ID", s.Release(ctx, odd, co.Token))
		claim(t, s, odd, long, middleware.Claimed)
	})
}
