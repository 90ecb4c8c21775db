// Package hooks holds the plumbing of the module's one hook model: every
// package defines tracer interfaces in the style of pgx's tracers
// (TraceXStart(ctx, data) context.Context and TraceXEnd(ctx, data) around an
// operation, TraceX(ctx, data) for a point event), and takes tracers through
// a WithTracer(any) option. This package sorts such values into the
// interfaces they implement and refuses a value that implements none, so a
// misspelt method is an error at construction and not a silent no-op.
package hooks

import "fmt"

// Pick returns the tracers among ts that implement T, in order.
func Pick[T any](ts []any) []T {
	var out []T
	for _, t := range ts {
		if v, ok := t.(T); ok {
			out = append(out, v)
		}
	}
	return out
}

// Check returns an error when t implements none of the interfaces that
// implements checks; names lists them for the message.
func Check(t any, names string, implements ...func(any) bool) error {
	if t == nil {
		return fmt.Errorf("tracer is nil")
	}
	for _, f := range implements {
		if f(t) {
			return nil
		}
	}
	return fmt.Errorf("tracer %T implements none of %s", t, names)
}

// Is returns a check for Check: whether a value implements T.
func Is[T any]() func(any) bool {
	return func(v any) bool { _, ok := v.(T); return ok }
}
