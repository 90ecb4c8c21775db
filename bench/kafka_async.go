package main

import (
	"context"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"runtime"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/go-integration/patterns/broker/kafka"
)

// kafkaAsyncRounds is how many rounds the asynchronous rows run per -rounds:
// a leg takes a fraction of a second, so more of them cost little and
// steady the medians.
const kafkaAsyncRounds = 3

// kafkaAsync measures the asynchronous rows: PublishAsync, raw Produce, and
// raw Produce carrying the x-message-id header PublishAsync adds, in
// alternating legs (rotating order) of n records each. Every leg gets a
// fresh 8-partition topic, warmed up with one record outside the timing and
// deleted afterwards, and starts after a garbage collection: kfake keeps
// every record in memory, so without this whichever leg ran later would
// pay for the records of the earlier ones (a larger heap to scan, larger
// in-memory segment files to grow).
func kafkaAsync(ctx context.Context, cfg config, addrs []string, n int, ours, raw, rawID *outcome) {
	// Quiet: it logs each topic it creates, which here is every leg's.
	pub, err := kafka.NewPublisher(addrs, kafka.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		ours.add(sample{}, err)
		return
	}
	defer pub.Close()
	cl, err := kgo.NewClient(kgo.SeedBrokers(addrs...))
	if err != nil {
		raw.add(sample{}, err)
		rawID.add(sample{}, err)
		return
	}
	defer cl.Close()
	admin := pub.Admin()
	leg := func(name string, produce func(ctx context.Context, topic string) (sample, error)) side {
		return side{run: func(ctx context.Context, r int) ([]sample, error) {
			topic := fmt.Sprintf("bench-async-%s-%d", name, r)
			if err := admin.EnsureTopic(ctx, kafka.Topic{Name: topic, Partitions: kafkaPartitions}); err != nil {
				return nil, fmt.Errorf("create topic: %w", err)
			}
			defer func() { _ = admin.DeleteTopic(context.WithoutCancel(ctx), topic) }()
			// Both clients learn the topic's partitions outside the timing.
			if err := cl.ProduceSync(ctx, &kgo.Record{Topic: topic, Value: []byte("warm-up")}).FirstErr(); err != nil {
				return nil, fmt.Errorf("warm-up: %w", err)
			}
			if err := pub.Publish(ctx, topic); err != nil { // no message: only learns the topic
				return nil, fmt.Errorf("warm-up: %w", err)
			}
			runtime.GC()
			s, err := produce(ctx, topic)
			if err != nil {
				return nil, err
			}
			return []sample{s}, nil
		}}
	}
	rawSide := leg("raw", func(ctx context.Context, topic string) (sample, error) {
		return kafkaRawAsync(ctx, cl, topic, n, false)
	})
	rawSide.outs = []*outcome{raw}
	rawIDSide := leg("raw-id", func(ctx context.Context, topic string) (sample, error) {
		return kafkaRawAsync(ctx, cl, topic, n, true)
	})
	rawIDSide.outs = []*outcome{rawID}
	oursSide := leg("ours", func(ctx context.Context, topic string) (sample, error) {
		return oursAsync(ctx, pub, topic, n, kafkaProducers)
	})
	oursSide.outs = []*outcome{ours}
	runRounds(ctx, cfg.rounds*kafkaAsyncRounds, cfg.perRun, oursSide, rawSide, rawIDSide)
}

// kafkaRawAsync produces n records to topic with Produce and a promise
// from 16 goroutines, then Flush; withID adds the header PublishAsync
// sends: x-message-id with 16 random bytes in hex.
func kafkaRawAsync(ctx context.Context, cl *kgo.Client, topic string, n int, withID bool) (sample, error) {
	var failed firstError
	promise := func(_ *kgo.Record, err error) { failed.set(err) }
	p, keys := payload1K(), benchKeys()
	// Records are buffered past the goroutine's return: give them the
	// round's context, not publishParallel's, which ends when it returns.
	produceCtx := ctx
	start := time.Now()
	err := publishParallel(ctx, n, kafkaProducers, func(_ context.Context, i int) error {
		r := &kgo.Record{Topic: topic, Key: []byte(keys[i%64]), Value: p}
		if withID {
			id := make([]byte, 32)
			var raw [16]byte
			binary.LittleEndian.PutUint64(raw[:8], rand.Uint64())
			binary.LittleEndian.PutUint64(raw[8:], rand.Uint64())
			hex.Encode(id, raw[:])
			r.Headers = []kgo.RecordHeader{{Key: "x-message-id", Value: id}}
		}
		cl.Produce(produceCtx, r, promise)
		return nil
	})
	if err == nil {
		err = cl.Flush(ctx)
	}
	s := sample{n: n, elapsed: time.Since(start), allocs: -1}
	if err == nil {
		err = failed.get()
	}
	if err != nil {
		return sample{}, fmt.Errorf("async produce: %w", err)
	}
	return s, nil
}
