package kafka

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/go-integration/patterns/broker"
)

// run is one Subscribe call: a consuming client, a poll loop and one worker
// per assigned partition. Workers of different partitions run in parallel,
// at most Workers() handlers at once; each worker handles its partition's
// records in offset order.
type run struct {
	s     *Subscriber
	sub   broker.Subscription
	h     broker.Handler
	pats  broker.Patterns
	dlq   string
	cl    *kgo.Client
	sem   chan struct{}
	group bool

	// base is the parent of every handler context: the Subscribe context's
	// values without its cancellation; each worker cancels its own child
	// after DrainTimeout once it is told to stop.
	base context.Context

	mu      sync.Mutex
	workers map[int32]*worker
	// drainMu serializes stopWorkers, so a revoke that comes while the
	// subscription drains at shutdown waits for the drain before it commits.
	drainMu sync.Mutex

	// queued counts the records waiting in the queues of partitions that
	// are not paused; the poll loop waits while it is at the limit, so a
	// slow handler slows fetching instead of filling memory. A partition
	// whose own queue fills (a record backing off) is paused and left out,
	// so it cannot hold the others up.
	queued atomic.Int64
	space  chan struct{}

	killed   atomic.Bool // tests: a member that dies without committing
	stopping atomic.Bool // the final revoke of leaving the group is not a rebalance
}

// kill simulates a crashed member (tests only): it stops the workers without
// marking or committing anything and closes the client.
func (r *run) kill() {
	r.killed.Store(true)
	r.stopWorkers(nil, true, false)
	r.cl.Close()
}

// start checks the topics, resolves the start position and creates the client.
func (r *run) start(ctx context.Context) error {
	s, sub := r.s, r.sub
	r.group = sub.Group != ""
	r.sem = make(chan struct{}, sub.Workers())
	r.space = make(chan struct{}, 1)
	r.base = context.WithoutCancel(ctx)
	for _, t := range []string{sub.Topic, r.dlq} {
		if t == "" {
			continue
		}
		if err := s.admin.requireTopic(ctx, t, s.cfg.createTopics, s.cfg.topicDefaults); err != nil {
			return err
		}
	}
	start := s.cfg.start.resolve(r.group)
	opts := []kgo.Opt{
		kgo.FetchMaxWait(500 * time.Millisecond),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
	}
	if r.group {
		if start.kind == kindLatest || start.kind == kindExact {
			if err := s.pinStart(ctx, sub, start, false); err != nil {
				return err
			}
		}
		reset := kgo.NewOffset().AtStart()
		switch start.kind {
		case kindLatest:
			reset = kgo.NewOffset().AtEnd()
		case kindTime:
			reset = kgo.NewOffset().AfterMilli(start.at.UnixMilli())
		}
		opts = append(opts,
			kgo.ConsumerGroup(sub.Group),
			kgo.ConsumeTopics(sub.Topic),
			kgo.ConsumeResetOffset(reset),
			kgo.BlockRebalanceOnPoll(),
			kgo.AutoCommitMarks(),
			kgo.AutoCommitInterval(s.cfg.commitInterval),
			kgo.AutoCommitCallback(r.onCommit),
			kgo.OnPartitionsRevoked(func(ctx context.Context, _ *kgo.Client, m map[string][]int32) {
				if r.killed.Load() {
					return
				}
				if !r.stopping.Load() {
					s.st.revoked.Add(uint64(len(m[sub.Topic])))
				}
				r.stopWorkers(m[sub.Topic], false, true)
				r.commit(ctx)
			}),
			kgo.OnPartitionsLost(func(_ context.Context, _ *kgo.Client, m map[string][]int32) {
				s.cfg.logger.Warn("kafka: partitions lost; their uncommitted records will be redelivered", "group", sub.Group, "topic", sub.Topic, "partitions", m[sub.Topic])
				s.st.lost.Add(uint64(len(m[sub.Topic])))
				r.stopWorkers(m[sub.Topic], false, false)
			}),
		)
		opts = append(opts, s.cfg.groupOpts()...)
	} else {
		offs, err := s.admin.startOffsets(ctx, sub.Topic, start)
		if err != nil {
			return err
		}
		parts := make(map[int32]kgo.Offset, len(offs))
		for p, o := range offs {
			parts[p] = kgo.NewOffset().At(o)
		}
		opts = append(opts, kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{sub.Topic: parts}))
	}
	cl, err := kgo.NewClient(append(opts, s.cfg.baseOpts(s.admin.hook)...)...)
	if err != nil {
		return fmt.Errorf("kafka: new consumer: %w", err)
	}
	r.cl = cl
	return nil
}

// loop polls until ctx is done, then drains the workers, commits and closes.
func (r *run) loop(ctx context.Context) error {
	log := r.s.cfg.logger
	limit := int64(r.s.cfg.maxBuffered)
	for {
		for r.queued.Load() >= limit && ctx.Err() == nil {
			select {
			case <-r.space:
			case <-ctx.Done():
			}
		}
		// Take everything buffered, so franz-go fetches the next batch
		// while the workers handle this one.
		fs := r.cl.PollFetches(ctx)
		if fs.IsClientClosed() || ctx.Err() != nil {
			r.cl.AllowRebalance()
			break
		}
		fs.EachError(func(t string, p int32, err error) {
			if errors.Is(err, context.Canceled) {
				return
			}
			log.Warn("kafka: fetch error", "topic", t, "partition", p, "err", err)
		})
		fs.EachPartition(func(p kgo.FetchTopicPartition) {
			if len(p.Records) == 0 {
				return
			}
			r.worker(p.Partition).push(p.Records, p.HighWatermark)
		})
		r.cl.AllowRebalance()
	}
	r.stopping.Store(true)
	r.stopWorkers(nil, true, true)
	cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	r.commit(cctx)
	cancel()
	r.cl.CloseAllowingRebalance()
	return nil
}

// commit synchronously commits the marked offsets (group consumers only).
func (r *run) commit(ctx context.Context) {
	if !r.group || r.killed.Load() {
		return
	}
	marked := r.cl.MarkedOffsets()
	if len(marked) == 0 {
		return
	}
	r.cl.CommitOffsetsSync(ctx, marked, r.onCommit)
}

// onCommit counts commit results, for autocommits and synchronous ones.
func (r *run) onCommit(_ *kgo.Client, _ *kmsg.OffsetCommitRequest, resp *kmsg.OffsetCommitResponse, err error) {
	if err != nil {
		if !errors.Is(err, context.Canceled) {
			r.s.st.commitErrors.Add(1)
			r.s.cfg.logger.Warn("kafka: commit failed", "group", r.sub.Group, "topic", r.sub.Topic, "err", err)
		}
		return
	}
	for _, t := range resp.Topics {
		for _, p := range t.Partitions {
			if p.ErrorCode == 0 {
				r.s.st.commits.Add(1)
			} else {
				r.s.st.commitErrors.Add(1)
			}
		}
	}
}

// worker returns the worker of partition p, starting it if needed.
func (r *run) worker(p int32) *worker {
	r.mu.Lock()
	defer r.mu.Unlock()
	w := r.workers[p]
	if w == nil {
		ctx, cancel := context.WithCancel(r.base)
		w = &worker{r: r, part: p, ctx: ctx, cancel: cancel, wake: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
		w.hwm.Store(-1)
		w.next.Store(-1)
		r.workers[p] = w
		go w.loop()
	}
	return w
}

// stopWorkers stops the workers of parts (every worker when all is set):
// queued records are dropped (they stay uncommitted), handlers running get
// DrainTimeout to finish before their context is cancelled. With mark set,
// each worker marks what it handled so the caller's commit includes it.
func (r *run) stopWorkers(parts []int32, all, mark bool) {
	r.drainMu.Lock()
	defer r.drainMu.Unlock()
	r.mu.Lock()
	var ws []*worker
	if all {
		for p, w := range r.workers {
			ws = append(ws, w)
			delete(r.workers, p)
		}
	} else {
		for _, p := range parts {
			if w := r.workers[p]; w != nil {
				ws = append(ws, w)
				delete(r.workers, p)
			}
		}
	}
	r.mu.Unlock()
	if len(ws) == 0 {
		return
	}
	for _, w := range ws {
		w.noMark.Store(!mark)
		close(w.stop)
	}
	t := time.AfterFunc(r.s.cfg.drainTimeout, func() {
		for _, w := range ws {
			w.cancel()
		}
	})
	for _, w := range ws {
		<-w.done
		w.cancel()
		w.mu.Lock()
		if w.paused {
			w.paused = false
			r.cl.ResumeFetchPartitions(map[string][]int32{r.sub.Topic: {w.part}})
		} else {
			r.queued.Add(-int64(len(w.queue)))
		}
		w.queue = nil
		w.mu.Unlock()
	}
	t.Stop()
	r.signalSpace()
}

// signalSpace wakes the poll loop if it waits for queue space.
func (r *run) signalSpace() {
	select {
	case r.space <- struct{}{}:
	default:
	}
}

// worker handles one partition's records in order.
type worker struct {
	r      *run
	part   int32
	ctx    context.Context // handlers' context
	cancel context.CancelFunc

	mu     sync.Mutex
	queue  []*kgo.Record
	paused bool

	wake chan struct{}
	stop chan struct{}
	done chan struct{}

	noMark atomic.Bool
	hwm    atomic.Int64 // high watermark at the last fetch
	next   atomic.Int64 // next offset to handle
	held   bool         // holds a slot of r.sem (worker goroutine only)
}

// push queues records fetched for the partition (poll goroutine) and pauses
// fetching the partition while its queue is full.
func (w *worker) push(recs []*kgo.Record, hwm int64) {
	w.hwm.Store(hwm)
	w.mu.Lock()
	w.queue = append(w.queue, recs...)
	if !w.paused {
		w.r.queued.Add(int64(len(recs)))
		if len(w.queue) >= w.r.s.cfg.maxBuffered {
			w.paused = true
			w.r.queued.Add(-int64(len(w.queue)))
			w.r.cl.PauseFetchPartitions(map[string][]int32{w.r.sub.Topic: {w.part}})
		}
	}
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// take removes up to n queued records and resumes fetching once the queue
// is half empty.
func (w *worker) take(n int) []*kgo.Record {
	w.mu.Lock()
	defer w.mu.Unlock()
	k := min(n, len(w.queue))
	batch := w.queue[:k:k]
	w.queue = w.queue[k:]
	if len(w.queue) == 0 {
		w.queue = nil
	}
	switch {
	case !w.paused:
		w.r.queued.Add(-int64(k))
	case len(w.queue) <= w.r.s.cfg.maxBuffered/2:
		w.paused = false
		w.r.queued.Add(int64(len(w.queue)))
		w.r.cl.ResumeFetchPartitions(map[string][]int32{w.r.sub.Topic: {w.part}})
	}
	if k > 0 && w.r.queued.Load() < int64(w.r.s.cfg.maxBuffered) {
		w.r.signalSpace()
	}
	return batch
}

func (w *worker) stopped() bool {
	select {
	case <-w.stop:
		return true
	default:
		return false
	}
}

// acquire takes a handler slot; false when the worker is stopped first.
func (w *worker) acquire() bool {
	if w.held {
		return true
	}
	select {
	case w.r.sem <- struct{}{}:
		w.held = true
		return true
	case <-w.stop:
		return false
	}
}

func (w *worker) release() {
	if w.held {
		<-w.r.sem
		w.held = false
	}
}

// sleep waits d, releasing the handler slot; false when stopped meanwhile.
func (w *worker) sleep(d time.Duration) bool {
	w.release()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return w.acquire()
	case <-w.stop:
		return false
	}
}

// batchSize is how many records a worker handles per turn on a handler slot.
const batchSize = 256

func (w *worker) loop() {
	var last *kgo.Record // last record done (handled, skipped or dead-lettered)
	defer func() {
		w.release()
		if last != nil && !w.noMark.Load() {
			w.r.cl.MarkCommitRecords(last)
		}
		close(w.done)
	}()
	for {
		batch := w.take(batchSize)
		if len(batch) == 0 {
			select {
			case <-w.wake:
				continue
			case <-w.stop:
				return
			}
		}
		if !w.acquire() {
			return
		}
		var c batchCounts
		for _, rec := range batch {
			if w.stopped() || !w.handle(rec, &c) {
				c.flush(&w.r.s.st)
				return
			}
			last = rec
		}
		c.flush(&w.r.s.st)
		w.next.Store(last.Offset + 1)
		w.release()
		if w.r.group {
			w.r.cl.MarkCommitRecords(last)
		}
	}
}

// batchCounts are counted per batch rather than per record, to keep
// contended atomic adds off the per-record path.
type batchCounts struct{ consumed, handled, skipped uint64 }

func (c *batchCounts) flush(st *counters) {
	st.consumed.Add(c.consumed)
	st.handled.Add(c.handled)
	st.skipped.Add(c.skipped)
	*c = batchCounts{}
}

// handle runs the handler on rec with retries and dead-lettering. It returns
// false when the worker was stopped before rec was done with (rec is then
// left uncommitted for redelivery).
func (w *worker) handle(rec *kgo.Record, c *batchCounts) bool {
	r, st := w.r, &w.r.s.st
	c.consumed++
	if len(r.pats) > 0 && !r.pats.Match(stringOf(rec.Key)) {
		c.skipped++
		return true
	}
	for attempt := 1; ; attempt++ {
		// Each attempt, and the dead letter, gets the message as published:
		// a handler may have changed the header map of the last one.
		m := fromRecord(rec)
		m.Attempt = attempt
		err := call(w.ctx, r.h, m)
		if err == nil {
			c.handled++
			return true
		}
		if w.ctx.Err() != nil {
			return false // stopped past the drain timeout: redeliver, do not dead-letter
		}
		if broker.IsPermanent(err) || (r.sub.MaxAttempts > 0 && attempt >= r.sub.MaxAttempts) {
			m = fromRecord(rec)
			m.Attempt = attempt
			return w.deadLetter(m, rec, err)
		}
		st.retried.Add(1)
		d := r.s.cfg.backoff(attempt)
		r.s.cfg.logger.Debug("kafka: handler failed; retrying", "topic", rec.Topic, "partition", rec.Partition, "offset", rec.Offset, "attempt", attempt, "backoff", d, "err", err)
		if !w.sleep(d) {
			return false
		}
	}
}

// deadLetter publishes m to the dead-letter topic (retrying until it is
// accepted or the worker stops) or drops it when there is none.
func (w *worker) deadLetter(m broker.Message, rec *kgo.Record, cause error) bool {
	r, st, log := w.r, &w.r.s.st, w.r.s.cfg.logger
	if r.dlq == "" {
		st.dropped.Add(1)
		log.Error("kafka: message failed permanently and there is no dead-letter topic; dropped", "topic", rec.Topic, "partition", rec.Partition, "offset", rec.Offset, "id", m.ID, "attempts", m.Attempt, "err", cause)
		return true
	}
	dl := broker.DeadLetter(m, r.sub.Group, cause, time.Now())
	dl.Header[broker.HeaderOriginPartition] = strconv.Itoa(int(rec.Partition))
	dl.Header[broker.HeaderOriginOffset] = strconv.FormatInt(rec.Offset, 10)
	for try := 1; ; try++ {
		err := r.s.prod.ProduceSync(w.ctx, toRecord(r.dlq, &dl)).FirstErr()
		if err == nil {
			st.deadLettered.Add(1)
			log.Warn("kafka: message dead-lettered", "topic", rec.Topic, "partition", rec.Partition, "offset", rec.Offset, "id", m.ID, "attempts", m.Attempt, "dead_letter_topic", r.dlq, "err", cause)
			return true
		}
		if errors.Is(err, kerr.MessageTooLarge) && dl.Payload != nil {
			// The dead-letter topic takes smaller records than the source
			// (or the headers tipped it over): keep the evidence, drop the
			// payload, rather than block the partition.
			log.Error("kafka: dead letter too large; publishing it without its payload", "topic", rec.Topic, "partition", rec.Partition, "offset", rec.Offset, "dead_letter_topic", r.dlq, "bytes", len(dl.Payload))
			dl.Header[HeaderPayloadDropped] = fmt.Sprintf("%d bytes: %v", len(dl.Payload), err)
			dl.Payload = nil
			continue
		}
		log.Error("kafka: dead-lettering failed; retrying", "topic", rec.Topic, "partition", rec.Partition, "offset", rec.Offset, "dead_letter_topic", r.dlq, "err", err)
		if w.ctx.Err() != nil || !w.sleep(r.s.cfg.backoff(try)) {
			return false
		}
	}
}

// call runs h, turning a panic into an error.
func call(ctx context.Context, h broker.Handler, m broker.Message) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("kafka: handler panicked: %v", p)
		}
	}()
	return h(ctx, m)
}
