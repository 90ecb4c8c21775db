package amqprpc_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-integration/patterns/internal/testenv"
	"github.com/go-integration/patterns/rpc/amqprpc"
)

// connTracer is an amqprpc.ConnectionTracer made of a function.
type connTracer func(context.Context, amqprpc.TraceConnectionData)

func (f connTracer) TraceConnection(ctx context.Context, d amqprpc.TraceConnectionData) { f(ctx, d) }

// TestFaultClusterRPC makes calls from 8 goroutines over two clients (one
// connected to the node holding the request queue's leader, one to another
// node) to two servers of a quorum request queue (one on each of those
// nodes) while the leader's node is stopped and started again, then while
// the other client's node is stopped and started. Every call is answered with its own
// reply or fails with a clear error (ErrConnectionLost, its deadline,
// ErrNoRoute) within its deadline; calls succeed again after each fault.
// Runs in the fault stage (FAULT_TESTS=1) against scripts/rabbitmq-cluster.
func TestFaultClusterRPC(t *testing.T) {
	c := testenv.NewRabbitCluster(t)
	queue := "rpc"
	echo := func(ctx context.Context, req amqprpc.Message) (amqprpc.Message, error) { return req, nil }
	// The first server declares the queue through node 0, which holds its
	// leader then (client-local leader placement).
	startServer(t, c.URL(0), queue, echo, amqprpc.WithNodes(c.Others(0)...), amqprpc.WithQuorumQueue())
	leader := c.Leader(queue)
	other := (leader + 1) % 3
	if leader != 0 {
		startServer(t, c.URL(leader), queue, echo, amqprpc.WithNodes(c.Others(leader)...), amqprpc.WithQuorumQueue())
	} else {
		startServer(t, c.URL(other), queue, echo, amqprpc.WithNodes(c.Others(other)...), amqprpc.WithQuorumQueue())
	}
	backoff := amqprpc.WithReconnectBackoff(50*time.Millisecond, 500*time.Millisecond)
	begin := time.Now()
	events := func(name string) amqprpc.Option {
		return amqprpc.WithTracer(connTracer(func(_ context.Context, d amqprpc.TraceConnectionData) {
			t.Logf("%v: %s: %v %s %v", time.Since(begin).Round(time.Millisecond), name, d.Event, d.URL, d.Err)
		}))
	}
	clients := [2]*amqprpc.Client{
		newClient(t, c.URL(leader), amqprpc.WithNodes(c.Others(leader)...), backoff, events("client 0")),
		newClient(t, c.URL(other), amqprpc.WithNodes(c.Others(other)...), backoff, events("client 1")),
	}

	const timeout = 5 * time.Second
	var (
		answered atomic.Int64
		byClient [2]atomic.Int64
		mu       sync.Mutex
		failures = map[string]int{}
		stop     = make(chan struct{})
		wg       sync.WaitGroup
	)
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cl := clients[g%2]
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				body := fmt.Sprintf("g%d-%d", g, i)
				start := time.Now()
				reply, err := call(t, cl, queue, body, timeout)
				if took := time.Since(start); took > timeout+2*time.Second {
					t.Errorf("call %s took %v with a %v deadline (err %v)", body, took, timeout, err)
				}
				var kind string
				switch {
				case err == nil && string(reply.Body) == body:
					answered.Add(1)
					byClient[g%2].Add(1)
					continue
				case err == nil:
					t.Errorf("call %s got the reply %q", body, reply.Body)
					continue
				case errors.Is(err, amqprpc.ErrConnectionLost):
					kind = "connection lost"
				case errors.Is(err, context.DeadlineExceeded):
					kind = "deadline"
				case errors.Is(err, amqprpc.ErrNoRoute):
					kind = "no route"
				default:
					t.Errorf("call %s: unexpected error (a node was always up) %v", body, err)
					kind = "other"
				}
				mu.Lock()
				if failures[kind] < 3 {
					t.Logf("call %s: %v", body, err)
				}
				failures[kind]++
				mu.Unlock()
			}
		}()
	}
	var once sync.Once
	halt := func() { once.Do(func() { close(stop); wg.Wait() }) }
	defer halt()

	// progress waits until each client had 100 more calls answered.
	progress := func(what string) {
		t.Helper()
		from := [2]int64{byClient[0].Load(), byClient[1].Load()}
		testenv.Eventually(t, 60*time.Second, "100 calls per client answered "+what, func() bool {
			return byClient[0].Load() >= from[0]+100 && byClient[1].Load() >= from[1]+100
		})
	}
	progress("before the faults")
	c.Stop(leader)
	t.Logf("stopped %s (leader); leader now %s", testenv.RabbitClusterNodes[leader], testenv.RabbitClusterNodes[c.Leader(queue)])
	progress("with the leader's node down")
	c.Start(leader)
	progress("after the leader's node came back")
	// The second fault takes the other client's node, where both servers
	// are by now (a server reconnects to the node after the lost one).
	second := other
	c.Stop(second)
	t.Logf("stopped %s; leader now %s", testenv.RabbitClusterNodes[second], testenv.RabbitClusterNodes[c.Leader(queue)])
	progress("with a second node down")
	c.Start(second)
	progress("with every node back")

	halt()
	mu.Lock()
	defer mu.Unlock()
	t.Logf("%d calls answered; failed: %v; clients %+v, %+v", answered.Load(), failures, clients[0].Stats(), clients[1].Stats())
	for i, cl := range clients {
		if st := cl.Stats(); st.Dials < 2 {
			t.Errorf("client %d, connected to a node that was stopped, did not dial again: %+v", i, st)
		}
	}
}

// TestWithNodesSkipsADeadNode gives a first URL nobody listens on and the
// test's vhost second: the server and the client both connect to the
// second, and the server's WithQuorumQueue declares a quorum queue.
func TestWithNodesSkipsADeadNode(t *testing.T) {
	vhost, url := testenv.VHost(t)
	queue := testenv.Name(t, "q")
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "amqp://guest:guest@" + l.Addr().String() + "/"
	_ = l.Close() // nothing listens there now: connection refused
	var mu sync.Mutex
	var ups []string
	tracer := amqprpc.WithTracer(connTracer(func(_ context.Context, d amqprpc.TraceConnectionData) {
		if d.Event == amqprpc.ConnectionUp {
			mu.Lock()
			ups = append(ups, d.URL)
			mu.Unlock()
		}
	}))
	s, err := amqprpc.NewServer(dead, queue, upper, quiet, amqprpc.WithNodes(url), amqprpc.WithQuorumQueue(), tracer)
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
	c := newClient(t, dead, amqprpc.WithNodes(url), tracer)
	reply, err := call(t, c, queue, "hello", 10*time.Second)
	if err != nil || string(reply.Body) != "HELLO" {
		t.Fatalf("Call through the second node = %q, %v", reply.Body, err)
	}
	mu.Lock()
	for _, u := range ups {
		if !strings.Contains(u, "/"+vhost) || strings.Contains(u, "guest:guest") {
			t.Errorf("ConnectionUp URL %q: want the second node's, password hidden", u)
		}
	}
	mu.Unlock()
	out, err := testenv.Rabbitmqctl("list_queues", "-p", vhost, "name", "type")
	if err != nil {
		t.Fatalf("list_queues: %v: %s", err, out)
	}
	if !strings.Contains(out, queue+"\tquorum") {
		t.Errorf("WithQuorumQueue: queue %s is not a quorum queue:\n%s", queue, out)
	}

	// No node answers: the error names each.
	_, err = amqprpc.NewClient(context.Background(), dead, amqprpc.WithNodes(dead))
	if err == nil || !strings.Contains(err.Error(), "no node of 2 answered") || strings.Contains(err.Error(), "guest:guest") {
		t.Fatalf("NewClient with two dead nodes: %v", err)
	}
	t.Logf("two dead nodes: %v", err)
	for _, opt := range []amqprpc.Option{amqprpc.WithNodes(), amqprpc.WithNodes("http://x")} {
		if _, err := amqprpc.NewClient(context.Background(), url, opt); !errors.Is(err, amqprpc.ErrInvalidOption) {
			t.Errorf("NewClient with a bad WithNodes: %v, want ErrInvalidOption", err)
		}
		if _, err := amqprpc.NewServer(url, queue, upper, opt); !errors.Is(err, amqprpc.ErrInvalidOption) {
			t.Errorf("NewServer with a bad WithNodes: %v, want ErrInvalidOption", err)
		}
	}
}
