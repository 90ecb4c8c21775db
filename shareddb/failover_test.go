package shareddb

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-integration/patterns/internal/testenv"
	"github.com/jackc/pgx/v5"
)

// Primary failover on the private pair (scripts/pg-pair: pair_a primary on
// 5440, pair_b its synchronous standby on 5441), never on the shared
// servers: pair_a crashes (stop -m immediate), reads fail once pair_b's
// WAL receiver has stopped (its lag unknown, reads fall back to the dead
// primary), pair_b is promoted, and the read loop must read steadily again
// within 10 s of the promote, seeing every row committed before the crash.

// readResult is one read of the loop.
type readResult struct {
	at  time.Time
	n   int64
	err error
}

func TestFaultPrimaryFailoverReadLoop(t *testing.T) {
	testenv.FaultTest(t)
	for _, tc := range []struct {
		name      string
		multiHost bool // the primary URL names both hosts, target_session_attrs=read-write
	}{
		{"multi-host primary URL", true},
		{"primary URL naming the old host", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pair := testenv.Pair(t)
			_, pairURL, aURL, bURL := pair.Schema(t)
			ctx := context.Background()
			admin, err := pgx.Connect(ctx, aURL)
			if err != nil {
				t.Fatal(err)
			}
			const rows = 100
			_, err = admin.Exec(ctx, `create table items (id int primary key);
				insert into items select generate_series(1, 100)`)
			_ = admin.Close(ctx)
			if err != nil {
				t.Fatal(err)
			}

			primaryURL := aURL
			if tc.multiHost {
				primaryURL = pairURL
			}
			r, err := New(ctx, primaryURL, WithReplicas(bURL), WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			if tc.multiHost && r.Status()[0].Addr != "127.0.0.1:5440,127.0.0.1:5441" {
				t.Errorf("primary Addr = %q, want both hosts", r.Status()[0].Addr)
			}

			var (
				mu      sync.Mutex
				results []readResult
			)
			stop := make(chan struct{})
			done := make(chan struct{})
			go func() {
				defer close(done)
				for {
					select {
					case <-stop:
						return
					case <-time.After(20 * time.Millisecond):
					}
					rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
					var n int64
					err := r.QueryRow(rctx, "select count(*) from items").Scan(&n)
					cancel()
					mu.Lock()
					results = append(results, readResult{at: time.Now(), n: n, err: err})
					mu.Unlock()
				}
			}()
			successes := func(after time.Time) (ok int) {
				mu.Lock()
				defer mu.Unlock()
				for _, res := range results {
					if res.err == nil && res.at.After(after) {
						ok++
					}
				}
				return ok
			}
			testenv.Eventually(t, 10*time.Second, "reads before the failover", func() bool { return successes(time.Time{}) >= 10 })

			failures := func() (n int) {
				mu.Lock()
				defer mu.Unlock()
				for _, res := range results {
					if res.err != nil {
						n++
					}
				}
				return n
			}
			crashed := time.Now()
			pair.Crash(t)
			// As a failover manager would take a while to decide, the
			// promote waits until pair_b's WAL receiver has stopped (its
			// lag unknown, reads with a MaxLag skip it) and reads fail on
			// the dead primary: the reads must get out of that.
			testenv.Eventually(t, 10*time.Second, "pair_b's WAL receiver seen stopped", func() bool {
				st := r.Status()[1]
				return st.Healthy && !st.Streaming
			})
			testenv.Eventually(t, 10*time.Second, "reads failing on the dead primary", func() bool { return failures() >= 3 })
			promoted := time.Now() // when the promote starts: pgx may reach pair_b before the script returns
			pair.Promote(t)
			// Reads go on for 3 s after the first one served after the promote.
			testenv.Eventually(t, 15*time.Second, "a read served after the promote", func() bool { return successes(promoted) > 0 })
			var back time.Time
			mu.Lock()
			for _, res := range results {
				if res.err == nil && res.at.After(promoted) {
					back = res.at
					break
				}
			}
			mu.Unlock()
			testenv.Eventually(t, 10*time.Second, "3 s of reads after the failover", func() bool {
				mu.Lock()
				defer mu.Unlock()
				return results[len(results)-1].at.Sub(back) > 3*time.Second
			})
			close(stop)
			<-done

			// recovered: the first success after which no read failed.
			var (
				failed    int
				recovered time.Time
				firstErr  error
			)
			for _, res := range results {
				switch {
				case res.err != nil:
					failed++
					recovered = time.Time{}
					if firstErr == nil {
						firstErr = res.err
					}
					var ne *NodeError
					if !errors.As(res.err, &ne) && !errors.Is(res.err, context.DeadlineExceeded) {
						t.Errorf("a failed read does not name its node: %v", res.err)
					}
				case res.n != rows:
					t.Errorf("a read saw %d rows, want %d: a committed row was lost", res.n, rows)
				case recovered.IsZero():
					recovered = res.at
				}
			}
			if recovered.IsZero() {
				t.Fatal("reads did not recover")
			}
			failover := recovered.Sub(promoted)
			t.Logf("%d reads, %d failed; reads steady again %v after the promote started (%v after the crash); first error: %v",
				len(results), failed, failover.Round(time.Millisecond), recovered.Sub(crashed).Round(time.Millisecond), firstErr)
			if failover > 10*time.Second {
				t.Errorf("reads failed over %v after the promote, want within 10 s", failover)
			}

			st := r.Status()
			if !st[1].Promoted || st[1].Healthy || !errors.Is(st[1].LastError, ErrNotReplica) {
				t.Errorf("replica1 after the promote: Promoted %v, Healthy %v, LastError %v; want promoted, not a healthy replica",
					st[1].Promoted, st[1].Healthy, st[1].LastError)
			}
			if tc.multiHost {
				// The primary's pool follows target_session_attrs to pair_b.
				if !st[0].Healthy {
					t.Errorf("primary not healthy after the failover: %v", st[0].LastError)
				}
			} else {
				// The primary's URL names only pair_a: reads meant for it go to the promoted replica.
				if st[0].Healthy {
					t.Errorf("primary (pair_a, stopped) reported healthy")
				}
				before := st[1].Routed
				var n int64
				if err := r.QueryRow(ctx, "select count(*) from items").Scan(&n); err != nil || n != rows {
					t.Fatalf("read after the failover: %d rows, %v", n, err)
				}
				if r.Status()[1].Routed != before+1 {
					t.Errorf("the read did not go to the promoted replica1")
				}
				tok, err := r.Token(ctx)
				if err != nil || tok.LSN() == 0 {
					t.Errorf("Token after the failover: %v, %v", tok, err)
				}
			}
		})
	}
}

// TestTargetSessionAttrsWithReadOnlySessions: every shareddb connection is
// read-only (default_transaction_read_only), which pgx's
// target_session_attrs check would take for a standby on every host
// (read-write would accept none, read-only any). New must still reach the
// primary through a multi-host URL with read-write (URL and key=value
// spellings) naming the standby first, and the standby through a replica URL
// with read-only naming the primary first.
func TestTargetSessionAttrsWithReadOnlySessions(t *testing.T) {
	primary := testenv.DatabaseURL(t)
	replica := testenv.ReplicaDatabaseURL(t)
	if !strings.Contains(primary, "127.0.0.1:5432") || !strings.Contains(replica, "127.0.0.1:5433") {
		t.Skip("the shared servers are not the defaults on 5432/5433")
	}
	ctx := context.Background()
	const readOnlyReplica = "postgres://postgres@127.0.0.1:5432,127.0.0.1:5433/test?target_session_attrs=read-only"
	for _, u := range []string{
		"postgres://postgres@127.0.0.1:5433,127.0.0.1:5432/test?target_session_attrs=read-write",
		"host=127.0.0.1,127.0.0.1 port=5433,5432 user=postgres dbname=test target_session_attrs=read-write",
	} {
		r, err := New(ctx, u, WithReplicas(readOnlyReplica), WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))
		if err != nil {
			t.Fatalf("New(%s): %v", u, err)
		}
		for _, n := range r.nodes {
			var rec bool
			err := n.pool.QueryRow(ctx, "select pg_is_in_recovery()").Scan(&rec)
			if err != nil || rec != (n.role == RoleReplica) {
				t.Errorf("%s: %s reached a server with pg_is_in_recovery() = %v (%v)", u, n.name, rec, err)
			}
		}
		st := r.Status()
		if !st[0].Healthy || !st[1].Healthy {
			t.Errorf("%s: nodes not healthy: %+v", u, st)
		}
		if st[0].Addr != "127.0.0.1:5433,127.0.0.1:5432" || st[1].Addr != "127.0.0.1:5432,127.0.0.1:5433" {
			t.Errorf("%s: Addr %q and %q, want every host in order", u, st[0].Addr, st[1].Addr)
		}
		r.Close()
	}
}
