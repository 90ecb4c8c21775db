package kafka

import (
	"context"

	"github.com/go-integration/patterns/broker/internal/tracing"
	"github.com/go-integration/patterns/internal/hooks"
)

// RebalanceTracer is told when a Subscribe call's group member is
// assigned partitions, has them revoked by a rebalance (after their
// records were handled and committed) or loses them (session expired,
// fenced). Install it with WithTracer on a Subscriber. It is called
// synchronously from the consuming client's group goroutine, with that
// goroutine's context, and must not block.
type RebalanceTracer interface {
	TraceRebalance(ctx context.Context, data TraceRebalanceData)
}

// RebalanceEvent says what a TraceRebalance call reports.
type RebalanceEvent int

// Rebalance events.
const (
	PartitionsAssigned RebalanceEvent = iota + 1
	PartitionsRevoked
	PartitionsLost
)

var rebalanceEventNames = [...]string{"", "assigned", "revoked", "lost"}

// String returns the event's name, such as "revoked".
func (e RebalanceEvent) String() string {
	if e > 0 && int(e) < len(rebalanceEventNames) {
		return rebalanceEventNames[e]
	}
	return "unknown"
}

// TraceRebalanceData describes a change of a member's partitions.
type TraceRebalanceData struct {
	Event        RebalanceEvent
	Topic, Group string
	// Partitions are the partitions of Topic concerned. Do not keep the slice.
	Partitions []int32
}

func checkTracer(t any) error {
	return tracing.Check(t, "kafka.RebalanceTracer, kafka.PartitionHealthTracer", hooks.Is[RebalanceTracer](), hooks.Is[PartitionHealthTracer]())
}

// traceRebalance calls the subscriber's RebalanceTracers.
func (r *receiver) traceRebalance(ctx context.Context, e RebalanceEvent, parts []int32) {
	if len(r.s.rebalance) == 0 || len(parts) == 0 {
		return
	}
	d := TraceRebalanceData{Event: e, Topic: r.sub.Topic, Group: r.sub.Group, Partitions: parts}
	for _, t := range r.s.rebalance {
		t.TraceRebalance(ctx, d)
	}
}
