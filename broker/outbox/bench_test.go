package outbox_test

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-integration/patterns/internal/testenv"

	"github.com/go-integration/patterns/broker"
	"github.com/go-integration/patterns/broker/outbox"
)

// countingPublisher is the memory broker behind a counter that signals when
// want messages were confirmed.
type countingPublisher struct {
	broker.Publisher
	n    atomic.Int64
	want int64
	done chan struct{}
}

func (p *countingPublisher) Publish(ctx context.Context, topic string, msgs ...broker.Message) error {
	if err := p.Publisher.Publish(ctx, topic, msgs...); err != nil {
		return err
	}
	if p.n.Add(int64(len(msgs))) >= p.want && p.want > 0 {
		select {
		case <-p.done:
		default:
			close(p.done)
		}
	}
	return nil
}

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// BenchmarkRelayThroughput drains a backlog of b.N committed messages on 50
// keys through the relay into the memory publisher (publisher confirm), next
// to the memory publisher alone fed the same batches ("raw").
func BenchmarkRelayThroughput(b *testing.B) {
	payload := make([]byte, 200)
	keys := make([]string, 50)
	for i := range keys {
		keys[i] = fmt.Sprintf("orders.k%02d", i)
	}
	b.Run("raw-memory-publisher", func(b *testing.B) {
		e := newEnv(b)
		batch := make([]broker.Message, 500)
		b.ResetTimer()
		for i := 0; i < b.N; i += len(batch) {
			n := min(len(batch), b.N-i)
			for j := range n {
				batch[j] = broker.Message{Key: keys[(i+j)%len(keys)], Payload: payload}
			}
			if err := e.mem.Publish(context.Background(), e.topic, batch[:n]...); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msg/s")
	})
	for _, c := range []struct {
		batch, workers, claim int
	}{{100, 1, 0}, {500, 1, 0}, {1000, 1, 0}, {500, 1, outbox.Buckets / 4}, {500, 2, 0}} {
		b.Run(fmt.Sprintf("relay/batch=%d/workers=%d/claim=%d", c.batch, c.workers, cmp.Or(c.claim, outbox.DefaultClaimBuckets)), func(b *testing.B) {
			e := newEnv(b)
			ctx := context.Background()
			const chunk = 1000
			msgs := make([]broker.Message, chunk)
			for i := 0; i < b.N; i += chunk {
				n := min(chunk, b.N-i)
				for j := range n {
					msgs[j] = broker.Message{Key: keys[(i+j)%len(keys)], Payload: payload}
				}
				if err := outbox.Add(ctx, e.db, e.topic, msgs[:n]...); err != nil {
					b.Fatal(err)
				}
			}
			pub := &countingPublisher{Publisher: e.mem, want: int64(b.N), done: make(chan struct{})}
			b.ResetTimer()
			_, stop := run(b, testenv.Pool(b, e.dsn), pub, outbox.WithBatchSize(c.batch), outbox.WithWorkers(c.workers),
				outbox.WithClaimBuckets(cmp.Or(c.claim, outbox.DefaultClaimBuckets)), outbox.WithLogger(quiet), outbox.WithPollInterval(time.Hour))
			<-pub.done
			b.StopTimer()
			if err := stop(); err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msg/s")
		})
	}
}

// BenchmarkLatency measures one message at a time from its commit to its
// delivery to a subscriber of the memory broker, woken by LISTEN/NOTIFY or by
// polling every 100 ms. Messages are committed one at a time after a random
// pause of up to 100 ms. Run it with a fixed count, e.g. -benchtime=100x.
func BenchmarkLatency(b *testing.B) {
	for _, c := range []struct {
		name string
		opts []outbox.Option
	}{
		{"notify", []outbox.Option{outbox.WithPollInterval(time.Hour)}},
		{"poll-100ms", []outbox.Option{outbox.WithoutListen(), outbox.WithPollInterval(100 * time.Millisecond)}},
	} {
		b.Run(c.name, func(b *testing.B) {
			e := newEnv(b)
			ctx := context.Background()
			got := make(chan time.Time, 1)
			s := broker.Subscription{Topic: e.topic, Group: "g"}
			if err := e.mem.Provision(ctx, s); err != nil {
				b.Fatal(err)
			}
			sctx, cancel := context.WithCancel(ctx)
			subDone := make(chan error, 1)
			go func() {
				subDone <- e.mem.Subscribe(sctx, s, func(context.Context, broker.Message) error { got <- time.Now(); return nil })
			}()
			defer func() { cancel(); <-subDone }()
			run(b, testenv.Pool(b, e.dsn), e.mem, append(c.opts, outbox.WithLogger(quiet))...)
			lat := make([]time.Duration, 0, b.N)
			b.ResetTimer()
			for i := range b.N {
				// Commit at a random point of the poll cycle, as real writes do
				// (right after a delivery the relay looks once more at once).
				time.Sleep(rand.N(100 * time.Millisecond))
				tx, err := e.db.Begin(ctx)
				if err != nil {
					b.Fatal(err)
				}
				if err := outbox.Add(ctx, tx, e.topic, msg("k", i)); err != nil {
					b.Fatal(err)
				}
				if err := tx.Commit(ctx); err != nil {
					b.Fatal(err)
				}
				committed := time.Now()
				select {
				case at := <-got:
					lat = append(lat, at.Sub(committed))
				case <-time.After(10 * time.Second):
					b.Fatal("message not delivered")
				}
			}
			b.StopTimer()
			slices.Sort(lat)
			q := func(p float64) float64 { return float64(lat[int(p*float64(len(lat)-1))].Microseconds()) / 1000 }
			b.ReportMetric(q(0.50), "p50-ms")
			b.ReportMetric(q(0.99), "p99-ms")
		})
	}
}

// confirmTimes records when the publisher confirmed each message ID.
type confirmTimes struct {
	broker.Publisher
	mu   sync.Mutex
	at   map[string]time.Time
	want int
	done chan struct{}
}

func (p *confirmTimes) Publish(ctx context.Context, topic string, msgs ...broker.Message) error {
	if err := p.Publisher.Publish(ctx, topic, msgs...); err != nil {
		return err
	}
	now := time.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, m := range msgs {
		p.at[m.ID] = now
	}
	if len(p.at) >= p.want {
		select {
		case <-p.done:
		default:
			close(p.done)
		}
	}
	return nil
}

// BenchmarkUnderLoad: 4 writers commit b.N messages on 200 keys in
// transactions of 20 while one relay with the default options publishes
// them; it reports the rate from first commit to last confirm and the
// latency of each message from its commit to its confirm. Run it with a
// fixed count, e.g. -benchtime=100000x.
func BenchmarkUnderLoad(b *testing.B) {
	e := newEnv(b)
	ctx := context.Background()
	pub := &confirmTimes{Publisher: e.mem, at: make(map[string]time.Time, b.N), want: b.N, done: make(chan struct{})}
	run(b, testenv.Pool(b, e.dsn), pub, outbox.WithLogger(quiet))
	const writers, perTx = 4, 20
	payload := make([]byte, 200)
	var mu sync.Mutex
	committed := make(map[string]time.Time, b.N)
	var wg sync.WaitGroup
	b.ResetTimer()
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			share := b.N / writers
			if w == 0 {
				share += b.N % writers
			}
			msgs := make([]broker.Message, perTx)
			for i := 0; i < share; i += perTx {
				n := min(perTx, share-i)
				for j := range n {
					msgs[j] = broker.Message{Key: fmt.Sprintf("k%03d", (w*perTx+i+j)%200), Payload: payload}
				}
				tx, err := e.db.Begin(ctx)
				if err == nil {
					err = outbox.Add(ctx, tx, e.topic, msgs[:n]...)
				}
				if err == nil {
					err = tx.Commit(ctx)
				}
				if err != nil {
					b.Error(err)
					return
				}
				now := time.Now()
				mu.Lock()
				for _, m := range msgs[:n] {
					committed[m.ID] = now
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	select {
	case <-pub.done:
	case <-time.After(time.Minute):
		b.Fatal("not every message was published")
	}
	b.StopTimer()
	pub.mu.Lock()
	lat := make([]time.Duration, 0, b.N)
	for id, c := range committed {
		lat = append(lat, max(0, pub.at[id].Sub(c)))
	}
	pub.mu.Unlock()
	slices.Sort(lat)
	q := func(p float64) float64 { return float64(lat[int(p*float64(len(lat)-1))].Microseconds()) / 1000 }
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msg/s")
	b.ReportMetric(q(0.50), "p50-ms")
	b.ReportMetric(q(0.99), "p99-ms")
}

// discard is a publisher that confirms everything at once.
type discard struct{}

func (discard) Publish(context.Context, string, ...broker.Message) error { return nil }
func (discard) Close() error                                             { return nil }

// BenchmarkDrain: one relay with the default options drains a backlog of
// pending rows on 50 keys, written before it starts into a table that is
// never analyzed (autovacuum off for it), into a publisher that confirms at
// once; it reports the rate. The rate at 400,000 pending rows should be at
// least half the rate at 20,000 (issue 14, defect 8). Run it with
// -benchtime=1x.
func BenchmarkDrain(b *testing.B) {
	keys := make([]string, 50)
	for i := range keys {
		keys[i] = fmt.Sprintf("orders.k%02d", i)
	}
	for _, n := range []int{20000, 400000} {
		b.Run(fmt.Sprintf("pending=%d", n), func(b *testing.B) {
			var took time.Duration
			for range b.N {
				b.StopTimer()
				e := newEnv(b)
				if _, err := e.db.Exec(context.Background(), `alter table outbox set (autovacuum_enabled = false)`); err != nil {
					b.Fatal(err)
				}
				fill(b, e.db, outbox.DefaultTable, e.topic, n, keys, false)
				pub := &countingPublisher{Publisher: discard{}, want: int64(n), done: make(chan struct{})}
				b.StartTimer()
				start := time.Now()
				_, stop := run(b, testenv.Pool(b, e.dsn), pub, outbox.WithLogger(quiet))
				<-pub.done
				took += time.Since(start)
				b.StopTimer()
				if err := stop(); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(n*b.N)/took.Seconds(), "msg/s")
		})
	}
}
