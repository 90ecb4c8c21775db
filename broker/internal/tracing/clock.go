package tracing

import "time"

// Mono is a reading of the monotonic clock, for the durations of traced
// calls: taking one reads only the monotonic clock, about half the cost
// of time.Now, which also reads the wall clock.
type Mono time.Duration

// epoch is what Mono readings count from.
var epoch = time.Now()

// Now reads the monotonic clock.
func Now() Mono { return Mono(time.Since(epoch)) }

// MonoOf is the Mono reading of t, a time.Now result (it uses t's
// monotonic reading, without reading the clock).
func MonoOf(t time.Time) Mono { return Mono(t.Sub(epoch)) }

// Since returns the time elapsed since m.
func (m Mono) Since() time.Duration { return time.Duration(Now() - m) }
