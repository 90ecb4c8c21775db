package main

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// errNotLanded marks an "ours" side whose package is not on main yet.
var errNotLanded = errors.New("n/a (not landed)")

// errInterrupted marks a side that had no complete round when the run was interrupted.
var errInterrupted = errors.New("interrupted")

// skipError marks a side or scenario that cannot run here (a service is down);
// its cell says "skipped: reason" instead of failing the run.
type skipError struct{ reason string }

func (e *skipError) Error() string { return "skipped: " + e.reason }

func skipped(format string, args ...any) error {
	return &skipError{reason: fmt.Sprintf(format, args...)}
}

// naError marks a cell with nothing to measure (the peer has no such API).
type naError struct{ reason string }

func (e *naError) Error() string { return "n/a (" + e.reason + ")" }

func notApplicable(reason string) error { return &naError{reason: reason} }

// unit says how a row is measured.
type unit int

const (
	msgPerSec unit = iota // throughput: higher is better
	nsPerOp               // latency per operation: lower is better
)

func (u unit) String() string {
	if u == nsPerOp {
		return "ns/op"
	}
	return "msg/s"
}

// sample is one timed run with a fixed operation count.
type sample struct {
	n       int           // operations completed
	elapsed time.Duration // wall time for those operations
	allocs  int64         // allocations per operation, -1 when not measured
}

func (s sample) value(u unit) float64 {
	if u == nsPerOp {
		return float64(s.elapsed.Nanoseconds()) / float64(s.n)
	}
	return float64(s.n) / s.elapsed.Seconds()
}

// outcome is what one side of one row measured over the rounds.
type outcome struct {
	label   string // which library, e.g. "amqp091-go deferred confirms"
	samples []sample
	err     error // set once a round fails; later rounds are not run
}

func (o *outcome) add(s sample, err error) {
	if err != nil {
		if o.err == nil {
			o.err = err
		}
		return
	}
	o.samples = append(o.samples, s)
}

// failed reports whether the side stopped: later rounds skip it.
func (o *outcome) failed() bool { return o.err != nil }

// median returns the median value over the rounds and whether there is one.
// A side that failed in any round has no value: its cell shows the error.
func (o *outcome) median(u unit) (float64, bool) {
	if o.err != nil || len(o.samples) == 0 {
		return 0, false
	}
	vs := make([]float64, len(o.samples))
	for i, s := range o.samples {
		vs[i] = s.value(u)
	}
	slices.Sort(vs)
	m := len(vs) / 2
	if len(vs)%2 == 0 {
		return (vs[m-1] + vs[m]) / 2, true
	}
	return vs[m], true
}

// spread returns, as a percentage of the median, the range of the middle
// rounds: with five rounds or more the fastest and slowest fifth are left out,
// so one round disturbed by another process does not dominate.
func (o *outcome) spread(u unit) float64 {
	med, ok := o.median(u)
	if !ok || len(o.samples) < 2 || med == 0 {
		return 0
	}
	vs := make([]float64, len(o.samples))
	for i, s := range o.samples {
		vs[i] = s.value(u)
	}
	slices.Sort(vs)
	if trim := len(vs) / 5; trim > 0 {
		vs = vs[trim : len(vs)-trim]
	}
	return 100 * (vs[len(vs)-1] - vs[0]) / med
}

func (o *outcome) cell(u unit) string {
	if o.err != nil {
		return errorCell(o.err)
	}
	v, ok := o.median(u)
	if !ok {
		return "n/a"
	}
	s := group(v) + " " + u.String()
	if len(o.samples) > 1 {
		s += fmt.Sprintf(" ±%.0f%%", o.spread(u)/2)
	}
	if a := o.samples[0].allocs; a >= 0 {
		s += fmt.Sprintf(", %d allocs/op", a)
	}
	return s
}

func errorCell(err error) string {
	var (
		sk *skipError
		na *naError
	)
	switch {
	case errors.As(err, &na):
		return na.Error()
	case errors.Is(err, errNotLanded), errors.Is(err, errInterrupted):
		return err.Error()
	case errors.As(err, &sk):
		return sk.Error()
	default:
		msg := err.Error()
		if len(msg) > 120 {
			msg = msg[:120] + "…"
		}
		return "error: " + strings.ReplaceAll(msg, "|", "/")
	}
}

// group formats v with thousands separators (and one decimal below 100).
func group(v float64) string {
	if v < 100 {
		return fmt.Sprintf("%.1f", v)
	}
	s := fmt.Sprintf("%.0f", v)
	var b strings.Builder
	for i, r := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(r)
	}
	return b.String()
}

// ratio returns a/b in the row's unit as text.
func ratio(u unit, a, b *outcome) string {
	va, oka := a.median(u)
	vb, okb := b.median(u)
	if !oka || !okb || vb == 0 {
		return "–"
	}
	return fmt.Sprintf("%.2f", va/vb)
}

// row is one line of the table.
type row struct {
	scenario        string
	unit            unit
	n               int // operations per round
	ours, raw, peer outcome
	skip            error // the whole scenario could not run (a service is down)
}

// side is one library's part in a scenario. run measures one round and
// returns one sample per outcome in outs (a broker side publishes, then
// consumes what it published); on error it returns the samples it has.
type side struct {
	outs []*outcome
	run  func(ctx context.Context, round int) ([]sample, error)
}

func (s side) failed() bool {
	for _, o := range s.outs {
		if o.failed() {
			return true
		}
	}
	return false
}

// runRounds runs each side once per round, rotating the order each round so
// that no side always runs first (on a shared machine load drifts). Each run
// gets its own deadline.
func runRounds(ctx context.Context, rounds int, perRun time.Duration, sides ...side) {
	for r := range rounds {
		for i := range sides {
			s := sides[(i+r)%len(sides)]
			if s.failed() || ctx.Err() != nil {
				continue
			}
			rctx, cancel := context.WithTimeout(ctx, perRun)
			smps, err := s.run(rctx, r)
			if err != nil && rctx.Err() != nil && ctx.Err() == nil {
				err = fmt.Errorf("round %d not done within %s: %w", r+1, perRun, err)
			}
			cancel()
			if ctx.Err() != nil {
				break // interrupted: keep the rounds that completed
			}
			for j, o := range s.outs {
				if j < len(smps) {
					o.add(smps[j], nil)
				} else if err != nil {
					o.add(sample{}, err)
				}
			}
		}
	}
	for _, s := range sides {
		for _, o := range s.outs {
			if ctx.Err() != nil && !o.failed() && len(o.samples) == 0 {
				o.err = errInterrupted
			}
		}
	}
}
