package brokertest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-integration/patterns/broker"
)

// waitFor bounds every wait for deliveries; generous because real brokers share CI machines.
const waitFor = 60 * time.Second

// Run runs the conformance suite against the adapter h describes.
func Run(t *testing.T, h Harness) {
	t.Helper()
	if h.New == nil {
		t.Fatal("brokertest: Harness.New is nil")
	}
	f := h.Features
	if f.MaxPayload == 0 {
		f.MaxPayload = 1 << 20
	}
	if f.Messages == 0 {
		f.Messages = 5000
	}
	s := &suite{h: h, f: f}
	tests := []struct {
		name string
		on   bool
		run  func(*testing.T)
	}{
		{"PublishSubscribe", true, s.testPublishSubscribe},
		{"InvalidInput", true, s.testInvalidInput},
		{"TopicIsolation", true, s.testTopicIsolation},
		{"RedeliveryAfterError", true, s.testRedeliveryAfterError},
		{"PanickingHandlerIsRedelivered", true, s.testPanicRedelivered},
		{"ConcurrentPublishSubscribe", true, s.testConcurrent},
		{"CloseIsIdempotentAndDrains", true, s.testCloseDrains},
		{"ErrorsAfterClose", true, s.testErrorsAfterClose},
		{"CancelSubscribeContext", true, s.testCancelSubscribe},
		{"ContinueAfterSubscriberClose", f.Persistent, s.testContinueAfterClose},
		{"ConsumerGroups", f.ConsumerGroups, s.testConsumerGroups},
		{"KeyFilter", f.KeyFilter, s.testKeyFilter},
		{"OrderPerKey", f.OrderPerKey, s.testOrderPerKey},
		{"DeadLetter", f.DeadLetter, s.testDeadLetter},
		{"Priority", f.Priority, s.testPriority},
		{"UnboundMessagesAndBindings", f.ConsumerGroups && f.KeyFilter, s.testUnbound},
		{"ReadyPrivateSubscription", true, s.testReadyPrivate},
		{"OrderPerKeyUnderRetries", f.OrderPerKey, s.testOrderPerKeyUnderRetries},
		{"ConcurrencyReached", true, s.testConcurrencyReached},
		{"KeysWithinGroup", f.ConsumerGroups && f.KeyFilter, s.testKeysWithinGroup},
		{"AttemptExactAcrossClose", f.Persistent, s.testAttemptExactAcrossClose},
		{"InvalidNames", true, s.testInvalidNames},
		{"PanicErrorValue", f.DeadLetter, s.testPanicErrorValue},
		{"TracePublish", true, s.testTracePublish},
		{"TraceProcessAndStats", f.DeadLetter, s.testTraceProcess},
		{"TraceEnabler", true, s.testTraceEnabler},
		{"AsyncOutcomes", true, s.testAsyncOutcomes},
		{"AsyncInvalid", true, s.testAsyncInvalid},
		{"AsyncClose", true, s.testAsyncClose},
		{"AsyncOrderPerKey", f.OrderPerKey, s.testAsyncOrderPerKey},
		{"AsyncCancelled", true, s.testAsyncCancelled},
		{"AsyncTrace", true, s.testAsyncTrace},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if !tt.on {
				t.Skip("feature switched off by the adapter's harness")
			}
			tt.run(t)
		})
	}
}

type suite struct {
	h Harness
	f Features
}

func (s *suite) new(t *testing.T) (broker.Publisher, broker.Subscriber) {
	t.Helper()
	p, sub := s.h.New(t)
	t.Cleanup(func() {
		_ = sub.Close()
		_ = p.Close()
	})
	return p, sub
}

// topic returns a fresh topic name for t, created through the harness when it needs that.
func (s *suite) topic(t *testing.T, suffix string) string {
	t.Helper()
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	name := strings.NewReplacer("/", "_", " ", "_").Replace(t.Name())
	if len(name) > 40 {
		name = name[len(name)-40:]
	}
	topic := "bt_" + strings.ToLower(name) + "_" + hex.EncodeToString(b) + suffix
	if s.h.CreateTopic != nil {
		s.h.CreateTopic(t, topic)
	}
	return topic
}

// subscribe provisions sub and runs Subscribe in the background until the test
// ends, and returns once the subscription is ready (s.Ready was called), so
// that every message published afterwards reaches it. It returns a cancel
// function and the running call, whose done channel is closed when Subscribe
// returned.
func subscribe(t *testing.T, sub broker.Subscriber, s broker.Subscription, h broker.Handler) (context.CancelFunc, *running) {
	t.Helper()
	provision(t, sub, s)
	ready := make(chan struct{})
	var once sync.Once
	callerReady := s.Ready
	s.Ready = func() {
		if callerReady != nil {
			callerReady()
		}
		once.Do(func() { close(ready) })
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{done: make(chan struct{})}
	go func() {
		r.err = sub.Subscribe(ctx, s, h)
		close(r.done)
	}()
	t.Cleanup(func() {
		cancel()
		if _, ok := r.wait(waitFor); !ok {
			t.Errorf("Subscribe did not return %v after its context was cancelled", waitFor)
		}
	})
	select {
	case <-ready:
	case <-r.done:
		select {
		case <-ready: // ready, then ended (a test closing it early)
		default:
			t.Fatalf("Subscribe(%s, group %q) returned %v before calling Subscription.Ready", s.Topic, s.Group, r.err)
		}
	case <-time.After(waitFor):
		t.Fatalf("Subscribe(%s, group %q) did not call Subscription.Ready within %v", s.Topic, s.Group, waitFor)
	}
	return cancel, r
}

// running is a Subscribe call in the background.
type running struct {
	done chan struct{}
	err  error
}

// wait waits up to d for Subscribe to return and reports what it returned.
func (r *running) wait(d time.Duration) (error, bool) {
	select {
	case <-r.done:
		return r.err, true
	case <-time.After(d):
		return nil, false
	}
}

func provision(t *testing.T, sub broker.Subscriber, s broker.Subscription) {
	t.Helper()
	if p, ok := sub.(broker.Provisioner); ok && s.Group != "" {
		ctx, cancel := context.WithTimeout(context.Background(), waitFor)
		defer cancel()
		if err := p.Provision(ctx, s); err != nil {
			t.Fatalf("Provision(%+v): %v", s, err)
		}
	}
}

func publish(t *testing.T, p broker.Publisher, topic string, msgs ...broker.Message) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	if err := p.Publish(ctx, topic, msgs...); err != nil {
		t.Fatalf("Publish to %s: %v", topic, err)
	}
}

// collector records deliveries by message ID.
type collector struct {
	mu    sync.Mutex
	seen  map[string]int
	msgs  []broker.Message
	total int
	ch    chan struct{}
}

func newCollector() *collector {
	return &collector{seen: make(map[string]int), ch: make(chan struct{}, 1)}
}

func (c *collector) handler(ctx context.Context, m broker.Message) error {
	c.add(m)
	return nil
}

func (c *collector) add(m broker.Message) {
	c.mu.Lock()
	if c.seen[m.ID] == 0 {
		c.msgs = append(c.msgs, m)
	}
	c.seen[m.ID]++
	c.total++
	c.mu.Unlock()
	select {
	case c.ch <- struct{}{}:
	default:
	}
}

func (c *collector) unique() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.seen)
}

func (c *collector) duplicates() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.total - len(c.seen)
}

// waitUnique waits until n distinct messages arrived.
func (c *collector) waitUnique(t *testing.T, n int) {
	t.Helper()
	deadline := time.After(waitFor)
	for c.unique() < n {
		select {
		case <-c.ch:
		case <-deadline:
			t.Fatalf("received %d distinct messages after %v, want %d", c.unique(), waitFor, n)
		}
	}
}

func (c *collector) byID() map[string]broker.Message {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]broker.Message, len(c.msgs))
	for _, m := range c.msgs {
		out[m.ID] = m
	}
	return out
}

// quiet asserts that nothing more than n distinct messages arrives for d.
func (c *collector) quiet(t *testing.T, n int, d time.Duration) {
	t.Helper()
	time.Sleep(d)
	if got := c.unique(); got != n {
		t.Fatalf("received %d distinct messages, want exactly %d", got, n)
	}
}

func (s *suite) testPublishSubscribe(t *testing.T) {
	p, sub := s.new(t)
	topic := s.topic(t, "")
	c := newCollector()
	subscribe(t, sub, broker.Subscription{Topic: topic, Group: "g"}, c.handler)

	big := make([]byte, s.f.MaxPayload)
	_, _ = rand.Read(big)
	when := time.Date(2026, 7, 14, 10, 30, 0, 0, time.UTC)
	sent := []broker.Message{
		{ID: "text", Key: "a.b", Payload: []byte("hello"), Header: map[string]string{"trace-id": "abc", "x-unicode": "ça marche ✓"}, Time: when},
		{ID: "binary", Key: "a.b", Payload: []byte{0, 1, 2, 0xff, 0xfe, 0x80, 0}, Header: map[string]string{"empty": ""}},
		{ID: "not-utf8", Key: "a.b", Payload: []byte("caf\xe9 \xc3\x28")},
		{ID: "empty", Key: "a.b", Payload: []byte{}},
		{ID: "big", Key: "a.b", Payload: big},
		{Key: "a.b", Payload: []byte("no id: Publish fills it")},
	}
	publish(t, p, topic, sent...)
	if sent[5].ID == "" {
		t.Fatal("Publish did not fill the empty ID")
	}
	c.waitUnique(t, len(sent))
	got := c.byID()
	for _, want := range sent {
		m, ok := got[want.ID]
		if !ok {
			t.Fatalf("message %q not received", want.ID)
		}
		if !bytes.Equal(m.Payload, want.Payload) {
			t.Errorf("%s: payload differs (%d bytes, want %d)", want.ID, len(m.Payload), len(want.Payload))
		}
		if m.Key != want.Key {
			t.Errorf("%s: key %q, want %q", want.ID, m.Key, want.Key)
		}
		for k, v := range want.Header {
			if got, ok := m.Header[k]; !ok {
				t.Errorf("%s: header %s missing, want %q", want.ID, k, v)
			} else if got != v {
				t.Errorf("%s: header %s = %q, want %q", want.ID, k, got, v)
			}
		}
		if m.Topic != topic {
			t.Errorf("%s: Topic %q, want %q", want.ID, m.Topic, topic)
		}
		if m.Attempt != 1 {
			t.Errorf("%s: Attempt %d, want 1", want.ID, m.Attempt)
		}
		if m.Time.IsZero() {
			t.Errorf("%s: zero Time on delivery", want.ID)
		}
	}
	if m := got["text"]; !m.Time.Equal(when) {
		t.Errorf("Time %v, want %v", m.Time, when)
	}
}

func (s *suite) testInvalidInput(t *testing.T) {
	p, sub := s.new(t)
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	ok := func(context.Context, broker.Message) error { return nil }
	topic := s.topic(t, "")
	cases := []struct {
		name string
		s    broker.Subscription
		h    broker.Handler
		want error
	}{
		{"empty topic", broker.Subscription{}, ok, broker.ErrInvalidSubscription},
		{"nil handler", broker.Subscription{Topic: topic}, nil, broker.ErrInvalidSubscription},
		{"negative concurrency", broker.Subscription{Topic: topic, Concurrency: -1}, ok, broker.ErrInvalidSubscription},
		{"negative MaxAttempts", broker.Subscription{Topic: topic, MaxAttempts: -1}, ok, broker.ErrInvalidSubscription},
		{"dead-letter topic is the topic", broker.Subscription{Topic: topic, MaxAttempts: 1, DeadLetterTopic: topic}, ok, broker.ErrInvalidSubscription},
		{"invalid pattern", broker.Subscription{Topic: topic, Keys: []string{"a.b*"}}, ok, broker.ErrInvalidPattern},
	}
	for _, c := range cases {
		if err := sub.Subscribe(ctx, c.s, c.h); !errors.Is(err, c.want) {
			t.Errorf("Subscribe with %s = %v, want %v", c.name, err, c.want)
		}
	}
	if err := p.Publish(ctx, "", broker.Message{Payload: []byte("x")}); !errors.Is(err, broker.ErrInvalidMessage) {
		t.Errorf("Publish to empty topic = %v, want ErrInvalidMessage", err)
	}
}

func (s *suite) testTopicIsolation(t *testing.T) {
	p, sub := s.new(t)
	a, b := s.topic(t, "_a"), s.topic(t, "_b")
	ca, cb := newCollector(), newCollector()
	subscribe(t, sub, broker.Subscription{Topic: a, Group: "g"}, ca.handler)
	subscribe(t, sub, broker.Subscription{Topic: b, Group: "g"}, cb.handler)
	publish(t, p, b, broker.Message{ID: "only-b", Payload: []byte("b")})
	publish(t, p, a, broker.Message{ID: "only-a", Payload: []byte("a")})
	ca.waitUnique(t, 1)
	cb.waitUnique(t, 1)
	ca.quiet(t, 1, 300*time.Millisecond)
	cb.quiet(t, 1, 0)
	if _, ok := ca.byID()["only-a"]; !ok {
		t.Fatal("topic a received the wrong message")
	}
	if _, ok := cb.byID()["only-b"]; !ok {
		t.Fatal("topic b received the wrong message")
	}
}

func (s *suite) testRedeliveryAfterError(t *testing.T) {
	p, sub := s.new(t)
	topic := s.topic(t, "")
	c := newCollector()
	var failures atomic.Int32
	h := func(ctx context.Context, m broker.Message) error {
		if m.Attempt == 1 {
			failures.Add(1)
			return errors.New("first attempt fails")
		}
		c.add(m)
		return nil
	}
	subscribe(t, sub, broker.Subscription{Topic: topic, Group: "g", Concurrency: 4}, h)
	const n = 20
	for i := range n {
		publish(t, p, topic, broker.Message{ID: fmt.Sprint("m", i), Key: fmt.Sprint("k", i%3), Payload: []byte("x")})
	}
	c.waitUnique(t, n)
	for id, m := range c.byID() {
		if m.Attempt != 2 {
			t.Errorf("%s handled at attempt %d after one failed attempt, want exactly 2", id, m.Attempt)
		}
	}
	if f := failures.Load(); f < n {
		t.Errorf("handler failed %d times, want at least %d", f, n)
	}
}

func (s *suite) testPanicRedelivered(t *testing.T) {
	p, sub := s.new(t)
	topic := s.topic(t, "")
	c := newCollector()
	h := func(ctx context.Context, m broker.Message) error {
		if m.Attempt == 1 {
			panic("handler bug")
		}
		c.add(m)
		return nil
	}
	subscribe(t, sub, broker.Subscription{Topic: topic, Group: "g"}, h)
	publish(t, p, topic, broker.Message{ID: "p", Payload: []byte("x")})
	c.waitUnique(t, 1)
}

func (s *suite) testConcurrent(t *testing.T) {
	p, sub := s.new(t)
	topic := s.topic(t, "")
	c := newCollector()
	subscribe(t, sub, broker.Subscription{Topic: topic, Group: "g", Concurrency: 8}, c.handler)
	n := s.f.Messages
	const publishers = 8
	var wg sync.WaitGroup
	errs := make(chan error, publishers)
	for w := range publishers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), waitFor)
			defer cancel()
			for i := w; i < n; i += publishers {
				m := broker.Message{ID: fmt.Sprint("m", i), Key: fmt.Sprint("k", i%64), Payload: []byte(strconv.Itoa(i))}
				if err := p.Publish(ctx, topic, m); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("Publish: %v", err)
	}
	c.waitUnique(t, n)
	t.Logf("%d messages from %d publishers: none lost, %d duplicates", n, publishers, c.duplicates())
}

func (s *suite) testCloseDrains(t *testing.T) {
	p, sub := s.new(t)
	topic := s.topic(t, "")
	started := make(chan struct{})
	release := make(chan struct{})
	var finished atomic.Bool
	var startOnce sync.Once
	ctxErr := make(chan error, 1)
	h := func(ctx context.Context, m broker.Message) error {
		startOnce.Do(func() { close(started) })
		<-release
		select {
		case ctxErr <- ctx.Err():
		default:
		}
		finished.Store(true)
		return nil
	}
	_, done := subscribe(t, sub, broker.Subscription{Topic: topic, Group: "g"}, h)
	publish(t, p, topic, broker.Message{ID: "slow", Payload: []byte("x")})
	select {
	case <-started:
	case <-time.After(waitFor):
		t.Fatal("handler never started")
	}
	closed := make(chan error, 1)
	go func() { closed <- sub.Close() }()
	select {
	case <-closed:
		t.Fatal("Close returned while a handler was still running")
	case <-time.After(200 * time.Millisecond):
	}
	close(release)
	select {
	case err := <-closed:
		if err != nil {
			t.Fatalf("Close: %v", err)
		}
	case <-time.After(waitFor):
		t.Fatal("Close did not return after the handler finished")
	}
	if !finished.Load() {
		t.Fatal("Close returned before the handler finished")
	}
	if err := <-ctxErr; err != nil {
		t.Errorf("the handler's context was cancelled while Close waited for it: %v", err)
	}
	if err, ok := done.wait(waitFor); !ok {
		t.Fatal("Subscribe did not return after Close")
	} else if !errors.Is(err, broker.ErrClosed) {
		t.Fatalf("Subscribe after Close returned %v, want ErrClosed", err)
	}
	if err := sub.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if !s.f.Persistent {
		return
	}
	// The drained message was acknowledged: the group's next member does not get it again.
	p2, sub2 := s.new(t) // p may be sub itself, closed now
	c := newCollector()
	subscribe(t, sub2, broker.Subscription{Topic: topic, Group: "g"}, c.handler)
	publish(t, p2, topic, broker.Message{ID: "next", Payload: []byte("y")})
	c.waitUnique(t, 1)
	time.Sleep(300 * time.Millisecond)
	if _, again := c.byID()["slow"]; again {
		t.Fatal("the message handled while Close drained was delivered again: it was not acknowledged")
	}
	c.quiet(t, 1, 0)
}

func (s *suite) testErrorsAfterClose(t *testing.T) {
	p, sub := s.new(t)
	topic := s.topic(t, "")
	if err := p.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := p.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	if err := p.Publish(ctx, topic, broker.Message{Payload: []byte("x")}); !errors.Is(err, broker.ErrClosed) {
		t.Fatalf("Publish after Close = %v, want ErrClosed", err)
	}
	if err := sub.Close(); err != nil {
		t.Fatalf("subscriber Close: %v", err)
	}
	err := sub.Subscribe(ctx, broker.Subscription{Topic: topic, Group: "g"}, func(context.Context, broker.Message) error { return nil })
	if !errors.Is(err, broker.ErrClosed) {
		t.Fatalf("Subscribe after Close = %v, want ErrClosed", err)
	}
}

func (s *suite) testCancelSubscribe(t *testing.T) {
	p, sub := s.new(t)
	topic := s.topic(t, "")
	c := newCollector()
	started := make(chan struct{})
	release := make(chan struct{})
	var startOnce, releaseOnce sync.Once
	ctxErr := make(chan error, 1)
	h := func(ctx context.Context, m broker.Message) error {
		if m.ID == "slow" {
			startOnce.Do(func() { close(started) })
			<-release
			select {
			case ctxErr <- ctx.Err():
			default:
			}
		}
		c.add(m)
		return nil
	}
	cancel, done := subscribe(t, sub, broker.Subscription{Topic: topic, Group: "g", Concurrency: 4}, h)
	t.Cleanup(func() { releaseOnce.Do(func() { close(release) }) }) // runs before subscribe's cleanup
	publish(t, p, topic, broker.Message{ID: "before", Payload: []byte("x")})
	c.waitUnique(t, 1)
	publish(t, p, topic, broker.Message{ID: "slow", Payload: []byte("x")})
	select {
	case <-started:
	case <-time.After(waitFor):
		t.Fatal("handler never started")
	}
	cancel()
	if _, ok := done.wait(200 * time.Millisecond); ok {
		t.Fatal("Subscribe returned after its context was cancelled while a handler was still running")
	}
	releaseOnce.Do(func() { close(release) })
	if err, ok := done.wait(waitFor); !ok {
		t.Fatal("Subscribe did not return after its context was cancelled")
	} else if err != nil {
		t.Fatalf("Subscribe returned %v after its context was cancelled, want nil", err)
	}
	if err := <-ctxErr; err != nil {
		t.Errorf("the handler's context was cancelled with Subscribe's, before it could finish: %v", err)
	}
	// The subscriber is still usable for new subscriptions, and the message
	// drained at cancellation was acknowledged.
	c2 := newCollector()
	subscribe(t, sub, broker.Subscription{Topic: topic, Group: "g"}, c2.handler)
	publish(t, p, topic, broker.Message{ID: "after", Payload: []byte("y")})
	c2.waitUnique(t, 1)
	time.Sleep(300 * time.Millisecond)
	if _, again := c2.byID()["slow"]; again {
		t.Fatal("the message handled while Subscribe drained was delivered again: it was not acknowledged")
	}
}

func (s *suite) testContinueAfterClose(t *testing.T) {
	p, sub := s.new(t)
	topic := s.topic(t, "")
	const n = 200
	c := newCollector()
	var handled atomic.Int32
	first := make(chan struct{})
	var once sync.Once
	h := func(ctx context.Context, m broker.Message) error {
		c.add(m)
		if handled.Add(1) >= n/4 {
			once.Do(func() { close(first) })
		}
		return nil
	}
	sn := broker.Subscription{Topic: topic, Group: "g", Concurrency: 2}
	cancel, done := subscribe(t, sub, sn, h)
	msgs := make([]broker.Message, n)
	for i := range msgs {
		msgs[i] = broker.Message{ID: fmt.Sprint("m", i), Key: fmt.Sprint("k", i%5), Payload: []byte("x")}
	}
	publish(t, p, topic, msgs...)
	select {
	case <-first:
	case <-time.After(waitFor):
		t.Fatal("first subscriber handled nothing")
	}
	cancel()
	if _, ok := done.wait(waitFor); !ok {
		t.Fatal("Subscribe did not return after its context was cancelled")
	}
	// A new subscriber of the same group (another connection) gets the rest.
	_, sub2 := s.new(t)
	subscribe(t, sub2, sn, c.handler)
	c.waitUnique(t, n)
	t.Logf("first subscriber handled %d, none lost, %d duplicates", handled.Load(), c.duplicates())
}

func (s *suite) testConsumerGroups(t *testing.T) {
	p, sub := s.new(t)
	_, sub2 := s.new(t)
	topic := s.topic(t, "")
	const n = 400
	var owner sync.Map // ID -> member that handled it
	var shared atomic.Int32
	mk := func(name string, c *collector) broker.Handler {
		return func(ctx context.Context, m broker.Message) error {
			if prev, loaded := owner.LoadOrStore(m.ID, name); loaded && prev != name {
				shared.Add(1)
			}
			time.Sleep(time.Millisecond) // let both members take part
			c.add(m)
			return nil
		}
	}
	m1, m2, other := newCollector(), newCollector(), newCollector()
	subscribe(t, sub, broker.Subscription{Topic: topic, Group: "workers"}, mk("m1", m1))
	subscribe(t, sub2, broker.Subscription{Topic: topic, Group: "workers"}, mk("m2", m2))
	subscribe(t, sub, broker.Subscription{Topic: topic, Group: "audit"}, other.handler)
	msgs := make([]broker.Message, n)
	for i := range msgs {
		msgs[i] = broker.Message{ID: fmt.Sprint("m", i), Key: fmt.Sprint("k", i%16), Payload: []byte("x")}
	}
	publish(t, p, topic, msgs...)
	other.waitUnique(t, n)
	deadline := time.Now().Add(waitFor)
	for m1.unique()+m2.unique()-int(shared.Load()) < n && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if got := m1.unique() + m2.unique() - int(shared.Load()); got != n {
		t.Fatalf("group members handled %d distinct messages together, want %d", got, n)
	}
	if d := shared.Load(); d > n/4 {
		t.Fatalf("%d of %d messages reached both members of one group: they do not compete", d, n)
	} else if d > 0 {
		t.Logf("%d messages reached both members (allowed only after a redelivery)", d)
	}
	if m1.unique() == 0 || m2.unique() == 0 {
		t.Logf("one member handled everything (m1=%d, m2=%d): competition not observed", m1.unique(), m2.unique())
	}
	t.Logf("members of one group shared %d messages as %d + %d; the other group got all %d", n, m1.unique(), m2.unique(), other.unique())
}

func (s *suite) testKeyFilter(t *testing.T) {
	p, sub := s.new(t)
	topic := s.topic(t, "")
	france, all, two := newCollector(), newCollector(), newCollector()
	subscribe(t, sub, broker.Subscription{Topic: topic, Group: "france", Keys: []string{"rentals.france.*"}}, france.handler)
	subscribe(t, sub, broker.Subscription{Topic: topic, Group: "all", Keys: []string{"rentals.#"}}, all.handler)
	// Two patterns that both match a key still deliver it once.
	subscribe(t, sub, broker.Subscription{Topic: topic, Group: "two", Keys: []string{"rentals.*.nevache", "rentals.france.#"}}, two.handler)
	keys := map[string][3]bool{ // france, all, two
		"rentals.france.nevache":       {true, true, true},
		"rentals.france.paris":         {true, true, true},
		"rentals.france":               {false, true, true},
		"rentals":                      {false, true, false},
		"rentals.italy.nevache":        {false, true, true},
		"rentals.france.nevache.extra": {false, true, true},
		"bookings.france.nevache":      {false, false, false},
	}
	want := [3]map[string]bool{{}, {}, {}}
	for k, w := range keys {
		publish(t, p, topic, broker.Message{ID: k, Key: k, Payload: []byte(k)})
		for i := range w {
			if w[i] {
				want[i][k] = true
			}
		}
	}
	for i, c := range []*collector{france, all, two} {
		c.waitUnique(t, len(want[i]))
	}
	time.Sleep(300 * time.Millisecond)
	for i, c := range []*collector{france, all, two} {
		got := c.byID()
		if len(got) != len(want[i]) {
			t.Errorf("subscription %d received %d keys, want %d: %v", i, len(got), len(want[i]), keysOf(got))
		}
		for k := range want[i] {
			if _, ok := got[k]; !ok {
				t.Errorf("subscription %d missed key %q", i, k)
			}
		}
		if d := c.duplicates(); d != 0 {
			t.Errorf("subscription %d received %d duplicates", i, d)
		}
	}
}

func keysOf(m map[string]broker.Message) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

func (s *suite) testOrderPerKey(t *testing.T) {
	p, sub := s.new(t)
	topic := s.topic(t, "")
	const keys, perKey = 16, 100
	var mu sync.Mutex
	last := make(map[string]int)
	running := make(map[string]int)
	var disorder, overlap atomic.Int32
	c := newCollector()
	h := func(ctx context.Context, m broker.Message) error {
		seq, _ := strconv.Atoi(string(m.Payload))
		mu.Lock()
		if prev, ok := last[m.Key]; ok && seq < prev {
			disorder.Add(1)
		}
		last[m.Key] = seq
		if running[m.Key]++; running[m.Key] > 1 {
			overlap.Add(1)
		}
		mu.Unlock()
		if seq%10 == 0 {
			// Widen the window in which a second handler of the key could start.
			time.Sleep(time.Millisecond)
		}
		mu.Lock()
		running[m.Key]--
		mu.Unlock()
		c.add(m)
		return nil
	}
	subscribe(t, sub, broker.Subscription{Topic: topic, Group: "g", Concurrency: 8}, h)
	var wg sync.WaitGroup
	errs := make(chan error, keys)
	for k := range keys {
		wg.Add(1)
		go func() { // one publisher per key keeps its order; keys interleave
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), waitFor)
			defer cancel()
			for i := range perKey {
				m := broker.Message{ID: fmt.Sprintf("k%d-%d", k, i), Key: fmt.Sprintf("k%d", k), Payload: []byte(strconv.Itoa(i))}
				if err := p.Publish(ctx, topic, m); err != nil {
					errs <- err // t.Fatal belongs to the test's goroutine
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("Publish: %v", err)
	}
	c.waitUnique(t, keys*perKey)
	if d := disorder.Load(); d > 0 {
		t.Errorf("%d messages arrived before an earlier message of their key", d)
	}
	if o := overlap.Load(); o > 0 {
		t.Errorf("%d messages were handled while another message of their key was still being handled", o)
	}
}

func (s *suite) testDeadLetter(t *testing.T) {
	p, sub := s.new(t)
	topic := s.topic(t, "")
	dlq := s.topic(t, ".dlq")
	dead := newCollector()
	provision(t, sub, broker.Subscription{Topic: dlq, Group: "dlq"})
	good := newCollector()
	var poisonTries atomic.Int32
	h := func(ctx context.Context, m broker.Message) error {
		if m.Key == "poison" {
			poisonTries.Add(1)
			return errors.New("cannot parse booking")
		}
		good.add(m)
		return nil
	}
	const attempts = 3
	subscribe(t, sub, broker.Subscription{Topic: topic, Group: "g", MaxAttempts: attempts, DeadLetterTopic: dlq}, h)
	publish(t, p, topic, broker.Message{ID: "bad", Key: "poison", Payload: []byte("\x00garbage"), Header: map[string]string{"trace-id": "t1"}})
	for i := range 10 {
		publish(t, p, topic, broker.Message{ID: fmt.Sprint("good", i), Key: "poison-neighbour", Payload: []byte("ok")})
	}
	good.waitUnique(t, 10)
	subscribe(t, sub, broker.Subscription{Topic: dlq, Group: "dlq"}, dead.handler)
	dead.waitUnique(t, 1)
	m := dead.byID()["bad"]
	if !bytes.Equal(m.Payload, []byte("\x00garbage")) {
		t.Errorf("dead-lettered payload %q", m.Payload)
	}
	checks := map[string]string{
		broker.HeaderOriginTopic: topic,
		broker.HeaderOriginKey:   "poison",
		broker.HeaderAttempts:    strconv.Itoa(attempts),
		broker.HeaderOriginGroup: "g",
		"trace-id":               "t1",
	}
	for k, v := range checks {
		if m.Header[k] != v {
			t.Errorf("dead-letter header %s = %q, want %q", k, m.Header[k], v)
		}
	}
	if !strings.Contains(m.Header[broker.HeaderError], "cannot parse booking") {
		t.Errorf("dead-letter header %s = %q, want the handler's error", broker.HeaderError, m.Header[broker.HeaderError])
	}
	if n := poisonTries.Load(); n != attempts {
		t.Errorf("poison message tried %d times, want %d", n, attempts)
	}

	// A permanent error skips the remaining attempts.
	permanent := func(ctx context.Context, m broker.Message) error {
		return broker.Permanent(errors.New("schema violation"))
	}
	topic2 := s.topic(t, "_perm")
	subscribe(t, sub, broker.Subscription{Topic: topic2, Group: "g", MaxAttempts: 5, DeadLetterTopic: dlq}, permanent)
	publish(t, p, topic2, broker.Message{ID: "perm", Key: "x", Payload: []byte("y")})
	dead.waitUnique(t, 2)
	if got := dead.byID()["perm"].Header[broker.HeaderAttempts]; got != "1" {
		t.Errorf("permanent failure dead-lettered after %s attempts, want 1", got)
	}

	// MaxAttempts alone dead-letters to Topic+".dlq", and the dead letter is
	// kept there for the subscription's group although nobody subscribed to
	// that topic before.
	topic3 := s.topic(t, "_default")
	if s.h.CreateTopic != nil {
		s.h.CreateTopic(t, topic3+".dlq")
	}
	subscribe(t, sub, broker.Subscription{Topic: topic3, Group: "g", MaxAttempts: 1}, permanent)
	publish(t, p, topic3, broker.Message{ID: "default", Key: "x", Payload: []byte("z")})
	kept := newCollector()
	time.Sleep(300 * time.Millisecond) // let it be dead-lettered before anyone reads the dead-letter topic
	subscribe(t, sub, broker.Subscription{Topic: topic3 + ".dlq", Group: "g"}, kept.handler)
	kept.waitUnique(t, 1)
	if got := kept.byID()["default"].Header[broker.HeaderOriginTopic]; got != topic3 {
		t.Errorf("dead letter in %s.dlq has origin topic %q, want %q", topic3, got, topic3)
	}
}

func (s *suite) testPriority(t *testing.T) {
	p, sub := s.new(t)
	topic := s.topic(t, "")
	sn := broker.Subscription{Topic: topic, Group: "g"}
	provision(t, sub, sn)
	if _, ok := sub.(broker.Provisioner); !ok {
		t.Skip("priority test needs a Provisioner to queue messages before consuming")
	}
	for i := range 5 {
		publish(t, p, topic, broker.Message{ID: fmt.Sprint("low", i), Payload: []byte("low")})
	}
	publish(t, p, topic, broker.Message{ID: "high", Payload: []byte("high"), Priority: 9})
	var mu sync.Mutex
	var order []string
	c := newCollector()
	subscribe(t, sub, sn, func(ctx context.Context, m broker.Message) error {
		mu.Lock()
		order = append(order, m.ID)
		mu.Unlock()
		c.add(m)
		return nil
	})
	c.waitUnique(t, 6)
	mu.Lock()
	defer mu.Unlock()
	if order[0] != "high" {
		t.Fatalf("delivery order %v: the high-priority message was not first", order)
	}
}
