// Package deduptest is the conformance suite every middleware.DedupStore
// passes. A store's test calls Run with a Harness:
//
//	func TestConformance(t *testing.T) {
//		deduptest.Run(t, deduptest.Harness{
//			New: func(t *testing.T) middleware.DedupStore { return newStore(t) },
//		})
//	}
//
// The suite covers claims (new, in progress, handled), Release, owner tokens
// (a stale Done or Release is refused with middleware.ErrStaleClaim and
// changes nothing), expiry of claims and of handled entries, Done by an
// owner whose claim expired but was not taken over, 50 concurrent claimers
// of one ID, and empty and long IDs.
package deduptest

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/go-integration/patterns/broker/middleware"
)

// Harness tells Run how to make the store under test.
type Harness struct {
	// New returns an empty store (or one whose IDs no other test uses).
	// Register clean-up with t.Cleanup. With Features.Bubble it is called
	// inside the test's testing/synctest bubble.
	New func(t *testing.T) middleware.DedupStore
	// Features declares what the store allows the suite to do.
	Features Features
}

// Features switches parts of the suite on or off.
type Features struct {
	// Bubble: the store keeps time with the time package in this process
	// and its goroutines (if any) block only on what a testing/synctest
	// bubble can see, so the suite runs each test in a bubble and lets time
	// pass without waiting (the memory store). Off (a store on a database's
	// clock), the suite really sleeps to let lifetimes expire, a few hundred
	// milliseconds in all.
	Bubble bool
}

// Lifetimes the suite uses. Long ones never expire during a test; short ones
// expire after one wait.
const (
	long  = time.Hour
	short = time.Millisecond
	// handledShort must stay unexpired between two consecutive calls (on a
	// real clock too) and expire after a wait of it.
	handledShort = 200 * time.Millisecond
)

// pass lets at least d pass on the store's clock: in a bubble time.Sleep
// moves the fake clock at once; on a real clock it sleeps.
func pass(d time.Duration) { time.Sleep(d + time.Millisecond) }

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

// Run runs the conformance tests, each on a store from h.New, as subtests of t.
func Run(t *testing.T, h Harness) {
	ctx := context.Background()
	test := func(name string, f func(t *testing.T, s middleware.DedupStore)) {
		t.Run(name, func(t *testing.T) {
			if h.Features.Bubble {
				synctest.Test(t, func(t *testing.T) { f(t, h.New(t)) })
				return
			}
			f(t, h.New(t))
		})
	}

	test("ClaimThenInProgressThenHandled", func(t *testing.T, s middleware.DedupStore) {
		c := claim(t, s, "m1", long, middleware.Claimed)
		claim(t, s, "m1", long, middleware.InProgress)
		claim(t, s, "m2", long, middleware.Claimed) // IDs are independent
		ok(t, "Done", s.Done(ctx, "m1", c.Token, long))
		claim(t, s, "m1", long, middleware.Handled)
		claim(t, s, "m1", long, middleware.Handled)
	})

	test("ReleaseLetsTheNextClaimWin", func(t *testing.T, s middleware.DedupStore) {
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

	test("WrongTokenChangesNothing", func(t *testing.T, s middleware.DedupStore) {
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

	test("ExpiredClaimIsTakenOverAndTheStaleOwnerRefused", func(t *testing.T, s middleware.DedupStore) {
		old := claim(t, s, "m", short, middleware.Claimed)
		pass(short)
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

	test("HandledExpires", func(t *testing.T, s middleware.DedupStore) {
		c := claim(t, s, "m", long, middleware.Claimed)
		ok(t, "Done", s.Done(ctx, "m", c.Token, handledShort))
		claim(t, s, "m", long, middleware.Handled)
		c2 := claim(t, s, "long", long, middleware.Claimed)
		ok(t, "Done", s.Done(ctx, "long", c2.Token, long))
		pass(handledShort)
		c3 := claim(t, s, "m", long, middleware.Claimed)
		if c3.Token == c.Token {
			t.Fatalf("the new claim reuses the token %q", c.Token)
		}
		claim(t, s, "long", long, middleware.Handled)
		stale(t, "Done with the expired handled entry's token", s.Done(ctx, "m", c.Token, long))
		claim(t, s, "m", long, middleware.InProgress)
	})

	test("ConcurrentClaimersOneWins", func(t *testing.T, s middleware.DedupStore) {
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

	test("DoneAfterExpiryWithoutTakeover", func(t *testing.T, s middleware.DedupStore) {
		// An owner whose claim expired but was not taken over (nor swept)
		// still owns it.
		c := claim(t, s, "m", short, middleware.Claimed)
		pass(short)
		ok(t, "Done after the claim expired", s.Done(ctx, "m", c.Token, long))
		claim(t, s, "m", long, middleware.Handled)
		c2 := claim(t, s, "r", short, middleware.Claimed)
		pass(short)
		ok(t, "Release after the claim expired", s.Release(ctx, "r", c2.Token))
		claim(t, s, "r", long, middleware.Claimed)
	})

	test("EmptyAndLongIDs", func(t *testing.T, s middleware.DedupStore) {
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
