package pgdedup_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-integration/patterns/internal/testenv"

	"github.com/go-integration/patterns/broker"
	"github.com/go-integration/patterns/broker/middleware"
	"github.com/go-integration/patterns/broker/middleware/pgdedup"
)

// Environment of a child consumer process (the test binary run again).
const (
	envChildDSN  = "PGDEDUP_CHILD_DSN"
	envChildMode = "PGDEDUP_CHILD_MODE" // "consume" or "hold"
	envChildIDs  = "PGDEDUP_CHILD_IDS"  // how many IDs: m0 … m(n-1)
	envChildTTL  = "PGDEDUP_CHILD_INPROGRESS"
)

// TestChildConsumer is not a test of its own: the cross-process tests run
// the test binary again with it selected and the environment above set.
//
// "consume" delivers every ID (in its own random order, 8 at a time) to a
// Dedup-wrapped handler until each delivery is acknowledged (a nil result),
// redelivering on ErrInProgress as a broker would; the handler records the
// ID in table handled. "hold" claims every ID, prints "claimed ID" for each
// and blocks in the handler until killed.
func TestChildConsumer(t *testing.T) {
	dsn := os.Getenv(envChildDSN)
	if dsn == "" {
		t.Skip("runs only as a child of the cross-process tests")
	}
	n, _ := strconv.Atoi(os.Getenv(envChildIDs))
	inProgress, _ := time.ParseDuration(os.Getenv(envChildTTL))
	ctx := context.Background()
	pool := testenv.Pool(t, dsn)
	store, err := pgdedup.New(pool)
	if err != nil {
		t.Fatal(err)
	}
	mw, err := middleware.Dedup(store, middleware.WithHandledFor(time.Hour), middleware.WithInProgressFor(inProgress))
	if err != nil {
		t.Fatal(err)
	}
	pid := os.Getpid()
	switch os.Getenv(envChildMode) {
	case "hold":
		h := mw(func(ctx context.Context, m broker.Message) error {
			fmt.Printf("claimed %s\n", m.ID)
			time.Sleep(time.Hour) // hang until SIGKILL
			return nil
		})
		for i := range n {
			go func() { _ = h(ctx, broker.Message{ID: "m" + strconv.Itoa(i)}) }()
		}
		time.Sleep(time.Hour)
	case "consume":
		h := mw(func(ctx context.Context, m broker.Message) error {
			time.Sleep(time.Duration(rand.IntN(2000)) * time.Microsecond)
			_, err := pool.Exec(ctx, "insert into handled (id, pid) values ($1, $2)", m.ID, pid)
			return err
		})
		queue := make(chan string, n)
		for _, i := range rand.Perm(n) {
			queue <- "m" + strconv.Itoa(i)
		}
		var wg sync.WaitGroup
		var mu sync.Mutex
		left := n
		for range 8 {
			wg.Go(func() {
				for {
					mu.Lock()
					if left == 0 {
						mu.Unlock()
						return
					}
					mu.Unlock()
					var id string
					select {
					case id = <-queue:
					case <-time.After(10 * time.Millisecond):
						continue
					}
					if err := h(ctx, broker.Message{ID: id}); err != nil {
						if !errors.Is(err, middleware.ErrInProgress) {
							t.Errorf("%s: %v", id, err)
						}
						queue <- id // redelivered
						continue
					}
					mu.Lock()
					left--
					mu.Unlock()
				}
			})
		}
		wg.Wait()
	default:
		t.Fatalf("%s=%q", envChildMode, os.Getenv(envChildMode))
	}
}

func child(t *testing.T, dsn, mode string, ids int, inProgress time.Duration) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestChildConsumer$", "-test.count=1")
	cmd.Env = append(os.Environ(), envChildDSN+"="+dsn, envChildMode+"="+mode,
		envChildIDs+"="+strconv.Itoa(ids), envChildTTL+"="+inProgress.String())
	return cmd
}

// Two consumer processes share the table and both receive the same 200
// message IDs: every ID is handled exactly once, and both processes handle some.
func TestTwoProcessesHandleEachIDOnce(t *testing.T) {
	_, dsn := newStore(t)
	pool := testenv.Pool(t, dsn)
	ctx := context.Background()
	if _, err := pool.Exec(ctx, "create table handled (id text not null, pid int not null)"); err != nil {
		t.Fatal(err)
	}
	const ids = 200
	var cmds []*exec.Cmd
	outs := make([]strings.Builder, 2)
	for i := range 2 {
		cmd := child(t, dsn, "consume", ids, time.Minute)
		cmd.Stdout, cmd.Stderr = &outs[i], &outs[i]
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		cmds = append(cmds, cmd)
	}
	for i, cmd := range cmds {
		if err := cmd.Wait(); err != nil {
			t.Fatalf("consumer %d: %v\n%s", i, err, outs[i].String())
		}
	}
	rows, err := pool.Query(ctx, "select id, count(*), count(distinct pid) from handled group by id")
	if err != nil {
		t.Fatal(err)
	}
	seen := 0
	for rows.Next() {
		var id string
		var n, pids int
		if err := rows.Scan(&id, &n, &pids); err != nil {
			t.Fatal(err)
		}
		seen++
		if n != 1 {
			t.Errorf("%s handled %d times (by %d processes)", id, n, pids)
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if seen != ids {
		t.Fatalf("%d IDs handled, want %d", seen, ids)
	}
	var procs int
	if err := pool.QueryRow(ctx, "select count(distinct pid) from handled").Scan(&procs); err != nil || procs != 2 {
		t.Logf("handled by %d processes (%v): the run did not interleave", procs, err)
	}
}

// A consumer killed while holding claims blocks their IDs for the
// in-progress lifetime only: the survivor handles the redeliveries then, not
// after the handled lifetime (an hour here).
func TestKilledConsumerClaimsExpire(t *testing.T) {
	s, dsn := newStore(t)
	const ids = 20
	const inProgress = 3 * time.Second
	cmd := child(t, dsn, "hold", ids, inProgress)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	claimed := map[string]bool{}
	sc := bufio.NewScanner(stdout)
	for len(claimed) < ids && sc.Scan() {
		if id, ok := strings.CutPrefix(sc.Text(), "claimed "); ok {
			claimed[id] = true
		}
	}
	if len(claimed) < ids {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		t.Fatalf("the holder claimed %d IDs before its output ended: %s", len(claimed), stderr.String())
	}
	if err := cmd.Process.Kill(); err != nil { // SIGKILL: no Release runs
		t.Fatal(err)
	}
	_ = cmd.Wait()
	killedAt := time.Now()

	// The survivor, in this process.
	var mu sync.Mutex
	handled := map[string]int{}
	mw, err := middleware.Dedup(s, middleware.WithHandledFor(time.Hour), middleware.WithInProgressFor(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	h := mw(
		func(ctx context.Context, m broker.Message) error {
			mu.Lock()
			handled[m.ID]++
			mu.Unlock()
			return nil
		})
	ctx := context.Background()
	refused := 0
	for id := range claimed {
		if err := h(ctx, broker.Message{ID: id}); errors.Is(err, middleware.ErrInProgress) {
			refused++
		} else if err != nil {
			t.Fatal(err)
		}
	}
	if refused == 0 {
		t.Fatal("no redelivery was refused right after the kill: the holder held no claims")
	}
	// Redeliver with a broker-like backoff until every ID is acknowledged.
	deadline := killedAt.Add(inProgress + 20*time.Second)
	for id := range claimed {
		for {
			err := h(ctx, broker.Message{ID: id})
			if err == nil {
				break
			}
			if !errors.Is(err, middleware.ErrInProgress) {
				t.Fatal(err)
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s still in progress %v after the kill (in-progress lifetime %v)", id, time.Since(killedAt), inProgress)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	for id := range claimed {
		if handled[id] != 1 {
			t.Errorf("%s handled %d times by the survivor", id, handled[id])
		}
	}
	t.Logf("%d of %d redeliveries refused right after the kill; all handled %v after it", refused, ids, time.Since(killedAt).Round(time.Millisecond))
}
