package kafka

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/go-integration/patterns/broker"
	"github.com/go-integration/patterns/internal/hooks"
)

// ErrFenced is returned when another producer with the same transactional
// ID started: Kafka fenced this one, whose transactions can no longer
// commit. Only one process may use a transactional ID at a time; the newer
// one wins.
var ErrFenced = errors.New("kafka: transactional producer fenced by a newer one with the same transactional ID")

// DefaultTransactionRecords is how many input records one transaction of a
// Transformer takes at most when the Subscription's MaxInFlight is zero.
const DefaultTransactionRecords = 1000

// Emit hands output messages to a Transformer: they are produced to topic
// in the transaction of the input message being handled, and only if its
// handler returns nil. Emit keeps msgs; the handler must not change them
// afterwards. An empty Message.ID is derived from the input's ID and the
// output's position ("<input id>.<n>"), so every attempt gives an output the
// same ID.
type Emit func(topic string, msgs ...broker.Message)

// TransformFunc handles one input message of a Transformer, emitting its
// outputs through emit. A nil return commits the outputs together with the
// input's offset; an error discards them (see Transformer.Run).
type TransformFunc func(ctx context.Context, m broker.Message, emit Emit) error

// Transformer reads a topic in a consumer group and produces what its
// handler emits in Kafka transactions that also commit the input offsets
// (consume-transform-produce, exactly once): a downstream consumer reading
// committed records only (read_committed, as this package's Subscriber
// does) sees each output of each input exactly once, whatever crashes,
// rebalances or retries happen. It is built on franz-go's
// kgo.GroupTransactSession.
type Transformer struct {
	cfg   config
	txID  string
	admin *Admin
	known sync.Map // output topics checked

	mu      sync.Mutex
	closing chan struct{}
	runDone chan struct{} // nil when no Run is active
	stopRun context.CancelFunc

	st      transformCounters
	process []broker.ProcessTracer
}

type transformCounters struct {
	received, handled, emitted, committed, aborted, retried, deadLettered, dropped, panics atomic.Uint64
}

// TransformerStats are a Transformer's counters since NewTransformer.
type TransformerStats struct {
	Received     uint64 // input records handed to the handler (each attempt counts)
	Handled      uint64 // input records whose transaction committed (handled, dead-lettered, dropped, or skipped by Keys)
	Emitted      uint64 // output messages in committed transactions
	Committed    uint64 // transactions committed
	Aborted      uint64 // transactions aborted (a retry, a rebalance, a failed produce, shutdown)
	Retried      uint64 // handler errors that aborted a transaction to try again
	DeadLettered uint64 // input records sent to the dead-letter topic (in committed transactions)
	Dropped      uint64 // input records that failed for good without a dead-letter topic
	Panics       uint64 // handler panics
}

// NewTransformer returns a Transformer whose producer uses transactionalID.
// The ID must be stable across restarts of one instance and unique among
// live instances: a restarted instance with the same ID fences its
// predecessor and aborts its open transaction; two live instances with one
// ID fence each other (the older gets ErrFenced). It accepts every
// SubscriberOption; those that apply are WithClientOptions, WithLogger,
// WithCreateTopics (input, output and dead-letter topics),
// WithMaxMessageBytes, WithStartAt (Earliest, Latest or AtTime),
// WithRetryBackoff, WithDrainTimeout, WithGroupTimeouts and WithTracer with
// a broker.ProcessTracer (System "kafka"; a tracer implementing no
// ProcessTracer is an error); the others are ignored. It does not connect
// until Run.
func NewTransformer(brokers []string, transactionalID string, opts ...SubscriberOption) (*Transformer, error) {
	if transactionalID == "" {
		return nil, invalid("NewTransformer: empty transactional ID")
	}
	cfg, err := subscriberConfig(brokers, opts)
	if err != nil {
		return nil, err
	}
	if cfg.start.kind == kindExact {
		return nil, invalid("NewTransformer: WithStartAt(AtOffsets(...)) is not supported; use Admin.ResetOffsets")
	}
	process := hooks.Pick[broker.ProcessTracer](cfg.tracers)
	if len(process) != len(cfg.tracers) {
		return nil, invalid("WithTracer: a Transformer calls broker.ProcessTracer only; a tracer implements no ProcessTracer")
	}
	adm, err := newAdmin(cfg)
	if err != nil {
		return nil, err
	}
	return &Transformer{cfg: cfg, txID: transactionalID, admin: adm, closing: make(chan struct{}), process: process}, nil
}

// Admin returns the Admin the transformer uses for topics; valid until Close.
func (t *Transformer) Admin() *Admin { return t.admin }

// Stats returns the transformer's counters.
func (t *Transformer) Stats() TransformerStats {
	return TransformerStats{
		Received: t.st.received.Load(), Handled: t.st.handled.Load(), Emitted: t.st.emitted.Load(),
		Committed: t.st.committed.Load(), Aborted: t.st.aborted.Load(), Retried: t.st.retried.Load(),
		DeadLettered: t.st.deadLettered.Load(), Dropped: t.st.dropped.Load(), Panics: t.st.panics.Load(),
	}
}

// Close stops Run: the transaction in flight is finished and committed for
// at most the drain timeout (WithDrainTimeout), then aborted; Run returns
// ErrClosed (broker.ErrClosed). Close waits for Run and is idempotent.
func (t *Transformer) Close() error {
	t.mu.Lock()
	select {
	case <-t.closing:
	default:
		close(t.closing)
	}
	done, stop := t.runDone, t.stopRun
	t.mu.Unlock()
	if done != nil {
		tm := time.NewTimer(t.cfg.drainTimeout)
		select {
		case <-done:
		case <-tm.C:
			stop()
			<-done
		}
		tm.Stop()
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.admin != nil {
		t.admin.Close()
		t.admin = nil
	}
	return nil
}

func (t *Transformer) isClosed() bool {
	select {
	case <-t.closing:
		return true
	default:
		return false
	}
}

// Run consumes sub.Topic in sub.Group (required) and calls h for each
// record, one at a time in the order of each partition, until ctx ends (it
// returns nil), Close is called (broker.ErrClosed) or a fatal error: the
// producer was fenced (ErrFenced), the input topic does not exist
// (broker.ErrInvalidSubscription wrapping ErrUnknownTopic), or the
// transaction cannot be used (an error from franz-go).
//
// Each transaction takes the records polled at once, at most sub.MaxInFlight
// (DefaultTransactionRecords when zero), and commits their outputs and
// offsets together. Records whose key matches no sub.Keys pattern are
// committed unhandled. Up to sub.Concurrency handlers run at once, one key
// at a time in offset order (records without a key are independent); each
// record's outputs are produced when its handler returns, so outputs keep
// the order of their keys' inputs.
//
// A handler error aborts the transaction: every output of the batch is
// discarded, the group's position goes back to the last commit, and the
// batch is read again after a full-jitter backoff (WithRetryBackoff), the
// failing record with Message.Attempt one higher. After sub.MaxAttempts
// attempts (zero: no limit), or at once for a broker.Permanent error or a
// panic, the record goes to sub.DeadLetterDestination() inside the
// transaction (without its outputs) and the batch goes on; with no
// dead-letter topic it is logged and dropped. An output Kafka refuses for
// good (too large, an unknown topic without WithCreateTopics, an invalid
// topic name) fails its input record the same way, as a permanent error.
// A rebalance that revokes partitions while a transaction is open aborts it;
// the new owners read those records again. When ctx ends the open
// transaction is aborted (its records are read again by the next member).
func (t *Transformer) Run(ctx context.Context, sub broker.Subscription, h TransformFunc) error {
	if h == nil {
		return fmt.Errorf("%w: nil handler", broker.ErrInvalidSubscription)
	}
	if err := sub.Validate(func(context.Context, broker.Message) error { return nil }); err != nil {
		return err
	}
	if sub.Group == "" {
		return fmt.Errorf("%w: a Transformer needs a Group (its offsets commit in the transactions)", broker.ErrInvalidSubscription)
	}
	if err := validateSubscriptionTopics(sub); err != nil {
		return err
	}
	keys, err := broker.CompilePatterns(sub.Keys)
	if err != nil {
		return err
	}
	t.mu.Lock()
	if t.isClosed() {
		t.mu.Unlock()
		return broker.ErrClosed
	}
	if t.runDone != nil {
		t.mu.Unlock()
		return fmt.Errorf("kafka: Transformer.Run is already running")
	}
	hard, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	t.runDone, t.stopRun = done, stop
	t.mu.Unlock()
	defer func() {
		stop()
		t.mu.Lock()
		t.runDone, t.stopRun = nil, nil
		t.mu.Unlock()
		close(done)
	}()

	for _, topic := range []string{sub.Topic, sub.DeadLetterDestination()} {
		if topic == "" {
			continue
		}
		if err := t.admin.requireTopic(hard, topic, t.cfg.createTopics, t.cfg.topicDefaults); err != nil {
			if errors.Is(err, ErrUnknownTopic) {
				err = fmt.Errorf("%w: %w", broker.ErrInvalidSubscription, err)
			}
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		t.known.Store(topic, struct{}{})
	}
	batch := sub.MaxInFlight
	if batch == 0 {
		batch = DefaultTransactionRecords
	}
	r := &txRun{t: t, sub: sub, keys: keys, h: h, batch: batch, attempts: map[txPos]int{}, poisoned: map[txPos]error{}, drop: map[txPos]bool{}}
	if err := r.open(); err != nil {
		return err
	}
	defer r.sess.Close()
	err = r.loop(ctx, hard)
	if err == nil && t.isClosed() && ctx.Err() == nil {
		return broker.ErrClosed
	}
	return err
}

// txPos identifies an input record.
type txPos struct {
	part int32
	off  int64
}

// txRun is the state of one Run call.
type txRun struct {
	t     *Transformer
	sub   broker.Subscription
	keys  broker.Patterns
	h     TransformFunc
	batch int
	sess  *kgo.GroupTransactSession

	mapMu    sync.Mutex      // the maps below, shared by concurrent handlers
	attempts map[txPos]int   // failed attempts of records not yet committed
	poisoned map[txPos]error // records whose outputs (or dead letter) Kafka refused for good
	drop     map[txPos]bool  // poisoned records whose dead letter was refused too
	failures int             // consecutive aborted batches, for the backoff

	// The produce results of the open transaction.
	pmu      sync.Mutex
	prodErr  error
	prodFrom txPos
}

func (r *txRun) open() error {
	c := &r.t.cfg
	reset := kgo.NewOffset().AtStart()
	switch c.start.kind {
	case kindLatest:
		reset = kgo.NewOffset().AtEnd()
	case kindTime:
		reset = kgo.NewOffset().AfterMilli(c.start.at.UnixMilli())
	}
	opts := []kgo.Opt{
		kgo.TransactionalID(r.t.txID),
		kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.FetchMaxWait(500 * time.Millisecond),
		kgo.ConsumerGroup(r.sub.Group),
		kgo.ConsumeTopics(r.sub.Topic),
		kgo.ConsumeResetOffset(reset),
	}
	opts = append(opts, c.groupOpts()...)
	opts = append(opts, c.baseOpts(r.t.admin.hook)...)
	sess, err := kgo.NewGroupTransactSession(opts...)
	if err != nil {
		return fmt.Errorf("%w: kafka: new transactional session: %w", broker.ErrInvalidSubscription, err)
	}
	r.sess = sess
	return nil
}

// fatal maps an error that ends Run.
func txFatal(err error) error {
	if errors.Is(err, kerr.ProducerFenced) || errors.Is(err, kerr.InvalidProducerEpoch) || errors.Is(err, kerr.TransactionalIDAuthorizationFailed) {
		return fmt.Errorf("%w: %w", ErrFenced, err)
	}
	return nil
}

func (r *txRun) loop(ctx, hard context.Context) error {
	log := r.t.cfg.logger
	for {
		if ctx.Err() != nil || r.t.isClosed() {
			return nil
		}
		pctx, cancel := context.WithCancel(hard)
		stopPoll := context.AfterFunc(ctx, cancel)
		go func() { // Close ends a poll that waits for records
			select {
			case <-r.t.closing:
				cancel()
			case <-pctx.Done():
			}
		}()
		fs := r.sess.PollRecords(pctx, r.batch)
		stopPoll()
		cancel()
		if fs.IsClientClosed() || ctx.Err() != nil || r.t.isClosed() {
			return nil
		}
		var fetchErr error
		fs.EachError(func(topic string, p int32, err error) {
			if errors.Is(err, context.Canceled) {
				return
			}
			if errors.Is(err, kerr.UnknownTopicOrPartition) {
				fetchErr = fmt.Errorf("%w: %w: %q: %w", broker.ErrInvalidSubscription, ErrUnknownTopic, topic, err)
				return
			}
			log.Warn("kafka: transformer fetch error", "topic", topic, "partition", p, "err", err)
		})
		if fetchErr != nil {
			return fetchErr
		}
		recs := fs.Records()
		// Take what else is buffered now, up to the batch size.
		for len(recs) > 0 && len(recs) < r.batch {
			nctx, ncancel := context.WithCancel(hard)
			ncancel()
			more := r.sess.PollRecords(nctx, r.batch-len(recs)).Records()
			if len(more) == 0 {
				break
			}
			recs = append(recs, more...)
		}
		if len(recs) == 0 {
			continue
		}
		if err := r.transact(ctx, hard, recs); err != nil {
			return err
		}
	}
}

// transact runs one transaction over recs.
func (r *txRun) transact(ctx, hard context.Context, recs []*kgo.Record) error {
	t := r.t
	log := t.cfg.logger
	if err := r.sess.Begin(); err != nil {
		if f := txFatal(err); f != nil {
			return f
		}
		return fmt.Errorf("kafka: begin transaction: %w", err)
	}
	r.pmu.Lock()
	r.prodErr = nil
	r.pmu.Unlock()

	var tally txTally
	if n := r.sub.Concurrency; n > 1 {
		r.runConcurrent(hard, recs, n, &tally)
	} else {
		for _, rec := range recs {
			if !r.one(hard, rec, &tally) {
				break
			}
		}
	}
	handled, emitted, dead, dropped := tally.handled.Load(), tally.emitted.Load(), tally.dead.Load(), tally.dropped.Load()
	retryErr, handlerRetry := tally.retryErr, tally.handlerRetry

	commit := retryErr == nil && ctx.Err() == nil
	if commit {
		// Flush first to learn which output failed: a refused output
		// poisons its input, the transaction aborts, and the batch runs
		// again with that input dead-lettered.
		if err := r.sess.Client().Flush(hard); err != nil {
			commit = false
			retryErr = err
		} else {
			r.pmu.Lock()
			perr, from := r.prodErr, r.prodFrom
			r.pmu.Unlock()
			if perr != nil {
				if f := txFatal(perr); f != nil {
					r.end(false)
					return f
				}
				commit = false
				retryErr = perr
				if txRefused(perr) {
					if _, again := r.poisoned[from]; again {
						r.drop[from] = true // its dead letter was refused too
					}
					r.poisoned[from] = broker.Permanent(perr)
					log.Error("kafka: transformer output refused; its input fails for good", "partition", from.part, "offset", from.off, "err", perr)
				}
			}
		}
	}
	committed, err := r.end(commit)
	if err != nil {
		if f := txFatal(err); f != nil {
			return f
		}
		if ctx.Err() != nil || t.isClosed() && hard.Err() != nil {
			return nil
		}
		log.Warn("kafka: transformer could not end the transaction; reading the batch again", "err", err)
		committed = false
		if retryErr == nil {
			retryErr = err
		}
	}
	if committed {
		t.st.committed.Add(1)
		t.st.handled.Add(handled)
		t.st.emitted.Add(emitted)
		t.st.deadLettered.Add(dead)
		t.st.dropped.Add(dropped)
		for _, rec := range recs {
			pos := txPos{rec.Partition, rec.Offset}
			delete(r.attempts, pos)
			delete(r.poisoned, pos)
			delete(r.drop, pos)
		}
		r.failures = 0
		return nil
	}
	t.st.aborted.Add(1)
	if ctx.Err() != nil || t.isClosed() {
		return nil
	}
	if retryErr == nil {
		// A rebalance revoked partitions: the new owners read them
		// again. Forget the records' attempts (some may have moved to
		// another member), which keeps the maps bounded.
		log.Info("kafka: transformer transaction aborted by a rebalance")
		clear(r.attempts)
		clear(r.poisoned)
		clear(r.drop)
		return nil
	}
	if handlerRetry {
		t.st.retried.Add(1)
	}
	r.failures++
	t.cfg.retry.Sleep(hard, t.closing, r.failures)
	return nil
}

// txTally is what one transaction did; retryErr is set by the first record
// that needs the transaction aborted.
type txTally struct {
	handled, emitted, dead, dropped atomic.Uint64

	mu           sync.Mutex
	retryErr     error
	handlerRetry bool
	stop         atomic.Bool // a record asked for an abort: take no more
}

func (y *txTally) abort(err error, handler bool) {
	y.mu.Lock()
	if y.retryErr == nil {
		y.retryErr, y.handlerRetry = err, handler
	}
	y.mu.Unlock()
	y.stop.Store(true)
}

// runConcurrent handles recs with up to n handlers at once, one key at a
// time in record order (records without a key are independent).
func (r *txRun) runConcurrent(ctx context.Context, recs []*kgo.Record, n int, y *txTally) {
	var groups [][]*kgo.Record
	byKey := map[string]int{}
	for _, rec := range recs {
		if len(rec.Key) == 0 {
			groups = append(groups, []*kgo.Record{rec})
			continue
		}
		i, ok := byKey[string(rec.Key)]
		if !ok {
			i = len(groups)
			byKey[string(rec.Key)] = i
			groups = append(groups, nil)
		}
		groups[i] = append(groups[i], rec)
	}
	next := make(chan []*kgo.Record)
	var wg sync.WaitGroup
	for range min(n, len(groups)) {
		wg.Go(func() {
			for g := range next {
				for _, rec := range g {
					if y.stop.Load() || !r.one(ctx, rec, y) {
						break
					}
				}
			}
		})
	}
	for _, g := range groups {
		if y.stop.Load() {
			break
		}
		next <- g
	}
	close(next)
	wg.Wait()
}

// one handles a record in the open transaction: its outputs, or its dead
// letter, join the transaction. It reports false when the transaction must
// abort (a retry, or ctx ended).
func (r *txRun) one(hard context.Context, rec *kgo.Record, y *txTally) bool {
	t := r.t
	log := t.cfg.logger
	pos := txPos{rec.Partition, rec.Offset}
	if len(r.keys) > 0 && !r.keys.Match(stringOf(rec.Key)) {
		y.handled.Add(1)
		return true
	}
	m := fromRecord(rec)
	r.mapMu.Lock()
	m.Attempt = r.attempts[pos] + 1
	drop := r.drop[pos]
	perr, poisoned := r.poisoned[pos]
	r.mapMu.Unlock()
	var cause error
	if drop {
		y.handled.Add(1)
		y.dropped.Add(1)
		log.Error("kafka: transformer dropped a record whose dead letter Kafka refused", "topic", rec.Topic, "partition", rec.Partition, "offset", rec.Offset, "id", m.ID, "err", perr)
		return true
	}
	if poisoned {
		cause = perr
	} else {
		t.st.received.Add(1)
		hctx, started := r.traceStart(hard, m)
		outs, err := r.call(hctx, m)
		if err == nil {
			r.traceEnd(hctx, started, broker.OutcomeAcked, nil)
			for i := range outs {
				r.produce(hard, pos, &outs[i])
			}
			y.emitted.Add(uint64(len(outs)))
			y.handled.Add(1)
			return true
		}
		if hard.Err() != nil {
			r.traceEnd(hctx, started, broker.OutcomeReleased, err)
			y.abort(hard.Err(), false)
			return false
		}
		permanent := broker.IsPermanent(err) || errors.Is(err, broker.ErrHandlerPanic)
		if !permanent && (r.sub.MaxAttempts == 0 || m.Attempt < r.sub.MaxAttempts) {
			r.traceEnd(hctx, started, broker.OutcomeRetry, err)
			r.mapMu.Lock()
			r.attempts[pos]++
			r.mapMu.Unlock()
			y.abort(err, true)
			log.Debug("kafka: transformer handler failed; aborting the transaction to retry", "topic", rec.Topic, "partition", rec.Partition, "offset", rec.Offset, "attempt", m.Attempt, "err", err)
			return false
		}
		cause = err
		// If this transaction aborts, the batch runs again: the record
		// goes straight to its dead letter then.
		r.mapMu.Lock()
		r.poisoned[pos] = err
		r.mapMu.Unlock()
		outcome := broker.OutcomeDropped
		if r.sub.DeadLetterDestination() != "" {
			outcome = broker.OutcomeDeadLettered
		}
		r.traceEnd(hctx, started, outcome, err)
	}
	// Failed for good: dead-letter it in this transaction, or drop it.
	y.handled.Add(1)
	if dl := r.sub.DeadLetterDestination(); dl != "" {
		d := broker.DeadLetter(m, r.sub.Group, cause, time.Now())
		d.Header[broker.HeaderOriginPartition] = strconv.Itoa(int(rec.Partition))
		d.Header[broker.HeaderOriginOffset] = strconv.FormatInt(rec.Offset, 10)
		r.produce(hard, pos, &d)
		y.dead.Add(1)
		log.Error("kafka: transformer dead-lettered a record", "topic", rec.Topic, "partition", rec.Partition, "offset", rec.Offset, "id", m.ID, "dead_letter_topic", dl, "err", cause)
	} else {
		y.dropped.Add(1)
		log.Error("kafka: transformer dropped a record that failed for good (no dead-letter topic)", "topic", rec.Topic, "partition", rec.Partition, "offset", rec.Offset, "id", m.ID, "err", cause)
	}
	return true
}

// traceStart calls the ProcessTracers before a handler call.
func (r *txRun) traceStart(ctx context.Context, m broker.Message) (context.Context, time.Time) {
	if len(r.t.process) == 0 {
		return ctx, time.Time{}
	}
	d := broker.TraceProcessStartData{System: "kafka", Topic: r.sub.Topic, Group: r.sub.Group, Message: m}
	for _, tr := range r.t.process {
		ctx = tr.TraceProcessStart(ctx, d)
	}
	return ctx, time.Now()
}

// traceEnd calls the ProcessTracers after a handler call. Acked means the
// handler succeeded and its outputs joined the transaction; if the
// transaction aborts, the record is handled again (another Start).
func (r *txRun) traceEnd(ctx context.Context, started time.Time, o broker.Outcome, err error) {
	if len(r.t.process) == 0 {
		return
	}
	d := broker.TraceProcessEndData{Outcome: o, Err: err, Duration: time.Since(started)}
	for _, tr := range r.t.process {
		tr.TraceProcessEnd(ctx, d)
	}
}

// end ends the open transaction; after Close's drain timeout (hard ended)
// it still gets a short bounded context, so the abort reaches Kafka.
func (r *txRun) end(commit bool) (bool, error) {
	ctx, cancel := context.WithTimeout(context.Background(), max(r.t.cfg.drainTimeout, 10*time.Second))
	defer cancel()
	return r.sess.End(ctx, kgo.TransactionEndTry(commit))
}

// refused reports whether Kafka refused an output for good.
func txRefused(err error) bool {
	return errors.Is(err, kerr.MessageTooLarge) || errors.Is(err, kerr.RecordListTooLarge) ||
		errors.Is(err, kerr.InvalidTopicException) || errors.Is(err, kerr.UnknownTopicOrPartition) ||
		errors.Is(err, kerr.InvalidRecord) || errors.Is(err, broker.ErrInvalidMessage) || errors.Is(err, ErrUnknownTopic)
}

// txOut is an output message and its topic.
type txOut struct {
	topic string
	m     broker.Message
}

// call runs the handler, collecting what it emits; an emit to a topic that
// cannot be used fails the call for good.
func (r *txRun) call(ctx context.Context, m broker.Message) (outs []txOut, err error) {
	var emitErr error
	n := 0
	emit := func(topic string, msgs ...broker.Message) {
		if emitErr != nil {
			return
		}
		if err := r.checkTopic(ctx, topic); err != nil {
			emitErr = broker.Permanent(fmt.Errorf("emit to %q: %w", topic, err))
			return
		}
		for _, o := range msgs {
			if o.ID == "" {
				o.ID = m.ID + "." + strconv.Itoa(n)
			}
			n++
			outs = append(outs, txOut{topic: topic, m: o})
		}
	}
	defer func() {
		if v := recover(); v != nil {
			r.t.st.panics.Add(1)
			err = &broker.PanicError{Value: v, Stack: debug.Stack()}
			outs = nil
		}
	}()
	err = r.h(ctx, m, emit)
	if err == nil && emitErr != nil {
		err = emitErr
	}
	if err != nil {
		outs = nil
	}
	return outs, err
}

// checkTopic checks an output topic once: its name, and that it exists
// (creating it with WithCreateTopics).
func (r *txRun) checkTopic(ctx context.Context, topic string) error {
	if _, ok := r.t.known.Load(topic); ok {
		return nil
	}
	if err := validateTopicName(topic, broker.ErrInvalidMessage); err != nil {
		return err
	}
	if err := r.t.admin.requireTopic(ctx, topic, r.t.cfg.createTopics, r.t.cfg.topicDefaults); err != nil {
		return err
	}
	r.t.known.Store(topic, struct{}{})
	return nil
}

// produce adds an output (or a dead letter: a message whose topic is the
// dead-letter topic) of the input at pos to the open transaction.
func (r *txRun) produce(ctx context.Context, pos txPos, o any) {
	var rec *kgo.Record
	switch o := o.(type) {
	case *txOut:
		prepare(&o.m, time.Now(), nil)
		rec = toRecord(o.topic, &o.m)
	case *broker.Message:
		rec = toRecord(r.sub.DeadLetterDestination(), o)
	}
	r.sess.Produce(ctx, rec, func(rec *kgo.Record, err error) {
		if err == nil {
			return
		}
		r.pmu.Lock()
		if r.prodErr == nil {
			r.prodErr = r.t.admin.hook.publishError(ctx, rec.Topic, messageID(rec), recordSize(rec), err)
			r.prodFrom = pos
		}
		r.pmu.Unlock()
	})
}
