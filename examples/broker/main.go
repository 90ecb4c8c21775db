// Command broker shows publish/subscribe on the in-memory broker: routing-key
// patterns, a consumer group whose two members compete, and retry plus
// dead-letter middleware. Swap memory.MustNew() for the RabbitMQ or Kafka adapter
// and the rest stays the same.
//
//	go run ./examples/broker
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"sync"
	"syscall"
	"time"

	"github.com/go-integration/patterns/broker"
	"github.com/go-integration/patterns/broker/memory"
	"github.com/go-integration/patterns/broker/middleware"
)

func main() {
	// Ctrl-C or SIGTERM cancels ctx, so run still cleans up after itself.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Stdout)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "broker:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, w io.Writer) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	b := memory.MustNew()
	defer b.Close()

	var mu sync.Mutex
	var lines []string
	got := make(chan struct{}, 64)
	note := func(format string, args ...any) {
		mu.Lock()
		lines = append(lines, fmt.Sprintf(format, args...))
		mu.Unlock()
		got <- struct{}{}
	}
	subCtx, stop := context.WithCancel(ctx)
	var subs sync.WaitGroup
	errs := make(chan error, 8)
	defer func() { stop(); subs.Wait() }()
	subscribe := func(s broker.Subscription, h broker.Handler) error {
		if err := b.Provision(ctx, s); err != nil { // keep messages published before Subscribe runs
			return err
		}
		subs.Add(1)
		go func() {
			defer subs.Done()
			if err := b.Subscribe(subCtx, s, h); err != nil {
				errs <- fmt.Errorf("%s: %w", s.Group, err)
			}
		}()
		return nil
	}

	// 1. Routing-key patterns: "*" is one word, "#" zero or more.
	err := subscribe(broker.Subscription{Topic: "bookings", Group: "france-concierge", Keys: []string{"rentals.france.*"}},
		func(ctx context.Context, m broker.Message) error { note("france-concierge <- %s", m.Key); return nil })
	// 2. A consumer group: two members compete, each message goes to one of them.
	perMember := map[string]int{}
	for _, member := range []string{"billing-1", "billing-2"} {
		err = errors.Join(err, subscribe(broker.Subscription{Topic: "bookings", Group: "billing", Keys: []string{"rentals.#"}},
			func(ctx context.Context, m broker.Message) error {
				mu.Lock()
				perMember[member]++
				mu.Unlock()
				note("billing <- %s", m.Key)
				return nil
			}))
	}
	// 3. Retry inside, dead-letter outside: a message that keeps failing goes to
	// bookings.dlq with headers saying where it came from and why.
	calls := map[string]int{}
	retry, rerr := middleware.Retry(middleware.WithMaxAttempts(3), middleware.WithBackoff(10*time.Millisecond, 100*time.Millisecond))
	if rerr != nil {
		return rerr
	}
	deadLetter, derr := middleware.DeadLetter(b, "bookings.dlq", "partner-sync")
	if derr != nil {
		return derr
	}
	partner := broker.Chain(
		middleware.Recover(),
		deadLetter,
		retry,
	)(func(ctx context.Context, m broker.Message) error {
		mu.Lock()
		calls[m.Key]++
		n := calls[m.Key]
		mu.Unlock()
		switch {
		case m.Key == "rentals.italy.cortina":
			return errors.New("partner API: 503 Service Unavailable")
		case n == 1:
			return errors.New("partner API: timeout")
		}
		note("partner-sync <- %s after %d calls", m.Key, n)
		return nil
	})
	err = errors.Join(err,
		subscribe(broker.Subscription{Topic: "bookings", Group: "partner-sync", Keys: []string{"rentals.italy.#"}}, partner),
		subscribe(broker.Subscription{Topic: "bookings.dlq", Group: "ops"}, func(ctx context.Context, m broker.Message) error {
			note("ops <- dead letter %s from %s/%s, %s=%s, %s=%q", m.Key, m.Header[broker.HeaderOriginTopic], m.Header[broker.HeaderOriginGroup],
				broker.HeaderAttempts, m.Header[broker.HeaderAttempts], broker.HeaderError, m.Header[broker.HeaderError])
			return nil
		}))
	if err != nil {
		return err
	}

	var msgs []broker.Message
	for _, key := range []string{"rentals.france.nevache", "rentals.france.chamonix", "rentals.italy.cortina", "rentals.italy.bormio"} {
		msgs = append(msgs, broker.Message{Key: key, Payload: []byte(`{"rental":"` + key + `"}`)})
	}
	if err := b.Publish(ctx, "bookings", msgs...); err != nil {
		return err
	}
	const want = 2 + 4 + 1 + 1 // france-concierge, billing, partner-sync, ops
	for n := 0; n < want; n++ {
		select {
		case <-got:
		case err := <-errs:
			return err
		case <-ctx.Done():
			return fmt.Errorf("waiting for deliveries (%d of %d): %w", n, want, ctx.Err())
		}
	}
	stop()
	subs.Wait()

	sort.Strings(lines)
	for _, l := range lines {
		fmt.Fprintln(w, l)
	}
	fmt.Fprintf(w, "billing: %d messages shared by its members (billing-1 %d, billing-2 %d)\n",
		perMember["billing-1"]+perMember["billing-2"], perMember["billing-1"], perMember["billing-2"])
	for _, g := range [][2]string{{"bookings", "france-concierge"}, {"bookings", "billing"}, {"bookings", "partner-sync"}, {"bookings.dlq", "ops"}} {
		if n := b.Pending(g[0], g[1]); n != 0 {
			return fmt.Errorf("%s/%s still has %d messages", g[0], g[1], n)
		}
	}
	fmt.Fprintln(w, "every queue drained")
	return nil
}
