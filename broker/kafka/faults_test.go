package kafka

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-integration/patterns/broker"
	"github.com/go-integration/patterns/internal/testenv"
)

// seen records deliveries by message ID.
type seen struct {
	mu    sync.Mutex
	ids   map[string]int
	total int
}

func newSeen() *seen { return &seen{ids: map[string]int{}} }

func (s *seen) add(id string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ids[id]++
	s.total++
	return s.total
}

func (s *seen) unique() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.ids)
}

func (s *seen) has(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ids[id] > 0
}

func numbered(prefix string, n, keys, size int) []broker.Message {
	msgs := make([]broker.Message, n)
	payload := make([]byte, size)
	for i := range msgs {
		msgs[i] = broker.Message{ID: fmt.Sprintf("%s%d", prefix, i), Key: fmt.Sprintf("k%d", i%keys), Payload: payload}
	}
	return msgs
}

// onlyRun returns the receiver of the single Subscribe call running on s.
func onlyRun(t *testing.T, s *Subscriber) *receiver {
	t.Helper()
	var r *receiver
	testenv.Eventually(t, 10*time.Second, "the subscription to start", func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		for x := range s.recvs {
			r = x
		}
		return r != nil
	})
	return r
}

// A member that dies mid-stream without committing: the next member of the
// group gets every record the dead one had not committed (here: all of
// them, since it never committed), so nothing is lost.
func TestMemberCrashWithoutCommitLosesNothing(t *testing.T) {
	e := newEnv(t)
	topic := e.topic(4)
	p := e.publisher()
	const n = 2000
	if err := p.Publish(ctxT(t, 30*time.Second), topic, numbered("m", n, 32, 16)...); err != nil {
		t.Fatal(err)
	}
	sub := broker.Subscription{Topic: topic, Group: "crash", Concurrency: 4}

	a := e.subscriber(WithCommitInterval(time.Hour)) // never autocommits before the crash
	handledA := newSeen()
	crashed := make(chan struct{})
	var once sync.Once
	stopA := subscribe(t, a, sub, func(ctx context.Context, m broker.Message) error {
		if handledA.add(m.ID) == n/4 {
			once.Do(func() { close(crashed) })
		}
		return nil
	})
	r := onlyRun(t, a)
	select {
	case <-crashed:
	case <-time.After(30 * time.Second):
		t.Fatal("member A handled nothing")
	}
	r.kill()
	if err := stopA(); err != nil {
		t.Fatalf("Subscribe of the crashed member: %v", err)
	}

	b := e.subscriber()
	handledB := newSeen()
	subscribe(t, b, sub, func(ctx context.Context, m broker.Message) error {
		handledB.add(m.ID)
		return nil
	})
	testenv.Eventually(t, 30*time.Second, "member B to get every uncommitted record", func() bool { return handledB.unique() == n })
	t.Logf("member A handled %d records and crashed without committing; member B got all %d", handledA.unique(), handledB.unique())
	for id := range handledA.ids {
		if !handledB.has(id) {
			t.Fatalf("record %s handled by the crashed member was not redelivered", id)
		}
	}
}

// Two members share a group; a third joins in the middle of 50,000 records.
// Nothing is lost, and duplicates stay within what was in flight: revoked
// partitions are committed after their running handlers finish.
func TestRebalanceThirdMemberJoins(t *testing.T) {
	e := newEnv(t)
	topic := e.topic(8)
	p := e.publisher()
	const n = 50000
	const conc = 4
	sub := broker.Subscription{Topic: topic, Group: "rebalance", Concurrency: conc}
	s1, s2, s3 := e.subscriber(), e.subscriber(), e.subscriber()
	if err := s1.Provision(ctxT(t, 10*time.Second), sub); err != nil {
		t.Fatal(err)
	}
	all := newSeen()
	var per [3]atomic.Int64
	h := func(i int) broker.Handler {
		return func(ctx context.Context, m broker.Message) error {
			per[i].Add(1)
			all.add(m.ID)
			time.Sleep(20 * time.Microsecond) // keep the stream going while the group rebalances
			return nil
		}
	}
	subscribe(t, s1, sub, h(0))
	subscribe(t, s2, sub, h(1))

	// Publish concurrently with consumption, in chunks.
	pubDone := make(chan error, 1)
	go func() {
		msgs := numbered("m", n, 64, 64)
		for i := 0; i < n; i += 1000 {
			if err := p.Publish(context.Background(), topic, msgs[i:i+1000]...); err != nil {
				pubDone <- err
				return
			}
		}
		pubDone <- nil
	}()
	testenv.Eventually(t, 60*time.Second, "a fifth of the records", func() bool { return all.unique() >= n/5 })
	subscribe(t, s3, sub, h(2))
	if err := <-pubDone; err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 90*time.Second, "every record", func() bool { return all.unique() == n })
	// No duplicate can come after the group committed every partition to
	// its end: a partition's next owner starts there, and a member still
	// holding records of it would not have committed past them (handlers
	// count a record as they start, so a running one is counted already).
	testenv.Eventually(t, 30*time.Second, "the group to commit every record", func() bool {
		lag, err := e.admin.Lag(ctxT(t, 10*time.Second), sub.Group, topic)
		if err != nil || len(lag) != 8 {
			return false
		}
		for _, l := range lag {
			if l != 0 {
				return false
			}
		}
		return true
	})
	all.mu.Lock()
	dups := all.total - len(all.ids)
	all.mu.Unlock()
	t.Logf("%d records: members handled %d / %d / %d; %d duplicates", n, per[0].Load(), per[1].Load(), per[2].Load(), dups)
	if per[2].Load() == 0 {
		t.Errorf("the third member handled nothing: no rebalance took place")
	}
	if r := s1.Stats().Revoked + s2.Stats().Revoked; r == 0 {
		t.Errorf("no partition was revoked from the first two members")
	} else {
		t.Logf("%d partition revocations (second and third member joining)", r)
	}
	// A revoke handles what the member holds of the moving partitions and
	// commits before they move: duplicates come only from a commit that
	// failed, never more than a few handlers' worth.
	if dups > 3*conc {
		t.Errorf("%d duplicates, more than the %d handlers that can be in flight", dups, 3*conc)
	}
}

// A poison record with records behind it on the same partition: it is tried
// MaxAttempts times with backoff, dead-lettered with origin headers, and the
// records behind it are handled in order.
func TestPoisonRecordDeadLettered(t *testing.T) {
	e := newEnv(t)
	topic := e.topic(1)
	dlq := topic + ".dlq"
	p := e.publisher()
	s := e.subscriber(WithCreateTopics(Topic{Partitions: 1}))
	var msgs []broker.Message
	for i := range 20 {
		m := broker.Message{ID: fmt.Sprint("good", i), Key: "booking.42", Payload: []byte(strconv.Itoa(i))}
		if i == 5 {
			m = broker.Message{ID: "poison", Key: "booking.42", Payload: []byte("\x00garbage"), Header: map[string]string{"trace": "t1"}}
		}
		msgs = append(msgs, m)
	}
	if err := p.Publish(ctxT(t, 10*time.Second), topic, msgs...); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var order []string
	var attempts []int
	const max = 4
	stop := subscribe(t, s, broker.Subscription{Topic: topic, Group: "g", MaxAttempts: max}, func(ctx context.Context, m broker.Message) error {
		mu.Lock()
		defer mu.Unlock()
		if m.ID == "poison" {
			attempts = append(attempts, m.Attempt)
			return fmt.Errorf("cannot parse booking")
		}
		order = append(order, m.ID)
		return nil
	})
	testenv.Eventually(t, 20*time.Second, "the good records", func() bool { mu.Lock(); defer mu.Unlock(); return len(order) == 19 })
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	for i, id := range order {
		want := i
		if i >= 5 {
			want = i + 1
		}
		if id != fmt.Sprint("good", want) {
			t.Fatalf("handled order %v: position %d is %s", order, i, id)
		}
	}
	if fmt.Sprint(attempts) != "[1 2 3 4]" {
		t.Errorf("poison attempts %v, want [1 2 3 4]", attempts)
	}
	mu.Unlock()
	if st := s.Stats(); st.DeadLettered != 1 || st.Retried != max-1 || st.Handled != 19 {
		t.Errorf("stats %+v: want 1 dead-lettered, %d retried, 19 handled", st, max-1)
	}

	// Read the dead-letter topic from the start, without a group.
	r := e.subscriber(WithStartAt(Earliest()))
	got := make(chan broker.Message, 1)
	subscribe(t, r, broker.Subscription{Topic: dlq}, func(ctx context.Context, m broker.Message) error {
		got <- m
		return nil
	})
	var m broker.Message
	select {
	case m = <-got:
	case <-time.After(20 * time.Second):
		t.Fatal("nothing on the dead-letter topic")
	}
	want := map[string]string{
		broker.HeaderOriginTopic:     topic,
		broker.HeaderOriginKey:       "booking.42",
		broker.HeaderOriginGroup:     "g",
		broker.HeaderOriginPartition: "0",
		broker.HeaderOriginOffset:    "5",
		broker.HeaderAttempts:        strconv.Itoa(max),
		broker.HeaderError:           "cannot parse booking",
		"trace":                      "t1",
	}
	for k, v := range want {
		if m.Header[k] != v {
			t.Errorf("dead letter header %s = %q, want %q", k, m.Header[k], v)
		}
	}
	if _, err := time.Parse(time.RFC3339Nano, m.Header[broker.HeaderDeadLetteredAt]); err != nil {
		t.Errorf("header %s: %v", broker.HeaderDeadLetteredAt, err)
	}
	if m.ID != "poison" || string(m.Payload) != "\x00garbage" || m.Key != "booking.42" {
		t.Errorf("dead letter %+v", m)
	}
	lag, err := e.admin.Lag(ctxT(t, 10*time.Second), "g", topic)
	if err != nil || lag[0] != 0 {
		t.Errorf("lag after dead-lettering = %v, %v; want 0: the poison record must be committed", lag, err)
	}
}

// While a record backs off longer than the session timeout, the other keys
// (here on the other partition) go on, and the member keeps its partitions:
// heartbeats do not depend on handlers. The backing-off key's later records
// wait in the engine, within MaxInFlight.
func TestBackoffKeepsOtherKeysAndGroup(t *testing.T) {
	e := newEnv(t)
	topic := e.topic(2)
	slowKey, fastKey := "slow", ""
	slowPart := partitionOf(t, e, topic, slowKey)
	for i := 0; fastKey == ""; i++ {
		if k := fmt.Sprint("fast", i); partitionOf(t, e, topic, k) != slowPart {
			fastKey = k
		}
	}
	p := e.publisher()
	// 4 backoffs of up to 1.2 s (full jitter): about the 2 s session
	// timeout of quick() in all.
	s := e.subscriber(WithRetryBackoff(1200*time.Millisecond, 1200*time.Millisecond))
	handled := newSeen()
	var slowDoneAt, fastDoneAt atomic.Int64
	const slow, fast = 40, 200
	sub := broker.Subscription{Topic: topic, Group: "g", Concurrency: 2, MaxAttempts: 10, MaxInFlight: 64}
	if err := s.Provision(ctxT(t, 10*time.Second), sub); err != nil {
		t.Fatal(err)
	}
	subscribe(t, s, sub, func(ctx context.Context, m broker.Message) error {
		if strings.HasPrefix(m.ID, "probe-") {
			return nil
		}
		switch m.Key {
		case slowKey:
			if m.ID == "slow0" && m.Attempt < 5 {
				return fmt.Errorf("not yet")
			}
			if handled.add(m.ID); m.ID == fmt.Sprint("slow", slow-1) {
				slowDoneAt.Store(time.Now().UnixNano())
			}
		case fastKey:
			if handled.add(m.ID); m.ID == fmt.Sprint("fast", fast-1) {
				fastDoneAt.Store(time.Now().UnixNano())
			}
		}
		return nil
	})
	msgs := append(numbered("slow", slow, 1, 8), numbered("fast", fast, 1, 8)...)
	for i := range msgs {
		msgs[i].Key = slowKey
		if i >= slow {
			msgs[i].Key = fastKey
		}
	}
	if err := p.Publish(ctxT(t, 10*time.Second), topic, msgs...); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 30*time.Second, "every record", func() bool { return handled.unique() == slow+fast })
	if f, sl := fastDoneAt.Load(), slowDoneAt.Load(); f > sl {
		t.Errorf("the other partition finished %v after the backing-off one: it was blocked", time.Duration(f-sl))
	}
	st := s.Stats()
	if st.Revoked != 0 || st.Lost != 0 {
		t.Errorf("partitions revoked %d, lost %d during backoff: the member left the group", st.Revoked, st.Lost)
	}
	if st.Retried != 4 {
		t.Errorf("retried %d, want 4", st.Retried)
	}
}

// partitionOf returns the partition a record with key lands on, with Kafka's
// default partitioner, by producing a probe record (which subscriptions of the
// test ignore: its key is used only here).
func partitionOf(t *testing.T, e *env, topic, key string) int32 {
	t.Helper()
	p := e.publisher()
	rec := toRecord(topic, &broker.Message{ID: "probe-" + key, Key: key})
	res := p.Client().ProduceSync(ctxT(t, 10*time.Second), rec)
	if err := res.FirstErr(); err != nil {
		t.Fatal(err)
	}
	return res[0].Record.Partition
}

// A poison record too large for the dead-letter topic is dead-lettered
// without its payload (with a header saying so) instead of blocking.
func TestDeadLetterTooLargeDropsPayload(t *testing.T) {
	e := newEnv(t)
	topic := e.topic(1)
	dlq := topic + "_small_dlq"
	if err := e.admin.EnsureTopic(ctxT(t, 10*time.Second), Topic{Name: dlq, Partitions: 1, Config: map[string]string{"max.message.bytes": "2000"}}); err != nil {
		t.Fatal(err)
	}
	big := make([]byte, 20_000)
	_, _ = rand.Read(big)
	p := e.publisher()
	if err := p.Publish(ctxT(t, 10*time.Second), topic, broker.Message{ID: "big", Payload: big}, broker.Message{ID: "after"}); err != nil {
		t.Fatal(err)
	}
	s := e.subscriber()
	after := make(chan struct{})
	subscribe(t, s, broker.Subscription{Topic: topic, Group: "g", MaxAttempts: 1, DeadLetterTopic: dlq}, func(_ context.Context, m broker.Message) error {
		if m.ID == "big" {
			return errors.New("poison")
		}
		close(after)
		return nil
	})
	select {
	case <-after:
	case <-time.After(20 * time.Second):
		t.Fatal("the partition is blocked behind a dead letter too large for its topic")
	}
	r := e.subscriber(WithStartAt(Earliest()))
	got := make(chan broker.Message, 1)
	subscribe(t, r, broker.Subscription{Topic: dlq}, func(_ context.Context, m broker.Message) error {
		got <- m
		return nil
	})
	select {
	case m := <-got:
		if m.ID != "big" || m.Payload != nil || !strings.Contains(m.Header[HeaderPayloadDropped], "20000 bytes") || m.Header[broker.HeaderError] != "poison" {
			t.Errorf("dead letter %+v", m)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("no dead letter")
	}
}
