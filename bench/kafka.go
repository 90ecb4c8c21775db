package main

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/IBM/sarama"
	"github.com/ThreeDotsLabs/watermill"
	wkafka "github.com/ThreeDotsLabs/watermill-kafka/v3/pkg/kafka"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Kafka scenario on an in-process kfake cluster (one broker): each side
// produces n 1 KiB records over 64 keys into a fresh 8-partition topic, then
// consumes them back in a fresh consumer group that commits offsets.
const (
	kafkaPartitions = 8
	kafkaProducers  = 16
	kafkaHandlers   = 16
)

func kafkaScenario(ctx context.Context, cfg config) []*row {
	n := cfg.scaled(100_000)
	const what = "1 KiB, 64 keys, 8 partitions, 16 producing goroutines"
	sync := &row{scenario: "Kafka (kfake) produce, " + what + ", each call waits for its ack", unit: msgPerSec, n: n}
	const legs = ", then Flush; sides alternate, each leg on a fresh topic after a GC, 3 legs a side per round"
	async := &row{scenario: "Kafka (kfake) produce async, " + what + legs, unit: msgPerSec, n: n}
	asyncID := &row{scenario: "Kafka (kfake) produce async, " + what + legs + ", raw records carrying the x-message-id header ours adds", unit: msgPerSec, n: n}
	con := &row{scenario: "Kafka (kfake) group consume with commits, what the side produced (Subscribe to last handled)", unit: msgPerSec, n: n}
	rows := []*row{sync, async, asyncID, con}
	var topics []string
	for r := range cfg.rounds {
		for _, s := range []string{"ours", "raw", "watermill"} {
			topics = append(topics, kafkaTopic(s, r))
		}
	}
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.DefaultNumPartitions(kafkaPartitions),
		kfake.SeedTopics(kafkaPartitions, topics...))
	if err != nil {
		return []*row{{scenario: "Kafka produce and group consume", skip: skipped("kfake: %v", err)}}
	}
	defer cluster.Close()
	addrs := cluster.ListenAddrs()
	sync.ours.label = "broker/kafka Publish (one message per call)"
	sync.raw.label = "franz-go v1.22.3 ProduceSync (acks=all, idempotent: the defaults)"
	sync.peer.label = "watermill-kafka v3.0.6 (Sarama sync producer, WaitForAll acks), partition key from metadata"
	async.ours.label = "broker/kafka PublishAsync + Flush"
	async.raw.label = "franz-go v1.22.3 Produce with a promise + Flush"
	async.peer.label = "none"
	async.peer.err = notApplicable("Watermill's Kafka publisher is synchronous")
	asyncID.ours.label = "the ours run of the row above"
	asyncID.raw.label = "franz-go v1.22.3 Produce with a promise + Flush, each record with an x-message-id header of 32 random hex characters (what PublishAsync sends)"
	asyncID.peer.label = "none"
	asyncID.peer.err = async.peer.err
	con.ours.label = "broker/kafka, Subscription.Concurrency 16"
	con.raw.label = "franz-go v1.22.3 consumer group, PollFetches loop, CommitUncommittedOffsets after each poll"
	con.peer.label = "watermill-kafka v3.0.6 (Sarama consumer group, oldest offset), 16 goroutines acking, offsets marked on ack and auto-committed every 1 s"
	runRounds(ctx, cfg.rounds, cfg.perRun,
		side{[]*outcome{&sync.ours, &con.ours}, func(ctx context.Context, r int) ([]sample, error) {
			return kafkaOurs(ctx, addrs, kafkaTopic("ours", r), n)
		}},
		side{[]*outcome{&sync.raw, &con.raw}, func(ctx context.Context, r int) ([]sample, error) {
			return kafkaRaw(ctx, addrs, kafkaTopic("raw", r), n)
		}},
		side{[]*outcome{&sync.peer, &con.peer}, func(ctx context.Context, r int) ([]sample, error) {
			return kafkaWatermill(ctx, addrs, kafkaTopic("watermill", r), n)
		}},
	)
	if ctx.Err() == nil {
		kafkaAsync(ctx, cfg, addrs, n, &async.ours, &async.raw, &asyncID.raw)
	}
	asyncID.ours = async.ours
	asyncID.ours.label = "broker/kafka PublishAsync + Flush (the ours run of the row above)"
	return rows
}

// kafkaTopic names a side's topic for one round: every round starts empty.
func kafkaTopic(side string, round int) string { return fmt.Sprintf("bench-%s-%d", side, round) }

// kafkaRaw produces n records to topic with ProduceSync from 16 goroutines,
// then consumes them in a group.
func kafkaRaw(ctx context.Context, addrs []string, topic string, n int) ([]sample, error) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(addrs...))
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	if err := cl.Ping(ctx); err != nil {
		return nil, err
	}
	p, keys := payload1K(), benchKeys()
	start := time.Now()
	err = publishParallel(ctx, n, kafkaProducers, func(ctx context.Context, i int) error {
		return cl.ProduceSync(ctx, &kgo.Record{Topic: topic, Key: []byte(keys[i%64]), Value: p}).FirstErr()
	})
	syncSample := sample{n: n, elapsed: time.Since(start), allocs: -1}
	if err != nil {
		return nil, fmt.Errorf("produce: %w", err)
	}

	conSample, err := kafkaRawConsume(ctx, addrs, topic, n)
	if err != nil {
		return []sample{syncSample}, err
	}

	return []sample{syncSample, conSample}, nil
}

// kafkaRawConsume reads n records of topic in a new group, committing after each poll.
func kafkaRawConsume(ctx context.Context, addrs []string, topic string, n int) (sample, error) {
	t := newConsumeTimer(n)
	cons, err := kgo.NewClient(kgo.SeedBrokers(addrs...), kgo.ConsumerGroup(topic+"-group"),
		kgo.ConsumeTopics(topic), kgo.DisableAutoCommit(), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		return sample{}, err
	}
	defer cons.Close()
	for t.count.Load() < int64(n) {
		fs := cons.PollFetches(ctx)
		if ctx.Err() != nil {
			return sample{}, fmt.Errorf("consume: %d of %d: %w", t.count.Load(), n, ctx.Err())
		}
		if errs := fs.Errors(); len(errs) > 0 {
			return sample{}, fmt.Errorf("consume: %w", errs[0].Err)
		}
		fs.EachRecord(func(*kgo.Record) { t.inc() })
		if err := cons.CommitUncommittedOffsets(ctx); err != nil {
			return sample{}, fmt.Errorf("commit: %w", err)
		}
	}
	return t.sample(), nil
}

func kafkaWatermill(ctx context.Context, addrs []string, topic string, n int) ([]sample, error) {
	marshaler := wkafka.NewWithPartitioningMarshaler(func(_ string, m *message.Message) (string, error) {
		return m.Metadata.Get("key"), nil
	})
	pcfg := wkafka.DefaultSaramaSyncPublisherConfig()
	pcfg.Producer.RequiredAcks = sarama.WaitForAll
	pub, err := wkafka.NewPublisher(wkafka.PublisherConfig{Brokers: addrs, Marshaler: marshaler, OverwriteSaramaConfig: pcfg}, watermill.NopLogger{})
	if err != nil {
		return nil, err
	}
	defer pub.Close()
	p, keys := payload1K(), benchKeys()
	start := time.Now()
	err = publishParallel(ctx, n, kafkaProducers, func(ctx context.Context, i int) error {
		m := message.NewMessage(watermill.NewUUID(), p)
		m.Metadata.Set("key", keys[i%64])
		return pub.Publish(topic, m)
	})
	pubSample := sample{n: n, elapsed: time.Since(start), allocs: -1}
	if err != nil {
		return nil, fmt.Errorf("produce: %w", err)
	}

	t := newConsumeTimer(n)
	scfg := wkafka.DefaultSaramaSubscriberConfig()
	scfg.Consumer.Offsets.Initial = sarama.OffsetOldest
	sub, err := wkafka.NewSubscriber(wkafka.SubscriberConfig{
		Brokers:               addrs,
		Unmarshaler:           marshaler,
		ConsumerGroup:         topic + "-group",
		OverwriteSaramaConfig: scfg,
	}, watermill.NopLogger{})
	if err != nil {
		return []sample{pubSample}, err
	}
	defer sub.Close()
	sctx, stop := context.WithCancel(ctx)
	defer stop()
	msgs, err := sub.Subscribe(sctx, topic)
	if err != nil {
		return []sample{pubSample}, err
	}
	var wg sync.WaitGroup
	for range kafkaHandlers {
		wg.Go(func() {
			for m := range msgs {
				if m.Ack() {
					t.inc()
				}
			}
		})
	}
	err = t.wait(ctx)
	stop()
	_ = sub.Close()
	wg.Wait()
	if err != nil {
		return []sample{pubSample}, fmt.Errorf("consume: %w", err)
	}
	return []sample{pubSample, t.sample()}, nil
}
