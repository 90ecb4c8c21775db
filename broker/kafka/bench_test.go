package kafka

import (
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/go-integration/patterns/broker"
	"github.com/go-integration/patterns/internal/testenv/kafkaenv"
)

// Benchmarks compare this adapter with raw franz-go on the same cluster in
// the same run: 1 KiB records, 64 keys, 8 partitions.
//
//	go test -run '^$' -bench . -benchtime 200000x ./broker/kafka/

const (
	benchPartitions = 8
	benchKeys       = 64
	benchSize       = 1024
)

// benchPayloads are distinct random payloads, cycled: with payloads repeated
// within a batch, snappy (franz-go's default compression, whose encoder looks
// back over the whole block) would shrink batches to almost nothing and the
// benchmark would measure that, not messaging. 4 MiB of them is more than a
// batch (1 MB by default).
var benchPayloads = func() [][]byte {
	ps := make([][]byte, 4096)
	for i := range ps {
		ps[i] = make([]byte, benchSize)
		_, _ = rand.Read(ps[i])
	}
	return ps
}()

func benchPayload(i int) []byte { return benchPayloads[i%len(benchPayloads)] }

type benchEnv struct {
	brokers []string
	admin   *Admin
	n       atomic.Int64
}

func newBenchEnv(b *testing.B) *benchEnv {
	b.Helper()
	bs := kafkaenv.Brokers(b)
	a, err := NewAdmin(bs, WithLogger(testLogger()))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { a.Close() })
	return &benchEnv{brokers: bs, admin: a}
}

func (e *benchEnv) topic(b *testing.B) string {
	b.Helper()
	name := fmt.Sprintf("bench_%d_%d", time.Now().UnixNano(), e.n.Add(1))
	if err := e.admin.EnsureTopic(context.Background(), Topic{Name: name, Partitions: benchPartitions}); err != nil {
		b.Fatal(err)
	}
	return name
}

var benchKeyNames = func() [][]byte {
	ks := make([][]byte, benchKeys)
	for i := range ks {
		ks[i] = []byte("rentals.france." + strconv.Itoa(i))
	}
	return ks
}()

func perSecond(b *testing.B, start time.Time) {
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "records/s")
}

// rawProducer is what the Publisher builds on: idempotent, acks=all, no linger.
func rawProducer(b *testing.B, brokers []string) *kgo.Client {
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.RequiredAcks(kgo.AllISRAcks()), kgo.ProducerLinger(0))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(cl.Close)
	return cl
}

func BenchmarkPublish(b *testing.B) {
	e := newBenchEnv(b)
	b.Run("raw-franz-go-async", func(b *testing.B) {
		cl := rawProducer(b, e.brokers)
		topic := e.topic(b)
		var failed atomic.Int64
		b.SetBytes(benchSize)
		b.ResetTimer()
		start := time.Now()
		for i := range b.N {
			cl.Produce(context.Background(), &kgo.Record{Topic: topic, Key: benchKeyNames[i%benchKeys], Value: benchPayload(i)}, func(_ *kgo.Record, err error) {
				if err != nil {
					failed.Add(1)
				}
			})
		}
		if err := cl.Flush(context.Background()); err != nil || failed.Load() > 0 {
			b.Fatal(err, failed.Load())
		}
		perSecond(b, start)
	})
	// The same with the ID header this adapter adds to every record.
	b.Run("raw-franz-go-async-with-id-header", func(b *testing.B) {
		cl := rawProducer(b, e.brokers)
		topic := e.topic(b)
		var failed atomic.Int64
		b.SetBytes(benchSize)
		b.ResetTimer()
		start := time.Now()
		for i := range b.N {
			id := broker.NewID()
			cl.Produce(context.Background(), &kgo.Record{Topic: topic, Key: benchKeyNames[i%benchKeys], Value: benchPayload(i), Headers: []kgo.RecordHeader{{Key: HeaderMessageID, Value: []byte(id)}}}, func(_ *kgo.Record, err error) {
				if err != nil {
					failed.Add(1)
				}
			})
		}
		if err := cl.Flush(context.Background()); err != nil || failed.Load() > 0 {
			b.Fatal(err, failed.Load())
		}
		perSecond(b, start)
	})
	b.Run("PublishAsync", func(b *testing.B) {
		p, err := NewPublisher(e.brokers, WithLogger(testLogger()))
		if err != nil {
			b.Fatal(err)
		}
		defer p.Close()
		topic := e.topic(b)
		var failed atomic.Int64
		done := func(_ broker.Message, err error) {
			if err != nil {
				failed.Add(1)
			}
		}
		b.SetBytes(benchSize)
		b.ResetTimer()
		start := time.Now()
		for i := range b.N {
			p.PublishAsync(context.Background(), topic, broker.Message{Key: benchKeys64[i%benchKeys], Payload: benchPayload(i)}, done)
		}
		if err := p.Flush(context.Background()); err != nil || failed.Load() > 0 {
			b.Fatal(err, failed.Load())
		}
		perSecond(b, start)
	})
	// Publish from many goroutines, one message per call: each call waits
	// for its acknowledgement, and concurrent calls share batches.
	for _, batch := range []int{1, 100} {
		b.Run(fmt.Sprintf("Publish-concurrent-batch%d", batch), func(b *testing.B) {
			p, err := NewPublisher(e.brokers, WithLogger(testLogger()))
			if err != nil {
				b.Fatal(err)
			}
			defer p.Close()
			topic := e.topic(b)
			goroutines := 256
			if v, _ := strconv.Atoi(os.Getenv("BENCH_GOROUTINES")); v > 0 {
				goroutines = v
			}
			var next atomic.Int64
			var wg sync.WaitGroup
			b.SetBytes(benchSize)
			b.ResetTimer()
			start := time.Now()
			for range goroutines {
				wg.Add(1)
				go func() {
					defer wg.Done()
					msgs := make([]broker.Message, 0, batch)
					for {
						from := next.Add(int64(batch)) - int64(batch)
						if from >= int64(b.N) {
							return
						}
						to := min(from+int64(batch), int64(b.N))
						msgs = msgs[:0]
						for i := from; i < to; i++ {
							msgs = append(msgs, broker.Message{Key: benchKeys64[i%benchKeys], Payload: benchPayload(int(i))})
						}
						if err := p.Publish(context.Background(), topic, msgs...); err != nil {
							b.Error(err)
							return
						}
					}
				}()
			}
			wg.Wait()
			perSecond(b, start)
		})
	}
}

var benchKeys64 = func() []string {
	ks := make([]string, benchKeys)
	for i := range ks {
		ks[i] = string(benchKeyNames[i])
	}
	return ks
}()

// fill produces n records to a new topic (outside the timer).
func (e *benchEnv) fill(b *testing.B, n int) string {
	b.Helper()
	topic := e.topic(b)
	cl := rawProducer(b, e.brokers)
	for i := range n {
		cl.Produce(context.Background(), &kgo.Record{Topic: topic, Key: benchKeyNames[i%benchKeys], Value: benchPayload(i), Headers: []kgo.RecordHeader{{Key: HeaderMessageID, Value: []byte(strconv.Itoa(i))}}}, nil)
	}
	if err := cl.Flush(context.Background()); err != nil {
		b.Fatal(err)
	}
	return topic
}

func BenchmarkConsume(b *testing.B) {
	e := newBenchEnv(b)
	b.Run("raw-franz-go-group", func(b *testing.B) {
		b.StopTimer()
		topic := e.fill(b, b.N)
		cl, err := kgo.NewClient(kgo.SeedBrokers(e.brokers...), kgo.ConsumerGroup("raw"), kgo.ConsumeTopics(topic),
			kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxWait(500*time.Millisecond))
		if err != nil {
			b.Fatal(err)
		}
		defer cl.Close()
		b.SetBytes(benchSize)
		b.StartTimer()
		start := time.Now()
		n := 0
		for n < b.N {
			fs := cl.PollFetches(context.Background())
			fs.EachRecord(func(*kgo.Record) { n++ })
		}
		if err := cl.CommitUncommittedOffsets(context.Background()); err != nil {
			b.Fatal(err)
		}
		perSecond(b, start)
	})
	for _, conc := range []int{1, 8} {
		b.Run(fmt.Sprintf("Subscribe-group-concurrency%d", conc), func(b *testing.B) {
			b.StopTimer()
			topic := e.fill(b, b.N)
			inFlight := 0 // broker.DefaultMaxInFlight
			if v := os.Getenv("BENCH_IN_FLIGHT"); v != "" {
				inFlight, _ = strconv.Atoi(v)
			}
			s, err := NewSubscriber(e.brokers, WithLogger(testLogger()))
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			var n atomic.Int64
			done := make(chan struct{})
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			b.SetBytes(benchSize)
			b.StartTimer()
			start := time.Now()
			errc := make(chan error, 1)
			go func() {
				errc <- s.Subscribe(ctx, broker.Subscription{Topic: topic, Group: "ours", Concurrency: conc, MaxInFlight: inFlight}, func(context.Context, broker.Message) error {
					if n.Add(1) == int64(b.N) {
						close(done)
					}
					return nil
				})
			}()
			<-done
			cancel() // includes the final commit
			if err := <-errc; err != nil {
				b.Fatal(err)
			}
			perSecond(b, start)
		})
	}
}

// The machine running the benchmarks is shared, so load changes between
// sub-benchmarks. The paired benchmarks alternate raw franz-go and this
// adapter in rounds within one benchmark and report both rates and their
// ratio (ours / raw): the fairest comparison on a noisy machine.

const pairRound = 20000

func reportPair(b *testing.B, n int, raw, ours time.Duration) {
	b.ReportMetric(float64(n)/raw.Seconds(), "raw-records/s")
	b.ReportMetric(float64(n)/ours.Seconds(), "ours-records/s")
	b.ReportMetric(raw.Seconds()/ours.Seconds(), "ours/raw")
}

// BenchmarkPublishPaired alternates three publishers: raw franz-go, raw
// franz-go with the x-message-id header this adapter puts on every record
// (the cost of carrying Message.ID), and PublishAsync. Each leg gets a
// fresh topic, warmed up outside the timing (both clients learn its
// partitions), after a GC, deleted afterwards: kfake keeps every record
// in memory, in segment files that grow by copying, so legs sharing
// growing topics made whichever ran later pay for the others' records.
func BenchmarkPublishPaired(b *testing.B) {
	e := newBenchEnv(b)
	cl := rawProducer(b, e.brokers)
	p, err := NewPublisher(e.brokers, WithLogger(testLogger()))
	if err != nil {
		b.Fatal(err)
	}
	defer p.Close()
	var failed atomic.Int64
	rawDone := func(_ *kgo.Record, err error) {
		if err != nil {
			failed.Add(1)
		}
	}
	ourDone := func(_ broker.Message, err error) {
		if err != nil {
			failed.Add(1)
		}
	}
	var n int
	legs := []func(topic string){
		func(topic string) { // raw
			for i := range n {
				cl.Produce(context.Background(), &kgo.Record{Topic: topic, Key: benchKeyNames[i%benchKeys], Value: benchPayload(i)}, rawDone)
			}
			if err := cl.Flush(context.Background()); err != nil {
				b.Fatal(err)
			}
		},
		func(topic string) { // raw with the ID header
			for i := range n {
				id := []byte(broker.NewID())
				cl.Produce(context.Background(), &kgo.Record{Topic: topic, Key: benchKeyNames[i%benchKeys], Value: benchPayload(i), Headers: []kgo.RecordHeader{{Key: HeaderMessageID, Value: id}}}, rawDone)
			}
			if err := cl.Flush(context.Background()); err != nil {
				b.Fatal(err)
			}
		},
		func(topic string) { // ours
			for i := range n {
				p.PublishAsync(context.Background(), topic, broker.Message{Key: benchKeys64[i%benchKeys], Payload: benchPayload(i)}, ourDone)
			}
			if err := p.Flush(context.Background()); err != nil {
				b.Fatal(err)
			}
		},
	}
	var took [3]time.Duration
	b.SetBytes(3 * benchSize)
	b.ResetTimer()
	for round, done := 0, 0; done < b.N; round, done = round+1, done+pairRound {
		n = min(pairRound, b.N-done)
		for k := range legs { // rotate the order so no leg always runs first
			leg := (round + k) % len(legs)
			b.StopTimer()
			topic := e.topic(b)
			if err := cl.ProduceSync(context.Background(), &kgo.Record{Topic: topic}).FirstErr(); err != nil {
				b.Fatal(err)
			}
			if err := p.Publish(context.Background(), topic); err != nil {
				b.Fatal(err)
			}
			runtime.GC()
			b.StartTimer()
			start := time.Now()
			legs[leg](topic)
			took[leg] += time.Since(start)
			b.StopTimer()
			if err := e.admin.DeleteTopic(context.Background(), topic); err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
		}
	}
	raw, rawID, ours := took[0], took[1], took[2]
	if failed.Load() > 0 {
		b.Fatalf("%d failed", failed.Load())
	}
	reportPair(b, b.N, raw, ours)
	b.ReportMetric(float64(b.N)/rawID.Seconds(), "raw-with-id-records/s")
	b.ReportMetric(rawID.Seconds()/ours.Seconds(), "ours/raw-with-id")
}

func BenchmarkConsumePaired(b *testing.B) {
	e := newBenchEnv(b)
	s, err := NewSubscriber(e.brokers, WithLogger(testLogger()))
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	var n int
	var rawTopic, ourTopic string
	legs := []func(){
		func() { // raw franz-go group consumer, committing at the end
			cl, err := kgo.NewClient(kgo.SeedBrokers(e.brokers...), kgo.ConsumerGroup("raw"), kgo.ConsumeTopics(rawTopic),
				kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxWait(500*time.Millisecond))
			if err != nil {
				b.Fatal(err)
			}
			for got := 0; got < n; {
				fs := cl.PollFetches(context.Background())
				fs.EachRecord(func(*kgo.Record) { got++ })
			}
			if err := cl.CommitUncommittedOffsets(context.Background()); err != nil {
				b.Fatal(err)
			}
			cl.Close()
		},
		func() { // ours: Subscribe until every record was handled
			var got atomic.Int64
			all := make(chan struct{})
			ctx, cancel := context.WithCancel(context.Background())
			errc := make(chan error, 1)
			go func() {
				errc <- s.Subscribe(ctx, broker.Subscription{Topic: ourTopic, Group: "ours", Concurrency: benchPartitions}, func(context.Context, broker.Message) error {
					if got.Add(1) == int64(n) {
						close(all)
					}
					return nil
				})
			}()
			<-all
			cancel() // Subscribe returns after the final commit and leaving the group
			if err := <-errc; err != nil {
				b.Fatal(err)
			}
		},
	}
	var took [2]time.Duration
	b.SetBytes(2 * benchSize)
	b.ResetTimer()
	for round, done := 0, 0; done < b.N; round, done = round+1, done+pairRound {
		n = min(pairRound, b.N-done)
		b.StopTimer()
		rawTopic, ourTopic = e.fill(b, n), e.fill(b, n)
		b.StartTimer()
		for k := range legs {
			leg := (round + k) % len(legs)
			start := time.Now()
			legs[leg]()
			took[leg] += time.Since(start)
		}
	}
	reportPair(b, b.N, took[0], took[1])
}
