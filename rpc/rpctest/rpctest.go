// Package rpctest checks that an rpc.IdempotencyStore keeps the promises the
// Idempotency middleware relies on. Run it from a store's tests:
//
//	func TestConformance(t *testing.T) {
//		rpctest.RunStoreTests(t, func(t *testing.T) rpc.IdempotencyStore { return newStore(t) })
//	}
package rpctest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/go-integration/patterns/rpc"
)

// RunStoreTests runs the conformance tests against stores made by newStore.
// Each subtest gets a new store (or one whose keys it cannot collide with).
func RunStoreTests(t *testing.T, newStore func(t *testing.T) rpc.IdempotencyStore) {
	ctx := context.Background()
	const lock, ttl = time.Minute, time.Hour
	// claim begins key and fails unless the caller got it.
	claim := func(t *testing.T, s rpc.IdempotencyStore, key, fp string, lock time.Duration) string {
		t.Helper()
		c, err := s.Begin(ctx, key, fp, lock)
		if err != nil || c.Record != nil || c.Token == "" {
			t.Fatalf("Begin(%s) = %+v, %v; want a claim with a token", key, c, err)
		}
		return c.Token
	}
	// record begins key and fails unless it is known (not claimed).
	record := func(t *testing.T, s rpc.IdempotencyStore, key, fp string) *rpc.Record {
		t.Helper()
		c, err := s.Begin(ctx, key, fp, lock)
		if err != nil || c.Record == nil || c.Token != "" {
			t.Fatalf("Begin(%s) = %+v, %v; want the key's record and no token", key, c, err)
		}
		return c.Record
	}

	t.Run("FirstBeginClaims", func(t *testing.T) {
		s := newStore(t)
		claim(t, s, "k", "fp", lock)
		if rec := record(t, s, "k", "fp"); rec.Response != nil || rec.Fingerprint != "fp" {
			t.Fatalf("second Begin = %+v; want the running record", rec)
		}
		if rec := record(t, s, "k", "other"); rec.Fingerprint != "fp" {
			t.Fatalf("Begin with another fingerprint = %+v; want the first fingerprint", rec)
		}
	})

	t.Run("TokensAreDistinct", func(t *testing.T) {
		s := newStore(t)
		if a, b := claim(t, s, "a", "fp", lock), claim(t, s, "b", "fp", lock); a == b {
			t.Fatalf("two claims got the same token %q", a)
		}
	})

	t.Run("CompleteKeepsTheResponseExactly", func(t *testing.T) {
		s := newStore(t)
		tok := claim(t, s, "k", "fp", lock)
		body := []byte{0, 1, 2, 0xff, 0xfe, '\n'}
		want := &rpc.StoredResponse{StatusCode: 201, Header: http.Header{
			"Content-Type": {"application/octet-stream"},
			"X-Multi":      {"a", "b"},
			"Location":     {"/orders/1"},
		}, Body: body}
		if err := s.Complete(ctx, "k", tok, want, ttl); err != nil {
			t.Fatal(err)
		}
		rec := record(t, s, "k", "fp")
		got := rec.Response
		if got == nil || got.StatusCode != 201 || !reflect.DeepEqual(got.Header, want.Header) || !bytes.Equal(got.Body, body) || rec.Fingerprint != "fp" {
			t.Fatalf("stored %+v, want %+v", got, want)
		}
	})

	t.Run("EmptyBody", func(t *testing.T) {
		s := newStore(t)
		tok := claim(t, s, "k", "fp", lock)
		if err := s.Complete(ctx, "k", tok, &rpc.StoredResponse{StatusCode: 204, Header: http.Header{}}, ttl); err != nil {
			t.Fatal(err)
		}
		if rec := record(t, s, "k", "fp"); rec.Response == nil || rec.Response.StatusCode != 204 || len(rec.Response.Body) != 0 {
			t.Fatalf("Begin = %+v", rec)
		}
	})

	t.Run("ReleaseFreesTheKey", func(t *testing.T) {
		s := newStore(t)
		tok := claim(t, s, "k", "fp", lock)
		if err := s.Release(ctx, "k", tok); err != nil {
			t.Fatal(err)
		}
		claim(t, s, "k", "fp2", lock)
	})

	t.Run("ReleaseKeepsACompletedKey", func(t *testing.T) {
		s := newStore(t)
		tok := claim(t, s, "k", "fp", lock)
		if err := s.Complete(ctx, "k", tok, &rpc.StoredResponse{StatusCode: 200, Header: http.Header{}}, ttl); err != nil {
			t.Fatal(err)
		}
		if err := s.Release(ctx, "k", tok); err != nil {
			t.Fatal(err)
		}
		if rec := record(t, s, "k", "fp"); rec.Response == nil {
			t.Fatalf("Begin = %+v; want the kept response", rec)
		}
	})

	t.Run("WrongTokenChangesNothing", func(t *testing.T) {
		s := newStore(t)
		tok := claim(t, s, "k", "fp", lock)
		for _, bad := range []string{"", "not-the-token", tok + "x"} {
			if err := s.Complete(ctx, "k", bad, &rpc.StoredResponse{StatusCode: 201, Header: http.Header{}}, ttl); !errors.Is(err, rpc.ErrStaleClaim) {
				t.Fatalf("Complete with token %q = %v; want ErrStaleClaim", bad, err)
			}
			if err := s.Release(ctx, "k", bad); !errors.Is(err, rpc.ErrStaleClaim) {
				t.Fatalf("Release with token %q = %v; want ErrStaleClaim", bad, err)
			}
		}
		if rec := record(t, s, "k", "fp"); rec.Response != nil {
			t.Fatalf("record after wrong tokens = %+v; want still running", rec)
		}
		if err := s.Complete(ctx, "unknown", tok, &rpc.StoredResponse{StatusCode: 201, Header: http.Header{}}, ttl); !errors.Is(err, rpc.ErrStaleClaim) {
			t.Fatalf("Complete of an unknown key = %v; want ErrStaleClaim", err)
		}
		if err := s.Release(ctx, "unknown", tok); !errors.Is(err, rpc.ErrStaleClaim) {
			t.Fatalf("Release of an unknown key = %v; want ErrStaleClaim", err)
		}
		// The owner still completes it.
		if err := s.Complete(ctx, "k", tok, &rpc.StoredResponse{StatusCode: 201, Header: http.Header{}}, ttl); err != nil {
			t.Fatal(err)
		}
		// A wrong token cannot release or overwrite a completed key either.
		if err := s.Complete(ctx, "k", "not-the-token", &rpc.StoredResponse{StatusCode: 500, Header: http.Header{}}, ttl); !errors.Is(err, rpc.ErrStaleClaim) {
			t.Fatalf("Complete of a completed key with a wrong token = %v; want ErrStaleClaim", err)
		}
		if rec := record(t, s, "k", "fp"); rec.Response == nil || rec.Response.StatusCode != 201 {
			t.Fatalf("record = %+v; want the owner's 201", rec)
		}
	})

	// A claim whose lock lapsed is taken over by a second Begin; the first
	// owner can then neither complete nor release the key, and the second
	// owner's claim and response stay intact.
	t.Run("StaleOwnerIsRefused", func(t *testing.T) {
		s := newStore(t)
		const short = 50 * time.Millisecond
		first := claim(t, s, "k", "fp", short)
		second := waitForClaim(t, s, "k", "fp2")
		if second == first {
			t.Fatalf("the second claim got the first one's token %q", first)
		}
		if err := s.Complete(ctx, "k", first, &rpc.StoredResponse{StatusCode: 201, Header: http.Header{}, Body: []byte("first")}, ttl); !errors.Is(err, rpc.ErrStaleClaim) {
			t.Fatalf("stale Complete = %v; want ErrStaleClaim", err)
		}
		if err := s.Release(ctx, "k", first); !errors.Is(err, rpc.ErrStaleClaim) {
			t.Fatalf("stale Release = %v; want ErrStaleClaim", err)
		}
		if rec := record(t, s, "k", "fp2"); rec.Response != nil || rec.Fingerprint != "fp2" {
			t.Fatalf("record after stale calls = %+v; want the second owner's running claim", rec)
		}
		if err := s.Complete(ctx, "k", second, &rpc.StoredResponse{StatusCode: 201, Header: http.Header{}, Body: []byte("second")}, ttl); err != nil {
			t.Fatalf("second owner's Complete: %v", err)
		}
		if err := s.Complete(ctx, "k", first, &rpc.StoredResponse{StatusCode: 201, Header: http.Header{}, Body: []byte("first")}, ttl); !errors.Is(err, rpc.ErrStaleClaim) {
			t.Fatalf("stale Complete after the second owner's = %v; want ErrStaleClaim", err)
		}
		if err := s.Release(ctx, "k", first); !errors.Is(err, rpc.ErrStaleClaim) {
			t.Fatalf("stale Release after the second owner's Complete = %v; want ErrStaleClaim", err)
		}
		if rec := record(t, s, "k", "fp2"); rec.Response == nil || string(rec.Response.Body) != "second" {
			t.Fatalf("record = %+v; want the second owner's response", rec)
		}
	})

	t.Run("LockLapses", func(t *testing.T) {
		s := newStore(t)
		claim(t, s, "k", "fp", 200*time.Millisecond)
		record(t, s, "k", "fp")
		time.Sleep(300 * time.Millisecond)
		claim(t, s, "k", "fp", lock)
	})

	t.Run("ResponsesExpire", func(t *testing.T) {
		s := newStore(t)
		tok := claim(t, s, "k", "fp", lock)
		_ = s.Complete(ctx, "k", tok, &rpc.StoredResponse{StatusCode: 200, Header: http.Header{}}, 200*time.Millisecond)
		if rec := record(t, s, "k", "fp"); rec.Response == nil {
			t.Fatal("response gone before its TTL")
		}
		time.Sleep(300 * time.Millisecond)
		claim(t, s, "k", "fp2", lock)
	})

	t.Run("KeysAreIndependent", func(t *testing.T) {
		s := newStore(t)
		claim(t, s, "a", "fp", lock)
		claim(t, s, "b", "fp", lock)
	})

	t.Run("ExactlyOneConcurrentClaim", func(t *testing.T) {
		s := newStore(t)
		const n = 50
		var wg sync.WaitGroup
		var mu sync.Mutex
		claims, errs := 0, []error(nil)
		start := make(chan struct{})
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				c, err := s.Begin(ctx, "k", "fp", lock)
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					errs = append(errs, fmt.Errorf("caller %d: %w", i, err))
				} else if c.Record == nil {
					claims++
				}
			}()
		}
		close(start)
		wg.Wait()
		if len(errs) > 0 || claims != 1 {
			t.Fatalf("%d claims, errors %v; want exactly 1 claim", claims, errs)
		}
	})

	t.Run("CancelledContext", func(t *testing.T) {
		s := newStore(t)
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		if _, err := s.Begin(cctx, "k", "fp", lock); err == nil {
			t.Fatal("Begin with a cancelled context succeeded")
		}
	})
}

// waitForClaim begins key until the store gives it to the caller (the
// earlier claim's lock lapsed) and returns the new token. It gives up after
// 5 seconds.
func waitForClaim(t *testing.T, s rpc.IdempotencyStore, key, fp string) string {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		c, err := s.Begin(context.Background(), key, fp, time.Minute)
		if err != nil {
			t.Fatalf("Begin(%s): %v", key, err)
		}
		if c.Record == nil {
			if c.Token == "" {
				t.Fatalf("Begin(%s) claimed without a token", key)
			}
			return c.Token
		}
		if time.Now().After(deadline) {
			t.Fatalf("Begin(%s) still refused after 5s: the lock never lapsed", key)
		}
		<-tick.C
	}
}
