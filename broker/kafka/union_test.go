package kafka

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/go-integration/patterns/broker"
	"github.com/go-integration/patterns/internal/testenv"
)

// Two members of one group with different Keys: the group's bindings are
// the union, so every message matching either member's patterns is handled
// by the group (by either member); none is skipped and committed unhandled.
func TestKeysUnionWithinGroup(t *testing.T) {
	e := newEnv(t)
	topic := e.topic(4)
	sa, sb := e.subscriber(), e.subscriber()
	handled := newSeen()
	var per [2]atomic.Int64
	h := func(i int) broker.Handler {
		return func(_ context.Context, m broker.Message) error {
			per[i].Add(1)
			handled.add(m.ID)
			return nil
		}
	}
	readyA, readyB := make(chan struct{}), make(chan struct{})
	subscribe(t, sa, broker.Subscription{Topic: topic, Group: "g", Keys: []string{"a.*"}, Ready: func() { close(readyA) }}, h(0))
	<-readyA
	subscribe(t, sb, broker.Subscription{Topic: topic, Group: "g", Keys: []string{"b.*"}, Ready: func() { close(readyB) }}, h(1))
	<-readyB
	// Both members are in the group: wait until A's assignment carries the
	// union too (the rebalance that admitted B).
	testenv.Eventually(t, 20*time.Second, "both members to hold the union", func() bool {
		for _, s := range []*Subscriber{sa, sb} {
			r := onlyRun(t, s)
			if f := r.union.Load(); f == nil || len(f.pats) != 2 {
				return false
			}
		}
		return true
	})
	var msgs []broker.Message
	for i := range 10 {
		msgs = append(msgs,
			broker.Message{ID: fmt.Sprint("a", i), Key: fmt.Sprintf("a.%d", i), Payload: []byte("x")},
			broker.Message{ID: fmt.Sprint("b", i), Key: fmt.Sprintf("b.%d", i), Payload: []byte("x")},
			broker.Message{ID: fmt.Sprint("c", i), Key: fmt.Sprintf("c.%d", i), Payload: []byte("x")},
		)
	}
	if err := e.publisher().Publish(ctxT(t, 10*time.Second), topic, msgs...); err != nil {
		t.Fatal(err)
	}
	// A record no member's Keys match is counted as skipped when it is
	// dispatched: once all 10 are, none of them can still reach a handler.
	testenv.Eventually(t, 20*time.Second, "the group to handle all 20 matching messages and skip the 10 others", func() bool {
		return handled.unique() == 20 && sa.Stats().Skipped+sb.Stats().Skipped >= 10
	})
	for i := range 10 {
		if handled.has(fmt.Sprint("c", i)) {
			t.Errorf("c.%d matches no member's Keys but was handled", i)
		}
	}
	st := sa.Stats()
	stb := sb.Stats()
	if skipped := st.Skipped + stb.Skipped; skipped != 10 {
		t.Errorf("skipped %d, want the 10 c.* records", skipped)
	}
	t.Logf("member A (a.*) handled %d, member B (b.*) handled %d", per[0].Load(), per[1].Load())
}

// The union travels through the group protocol: members' patterns are
// decoded from JoinGroup metadata and prefixed to every assignment.
func TestKeysBalancerEncoding(t *testing.T) {
	var gotAll bool
	var got []string
	inner := kgo.CooperativeStickyBalancer()
	a := newKeysBalancer(inner, []string{"b.*", "a.*", "a.*"}, func(all bool, p []string) { gotAll, got = all, p })
	b := newKeysBalancer(inner, []string{"c.#"}, func(bool, []string) {})
	if a.ProtocolName() != "patterns-v1+cooperative-sticky" || !a.IsCooperative() {
		t.Fatalf("protocol %q cooperative %v", a.ProtocolName(), a.IsCooperative())
	}
	members := []kmsg.JoinGroupResponseMember{
		{MemberID: "a", ProtocolMetadata: a.JoinGroupMetadata([]string{"t"}, nil, 1)},
		{MemberID: "b", ProtocolMetadata: b.JoinGroupMetadata([]string{"t"}, nil, 1)},
	}
	// kgo's rack injection must not parse our metadata.
	var meta kmsg.ConsumerMemberMetadata
	if err := meta.ReadFrom(members[0].ProtocolMetadata); err == nil {
		t.Error("the prefixed metadata parses as ConsumerMemberMetadata")
	}
	mb, topics, err := a.MemberBalancer(members)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := topics["t"]; !ok {
		t.Fatalf("topics %v", topics)
	}
	into, err := mb.(kgo.GroupMemberBalancerOrError).BalanceOrError(map[string]int32{"t": 4})
	if err != nil {
		t.Fatal(err)
	}
	total := 0
	for _, as := range into.IntoSyncAssignment() {
		parts, err := a.ParseSyncAssignment(as.MemberAssignment)
		if err != nil {
			t.Fatal(err)
		}
		total += len(parts["t"])
		if gotAll || strings.Join(got, " ") != "a.* b.* c.#" {
			t.Errorf("union all=%v %v, want [a.* b.* c.#]", gotAll, got)
		}
	}
	if total != 4 {
		t.Errorf("%d partitions assigned, want 4", total)
	}
	// A member without Keys makes the union every key.
	c := newKeysBalancer(inner, nil, nil)
	members = append(members, kmsg.JoinGroupResponseMember{MemberID: "c", ProtocolMetadata: c.JoinGroupMetadata([]string{"t"}, nil, 1)})
	mb, _, err = a.MemberBalancer(members)
	if err != nil {
		t.Fatal(err)
	}
	into, _ = mb.(kgo.GroupMemberBalancerOrError).BalanceOrError(map[string]int32{"t": 4})
	if _, err := a.ParseSyncAssignment(into.IntoSyncAssignment()[0].MemberAssignment); err != nil || !gotAll {
		t.Errorf("union with a member without Keys: all=%v, %v", gotAll, err)
	}
	// A member of another library (no prefix) cannot be balanced.
	plain := kmsg.JoinGroupResponseMember{MemberID: "x", ProtocolMetadata: inner.JoinGroupMetadata([]string{"t"}, nil, 1)}
	if _, _, err := a.MemberBalancer([]kmsg.JoinGroupResponseMember{plain}); !errors.Is(err, errNoKeys) {
		t.Errorf("plain member: %v, want errNoKeys", err)
	}
}

// Invalid option arguments fail the constructor with ErrInvalidOption.
func TestInvalidOptions(t *testing.T) {
	bs := []string{"127.0.0.1:1"}
	for name, o := range map[string]SubscriberOption{
		"nil logger":           WithLogger(nil),
		"nil client option":    WithClientOptions(nil),
		"negative drain":       WithDrainTimeout(-time.Second),
		"zero commit":          WithCommitInterval(0),
		"backoff max < min":    WithRetryBackoff(time.Second, time.Millisecond),
		"zero backoff":         WithRetryBackoff(0, time.Second),
		"negative timeouts":    WithGroupTimeouts(-1, 0, 0),
		"heartbeat >= session": WithGroupTimeouts(time.Second, 0, time.Second),
		"tiny max message":     WithMaxMessageBytes(10),
		"bad start":            WithStartAt(AtOffsets(map[int32]int64{0: -1})),
		"negative partitions":  WithCreateTopics(Topic{Partitions: -1}),
		"nil tracer":           WithTracer(nil),
		"not a tracer":         WithTracer("tracer"),
	} {
		if _, err := NewSubscriber(bs, o); !errors.Is(err, ErrInvalidOption) {
			t.Errorf("%s: NewSubscriber = %v, want ErrInvalidOption", name, err)
		}
	}
	if _, err := NewPublisher(bs, WithTracer(42)); !errors.Is(err, ErrInvalidOption) || !strings.Contains(err.Error(), "WithTracer") {
		t.Errorf("NewPublisher(WithTracer(42)): %v, want ErrInvalidOption naming WithTracer", err)
	}
	if _, err := NewPublisher(bs, WithLinger(-time.Millisecond)); !errors.Is(err, ErrInvalidOption) {
		t.Errorf("negative Linger: %v, want ErrInvalidOption", err)
	}
	if _, err := NewAdmin(bs, WithLogger(nil)); !errors.Is(err, ErrInvalidOption) {
		t.Errorf("NewAdmin(WithLogger(nil)): %v, want ErrInvalidOption", err)
	}
	s, err := NewSubscriber(bs, WithLogger(slog.Default()), WithDrainTimeout(time.Second), nil)
	if err != nil {
		t.Fatalf("valid options: %v", err)
	}
	s.Close()
}

// The memory bound: the engine holds at most MaxInFlight records and the
// client one fetch response of at most FetchMaxBytes, whatever the
// backlog. Held records are sampled (received minus settled, plus the
// client's buffered records) and the heap in use is compared between a
// backlog of 20,000 and one of 100,000 records.
func TestMemoryBoundedByInFlight(t *testing.T) {
	if testing.Short() {
		t.Skip("publishes 120 MB")
	}
	e := newEnv(t)
	const inFlight, size = 1000, 1 << 10
	perFetch := DefaultFetchMaxBytes / size // records fitting in one fetch response
	measure := func(backlog int) (maxHeld int64, heap uint64) {
		topic := e.topic(4)
		p := e.publisher()
		batch := make([]broker.Message, 5000)
		// Incompressible payloads, distinct within a produce request:
		// FetchMaxBytes counts the bytes on the wire, and zeros would
		// compress a hundredfold.
		payloads := make([]byte, size*len(batch))
		for k := 0; k < len(payloads); k += 8 {
			binary.LittleEndian.PutUint64(payloads[k:], rand.Uint64())
		}
		began := time.Now()
		for i := 0; i < backlog; i += len(batch) {
			for j := range batch {
				batch[j] = broker.Message{Key: fmt.Sprint("k", (i+j)%256), Payload: payloads[j*size : (j+1)*size]}
			}
			if err := p.Publish(ctxT(t, 60*time.Second), topic, batch...); err != nil {
				t.Fatal(err)
			}
		}
		published := time.Since(began)
		// The heap is sampled right after a collection: without one,
		// HeapInuse also counts garbage the pacer lets grow with the
		// live heap, and that is mostly the in-process cluster's log.
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		base := ms.HeapInuse
		began = time.Now()

		s := e.subscriber()
		var received, settled atomic.Int64
		sub := broker.Subscription{Topic: topic, Group: "mem", Concurrency: 200, MaxInFlight: inFlight}
		stop := subscribe(t, s, sub, func(context.Context, broker.Message) error {
			time.Sleep(2 * time.Millisecond)
			settled.Add(1)
			return nil
		})
		// Held by the engine: consumed minus skipped (none) minus settled;
		// settled is counted just before the ack, so it never lags.
		r := onlyRun(t, s)
		var peakHeap uint64
		var mu sync.Mutex
		deadline := time.Now().Add(30 * time.Second)
		for settled.Load() < int64(backlog) {
			if time.Now().After(deadline) {
				t.Fatalf("backlog %d: handled %d in 30 s", backlog, settled.Load())
			}
			st := s.Stats()
			received.Store(int64(st.Received + st.Skipped))
			eng, buf := received.Load()-settled.Load(), r.cl.BufferedFetchRecords()
			held := eng + buf
			if held > int64(inFlight+perFetch) {
				t.Logf("backlog %d: engine holds %d, client buffers %d (%d bytes)", backlog, eng, buf, r.cl.BufferedFetchBytes())
			}
			runtime.GC()
			runtime.ReadMemStats(&ms)
			mu.Lock()
			maxHeld = max(maxHeld, held)
			if ms.HeapInuse > base {
				peakHeap = max(peakHeap, ms.HeapInuse-base)
			}
			mu.Unlock()
			time.Sleep(10 * time.Millisecond)
		}
		if err := stop(); err != nil {
			t.Fatal(err)
		}
		limit := int64(inFlight + perFetch)
		t.Logf("backlog %d (published in %v, consumed in %v): at most %d records held (limit %d = MaxInFlight %d + %d per fetch), heap in use at most %.1f MiB above the start", backlog, published.Round(time.Millisecond), time.Since(began).Round(time.Millisecond), maxHeld, limit, inFlight, perFetch, float64(peakHeap)/(1<<20))
		if maxHeld > limit {
			t.Errorf("backlog %d: %d records held, over MaxInFlight + one fetch = %d", backlog, maxHeld, limit)
		}
		return maxHeld, peakHeap
	}
	_, small := measure(20_000)
	_, large := measure(100_000)
	// A consumer that kept the backlog would hold some 80 MiB more with
	// the larger one; the allowance covers the in-process cluster's own
	// allocations, which the samples include.
	if large > small+16<<20 {
		t.Errorf("heap peak %.1f MiB with a backlog of 100,000 vs %.1f MiB with 20,000: memory grows with the backlog", float64(large)/(1<<20), float64(small)/(1<<20))
	}
}

// TestConcurrencyWithinOnePartition: Concurrency bounds handlers over keys,
// not partitions: 32 keys on a single partition run 8 at once.
func TestConcurrencyWithinOnePartition(t *testing.T) {
	e := newEnv(t)
	topic := e.topic(1)
	p := e.publisher()
	const conc = 8
	var running, peak atomic.Int32
	all := make(chan struct{})
	var once sync.Once
	var handled atomic.Int32
	finished := make(chan struct{})
	s := e.subscriber()
	stop := subscribe(t, s, broker.Subscription{Topic: topic, Group: "g", Concurrency: conc}, func(ctx context.Context, m broker.Message) error {
		n := running.Add(1)
		for {
			old := peak.Load()
			if n <= old || peak.CompareAndSwap(old, n) {
				break
			}
		}
		if n == conc {
			once.Do(func() { close(all) })
		}
		select {
		case <-all:
		case <-time.After(10 * time.Second):
		}
		running.Add(-1)
		if handled.Add(1) == 64 {
			close(finished)
		}
		return nil
	})
	msgs := make([]broker.Message, 64)
	for i := range msgs {
		msgs[i] = broker.Message{Key: fmt.Sprint("k", i%32), Payload: []byte("x")}
	}
	if err := p.Publish(ctxT(t, 30*time.Second), topic, msgs...); err != nil {
		t.Fatal(err)
	}
	select {
	case <-all:
	case <-time.After(30 * time.Second):
		t.Fatalf("at most %d handlers ran at once on one partition, want %d", peak.Load(), conc)
	}
	select {
	case <-finished:
	case <-time.After(30 * time.Second):
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if pk := peak.Load(); pk != conc || handled.Load() != 64 {
		t.Fatalf("peak %d handlers (want %d), handled %d of 64", pk, conc, handled.Load())
	}
}
