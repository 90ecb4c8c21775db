package rabbitmq_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/go-integration/patterns/broker"
	"github.com/go-integration/patterns/broker/rabbitmq"
	"github.com/go-integration/patterns/internal/testenv"
)

// xDeath returns the x-death entries of a delivery.
func xDeath(m broker.Message) []amqp.Table {
	d, ok := m.Raw.(*amqp.Delivery)
	if !ok {
		return nil
	}
	var out []amqp.Table
	if list, ok := d.Headers["x-death"].([]any); ok {
		for _, e := range list {
			if t, ok := e.(amqp.Table); ok {
				out = append(out, t)
			}
		}
	}
	return out
}

// TestAlwaysFailingHandler: a message whose handler always fails is retried
// in place and lands in the dead-letter queue after MaxAttempts with its
// origin headers, while the messages of other keys keep flowing.
func TestAlwaysFailingHandler(t *testing.T) {
	t.Parallel()
	_, url := testenv.VHost(t)
	p := newPublisher(t, url)
	s := newSubscriber(t, url, rabbitmq.WithRetryBackoff(5*time.Millisecond, 20*time.Millisecond))
	var tries atomic.Int32
	var attempts []int
	var mu sync.Mutex
	good := newCollector()
	h := func(ctx context.Context, m broker.Message) error {
		if m.Key == "poison" {
			tries.Add(1)
			mu.Lock()
			attempts = append(attempts, m.Attempt)
			mu.Unlock()
			return fmt.Errorf("cannot handle %s", m.ID)
		}
		return good.handle(ctx, m)
	}
	const max = 4
	run(t, s, broker.Subscription{Topic: "bookings", Group: "billing", MaxAttempts: max, Concurrency: 2}, h)
	ctx := ctxT(t, 30*time.Second)
	if err := p.Publish(ctx, "bookings", broker.Message{ID: "bad", Key: "poison", Header: map[string]string{"trace-id": "t1"}}); err != nil {
		t.Fatal(err)
	}
	for i := range 50 {
		if err := p.Publish(ctx, "bookings", broker.Message{ID: fmt.Sprint("ok", i), Key: "fine"}); err != nil {
			t.Fatal(err)
		}
	}
	good.waitFor(t, 10*time.Second, ids("ok", 50)...)

	// The dead-letter queue of the group was declared with the subscription.
	dead := newCollector()
	run(t, s, broker.Subscription{Topic: "bookings.dlq", Group: "billing"}, dead.handle)
	dead.waitFor(t, 10*time.Second, "bad")
	m, _ := dead.get("bad")
	for k, v := range map[string]string{
		broker.HeaderOriginTopic: "bookings",
		broker.HeaderOriginKey:   "poison",
		broker.HeaderOriginGroup: "billing",
		broker.HeaderAttempts:    fmt.Sprint(max),
		broker.HeaderError:       "cannot handle bad",
		"trace-id":               "t1",
	} {
		if m.Header[k] != v {
			t.Errorf("header %s = %q, want %q", k, m.Header[k], v)
		}
	}
	if m.Key != "poison" {
		t.Errorf("dead letter key %q, want poison", m.Key)
	}
	if got := tries.Load(); got != max {
		t.Errorf("tried %d times, want %d", got, max)
	}
	mu.Lock()
	if fmt.Sprint(attempts) != "[1 2 3 4]" {
		t.Errorf("Attempt values %v, want [1 2 3 4]", attempts)
	}
	mu.Unlock()
	// The count follows the confirm that let the dead letter through.
	testenv.Eventually(t, 5*time.Second, "the dead letter to be counted", func() bool { return s.Stats().DeadLettered > 0 })
	if st := s.Stats(); st.DeadLettered != 1 || st.Retried != max-1 {
		t.Errorf("stats %+v: want 1 dead-lettered, %d retried", st, max-1)
	}
}

// TestQuorumAttempts: on quorum queues attempts count handler calls and
// dead-lettering works as on classic queues.
func TestQuorumAttempts(t *testing.T) {
	t.Parallel()
	_, url := testenv.VHost(t)
	p := newPublisher(t, url)
	s := newSubscriber(t, url, rabbitmq.WithQueueType(rabbitmq.Quorum))
	var mu sync.Mutex
	seen := map[string][]int{}
	done := newCollector()
	h := func(ctx context.Context, m broker.Message) error {
		mu.Lock()
		seen[m.ID] = append(seen[m.ID], m.Attempt)
		mu.Unlock()
		if m.ID == "retry" && m.Attempt < 3 {
			return errors.New("not yet")
		}
		if m.ID == "poison" {
			return errors.New("never")
		}
		return done.handle(ctx, m)
	}
	run(t, s, broker.Subscription{Topic: "q", Group: "g", MaxAttempts: 3}, h)
	dead := newCollector()
	run(t, s, broker.Subscription{Topic: "q.dlq", Group: "g"}, dead.handle)
	ctx := ctxT(t, 30*time.Second)
	if err := p.Publish(ctx, "q", broker.Message{ID: "retry"}, broker.Message{ID: "poison"}); err != nil {
		t.Fatal(err)
	}
	done.waitFor(t, 15*time.Second, "retry")
	dead.waitFor(t, 15*time.Second, "poison")
	mu.Lock()
	defer mu.Unlock()
	if fmt.Sprint(seen["retry"]) != "[1 2 3]" || fmt.Sprint(seen["poison"]) != "[1 2 3]" {
		t.Errorf("attempts %v, want [1 2 3] for both", seen)
	}
}

// TestQueueOptions: message TTL and max length dead-letter natively (x-death
// kept) into the dead-letter topic; single active consumer gives one member
// everything.
func TestQueueOptions(t *testing.T) {
	t.Parallel()
	_, url := testenv.VHost(t)
	p := newPublisher(t, url)
	ctx := ctxT(t, 30*time.Second)

	t.Run("TTL", func(t *testing.T) {
		// The dead letters must not expire too: they get a subscriber without TTL.
		s := newSubscriber(t, url, rabbitmq.WithMessageTTL(50*time.Millisecond), rabbitmq.WithoutDeadLetterQueue())
		plain := newSubscriber(t, url)
		dead := newCollector()
		run(t, plain, broker.Subscription{Topic: "ttl.expired", Group: "g"}, dead.handle)
		sub := broker.Subscription{Topic: "ttl", Group: "g", DeadLetterTopic: "ttl.expired"}
		if err := s.Provision(ctx, sub); err != nil {
			t.Fatal(err)
		}
		if err := p.Publish(ctx, "ttl", broker.Message{ID: "old", Key: "a.b"}); err != nil {
			t.Fatal(err)
		}
		dead.waitFor(t, 10*time.Second, "old")
		m, _ := dead.get("old")
		if d := xDeath(m); len(d) == 0 || d[0]["reason"] != "expired" || m.Key != "a.b" {
			t.Errorf("expired message: key %q, x-death %v", m.Key, d)
		}
	})
	t.Run("MaxLength", func(t *testing.T) {
		s := newSubscriber(t, url, rabbitmq.WithMaxLength(2))
		sub := broker.Subscription{Topic: "len", Group: "g"}
		if err := s.Provision(ctx, sub); err != nil {
			t.Fatal(err)
		}
		for i := range 5 {
			if err := p.Publish(ctx, "len", broker.Message{ID: fmt.Sprint("m", i)}); err != nil {
				t.Fatal(err)
			}
		}
		// Every Publish was confirmed, so the queue applied its limit to
		// all five already: holding two before anyone consumes, it dropped
		// the other three for good.
		ch := admin(t, url)
		testenv.Eventually(t, 10*time.Second, "the queue to hold its 2 messages", func() bool {
			info, err := ch.QueueDeclarePassive(rabbitmq.DefaultQueueName("len", "g"), true, false, false, false, nil)
			if err != nil {
				t.Fatal(err)
			}
			return info.Messages == 2
		})
		c := newCollector()
		run(t, s, sub, c.handle)
		c.waitFor(t, 10*time.Second, "m3", "m4")
		if n := c.unique(); n != 2 {
			t.Errorf("received %d messages from a queue of max length 2", n)
		}
	})
	t.Run("SingleActiveConsumer", func(t *testing.T) {
		a := newSubscriber(t, url, rabbitmq.WithSingleActiveConsumer())
		b := newSubscriber(t, url, rabbitmq.WithSingleActiveConsumer())
		ca, cb := newCollector(), newCollector()
		sub := broker.Subscription{Topic: "sac", Group: "g", Concurrency: 4}
		// Both consumers are registered (Ready) before anything is
		// published: one is active, the other waits.
		readyA, readyB := make(chan struct{}), make(chan struct{})
		subA, subB := sub, sub
		subA.Ready = func() { close(readyA) }
		subB.Ready = func() { close(readyB) }
		run(t, a, subA, ca.handle)
		run(t, b, subB, cb.handle)
		for _, ready := range []chan struct{}{readyA, readyB} {
			select {
			case <-ready:
			case <-ctx.Done():
				t.Fatal("a subscription did not become ready")
			}
		}
		for i := range 50 {
			if err := p.Publish(ctx, "sac", broker.Message{ID: fmt.Sprint("m", i)}); err != nil {
				t.Fatal(err)
			}
		}
		testenv.Eventually(t, 10*time.Second, "50 messages handled", func() bool { return ca.unique()+cb.unique() >= 50 })
		if ca.unique()+cb.unique() != 50 || (ca.unique() != 0 && cb.unique() != 0) {
			t.Errorf("single active consumer: members got %d and %d, want 50 and 0", ca.unique(), cb.unique())
		}
	})
	t.Run("ConflictingOptions", func(t *testing.T) {
		_, err := rabbitmq.NewSubscriber(ctx, url, rabbitmq.WithQueueType(rabbitmq.Quorum), rabbitmq.WithMaxPriority(5))
		if err == nil || !strings.Contains(err.Error(), "WithMaxPriority") {
			t.Errorf("quorum with priority: %v, want an error naming both options", err)
		}
	})
	t.Run("NonPositiveBackoff", func(t *testing.T) {
		// A negative first wait made the reconnect loop panic (rand.N) on the
		// first drop; zero made it and Subscribe's resume loop spin.
		for _, minWait := range []time.Duration{-time.Millisecond, 0} {
			_, err := rabbitmq.NewPublisher(ctx, url, rabbitmq.WithReconnectBackoff(minWait, time.Second))
			if err == nil || !strings.Contains(err.Error(), "WithReconnectBackoff") {
				t.Errorf("WithReconnectBackoff(%v, 1s): %v, want an error naming the option", minWait, err)
			}
		}
	})
}

// TestBadInput: each bad input is a clear error; the connection keeps working
// and confirmed messages are not lost.
func TestBadInput(t *testing.T) {
	t.Parallel()
	_, url := testenv.VHost(t)
	ctx := ctxT(t, 30*time.Second)

	t.Run("InvalidURL", func(t *testing.T) {
		_, err := rabbitmq.NewPublisher(ctx, "http://127.0.0.1:5672/")
		if err == nil || !strings.Contains(err.Error(), "invalid URL") {
			t.Errorf("NewPublisher with an http URL: %v", err)
		}
	})
	t.Run("WrongCredentials", func(t *testing.T) {
		u, _ := amqp.ParseURI(url)
		u.Password = "not-the-password"
		_, err := rabbitmq.NewSubscriber(ctx, u.String())
		if err == nil || !strings.Contains(err.Error(), "access refused") || strings.Contains(err.Error(), "not-the-password") {
			t.Errorf("wrong password: %v (want access refused, password hidden)", err)
		}
	})
	t.Run("UnknownVhost", func(t *testing.T) {
		u, _ := amqp.ParseURI(url)
		u.Vhost = "no-such-vhost-" + testenv.Name(t, "v")
		_, err := rabbitmq.NewPublisher(ctx, u.String())
		if err == nil || !strings.Contains(err.Error(), "unknown vhost") || !strings.Contains(err.Error(), u.Vhost) || strings.Contains(err.Error(), "guest:guest") {
			t.Errorf("unknown vhost: %v (want the cause and the vhost named, password hidden)", err)
		}
	})

	p := newPublisher(t, url, rabbitmq.WithMaxMessageSize(1024))
	s := newSubscriber(t, url)
	c := newCollector()
	run(t, s, broker.Subscription{Topic: "bad", Group: "g"}, c.handle)
	if err := p.Publish(ctx, "bad", broker.Message{ID: "confirmed-before"}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		m    broker.Message
		want string
	}{
		{"TooLarge", broker.Message{Payload: make([]byte, 2048)}, "2048 bytes"},
		{"NonUTF8Header", broker.Message{Header: map[string]string{"name": "caf\xe9"}}, `header "name"`},
		{"LongKey", broker.Message{Key: strings.Repeat("k", 300)}, "routing key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := p.Publish(ctx, "bad", tc.m)
			if !errors.Is(err, broker.ErrInvalidMessage) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Publish: %v, want ErrInvalidMessage naming %s", err, tc.want)
			}
		})
	}
	t.Run("InvalidPattern", func(t *testing.T) {
		err := s.Subscribe(ctx, broker.Subscription{Topic: "bad", Keys: []string{"a.#b"}}, c.handle)
		if !errors.Is(err, broker.ErrInvalidPattern) {
			t.Errorf("Subscribe with a bad pattern: %v", err)
		}
	})
	t.Run("PreconditionFailed", func(t *testing.T) {
		ch := admin(t, url)
		q := rabbitmq.DefaultQueueName("pre", "g")
		if _, err := ch.QueueDeclare(q, true, false, false, false, amqp.Table{"x-max-length": int64(7)}); err != nil {
			t.Fatal(err)
		}
		err := s.Subscribe(ctx, broker.Subscription{Topic: "pre", Group: "g"}, c.handle)
		if !errors.Is(err, broker.ErrInvalidSubscription) || !strings.Contains(err.Error(), "PRECONDITION_FAILED") || !strings.Contains(err.Error(), q) {
			t.Errorf("Subscribe onto a queue with other arguments: %v", err)
		}
		if err := s.Provision(ctx, broker.Subscription{Topic: "pre", Group: "g"}); !errors.Is(err, broker.ErrInvalidSubscription) {
			t.Errorf("Provision onto a queue with other arguments: %v", err)
		}
	})
	// The connection still works and nothing confirmed was lost.
	if err := p.Publish(ctx, "bad", broker.Message{ID: "confirmed-after"}); err != nil {
		t.Fatal(err)
	}
	c.waitFor(t, 10*time.Second, "confirmed-before", "confirmed-after")
	if err := p.Ping(ctx); err != nil {
		t.Errorf("Ping: %v", err)
	}
	if err := s.Ping(ctx); err != nil {
		t.Errorf("subscriber Ping: %v", err)
	}
}

// TestUnroutableAndDeletedExchange: with WithMandatory a message no queue
// receives is ErrUnroutable; an exchange deleted behind the publisher's back
// is declared again (so Publish recovers), and the lost bindings show up as
// ErrUnroutable rather than a silent success.
func TestUnroutableAndDeletedExchange(t *testing.T) {
	t.Parallel()
	_, url := testenv.VHost(t)
	p := newPublisher(t, url, rabbitmq.WithMandatory())
	plain := newPublisher(t, url)
	s := newSubscriber(t, url)
	ctx := ctxT(t, 30*time.Second)
	err := p.Publish(ctx, "nobody", broker.Message{ID: "lost", Key: "x"})
	if !errors.Is(err, broker.ErrUnroutable) {
		t.Fatalf("Publish with no queue bound: %v, want ErrUnroutable", err)
	}
	c := newCollector()
	run(t, s, broker.Subscription{Topic: "ex", Group: "g"}, c.handle)
	if err := p.Publish(ctx, "ex", broker.Message{ID: "one"}); err != nil {
		t.Fatal(err)
	}
	if err := plain.Publish(ctx, "ex", broker.Message{ID: "two"}); err != nil {
		t.Fatal(err)
	}
	c.waitFor(t, 10*time.Second, "one", "two")
	if err := admin(t, url).ExchangeDelete("ex", false, false); err != nil {
		t.Fatal(err)
	}
	if err := plain.Publish(ctx, "ex", broker.Message{ID: "three"}); err != nil {
		t.Errorf("Publish after the exchange was deleted: %v, want a transparent redeclare", err)
	}
	if err := p.Publish(ctx, "ex", broker.Message{ID: "four"}); !errors.Is(err, broker.ErrUnroutable) {
		t.Errorf("mandatory Publish after the exchange (and its bindings) was deleted: %v, want ErrUnroutable", err)
	}
	if st := plain.Stats(); st.Republished == 0 {
		t.Errorf("stats %+v: want a republish after the NOT_FOUND channel error", st)
	}
	if p.Conn() == nil {
		t.Error("Conn() is nil while connected")
	}
}

// TestSharedExchange: with WithExchange every topic goes through one exchange
// with the topic as routing-key prefix; keys, filters, isolation and
// dead-lettering behave as with one exchange per topic.
func TestSharedExchange(t *testing.T) {
	t.Parallel()
	_, url := testenv.VHost(t)
	opt := rabbitmq.WithExchange("events")
	p := newPublisher(t, url, opt)
	s := newSubscriber(t, url, opt)
	orders, dead := newCollector(), newCollector()
	fail := func(ctx context.Context, m broker.Message) error {
		if m.ID == "bad" {
			return broker.Permanent(errors.New("bad order"))
		}
		return orders.handle(ctx, m)
	}
	ctx := ctxT(t, 30*time.Second)
	sub := broker.Subscription{Topic: "orders", Group: "g", Keys: []string{"a.*", ""}, MaxAttempts: 2}
	if err := s.Provision(ctx, sub); err != nil {
		t.Fatal(err)
	}
	run(t, s, broker.Subscription{Topic: "orders.dlq", Group: "g"}, dead.handle)
	msgs := []broker.Message{{ID: "ab", Key: "a.b"}, {ID: "nokey"}, {ID: "abc", Key: "a.b.c"}, {ID: "bad", Key: "a.x"}}
	if err := p.Publish(ctx, "orders", msgs...); err != nil {
		t.Fatal(err)
	}
	if err := p.Publish(ctx, "users", broker.Message{ID: "user", Key: "a.b"}); err != nil {
		t.Fatal(err)
	}
	// Both Publish calls were confirmed, so routing is done: the queue,
	// not consumed yet, holds exactly what matched (ab, nokey, bad), and
	// nothing else can reach the handler later.
	ch := admin(t, url)
	queued := 0
	testenv.Eventually(t, 10*time.Second, "the orders queue to hold the 3 matching messages", func() bool {
		info, err := ch.QueueDeclarePassive(rabbitmq.DefaultQueueName("orders", "g"), true, false, false, false, nil)
		if err != nil {
			t.Fatal(err)
		}
		queued = info.Messages
		return queued >= 3
	})
	if queued != 3 {
		t.Errorf("the orders queue holds %d messages, want ab, nokey and bad only", queued)
	}
	run(t, s, sub, fail)
	orders.waitFor(t, 10*time.Second, "ab", "nokey")
	dead.waitFor(t, 10*time.Second, "bad")
	if n := orders.unique(); n != 2 {
		t.Errorf("orders got %d messages, want ab and nokey only", n)
	}
	if m, _ := orders.get("ab"); m.Key != "a.b" || m.Topic != "orders" {
		t.Errorf("key %q topic %q, want a.b on orders", m.Key, m.Topic)
	}
	if m, _ := dead.get("bad"); m.Key != "a.x" || m.Header[broker.HeaderOriginTopic] != "orders" {
		t.Errorf("dead letter key %q headers %v", m.Key, m.Header)
	}
}

// TestPropertiesRoundTrip: ID, key, time (to the nanosecond), priority and the
// property headers travel as AMQP properties and come back as they were.
func TestPropertiesRoundTrip(t *testing.T) {
	t.Parallel()
	_, url := testenv.VHost(t)
	p := newPublisher(t, url)
	s := newSubscriber(t, url, rabbitmq.WithMaxPriority(9))
	c := newCollector()
	run(t, s, broker.Subscription{Topic: "props", Group: "g"}, c.handle)
	when := time.Date(2026, 11, 26, 1, 2, 3, 456789012, time.UTC)
	hdr := map[string]string{
		rabbitmq.HeaderContentType:     "application/json",
		rabbitmq.HeaderContentEncoding: "gzip",
		rabbitmq.HeaderCorrelationID:   "corr-1",
		rabbitmq.HeaderReplyTo:         "replies",
		"traceparent":                  "00-abc-def-01",
	}
	if err := p.Publish(ctxT(t, 10*time.Second), "props", broker.Message{ID: "m1", Key: "a.b", Time: when, Priority: 7, Header: hdr, Payload: []byte("{}")}); err != nil {
		t.Fatal(err)
	}
	c.waitFor(t, 10*time.Second, "m1")
	m, _ := c.get("m1")
	d := m.Raw.(*amqp.Delivery)
	if d.ContentType != "application/json" || d.ContentEncoding != "gzip" || d.CorrelationId != "corr-1" || d.ReplyTo != "replies" ||
		d.MessageId != "m1" || d.RoutingKey != "a.b" || d.Priority != 7 || d.DeliveryMode != amqp.Persistent || !d.Timestamp.Equal(when.Truncate(time.Second)) {
		t.Errorf("AMQP properties %+v", d)
	}
	if _, ok := d.Headers[rabbitmq.HeaderContentType]; ok {
		t.Error("content-type travelled as a header too")
	}
	if !m.Time.Equal(when) || m.Priority != 7 || m.Key != "a.b" || m.Topic != "props" || m.Attempt != 1 {
		t.Errorf("message %+v", m)
	}
	for k, v := range hdr {
		if m.Header[k] != v {
			t.Errorf("header %s = %q, want %q", k, m.Header[k], v)
		}
	}
	if len(m.Header) != len(hdr) {
		t.Errorf("headers %v: want exactly %v (no bookkeeping headers)", m.Header, hdr)
	}
}

// TestDrainPeriod: when Subscribe's context ends, a running handler keeps its
// own context for the drain period (it is not cancelled at once), then it is
// cancelled; Subscribe returns after the handler did.
func TestDrainPeriod(t *testing.T) {
	t.Parallel()
	_, url := testenv.VHost(t)
	p := newPublisher(t, url)
	const drain = 300 * time.Millisecond
	s := newSubscriber(t, url, rabbitmq.WithDrainTimeout(drain))
	started := make(chan struct{})
	var cancelledAfter atomic.Int64
	var stoppedAt atomic.Int64
	h := func(ctx context.Context, m broker.Message) error {
		close(started)
		<-ctx.Done()
		cancelledAfter.Store(time.Now().UnixNano() - stoppedAt.Load())
		return ctx.Err()
	}
	stop := run(t, s, broker.Subscription{Topic: "drain", Group: "g", MaxAttempts: 1}, h)
	if err := p.Publish(ctxT(t, 10*time.Second), "drain", broker.Message{ID: "slow"}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-started:
	case <-time.After(10 * time.Second):
		t.Fatal("handler did not start")
	}
	stoppedAt.Store(time.Now().UnixNano())
	if err := stop(); err != nil {
		t.Fatalf("Subscribe: %v", err)
	}
	got := time.Duration(cancelledAfter.Load())
	if got < drain || got > drain+2*time.Second {
		t.Errorf("handler context cancelled %v after Subscribe's, want about %v", got, drain)
	}
	// A handler cancelled by the drain did not fail: its message is left to
	// the broker, not counted as an attempt (retried, or here dead-lettered).
	if st := s.Stats(); st.Retried != 0 || st.DeadLettered != 0 {
		t.Errorf("stats %+v: the message cut off by the drain was retried or dead-lettered", st)
	}
	ch := admin(t, url)
	for q, want := range map[string]int{rabbitmq.DefaultQueueName("drain", "g"): 1, rabbitmq.DefaultQueueName("drain.dlq", "g"): 0} {
		info, err := ch.QueueDeclarePassive(q, true, false, false, false, nil)
		if err != nil {
			t.Fatal(err)
		}
		if info.Messages != want {
			t.Errorf("queue %s holds %d messages, want %d", q, info.Messages, want)
		}
	}
}
