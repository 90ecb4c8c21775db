package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestRun(t *testing.T) {
	var out bytes.Buffer
	if err := run(context.Background(), &out); err != nil {
		t.Fatalf("run: %v\n%s", err, out.String())
	}
	got := out.String()
	for _, want := range []string{
		// patterns: rentals.france.* gets the two French bookings only
		"france-concierge <- rentals.france.chamonix\n",
		"france-concierge <- rentals.france.nevache\n",
		// retry: the transient failure succeeds on the second call
		"partner-sync <- rentals.italy.bormio after 2 calls\n",
		// dead-letter: the failing message reaches bookings.dlq with its headers
		`ops <- dead letter rentals.italy.cortina from bookings/partner-sync, x-attempts=3, x-error="after 3 attempts: partner API: 503 Service Unavailable"`,
		"billing: 4 messages shared by its members",
		"every queue drained\n",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("output lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "france-concierge <- rentals.italy") {
		t.Errorf("rentals.france.* matched an Italian key:\n%s", got)
	}
	if strings.Contains(got, "partner-sync <- rentals.italy.cortina") || strings.Contains(got, "partner-sync <- rentals.france") {
		t.Errorf("partner-sync handled a message it should not have:\n%s", got)
	}
	// The group gets every message once, whichever member handles it.
	for _, key := range []string{"rentals.france.nevache", "rentals.france.chamonix", "rentals.italy.cortina", "rentals.italy.bormio"} {
		if n := strings.Count(got, "billing <- "+key+"\n"); n != 1 {
			t.Errorf("billing handled %s %d times, want 1:\n%s", key, n, got)
		}
	}
}

// A cancelled context ends the program with the context's error and leaves no
// goroutine behind (TestMain checks).
func TestRunCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := run(ctx, io.Discard); !errors.Is(err, context.Canceled) {
		t.Fatalf("run with a cancelled context: %v, want context.Canceled", err)
	}
}
