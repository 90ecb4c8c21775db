package pgstore_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-integration/patterns/internal/testenv"
	"github.com/go-integration/patterns/rpc"
	"github.com/go-integration/patterns/rpc/pgstore"
)

// failoverTracer records the keys whose response could not be stored after
// the handler ran (Complete failed: the key may run again).
type failoverTracer struct {
	mu        sync.Mutex
	notStored map[string]bool
	outcomes  map[rpc.IdempotencyOutcome]int
}

func (f *failoverTracer) TraceIdempotency(_ context.Context, d rpc.TraceIdempotencyData) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.outcomes[d.Outcome]++
	if d.Outcome == rpc.IdempotencyStoreFailed && d.StatusCode != http.StatusServiceUnavailable {
		f.notStored[d.Key] = true
	}
}

func (f *failoverTracer) lost(key string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.notStored[key]
}

// TestFaultPrimaryFailoverDuringIdempotentRequests: the Idempotency
// middleware keeps its keys in a pgstore on the private pair's two-host URL
// (target_session_attrs=read-write) while clients send requests, each key
// retried until it gets a 200, and the primary crashes (stop -m immediate)
// and its synchronous standby is promoted. No request may hang (each is
// answered within the store's query timeout and then some): while the store
// is unreachable the middleware answers 503 with Retry-After. After the
// failover every key replays the response its client got, except keys whose
// Complete failed during the crash (traced IdempotencyStoreFailed with the
// handler's status): those run again once their lock times out, counted.
func TestFaultPrimaryFailoverDuringIdempotentRequests(t *testing.T) {
	testenv.FaultTest(t)
	pair := testenv.Pair(t)
	_, pairURL, _, _ := pair.Schema(t)
	store, err := pgstore.New(testenv.Pool(t, pairURL), pgstore.WithQueryTimeout(2*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := store.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	tr := &failoverTracer{notStored: map[string]bool{}, outcomes: map[rpc.IdempotencyOutcome]int{}}
	mw, err := rpc.Idempotency(store, rpc.WithLockTimeout(2*time.Second), rpc.WithTracer(tr),
		rpc.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))
	if err != nil {
		t.Fatal(err)
	}
	var (
		runsMu sync.Mutex
		runs   = map[string]int{}
	)
	srv := httptest.NewServer(mw(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		key := r.Header.Get("Idempotency-Key")
		runsMu.Lock()
		runs[key]++
		n := runs[key]
		runsMu.Unlock()
		fmt.Fprintf(w, "%s run %d", key, n)
	})))
	t.Cleanup(srv.Close)
	client := &http.Client{Timeout: 10 * time.Second}
	post := func(key string) (int, string, error) {
		req, _ := http.NewRequest(http.MethodPost, srv.URL, strings.NewReader("{}"))
		req.Header.Set("Idempotency-Key", key)
		start := time.Now()
		resp, err := client.Do(req)
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if took := time.Since(start); took > 8*time.Second {
			return 0, "", fmt.Errorf("answered after %v", took)
		}
		return resp.StatusCode, string(b), err
	}

	var (
		mu       sync.Mutex
		got      = map[string]string{} // key: the body of the 200 its client got
		statuses = map[int]int{}
	)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for c := range 4 {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				key := fmt.Sprintf("c%d-%d", c, i)
				for {
					status, body, err := post(key)
					if err != nil {
						t.Errorf("%s: %v (a request hung or failed without an answer)", key, err)
						return
					}
					mu.Lock()
					statuses[status]++
					if status == http.StatusOK {
						got[key] = body
					}
					mu.Unlock()
					if status == http.StatusOK {
						break
					}
					if status != http.StatusServiceUnavailable && status != http.StatusConflict {
						t.Errorf("%s: status %d: %s", key, status, body)
						return
					}
					time.Sleep(50 * time.Millisecond) // the client's retry pacing
				}
			}
		})
	}
	done := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(got)
	}
	testenv.Eventually(t, 10*time.Second, "requests before the crash", func() bool { return done() >= 100 })
	pair.Crash(t)
	pair.Promote(t)
	before := done()
	testenv.Eventually(t, 20*time.Second, "requests served on the new primary", func() bool { return done() >= before+100 })
	close(stop)
	wg.Wait()

	// Replays: the stored response, or for a key whose Complete failed, a
	// new run once its lock (2 s) has timed out.
	reran := 0
	for key, body := range got {
		for {
			status, again, err := post(key)
			if err != nil {
				t.Fatalf("replay %s: %v", key, err)
			}
			if status == http.StatusConflict && tr.lost(key) {
				time.Sleep(100 * time.Millisecond) // until the lost claim's lock times out
				continue
			}
			switch {
			case status == http.StatusOK && again == body:
			case status == http.StatusOK && tr.lost(key):
				reran++
			default:
				t.Errorf("replay %s: %d %q, want 200 %q", key, status, again, body)
			}
			break
		}
	}
	tr.mu.Lock()
	defer tr.mu.Unlock()
	t.Logf("%d keys answered 200 (statuses seen: %v); outcomes %v; %d keys whose response was not stored ran again on replay",
		len(got), statuses, tr.outcomes, reran)
	if statuses[http.StatusServiceUnavailable] == 0 {
		t.Errorf("no 503 during the failover: was the store ever unreachable?")
	}
}
