package kafka

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/go-integration/patterns/broker"
	"github.com/go-integration/patterns/internal/testenv"
)

// kafkaTracer records rebalance events and publish spans.
type kafkaTracer struct {
	mu        sync.Mutex
	rebalance []TraceRebalanceData
	starts    []broker.TracePublishStartData
	ends      []broker.TracePublishEndData
	endCtxOK  []bool
}

type spanKey struct{}

func (k *kafkaTracer) TraceRebalance(_ context.Context, d TraceRebalanceData) {
	k.mu.Lock()
	defer k.mu.Unlock()
	d.Partitions = slices.Clone(d.Partitions)
	k.rebalance = append(k.rebalance, d)
}

func (k *kafkaTracer) TracePublishStart(ctx context.Context, d broker.TracePublishStartData) context.Context {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.starts = append(k.starts, d)
	for i := range d.Messages {
		d.Header(i)["traceparent"] = "span"
	}
	return context.WithValue(ctx, spanKey{}, true)
}

func (k *kafkaTracer) TracePublishEnd(ctx context.Context, d broker.TracePublishEndData) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.ends = append(k.ends, d)
	k.endCtxOK = append(k.endCtxOK, ctx.Value(spanKey{}) != nil)
}

func (k *kafkaTracer) events() []TraceRebalanceData {
	k.mu.Lock()
	defer k.mu.Unlock()
	return slices.Clone(k.rebalance)
}

// TestRebalanceTracer: a group member's RebalanceTracer is told of its
// assignment and, when Subscribe stops, of the revocation, with the topic,
// group and partitions.
func TestRebalanceTracer(t *testing.T) {
	e := newEnv(t)
	topic := e.topic(3)
	tr := &kafkaTracer{}
	s := e.subscriber(WithTracer(tr))
	stop := subscribe(t, s, broker.Subscription{Topic: topic, Group: "traced"}, func(context.Context, broker.Message) error { return nil })
	testenv.Eventually(t, 20*time.Second, "the assignment", func() bool { return len(tr.events()) > 0 })
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	evs := tr.events()
	first := evs[0]
	slices.Sort(first.Partitions)
	if first.Event != PartitionsAssigned || first.Topic != topic || first.Group != "traced" || !slices.Equal(first.Partitions, []int32{0, 1, 2}) {
		t.Errorf("first event %+v (%s), want all 3 partitions assigned", first, first.Event)
	}
	last := evs[len(evs)-1]
	if last.Event != PartitionsRevoked || len(last.Partitions) != 3 {
		t.Errorf("last event %+v (%s), want the 3 partitions revoked on stop", last, last.Event)
	}
	if st := s.Stats(); st.Revoked != 0 {
		t.Errorf("stats %+v: a revoke on stop is not counted as a rebalance", st)
	}
}

// TestPublishAsyncTraced: PublishAsync is traced as a Publish of one
// message: Start before sending (what the tracer adds to the Header is
// sent), End from the completion, before done, in the context Start
// returned, with the error of a refused call.
func TestPublishAsyncTraced(t *testing.T) {
	e := newEnv(t)
	topic := e.topic(1)
	tr := &kafkaTracer{}
	p := e.publisher(WithTracer(tr))
	got := make(chan broker.Message, 1)
	ended := make(chan int, 2)
	done := func(m broker.Message, err error) {
		tr.mu.Lock()
		ended <- len(tr.ends)
		tr.mu.Unlock()
		if err == nil {
			got <- m
		}
	}
	p.PublishAsync(context.Background(), topic, broker.Message{Key: "k", Payload: []byte("x")}, done)
	select {
	case m := <-got:
		if m.Header["traceparent"] != "span" || m.ID == "" {
			t.Errorf("done got %+v: want the traced message", m)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("PublishAsync did not complete")
	}
	p.PublishAsync(context.Background(), "bad topic!", broker.Message{}, done)
	for i := 1; i <= 2; i++ {
		if n := <-ended; n != i {
			t.Errorf("done of call %d ran after %d TracePublishEnd calls, want End first", i, n)
		}
	}
	tr.mu.Lock()
	defer tr.mu.Unlock()
	if len(tr.starts) != 2 || tr.starts[0].System != "kafka" || tr.starts[0].Topic != topic || len(tr.starts[0].Messages) != 1 {
		t.Errorf("TracePublishStart calls %+v", tr.starts)
	}
	if len(tr.ends) != 2 || tr.ends[0].Err != nil || !errors.Is(tr.ends[1].Err, broker.ErrInvalidMessage) || !tr.endCtxOK[0] || !tr.endCtxOK[1] {
		t.Errorf("TracePublishEnd calls %+v (context from Start: %v)", tr.ends, tr.endCtxOK)
	}
	if st := p.Stats(); st != (broker.PublisherStats{Published: 1, Failed: 1}) {
		t.Errorf("stats %+v", st)
	}

	// The header reached Kafka.
	rec := make(chan broker.Message, 1)
	s := e.subscriber(WithStartAt(Earliest()))
	stop := subscribe(t, s, broker.Subscription{Topic: topic, Group: "reader"}, func(_ context.Context, m broker.Message) error {
		select {
		case rec <- m:
		default:
		}
		return nil
	})
	defer stop()
	select {
	case m := <-rec:
		if m.Header["traceparent"] != "span" {
			t.Errorf("consumed %+v: the tracer's header was not sent", m)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("nothing consumed")
	}
}
