package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

func TestTourRuns(t *testing.T) {
	var out bytes.Buffer
	if err := run(context.Background(), &out); err != nil {
		t.Fatalf("tour failed: %v\n%s", err, out.String())
	}
	for _, want := range []string{"french-concierge got rentals.france.nevache", "== Summary"} {
		if !strings.Contains(strings.Join(strings.Fields(out.String()), " "), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
}
