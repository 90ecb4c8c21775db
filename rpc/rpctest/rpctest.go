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

	t.Run("FirstBeginClaims", func(t *testing.T) {
		s := newStore(t)
		rec, err := s.Begin(ctx, "k", "fp", lock)
		if err != nil || rec != nil {
			t.Fatalf("Begin = %v, %v; want the claim (nil, nil)", rec, err)
		}
		rec, err = s.Begin(ctx, "k", "fp", lock)
		if err != nil || rec == nil || rec.Response != nil || rec.Fingerprint != "fp" {
			t.Fatalf("second Begin = %+v, %v; want the running record", rec, err)
		}
		rec, err = s.Begin(ctx, "k", "other", lock)
		if err != nil || rec == nil || rec.Fingerprint != "fp" {
			t.Fatalf("Begin with another fingerprint = %+v, %v; want the first fingerprint", rec, err)
		}
	})

	t.Run("CompleteKeepsTheResponseExactly", func(t *testing.T) {
		s := newStore(t)
		if _, err := s.Begin(ctx, "k", "fp", lock); err != nil {
			t.Fatal(err)
		}
		body := []byte{0, 1, 2, 0xff, 0xfe, '\n'}
		want := &rpc.StoredResponse{StatusCode: 201, Header: http.Header{
			"Content-Type": {"application/octet-stream"},
			"X-Multi":      {"a", "b"},
			"Location":     {"/orders/1"},
		}, Body: body}
		if err := s.Complete(ctx, "k", want, ttl); err != nil {
			t.Fatal(err)
		}
		rec, err := s.Begin(ctx, "k", "fp", lock)
		if err != nil || rec == nil || rec.Response == nil {
			t.Fatalf("Begin after Complete = %+v, %v", rec, err)
		}
		got := rec.Response
		if got.StatusCode != 201 || !reflect.DeepEqual(got.Header, want.Header) || !bytes.Equal(got.Body, body) || rec.Fingerprint != "fp" {
			t.Fatalf("stored %+v, want %+v", got, want)
		}
	})

	t.Run("EmptyBody", func(t *testing.T) {
		s := newStore(t)
		_, _ = s.Begin(ctx, "k", "fp", lock)
		if err := s.Complete(ctx, "k", &rpc.StoredResponse{StatusCode: 204, Header: http.Header{}}, ttl); err != nil {
			t.Fatal(err)
		}
		rec, err := s.Begin(ctx, "k", "fp", lock)
		if err != nil || rec == nil || rec.Response == nil || rec.Response.StatusCode != 204 || len(rec.Response.Body) != 0 {
			t.Fatalf("Begin = %+v, %v", rec, err)
		}
	})

	t.Run("ReleaseFreesTheKey", func(t *testing.T) {
		s := newStore(t)
		_, _ = s.Begin(ctx, "k", "fp", lock)
		if err := s.Release(ctx, "k"); err != nil {
			t.Fatal(err)
		}
		rec, err := s.Begin(ctx, "k", "fp2", lock)
		if err != nil || rec != nil {
			t.Fatalf("Begin after Release = %+v, %v; want a new claim", rec, err)
		}
	})

	t.Run("ReleaseKeepsACompletedKey", func(t *testing.T) {
		s := newStore(t)
		_, _ = s.Begin(ctx, "k", "fp", lock)
		_ = s.Complete(ctx, "k", &rpc.StoredResponse{StatusCode: 200, Header: http.Header{}}, ttl)
		if err := s.Release(ctx, "k"); err != nil {
			t.Fatal(err)
		}
		if rec, err := s.Begin(ctx, "k", "fp", lock); err != nil || rec == nil || rec.Response == nil {
			t.Fatalf("Begin = %+v, %v; want the kept response", rec, err)
		}
	})

	t.Run("LockLapses", func(t *testing.T) {
		s := newStore(t)
		_, _ = s.Begin(ctx, "k", "fp", 200*time.Millisecond)
		if rec, _ := s.Begin(ctx, "k", "fp", lock); rec == nil {
			t.Fatal("claimed a locked key")
		}
		time.Sleep(300 * time.Millisecond)
		if rec, err := s.Begin(ctx, "k", "fp", lock); err != nil || rec != nil {
			t.Fatalf("Begin after the lock lapsed = %+v, %v; want a new claim", rec, err)
		}
	})

	t.Run("ResponsesExpire", func(t *testing.T) {
		s := newStore(t)
		_, _ = s.Begin(ctx, "k", "fp", lock)
		_ = s.Complete(ctx, "k", &rpc.StoredResponse{StatusCode: 200, Header: http.Header{}}, 200*time.Millisecond)
		if rec, _ := s.Begin(ctx, "k", "fp", lock); rec == nil || rec.Response == nil {
			t.Fatal("response gone before its TTL")
		}
		time.Sleep(300 * time.Millisecond)
		if rec, err := s.Begin(ctx, "k", "fp2", lock); err != nil || rec != nil {
			t.Fatalf("Begin after expiry = %+v, %v; want a new claim", rec, err)
		}
	})

	t.Run("KeysAreIndependent", func(t *testing.T) {
		s := newStore(t)
		_, _ = s.Begin(ctx, "a", "fp", lock)
		if rec, err := s.Begin(ctx, "b", "fp", lock); err != nil || rec != nil {
			t.Fatalf("Begin(b) = %+v, %v", rec, err)
		}
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
				rec, err := s.Begin(ctx, "k", "fp", lock)
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					errs = append(errs, fmt.Errorf("caller %d: %w", i, err))
				} else if rec == nil {
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
