package kafka

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/go-integration/patterns/broker"
)

// EnsureTopic creates a topic with partitions, replication factor and
// retention, accepts it again unchanged, and reports each difference.
func TestEnsureTopic(t *testing.T) {
	e := newEnv(t)
	want := Topic{Name: testName(t), Partitions: 3, ReplicationFactor: 1, Retention: 2 * time.Hour, RetentionBytes: 1 << 20, CleanupPolicy: "delete"}
	ctx := ctxT(t, 10*time.Second)
	if err := e.admin.EnsureTopic(ctx, want); err != nil {
		t.Fatal(err)
	}
	rcs, err := e.admin.adm.DescribeTopicConfigs(ctx, want.Name)
	if err != nil {
		t.Fatal(err)
	}
	have := map[string]string{}
	for _, c := range rcs[0].Configs {
		if c.Value != nil {
			have[c.Key] = *c.Value
		}
	}
	for k, v := range map[string]string{"retention.ms": "7200000", "retention.bytes": "1048576", "cleanup.policy": "delete"} {
		if have[k] != v {
			t.Errorf("config %s = %q, want %q", k, have[k], v)
		}
	}
	if err := e.admin.EnsureTopic(ctx, want); err != nil {
		t.Errorf("EnsureTopic on the same topic again: %v", err)
	}
	other := want
	other.Partitions, other.Retention = 5, time.Hour
	err = e.admin.EnsureTopic(ctx, other)
	if !errors.Is(err, ErrTopicMismatch) || !strings.Contains(err.Error(), "partitions 3, want 5") || !strings.Contains(err.Error(), `retention.ms="7200000", want "3600000"`) {
		t.Errorf("EnsureTopic with other settings = %v, want ErrTopicMismatch naming partitions and retention.ms", err)
	}
	if err := e.admin.EnsureTopic(ctx, Topic{}); err == nil {
		t.Error("EnsureTopic without a name: no error")
	}
	if err := e.admin.DeleteTopic(ctx, want.Name); err != nil {
		t.Errorf("DeleteTopic: %v", err)
	}
}

// A compacted topic carries tombstones: a message with a nil Payload is a
// record with a null value.
func TestCompactedTopicTombstone(t *testing.T) {
	e := newEnv(t)
	topic := testName(t)
	ctx := ctxT(t, 10*time.Second)
	if err := e.admin.EnsureTopic(ctx, Topic{Name: topic, Partitions: 1, CleanupPolicy: "compact", Retention: -1}); err != nil {
		t.Fatal(err)
	}
	p := e.publisher()
	if err := p.Publish(ctx, topic,
		broker.Message{ID: "v1", Key: "user.1", Payload: []byte(`{"name":"a"}`)},
		broker.Message{ID: "gone", Key: "user.1", Payload: nil},
		broker.Message{ID: "empty", Key: "user.2", Payload: []byte{}},
	); err != nil {
		t.Fatal(err)
	}
	s := e.subscriber(WithStartAt(Earliest()))
	got := make(chan broker.Message, 3)
	subscribe(t, s, broker.Subscription{Topic: topic}, func(_ context.Context, m broker.Message) error {
		got <- m
		return nil
	})
	// Different keys run concurrently: index by ID.
	ms := map[string]broker.Message{}
	for range 3 {
		select {
		case m := <-got:
			ms[m.ID] = m
		case <-time.After(20 * time.Second):
			t.Fatalf("got %d messages, want 3", len(ms))
		}
	}
	if gone, ok := ms["gone"]; !ok || gone.Payload != nil || gone.Raw.(*kgo.Record).Value != nil {
		t.Errorf("tombstone arrived as %+v, want a nil Payload", gone)
	}
	if ms["v1"].Payload == nil || ms["empty"].Payload == nil {
		t.Errorf("a non-nil payload arrived as a tombstone: %+v %+v", ms["v1"], ms["empty"])
	}
}
