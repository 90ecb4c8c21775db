package pgstore_test

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-integration/patterns/internal/testenv"
	"github.com/go-integration/patterns/webhook"
	"github.com/go-integration/patterns/webhook/pgstore"
)

// TestFaultPrimaryFailoverDuringDelivery: a Sender delivers from the queue
// on the private pair's two-host URL (target_session_attrs=read-write)
// while messages are enqueued and the primary crashes (stop -m immediate)
// and its synchronous standby is promoted. Enqueue is idempotent on the
// message ID, so a writer retries a failed Enqueue with the same ID until it
// succeeds. Every accepted message must reach the receiver (at least once:
// an attempt whose Record was lost is sent again when its lease ends;
// duplicates are counted), the Sender must report the store errors it
// meets (TraceStoreError) and keep running, and every delivery must end
// succeeded.
func TestFaultPrimaryFailoverDuringDelivery(t *testing.T) {
	testenv.FaultTest(t)
	pair := testenv.Pair(t)
	_, pairURL, _, _ := pair.Schema(t)
	pool := testenv.Pool(t, pairURL)
	ctx := context.Background()
	if err := pgstore.Migrate(ctx, pool); err != nil {
		t.Fatal(err)
	}
	store := pgstore.New(pool)
	secret := webhook.NewSecret()
	recv := newCountingReceiver(t, secret, nil) // no dedup: a resend shows
	if err := store.SaveEndpoint(ctx, webhook.Endpoint{ID: "e", URL: recv.URL, Secrets: []string{secret}}); err != nil {
		t.Fatal(err)
	}
	var (
		storeErrs atomic.Int32
		errMu     sync.Mutex
		firstErr  error
	)
	s, err := webhook.NewSender(store, webhook.WithAllowedNetworks(loopback...),
		webhook.WithConcurrency(4), webhook.WithPollInterval(10*time.Millisecond),
		webhook.WithLease(2*time.Second), webhook.WithAttemptTimeout(time.Second),
		webhook.WithLogger(slog.New(slog.NewTextHandler(t.Output(), nil))),
		webhook.WithTracer(tracer{storeError: func(err error) {
			storeErrs.Add(1)
			errMu.Lock()
			if firstErr == nil {
				firstErr = err
			}
			errMu.Unlock()
		}}))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	runCtx, stopRun := context.WithCancel(ctx)
	runErr := make(chan error, 1)
	go func() { runErr <- s.Run(runCtx) }()

	var (
		accepted   atomic.Int32
		enqueueErr atomic.Int32
	)
	writeCtx, stopWriting := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; writeCtx.Err() == nil; i++ {
			m := webhook.Message{ID: fmt.Sprintf("msg_%05d", i), Type: "t", Payload: []byte("{}"), Time: time.Now()}
			for {
				ectx, cancel := context.WithTimeout(ctx, 2*time.Second)
				_, err := store.Enqueue(ectx, m, time.Now())
				cancel()
				if err == nil {
					break
				}
				enqueueErr.Add(1)
				time.Sleep(20 * time.Millisecond) // retry pacing, not a wait for readiness
			}
			accepted.Add(1)
			time.Sleep(5 * time.Millisecond)
		}
	}()
	handled := func() int { return len(recv.handledCounts()) }
	testenv.Eventually(t, 10*time.Second, "deliveries before the crash", func() bool { return handled() >= 50 })

	crashed := time.Now()
	pair.Crash(t)
	pair.Promote(t)
	before := accepted.Load()
	testenv.Eventually(t, 15*time.Second, "enqueueing on the new primary", func() bool { return accepted.Load() >= before+50 })
	stopWriting()
	<-done
	total := int(accepted.Load())
	// An attempt whose Record was lost is sent again once its 2 s lease ends.
	testenv.Eventually(t, 30*time.Second, "every accepted message delivered", func() bool { return handled() >= total })
	testenv.Eventually(t, 15*time.Second, "every delivery recorded as succeeded", func() bool {
		var pending int
		err := pool.QueryRow(ctx, `select count(*) from webhook_deliveries where state <> 'succeeded'`).Scan(&pending)
		return err == nil && pending == 0
	})
	took := time.Since(crashed)
	stopRun()
	if err := <-runErr; err != nil {
		t.Errorf("Run: %v", err)
	}

	counts := recv.handledCounts()
	dups := 0
	for i := range total {
		id := fmt.Sprintf("msg_%05d", i)
		switch n := counts[id]; {
		case n == 0:
			t.Errorf("accepted message %s never delivered", id)
		case n > 1:
			dups += n - 1
		}
	}
	if len(counts) != total {
		t.Errorf("%d distinct messages delivered, %d accepted", len(counts), total)
	}
	if storeErrs.Load() == 0 {
		t.Errorf("the Sender reported no store error across the failover")
	} else if e := fmt.Sprint(firstErr); !strings.HasPrefix(e, "webhook: ") {
		t.Errorf("store error does not say where it comes from: %s", e)
	}
	t.Logf("%d messages accepted (%d Enqueue errors retried), all delivered, %d duplicates; %d store errors reported (first: %v); all recorded %v after the crash",
		total, enqueueErr.Load(), dups, storeErrs.Load(), firstErr, took.Round(time.Millisecond))
}
