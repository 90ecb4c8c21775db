package amqprpc_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"go.uber.org/goleak"

	"github.com/go-integration/patterns/internal/testenv"
	"github.com/go-integration/patterns/rpc/amqprpc"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

var quiet = amqprpc.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil)))

func newClient(t testing.TB, url string, opts ...amqprpc.ClientOption) *amqprpc.Client {
	t.Helper()
	c, err := amqprpc.NewClient(context.Background(), url, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// startServer runs a server until the test ends.
func startServer(t testing.TB, url, queue string, h amqprpc.Handler, opts ...amqprpc.ServerOption) *amqprpc.Server {
	t.Helper()
	s, err := amqprpc.NewServer(url, queue, h, append([]amqprpc.ServerOption{quiet, amqprpc.WithReconnectBackoff(50*time.Millisecond, 200*time.Millisecond)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() { errc <- s.Run(context.Background()) }()
	t.Cleanup(func() {
		s.Close()
		if err := <-errc; !errors.Is(err, amqprpc.ErrClosed) {
			t.Errorf("Run returned %v, want ErrClosed", err)
		}
	})
	waitForConsumer(t, url, queue)
	return s
}

// waitForConsumer waits until queue has a consumer, so calls do not race the
// server's start.
func waitForConsumer(t testing.TB, url, queue string) {
	t.Helper()
	waitConsumers(t, url, queue, "a consumer on "+queue, func(n int) bool { return n > 0 })
}

// waitForNoConsumer waits until queue has no consumer.
func waitForNoConsumer(t testing.TB, url, queue string) {
	t.Helper()
	waitConsumers(t, url, queue, "no consumer on "+queue, func(n int) bool { return n == 0 })
}

// waitConsumers waits until ok holds for the number of queue's consumers.
func waitConsumers(t testing.TB, url, queue, what string, ok func(int) bool) {
	t.Helper()
	conn, err := amqp.Dial(url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	testenv.Eventually(t, 10*time.Second, what, func() bool {
		ch, err := conn.Channel()
		if err != nil {
			t.Fatal(err)
		}
		q, err := ch.QueueDeclarePassive(queue, true, false, false, false, nil)
		if err != nil {
			return false // the failed declare closed the channel
		}
		ch.Close()
		return ok(q.Consumers)
	})
}

func declare(t testing.TB, url, queue string) {
	t.Helper()
	conn, err := amqp.Dial(url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ch.QueueDeclare(queue, true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
}

func queueDepth(t testing.TB, url, queue string) int {
	t.Helper()
	conn, err := amqp.Dial(url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	q, err := ch.QueueDeclarePassive(queue, true, false, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	return q.Messages
}

func upper(ctx context.Context, req amqprpc.Message) (amqprpc.Message, error) {
	h := map[string]string{"x-seen": req.Header["x-in"]}
	body := bytes.Clone(req.Body)
	for i, b := range body { // ASCII only: binary bodies pass unchanged
		if b >= 'a' && b <= 'z' {
			body[i] = b - 'a' + 'A'
		}
	}
	return amqprpc.Message{Body: body, ContentType: req.ContentType, Header: h}, nil
}

func call(t testing.TB, c *amqprpc.Client, queue, body string, timeout time.Duration) (amqprpc.Message, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return c.Call(ctx, queue, amqprpc.Message{Body: []byte(body)})
}

// callResult is what a call made in the background returned.
type callResult struct {
	m   amqprpc.Message
	err error
}

// callAsync calls in the background; the result arrives on the channel.
func callAsync(t testing.TB, c *amqprpc.Client, queue, body string, timeout time.Duration) <-chan callResult {
	out := make(chan callResult, 1)
	go func() {
		m, err := call(t, c, queue, body, timeout)
		out <- callResult{m, err}
	}()
	return out
}

func TestCallGetsTheReply(t *testing.T) {
	t.Parallel()
	_, url := testenv.VHost(t)
	queue := testenv.Name(t, "q")
	startServer(t, url, queue, upper)
	c := newClient(t, url)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := c.Call(ctx, queue, amqprpc.Message{Body: []byte("hello\x00\xff"), ContentType: "application/octet-stream", Header: map[string]string{"x-in": "v"}})
	if err != nil {
		t.Fatal(err)
	}
	if string(resp.Body) != "HELLO\x00\xff" || resp.ContentType != "application/octet-stream" || resp.Header["x-seen"] != "v" {
		t.Fatalf("reply %+v", resp)
	}
}

func TestRemoteErrorsAreTyped(t *testing.T) {
	t.Parallel()
	_, url := testenv.VHost(t)
	queue := testenv.Name(t, "q")
	errNotFound := &amqprpc.Error{Code: "not_found"}
	startServer(t, url, queue, func(ctx context.Context, req amqprpc.Message) (amqprpc.Message, error) {
		switch string(req.Body) {
		case "missing":
			return amqprpc.Message{}, &amqprpc.Error{Code: "not_found", Message: "no room 9"}
		case "plain":
			return amqprpc.Message{}, errors.New("disk full")
		default:
			panic("bad input")
		}
	})
	c := newClient(t, url)
	_, err := call(t, c, queue, "missing", 5*time.Second)
	var re *amqprpc.Error
	if !errors.Is(err, errNotFound) || !errors.As(err, &re) || re.Message != "no room 9" {
		t.Fatalf("err = %v", err)
	}
	if _, err := call(t, c, queue, "plain", 5*time.Second); !errors.Is(err, &amqprpc.Error{Code: amqprpc.CodeInternal, Message: "disk full"}) {
		t.Fatalf("err = %v", err)
	}
	if _, err := call(t, c, queue, "boom", 5*time.Second); !errors.Is(err, &amqprpc.Error{Code: amqprpc.CodePanic}) {
		t.Fatalf("err = %v", err)
	}
}

func TestServerNotRunningTimesOut(t *testing.T) {
	t.Parallel()
	_, url := testenv.VHost(t)
	queue := testenv.Name(t, "q")
	declare(t, url, queue) // the queue exists, nobody consumes it
	c := newClient(t, url)
	start := time.Now()
	_, err := call(t, c, queue, "anyone?", 300*time.Millisecond)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want deadline exceeded", err)
	}
	if el := time.Since(start); el < 300*time.Millisecond || el > 2*time.Second {
		t.Fatalf("took %v", el)
	}
	// The request expired in the queue with the caller's deadline: a server
	// starting later does not run it.
	testenv.Eventually(t, 5*time.Second, "the expired request leaves the queue", func() bool { return queueDepth(t, url, queue) == 0 })
	var runs atomic.Int64
	startServer(t, url, queue, func(ctx context.Context, req amqprpc.Message) (amqprpc.Message, error) {
		runs.Add(1)
		return req, nil
	})
	if _, err := call(t, c, queue, "now", 5*time.Second); err != nil || runs.Load() != 1 {
		t.Fatalf("after start: %v, runs %d", err, runs.Load())
	}
}

func TestNoQueueIsErrNoRoute(t *testing.T) {
	t.Parallel()
	_, url := testenv.VHost(t)
	c := newClient(t, url)
	start := time.Now()
	_, err := call(t, c, "no-such-queue", "x", 5*time.Second)
	if !errors.Is(err, amqprpc.ErrNoRoute) || time.Since(start) > 2*time.Second {
		t.Fatalf("err = %v after %v, want ErrNoRoute at once", err, time.Since(start))
	}
}

func TestLateRepliesAreDropped(t *testing.T) {
	t.Parallel()
	_, url := testenv.VHost(t)
	queue := testenv.Name(t, "q")
	replied := make(chan struct{}, 1)
	startServer(t, url, queue, func(ctx context.Context, req amqprpc.Message) (amqprpc.Message, error) {
		if string(req.Body) == "slow" {
			time.Sleep(300 * time.Millisecond) // ignores ctx: replies after the caller left
			defer func() { replied <- struct{}{} }()
		}
		return req, nil
	})
	c := newClient(t, url)
	if _, err := call(t, c, queue, "slow", 100*time.Millisecond); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v", err)
	}
	<-replied
	testenv.Eventually(t, 5*time.Second, "the late reply is counted as dropped", func() bool { return c.Stats().DroppedReplies == 1 })
	if resp, err := call(t, c, queue, "fast", 5*time.Second); err != nil || string(resp.Body) != "fast" {
		t.Fatalf("next call: %q %v", resp.Body, err)
	}
}

func TestConcurrentCallersGetTheirOwnReplies(t *testing.T) {
	t.Parallel()
	_, url := testenv.VHost(t)
	queue := testenv.Name(t, "q")
	startServer(t, url, queue, upper, amqprpc.WithConcurrency(8))
	c := newClient(t, url)
	const n = 300
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			body := "call-" + strconv.Itoa(i)
			resp, err := call(t, c, queue, body, 10*time.Second)
			if err == nil && string(resp.Body) != strings.ToUpper(body) {
				err = fmt.Errorf("call %d got %q", i, resp.Body)
			}
			errs[i] = err
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
}

// closeConnection force-closes the broker connection whose client port is
// addr's, as a crash or a network failure would.
func closeConnection(t *testing.T, addr net.Addr) {
	t.Helper()
	port := strconv.Itoa(addr.(*net.TCPAddr).Port)
	out, err := testenv.Rabbitmqctl("list_connections", "--no-table-headers", "pid", "peer_port")
	if err != nil {
		t.Fatalf("list_connections: %v: %s", err, out)
	}
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) == 2 && f[1] == port {
			if out, err := testenv.Rabbitmqctl("close_connection", f[0], "test: server crash"); err != nil {
				t.Fatalf("close_connection: %v: %s", err, out)
			}
			return
		}
	}
	t.Fatalf("no connection from port %s in %q", port, out)
}

func TestServerCrashMidRequest(t *testing.T) {
	t.Parallel()
	_, url := testenv.VHost(t)
	queue := testenv.Name(t, "q")
	started := make(chan struct{})
	var runs atomic.Int64
	var firstCancelled atomic.Bool
	srv := startServer(t, url, queue, func(ctx context.Context, req amqprpc.Message) (amqprpc.Message, error) {
		if runs.Add(1) == 1 {
			close(started)
			<-ctx.Done() // stuck until the connection dies under it
			firstCancelled.Store(true)
			return amqprpc.Message{}, ctx.Err()
		}
		return amqprpc.Message{Body: []byte("done on run " + strconv.FormatInt(runs.Load(), 10))}, nil
	}, amqprpc.WithConcurrency(1))
	c := newClient(t, url)
	out := callAsync(t, c, queue, "book", 20*time.Second)
	<-started
	closeConnection(t, srv.LocalAddr())
	// The unacked request goes back to the queue; the server reconnects and
	// runs it again; the caller, on its own connection, gets that reply.
	r := <-out
	if r.err != nil || string(r.m.Body) != "done on run 2" {
		t.Fatalf("reply %q, %v", r.m.Body, r.err)
	}
	if !firstCancelled.Load() {
		t.Fatal("the crashed run's context was not cancelled")
	}
}

func TestCloseAllConnectionsWith1000CallsInFlight(t *testing.T) {
	t.Parallel()
	vhost, url := testenv.VHost(t)
	queue := testenv.Name(t, "q")
	var handled atomic.Int64
	gate := make(chan struct{}) // closed once the connections are dropped
	startServer(t, url, queue, func(ctx context.Context, req amqprpc.Message) (amqprpc.Message, error) {
		// The first 50 calls get their replies; the rest stay in flight
		// (running or queued) until the drop.
		if handled.Add(1) > 50 {
			select {
			case <-gate:
			case <-ctx.Done():
				return amqprpc.Message{}, ctx.Err()
			}
		}
		return req, nil
	}, amqprpc.WithConcurrency(32))
	c := newClient(t, url)

	const n = 1000
	var wg sync.WaitGroup
	var ok, lost, other atomic.Int64
	var otherErr atomic.Value
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			body := strconv.Itoa(i)
			// The deadline is only a backstop: a call that reaches it has hung.
			resp, err := call(t, c, queue, body, 30*time.Second)
			switch {
			case err == nil && string(resp.Body) == body:
				ok.Add(1)
			case errors.Is(err, amqprpc.ErrConnectionLost):
				lost.Add(1)
			default:
				other.Add(1)
				otherErr.Store(fmt.Errorf("call %d: %q %w", i, resp.Body, err))
			}
		}()
	}
	// Let some replies come back, then drop every connection of the vhost.
	testenv.Eventually(t, 20*time.Second, "some replies back", func() bool { return handled.Load() >= 82 && ok.Load() >= 50 })
	if out, err := testenv.Rabbitmqctl("close_all_connections", "--vhost", vhost, "--limit", "100", "test: drop all"); err != nil {
		t.Fatalf("close_all_connections: %v: %s", err, out)
	}
	close(gate)
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(25 * time.Second):
		t.Fatalf("calls hang: %d ok, %d lost, %d other of %d", ok.Load(), lost.Load(), other.Load(), n)
	}
	t.Logf("%d replies, %d ErrConnectionLost, %d other", ok.Load(), lost.Load(), other.Load())
	if other.Load() > 0 {
		t.Fatalf("%d calls ended otherwise, e.g. %v", other.Load(), otherErr.Load())
	}
	if ok.Load()+lost.Load() != n || lost.Load() == 0 || ok.Load() == 0 {
		t.Fatalf("%d ok + %d lost, want %d with both kinds", ok.Load(), lost.Load(), n)
	}
	// Both sides recover: the client redials, the server reconnects.
	waitForConsumer(t, url, queue)
	if resp, err := call(t, c, queue, "again", 10*time.Second); err != nil || string(resp.Body) != "again" {
		t.Fatalf("after the drop: %q %v", resp.Body, err)
	}
}

func TestServerCloseFinishesRunningHandlers(t *testing.T) {
	t.Parallel()
	_, url := testenv.VHost(t)
	queue := testenv.Name(t, "q")
	started, release := make(chan struct{}), make(chan struct{})
	s, err := amqprpc.NewServer(url, queue, func(ctx context.Context, req amqprpc.Message) (amqprpc.Message, error) {
		close(started)
		<-release
		return amqprpc.Message{Body: []byte("finished")}, nil
	}, quiet)
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() { errc <- s.Run(context.Background()) }()
	waitForConsumer(t, url, queue)
	c := newClient(t, url)
	out := make(chan error, 1)
	go func() {
		resp, err := call(t, c, queue, "x", 10*time.Second)
		if err == nil && string(resp.Body) != "finished" {
			err = fmt.Errorf("reply %q", resp.Body)
		}
		out <- err
	}()
	<-started
	closed := make(chan struct{})
	go func() {
		s.Close()
		close(closed)
	}()
	// Close has begun draining once the server's consumer is gone; the
	// handler still holds its request, so Close must not have returned.
	waitForNoConsumer(t, url, queue)
	select {
	case <-closed:
		t.Fatal("Close returned while a handler was running")
	default:
	}
	close(release)
	<-closed
	if err := <-errc; !errors.Is(err, amqprpc.ErrClosed) {
		t.Fatalf("Run = %v", err)
	}
	if err := <-out; err != nil {
		t.Fatalf("the running call: %v", err)
	}
	if d := queueDepth(t, url, queue); d != 0 {
		t.Fatalf("%d requests left unacked in the queue", d)
	}
}

// TestServerDrainTimeoutHandsBackStuckRequests: a handler still running at
// the drain timeout does not answer its request, whether it ignores its
// context or returns the context's error: the request goes back to the
// queue and another server answers it.
func TestServerDrainTimeoutHandsBackStuckRequests(t *testing.T) {
	t.Parallel()
	for _, honoursCtx := range []bool{false, true} {
		t.Run(fmt.Sprintf("honoursCtx=%v", honoursCtx), func(t *testing.T) {
			t.Parallel()
			_, url := testenv.VHost(t)
			queue := testenv.Name(t, "q")
			started := make(chan struct{})
			release := make(chan struct{})
			a, err := amqprpc.NewServer(url, queue, func(ctx context.Context, req amqprpc.Message) (amqprpc.Message, error) {
				close(started)
				if honoursCtx {
					select {
					case <-ctx.Done():
						return amqprpc.Message{}, ctx.Err()
					case <-release:
					}
				} else {
					<-release
				}
				return amqprpc.Message{Body: []byte("from a")}, nil
			}, quiet, amqprpc.WithDrainTimeout(200*time.Millisecond))
			if err != nil {
				t.Fatal(err)
			}
			errc := make(chan error, 1)
			go func() { errc <- a.Run(context.Background()) }()
			waitForConsumer(t, url, queue)
			c := newClient(t, url)
			out := callAsync(t, c, queue, "x", 10*time.Second)
			<-started
			startServer(t, url, queue, func(ctx context.Context, req amqprpc.Message) (amqprpc.Message, error) {
				return amqprpc.Message{Body: []byte("from b")}, nil
			})
			closed := make(chan struct{})
			go func() { a.Close(); close(closed) }()
			select {
			case r := <-out:
				if r.err != nil || string(r.m.Body) != "from b" {
					t.Errorf("reply %q, %v; want the other server's", r.m.Body, r.err)
				}
			case <-time.After(5 * time.Second):
				t.Error("the stuck request was not handed back at the drain timeout")
			}
			close(release)
			<-closed
			if err := <-errc; !errors.Is(err, amqprpc.ErrClosed) {
				t.Fatalf("Run = %v", err)
			}
		})
	}
}

func TestRunReturnsNilWhenContextEnds(t *testing.T) {
	t.Parallel()
	_, url := testenv.VHost(t)
	queue := testenv.Name(t, "q")
	s, err := amqprpc.NewServer(url, queue, upper, quiet)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	errc := make(chan error, 1)
	go func() { errc <- s.Run(ctx) }()
	waitForConsumer(t, url, queue) // it did serve (a Run that never connects returns nil too)
	cancel()
	select {
	case err := <-errc:
		if err != nil {
			t.Fatalf("Run = %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after its context ended")
	}
}

func TestClientClose(t *testing.T) {
	t.Parallel()
	_, url := testenv.VHost(t)
	queue := testenv.Name(t, "q")
	declare(t, url, queue)
	c, err := amqprpc.NewClient(context.Background(), url, amqprpc.WithDrainTimeout(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	out := make(chan error, 1)
	go func() {
		_, err := c.Call(context.Background(), queue, amqprpc.Message{Body: []byte("no server, no deadline")})
		out <- err
	}()
	testenv.Eventually(t, 5*time.Second, "the call is in flight", func() bool { return c.Stats().InFlight == 1 })
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-out; !errors.Is(err, amqprpc.ErrClosed) {
		t.Fatalf("waiting call: %v, want ErrClosed", err)
	}
	if _, err := call(t, c, queue, "after", time.Second); !errors.Is(err, amqprpc.ErrClosed) {
		t.Fatalf("after Close: %v", err)
	}
	if err := c.Close(); err != nil {
		t.Fatal("second Close:", err)
	}
}

func TestBadOptions(t *testing.T) {
	if _, err := amqprpc.NewServer("amqp://x", "q", upper, amqprpc.WithConcurrency(0)); !errors.Is(err, amqprpc.ErrInvalidOption) {
		t.Error(err)
	}
	if _, err := amqprpc.NewServer("amqp://x", "", upper); !errors.Is(err, amqprpc.ErrInvalidOption) {
		t.Error(err)
	}
	if _, err := amqprpc.NewServer("amqp://x", "q", nil); !errors.Is(err, amqprpc.ErrInvalidOption) {
		t.Error(err)
	}
	// amqp091's own recovery keeps channels open across a drop: calls would
	// wait for replies that cannot come instead of getting ErrConnectionLost.
	recovery := amqprpc.WithAMQPConfig(amqp.Config{Recovery: &amqp.Recovery{}})
	if _, err := amqprpc.NewServer("amqp://x", "q", upper, recovery); !errors.Is(err, amqprpc.ErrInvalidOption) || !strings.Contains(err.Error(), "Recovery") {
		t.Errorf("NewServer with amqp091 recovery: %v, want ErrInvalidOption naming Recovery", err)
	}
	if _, err := amqprpc.NewClient(context.Background(), "amqp://x", recovery); !errors.Is(err, amqprpc.ErrInvalidOption) || !strings.Contains(err.Error(), "Recovery") {
		t.Errorf("NewClient with amqp091 recovery: %v, want ErrInvalidOption naming Recovery", err)
	}
	for name, opt := range map[string]amqprpc.Option{
		"backoff zero":    amqprpc.WithReconnectBackoff(0, time.Second),
		"backoff max<min": amqprpc.WithReconnectBackoff(time.Second, time.Millisecond),
		"drain":           amqprpc.WithDrainTimeout(-1),
		"name":            amqprpc.WithConnectionName(""),
		"tracer":          amqprpc.WithTracer(struct{}{}),
		"nil tracer":      amqprpc.WithTracer(nil),
	} {
		if _, err := amqprpc.NewServer("amqp://x", "q", upper, opt); !errors.Is(err, amqprpc.ErrInvalidOption) {
			t.Errorf("NewServer %s: %v", name, err)
		}
		if _, err := amqprpc.NewClient(context.Background(), "amqp://x", opt); !errors.Is(err, amqprpc.ErrInvalidOption) {
			t.Errorf("NewClient %s: %v", name, err)
		}
	}
	// A tracer of the other side's interfaces only would never be called.
	if _, err := amqprpc.NewServer("amqp://x", "q", upper, amqprpc.WithTracer(callOnly{})); !errors.Is(err, amqprpc.ErrInvalidOption) {
		t.Errorf("NewServer with a CallTracer: %v", err)
	}
	if _, err := amqprpc.NewClient(context.Background(), "amqp://x", amqprpc.WithTracer(serveOnly{})); !errors.Is(err, amqprpc.ErrInvalidOption) {
		t.Errorf("NewClient with a ServeTracer: %v", err)
	}
	if _, err := amqprpc.NewServer("amqp://x", "q", upper, nil); !errors.Is(err, amqprpc.ErrInvalidOption) {
		t.Errorf("NewServer with a nil option: %v", err)
	}
}

type callOnly struct{}

func (callOnly) TraceCallStart(ctx context.Context, _ amqprpc.TraceCallStartData) context.Context {
	return ctx
}
func (callOnly) TraceCallEnd(context.Context, amqprpc.TraceCallEndData) {}

type serveOnly struct{}

func (serveOnly) TraceServeStart(ctx context.Context, _ amqprpc.TraceServeStartData) context.Context {
	return ctx
}
func (serveOnly) TraceServeEnd(context.Context, amqprpc.TraceServeEndData) {}

func TestRefusedCredentialsAndBadURLsAreErrors(t *testing.T) {
	_, url := testenv.VHost(t)
	for _, bad := range []string{"http://localhost", "amqp://x:notaport/"} {
		if _, err := amqprpc.NewServer(bad, "q", upper); !errors.Is(err, amqprpc.ErrInvalidOption) {
			t.Errorf("NewServer(%q) = %v, want ErrInvalidOption", bad, err)
		}
		if _, err := amqprpc.NewClient(context.Background(), bad); !errors.Is(err, amqprpc.ErrInvalidOption) {
			t.Errorf("NewClient(%q) = %v, want ErrInvalidOption", bad, err)
		}
	}
	wrong := strings.Replace(url, "guest:guest@", "guest:wrong@", 1)
	s, err := amqprpc.NewServer(wrong, "q", upper)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Run(context.Background()) }()
	select {
	case err := <-done:
		var ae *amqp.Error
		if !errors.As(err, &ae) || ae.Code != amqp.AccessRefused {
			t.Fatalf("Run with a wrong password = %v, want an access-refused error", err)
		}
	case <-time.After(30 * time.Second):
		_ = s.Close()
		t.Fatal("Run retried refused credentials instead of returning the error")
	}
}
