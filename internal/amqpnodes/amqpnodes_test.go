package amqpnodes

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
)

func TestDialAny(t *testing.T) {
	down := map[int]bool{2: true, 0: true}
	var tried []int
	dial := func(i int) (string, error) {
		tried = append(tried, i)
		if down[i] {
			return "", fmt.Errorf("node %d down", i)
		}
		return fmt.Sprint("conn", i), nil
	}
	c, i, errs := DialAny(context.Background(), 3, 2, dial)
	if c != "conn1" || i != 1 || errs != nil || !slices.Equal(tried, []int{2, 0, 1}) {
		t.Errorf("got %q, %d, %v after trying %v; want conn1 from node 1 after 2, 0, 1", c, i, errs, tried)
	}

	tried = nil
	down[1] = true
	_, _, errs = DialAny(context.Background(), 3, 1, dial)
	if len(errs) != 3 || errs[0].Error() != "node 1 down" || errs[2].Error() != "node 0 down" {
		t.Errorf("all down: errors %v, want one per node in the order tried", errs)
	}

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	tried = nil
	_, _, errs = DialAny(ctx, 3, 0, dial)
	if len(tried) != 1 || len(errs) != 1 || !errors.Is(ctx.Err(), context.Canceled) {
		t.Errorf("ended context: tried %v, want one attempt", tried)
	}
}

func TestRedact(t *testing.T) {
	for in, want := range map[string]string{
		// amqp091-go normalises: the default port is left out, the
		// default user (guest, password guest) filled in.
		"amqp://app:secret@host:5673/vh": "amqp://app:xxxxx@host:5673/vh",
		"amqp://host:5672/":              "amqp://guest:xxxxx@host/",
		"http://nope":                    "<invalid URL>",
	} {
		if got := Redact(in); got != want {
			t.Errorf("Redact(%q) = %q, want %q", in, got, want)
		}
	}
}
