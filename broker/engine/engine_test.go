package engine_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/go-integration/patterns/broker"
	"github.com/go-integration/patterns/broker/engine"
)

// fakeDriver hands out fakeReceivers fed by the test. It records what the
// engine does with each delivery.
type fakeDriver struct {
	mu       sync.Mutex
	opens    int
	openErrs []error // returned by the next Opens, in order
	recv     *fakeReceiver
	ctl      engine.Control
	dead     []broker.Message
	deadErr  error
	opened   chan *fakeReceiver
}

func newFakeDriver() *fakeDriver { return &fakeDriver{opened: make(chan *fakeReceiver, 16)} }

func (d *fakeDriver) Open(ctx context.Context, s broker.Subscription, c engine.Control) (engine.Receiver, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.opens++
	if len(d.openErrs) > 0 {
		err := d.openErrs[0]
		d.openErrs = d.openErrs[1:]
		if err != nil {
			return nil, err
		}
	}
	r := &fakeReceiver{in: make(chan engine.Delivery, 1024), broken: make(chan error, 1)}
	d.recv, d.ctl = r, c
	d.opened <- r
	return r, nil
}

func (d *fakeDriver) DeadLetter(ctx context.Context, topic string, m broker.Message, from *engine.Delivery) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.deadErr != nil {
		return d.deadErr
	}
	m.Topic = topic
	d.dead = append(d.dead, m)
	return nil
}

type fakeReceiver struct {
	in     chan engine.Delivery
	broken chan error

	mu       sync.Mutex
	held     int // delivered, not yet acked or released
	maxHeld  int
	acked    []uint64
	released [][]uint64
	closed   bool
}

func (r *fakeReceiver) Receive(ctx context.Context, limit int, deliver func([]engine.Delivery)) error {
	var batch []engine.Delivery
	select {
	case d := <-r.in:
		batch = append(batch, d)
	case err := <-r.broken:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
	for len(batch) < limit {
		select {
		case d := <-r.in:
			batch = append(batch, d)
			continue
		default:
		}
		break
	}
	r.mu.Lock()
	r.held += len(batch)
	r.maxHeld = max(r.maxHeld, r.held)
	r.mu.Unlock()
	deliver(batch)
	return nil
}

func (r *fakeReceiver) Ack(d *engine.Delivery) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.held--
	r.acked = append(r.acked, d.Tag)
}

func (r *fakeReceiver) Release(ds []*engine.Delivery) {
	r.mu.Lock()
	defer r.mu.Unlock()
	tags := make([]uint64, len(ds))
	for i, d := range ds {
		tags[i] = d.Tag
	}
	r.held -= len(ds)
	r.released = append(r.released, tags)
}

func (r *fakeReceiver) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.closed = true
	return nil
}

func (r *fakeReceiver) snapshot() (acked []uint64, released [][]uint64, held int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.acked), slices.Clone(r.released), r.held
}

func send(r *fakeReceiver, tag uint64, key string, part int32) {
	r.in <- engine.Delivery{Msg: broker.Message{ID: fmt.Sprint("m", tag), Key: key, Topic: "t"}, Tag: tag, Part: part}
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func newEngine(t *testing.T, d engine.Driver, cfg engine.Config) *engine.Engine {
	t.Helper()
	cfg.Logger = quiet()
	e, err := engine.New(d, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// start runs Subscribe in the background and waits for Ready.
func start(t *testing.T, e *engine.Engine, d *fakeDriver, s broker.Subscription, h broker.Handler) (*fakeReceiver, context.CancelFunc, chan error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan struct{})
	s.Ready = func() { close(ready) }
	errc := make(chan error, 1)
	go func() { errc <- e.Subscribe(ctx, s, h) }()
	select {
	case <-ready:
	case err := <-errc:
		t.Fatalf("Subscribe returned before Ready: %v", err)
	}
	return <-d.opened, cancel, errc
}

func TestInFlightBoundAndConcurrency(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d := newFakeDriver()
		e := newEngine(t, d, engine.Config{})
		var running, peak atomic.Int32
		release := make(chan struct{})
		h := func(ctx context.Context, m broker.Message) error {
			n := running.Add(1)
			for {
				p := peak.Load()
				if n <= p || peak.CompareAndSwap(p, n) {
					break
				}
			}
			<-release
			running.Add(-1)
			return nil
		}
		r, cancel, errc := start(t, e, d, broker.Subscription{Topic: "t", Group: "g", Concurrency: 4, MaxInFlight: 10}, h)
		for i := range 100 {
			send(r, uint64(i), fmt.Sprint("k", i%32), 0)
		}
		synctest.Wait()
		if _, _, held := r.snapshot(); held != 10 {
			t.Fatalf("engine holds %d messages while handlers block, want MaxInFlight 10", held)
		}
		if p := peak.Load(); p != 4 {
			t.Fatalf("%d handlers ran at once, want Concurrency 4", p)
		}
		close(release)
		for {
			synctest.Wait()
			if acked, _, _ := r.snapshot(); len(acked) == 100 {
				break
			}
		}
		if r.maxHeld > 10 {
			t.Fatalf("engine held up to %d messages, over MaxInFlight 10", r.maxHeld)
		}
		cancel()
		if err := <-errc; err != nil {
			t.Fatalf("Subscribe = %v after its context ended, want nil", err)
		}
	})
}

func TestOrderPerKeyWithRetries(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d := newFakeDriver()
		e := newEngine(t, d, engine.Config{})
		var mu sync.Mutex
		var seen []string
		h := func(ctx context.Context, m broker.Message) error {
			mu.Lock()
			seen = append(seen, fmt.Sprintf("%s/%d", m.ID, m.Attempt))
			mu.Unlock()
			if m.ID == "m1" && m.Attempt < 3 {
				return errors.New("not yet")
			}
			return nil
		}
		r, cancel, errc := start(t, e, d, broker.Subscription{Topic: "t", Group: "g", Concurrency: 4}, h)
		send(r, 1, "a", 0)
		send(r, 2, "a", 0)
		send(r, 3, "b", 0)
		send(r, 4, "a", 0)
		time.Sleep(time.Minute) // fake time: every backoff passes
		synctest.Wait()
		mu.Lock()
		var a []string
		for _, s := range seen {
			if !strings.HasPrefix(s, "m3") {
				a = append(a, s)
			}
		}
		mu.Unlock()
		if got := strings.Join(a, " "); got != "m1/1 m1/2 m1/3 m2/1 m4/1" {
			t.Fatalf("key a handled as %q, want m1/1 m1/2 m1/3 m2/1 m4/1", got)
		}
		if acked, _, _ := r.snapshot(); len(acked) != 4 {
			t.Fatalf("acked %v, want all 4", acked)
		}
		cancel()
		<-errc
	})
}

func TestStopReleasesInReceiveOrderAndDrains(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d := newFakeDriver()
		e := newEngine(t, d, engine.Config{})
		started := make(chan struct{})
		finish := make(chan struct{})
		var ctxErr error
		h := func(ctx context.Context, m broker.Message) error {
			if m.ID == "m0" {
				close(started)
				<-finish
				ctxErr = ctx.Err()
			}
			return nil
		}
		r, cancel, errc := start(t, e, d, broker.Subscription{Topic: "t", Group: "g", Concurrency: 1}, h)
		for i := range 6 {
			send(r, uint64(i), fmt.Sprint("k", i%2), 0)
		}
		<-started
		synctest.Wait()
		cancel()
		synctest.Wait()
		select {
		case err := <-errc:
			t.Fatalf("Subscribe returned (%v) while a handler was running", err)
		default:
		}
		close(finish)
		if err := <-errc; err != nil {
			t.Fatalf("Subscribe = %v, want nil", err)
		}
		if ctxErr != nil {
			t.Fatalf("the draining handler's context was cancelled: %v", ctxErr)
		}
		acked, released, held := r.snapshot()
		if fmt.Sprint(acked) != "[0]" || fmt.Sprint(released) != "[[1 2 3 4 5]]" || held != 0 {
			t.Fatalf("acked %v, released %v (held %d); want [0], one release of [1 2 3 4 5] in order", acked, released, held)
		}
		if !r.closed {
			t.Fatal("receiver not closed")
		}
	})
}

func TestDrainTimeoutCancelsAndDoesNotCountTheAttempt(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d := newFakeDriver()
		e := newEngine(t, d, engine.Config{DrainTimeout: time.Second})
		h := func(ctx context.Context, m broker.Message) error {
			<-ctx.Done()
			return ctx.Err()
		}
		r, cancel, errc := start(t, e, d, broker.Subscription{Topic: "t", Group: "g", MaxAttempts: 1}, h)
		send(r, 7, "k", 0)
		synctest.Wait()
		cancel()
		before := time.Now()
		<-errc
		if waited := time.Since(before); waited != time.Second {
			t.Fatalf("stopped after %v, want the drain timeout of 1s", waited)
		}
		_, released, _ := r.snapshot()
		if fmt.Sprint(released) != "[[7]]" || len(d.dead) != 0 {
			t.Fatalf("released %v, dead-lettered %d: a handler cut off by the drain timeout must go back, not to the dead-letter topic", released, len(d.dead))
		}
	})
}

func TestRevokeDrainsHeldAndReleasesRetrying(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d := newFakeDriver()
		e := newEngine(t, d, engine.Config{})
		started := make(chan struct{})
		finish := make(chan struct{})
		var mu sync.Mutex
		var order []string
		h := func(ctx context.Context, m broker.Message) error {
			mu.Lock()
			order = append(order, m.ID)
			mu.Unlock()
			switch m.ID {
			case "m0":
				close(started)
				<-finish
			case "m4":
				return errors.New("fails: waits for its retry")
			}
			return nil
		}
		r, cancel, errc := start(t, e, d, broker.Subscription{Topic: "t", Group: "g", Concurrency: 2}, h)
		send(r, 4, "c", 0) // fails, waits for a retry: released with m5
		send(r, 5, "c", 0)
		synctest.Wait()
		send(r, 0, "a", 0) // runs and blocks
		send(r, 1, "a", 0) // waits behind it: handled before Revoke returns
		send(r, 2, "", 0)  // keyless on partition 0: handled
		<-started
		synctest.Wait()
		revoked := make(chan struct{})
		go func() {
			d.ctl.Revoke(func(dl *engine.Delivery) bool { return dl.Part == 0 })
			close(revoked)
		}()
		synctest.Wait()
		select {
		case <-revoked:
			t.Fatal("Revoke returned while a handler of the revoked partition still ran")
		default:
		}
		send(r, 3, "a", 1) // same key name, another partition: handled too
		close(finish)
		<-revoked
		synctest.Wait()
		acked, released, held := r.snapshot()
		slices.Sort(acked)
		if fmt.Sprint(acked) != "[0 1 2 3]" || fmt.Sprint(released) != "[[4 5]]" || held != 0 {
			t.Fatalf("acked %v, released %v, held %d: want 0-3 acked, [4 5] released together, nothing held", acked, released, held)
		}
		time.Sleep(time.Minute) // the released message's retry timer must not fire
		synctest.Wait()
		mu.Lock()
		if n := strings.Count(strings.Join(order, " "), "m4"); n != 1 {
			t.Fatalf("m4 ran %d times here after it was released", n)
		}
		mu.Unlock()
		cancel()
		<-errc
	})
}

// TestRevokeTimeoutCutsRunningHandlers: a handler that outlives the drain
// timeout during a revoke is cancelled and its message released, not
// counted as a failed attempt; other partitions go on.
func TestRevokeTimeoutCutsRunningHandlers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d := newFakeDriver()
		e := newEngine(t, d, engine.Config{DrainTimeout: time.Second})
		h := func(ctx context.Context, m broker.Message) error {
			if m.ID == "m0" {
				<-ctx.Done()
				return ctx.Err()
			}
			return nil
		}
		r, cancel, errc := start(t, e, d, broker.Subscription{Topic: "t", Group: "g", Concurrency: 2, MaxAttempts: 1}, h)
		send(r, 0, "a", 0)
		send(r, 1, "a", 0)
		synctest.Wait()
		began := time.Now()
		d.ctl.Revoke(func(dl *engine.Delivery) bool { return dl.Part == 0 })
		if waited := time.Since(began); waited != time.Second {
			t.Fatalf("Revoke took %v, want the drain timeout of 1s", waited)
		}
		send(r, 2, "b", 1)
		synctest.Wait()
		acked, released, held := r.snapshot()
		if fmt.Sprint(acked) != "[2]" || fmt.Sprint(released) != "[[0 1]]" || held != 0 || len(d.dead) != 0 {
			t.Fatalf("acked %v, released %v, held %d, dead %d: want [2] acked, [0 1] released, no dead letter", acked, released, held, len(d.dead))
		}
		cancel()
		<-errc
	})
}

func TestReopenAfterBreakWithBackoffAndReadyOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d := newFakeDriver()
		d.openErrs = []error{nil, errors.New("connection refused"), errors.New("connection refused"), nil}
		e := newEngine(t, d, engine.Config{})
		var readies atomic.Int32
		got := make(chan string, 10)
		ctx, cancel := context.WithCancel(context.Background())
		errc := make(chan error, 1)
		go func() {
			errc <- e.Subscribe(ctx, broker.Subscription{Topic: "t", Ready: func() { readies.Add(1) }}, func(ctx context.Context, m broker.Message) error {
				got <- m.ID
				return nil
			})
		}()
		r1 := <-d.opened
		r1.broken <- errors.New("channel closed")
		r2 := <-d.opened
		if !r1.closed {
			t.Fatal("broken receiver not closed before reopening")
		}
		send(r2, 1, "k", 0)
		if id := <-got; id != "m1" {
			t.Fatalf("got %s", id)
		}
		d.mu.Lock()
		opens := d.opens
		d.mu.Unlock()
		if opens != 4 || readies.Load() != 1 {
			t.Fatalf("%d opens, Ready called %d times; want 4 opens, Ready once", opens, readies.Load())
		}
		cancel()
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
	})
}

func TestFatalOpenErrorEndsSubscribe(t *testing.T) {
	d := newFakeDriver()
	d.openErrs = []error{fmt.Errorf("%w: queue exists with other arguments", broker.ErrInvalidSubscription)}
	e := newEngine(t, d, engine.Config{})
	err := e.Subscribe(context.Background(), broker.Subscription{Topic: "t"}, func(context.Context, broker.Message) error { return nil })
	if !errors.Is(err, broker.ErrInvalidSubscription) || d.opens != 1 {
		t.Fatalf("Subscribe = %v after %d opens, want ErrInvalidSubscription after 1", err, d.opens)
	}
}

func TestPanicIsOneErrorAndDeadLettersWithoutStack(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d := newFakeDriver()
		e := newEngine(t, d, engine.Config{})
		r, cancel, errc := start(t, e, d, broker.Subscription{Topic: "t", Group: "g", MaxAttempts: 2}, func(ctx context.Context, m broker.Message) error {
			panic("boom")
		})
		send(r, 1, "k", 0)
		time.Sleep(time.Minute)
		synctest.Wait()
		if len(d.dead) != 1 {
			t.Fatalf("%d dead letters, want 1", len(d.dead))
		}
		dl := d.dead[0]
		if x := dl.Header[broker.HeaderError]; !strings.HasPrefix(x, broker.ErrHandlerPanic.Error()+": boom") || strings.Contains(x, "goroutine ") {
			t.Fatalf("x-error %q, want %q without a stack", x, broker.ErrHandlerPanic.Error()+": boom")
		}
		if dl.Topic != "t.dlq" || dl.Header[broker.HeaderAttempts] != "2" {
			t.Fatalf("dead letter to %q after %s attempts, want t.dlq after 2", dl.Topic, dl.Header[broker.HeaderAttempts])
		}
		cancel()
		<-errc
	})
}

func TestRetriesSeeTheHeaderAsReceived(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d := newFakeDriver()
		e := newEngine(t, d, engine.Config{})
		var seen []string
		r, cancel, errc := start(t, e, d, broker.Subscription{Topic: "t", Group: "g"}, func(ctx context.Context, m broker.Message) error {
			seen = append(seen, m.Header["h"])
			m.Header["h"] = "changed"
			if m.Attempt == 1 {
				return errors.New("again")
			}
			return nil
		})
		r.in <- engine.Delivery{Msg: broker.Message{ID: "x", Key: "k", Header: map[string]string{"h": "v"}}, Tag: 1}
		time.Sleep(time.Minute)
		synctest.Wait()
		if fmt.Sprint(seen) != "[v v]" {
			t.Fatalf("attempts saw %v, want [v v]", seen)
		}
		cancel()
		<-errc
	})
}

func TestCloseEndsEverySubscribeWithErrClosed(t *testing.T) {
	d := newFakeDriver()
	e := newEngine(t, d, engine.Config{})
	_, _, errc := start(t, e, d, broker.Subscription{Topic: "t"}, func(context.Context, broker.Message) error { return nil })
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; !errors.Is(err, broker.ErrClosed) {
		t.Fatalf("Subscribe = %v after Close, want ErrClosed", err)
	}
	if err := e.Subscribe(context.Background(), broker.Subscription{Topic: "t"}, func(context.Context, broker.Message) error { return nil }); !errors.Is(err, broker.ErrClosed) {
		t.Fatalf("Subscribe after Close = %v, want ErrClosed", err)
	}
}

func TestConfigValidation(t *testing.T) {
	for name, cfg := range map[string]engine.Config{
		"negative drain": {DrainTimeout: -1},
		"retry max<min":  {Retry: backoffPolicy(time.Second, time.Millisecond)},
	} {
		if _, err := engine.New(newFakeDriver(), cfg); err == nil {
			t.Errorf("%s: New accepted it", name)
		}
	}
}

func backoffPolicy(minWait, maxWait time.Duration) engine.Backoff {
	return engine.Backoff{Min: minWait, Max: maxWait}
}

// TestOneHandlerKeepsReceiveOrderAcrossKeys: with Concurrency 1 the ready
// message received first runs first, so a key's next message is not put
// behind messages of other keys received after it.
func TestOneHandlerKeepsReceiveOrderAcrossKeys(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d := newFakeDriver()
		e := newEngine(t, d, engine.Config{})
		var seen []string
		r, cancel, errc := start(t, e, d, broker.Subscription{Topic: "t", Group: "g"}, func(ctx context.Context, m broker.Message) error {
			seen = append(seen, m.ID)
			return nil
		})
		for i, k := range []string{"a", "a", "b", "a", "", "c", "b"} {
			send(r, uint64(i), k, 0)
		}
		synctest.Wait()
		if got := strings.Join(seen, " "); got != "m0 m1 m2 m3 m4 m5 m6" {
			t.Fatalf("handled %s, want the receive order m0 … m6", got)
		}
		cancel()
		<-errc
	})
}

// TestNeverStarted: when Open keeps failing until the caller's deadline,
// Subscribe says why; a cancelled context is no error.
func TestNeverStarted(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		refused := errors.New("connection refused")
		d := newFakeDriver()
		d.openErrs = slices.Repeat([]error{refused}, 1000)
		e := newEngine(t, d, engine.Config{})
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		h := func(context.Context, broker.Message) error { return nil }
		if err := e.Subscribe(ctx, broker.Subscription{Topic: "t"}, h); !errors.Is(err, refused) {
			t.Fatalf("Subscribe past its deadline = %v, want the Open error", err)
		}
		ctx2, cancel2 := context.WithCancel(context.Background())
		time.AfterFunc(time.Second, cancel2)
		if err := e.Subscribe(ctx2, broker.Subscription{Topic: "t"}, h); err != nil {
			t.Fatalf("Subscribe cancelled while Open failed = %v, want nil", err)
		}
	})
}

// redecodingReceiver rebuilds messages from a header it keeps aside, as the
// real drivers rebuild them from the native delivery.
type redecodingReceiver struct {
	*fakeReceiver
}

func (r redecodingReceiver) Redecode(d *engine.Delivery) broker.Message {
	m := d.Msg
	m.Header = maps.Clone(d.Ref.(map[string]string))
	return m
}

type redecodingDriver struct{ *fakeDriver }

func (d redecodingDriver) Open(ctx context.Context, s broker.Subscription, c engine.Control) (engine.Receiver, error) {
	r, err := d.fakeDriver.Open(ctx, s, c)
	if err != nil {
		return nil, err
	}
	return redecodingReceiver{r.(*fakeReceiver)}, nil
}

// TestDeadLetterCarriesTheMessageAsReceived: a handler that changes the
// Header and fails for good on its first attempt does not leak its changes
// into the dead letter, with or without a Redecoder.
func TestDeadLetterCarriesTheMessageAsReceived(t *testing.T) {
	for _, redecode := range []bool{false, true} {
		t.Run(fmt.Sprint("redecode=", redecode), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				fd := newFakeDriver()
				var d engine.Driver = fd
				if redecode {
					d = redecodingDriver{fd}
				}
				e := newEngine(t, d, engine.Config{})
				ready := make(chan struct{})
				ctx, cancel := context.WithCancel(context.Background())
				errc := make(chan error, 1)
				go func() {
					errc <- e.Subscribe(ctx, broker.Subscription{Topic: "t", Group: "g", MaxAttempts: 5, Ready: func() { close(ready) }}, func(ctx context.Context, m broker.Message) error {
						m.Header["h"] = "changed"
						return broker.Permanent(errors.New("bad"))
					})
				}()
				<-ready
				r := <-fd.opened
				orig := map[string]string{"h": "v"}
				r.in <- engine.Delivery{Msg: broker.Message{ID: "x", Key: "k", Header: maps.Clone(orig)}, Tag: 1, Ref: orig}
				synctest.Wait()
				if len(fd.dead) != 1 || fd.dead[0].Header["h"] != "v" {
					t.Fatalf("dead letters %v: want one whose header h is still v", fd.dead)
				}
				cancel()
				<-errc
			})
		})
	}
}

// tracer records process spans; its Start puts its name in the context,
// after the names of the tracers called before it.
type tracer struct {
	name string
	mu   sync.Mutex
	log  []string
	dead []broker.TraceDeadLetterData
}

type chainKey struct{}

func (tr *tracer) TraceProcessStart(ctx context.Context, d broker.TraceProcessStartData) context.Context {
	prev, _ := ctx.Value(chainKey{}).(string)
	tr.mu.Lock()
	tr.log = append(tr.log, fmt.Sprintf("start %s/%s/%s#%d after %q header=%v", d.System, d.Topic, d.Message.ID, d.Message.Attempt, prev, d.Message.Header != nil))
	tr.mu.Unlock()
	return context.WithValue(ctx, chainKey{}, prev+tr.name)
}

func (tr *tracer) TraceProcessEnd(ctx context.Context, d broker.TraceProcessEndData) {
	chain, _ := ctx.Value(chainKey{}).(string)
	tr.mu.Lock()
	defer tr.mu.Unlock()
	tr.log = append(tr.log, fmt.Sprintf("end %s %v ctx=%s", d.Outcome, d.Err, chain))
}

func (tr *tracer) TraceDeadLetter(ctx context.Context, d broker.TraceDeadLetterData) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	tr.dead = append(tr.dead, d)
}

func (tr *tracer) entries() []string {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return slices.Clone(tr.log)
}

// TestTracersSeeDroppedAndReleasedAndStatsCountThem: a message failing for
// good without a dead-letter topic ends as OutcomeDropped, one whose handler
// the drain timeout cuts off as OutcomeReleased; a message waiting for its
// retry when the subscription stops is released without another call.
// Tracers are called in order, each Start getting the context the previous
// one returned; the handler and every End get the last one's.
func TestTracersSeeDroppedAndReleasedAndStatsCountThem(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d := newFakeDriver()
		a, b := &tracer{name: "a"}, &tracer{name: "b"}
		e := newEngine(t, d, engine.Config{Name: "fake", DrainTimeout: time.Second, Tracers: []any{a, b, "ignored"}, Retry: backoffPolicy(time.Hour, time.Hour)})
		var handlerChains []string
		var mu sync.Mutex
		h := func(ctx context.Context, m broker.Message) error {
			chain, _ := ctx.Value(chainKey{}).(string)
			mu.Lock()
			handlerChains = append(handlerChains, chain)
			mu.Unlock()
			switch m.ID {
			case "m1":
				return broker.Permanent(errors.New("bad"))
			case "m2":
				<-ctx.Done()
				return ctx.Err()
			}
			return errors.New("later")
		}
		r, cancel, errc := start(t, e, d, broker.Subscription{Topic: "t", Group: "g", Concurrency: 3}, h)
		send(r, 1, "k1", 0)
		send(r, 2, "k2", 0)
		send(r, 3, "k3", 0)
		synctest.Wait()
		if st := e.Stats(); st != (broker.SubscriberStats{Received: 3, Dropped: 1, Retried: 1, InFlight: 2}) {
			t.Errorf("stats while running: %+v", st)
		}
		cancel()
		<-errc
		want := map[string]bool{
			`start fake/t/m1#1 after "" header=false`: true,
			"end dropped permanent: bad ctx=ab":       true,
			`start fake/t/m2#1 after "" header=false`: true,
			"end released context canceled ctx=ab":    true,
			`start fake/t/m3#1 after "" header=false`: true,
			"end retry later ctx=ab":                  true,
		}
		got := a.entries()
		if len(got) != len(want) {
			t.Errorf("tracer a saw %q", got)
		}
		for _, l := range got {
			if !want[l] {
				t.Errorf("tracer a saw %q, not one of %v", l, slices.Sorted(maps.Keys(want)))
			}
		}
		if bl := b.entries(); len(bl) != 6 || !strings.Contains(strings.Join(bl, "\n"), `after "a"`) || !strings.Contains(strings.Join(bl, "\n"), "ctx=ab") {
			t.Errorf("tracer b saw %q: want each call after a's, with a's context", bl)
		}
		mu.Lock()
		if fmt.Sprint(handlerChains) != "[ab ab ab]" {
			t.Errorf("handlers ran in contexts %v, want the last tracer's (ab)", handlerChains)
		}
		mu.Unlock()
		if st := e.Stats(); st != (broker.SubscriberStats{Received: 3, Dropped: 1, Retried: 1, Released: 2}) {
			t.Errorf("stats after stop: %+v", st)
		}
		if len(a.dead) != 0 {
			t.Errorf("dead-letter events without a dead-letter topic: %+v", a.dead)
		}
	})
}
