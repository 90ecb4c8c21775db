package rabbitmq_test

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

	"github.com/go-integration/patterns/broker"
	"github.com/go-integration/patterns/broker/rabbitmq"
	"github.com/go-integration/patterns/internal/testenv"
)

// TestWithNodesSkipsADeadNode gives a first URL nobody listens on and the
// default node second: both sides connect to the second.
func TestWithNodesSkipsADeadNode(t *testing.T) {
	_, url := testenv.VHost(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "amqp://guest:guest@" + l.Addr().String() + "/"
	_ = l.Close() // nothing listens there now: connection refused
	p := newPublisher(t, dead, rabbitmq.WithNodes(url))
	s := newSubscriber(t, dead, rabbitmq.WithNodes(url))
	c := newCollector()
	run(t, s, broker.Subscription{Topic: "nodes", Group: "g"}, c.handle)
	if err := p.Publish(ctxT(t, 10*time.Second), "nodes", broker.Message{ID: "one"}); err != nil {
		t.Fatal(err)
	}
	c.waitFor(t, 10*time.Second, "one")

	// No node answers: the constructor names each.
	_, err = rabbitmq.NewPublisher(ctxT(t, 10*time.Second), dead, rabbitmq.WithNodes(dead))
	if err == nil || !strings.Contains(err.Error(), "no node of 2 answered") {
		t.Fatalf("NewPublisher with two dead nodes: %v", err)
	}
	t.Logf("two dead nodes: %v", err)
	// A bad URL is an invalid option.
	if _, err := rabbitmq.NewSubscriber(ctxT(t, 10*time.Second), url, rabbitmq.WithNodes("http://x")); !errors.Is(err, rabbitmq.ErrInvalidOption) {
		t.Fatalf("WithNodes(http://x): %v, want ErrInvalidOption", err)
	}
	if _, err := rabbitmq.NewPublisher(ctxT(t, 10*time.Second), url, rabbitmq.WithNodes()); !errors.Is(err, rabbitmq.ErrInvalidOption) {
		t.Fatalf("WithNodes(): %v, want ErrInvalidOption", err)
	}
}

// TestFaultClusterQuorumFailover publishes 20,000 messages with confirms
// to a quorum queue over 16 keys (one goroutine per key, two publishers:
// one connected to the node holding the queue's leader, one to a follower)
// while the leader's node is stopped and started again; then consumes them
// all while another node, the one the subscriber is connected to and the
// queue's leader by then, is stopped. Every confirmed message is handled at
// least once, each key's messages are first handled in the order they were
// published, and duplicates are counted. Runs in the fault stage
// (FAULT_TESTS=1) against scripts/rabbitmq-cluster.
func TestFaultClusterQuorumFailover(t *testing.T) {
	c := testenv.NewRabbitCluster(t)
	const (
		topic = "orders"
		keys  = 16
		n     = 20000
		per   = n / keys
	)
	sub := broker.Subscription{Topic: topic, Group: "g", Concurrency: 8}
	queue := rabbitmq.DefaultQueueName(topic, sub.Group)
	prov := newSubscriber(t, c.URL(0), rabbitmq.WithNodes(c.Others(0)...), rabbitmq.WithQueueType(rabbitmq.Quorum))
	if err := prov.Provision(ctxT(t, 30*time.Second), sub); err != nil {
		t.Fatalf("Provision: %v", err)
	}
	begin := time.Now()
	at := func() string { return time.Since(begin).Round(time.Millisecond).String() }
	leader := c.Leader(queue)
	follower := (leader + 1) % 3
	t.Logf("queue %s: leader on %s", queue, testenv.RabbitClusterNodes[leader])
	pubs := [2]*rabbitmq.Publisher{
		newPublisher(t, c.URL(leader), rabbitmq.WithNodes(c.Others(leader)...), rabbitmq.WithConnectionName("on-leader")),
		newPublisher(t, c.URL(follower), rabbitmq.WithNodes(c.Others(follower)...), rabbitmq.WithConnectionName("on-follower")),
	}
	// A second group consumes during phase 1 through a follower, whose
	// connection survives: its queue's leader moves under the consumer.
	live := broker.Subscription{Topic: topic, Group: "live", Concurrency: 8}
	if err := prov.Provision(ctxT(t, 30*time.Second), live); err != nil {
		t.Fatalf("Provision: %v", err)
	}
	liveQueue := rabbitmq.DefaultQueueName(topic, live.Group)
	if l := c.Leader(liveQueue); l != leader {
		t.Fatalf("%s's leader is on %s, %s's on %s: both were declared through node 0", liveQueue, testenv.RabbitClusterNodes[l], queue, testenv.RabbitClusterNodes[leader])
	}
	liveSub := newSubscriber(t, c.URL(follower), rabbitmq.WithNodes(c.Others(follower)...), rabbitmq.WithQueueType(rabbitmq.Quorum), rabbitmq.WithConnectionName("live-consumer"))
	liveOrder := newKeyOrder(keys)
	stopLive := run(t, liveSub, live, func(_ context.Context, m broker.Message) error { return liveOrder.handle(m) })

	// Phase 1: publish through the leader's stop and start.
	var confirmed, failed atomic.Int64
	var confirmedBy [2]atomic.Int64 // per publisher
	ok := make([][]int, keys)       // confirmed sequence numbers per key, in order
	restarted := make(chan struct{})
	faultDone := make(chan struct{})
	go func() {
		defer close(faultDone)
		defer close(restarted)
		if !waitCount(&confirmed, n/5, 60*time.Second) {
			t.Errorf("only %d confirmed before the fault", confirmed.Load())
			return
		}
		start := time.Now()
		c.Stop(leader)
		atStop := confirmed.Load()
		byAtStop := [2]int64{confirmedBy[0].Load(), confirmedBy[1].Load()}
		moved := c.Leader(queue)
		t.Logf("%s: stopped %s after %d confirmed (%v); new leader %s", at(), testenv.RabbitClusterNodes[leader], atStop, time.Since(start), testenv.RabbitClusterNodes[moved])
		// Both publishers must go on while the node is down: the one
		// connected to it on another node.
		for i := range confirmedBy {
			if !waitCount(&confirmedBy[i], byAtStop[i]+n/20, 60*time.Second) {
				t.Errorf("publisher %d stalled with %s down: %d confirmed, %d failed", i, testenv.RabbitClusterNodes[leader], confirmedBy[i].Load()-byAtStop[i], failed.Load())
			}
		}
		t.Logf("%s: %d confirmed with %s down", at(), confirmed.Load()-atStop, testenv.RabbitClusterNodes[leader])
		c.Start(leader)
		t.Logf("%s: started %s again", at(), testenv.RabbitClusterNodes[leader])
	}()
	ctx := ctxT(t, 5*time.Minute)
	var wg sync.WaitGroup
	for k := range keys {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p := pubs[k%2]
			key := fmt.Sprintf("k%02d", k)
			for i := range per {
				if i == per*7/10 {
					<-restarted // the last part after the node is back
				}
				pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
				err := p.Publish(pctx, topic, broker.Message{ID: fmt.Sprintf("%s-%05d", key, i), Key: key, Payload: make([]byte, 256)})
				cancel()
				if err != nil {
					failed.Add(1)
					t.Logf("Publish %s #%d: %v", key, i, err)
					continue
				}
				ok[k] = append(ok[k], i)
				confirmed.Add(1)
				confirmedBy[k%2].Add(1)
			}
		}()
	}
	wg.Wait()
	<-faultDone
	if t.Failed() {
		t.FailNow()
	}
	st := [2]rabbitmq.PublisherStats{pubs[0].Stats(), pubs[1].Stats()}
	t.Logf("%s: published: %d confirmed, %d failed; on-leader %+v; on-follower %+v", at(), confirmed.Load(), failed.Load(), st[0], st[1])
	if st[0].Reconnects == 0 {
		t.Errorf("the publisher connected to the stopped node did not reconnect: %+v", st[0])
	}
	if confirmed.Load() < n*99/100 {
		t.Errorf("only %d of %d confirmed", confirmed.Load(), n)
	}

	testenv.Eventually(t, 2*time.Minute, "the live group handled every confirmed message", func() bool { return liveOrder.complete(ok) })
	ls := liveSub.Stats()
	if err := stopLive(); err != nil {
		t.Errorf("Subscribe (live): %v", err)
	}
	u, d := liveOrder.check(t, "live", ok)
	t.Logf("%s: live group, consumed during phase 1: %d unique, %d duplicates; subscriber %+v", at(), u, d, ls)
	// Duplicates come from acks lost with a connection or a cancelled
	// consumer: each loss redelivers at most the prefetch (128) and the
	// handlers' messages; a tenth of the stream would mean a storm.
	if d > n/10 {
		t.Errorf("live group: %d duplicates", d)
	}
	if ls.Disconnects != 0 {
		t.Errorf("the live subscriber's node was not stopped, yet it lost its connection: %+v", ls)
	}

	// Phase 2: consume everything while another node is stopped: the
	// leader now (when it is not the node stopped before), which is also
	// the node the subscriber is connected to.
	victim := c.Leader(queue)
	if victim == leader {
		victim = follower
	}
	after := newKeyOrder(keys)
	gate := make(chan struct{})
	s := newSubscriber(t, c.URL(victim), rabbitmq.WithNodes(c.Others(victim)...), rabbitmq.WithQueueType(rabbitmq.Quorum),
		rabbitmq.WithConnectionName("consumer"), rabbitmq.WithDrainTimeout(5*time.Second))
	stopSub := run(t, s, sub, func(ctx context.Context, m broker.Message) error {
		if err := after.handle(m); err != nil {
			return err
		}
		if after.handled.Load() >= n/4 {
			// hold handlers while the node goes down, so some acks are lost.
			select {
			case <-gate:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		return nil
	})
	if !waitCount(&after.handled, n/4, 60*time.Second) {
		t.Fatalf("only %d handled before the fault", after.handled.Load())
	}
	c.Stop(victim)
	close(gate)
	t.Logf("%s: stopped %s after %d handled; leader now %s", at(), testenv.RabbitClusterNodes[victim], after.handled.Load(), testenv.RabbitClusterNodes[c.Leader(queue)])
	testenv.Eventually(t, 2*time.Minute, "every confirmed message handled with a node down", func() bool { return after.complete(ok) })
	ss := s.Stats()
	if err := stopSub(); err != nil {
		t.Errorf("Subscribe: %v", err)
	}
	c.Start(victim)
	u, d = after.check(t, "phase 2", ok)
	t.Logf("%s: consumed with %s down: %d unique (%d confirmed), %d duplicates; subscriber %+v", at(), testenv.RabbitClusterNodes[victim], u, confirmed.Load(), d, ss)
	if ss.Reconnects == 0 {
		t.Errorf("the subscriber connected to the stopped node did not reconnect: %+v", ss)
	}
	if d > n/10 {
		t.Errorf("phase 2: %d duplicates", d)
	}
}

// keyOrder records the messages of TestFaultClusterQuorumFailover (IDs
// "kKK-NNNNN": key, sequence number) as they are handled.
type keyOrder struct {
	mu      sync.Mutex
	seen    map[string]int
	order   [][]int // per key, sequence numbers in the order first handled
	handled atomic.Int64
}

func newKeyOrder(keys int) *keyOrder {
	return &keyOrder{seen: map[string]int{}, order: make([][]int, keys)}
}

func (o *keyOrder) handle(m broker.Message) error {
	var k, i int
	if _, err := fmt.Sscanf(m.ID, "k%02d-%05d", &k, &i); err != nil || k >= len(o.order) {
		return broker.Permanent(fmt.Errorf("unexpected message %q", m.ID))
	}
	o.mu.Lock()
	if o.seen[m.ID] == 0 {
		o.order[k] = append(o.order[k], i)
	}
	o.seen[m.ID]++
	o.mu.Unlock()
	o.handled.Add(1)
	return nil
}

// complete reports whether every key has as many messages as ok has.
func (o *keyOrder) complete(ok [][]int) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	for k := range ok {
		if len(o.order[k]) < len(ok[k]) {
			return false
		}
	}
	return true
}

// check fails t for a confirmed message never handled or a key whose
// messages were first handled out of order, and returns the number of
// distinct messages and of duplicates.
func (o *keyOrder) check(t *testing.T, name string, ok [][]int) (unique, dups int) {
	t.Helper()
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, v := range o.seen {
		unique++
		dups += v - 1
	}
	for k := range ok {
		got := map[int]bool{}
		for j, i := range o.order[k] {
			got[i] = true
			if j > 0 && i <= o.order[k][j-1] {
				t.Errorf("%s: key k%02d: #%d first handled after #%d", name, k, i, o.order[k][j-1])
				break
			}
		}
		for _, i := range ok[k] {
			if !got[i] {
				t.Errorf("%s: key k%02d: confirmed #%d never handled", name, k, i)
				break
			}
		}
	}
	return unique, dups
}

// waitCount waits until v reaches target and reports whether it did within d.
func waitCount(v *atomic.Int64, target int64, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for v.Load() < target {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(5 * time.Millisecond)
	}
	return true
}

// TestFaultClusterNoQuorum stops two of the three nodes, so the quorum
// queue has no majority: Publish through the surviving node fails with
// broker.ErrNotConfirmed at its deadline instead of hanging, and once the
// nodes are back publishing and consuming resume on their own.
func TestFaultClusterNoQuorum(t *testing.T) {
	c := testenv.NewRabbitCluster(t)
	sub := broker.Subscription{Topic: "quorum", Group: "g"}
	p := newPublisher(t, c.URL(0), rabbitmq.WithNodes(c.Others(0)...))
	s := newSubscriber(t, c.URL(0), rabbitmq.WithNodes(c.Others(0)...), rabbitmq.WithQueueType(rabbitmq.Quorum))
	col := newCollector()
	run(t, s, sub, col.handle)
	if err := p.Publish(ctxT(t, 30*time.Second), sub.Topic, broker.Message{ID: "before"}); err != nil {
		t.Fatal(err)
	}
	col.waitFor(t, 30*time.Second, "before")

	c.Stop(1)
	c.Stop(2)
	start := time.Now()
	err := p.Publish(ctxT(t, 3*time.Second), sub.Topic, broker.Message{ID: "without-majority"})
	took := time.Since(start)
	if !errors.Is(err, broker.ErrNotConfirmed) {
		t.Errorf("Publish without a majority: %v, want ErrNotConfirmed", err)
	}
	if took > 6*time.Second {
		t.Errorf("Publish without a majority took %v with a 3s context", took)
	}
	t.Logf("without a majority: %v after %v", err, took.Round(time.Millisecond))

	c.Start(1)
	c.Start(2)
	if err := p.Publish(ctxT(t, 60*time.Second), sub.Topic, broker.Message{ID: "after"}); err != nil {
		t.Fatalf("Publish once the nodes are back: %v", err)
	}
	col.waitFor(t, 60*time.Second, "after")
	_, late := col.get("without-majority")
	t.Logf("the unconfirmed message arrived later too: %v; publisher %+v; subscriber %+v", late, p.Stats(), s.Stats())
}
