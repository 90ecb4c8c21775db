package hooks

import (
	"context"
	"strings"
	"testing"
)

type startTracer interface {
	TraceStart(ctx context.Context) context.Context
}
type pointTracer interface{ TracePoint(ctx context.Context) }

type both struct{}

func (both) TraceStart(ctx context.Context) context.Context { return ctx }
func (both) TracePoint(context.Context)                     {}

type point struct{}

func (point) TracePoint(context.Context) {}

type misspelt struct{}

func (misspelt) TracePiont(context.Context) {}

func TestPickAndCheck(t *testing.T) {
	ts := []any{both{}, point{}}
	if n := len(Pick[startTracer](ts)); n != 1 {
		t.Fatalf("Pick start = %d, want 1", n)
	}
	if n := len(Pick[pointTracer](ts)); n != 2 {
		t.Fatalf("Pick point = %d, want 2", n)
	}
	checks := []func(any) bool{Is[startTracer](), Is[pointTracer]()}
	if err := Check(point{}, "startTracer, pointTracer", checks...); err != nil {
		t.Fatal(err)
	}
	err := Check(misspelt{}, "startTracer, pointTracer", checks...)
	if err == nil || !strings.Contains(err.Error(), "hooks.misspelt implements none of startTracer, pointTracer") {
		t.Fatalf("misspelt tracer: %v", err)
	}
	if Check(nil, "x", checks...) == nil {
		t.Fatal("nil tracer accepted")
	}
}
