package main

import (
	"bytes"
	"context"
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
	for _, want := range []string{
		"billing got o-1 from /checkout, sent as v1: 4250 EUR cents\n",
		"dead letter com.example.order.placed after 1 attempt(s): permanent: event: upcast failed: com.example.order.placed from version 1",
		"billing: 1 handled, 1 dead-lettered\n",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
}
