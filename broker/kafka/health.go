package kafka

import (
	"cmp"
	"context"
	"slices"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
)

// Partition health: a record that cannot be processed (a handler that hangs,
// a message retried without end) holds its partition's committed offset
// while the records behind it wait, and a consumer reprocessing the same
// batch looks busy; nothing fails. The Subscriber watches, for each
// partition it consumes, the offset it commits and the high watermark its
// fetches see, and reports a partition as stuck when records wait (lag > 0)
// and the offset has not moved for WithStuckAfter.

// DefaultStuckAfter is how long a partition's committed offset may stay
// unchanged, with records waiting behind it, before the partition is
// reported stuck, unless WithStuckAfter says otherwise.
const DefaultStuckAfter = 5 * time.Minute

// minStuckAfter is the smallest WithStuckAfter: shorter is a unit mistake
// (WithStuckAfter(5) is 5 ns), not a threshold.
const minStuckAfter = 10 * time.Millisecond

// WithStuckAfter sets how long a partition's committed offset may stay
// unchanged while it has lag before the partition is reported stuck (a Warn
// log line and PartitionHealthTracer.TracePartitionStuck), and its status in
// Subscriber.Partitions says so. The check runs every quarter of d (at least
// every 15 s), so a stuck partition is reported at most d plus that period
// after its offset last moved. A consumer that is slow but moves is never
// reported. Default: DefaultStuckAfter (5 min). d must be at least 10 ms.
func WithStuckAfter(d time.Duration) SubscriberOption {
	return subscriberOpt(func(c *config) error {
		if d < minStuckAfter {
			return invalid("WithStuckAfter(%v): want at least %v", d, minStuckAfter)
		}
		c.stuckAfter = d
		return nil
	})
}

// checkPeriod is how often partitions are checked for a threshold d.
func checkPeriod(d time.Duration) time.Duration {
	return min(max(d/4, 5*time.Millisecond), 15*time.Second)
}

// PartitionStatus is the consuming state of one partition a Subscribe call
// holds, as Subscriber.Partitions reports it.
type PartitionStatus struct {
	Topic string
	// Group is the subscription's consumer group; empty for a reader
	// without a group.
	Group     string
	Partition int32
	// Committed is the offset this subscriber commits for the partition:
	// the offset after the prefix of records that are done (handled,
	// skipped, dead-lettered or dropped). A group's commits reach Kafka
	// every CommitInterval, so Kafka's committed offset trails it by up to
	// that interval.
	Committed int64
	// HighWatermark is the partition's end offset as last seen in a fetch
	// (or, while polling is held up, in an end-offset lookup).
	HighWatermark int64
	// Lag is HighWatermark minus Committed, at least 0: the records
	// published to the partition and not yet done.
	Lag int64
	// Since is when Committed last changed, or when this subscriber began
	// tracking the partition (its first fetched records).
	Since time.Time
	// Stuck reports a partition with lag whose Committed has not changed
	// since Since for longer than WithStuckAfter; it is set by the periodic
	// check that reports it, and cleared by the check after the offset
	// moves.
	Stuck bool
}

// Partitions returns the state of every partition the subscriber's
// Subscribe calls consume now, ordered by topic, group and partition. A
// partition appears once its first records were fetched and disappears when
// it is revoked, lost or its Subscribe call ends. It does no I/O; metrics
// exporters call it at collection time.
func (s *Subscriber) Partitions() []PartitionStatus {
	s.mu.Lock()
	rs := make([]*receiver, 0, len(s.recvs))
	for r := range s.recvs {
		rs = append(rs, r)
	}
	s.mu.Unlock()
	var out []PartitionStatus
	for _, r := range rs {
		r.mu.Lock()
		for p, t := range r.parts {
			out = append(out, PartitionStatus{
				Topic: r.sub.Topic, Group: r.sub.Group, Partition: p,
				Committed: t.next, HighWatermark: t.hwm, Lag: max(t.hwm-t.next, 0),
				Since: t.movedAt, Stuck: t.stuck,
			})
		}
		r.mu.Unlock()
	}
	slices.SortFunc(out, func(a, b PartitionStatus) int {
		return cmp.Or(cmp.Compare(a.Topic, b.Topic), cmp.Compare(a.Group, b.Group), cmp.Compare(a.Partition, b.Partition))
	})
	return out
}

// PartitionHealthTracer is told when a partition becomes stuck (lag > 0 and
// its committed offset unchanged for longer than WithStuckAfter) and when
// it recovers: its offset moved, or this subscriber stopped consuming it
// (revoked, lost, Subscribe ended; Released is then set). Every stuck event
// is followed by exactly one recovered event for the same Subscribe call and
// partition. Install it with WithTracer on a Subscriber. It is called
// synchronously from the subscription's health-check goroutine (or, for a
// release, from the goroutine that gives the partition up), one call at a
// time per Subscribe call, and must not block.
type PartitionHealthTracer interface {
	TracePartitionStuck(ctx context.Context, data TracePartitionStuckData)
	TracePartitionRecovered(ctx context.Context, data TracePartitionRecoveredData)
}

// TracePartitionStuckData describes a partition that became stuck.
type TracePartitionStuckData struct {
	Topic, Group string
	Partition    int32
	// Committed is the offset that does not move; the record there (or
	// one just after it, of another key) is the one holding the partition.
	Committed     int64
	HighWatermark int64
	Lag           int64
	// Since is when Committed last moved.
	Since time.Time
	// Threshold is the WithStuckAfter in force.
	Threshold time.Duration
}

// TracePartitionRecoveredData describes the end of a stuck episode.
type TracePartitionRecoveredData struct {
	Topic, Group string
	Partition    int32
	// Committed is the offset now: past the one that was stuck, unless
	// Released.
	Committed int64
	Lag       int64
	// StuckFor is how long the offset stood still: from the Since of the
	// stuck event to the move (or to the release).
	StuckFor time.Duration
	// Released reports that this subscriber no longer consumes the
	// partition (revoked, lost, or its Subscribe call ended) while it was
	// stuck: the episode ends here, and the next owner reports the
	// partition again if it stays stuck.
	Released bool
}

// healthEvent is a stuck or recovered report, collected under r.mu and
// delivered after.
type healthEvent struct {
	stuck     bool
	released  bool
	partition int32
	committed int64
	hwm       int64
	since     time.Time
	at        time.Time
}

// healthWatch is a receiver's health-check goroutine.
type healthWatch struct {
	ctx  context.Context // cancelled by stopHealth
	stop context.CancelFunc
	done chan struct{}
}

// startHealth starts r's periodic check. ctx carries the values of the
// Subscribe call's context to the tracers.
func (r *receiver) startHealth(ctx context.Context) {
	r.hctx = context.WithoutCancel(ctx)
	r.polledAt.Store(time.Now().UnixNano())
	wctx, stop := context.WithCancel(context.Background())
	r.watch = &healthWatch{ctx: wctx, stop: stop, done: make(chan struct{})}
	go r.runHealth(r.watch)
}

// stopHealth stops the check and waits for it. Close calls it first, and
// forgetAll last.
func (r *receiver) stopHealth() {
	if r.watch == nil {
		return
	}
	r.watch.stop()
	<-r.watch.done
}

func (r *receiver) runHealth(w *healthWatch) {
	defer close(w.done)
	d := r.s.cfg.stuckAfter
	tk := time.NewTicker(checkPeriod(d))
	defer tk.Stop()
	for {
		select {
		case <-w.ctx.Done():
			return
		case now := <-tk.C:
			r.refreshEnds(w, now, d)
			r.check(time.Now())
		}
	}
}

// refreshEnds looks the partitions' end offsets up when polling has been
// held up for half the threshold (the engine holds MaxInFlight records, so
// no fetch brings new high watermarks): lag would otherwise stay at what the
// last fetch saw, and partitions whose records wait unfetched would never
// show lag. At most once per half threshold, bounded by a timeout.
func (r *receiver) refreshEnds(w *healthWatch, now time.Time, d time.Duration) {
	if r.polling.Load() || now.Sub(time.Unix(0, r.polledAt.Load())) < d/2 || now.Sub(r.refreshedAt) < d/2 {
		return
	}
	r.refreshedAt = now
	r.mu.Lock()
	n := len(r.parts)
	r.mu.Unlock()
	if n == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(w.ctx, min(max(checkPeriod(d), time.Second), 10*time.Second))
	defer cancel()
	ends, err := r.s.admin.adm.ListEndOffsets(ctx, r.sub.Topic)
	if err != nil {
		r.s.cfg.logger.Debug("kafka: health check: end offsets not listed", "topic", r.sub.Topic, "group", r.sub.Group, "err", err)
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	ends.Each(func(lo kadm.ListedOffset) {
		if t := r.parts[lo.Partition]; t != nil && lo.Err == nil && lo.Offset > t.hwm {
			t.hwm = lo.Offset
		}
	})
}

// check marks partitions stuck or recovered and reports the changes.
func (r *receiver) check(now time.Time) {
	r.healthMu.Lock()
	defer r.healthMu.Unlock()
	d := r.s.cfg.stuckAfter
	var evs []healthEvent
	r.mu.Lock()
	for p, t := range r.parts {
		stalled := t.hwm > t.next && now.Sub(t.movedAt) >= d
		switch {
		case stalled && !t.stuck:
			t.stuck, t.stuckSince = true, t.movedAt
			evs = append(evs, healthEvent{stuck: true, partition: p, committed: t.next, hwm: t.hwm, since: t.movedAt, at: now})
		case !stalled && t.stuck:
			t.stuck = false
			evs = append(evs, healthEvent{partition: p, committed: t.next, hwm: t.hwm, since: t.stuckSince, at: t.movedAt})
		}
	}
	r.mu.Unlock()
	r.report(evs)
}

// dropLocked forgets partition p (r.mu held), adding to evs the event that
// ends its stuck episode, if any.
func (r *receiver) dropLocked(p int32, now time.Time, evs []healthEvent) []healthEvent {
	t := r.parts[p]
	if t == nil {
		return evs
	}
	if t.stuck {
		evs = append(evs, healthEvent{released: true, partition: p, committed: t.next, hwm: t.hwm, since: t.stuckSince, at: now})
	}
	delete(r.parts, p)
	return evs
}

// forgetAll forgets every partition (the Subscribe call is over for them).
func (r *receiver) forgetAll() {
	now := time.Now()
	var evs []healthEvent
	r.mu.Lock()
	for p := range r.parts {
		evs = r.dropLocked(p, now, evs)
	}
	r.mu.Unlock()
	r.reportReleased(evs)
}

// reportReleased reports what dropLocked collected; the caller must not
// hold r.mu.
func (r *receiver) reportReleased(evs []healthEvent) {
	if len(evs) == 0 {
		return
	}
	r.healthMu.Lock()
	defer r.healthMu.Unlock()
	r.report(evs)
}

// report logs evs and calls the PartitionHealthTracers (r.healthMu held).
func (r *receiver) report(evs []healthEvent) {
	slices.SortFunc(evs, func(a, b healthEvent) int { return cmp.Compare(a.partition, b.partition) })
	log := r.s.cfg.logger
	for _, e := range evs {
		lag := max(e.hwm-e.committed, 0)
		switch {
		case e.stuck:
			log.Warn("kafka: partition stuck: its committed offset has not moved while records wait",
				"topic", r.sub.Topic, "group", r.sub.Group, "partition", e.partition, "lag", lag,
				"committed_offset", e.committed, "stuck_since", e.since, "threshold", r.s.cfg.stuckAfter)
			d := TracePartitionStuckData{Topic: r.sub.Topic, Group: r.sub.Group, Partition: e.partition,
				Committed: e.committed, HighWatermark: e.hwm, Lag: lag, Since: e.since, Threshold: r.s.cfg.stuckAfter}
			for _, t := range r.s.health {
				t.TracePartitionStuck(r.hctx, d)
			}
		default:
			msg := "kafka: stuck partition recovered: its committed offset moves again"
			if e.released {
				msg = "kafka: stuck partition no longer consumed by this subscriber (revoked, lost or stopped)"
			}
			stuckFor := max(e.at.Sub(e.since), 0)
			log.Info(msg, "topic", r.sub.Topic, "group", r.sub.Group, "partition", e.partition, "lag", lag,
				"committed_offset", e.committed, "stuck_for", stuckFor)
			d := TracePartitionRecoveredData{Topic: r.sub.Topic, Group: r.sub.Group, Partition: e.partition,
				Committed: e.committed, Lag: lag, StuckFor: stuckFor, Released: e.released}
			for _, t := range r.s.health {
				t.TracePartitionRecovered(r.hctx, d)
			}
		}
	}
}

// healthFields are the receiver's health-check state.
type healthFields struct {
	hctx     context.Context
	watch    *healthWatch
	healthMu sync.Mutex // one report at a time, in order

	refreshedAt time.Time // check goroutine only
}
