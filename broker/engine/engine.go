// Package engine is the consumer every adapter of this module runs on, so
// that a subscription behaves the same on the memory broker, RabbitMQ and
// Kafka. It is the portable part of gocloud's model: an adapter implements
// the narrow Driver and Receiver interfaces (declare, receive, ack, release,
// publish a dead letter) and the Engine does, once for all of them:
//
//   - dispatch by key: at most Subscription.Concurrency handlers run at
//     once over any keys; messages of one key run one at a time, in the
//     order received; messages with an empty key have no order among
//     themselves; of the messages free to run, the one received first runs
//     first, so one handler keeps the receive order across keys;
//   - attempts: a failed message is retried in place after a full-jitter
//     backoff, ahead of every later message of its key, and Attempt counts
//     the handler calls (a panic is a failed call, broker.ErrHandlerPanic);
//   - dead-lettering after MaxAttempts or a broker.Permanent error, through
//     one code path (broker.DeadLetter headers, Driver.DeadLetter);
//   - the in-flight bound (Subscription.MaxInFlight): no more messages are
//     received while that many are held;
//   - readiness (Subscription.Ready), draining on Close and on context end,
//     and reopening a broken receiver with jittered backoff;
//   - tracing (broker.ProcessTracer around each handler call,
//     broker.DeadLetterTracer before each dead letter) and counting
//     (Engine.Stats, broker.SubscriberStats).
//
// Adapter authors use it; users of the adapters never need to.
package engine

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"runtime/debug"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-integration/patterns/broker"
	"github.com/go-integration/patterns/broker/internal/tracing"
	"github.com/go-integration/patterns/internal/backoff"
	"github.com/go-integration/patterns/internal/hooks"
)

// Defaults shared by every adapter.
const (
	// DefaultDrainTimeout is how long running handlers may go on after
	// Subscribe's context ends or Close is called before their context is
	// cancelled.
	DefaultDrainTimeout = 30 * time.Second
	// DefaultRetryMin and DefaultRetryMax bound the full-jitter wait
	// before a failed message's next attempt: a random wait up to
	// DefaultRetryMin after the first failure, doubling per failure up to
	// DefaultRetryMax.
	DefaultRetryMin = 50 * time.Millisecond
	DefaultRetryMax = 5 * time.Second
)

// Backoff is an exponential backoff with full jitter: the wait after n
// failures is random in [0, min(Max, Min·2^(n-1))].
type Backoff = backoff.Policy

// Config configures an Engine. The zero value of each field takes its
// documented default.
type Config struct {
	// Name prefixes log messages and errors and is the System of the
	// tracers' data: "rabbitmq", "kafka", "memory".
	Name string
	// Logger receives retries at debug level, dead letters and drops at
	// warn, reopening at warn. Default slog.Default().
	Logger *slog.Logger
	// DrainTimeout: see DefaultDrainTimeout. Negative is invalid.
	DrainTimeout time.Duration
	// Retry is the backoff before a failed message's next attempt.
	// Default DefaultRetryMin to DefaultRetryMax.
	Retry Backoff
	// Reopen is the backoff between attempts to reopen a broken receiver.
	// Default 50 ms to 5 s.
	Reopen Backoff
	// Validate, when set, checks a subscription against the broker's own
	// rules (name lengths, characters) before anything is sent; its error
	// should wrap broker.ErrInvalidSubscription.
	Validate func(broker.Subscription) error
	// Tracers are the values given to the adapter's WithTracer options,
	// in order; the Engine calls those implementing broker.ProcessTracer
	// or broker.DeadLetterTracer and ignores the rest (the adapter checks
	// that each implements some tracer interface).
	Tracers []any
}

// Engine runs Subscribe calls over one Driver. Its Close stops all of them.
type Engine struct {
	d    Driver
	cfg  Config
	log  *slog.Logger
	proc []broker.ProcessTracer
	// procGate says whether proc must be called for a handler call.
	procGate tracing.Gate[broker.ProcessTraceEnabler]
	dead     []broker.DeadLetterTracer
	st       counters

	mu      sync.Mutex
	closed  bool
	closing chan struct{}
	running sync.WaitGroup
}

// New returns an Engine over d; it fails for an invalid Config.
func New(d Driver, cfg Config) (*Engine, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.DrainTimeout < 0 {
		return nil, fmt.Errorf("negative drain timeout %v", cfg.DrainTimeout)
	}
	if cfg.DrainTimeout == 0 {
		cfg.DrainTimeout = DefaultDrainTimeout
	}
	if cfg.Retry == (backoff.Policy{}) {
		cfg.Retry = backoff.Policy{Min: DefaultRetryMin, Max: DefaultRetryMax}
	}
	if err := cfg.Retry.Validate(); err != nil {
		return nil, fmt.Errorf("retry %w", err)
	}
	if cfg.Reopen == (backoff.Policy{}) {
		cfg.Reopen = backoff.Policy{Min: 50 * time.Millisecond, Max: 5 * time.Second}
	}
	if err := cfg.Reopen.Validate(); err != nil {
		return nil, fmt.Errorf("reopen %w", err)
	}
	if cfg.Name == "" {
		cfg.Name = "broker"
	}
	proc := hooks.Pick[broker.ProcessTracer](cfg.Tracers)
	return &Engine{
		d: d, cfg: cfg, log: cfg.Logger, closing: make(chan struct{}),
		proc:     proc,
		procGate: tracing.NewGate[broker.ProcessTraceEnabler](proc),
		dead:     hooks.Pick[broker.DeadLetterTracer](cfg.Tracers),
	}, nil
}

// counters back Stats. The dispatcher writes received, the workers the
// rest: a cache line apart, so that counting costs no false sharing. The
// in-flight gauge is derived, not counted.
type counters struct {
	received                                                  atomic.Uint64
	_                                                         [56]byte
	handled, retried, deadLettered, dropped, released, panics atomic.Uint64
}

// Stats returns the counters of every Subscribe call so far: the
// subscriber side of an adapter's Stats.
func (e *Engine) Stats() broker.SubscriberStats {
	st := broker.SubscriberStats{
		Handled: e.st.handled.Load(), Retried: e.st.retried.Load(),
		DeadLettered: e.st.deadLettered.Load(), Dropped: e.st.dropped.Load(), Released: e.st.released.Load(),
		Panics: e.st.panics.Load(),
	}
	// Read last, so that it counts every message settled above.
	st.Received = e.st.received.Load()
	st.InFlight = int64(st.Received - st.Handled - st.DeadLettered - st.Dropped - st.Released)
	return st
}

// Closing returns a channel closed when Close is called.
func (e *Engine) Closing() <-chan struct{} { return e.closing }

// Close stops every Subscribe call (they return broker.ErrClosed), lets
// their running handlers finish (up to the drain timeout) and settle, and
// returns when all have returned. It is idempotent. It closes nothing of
// the driver's.
func (e *Engine) Close() error {
	e.mu.Lock()
	if !e.closed {
		e.closed = true
		close(e.closing)
	}
	e.mu.Unlock()
	e.running.Wait()
	return nil
}

// Subscribe implements broker.Subscriber.Subscribe over the driver: it
// validates s, opens a receiver, calls s.Ready once, runs h for each
// message until ctx ends (then it returns nil) or Close is called (then
// broker.ErrClosed), and reopens a receiver that breaks. It fails at once
// for an invalid subscription and for an Open error that wraps
// broker.ErrInvalidSubscription.
func (e *Engine) Subscribe(ctx context.Context, s broker.Subscription, h broker.Handler) error {
	if err := s.Validate(h); err != nil {
		return err
	}
	if e.cfg.Validate != nil {
		if err := e.cfg.Validate(s); err != nil {
			return err
		}
	}
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return broker.ErrClosed
	}
	e.running.Add(1)
	e.mu.Unlock()
	defer e.running.Done()

	// rctx ends receiving: the caller's context or Close.
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-e.closing:
			cancel()
		case <-rctx.Done():
		}
	}()
	result := func() error {
		select {
		case <-e.closing:
			return broker.ErrClosed
		default:
			return nil
		}
	}
	// neverStarted is the result when Open kept failing until the end: the
	// caller's deadline passing before the subscription ever received is
	// an error (naming why Open failed), a cancellation or Close is not.
	neverStarted := func(err error) error {
		if res := result(); res != nil || ctx.Err() == nil || errors.Is(ctx.Err(), context.Canceled) {
			return res
		}
		return fmt.Errorf("%s: subscribe to %q: %w", e.cfg.Name, s.Topic, err)
	}

	ready := false
	failures := 0
	for {
		rn := newRun(e, s, h, ctx)
		r, err := e.d.Open(rctx, s, rn)
		if err != nil {
			rn.discard()
			if rctx.Err() != nil {
				if !ready {
					return neverStarted(err)
				}
				return result()
			}
			if errors.Is(err, broker.ErrInvalidSubscription) || errors.Is(err, broker.ErrInvalidPattern) {
				return err
			}
			failures++
			e.log.Warn(e.cfg.Name+": subscription could not start; retrying", "topic", s.Topic, "group", s.Group, "err", err)
			if !e.cfg.Reopen.Sleep(rctx, nil, failures) {
				if !ready {
					return neverStarted(err)
				}
				return result()
			}
			continue
		}
		if !ready {
			ready = true
			if s.Ready != nil {
				s.Ready()
			}
		}
		rn.setReceiver(r)
		start := time.Now()
		err = rn.loop(rctx)
		_ = r.Close()
		if rctx.Err() != nil {
			return result()
		}
		if errors.Is(err, broker.ErrInvalidSubscription) {
			return err
		}
		if time.Since(start) > 10*time.Second {
			failures = 0
		}
		failures++
		e.log.Warn(e.cfg.Name+": receiver broke; reopening", "topic", s.Topic, "group", s.Group, "err", err)
		if !e.cfg.Reopen.Sleep(rctx, nil, failures) {
			return result()
		}
	}
}

// item is a delivery the run holds.
type item struct {
	d       Delivery
	seq     uint64 // receive order, to release in order
	base    int    // attempts the broker recorded before this delivery
	attempt int    // handler calls by this run
	next    *item  // link in the ready queue, a key's pending list or the free list
	key     *keyState
	timer   *time.Timer // pending retry
}

// keyState exists while a key has an item ready, running or waiting to
// retry; later items of the key wait in its pending list.
type keyState struct {
	name       string
	head, tail *item
	active     *item
	revoked    bool
}

// run is one receiver's lifetime: a dispatcher (the loop) and Workers()
// worker goroutines.
type run struct {
	e      *Engine
	s      broker.Subscription
	h      broker.Handler
	r      Receiver
	redec  Redecoder
	dlq    string
	max    int
	base   context.Context // the handlers' parent: the Subscribe context's values, never cancelled by it
	stopCh chan struct{}   // closed when the run stops

	mu        sync.Mutex
	work      *sync.Cond // workers wait for ready items
	room      *sync.Cond // the dispatcher waits for room; Revoke waits for running items
	keys      map[string]*keyState
	ready     readyHeap          // items that may run now, earliest received first
	waiting   map[*item]struct{} // items waiting for their retry timer
	release   []*item            // items to release at the next flush
	freeItems *item
	freeKeys  []*keyState
	inflight  int
	seq       uint64
	stopping  bool
	revoking  func(*Delivery) bool // set while a Revoke drains
	rcvDone   bool
	workers   []*worker
	wg        sync.WaitGroup
}

type worker struct {
	ctx    context.Context
	cancel context.CancelFunc
	cur    *item // under run.mu
}

func newRun(e *Engine, s broker.Subscription, h broker.Handler, parent context.Context) *run {
	rn := &run{
		e: e, s: s, h: h, dlq: s.DeadLetterDestination(), max: s.InFlight(),
		base: context.WithoutCancel(parent), stopCh: make(chan struct{}),
		keys: make(map[string]*keyState), waiting: make(map[*item]struct{}),
	}
	rn.work = sync.NewCond(&rn.mu)
	rn.room = sync.NewCond(&rn.mu)
	rn.workers = make([]*worker, s.Workers())
	for i := range rn.workers {
		ctx, cancel := context.WithCancel(rn.base)
		rn.workers[i] = &worker{ctx: ctx, cancel: cancel}
	}
	return rn
}

func (rn *run) setReceiver(r Receiver) {
	rn.r = r
	rn.redec, _ = r.(Redecoder)
}

// Revoke implements Control. The messages of the revoked partitions that
// the engine holds are handled before it returns, so the new owner does not
// handle them again; a message waiting for a retry goes back at once with
// its key's later messages (its next attempt is the new owner's), as does
// one that fails meanwhile. After the drain timeout running handlers are
// cancelled and whatever is left goes back.
func (rn *run) Revoke(match func(*Delivery) bool) {
	rn.mu.Lock()
	rn.revoking = match
	for it := range rn.waiting {
		if match(&it.d) {
			it.timer.Stop()
			delete(rn.waiting, it)
			rn.collectLocked(it)
		}
	}
	timedOut := false
	t := time.AfterFunc(rn.e.cfg.DrainTimeout, func() {
		rn.mu.Lock()
		defer rn.mu.Unlock()
		timedOut = true
		rn.cutLocked(match)
		rn.room.Broadcast()
	})
	for !timedOut && rn.heldLocked(match) {
		rn.room.Wait()
	}
	for rn.runningLocked(match) {
		rn.room.Wait()
	}
	rn.revoking = nil
	rn.mu.Unlock()
	t.Stop()
	rn.flush()
	rn.mu.Lock()
	for name, ks := range rn.keys {
		if ks.revoked && ks.active == nil {
			delete(rn.keys, name)
		}
	}
	rn.mu.Unlock()
}

// heldLocked reports whether the run holds a message match selects.
func (rn *run) heldLocked(match func(*Delivery) bool) bool {
	if rn.runningLocked(match) {
		return true
	}
	for _, it := range rn.ready {
		if match(&it.d) {
			return true
		}
	}
	for it := range rn.waiting {
		if match(&it.d) {
			return true
		}
	}
	for _, ks := range rn.keys {
		for p := ks.head; p != nil; p = p.next {
			if match(&p.d) {
				return true
			}
		}
	}
	return false
}

func (rn *run) runningLocked(match func(*Delivery) bool) bool {
	for _, w := range rn.workers {
		if w.cur != nil && match(&w.cur.d) {
			return true
		}
	}
	return false
}

// cutLocked ends a revoke's drain: what match selects and has not started
// goes back, running handlers are cancelled (their messages go back too).
func (rn *run) cutLocked(match func(*Delivery) bool) {
	kept := rn.ready[:0]
	for _, it := range rn.ready {
		if match(&it.d) {
			rn.collectLocked(it)
		} else {
			kept = append(kept, it)
		}
	}
	clear(rn.ready[len(kept):])
	rn.ready = kept
	rn.ready.init()
	for _, ks := range rn.keys {
		if ks.active == nil || !match(&ks.active.d) {
			continue
		}
		rn.releasePendingLocked(ks)
		ks.revoked = true
	}
	for _, w := range rn.workers {
		if w.cur != nil && match(&w.cur.d) {
			w.cancel()
		}
	}
}

// collectLocked marks it, the active item of its key (or a keyless one),
// for release together with its key's later items: they must not run here
// before it runs elsewhere.
func (rn *run) collectLocked(it *item) {
	rn.release = append(rn.release, it)
	if ks := it.key; ks != nil {
		rn.releasePendingLocked(ks)
		ks.active, ks.revoked = nil, true
	}
}

// releasePendingLocked marks ks's pending items for release.
func (rn *run) releasePendingLocked(ks *keyState) {
	for p := ks.head; p != nil; {
		next := p.next
		p.next = nil
		rn.release = append(rn.release, p)
		p = next
	}
	ks.head, ks.tail = nil, nil
}

// loop receives until rctx ends or the receiver breaks, then drains.
func (rn *run) loop(rctx context.Context) error {
	for _, w := range rn.workers {
		rn.wg.Add(1)
		go rn.workLoop(w)
	}
	stopWatch := context.AfterFunc(rctx, func() {
		rn.mu.Lock()
		rn.rcvDone = true
		rn.room.Broadcast()
		rn.mu.Unlock()
	})
	defer stopWatch()
	var err error
	for {
		rn.mu.Lock()
		for rn.inflight >= rn.max && !rn.rcvDone {
			rn.room.Wait()
		}
		room := rn.max - rn.inflight
		done := rn.rcvDone
		rn.mu.Unlock()
		if done {
			break
		}
		if err = rn.r.Receive(rctx, room, rn.deliver); err != nil {
			break
		}
	}
	rn.stop()
	if rctx.Err() != nil {
		return nil
	}
	return err
}

// deliver takes a batch from the receiver.
func (rn *run) deliver(ds []Delivery) {
	rn.mu.Lock()
	ready := 0
	for i := range ds {
		it := rn.freeItems
		if it != nil {
			rn.freeItems = it.next
			it.next = nil
		} else {
			it = new(item)
		}
		it.d = ds[i]
		it.seq = rn.seq
		rn.seq++
		it.base = ds[i].Msg.Attempt
		rn.inflight++
		if k := ds[i].Msg.Key; k != "" {
			ks := rn.keys[k]
			if ks != nil && ks.active == nil {
				ks.revoked = false
			}
			if ks != nil && ks.active != nil {
				if ks.tail == nil {
					ks.head, ks.tail = it, it
				} else {
					ks.tail.next, ks.tail = it, it
				}
				it.key = ks
				continue
			}
			if ks == nil {
				if l := len(rn.freeKeys); l > 0 {
					ks = rn.freeKeys[l-1]
					rn.freeKeys = rn.freeKeys[:l-1]
				} else {
					ks = new(keyState)
				}
				ks.name = k
				rn.keys[k] = ks
			}
			ks.active = it
			it.key = ks
		}
		rn.pushReadyLocked(it)
		ready++
	}
	rn.e.st.received.Add(uint64(len(ds)))
	// Wake as many workers as there is new work, not all of them: a
	// broadcast for every batch has idle workers fight over the lock.
	for range min(ready, len(rn.workers)) {
		rn.work.Signal()
	}
	rn.mu.Unlock()
}

func (rn *run) pushReadyLocked(it *item) {
	it.next = nil
	rn.ready.push(it)
}

// readyHeap is a min-heap of items by receive order: with one handler a
// subscription runs messages in the order received, except where a key's
// earlier message still runs or waits for its retry.
type readyHeap []*item

func (h *readyHeap) push(it *item) {
	*h = append(*h, it)
	s := *h
	for i := len(s) - 1; i > 0; {
		p := (i - 1) / 2
		if s[p].seq <= s[i].seq {
			break
		}
		s[p], s[i] = s[i], s[p]
		i = p
	}
}

func (h *readyHeap) pop() *item {
	s := *h
	top := s[0]
	n := len(s) - 1
	s[0] = s[n]
	s[n] = nil
	s = s[:n]
	*h = s
	h.down(0)
	return top
}

func (h readyHeap) down(i int) {
	for {
		l := 2*i + 1
		if l >= len(h) {
			return
		}
		m := l
		if r := l + 1; r < len(h) && h[r].seq < h[l].seq {
			m = r
		}
		if h[i].seq <= h[m].seq {
			return
		}
		h[i], h[m] = h[m], h[i]
		i = m
	}
}

func (h readyHeap) init() {
	for i := len(h)/2 - 1; i >= 0; i-- {
		h.down(i)
	}
}

func (rn *run) workLoop(w *worker) {
	defer rn.wg.Done()
	rn.mu.Lock()
	for {
		for len(rn.ready) == 0 && !rn.stopping {
			rn.work.Wait()
		}
		if rn.stopping {
			rn.mu.Unlock()
			return
		}
		it := rn.ready.pop()
		w.cur = it
		if w.ctx.Err() != nil { // cut off by a revoke: a fresh context for the next item
			w.ctx, w.cancel = context.WithCancel(rn.base)
		}
		rn.mu.Unlock()
		rn.attempt(w, it)
		rn.mu.Lock()
		w.cur = nil
		rn.room.Broadcast() // a Revoke may wait for this item
	}
}

// span is one traced handler call: the context the tracers returned and
// when it started. Its zero value is an untraced call.
type span struct {
	ctx   context.Context
	start tracing.Mono
}

// traceStart calls the process tracers for m and returns the context the
// handler runs in. It neither copies nor allocates: the tracers read m
// (a nil Header stays nil).
func (rn *run) traceStart(ctx context.Context, m *broker.Message) (context.Context, span) {
	sp := span{start: tracing.Now()}
	d := broker.TraceProcessStartData{System: rn.e.cfg.Name, Topic: rn.s.Topic, Group: rn.s.Group, Message: *m}
	for _, t := range rn.e.proc {
		ctx = t.TraceProcessStart(ctx, d)
	}
	sp.ctx = ctx
	return ctx, sp
}

// traceEnd ends a traced call with its outcome; it does nothing for an
// untraced one.
func (rn *run) traceEnd(sp span, o broker.Outcome, err error) {
	if sp.ctx == nil {
		return
	}
	d := broker.TraceProcessEndData{Outcome: o, Err: err, Duration: sp.start.Since()}
	for _, t := range rn.e.proc {
		t.TraceProcessEnd(sp.ctx, d)
	}
}

// attempt calls the handler once on it and settles it or schedules its retry.
func (rn *run) attempt(w *worker, it *item) {
	it.attempt++
	m := rn.message(it)
	ctx := w.ctx
	var sp span
	if rn.e.procGate.Enabled(func(e broker.ProcessTraceEnabler) bool { return e.TraceProcessEnabled(ctx, rn.s.Topic, m.Header) }) {
		ctx, sp = rn.traceStart(ctx, &m)
	}
	err := rn.call(ctx, m)
	if err == nil {
		rn.r.Ack(&it.d)
		rn.e.st.handled.Add(1)
		rn.done(it)
		rn.traceEnd(sp, broker.OutcomeAcked, nil)
		return
	}
	if w.ctx.Err() != nil {
		// Cut off by the drain timeout or a revoke: no failed attempt.
		it.attempt--
		rn.toRelease(it)
		rn.traceEnd(sp, broker.OutcomeReleased, err)
		return
	}
	if broker.IsPermanent(err) || (rn.s.MaxAttempts > 0 && it.base+it.attempt >= rn.s.MaxAttempts) {
		rn.traceEnd(sp, rn.deadLetter(ctx, w, it, err), err)
		return
	}
	rn.mu.Lock()
	if rn.stopping || (it.key != nil && it.key.revoked) || (rn.revoking != nil && rn.revoking(&it.d)) {
		rn.collectLocked(it)
		rn.mu.Unlock()
		rn.traceEnd(sp, broker.OutcomeReleased, err)
		return
	}
	wait := rn.e.cfg.Retry.Wait(it.attempt)
	rn.waiting[it] = struct{}{}
	it.timer = time.AfterFunc(wait, func() { rn.retryDue(it) })
	rn.mu.Unlock()
	rn.e.st.retried.Add(1)
	rn.traceEnd(sp, broker.OutcomeRetry, err)
	rn.e.log.Debug(rn.e.cfg.Name+": handler failed; retrying", "topic", rn.s.Topic, "group", rn.s.Group, "id", m.ID, "attempt", m.Attempt, "backoff", wait, "err", err)
}

func (rn *run) retryDue(it *item) {
	rn.mu.Lock()
	defer rn.mu.Unlock()
	if _, ok := rn.waiting[it]; !ok {
		return // released by stop or revoke meanwhile
	}
	delete(rn.waiting, it)
	rn.pushReadyLocked(it) // received before what its key holds back
	rn.work.Signal()
}

// message returns the message for it's next attempt: as received for the
// first, rebuilt (or copied) for later ones and for the dead letter.
func (rn *run) message(it *item) broker.Message {
	var m broker.Message
	switch {
	case it.attempt == 1 && (rn.redec != nil || it.d.Msg.Header == nil):
		m = it.d.Msg
	case rn.redec != nil:
		m = rn.redec.Redecode(&it.d)
	default:
		// Without a Redecoder every attempt gets a copy of the Header as
		// received, so that a failed attempt's changes are not seen by the
		// next one (nor by the dead letter).
		m = it.d.Msg
		m.Header = maps.Clone(m.Header)
	}
	m.Attempt = it.base + it.attempt
	return m
}

// call runs the handler, turning a panic into a *broker.PanicError.
func (rn *run) call(ctx context.Context, m broker.Message) (err error) {
	defer func() {
		if p := recover(); p != nil {
			pe := &broker.PanicError{Value: p, Stack: debug.Stack()}
			rn.e.st.panics.Add(1)
			rn.e.log.Error(rn.e.cfg.Name+": handler panicked", "topic", rn.s.Topic, "group", rn.s.Group, "id", m.ID, "attempt", m.Attempt, "panic", p, "stack", string(pe.Stack))
			err = pe
		}
	}()
	return rn.h(ctx, m)
}

// deadLetter moves it to the dead-letter topic (or drops it without one)
// and acks it; while the broker refuses, it retries until the run stops.
// ctx is the attempt's (the tracers'); it returns what became of it.
func (rn *run) deadLetter(ctx context.Context, w *worker, it *item, cause error) broker.Outcome {
	// The message as received, whatever the handler changed: rebuilt by
	// the driver, or the received copy (attempts only ever got copies of
	// its Header; broker.DeadLetter copies it again).
	m := it.d.Msg
	if rn.redec != nil {
		m = rn.redec.Redecode(&it.d)
	}
	m.Attempt = it.base + it.attempt
	if rn.dlq == "" {
		rn.e.log.Warn(rn.e.cfg.Name+": dropping a message that failed for good (the subscription has no dead-letter topic)", "topic", rn.s.Topic, "group", rn.s.Group, "id", m.ID, "attempts", m.Attempt, "err", cause)
		rn.r.Ack(&it.d)
		rn.e.st.dropped.Add(1)
		rn.done(it)
		return broker.OutcomeDropped
	}
	dl := broker.DeadLetter(m, rn.s.Group, cause, time.Now())
	if len(rn.e.dead) > 0 {
		d := broker.TraceDeadLetterData{System: rn.e.cfg.Name, Topic: rn.s.Topic, Group: rn.s.Group, DeadLetterTopic: rn.dlq, Message: dl, Err: cause}
		for _, t := range rn.e.dead {
			t.TraceDeadLetter(ctx, d)
		}
	}
	for try := 1; ; try++ {
		err := rn.e.d.DeadLetter(w.ctx, rn.dlq, dl, &it.d)
		if err == nil {
			rn.r.Ack(&it.d)
			rn.e.log.Warn(rn.e.cfg.Name+": dead-lettered", "topic", rn.s.Topic, "group", rn.s.Group, "id", m.ID, "attempts", m.Attempt, "to", rn.dlq, "err", cause)
			rn.e.st.deadLettered.Add(1)
			rn.done(it)
			return broker.OutcomeDeadLettered
		}
		rn.e.log.Error(rn.e.cfg.Name+": dead-lettering failed; retrying", "topic", rn.s.Topic, "group", rn.s.Group, "id", m.ID, "to", rn.dlq, "err", err)
		if w.ctx.Err() != nil || !rn.e.cfg.Retry.Sleep(w.ctx, rn.stopCh, try) {
			// Stopping: keep the message with the broker. Its attempts
			// are not recorded there, so it is tried again.
			rn.toRelease(it)
			return broker.OutcomeReleased
		}
	}
}

// done recycles a settled item and passes its key's turn on.
func (rn *run) done(it *item) {
	rn.mu.Lock()
	rn.settleLocked(it)
	rn.mu.Unlock()
}

func (rn *run) settleLocked(it *item) {
	rn.inflight--
	if ks := it.key; ks != nil && ks.active == it {
		rn.passTurnLocked(ks)
	}
	*it = item{next: rn.freeItems}
	rn.freeItems = it
	if rn.inflight < rn.max {
		rn.room.Broadcast()
	}
}

// passTurnLocked hands ks's turn to its next pending item, or ends ks.
// Items pending on a revoked key arrived after the revoke (Revoke took the
// earlier ones), so they go on.
func (rn *run) passTurnLocked(ks *keyState) {
	switch next := ks.head; {
	case next != nil && !rn.stopping:
		ks.head = next.next
		if ks.head == nil {
			ks.tail = nil
		}
		ks.active, ks.revoked = next, false
		rn.pushReadyLocked(next)
		rn.work.Signal()
	case next == nil && !ks.revoked:
		delete(rn.keys, ks.name)
		*ks = keyState{}
		rn.freeKeys = append(rn.freeKeys, ks)
	default: // stopping (stop took the pending items), or revoked (Revoke cleans up)
		ks.active = nil
	}
}

// toRelease keeps it, with its key's later items, for the next flush (stop
// or revoke), which releases everything in receive order at once.
func (rn *run) toRelease(it *item) {
	rn.mu.Lock()
	rn.collectLocked(it)
	rn.mu.Unlock()
}

// flush releases what was collected, in receive order.
func (rn *run) flush() {
	rn.mu.Lock()
	its := rn.release
	rn.release = nil
	rn.mu.Unlock()
	if len(its) == 0 {
		return
	}
	sortItems(its)
	ds := make([]*Delivery, len(its))
	for i, it := range its {
		ds[i] = &it.d
	}
	rn.r.Release(ds)
	rn.e.st.released.Add(uint64(len(its)))
	rn.mu.Lock()
	for _, it := range its {
		it.key = nil // keys were handled by whoever collected them
		rn.settleLocked(it)
	}
	rn.mu.Unlock()
}

// stop ends the run: nothing new starts, queued and waiting items are
// released, running handlers get the drain timeout to finish.
func (rn *run) stop() {
	rn.mu.Lock()
	rn.stopping = true
	close(rn.stopCh)
	rn.release = append(rn.release, rn.ready...)
	clear(rn.ready)
	rn.ready = rn.ready[:0]
	for it := range rn.waiting {
		it.timer.Stop()
		rn.release = append(rn.release, it)
	}
	clear(rn.waiting)
	for _, ks := range rn.keys {
		rn.releasePendingLocked(ks)
	}
	rn.work.Broadcast()
	rn.mu.Unlock()
	t := time.AfterFunc(rn.e.cfg.DrainTimeout, func() {
		rn.mu.Lock()
		defer rn.mu.Unlock()
		for _, w := range rn.workers {
			w.cancel()
		}
	})
	rn.wg.Wait()
	t.Stop()
	for _, w := range rn.workers {
		w.cancel()
	}
	rn.flush()
}

func sortItems(its []*item) {
	slices.SortFunc(its, func(a, b *item) int { return cmp.Compare(a.seq, b.seq) })
}

// discard cancels the workers' contexts of a run that never started.
func (rn *run) discard() {
	for _, w := range rn.workers {
		w.cancel()
	}
}
