package kafka

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/go-integration/patterns/broker"
	"github.com/go-integration/patterns/internal/testenv"
)

func TestPublishSubscribeGroup(t *testing.T) {
	e := newEnv(t)
	topic := e.topic(4)
	p := e.publisher()
	s := e.subscriber()
	sub := broker.Subscription{Topic: topic, Group: "g1", Concurrency: 4}
	if err := s.Provision(ctxT(t, 10*time.Second), sub); err != nil {
		t.Fatal(err)
	}
	sent := broker.Message{Key: "rentals.france", Payload: []byte{0, 0xff, 'x'}, Header: map[string]string{"trace": "abc"}, Time: time.UnixMilli(1700000000123)}
	if err := p.Publish(ctxT(t, 10*time.Second), topic, sent); err != nil {
		t.Fatal(err)
	}
	got := make(chan broker.Message, 1)
	stop := subscribe(t, s, sub, func(ctx context.Context, m broker.Message) error {
		got <- m
		return nil
	})
	var m broker.Message
	select {
	case m = <-got:
	case <-time.After(20 * time.Second):
		t.Fatal("no message")
	}
	if m.Key != sent.Key || !bytes.Equal(m.Payload, sent.Payload) || m.Header["trace"] != "abc" || !m.Time.Equal(sent.Time) || m.Topic != topic || m.Attempt != 1 || m.ID == "" {
		t.Errorf("got %+v", m)
	}
	if _, ok := m.Raw.(*kgo.Record); !ok {
		t.Errorf("Raw is %T", m.Raw)
	}
	if err := stop(); err != nil {
		t.Errorf("Subscribe after cancel = %v, want nil", err)
	}
	lag, err := e.admin.Lag(ctxT(t, 10*time.Second), "g1", topic)
	if err != nil {
		t.Fatal(err)
	}
	for part, l := range lag {
		if l != 0 {
			t.Errorf("partition %d lag %d after handling, want 0 (commit on stop)", part, l)
		}
	}
}

func TestOrderPerPartitionWithConcurrency(t *testing.T) {
	e := newEnv(t)
	topic := e.topic(4)
	p := e.publisher()
	s := e.subscriber()
	const keys, per = 16, 200
	var msgs []broker.Message
	for i := range per {
		for k := range keys {
			msgs = append(msgs, broker.Message{Key: fmt.Sprintf("k%d", k), Payload: []byte(fmt.Sprint(i))})
		}
	}
	if err := p.Publish(ctxT(t, 20*time.Second), topic, msgs...); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	seen := map[string][]string{}
	n := 0
	subscribe(t, s, broker.Subscription{Topic: topic, Group: "g", Concurrency: 8}, func(ctx context.Context, m broker.Message) error {
		mu.Lock()
		defer mu.Unlock()
		seen[m.Key] = append(seen[m.Key], string(m.Payload))
		n++
		return nil
	})
	testenv.Eventually(t, 30*time.Second, "all messages", func() bool { mu.Lock(); defer mu.Unlock(); return n >= keys*per })
	mu.Lock()
	defer mu.Unlock()
	for k, vs := range seen {
		for i, v := range vs {
			if v != fmt.Sprint(i) {
				t.Fatalf("key %s: message %d is %s: order broken", k, i, v)
			}
		}
	}
}
