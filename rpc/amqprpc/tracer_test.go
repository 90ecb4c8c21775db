package amqprpc_test

import (
	"context"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/go-integration/patterns/internal/testenv"
	"github.com/go-integration/patterns/rpc/amqprpc"
)

// recTracer records everything a Client or a Server traces.
type recTracer struct {
	mu          sync.Mutex
	callStarts  []amqprpc.TraceCallStartData
	callEnds    []amqprpc.TraceCallEndData
	serveStarts []amqprpc.TraceServeStartData
	serveEnds   []amqprpc.TraceServeEndData
	conns       []amqprpc.TraceConnectionData
	endCtxOK    []bool
}

type spanKey struct{}

func (r *recTracer) TraceCallStart(ctx context.Context, d amqprpc.TraceCallStartData) context.Context {
	r.mu.Lock()
	defer r.mu.Unlock()
	d.Header["traceparent"] = "span-" + d.CorrelationID // injected, travels with the request
	r.callStarts = append(r.callStarts, d)
	return context.WithValue(ctx, spanKey{}, d.CorrelationID)
}

func (r *recTracer) TraceCallEnd(ctx context.Context, d amqprpc.TraceCallEndData) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.callEnds = append(r.callEnds, d)
	r.endCtxOK = append(r.endCtxOK, ctx.Value(spanKey{}) == d.CorrelationID)
}

func (r *recTracer) TraceServeStart(ctx context.Context, d amqprpc.TraceServeStartData) context.Context {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.serveStarts = append(r.serveStarts, d)
	return context.WithValue(ctx, spanKey{}, d.Header["traceparent"])
}

func (r *recTracer) TraceServeEnd(ctx context.Context, d amqprpc.TraceServeEndData) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.serveEnds = append(r.serveEnds, d)
}

func (r *recTracer) TraceConnection(ctx context.Context, d amqprpc.TraceConnectionData) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.conns = append(r.conns, d)
}

func (r *recTracer) connections() []amqprpc.TraceConnectionData {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]amqprpc.TraceConnectionData(nil), r.conns...)
}

// A call is traced on both sides with the routing key and correlation id;
// the header the client's tracer injects reaches the server's tracer, and
// the context the server's tracer returns is the handler's. The error path
// (a remote *Error, ErrNoRoute) reaches End. Stats count it all.
func TestTracersAndStats(t *testing.T) {
	t.Parallel()
	_, url := testenv.VHost(t)
	queue := testenv.Name(t, "q")
	st, ct := &recTracer{}, &recTracer{}
	var handlerSpan atomic.Value
	srv := startServer(t, url, queue, func(ctx context.Context, req amqprpc.Message) (amqprpc.Message, error) {
		handlerSpan.Store(ctx.Value(spanKey{}))
		if string(req.Body) == "fail" {
			return amqprpc.Message{}, &amqprpc.Error{Code: "nope", Message: "refused"}
		}
		return req, nil
	}, amqprpc.WithTracer(st))
	c := newClient(t, url, amqprpc.WithTracer(ct))
	if _, err := call(t, c, queue, "hello", 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if _, err := call(t, c, queue, "fail", 5*time.Second); !errors.Is(err, &amqprpc.Error{Code: "nope"}) {
		t.Fatalf("err = %v", err)
	}
	if _, err := call(t, c, testenv.Name(t, "none"), "x", 5*time.Second); !errors.Is(err, amqprpc.ErrNoRoute) {
		t.Fatalf("err = %v", err)
	}
	// The server replies before its tracer's TraceServeEnd and its counters
	// settle: wait for them.
	testenv.Eventually(t, 5*time.Second, "the server to finish both requests", func() bool {
		st.mu.Lock()
		defer st.mu.Unlock()
		return len(st.serveEnds) == 2 && srv.Stats().InFlight == 0
	})
	// Each block holds its tracer's lock with a defer, so that a failed
	// assertion does not leave it held for the server's handlers at cleanup.
	var firstID string
	func() {
		ct.mu.Lock()
		defer ct.mu.Unlock()
		if len(ct.callStarts) != 3 || ct.callStarts[0].Queue != queue || ct.callStarts[0].BodySize != 5 || ct.callStarts[0].CorrelationID == "" {
			t.Fatalf("call starts %+v", ct.callStarts)
		}
		e := ct.callEnds
		if len(e) != 3 || e[0].Err != nil || e[0].ReplySize != 5 || e[0].Duration <= 0 ||
			!errors.Is(e[1].Err, &amqprpc.Error{Code: "nope"}) || !errors.Is(e[2].Err, amqprpc.ErrNoRoute) {
			t.Fatalf("call ends %+v", e)
		}
		for i, ok := range ct.endCtxOK {
			if !ok {
				t.Fatalf("call end %d did not get the context its start returned", i)
			}
		}
		firstID = ct.callStarts[0].CorrelationID
		if len(ct.conns) != 1 || ct.conns[0].Event != amqprpc.ConnectionUp || ct.conns[0].Role != "client" {
			t.Fatalf("client connection events %+v", ct.conns)
		}
	}()

	func() {
		st.mu.Lock()
		defer st.mu.Unlock()
		if len(st.serveStarts) != 2 || st.serveStarts[0].CorrelationID != firstID || st.serveStarts[0].Header["traceparent"] != "span-"+firstID || st.serveStarts[0].Queue != queue {
			t.Fatalf("serve starts %+v; want the client's correlation id and injected header", st.serveStarts)
		}
		if len(st.serveEnds) != 2 || st.serveEnds[0].Err != nil || st.serveEnds[0].ReplyErr != nil || !errors.Is(st.serveEnds[1].Err, &amqprpc.Error{Code: "nope"}) {
			t.Fatalf("serve ends %+v", st.serveEnds)
		}
		if len(st.conns) != 1 || st.conns[0].Event != amqprpc.ConnectionUp || st.conns[0].Queue != queue {
			t.Fatalf("server connection events %+v", st.conns)
		}
	}()
	if v := handlerSpan.Load(); v == nil || v.(string) == "" {
		t.Fatal("the handler did not run in the context the serve tracer returned")
	}

	if s := c.Stats(); s.Calls != 3 || s.Failed != 2 || s.InFlight != 0 || s.Dials != 1 {
		t.Fatalf("client stats %+v", s)
	}
	if s := srv.Stats(); s.Received != 2 || s.Handled != 2 || s.Failed != 1 || s.InFlight != 0 || s.Connects != 1 {
		t.Fatalf("server stats %+v", s)
	}
}

// flakyDial dials RabbitMQ until failing is set, then fails; kill closes
// the connections it made.
type flakyDial struct {
	failing atomic.Bool
	dials   atomic.Int64
	mu      sync.Mutex
	socks   []net.Conn
}

func (f *flakyDial) dial(network, addr string) (net.Conn, error) {
	f.dials.Add(1)
	if f.failing.Load() {
		return nil, errors.New("test: broker unreachable")
	}
	c, err := amqp.DefaultDial(5*time.Second)(network, addr)
	if err == nil {
		f.mu.Lock()
		f.socks = append(f.socks, c)
		f.mu.Unlock()
	}
	return c, err
}

func (f *flakyDial) kill() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, c := range f.socks {
		c.Close()
	}
}

// With the broker unreachable, a Client does not dial for every call: after
// a failed dial it waits the reconnect backoff (calls meanwhile wait for the
// next dial under their context), and it reports each failure with the
// failure count and the wait.
func TestClientReconnectBackoff(t *testing.T) {
	t.Parallel()
	_, url := testenv.VHost(t)
	fd := &flakyDial{}
	tr := &recTracer{}
	c := newClient(t, url, amqprpc.WithAMQPConfig(amqp.Config{Dial: fd.dial}),
		amqprpc.WithReconnectBackoff(100*time.Millisecond, 400*time.Millisecond), amqprpc.WithTracer(tr))
	fd.failing.Store(true)
	fd.kill()
	testenv.Eventually(t, 5*time.Second, "the client sees its connection lost", func() bool { return c.Stats().ConnectionLost == 1 })
	start := time.Now()
	calls := 0
	for time.Since(start) < 500*time.Millisecond {
		calls++
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
		_, err := c.Call(ctx, "q", amqprpc.Message{})
		cancel()
		if err == nil {
			t.Fatal("call succeeded with the broker unreachable")
		}
	}
	// Without backoff each call would dial (a check of this test without
	// the backoff counted tens of thousands of dials). With it the waits are
	// drawn from [0, 100], [0, 200], then [0, 400] ms: a few dials in 500 ms,
	// more only when several draws are short, so the bound is loose.
	if n := fd.dials.Load() - 1; n < 1 || n > 12 || 2*n > int64(calls) {
		t.Fatalf("%d dials in 500ms of %d calls; want between 1 and 12, at most half the calls", n, calls)
	}
	fails := 0
	for _, ev := range tr.connections() {
		if ev.Event != amqprpc.ConnectionDialFailed {
			continue
		}
		fails++
		limit := min(100*time.Millisecond<<min(fails-1, 3), 400*time.Millisecond)
		if ev.Failures != fails || ev.Err == nil || ev.Wait < 0 || ev.Wait > limit {
			t.Fatalf("dial failure %d traced as %+v; want Failures %d and a wait up to %v", fails, ev, fails, limit)
		}
	}
	if fails == 0 || int64(fails) != fd.dials.Load()-1 {
		t.Fatalf("%d dial failures traced for %d failed dials", fails, fd.dials.Load()-1)
	}
	if s := c.Stats(); s.DialFailures != uint64(fails) || s.Dials != 1 {
		t.Fatalf("stats %+v", s)
	}
	// The broker comes back: a call after the wait reconnects.
	fd.failing.Store(false)
	declare(t, url, "back")
	testenv.Eventually(t, 5*time.Second, "the client reconnects", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		_, _ = c.Call(ctx, "back", amqprpc.Message{})
		return c.Stats().Dials == 2
	})
}

// A Server that cannot reach the broker retries with the reconnect
// backoff: each failure is traced with its count and a wait within the
// growing cap.
func TestServerReconnectBackoff(t *testing.T) {
	t.Parallel()
	_, url := testenv.VHost(t)
	fd := &flakyDial{}
	fd.failing.Store(true)
	tr := &recTracer{}
	s, err := amqprpc.NewServer(url, testenv.Name(t, "q"), upper, quiet, amqprpc.WithAMQPConfig(amqp.Config{Dial: fd.dial}),
		amqprpc.WithReconnectBackoff(10*time.Millisecond, 40*time.Millisecond), amqprpc.WithTracer(tr))
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() { errc <- s.Run(context.Background()) }()
	testenv.Eventually(t, 5*time.Second, "five failed dials", func() bool { return len(tr.connections()) >= 5 })
	s.Close()
	if err := <-errc; !errors.Is(err, amqprpc.ErrClosed) {
		t.Fatalf("Run = %v", err)
	}
	for i, ev := range tr.connections()[:5] {
		maxWait := min(10*time.Millisecond<<i, 40*time.Millisecond)
		if ev.Event != amqprpc.ConnectionDialFailed || ev.Failures != i+1 || ev.Wait > maxWait || ev.Err == nil || ev.Role != "server" {
			t.Fatalf("event %d = %+v; want dial failure %d with a wait up to %v", i, ev, i+1, maxWait)
		}
	}
	if st := s.Stats(); st.ConnectionLost < 5 || st.Connects != 0 {
		t.Fatalf("stats %+v", st)
	}
}

// Close before Run: Run returns ErrClosed at once, without dialling; Close
// stays idempotent.
func TestServerRunAfterClose(t *testing.T) {
	fd := &flakyDial{}
	s, err := amqprpc.NewServer("amqp://guest:guest@127.0.0.1:5672/", "q", upper, quiet, amqprpc.WithAMQPConfig(amqp.Config{Dial: fd.dial}))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Run(context.Background()); !errors.Is(err, amqprpc.ErrClosed) {
		t.Fatalf("Run after Close = %v, want ErrClosed", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if fd.dials.Load() != 0 {
		t.Fatal("Run dialled after Close")
	}
}
