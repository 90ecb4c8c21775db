package kafka

import (
	"context"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/go-integration/patterns/broker"
	"github.com/go-integration/patterns/internal/testenv"
	"github.com/go-integration/patterns/internal/testenv/kafkaenv"
)

// quick are the subscriber options tests use: short group timeouts and
// backoff so that rebalances and retries take milliseconds on kfake.
func quick(extra ...SubscriberOption) []SubscriberOption {
	session := 2 * time.Second // kfake allows 200 ms and up
	if kafkaenv.External() {
		session = 6 * time.Second // Kafka's default group.min.session.timeout.ms
	}
	opts := []SubscriberOption{
		WithGroupTimeouts(session, 10*time.Second, 100*time.Millisecond),
		WithRetryBackoff(5*time.Millisecond, 50*time.Millisecond),
		WithCommitInterval(200 * time.Millisecond),
		WithDrainTimeout(5 * time.Second),
	}
	for _, o := range common() {
		opts = append(opts, o)
	}
	return append(opts, extra...)
}

// quickPub are the publisher options tests use.
func quickPub(extra ...PublisherOption) []PublisherOption {
	var opts []PublisherOption
	for _, o := range common() {
		opts = append(opts, o)
	}
	return append(opts, extra...)
}

// common are the options every test client gets.
func common() []Option {
	opts := []Option{WithLogger(testLogger())}
	if os.Getenv("KAFKA_TEST_LOG") == "kgo" {
		opts = append(opts, WithClientOptions(kgo.WithLogger(kgo.BasicLogger(os.Stderr, kgo.LogLevelDebug, nil))))
	}
	return opts
}

func testLogger() *slog.Logger {
	level := slog.LevelError + 4 // quiet: tests check behaviour, not logs
	if os.Getenv("KAFKA_TEST_LOG") != "" {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
}

type env struct {
	t       *testing.T
	brokers []string
	admin   *Admin
}

func newEnv(t *testing.T) *env {
	t.Helper()
	bs := kafkaenv.Brokers(t)
	a, err := NewAdmin(bs, WithLogger(testLogger()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	return &env{t: t, brokers: bs, admin: a}
}

// topic creates a fresh topic with n partitions.
func (e *env) topic(n int32) string {
	e.t.Helper()
	name := testenv.Name(e.t, "k")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := e.admin.EnsureTopic(ctx, Topic{Name: name, Partitions: n}); err != nil {
		e.t.Fatal(err)
	}
	return name
}

func (e *env) publisher(opts ...PublisherOption) *Publisher {
	e.t.Helper()
	p, err := NewPublisher(e.brokers, quickPub(opts...)...)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { p.Close() })
	return p
}

func (e *env) subscriber(opts ...SubscriberOption) *Subscriber {
	e.t.Helper()
	s, err := NewSubscriber(e.brokers, quick(opts...)...)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { s.Close() })
	return s
}

// subscribe runs s.Subscribe in the background; the returned stop cancels it
// and returns its error.
func subscribe(t *testing.T, s *Subscriber, sub broker.Subscription, h broker.Handler) (stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		err := s.Subscribe(ctx, sub, h)
		if err != nil && ctx.Err() == nil {
			t.Errorf("Subscribe(%+v) returned early: %v", sub, err)
		}
		errc <- err
	}()
	var once sync.Once
	var err error
	stop = func() error {
		once.Do(func() {
			cancel()
			select {
			case err = <-errc:
			case <-time.After(30 * time.Second):
				t.Errorf("Subscribe did not return 30 s after cancel")
			}
		})
		return err
	}
	t.Cleanup(func() { _ = stop() })
	return stop
}

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}
