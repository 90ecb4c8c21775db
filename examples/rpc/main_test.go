package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestRun(t *testing.T) {
	var out bytes.Buffer
	if err := run(context.Background(), &out); err != nil {
		t.Fatalf("run: %v\n%s", err, out.String())
	}
	// The whole output is deterministic: backoff waits are not printed.
	const want = `GET /rooms/7
  attempt 1: 503, retry: true
  attempt 2: 503, retry: true
  attempt 3: 200, retry: false
  -> 200 {"room":7,"free":true}, replayed: false
POST /bookings
  attempt 1: 502, retry: true
  attempt 2: 201, retry: false
  -> 201 {"booking":"b-1"}, replayed: true
booking handler ran 1 time(s) for 2 requests with 1 Idempotency-Key(s)
`
	if got := out.String(); got != want {
		t.Errorf("output:\n%s\nwant:\n%s", got, want)
	}
}

func TestRunCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := run(ctx, io.Discard); !errors.Is(err, context.Canceled) {
		t.Fatalf("run with a cancelled context: %v, want context.Canceled", err)
	}
}
