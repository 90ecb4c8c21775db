package shareddb

import (
	"sync/atomic"
	"time"
)

// Candidate is a replica that may serve a read: healthy, in recovery and
// fresh enough for the read's limits. Pickers choose among candidates.
type Candidate struct {
	Name     string        // node name
	Lag      time.Duration // replay lag at the last check (0 when caught up)
	LagBytes int64         // bytes of WAL behind the primary at the last check
	Latency  time.Duration // smoothed round-trip time of the health checks
}

// Picker chooses the replica for one read. Pick is called with at least one
// candidate and returns the index of the chosen one; it must be safe for
// concurrent use and fast: it runs on the query path.
type Picker interface {
	Pick(candidates []Candidate) int
}

// LeastLag picks the replica with the smallest replay lag (bytes, then
// seconds), breaking ties by latency. It is the default Picker.
func LeastLag() Picker { return leastLag{} }

type leastLag struct{}

func (leastLag) Pick(c []Candidate) int {
	best := 0
	for i := 1; i < len(c); i++ {
		a, b := c[i], c[best]
		switch {
		case a.LagBytes != b.LagBytes:
			if a.LagBytes < b.LagBytes {
				best = i
			}
		case a.Lag != b.Lag:
			if a.Lag < b.Lag {
				best = i
			}
		case a.Latency < b.Latency:
			best = i
		}
	}
	return best
}

// RoundRobin spreads reads evenly over the candidates.
func RoundRobin() Picker { return &roundRobin{} }

type roundRobin struct{ n atomic.Uint64 }

func (r *roundRobin) Pick(c []Candidate) int {
	return int((r.n.Add(1) - 1) % uint64(len(c)))
}

// LowestLatency picks the replica whose health checks answer fastest.
func LowestLatency() Picker { return lowestLatency{} }

type lowestLatency struct{}

func (lowestLatency) Pick(c []Candidate) int {
	best := 0
	for i := 1; i < len(c); i++ {
		if c[i].Latency < c[best].Latency {
			best = i
		}
	}
	return best
}
