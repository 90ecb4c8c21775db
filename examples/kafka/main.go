// Command kafka publishes a keyed stream of booking events to Kafka, handles
// it in a consumer group (order kept per key, each key on one partition), and
// then replays the group from the beginning of the topic, as after a bug fix.
//
// It starts an in-process Kafka (kfake) unless KAFKA_BROKERS names a cluster;
// it deletes its topic at the end.
//
//	go run ./examples/kafka
package main

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/go-integration/patterns/broker"
	"github.com/go-integration/patterns/broker/kafka"
)

func main() {
	// Ctrl-C or SIGTERM cancels ctx, so run still cleans up after itself.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Stdout)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "kafka:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, w io.Writer) (err error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	logs := kafka.WithLogger(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
	brokers := strings.Split(os.Getenv("KAFKA_BROKERS"), ",")
	if brokers[0] == "" {
		cluster, err := kfake.NewCluster(kfake.NumBrokers(1))
		if err != nil {
			return err
		}
		defer cluster.Close()
		brokers = cluster.ListenAddrs()
	}
	admin, err := kafka.NewAdmin(brokers, logs)
	if err != nil {
		return err
	}
	defer admin.Close()
	pingCtx, cancelPing := context.WithTimeout(ctx, 5*time.Second)
	defer cancelPing()
	if err := admin.Ping(pingCtx); err != nil {
		return fmt.Errorf("needs Kafka at %s: start it, or unset KAFKA_BROKERS to use an in-process kfake (%w)", strings.Join(brokers, ","), err)
	}
	name := "example_bookings_" + strings.ToLower(rand.Text()[:8])
	const partitions = 3
	if err := admin.EnsureTopic(ctx, kafka.Topic{Name: name, Partitions: partitions}); err != nil {
		return err
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		err = errors.Join(err, admin.DeleteTopic(ctx, name))
	}()

	pub, err := kafka.NewPublisher(brokers, logs)
	if err != nil {
		return err
	}
	defer pub.Close()
	var msgs []broker.Message // interleaved; each booking's events in order
	for _, event := range []string{"created", "paid", "checked-in"} {
		for _, id := range []string{"b-1", "b-2", "b-3"} {
			msgs = append(msgs, broker.Message{Key: id, Payload: []byte(event)})
		}
	}
	if err := pub.Publish(ctx, name, msgs...); err != nil { // acks=all, idempotent producer
		return err
	}
	fmt.Fprintf(w, "published %d events for 3 bookings to %d partitions\n", len(msgs), partitions)

	sub, err := kafka.NewSubscriber(brokers, logs)
	if err != nil {
		return err
	}
	defer sub.Close()
	group := name + "_billing"
	s := broker.Subscription{Topic: name, Group: group, Concurrency: 3}
	if err := consume(ctx, w, sub, s, len(msgs), "billing"); err != nil {
		return err
	}
	// Replay: move the group, now idle, back to the start (or to kafka.AtTime(t)).
	if err := admin.ResetOffsets(ctx, group, name, kafka.Earliest()); err != nil {
		return err
	}
	return consume(ctx, w, sub, s, len(msgs), "billing, replayed")
}

// consume runs the subscription until it handled n messages, then prints
// each key's events in the order the handler saw them.
func consume(ctx context.Context, w io.Writer, sub *kafka.Subscriber, s broker.Subscription, n int, label string) error {
	ctx, stop := context.WithCancel(ctx)
	defer stop()
	var mu sync.Mutex
	seen := map[string][]string{}
	partition := map[string]int32{}
	handled := make(chan struct{}, n)
	done := make(chan error, 1)
	go func() {
		done <- sub.Subscribe(ctx, s, func(ctx context.Context, m broker.Message) error {
			mu.Lock()
			seen[m.Key] = append(seen[m.Key], string(m.Payload))
			partition[m.Key] = m.Raw.(*kgo.Record).Partition // the escape hatch to the Kafka record
			mu.Unlock()
			handled <- struct{}{}
			return nil // commits the offset
		})
	}()
	for i := 0; i < n; i++ {
		select {
		case <-handled:
		case err := <-done:
			return fmt.Errorf("subscribe: %w", err)
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s (%d of %d): %w", label, i, n, ctx.Err())
		}
	}
	stop()
	if err := <-done; err != nil { // commits what was handled and leaves the group
		return err
	}
	keys := make([]string, 0, len(seen))
	for k := range seen {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(w, "%s: %s (partition %d) %s\n", label, k, partition[k], strings.Join(seen[k], " -> "))
	}
	return nil
}
