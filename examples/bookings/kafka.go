package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/go-integration/patterns/broker"
	"github.com/go-integration/patterns/broker/kafka"
)

// bookingChanges is the history of three rentals, in the order it happened.
var bookingChanges = []struct{ rental, change string }{
	{"chalet-17", "b-1001 created, 7 nights"},
	{"flat-3", "b-1002 created, 2 nights"},
	{"chalet-17", "b-1001 extended to 9 nights"},
	{"villa-9", "b-1003 created, 5 nights"},
	{"flat-3", "b-1002 guest renamed"},
	{"chalet-17", "b-1001 cancelled"},
	{"villa-9", "b-1003 paid"},
	{"chalet-17", "b-1005 created, 3 nights"},
}

// kafkaStream publishes booking changes keyed by rental to a Kafka topic
// (an in-process kfake cluster): each rental's changes stay on one partition,
// in order. A consumer group follows them live; a service that starts later
// replays the whole topic from the beginning with a new group.
func kafkaStream(ctx context.Context, t *tour) error {
	t.printf("   Every change to a booking goes to a Kafka topic, keyed by rental: Kafka keeps\n")
	t.printf("   one key on one partition, so each rental's history stays in order and can be replayed.\n")
	cluster, err := kfake.NewCluster(
		kfake.NumBrokers(1),
		kfake.DefaultNumPartitions(3),
		kfake.GroupMinSessionTimeout(200*time.Millisecond),
		kfake.Ports(0),
	)
	if err != nil {
		return fmt.Errorf("start kfake: %w", err)
	}
	defer cluster.Close()
	brokers := cluster.ListenAddrs()
	t.printf("   Kafka: in-process kfake cluster at %s\n", strings.Join(brokers, ","))

	quiet := kafka.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil)))
	fast := []kafka.SubscriberOption{
		quiet,
		kafka.WithGroupTimeouts(time.Second, 5*time.Second, 100*time.Millisecond),
		kafka.WithCommitInterval(100 * time.Millisecond),
	}
	const topic = "booking_changes"
	admin, err := kafka.NewAdmin(brokers, quiet)
	if err != nil {
		return err
	}
	defer admin.Close()
	if err := admin.EnsureTopic(ctx, kafka.Topic{Name: topic, Partitions: 3}); err != nil {
		return err
	}
	t.printf("   topic %s with 3 partitions\n", topic)

	pub, err := kafka.NewPublisher(brokers, quiet, kafka.WithTracer(t.tel.Broker()))
	if err != nil {
		return err
	}
	defer pub.Close()
	// follow reads the topic in a consumer group until it has seen every
	// change, and returns them per rental with the partition each came from.
	type seen struct {
		changes   map[string][]string
		partition map[string]int32
	}
	follow := func(group string, print bool, before func() error) (seen, error) {
		res := seen{changes: map[string][]string{}, partition: map[string]int32{}}
		traced := append(fast, kafka.WithTracer(t.tel.Broker()), kafka.WithTracer(t.tel.Kafka()))
		sub, err := kafka.NewSubscriber(brokers, traced...)
		if err != nil {
			return res, err
		}
		defer sub.Close()
		stopLag, err := t.tel.ObserveKafka(sub) // patterns.kafka.consumer.lag and partition.stuck
		if err != nil {
			return res, err
		}
		defer stopLag()
		s := broker.Subscription{Topic: topic, Group: group, Concurrency: 3}
		var mu sync.Mutex
		n := 0
		done := make(chan struct{})
		runCtx, stop := context.WithCancel(ctx)
		defer stop()
		subDone := make(chan error, 1)
		go func() {
			subDone <- sub.Subscribe(runCtx, s, func(ctx context.Context, m broker.Message) error {
				partition, offset := int32(-1), int64(-1)
				if r, ok := m.Raw.(*kgo.Record); ok {
					partition, offset = r.Partition, r.Offset
				}
				mu.Lock()
				defer mu.Unlock()
				res.changes[m.Key] = append(res.changes[m.Key], string(m.Payload))
				res.partition[m.Key] = partition
				if print {
					t.printf("   %s: partition %d offset %d  %-9s %s\n", group, partition, offset, m.Key, m.Payload)
				}
				if n++; n == len(bookingChanges) {
					close(done)
				}
				return nil
			})
		}()
		if before != nil {
			if err := before(); err != nil {
				return res, err
			}
		}
		wait, cancel := context.WithTimeout(ctx, 15*time.Second)
		defer cancel()
		select {
		case <-done:
		case err := <-subDone:
			return res, fmt.Errorf("%s stopped: %v", group, err)
		case <-wait.Done():
			mu.Lock()
			defer mu.Unlock()
			return res, fmt.Errorf("%s got %d of %d changes in 15 s", group, n, len(bookingChanges))
		}
		stop()
		if err := <-subDone; err != nil {
			return res, err
		}
		mu.Lock() // the handlers are done; this orders their writes before our reads
		defer mu.Unlock()
		return res, nil
	}

	// The availability service follows the stream as the changes happen.
	want := map[string][]string{}
	live, err := follow("availability", true, func() error {
		for _, c := range bookingChanges {
			if err := pub.Publish(ctx, topic, broker.Message{Key: c.rental, Payload: []byte(c.change)}); err != nil {
				return fmt.Errorf("publish: %w", err)
			}
			want[c.rental] = append(want[c.rental], c.change)
		}
		t.printf("   published %d changes to 3 rentals, keyed by rental; the availability group reads them:\n", len(bookingChanges))
		return nil
	})
	if err != nil {
		return err
	}
	if err := sameHistory(want, live.changes); err != nil {
		return fmt.Errorf("availability: %w", err)
	}

	// A search index built next month starts from nothing: a new group with no
	// committed offsets starts at the earliest record and replays everything.
	t.printf("   later, a new search-index service joins with a new consumer group and replays from the beginning:\n")
	replay, err := follow("search-index", false, nil)
	if err != nil {
		return err
	}
	if err := sameHistory(want, replay.changes); err != nil {
		return fmt.Errorf("search-index: %w", err)
	}
	for _, rental := range []string{"chalet-17", "flat-3", "villa-9"} {
		t.printf("   search-index: %-9s (partition %d) %s\n", rental, replay.partition[rental], strings.Join(replay.changes[rental], " -> "))
	}
	var behind int64
	for _, group := range []string{"availability", "search-index"} {
		lag, err := admin.Lag(ctx, group, topic)
		if err != nil {
			return err
		}
		for _, n := range lag {
			behind += n
		}
	}
	if behind != 0 {
		return fmt.Errorf("the groups are %d records behind after reading everything", behind)
	}
	t.printf("   both groups saw every rental's changes in publish order, and committed: lag 0\n")
	return nil
}

// sameHistory checks that every rental's changes arrived exactly in publish order.
func sameHistory(want, got map[string][]string) error {
	for rental, changes := range want {
		if !slices.Equal(changes, got[rental]) {
			return fmt.Errorf("%s: got %q, want %q", rental, got[rental], changes)
		}
	}
	return nil
}
