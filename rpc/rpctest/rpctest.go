// Package rpctest checks that an rpc.IdempotencyStore keeps the promises the
// Idempotency middleware relies on, alone and under the middleware. Run it
// from a store's tests:
//
//	func TestConformance(t *testing.T) {
//		rpctest.Run(t, rpctest.Harness{
//			New:      func(t *testing.T) rpc.IdempotencyStore { return newStore(t) },
//			Features: rpctest.Features{Cancellation: true},
//		})
//	}
package rpctest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-integration/patterns/internal/testenv"
	"github.com/go-integration/patterns/rpc"
)

// Harness builds the store under test.
type Harness struct {
	// New returns a new store, or one whose keys the subtest cannot collide
	// with; it is called once per subtest.
	New func(t *testing.T) rpc.IdempotencyStore
	// Features declares what the store promises beyond the basics.
	Features Features
}

// Features switches groups of tests on. The zero value runs what every
// store must pass: exclusive claims with distinct owner tokens, exact
// responses, release, expiry, refused stale owners (alone and under the
// middleware).
type Features struct {
	// Cancellation: Begin fails when its context is already cancelled.
	Cancellation bool
}

// Run runs the conformance tests against stores made by h.New.
func Run(t *testing.T, h Harness) {
	if h.New == nil {
		t.Fatal("rpctest: Harness.New is nil")
	}
	newStore := h.New
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
		waitForClaim(t, s, "k", "fp")
	})

	t.Run("ResponsesExpire", func(t *testing.T) {
		s := newStore(t)
		tok := claim(t, s, "k", "fp", lock)
		_ = s.Complete(ctx, "k", tok, &rpc.StoredResponse{StatusCode: 200, Header: http.Header{}}, 200*time.Millisecond)
		if rec := record(t, s, "k", "fp"); rec.Response == nil {
			t.Fatal("response gone before its TTL")
		}
		waitForClaim(t, s, "k", "fp2")
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

	t.Run("MiddlewareStaleOwner", func(t *testing.T) { staleOwner(t, newStore(t)) })

	t.Run("CancelledContext", func(t *testing.T) {
		if !h.Features.Cancellation {
			t.Skip("Features.Cancellation is off")
		}
		s := newStore(t)
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		if _, err := s.Begin(cctx, "k", "fp", lock); err == nil {
			t.Fatal("Begin with a cancelled context succeeded")
		}
	})
}

// waitForClaim begins key until the store gives it to the caller (the
// earlier claim's lock or response lapsed) and returns the new token.
func waitForClaim(t *testing.T, s rpc.IdempotencyStore, key, fp string) string {
	t.Helper()
	var token string
	testenv.Eventually(t, 5*time.Second, "Begin("+key+") claims the key once the lock lapses", func() bool {
		c, err := s.Begin(context.Background(), key, fp, time.Minute)
		if err != nil {
			t.Fatalf("Begin(%s): %v", key, err)
		}
		if c.Record == nil && c.Token == "" {
			t.Fatalf("Begin(%s) claimed without a token", key)
		}
		token = c.Token
		return c.Record == nil
	})
	return token
}

// staleOwner runs the middleware over s with a handler slower than the lock
// timeout: a second request with the key claims it and runs the handler
// again; the first request's late response reaches its client but is
// neither stored nor allowed to release the key (traced and logged as
// stale), so retries replay the second response.
func staleOwner(t *testing.T, s rpc.IdempotencyStore) {
	var logs syncBuffer
	tr := &outcomes{}
	mw, err := rpc.Idempotency(s, rpc.WithLockTimeout(50*time.Millisecond),
		rpc.WithLogger(slog.New(slog.NewTextHandler(&logs, nil))), rpc.WithTracer(tr))
	if err != nil {
		t.Fatal(err)
	}
	var runs atomic.Int64
	firstIn, firstGo := make(chan struct{}), make(chan struct{})
	h := mw(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := runs.Add(1)
		if n == 1 {
			close(firstIn)
			<-firstGo // outlives the lock timeout
		}
		w.WriteHeader(http.StatusCreated)
		fmt.Fprintf(w, "run %d", n)
	}))
	serve := func() *httptest.ResponseRecorder {
		req := httptest.NewRequest("POST", "/orders", strings.NewReader("x"))
		req.Header.Set(rpc.HeaderIdempotencyKey, "slow")
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		return w
	}
	first := make(chan *httptest.ResponseRecorder)
	go func() { first <- serve() }()
	<-firstIn
	// Retry until the first claim lapses and the retry owns the key.
	var second *httptest.ResponseRecorder
	testenv.Eventually(t, 5*time.Second, "the first claim lapses", func() bool {
		second = serve()
		return second.Code != http.StatusConflict
	})
	if second.Code != 201 || second.Body.String() != "run 2" {
		t.Fatalf("second request: %d %q; want 201 run 2", second.Code, second.Body)
	}
	close(firstGo)
	if w := <-first; w.Code != 201 || w.Body.String() != "run 1" {
		t.Fatalf("first request: %d %q; want its own 201 run 1", w.Code, w.Body)
	}
	for range 2 {
		w := serve()
		if w.Code != 201 || w.Body.String() != "run 2" || w.Header().Get(rpc.HeaderIdempotentReplayed) != "true" {
			t.Fatalf("retry: %d %q replayed=%q; want the second request's stored response", w.Code, w.Body, w.Header().Get(rpc.HeaderIdempotentReplayed))
		}
	}
	if runs.Load() != 2 {
		t.Fatalf("handler ran %d times, want 2", runs.Load())
	}
	if !strings.Contains(logs.String(), "response not stored") {
		t.Fatalf("no warning about the stale claim logged: %s", logs.String())
	}
	stale := tr.find(rpc.IdempotencyStale)
	if stale == nil || stale.Key != "slow" || stale.StatusCode != 201 || !errors.Is(stale.Err, rpc.ErrStaleClaim) {
		t.Fatalf("traced %+v; want a stale outcome for key slow, status 201, ErrStaleClaim", tr.all())
	}
	if tr.find(rpc.IdempotencyStored) == nil || tr.find(rpc.IdempotencyReplayed) == nil || tr.find(rpc.IdempotencyInProgress) == nil {
		t.Fatalf("traced %+v; want stored, replayed and in-progress outcomes too", tr.all())
	}
}

// outcomes records what the middleware traces.
type outcomes struct {
	mu sync.Mutex
	d  []rpc.TraceIdempotencyData
}

func (o *outcomes) TraceIdempotency(_ context.Context, d rpc.TraceIdempotencyData) {
	o.mu.Lock()
	o.d = append(o.d, d)
	o.mu.Unlock()
}

func (o *outcomes) all() []rpc.TraceIdempotencyData {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]rpc.TraceIdempotencyData(nil), o.d...)
}

func (o *outcomes) find(out rpc.IdempotencyOutcome) *rpc.TraceIdempotencyData {
	for _, d := range o.all() {
		if d.Outcome == out {
			return &d
		}
	}
	return nil
}

type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
