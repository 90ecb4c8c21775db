package pgstore_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-integration/patterns/internal/testenv"
	"github.com/go-integration/patterns/webhook"
	"github.com/go-integration/patterns/webhook/pgstore"
	"github.com/go-integration/patterns/webhook/storetest"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// newPool returns a pool on a schema of the test's own, migrated.
func newPool(t *testing.T) *pgxpool.Pool {
	t.Helper()
	_, dsn := testenv.Schema(t)
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		t.Fatal(err)
	}
	cfg.MaxConns = 8
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	if err := pgstore.Migrate(context.Background(), pool); err != nil {
		t.Fatal(err)
	}
	return pool
}

func TestConformance(t *testing.T) {
	storetest.Run(t, storetest.Harness{
		NewStore: func(t *testing.T) webhook.Store { return pgstore.New(newPool(t)) },
		NewDedup: func(t *testing.T) webhook.DedupStore { return pgstore.NewDedup(newPool(t)) },
		Features: storetest.Features{Purge: true},
	})
}

func TestMigrateTwice(t *testing.T) {
	pool := newPool(t)
	var wg sync.WaitGroup
	for range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := pgstore.Migrate(context.Background(), pool); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
}

func TestDedupCleanup(t *testing.T) {
	d := pgstore.NewDedup(newPool(t))
	ctx := context.Background()
	t0 := time.Now()
	for i := range 3 {
		if _, err := d.Begin(ctx, fmt.Sprint(i), t0, t0.Add(time.Duration(i)*time.Minute)); err != nil {
			t.Fatal(err)
		}
	}
	if n, err := d.Cleanup(ctx, t0.Add(90*time.Second)); err != nil || n != 2 {
		t.Fatalf("Cleanup = %d, %v; want 2", n, err)
	}
}

var loopback = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")}

// countingReceiver is a real webhook.Receiver behind a counter of raw requests.
type countingReceiver struct {
	*httptest.Server
	requests atomic.Int32
	mu       sync.Mutex
	handled  map[string]int
}

func newCountingReceiver(t *testing.T, secret string, dedup webhook.DedupStore) *countingReceiver {
	t.Helper()
	v, err := webhook.NewVerifier([]string{secret})
	if err != nil {
		t.Fatal(err)
	}
	c := &countingReceiver{handled: map[string]int{}}
	opts := []webhook.ReceiverOption{webhook.WithoutDedup()}
	if dedup != nil {
		opts = []webhook.ReceiverOption{webhook.WithDedup(dedup)}
	}
	h := mustReceiver(t, v, opts...).Handler(func(_ context.Context, e webhook.Event) error {
		c.mu.Lock()
		c.handled[e.ID]++
		c.mu.Unlock()
		return nil
	})
	c.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c.requests.Add(1)
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(c.Close)
	return c
}

func (c *countingReceiver) handledCounts() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]int, len(c.handled))
	for k, v := range c.handled {
		out[k] = v
	}
	return out
}

// TestSendersShareTheQueue runs three Senders (as three processes would) on
// one PostgreSQL queue: every delivery arrives exactly once.
func TestSendersShareTheQueue(t *testing.T) {
	pool := newPool(t)
	store := pgstore.New(pool)
	ctx := context.Background()
	secret := webhook.NewSecret()
	// No dedup at the receiver: a double send would show as a double handling.
	recv := newCountingReceiver(t, secret, nil)
	if err := store.SaveEndpoint(ctx, webhook.Endpoint{ID: "e", URL: recv.URL, Secrets: []string{secret}}); err != nil {
		t.Fatal(err)
	}
	const msgs = 60
	var attempts atomic.Int32
	all := make(chan struct{})
	runCtx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for i := range 3 {
		s, err := webhook.NewSender(pgstore.New(pool), webhook.WithAllowedNetworks(loopback...),
			webhook.WithConcurrency(4), webhook.WithPollInterval(10*time.Millisecond),
			webhook.WithTracer(tracer{
				storeError: func(err error) { t.Errorf("sender %d: %v", i, err) },
				attempt: func(webhook.TraceAttemptEndData) {
					if attempts.Add(1) == msgs {
						close(all)
					}
				},
			}))
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		wg.Add(1)
		go func() { defer wg.Done(); _ = s.Run(runCtx) }()
	}
	for i := range msgs {
		if _, err := store.Enqueue(ctx, webhook.Message{ID: fmt.Sprintf("msg_%03d", i), Type: "t", Payload: []byte("{}"), Time: time.Now()}, time.Now()); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case <-all:
	case <-time.After(20 * time.Second):
		t.Fatalf("only %d of %d attempts", attempts.Load(), msgs)
	}
	cancel()
	wg.Wait()
	handled := recv.handledCounts()
	if len(handled) != msgs || recv.requests.Load() != msgs || attempts.Load() != msgs {
		t.Fatalf("%d distinct handled, %d requests, %d attempts; want %d each", len(handled), recv.requests.Load(), attempts.Load(), msgs)
	}
	for id, n := range handled {
		if n != 1 {
			t.Fatalf("%s handled %d times", id, n)
		}
	}
	var pending int
	if err := pool.QueryRow(ctx, `select count(*) from webhook_deliveries where state <> 'succeeded'`).Scan(&pending); err != nil || pending != 0 {
		t.Fatalf("%d deliveries not succeeded (%v)", pending, err)
	}
}

// killedStore loses every Record, as a process killed between an attempt and
// its record would.
type killedStore struct{ webhook.Store }

func (killedStore) Record(context.Context, webhook.Delivery, webhook.Attempt) (time.Time, error) {
	return time.Time{}, errors.New("process killed")
}

// TestKilledBetweenAttemptAndRecord: a worker sends but dies before
// recording; after its lease ends another worker (a fresh pool, as after a
// restart) delivers again, the receiver deduplicates, and nothing is lost.
func TestKilledBetweenAttemptAndRecord(t *testing.T) {
	_, dsn := testenv.Schema(t)
	ctx := context.Background()
	open := func() *pgxpool.Pool {
		pool, err := pgxpool.New(ctx, dsn)
		if err != nil {
			t.Fatal(err)
		}
		return pool
	}
	first := open()
	if err := pgstore.Migrate(ctx, first); err != nil {
		t.Fatal(err)
	}
	secret := webhook.NewSecret()
	dedupPool := open()
	defer dedupPool.Close()
	recv := newCountingReceiver(t, secret, pgstore.NewDedup(dedupPool))
	store := pgstore.New(first)
	if err := store.SaveEndpoint(ctx, webhook.Endpoint{ID: "e", URL: recv.URL, Secrets: []string{secret}}); err != nil {
		t.Fatal(err)
	}
	opts := []webhook.SenderOption{webhook.WithAllowedNetworks(loopback...), webhook.WithAttemptTimeout(time.Second), webhook.WithLease(2 * time.Second)}
	doomed, err := webhook.NewSender(killedStore{store}, opts...)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for range 5 {
		m, _, err := doomed.Send(ctx, webhook.Message{Type: "t", Payload: []byte(`{}`)})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, m.ID)
	}
	if n, err := doomed.RunOnce(ctx); n != 5 || err != nil {
		t.Fatalf("doomed worker: %d, %v", n, err)
	}
	doomed.Close()
	first.Close() // the process is gone

	second := open()
	defer second.Close()
	survivorStore := pgstore.New(second)
	now := time.Now()
	survivor, _ := webhook.NewSender(survivorStore, opts...)
	defer survivor.Close()
	if n, _ := survivor.RunOnce(ctx); n != 0 {
		t.Fatalf("claimed %d deliveries while the dead worker's lease held", n)
	}
	later, _ := webhook.NewSender(survivorStore, append(opts, webhook.WithClock(func() time.Time { return now.Add(3 * time.Second) }))...)
	defer later.Close()
	if n, err := later.RunOnce(ctx); n != 5 || err != nil {
		t.Fatalf("after the lease: %d, %v; want the 5 orphaned deliveries", n, err)
	}
	for _, id := range ids {
		ds, err := survivorStore.Deliveries(ctx, id)
		if err != nil || len(ds) != 1 || ds[0].State != webhook.DeliverySucceeded || ds[0].Attempts != 1 {
			t.Fatalf("delivery of %s: %+v, %v", id, ds, err)
		}
		as, _ := survivorStore.Attempts(ctx, ds[0].ID)
		// 200, not 204: the receiver recognised the ID it had already handled.
		if len(as) != 1 || as[0].StatusCode != 200 {
			t.Fatalf("attempt log of %s: %+v", id, as)
		}
	}
	if recv.requests.Load() != 10 {
		t.Fatalf("%d requests, want 10 (each message twice: at-least-once)", recv.requests.Load())
	}
	for id, n := range recv.handledCounts() {
		if n != 1 {
			t.Fatalf("%s handled %d times despite the shared dedup store", id, n)
		}
	}
}

// TestRetriesSurviveRestart: a delivery that failed once is retried by a new
// Sender on a new pool, with its attempt log intact.
func TestRetriesSurviveRestart(t *testing.T) {
	pool := newPool(t)
	ctx := context.Background()
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		if calls.Add(1) == 1 {
			http.Error(w, "not yet", http.StatusServiceUnavailable)
		}
	}))
	defer srv.Close()
	store := pgstore.New(pool)
	if err := store.SaveEndpoint(ctx, webhook.Endpoint{ID: "e", URL: srv.URL, Secrets: []string{webhook.NewSecret()}}); err != nil {
		t.Fatal(err)
	}
	opts := []webhook.SenderOption{webhook.WithAllowedNetworks(loopback...), webhook.WithSchedule(0, time.Millisecond), webhook.WithJitter(0)}
	s1, _ := webhook.NewSender(store, opts...)
	m, n, err := s1.Send(ctx, webhook.Message{Type: "t", Payload: []byte("{}")})
	if err != nil || n != 1 {
		t.Fatal(n, err)
	}
	if n, _ := s1.RunOnce(ctx); n != 1 {
		t.Fatal("first attempt not made")
	}
	s1.Close()
	// The restarted sender's clock is past the schedule's 1 ms retry delay.
	later := func() time.Time { return time.Now().Add(time.Second) }
	s2, _ := webhook.NewSender(pgstore.New(pool), append(opts, webhook.WithClock(later))...)
	defer s2.Close()
	if n, _ := s2.RunOnce(ctx); n != 1 {
		t.Fatal("retry not made after restart")
	}
	ds, _ := store.Deliveries(ctx, m.ID)
	as, _ := store.Attempts(ctx, ds[0].ID)
	if ds[0].State != webhook.DeliverySucceeded || len(as) != 2 || as[0].StatusCode != 503 || string(as[0].ResponseBody) != "not yet\n" {
		t.Fatalf("delivery %+v attempts %+v", ds[0], as)
	}
}

func TestEnqueueTxIsAtomic(t *testing.T) {
	pool := newPool(t)
	ctx := context.Background()
	store := pgstore.New(pool)
	if err := store.SaveEndpoint(ctx, webhook.Endpoint{ID: "e", URL: "https://example.com/", Secrets: []string{webhook.NewSecret()}}); err != nil {
		t.Fatal(err)
	}
	for _, commit := range []bool{false, true} {
		id := webhook.NewID()
		tx, err := pool.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if n, err := pgstore.EnqueueTx(ctx, tx, webhook.Message{ID: id, Type: "t", Payload: []byte("{}")}, time.Now()); err != nil || n != 1 {
			t.Fatal(n, err)
		}
		if commit {
			err = tx.Commit(ctx)
		} else {
			err = tx.Rollback(ctx)
		}
		if err != nil {
			t.Fatal(err)
		}
		ds, err := store.Deliveries(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if want := map[bool]int{false: 0, true: 1}[commit]; len(ds) != want {
			t.Fatalf("commit=%v: %d deliveries, want %d", commit, len(ds), want)
		}
	}
	var _ pgstore.Querier = pgx.Tx(nil)
}

// TestReceiversShareDedup: two receiver processes behind a load balancer get
// the same message at once (a retry racing the original); it is handled once.
func TestReceiversShareDedup(t *testing.T) {
	pool := newPool(t)
	secret := webhook.NewSecret()
	var handled atomic.Int32
	release := make(chan struct{})
	entered := make(chan struct{}, 1)
	mk := func() *httptest.Server {
		v, _ := webhook.NewVerifier([]string{secret})
		srv := httptest.NewServer(mustReceiver(t, v, webhook.WithDedup(pgstore.NewDedup(pool))).Handler(
			func(context.Context, webhook.Event) error {
				handled.Add(1)
				select {
				case entered <- struct{}{}:
				default:
				}
				<-release
				return nil
			}))
		t.Cleanup(srv.Close)
		return srv
	}
	a, b := mk(), mk()
	signer, _ := webhook.NewSigner(secret)
	post := func(url string) int { return postSigned(t, signer, url, "msg_shared") }
	codes := make(chan int, 2)
	go func() { codes <- post(a.URL) }()
	// Whichever gets there second sees the first in flight.
	<-entered
	second := post(b.URL)
	close(release)
	first := <-codes
	if first != http.StatusNoContent || second != http.StatusConflict || handled.Load() != 1 {
		t.Fatalf("codes %d and %d, handled %d; want 204, 409 and 1", first, second, handled.Load())
	}
	if code := post(b.URL); code != http.StatusOK || handled.Load() != 1 {
		t.Fatalf("replay to the other receiver: %d, handled %d", code, handled.Load())
	}
	http.DefaultClient.CloseIdleConnections()
}

func bytesReader(b []byte) *bytes.Reader { return bytes.NewReader(b) }

// TestConcurrentMigrate runs Migrate from 8 goroutines at once, 20 times over,
// with the tables dropped between rounds: the advisory lock serializes them,
// so none fails with a duplicate key in the catalog.
func TestConcurrentMigrate(t *testing.T) {
	pool := newPool(t)
	ctx := context.Background()
	const instances, rounds = 8, 20
	var failed []error
	for round := range rounds {
		if _, err := pool.Exec(ctx, "drop table if exists webhook_attempts, webhook_deliveries, webhook_messages, webhook_endpoints, webhook_dedup"); err != nil {
			t.Fatal(err)
		}
		errs := make([]error, instances)
		start := make(chan struct{})
		var wg sync.WaitGroup
		for i := range instances {
			wg.Go(func() {
				<-start
				errs[i] = pgstore.Migrate(ctx, pool)
			})
		}
		close(start)
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				failed = append(failed, fmt.Errorf("round %d, goroutine %d: %w", round, i, err))
			}
		}
	}
	if len(failed) > 0 {
		t.Fatalf("%d of %d Migrate calls failed; first: %v", len(failed), instances*rounds, failed[0])
	}
}

// Schema is the DDL Migrate applies: a migration tool can run it alone.
func TestSchemaAppliesAlone(t *testing.T) {
	pool := newPool(t)
	ctx := context.Background()
	if _, err := pool.Exec(ctx, "drop table webhook_attempts, webhook_deliveries, webhook_messages, webhook_endpoints, webhook_dedup"); err != nil {
		t.Fatal(err)
	}
	for range 2 { // idempotent
		if _, err := pool.Exec(ctx, pgstore.Schema()); err != nil {
			t.Fatal(err)
		}
	}
	if err := pgstore.New(pool).SaveEndpoint(ctx, webhook.Endpoint{ID: "e", URL: "https://example.com/", Secrets: []string{webhook.NewSecret()}}); err != nil {
		t.Fatal(err)
	}
}

// TestReceiversStaleOwner: two receivers share the dedup table; a handler on
// the first outlives its lease, the retry on the second claims the ID and
// succeeds, then the first fails late. Its Forget is refused (stale), so the
// ID stays handled and a later retry is a duplicate on either receiver.
func TestReceiversStaleOwner(t *testing.T) {
	pool := newPool(t)
	secret := webhook.NewSecret()
	var clock atomic.Int64
	clock.Store(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC).UnixNano())
	now := func() time.Time { return time.Unix(0, clock.Load()) }
	var runs atomic.Int32
	firstIn, firstGo := make(chan struct{}), make(chan struct{})
	stale := make(chan error, 4)
	mk := func() *httptest.Server {
		v, _ := webhook.NewVerifier([]string{secret})
		srv := httptest.NewServer(mustReceiver(t, v, webhook.WithDedup(pgstore.NewDedup(pool)),
			webhook.WithDedupTimes(time.Minute, time.Hour), webhook.WithClock(now),
			webhook.WithTracer(tracer{storeError: func(err error) {
				if errors.Is(err, webhook.ErrStaleClaim) {
					stale <- err
				}
			}})).Handler(
			func(context.Context, webhook.Event) error {
				if runs.Add(1) == 1 {
					close(firstIn)
					<-firstGo // outlives the lease
					return errors.New("first handler failed late")
				}
				return nil
			}))
		t.Cleanup(srv.Close)
		return srv
	}
	a, b := mk(), mk()
	signer, _ := webhook.NewSigner(secret)
	post := func(url string) int { return postSigned(t, signer, url, "msg_stale") }
	first := make(chan int, 1)
	go func() { first <- post(a.URL) }()
	<-firstIn
	if code := post(b.URL); code != http.StatusConflict {
		t.Fatalf("retry within the lease: %d, want 409", code)
	}
	clock.Add(int64(2 * time.Minute))
	if code := post(b.URL); code != http.StatusNoContent {
		t.Fatalf("retry after the lease: %d, want 204", code)
	}
	close(firstGo)
	if code := <-first; code != http.StatusInternalServerError {
		t.Fatalf("first delivery: %d, want its own 500", code)
	}
	select {
	case <-stale:
	case <-time.After(5 * time.Second):
		t.Fatal("the first handler's stale Forget was not reported")
	}
	for _, srv := range []*httptest.Server{a, b} {
		if code := post(srv.URL); code != http.StatusOK {
			t.Fatalf("later retry: %d, want 200 (duplicate)", code)
		}
	}
	if n := runs.Load(); n != 2 {
		t.Fatalf("handler ran %d times, want 2", n)
	}
	http.DefaultClient.CloseIdleConnections()
}

// TestMigrateAddsDedupOwner: a webhook_dedup table made before owner tokens
// gets the owner column from Migrate.
func TestMigrateAddsDedupOwner(t *testing.T) {
	pool := newPool(t)
	ctx := context.Background()
	if _, err := pool.Exec(ctx, `drop table webhook_dedup;
create table webhook_dedup (id text primary key, done boolean not null, expires_at timestamptz not null)`); err != nil {
		t.Fatal(err)
	}
	if err := pgstore.Migrate(ctx, pool); err != nil {
		t.Fatal(err)
	}
	d := pgstore.NewDedup(pool)
	t0 := time.Now()
	c, err := d.Begin(ctx, "m", t0, t0.Add(time.Minute))
	if err != nil || c.State != webhook.DedupNew {
		t.Fatalf("Begin = %+v, %v", c, err)
	}
	if err := d.Done(ctx, "m", c.Token, t0.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
}

// postSigned posts a small signed webhook with message id to url and
// returns the status code (0 after reporting a transport error).
func postSigned(t *testing.T, signer *webhook.Signer, url, id string) int {
	body := []byte(`{"n":1}`)
	req, _ := http.NewRequest(http.MethodPost, url, bytesReader(body))
	signer.SignHeader(req.Header, id, time.Now(), body)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Error(err)
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// tracer is a webhook StoreErrorTracer and AttemptTracer of functions.
type tracer struct {
	storeError func(error)
	attempt    func(webhook.TraceAttemptEndData)
}

func (tr tracer) TraceStoreError(_ context.Context, d webhook.TraceStoreErrorData) {
	if tr.storeError != nil {
		tr.storeError(d.Err)
	}
}

func (tracer) TraceAttemptStart(ctx context.Context, _ webhook.TraceAttemptStartData) context.Context {
	return ctx
}

func (tr tracer) TraceAttemptEnd(_ context.Context, d webhook.TraceAttemptEndData) {
	if tr.attempt != nil {
		tr.attempt(d)
	}
}

// mustReceiver is webhook.NewReceiver failing the test on error.
func mustReceiver(t *testing.T, v *webhook.Verifier, opts ...webhook.ReceiverOption) *webhook.Receiver {
	t.Helper()
	r, err := webhook.NewReceiver(v, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return r
}
