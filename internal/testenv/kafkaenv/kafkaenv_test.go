package kafkaenv

import (
	"context"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

func TestBrokersAnswer(t *testing.T) {
	bs := Brokers(t)
	cl, err := kgo.NewClient(kgo.SeedBrokers(bs...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := cl.Ping(ctx); err != nil {
		t.Fatalf("brokers %v: %v", bs, err)
	}
}

func TestUnreachableExternalSkipsOrFails(t *testing.T) {
	if err := reachable([]string{"127.0.0.1:1"}); err == nil {
		t.Fatal("port 1 answered")
	}
}
