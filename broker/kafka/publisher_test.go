package kafka

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/go-integration/patterns/broker"
	"github.com/go-integration/patterns/internal/testenv"
)

// murmur2 is Kafka's Java partitioner hash (org.apache.kafka.common.utils.Utils.murmur2).
func murmur2(data []byte) int32 {
	const seed, m, r = uint32(0x9747b28c), uint32(0x5bd1e995), 24
	n := len(data)
	h := seed ^ uint32(n)
	for i := 0; i+4 <= n; i += 4 {
		k := uint32(data[i]) | uint32(data[i+1])<<8 | uint32(data[i+2])<<16 | uint32(data[i+3])<<24
		k *= m
		k ^= k >> r
		k *= m
		h *= m
		h ^= k
	}
	tail := n &^ 3
	switch n % 4 {
	case 3:
		h ^= uint32(data[tail+2]) << 16
		fallthrough
	case 2:
		h ^= uint32(data[tail+1]) << 8
		fallthrough
	case 1:
		h ^= uint32(data[tail])
		h *= m
	}
	h ^= h >> 13
	h *= m
	h ^= h >> 15
	return int32(h)
}

// A message's key picks its partition as Java clients do, so producers in
// other languages keep one key on the same partition.
func TestKeyPartitionMatchesJava(t *testing.T) {
	// Test vectors from Kafka's UtilsTest.
	for s, want := range map[string]int32{"21": -973932308, "foobar": -790332482, "a-little-bit-long-string": -985981536, "a-little-bit-longer-string": -1486304829, "lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971, "abc": 479470107} {
		if got := murmur2([]byte(s)); got != want {
			t.Fatalf("murmur2(%q) = %d, want %d", s, got, want)
		}
	}
	e := newEnv(t)
	const parts = 7
	topic := e.topic(parts)
	p := e.publisher()
	var msgs []broker.Message
	for i := range 100 {
		msgs = append(msgs, broker.Message{ID: fmt.Sprint(i), Key: fmt.Sprintf("rentals.france.%d", i), Payload: []byte("x")})
	}
	if err := p.Publish(ctxT(t, 10*time.Second), topic, msgs...); err != nil {
		t.Fatal(err)
	}
	s := e.subscriber(WithStartAt(Earliest()))
	var mu sync.Mutex
	n := 0
	subscribe(t, s, broker.Subscription{Topic: topic, Concurrency: 4}, func(_ context.Context, m broker.Message) error {
		want := (murmur2([]byte(m.Key)) & 0x7fffffff) % parts
		if got := m.Raw.(*kgo.Record).Partition; got != want {
			t.Errorf("key %q on partition %d, Java would pick %d", m.Key, got, want)
		}
		mu.Lock()
		n++
		mu.Unlock()
		return nil
	})
	testenv.Eventually(t, 20*time.Second, "every message", func() bool { mu.Lock(); defer mu.Unlock(); return n == 100 })
}

// PublishAsync reports each acknowledgement to its callback.
func TestPublishAsync(t *testing.T) {
	e := newEnv(t)
	topic := e.topic(4)
	p := e.publisher()
	const n = 1000
	var wg sync.WaitGroup
	var mu sync.Mutex
	var errs []error
	ids := map[string]bool{}
	wg.Add(n)
	for i := range n {
		p.PublishAsync(context.Background(), topic, broker.Message{Key: fmt.Sprint("k", i%10), Payload: []byte("x")}, func(m broker.Message, err error) {
			mu.Lock()
			if err != nil {
				errs = append(errs, err)
			}
			ids[m.ID] = true
			mu.Unlock()
			wg.Done()
		})
	}
	wg.Wait()
	if len(errs) > 0 || len(ids) != n {
		t.Fatalf("%d errors (first %v), %d distinct IDs", len(errs), errs, len(ids))
	}
	if st := p.Stats(); st.Published != n || st.Failed != 0 || st.InFlight != 0 {
		t.Errorf("stats %+v", st)
	}
	lag, err := e.admin.Lag(ctxT(t, 10*time.Second), "nobody", topic)
	if err != nil {
		t.Fatal(err)
	}
	total := int64(0)
	for _, l := range lag {
		total += l
	}
	if total != n {
		t.Errorf("topic holds %d records, want %d", total, n)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	var got error
	p.PublishAsync(context.Background(), topic, broker.Message{}, func(_ broker.Message, err error) { got = err })
	if !errors.Is(got, broker.ErrClosed) {
		t.Errorf("PublishAsync after Close: %v, want ErrClosed", got)
	}
	if err := p.Ping(ctxT(t, time.Second)); err == nil {
		t.Error("Ping after Close: no error")
	}
}

func TestPing(t *testing.T) {
	e := newEnv(t)
	if err := e.publisher().Ping(ctxT(t, 5*time.Second)); err != nil {
		t.Error(err)
	}
	if err := e.subscriber().Ping(ctxT(t, 5*time.Second)); err != nil {
		t.Error(err)
	}
	if err := e.admin.Ping(ctxT(t, 5*time.Second)); err != nil {
		t.Error(err)
	}
}
