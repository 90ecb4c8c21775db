package kafka

import (
	"context"
	"crypto/rand"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/go-integration/patterns/broker"
)

// unreachable is a local port nothing listens on (port 1 needs root to bind).
var unreachable = []string{"127.0.0.1:1"}

// Unreachable brokers: every blocking call returns an error naming the
// brokers and the dial error within its context's deadline, not a hang.
func TestUnreachableBrokers(t *testing.T) {
	const deadline = 1500 * time.Millisecond
	check := func(what string, call func(ctx context.Context) error) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), deadline)
		defer cancel()
		start := time.Now()
		err := call(ctx)
		took := time.Since(start)
		if !errors.Is(err, ErrUnreachable) {
			t.Errorf("%s: %v, want ErrUnreachable", what, err)
		}
		if err != nil && (!strings.Contains(err.Error(), "127.0.0.1:1") || !strings.Contains(err.Error(), "refused")) {
			t.Errorf("%s: error %q does not name the broker and the dial error", what, err)
		}
		t.Logf("%s: %v after %v", what, err, took.Round(time.Millisecond))
		if took > deadline+2*time.Second {
			t.Errorf("%s took %v with a %v deadline", what, took, deadline)
		}
	}
	p, err := NewPublisher(unreachable, WithLogger(testLogger()))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	s, err := NewSubscriber(unreachable, WithLogger(testLogger()))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	sub := broker.Subscription{Topic: "t", Group: "g"}
	ok := func(context.Context, broker.Message) error { return nil }
	check("Publish", func(ctx context.Context) error { return p.Publish(ctx, "t", broker.Message{Payload: []byte("x")}) })
	check("Ping", p.Ping)
	check("Subscribe", func(ctx context.Context) error { return s.Subscribe(ctx, sub, ok) })
	check("Provision", func(ctx context.Context) error { return s.Provision(ctx, sub) })

	// A port that accepts connections and never answers: the deadline bounds it.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	silent, err := NewPublisher([]string{ln.Addr().String()}, WithLogger(testLogger()))
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	start := time.Now()
	err = silent.Publish(ctx, "t", broker.Message{Payload: []byte("x")})
	if !errors.Is(err, ErrUnreachable) || !strings.Contains(err.Error(), ln.Addr().String()) || time.Since(start) > deadline+2*time.Second {
		t.Errorf("Publish to a silent broker: %v after %v, want ErrUnreachable naming it within the deadline", err, time.Since(start))
	}
	t.Logf("silent broker: %v", err)

	if _, err := NewPublisher(nil); err == nil {
		t.Error("NewPublisher without brokers: no error")
	}
}

// A missing topic is ErrUnknownTopic, or is created with CreateTopics.
func TestMissingTopic(t *testing.T) {
	e := newEnv(t)
	p := e.publisher()
	s := e.subscriber()
	ok := func(context.Context, broker.Message) error { return nil }
	if err := p.Publish(ctxT(t, 10*time.Second), "nope_pub", broker.Message{Payload: []byte("x")}); !errors.Is(err, ErrUnknownTopic) || !strings.Contains(err.Error(), "nope_pub") {
		t.Errorf("Publish to a missing topic = %v, want ErrUnknownTopic naming it", err)
	}
	if err := s.Subscribe(ctxT(t, 10*time.Second), broker.Subscription{Topic: "nope_sub", Group: "g"}, ok); !errors.Is(err, ErrUnknownTopic) {
		t.Errorf("Subscribe to a missing topic = %v, want ErrUnknownTopic", err)
	}
	// The dead-letter topic must exist too.
	topic := e.topic(1)
	if err := s.Subscribe(ctxT(t, 10*time.Second), broker.Subscription{Topic: topic, Group: "g", MaxAttempts: 2}, ok); !errors.Is(err, ErrUnknownTopic) || !strings.Contains(err.Error(), topic+".dlq") {
		t.Errorf("Subscribe with a missing dead-letter topic = %v, want ErrUnknownTopic naming it", err)
	}

	pc := e.publisher(WithCreateTopics(Topic{Partitions: 2}))
	if err := pc.Publish(ctxT(t, 10*time.Second), "made_by_publish", broker.Message{Payload: []byte("x")}); err != nil {
		t.Fatalf("Publish with CreateTopics: %v", err)
	}
	lag, err := e.admin.Lag(ctxT(t, 10*time.Second), "nobody", "made_by_publish")
	if err != nil || len(lag) != 2 {
		t.Errorf("created topic: lag %v, %v; want 2 partitions", lag, err)
	}
	// The publisher that failed before sees the topic once it exists.
	if err := p.Publish(ctxT(t, 10*time.Second), "made_by_publish", broker.Message{Payload: []byte("x")}); err != nil {
		t.Errorf("Publish after the topic was created elsewhere: %v", err)
	}
}

// A record over the topic's max.message.bytes, or over the producer's batch
// limit, is broker.ErrInvalidMessage; the publisher keeps working.
func TestMessageTooLarge(t *testing.T) {
	e := newEnv(t)
	topic := testName(t)
	if err := e.admin.EnsureTopic(ctxT(t, 10*time.Second), Topic{Name: topic, Partitions: 1, Config: map[string]string{"max.message.bytes": "2000"}}); err != nil {
		t.Fatal(err)
	}
	p := e.publisher()
	big := make([]byte, 10_000)
	_, _ = rand.Read(big) // incompressible: the limit applies to the compressed batch
	err := p.Publish(ctxT(t, 10*time.Second), topic, broker.Message{ID: "big", Payload: big})
	if !errors.Is(err, broker.ErrInvalidMessage) || !strings.Contains(err.Error(), "max.message.bytes") {
		t.Errorf("Publish over the topic's max.message.bytes = %v, want ErrInvalidMessage", err)
	}
	err = p.Publish(ctxT(t, 10*time.Second), topic, broker.Message{ID: "huge", Payload: make([]byte, 2<<20)})
	if !errors.Is(err, broker.ErrInvalidMessage) {
		t.Errorf("Publish over the producer's batch limit = %v, want ErrInvalidMessage", err)
	}
	if err := p.Publish(ctxT(t, 10*time.Second), topic, broker.Message{ID: "small", Payload: []byte("ok")}); err != nil {
		t.Errorf("Publish after a rejected message: %v", err)
	}
}

// Invalid offsets and times: an error wrapping ErrInvalidOffset that names the cause.
func TestInvalidStart(t *testing.T) {
	e := newEnv(t)
	for name, o := range map[string]Offset{
		"negative offset":    AtOffsets(map[int32]int64{0: -1}),
		"negative partition": AtOffsets(map[int32]int64{-1: 0}),
		"zero time":          AtTime(time.Time{}),
		"time before 1970":   AtTime(time.Date(1969, 1, 1, 0, 0, 0, 0, time.UTC)),
	} {
		if _, err := NewSubscriber(e.brokers, WithStartAt(o)); !errors.Is(err, ErrInvalidOffset) {
			t.Errorf("%s: NewSubscriber = %v, want ErrInvalidOffset", name, err)
		}
	}
	topic := e.topic(1)
	p := e.publisher()
	if err := p.Publish(ctxT(t, 10*time.Second), topic, numbered("m", 10, 1, 1)...); err != nil {
		t.Fatal(err)
	}
	ok := func(context.Context, broker.Message) error { return nil }
	for name, tc := range map[string]struct {
		o    Offset
		want string
	}{
		"past the end":      {AtOffsets(map[int32]int64{0: 11}), "outside [0, 10]"},
		"missing partition": {AtOffsets(map[int32]int64{3: 0}), "no partition 3"},
	} {
		s := e.subscriber(WithStartAt(tc.o))
		err := s.Subscribe(ctxT(t, 10*time.Second), broker.Subscription{Topic: topic}, ok)
		if !errors.Is(err, ErrInvalidOffset) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: Subscribe = %v, want ErrInvalidOffset with %q", name, err, tc.want)
		}
		if err := e.admin.ResetOffsets(ctxT(t, 10*time.Second), "g", topic, tc.o); !errors.Is(err, ErrInvalidOffset) {
			t.Errorf("%s: ResetOffsets = %v, want ErrInvalidOffset", name, err)
		}
	}
	if _, err := NewSubscriber(e.brokers, WithRetryBackoff(time.Second, time.Millisecond)); !errors.Is(err, ErrInvalidOption) {
		t.Errorf("WithRetryBackoff with max < min: %v, want ErrInvalidOption", err)
	}
}

func testName(t *testing.T) string {
	return strings.ToLower(strings.NewReplacer("/", "_").Replace(t.Name())) + "_" + strings.ReplaceAll(time.Now().Format("150405.000000"), ".", "")
}
