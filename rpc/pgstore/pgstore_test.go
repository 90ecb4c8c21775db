package pgstore_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-integration/patterns/internal/testenv"
	"github.com/go-integration/patterns/rpc"
	"github.com/go-integration/patterns/rpc/pgstore"
	"github.com/go-integration/patterns/rpc/rpctest"
)

// newStore returns a store on a fresh schema, its table created.
func newStore(t *testing.T) (*pgstore.Store, string) {
	t.Helper()
	_, dsn := testenv.Schema(t)
	s, err := pgstore.New(testenv.Pool(t, dsn))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Migrate(context.Background()); err != nil {
		t.Fatal(err)
	}
	return s, dsn
}

func TestConformance(t *testing.T) {
	rpctest.Run(t, rpctest.Harness{
		New:      func(t *testing.T) rpc.IdempotencyStore { s, _ := newStore(t); return s },
		Features: rpctest.Features{Cancellation: true},
	})
}

func TestCleanup(t *testing.T) {
	s, _ := newStore(t)
	ctx := context.Background()
	c, _ := s.Begin(ctx, "short", "fp", time.Minute)
	_ = s.Complete(ctx, "short", c.Token, &rpc.StoredResponse{StatusCode: 200}, time.Millisecond)
	c, _ = s.Begin(ctx, "long", "fp", time.Minute)
	_ = s.Complete(ctx, "long", c.Token, &rpc.StoredResponse{StatusCode: 200}, time.Hour)
	_, _ = s.Begin(ctx, "running", "fp", time.Minute)
	time.Sleep(20 * time.Millisecond)
	n, err := s.Cleanup(ctx)
	if err != nil || n != 1 {
		t.Fatalf("Cleanup = %d, %v; want 1", n, err)
	}
	if c, _ := s.Begin(ctx, "long", "fp", time.Minute); c.Record == nil || c.Record.Response == nil {
		t.Fatal("live row deleted")
	}
}

func TestWithTable(t *testing.T) {
	schema, dsn := testenv.Schema(t)
	s, err := pgstore.New(testenv.Pool(t, testenv.DatabaseURL(t)), pgstore.WithTable(schema+".idem"))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := s.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	if c, err := s.Begin(ctx, "k", "fp", time.Minute); err != nil || c.Record != nil {
		t.Fatalf("%v %v", c, err)
	}
	var n int
	if err := testenv.Pool(t, dsn).QueryRow(ctx, "select count(*) from idem").Scan(&n); err != nil || n != 1 {
		t.Fatalf("rows %d, %v", n, err)
	}
}

func TestBadOptions(t *testing.T) {
	pool := testenv.Pool(t, testenv.DatabaseURL(t))
	for name, opt := range map[string]pgstore.Option{
		"empty table":  pgstore.WithTable(""),
		"three parts":  pgstore.WithTable("a.b.c"),
		"empty schema": pgstore.WithTable(".x"),
		"timeout":      pgstore.WithQueryTimeout(0),
		"nil":          nil,
	} {
		if _, err := pgstore.New(pool, opt); !errors.Is(err, pgstore.ErrInvalidOption) {
			t.Errorf("%s: %v; want ErrInvalidOption", name, err)
		}
	}
	if _, err := pgstore.New(nil); !errors.Is(err, pgstore.ErrInvalidOption) {
		t.Errorf("nil DB: %v", err)
	}
	if _, err := pgstore.New(pool, pgstore.WithTable("x")); err != nil {
		t.Fatal(err)
	}
}

// An unreachable database, and a stuck one (its table locked by another
// session), both make Begin fail within the query timeout, and the middleware
// answers 503 with Retry-After without running the handler.
func TestDatabaseDownIsAnError(t *testing.T) {
	ctx := context.Background()
	down, err := pgstore.New(testenv.Pool(t, "postgres://postgres@127.0.0.1:1/test?connect_timeout=2"))
	if err != nil {
		t.Fatal(err)
	}
	_, dsn := newStore(t)
	stuck, err := pgstore.New(testenv.Pool(t, dsn), pgstore.WithQueryTimeout(200*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	tx, err := testenv.Pool(t, dsn).Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx.Rollback(ctx) }()
	if _, err := tx.Exec(ctx, "lock table rpc_idempotency in access exclusive mode"); err != nil {
		t.Fatal(err)
	}
	for name, store := range map[string]*pgstore.Store{"unreachable": down, "stuck": stuck} {
		// The 5 s context only keeps a broken store from hanging the test.
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		start := time.Now()
		if c, err := store.Begin(cctx, "k", "fp", time.Minute); err == nil {
			t.Fatalf("%s: Begin = %v, nil; want an error", name, c)
		}
		if d := time.Since(start); d > 3*time.Second {
			t.Fatalf("%s: Begin took %v: not bounded", name, d)
		}
		mw, err := rpc.Idempotency(store)
		if err != nil {
			t.Fatal(err)
		}
		var runs atomic.Int64
		h := mw(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { runs.Add(1) }))
		req := httptest.NewRequestWithContext(cctx, "POST", "/orders", strings.NewReader("book"))
		req.Header.Set(rpc.HeaderIdempotencyKey, "k")
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		if w.Code != http.StatusServiceUnavailable || w.Header().Get("Retry-After") == "" || runs.Load() != 0 {
			t.Fatalf("%s: middleware answered %d (Retry-After %q) and ran the handler %d times; want 503, a Retry-After, 0 runs",
				name, w.Code, w.Header().Get("Retry-After"), runs.Load())
		}
	}
}

// TestTwoServers runs two server instances, each with its own connection
// pool (as two processes would), over one table. 50 callers send the same
// POST with one key, spread over both servers, retrying 409 until they get
// the stored answer: the handler runs exactly once across both.
func TestTwoServers(t *testing.T) {
	_, dsn := newStore(t)
	var runs atomic.Int64
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := runs.Add(1)
		time.Sleep(30 * time.Millisecond)
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("Location", fmt.Sprintf("/orders/%d", n))
		w.WriteHeader(http.StatusCreated)
		fmt.Fprintf(w, "order %d: %s", n, body)
	})
	var servers []*httptest.Server
	for i := range 2 {
		store, err := pgstore.New(testenv.Pool(t, dsn))
		if err != nil {
			t.Fatal(err)
		}
		mw, err := rpc.Idempotency(store)
		if err != nil {
			t.Fatal(err)
		}
		h := mw(handler)
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("X-Server", fmt.Sprint(i))
			h.ServeHTTP(w, r)
		}))
		t.Cleanup(srv.Close)
		servers = append(servers, srv)
	}
	client, err := rpc.NewClient(rpc.WithRetryStatus(409, 503), rpc.WithMaxAttempts(200), rpc.WithoutRetryBudget(),
		rpc.WithBackoff(rpc.ExponentialBackoff{Base: 5 * time.Millisecond, Max: 20 * time.Millisecond}))
	if err != nil {
		t.Fatal(err)
	}
	const n = 50
	var wg sync.WaitGroup
	var mu sync.Mutex
	bodies := map[string]int{}
	replayedBy := map[string]int{}
	var errs []error
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			req, _ := http.NewRequestWithContext(ctx, "POST", servers[i%2].URL+"/orders", strings.NewReader("room 7"))
			req.Header.Set(rpc.HeaderIdempotencyKey, "two-servers")
			resp, err := client.Do(req)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, err)
				return
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != 201 {
				errs = append(errs, fmt.Errorf("status %d: %s", resp.StatusCode, b))
			}
			bodies[string(b)]++
			if resp.Header.Get(rpc.HeaderIdempotentReplayed) == "true" {
				replayedBy[resp.Header.Get("X-Server")]++
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	if runs.Load() != 1 {
		t.Fatalf("handler ran %d times across two servers, want 1", runs.Load())
	}
	if len(bodies) != 1 || bodies["order 1: room 7"] != n {
		t.Fatalf("bodies %v", bodies)
	}
	if replayedBy["0"] == 0 || replayedBy["1"] == 0 {
		t.Fatalf("replays by server %v: want both servers to replay", replayedBy)
	}
	// A different payload with the key is refused by either server.
	for _, srv := range servers {
		resp, err := http.Post(srv.URL+"/orders", "text/plain", strings.NewReader("room 8"))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		req, _ := http.NewRequest("POST", srv.URL+"/orders", strings.NewReader("room 8"))
		req.Header.Set(rpc.HeaderIdempotencyKey, "two-servers")
		resp, err = http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 422 {
			t.Fatalf("reused key with another payload: %d", resp.StatusCode)
		}
	}
}

// TestConcurrentMigrate starts 8 instances at once, each creating the
// table, 20 times over (the table dropped between rounds): without the
// advisory lock concurrent "create table if not exists" statements fail with
// a duplicate key in pg_type.
func TestConcurrentMigrate(t *testing.T) {
	_, dsn := testenv.Schema(t)
	ctx := context.Background()
	const instances, rounds = 8, 20
	stores := make([]*pgstore.Store, instances)
	for i := range stores {
		s, err := pgstore.New(testenv.Pool(t, dsn))
		if err != nil {
			t.Fatal(err)
		}
		stores[i] = s
	}
	admin := testenv.Pool(t, dsn)
	var failed []error
	for round := range rounds {
		if _, err := admin.Exec(ctx, "drop table if exists rpc_idempotency"); err != nil {
			t.Fatal(err)
		}
		start := make(chan struct{})
		errs := make([]error, instances)
		var wg sync.WaitGroup
		for i, s := range stores {
			wg.Go(func() {
				<-start
				errs[i] = s.Migrate(ctx)
			})
		}
		close(start)
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				failed = append(failed, fmt.Errorf("round %d, instance %d: %w", round, i, err))
			}
		}
	}
	if len(failed) > 0 {
		t.Fatalf("%d of %d Migrate calls failed; first: %v", len(failed), instances*rounds, failed[0])
	}
	if c, err := stores[0].Begin(ctx, "k", "fp", time.Minute); err != nil || c.Record != nil {
		t.Fatalf("Begin after Migrate = %v, %v", c, err)
	}
}

// Schema is the DDL Migrate applies: a migration tool can run it alone.
func TestSchemaAppliesAlone(t *testing.T) {
	_, dsn := testenv.Schema(t)
	ctx := context.Background()
	s, err := pgstore.New(testenv.Pool(t, dsn))
	if err != nil {
		t.Fatal(err)
	}
	for range 2 { // idempotent
		if _, err := testenv.Pool(t, dsn).Exec(ctx, s.Schema()); err != nil {
			t.Fatal(err)
		}
	}
	if c, err := s.Begin(ctx, "k", "fp", time.Minute); err != nil || c.Record != nil {
		t.Fatalf("Begin = %v, %v", c, err)
	}
}

// A table made before owner tokens (no owner column) gets it from Migrate.
func TestMigrateAddsOwnerColumn(t *testing.T) {
	_, dsn := testenv.Schema(t)
	ctx := context.Background()
	pool := testenv.Pool(t, dsn)
	if _, err := pool.Exec(ctx, `create table rpc_idempotency (
    key text primary key, fingerprint text not null, status int, header jsonb, body bytea,
    expires_at timestamptz not null, created_at timestamptz not null default now())`); err != nil {
		t.Fatal(err)
	}
	s, err := pgstore.New(pool)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	c, err := s.Begin(ctx, "k", "fp", time.Minute)
	if err != nil || c.Record != nil {
		t.Fatalf("Begin = %v, %v", c, err)
	}
	if err := s.Complete(ctx, "k", c.Token, &rpc.StoredResponse{StatusCode: 201}, time.Hour); err != nil {
		t.Fatal(err)
	}
}
