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

// TestMain fails the run if the sender's Run loop, the test server or an idle
// connection outlives the program.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestRun(t *testing.T) {
	var out bytes.Buffer
	if err := run(context.Background(), &out); err != nil {
		t.Fatalf("run: %v\n%s", err, out.String())
	}
	want := []string{
		"sent msg_invoice_42 (invoice.paid) to 1 endpoint(s)",
		// the receiver's failure makes the sender retry, same webhook-id
		"attempt 1: 500, delivery pending",
		`receiver handled msg_invoice_42: {"invoice":42,"amount":100}`,
		"attempt 2: 204, delivery succeeded",
		// a replay of a genuine request is acknowledged but not handled
		"replayed request: 200 (webhook: duplicate message id (already handled)), handled again: false",
		// a changed body fails verification
		"tampered request: 401 (webhook: no matching signature",
		"Verify on the tampered body: ErrNoMatchingSignature=true",
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != len(want) {
		t.Fatalf("got %d lines, want %d:\n%s", len(lines), len(want), out.String())
	}
	for i, w := range want {
		if !strings.HasPrefix(lines[i], w) || strings.Contains(lines[i], "handled again: true") {
			t.Errorf("line %d = %q, want prefix %q", i+1, lines[i], w)
		}
	}
}

func TestRunCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := run(ctx, io.Discard); !errors.Is(err, context.Canceled) {
		t.Fatalf("run with a cancelled context: %v, want context.Canceled", err)
	}
}
