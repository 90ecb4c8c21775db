package main

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/go-integration/patterns/internal/testenv"
	"github.com/go-integration/patterns/internal/testenv/kafkaenv"
)

// TestMain fails the run if a client, a consumer or the in-process cluster
// outlives the program.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestRun(t *testing.T) {
	if testenv.KafkaBrokers() != nil {
		kafkaenv.Brokers(t) // a real cluster: skip, or fail under INTEGRATION=required, when it does not answer
	}
	var out bytes.Buffer
	if err := run(context.Background(), &out); err != nil {
		t.Fatalf("run: %v\n%s", err, out.String())
	}
	// Keys hash to partitions with Kafka's murmur2 partitioner, so the whole
	// output is deterministic: each key's events in order, twice.
	const want = `published 9 events for 3 bookings to 3 partitions
billing: b-1 (partition 2) created -> paid -> checked-in
billing: b-2 (partition 0) created -> paid -> checked-in
billing: b-3 (partition 0) created -> paid -> checked-in
billing, replayed: b-1 (partition 2) created -> paid -> checked-in
billing, replayed: b-2 (partition 0) created -> paid -> checked-in
billing, replayed: b-3 (partition 0) created -> paid -> checked-in
`
	if got := out.String(); got != want {
		t.Errorf("output:\n%s\nwant:\n%s", got, want)
	}
}

func TestRunUnreachable(t *testing.T) {
	t.Setenv("KAFKA_BROKERS", "127.0.0.1:1")
	var out bytes.Buffer
	err := run(context.Background(), &out)
	if err == nil || !strings.Contains(err.Error(), "needs Kafka at 127.0.0.1:1: start it, or unset KAFKA_BROKERS") {
		t.Fatalf("run with unreachable brokers: %v", err)
	}
	if out.Len() != 0 {
		t.Errorf("printed before failing:\n%s", out.String())
	}
}
