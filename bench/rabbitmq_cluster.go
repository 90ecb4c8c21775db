package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"sync"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/go-integration/patterns/broker"
	"github.com/go-integration/patterns/broker/rabbitmq"
)

// RabbitMQ cluster scenario: publish with confirms into a quorum queue on
// the 3-node cluster of scripts/rabbitmq-cluster (both sides connected to
// the node holding the queue's leader), next to the same on the single node
// with a classic queue (the adapter's default), ours and raw amqp091-go
// alternating in the same run. Each side sends n persistent 1 KiB messages
// through a topic exchange bound to the queue, with a message ID and a
// timestamp (what broker/rabbitmq sends): from 16 goroutines waiting for
// each confirm (16 in flight), and asynchronously with 16 channels × 128
// confirms in flight.
const rmqClusterWindow = 128

// clusterNodes are the nodes of scripts/rabbitmq-cluster and their AMQP ports.
var (
	clusterNodes = []string{"rabbit-c1@localhost", "rabbit-c2@localhost", "rabbit-c3@localhost"}
	clusterPorts = []int{5681, 5682, 5683}
)

// amqpTarget is where a side publishes: URLs (the first is dialled) and
// the queue type of the group queue.
type amqpTarget struct {
	urls  []string
	qtype rabbitmq.QueueType
}

func rabbitClusterScenario(ctx context.Context, cfg config) []*row {
	n := cfg.scaled(10_000)
	cSync := &row{scenario: "RabbitMQ 3-node cluster, quorum queue: publish with confirms, 1 KiB persistent, 16 goroutines each waiting for its confirm", unit: msgPerSec, n: n}
	sSync := &row{scenario: "RabbitMQ single node, classic queue: publish with confirms, 1 KiB persistent, 16 goroutines each waiting for its confirm", unit: msgPerSec, n: n}
	cAsync := &row{scenario: fmt.Sprintf("RabbitMQ 3-node cluster, quorum queue: publish async with confirms, 1 KiB persistent, 16 goroutines, 16 channels × %d in flight, then Flush", rmqClusterWindow), unit: msgPerSec, n: n}
	sAsync := &row{scenario: fmt.Sprintf("RabbitMQ single node, classic queue: publish async with confirms, 1 KiB persistent, 16 goroutines, 16 channels × %d in flight, then Flush", rmqClusterWindow), unit: msgPerSec, n: n}
	rows := []*row{cSync, sSync, cAsync, sAsync}
	cenv, err := newClusterEnv()
	if err != nil {
		return []*row{{scenario: "RabbitMQ 3-node cluster, quorum queue: publish with confirms", skip: err}}
	}
	defer cenv.close()
	senv, err := newRabbitEnv()
	if err != nil {
		return []*row{{scenario: "RabbitMQ single node: publish with confirms", skip: err}}
	}
	defer senv.close()
	cluster := amqpTarget{urls: cenv.urls, qtype: rabbitmq.Quorum}
	single := amqpTarget{urls: []string{senv.url}, qtype: rabbitmq.Classic}
	for _, r := range rows {
		r.peer.label = "none"
		r.peer.err = notApplicable("not measured")
	}
	cSync.ours.label = "broker/rabbitmq Publish, WithNodes (the other two nodes), defaults (one channel)"
	cSync.raw.label = fmt.Sprintf("amqp091-go v1.16.0, a channel per goroutine, publish then wait for its deferred confirm (RabbitMQ %s)", cenv.version)
	sSync.ours.label = "broker/rabbitmq Publish, defaults (one channel)"
	sSync.raw.label = "amqp091-go as in the row above"
	cAsync.ours.label = fmt.Sprintf("broker/rabbitmq PublishAsync + Flush, WithNodes, WithChannels(16), WithMaxInFlight(%d)", rmqClusterWindow)
	cAsync.raw.label = fmt.Sprintf("amqp091-go v1.16.0, 16 channels, %d deferred confirms in flight each", rmqClusterWindow)
	sAsync.ours.label = "as in the row above, without WithNodes"
	sAsync.raw.label = "as in the row above"
	runRounds(ctx, cfg.rounds, cfg.perRun,
		side{[]*outcome{&cSync.ours, &cAsync.ours}, func(ctx context.Context, r int) ([]sample, error) { return clusterOurs(ctx, cluster, r, n) }},
		side{[]*outcome{&cSync.raw, &cAsync.raw}, func(ctx context.Context, r int) ([]sample, error) { return clusterRaw(ctx, cluster, r, n) }},
		side{[]*outcome{&sSync.ours, &sAsync.ours}, func(ctx context.Context, r int) ([]sample, error) { return clusterOurs(ctx, single, r, n) }},
		side{[]*outcome{&sSync.raw, &sAsync.raw}, func(ctx context.Context, r int) ([]sample, error) { return clusterRaw(ctx, single, r, n) }},
	)
	return rows
}

// clusterEnv is a private vhost on the 3-node cluster.
type clusterEnv struct {
	vhost   string
	urls    []string // node 1 first: it holds the leaders of the queues declared through it
	version string
}

func clusterCtl(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "rabbitmqctl", append([]string{"-q", "-n", clusterNodes[0]}, args...)...).CombinedOutput()
	return string(out), err
}

func newClusterEnv() (*clusterEnv, error) {
	for _, p := range clusterPorts {
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", p), 2*time.Second)
		if err != nil {
			return nil, skipped("the 3-node RabbitMQ cluster is not running (%v); start it with scripts/rabbitmq-cluster start", err)
		}
		_ = c.Close()
	}
	buf := make([]byte, 4)
	_, _ = rand.Read(buf)
	e := &clusterEnv{vhost: "bench_" + hex.EncodeToString(buf)}
	if out, err := clusterCtl("add_vhost", e.vhost); err != nil {
		return nil, skipped("rabbitmqctl add_vhost on the cluster: %v: %s", err, out)
	}
	if out, err := clusterCtl("set_permissions", "-p", e.vhost, "guest", ".*", ".*", ".*"); err != nil {
		e.close()
		return nil, skipped("rabbitmqctl set_permissions on the cluster: %v: %s", err, out)
	}
	for _, p := range clusterPorts {
		e.urls = append(e.urls, fmt.Sprintf("amqp://guest:guest@127.0.0.1:%d/%s", p, e.vhost))
	}
	conn, err := amqp.Dial(e.urls[0])
	if err != nil {
		e.close()
		return nil, skipped("RabbitMQ cluster: %v", err)
	}
	e.version = fmt.Sprint(conn.Properties["version"])
	_ = conn.Close()
	return e, nil
}

func (e *clusterEnv) close() {
	if out, err := clusterCtl("delete_vhost", e.vhost); err != nil {
		fmt.Fprintf(os.Stderr, "bench: rabbitmqctl delete_vhost %s on the cluster: %v: %s\n", e.vhost, err, out)
	}
}

// declareGroup declares topic's exchange and group queue of type qt,
// through a connection to the first URL (so the leader of a quorum queue
// is on that node), and returns a function deleting them.
func declareGroup(t amqpTarget, topic string) (func(), error) {
	conn, err := amqp.Dial(t.urls[0])
	if err != nil {
		return nil, err
	}
	ch, err := conn.Channel()
	if err != nil {
		_ = conn.Close()
		return nil, err
	}
	queue := rabbitmq.DefaultQueueName(topic, "g")
	err = ch.ExchangeDeclare(topic, amqp.ExchangeTopic, true, false, false, false, nil)
	if err == nil {
		_, err = ch.QueueDeclare(queue, true, false, false, false, amqp.Table{amqp.QueueTypeArg: string(t.qtype)})
	}
	if err == nil {
		err = ch.QueueBind(queue, "#", topic, false, nil)
	}
	if err != nil {
		_ = conn.Close()
		return nil, err
	}
	return func() {
		_, _ = ch.QueueDelete(queue, false, false, false)
		_ = ch.ExchangeDelete(topic, false, false)
		_ = conn.Close()
	}, nil
}

// clusterOurs publishes n messages with Publish from 16 goroutines, then n
// with PublishAsync and Flush, into a fresh group queue of t's type.
func clusterOurs(ctx context.Context, t amqpTarget, round, n int) ([]sample, error) {
	topic := fmt.Sprintf("ours-%d", round)
	drop, err := declareGroup(t, topic)
	if err != nil {
		return nil, err
	}
	defer drop()
	opts := []rabbitmq.PublisherOption{rabbitmq.WithConnectionName("bench-cluster-ours")}
	if len(t.urls) > 1 {
		opts = append(opts, rabbitmq.WithNodes(t.urls[1:]...))
	}
	pub, err := rabbitmq.NewPublisher(ctx, t.urls[0], opts...)
	if err != nil {
		return nil, err
	}
	defer pub.Close()
	p, keys := payload1K(), benchKeys()
	start := time.Now()
	err = publishParallel(ctx, n, rmqPublishers, func(ctx context.Context, i int) error {
		return pub.Publish(ctx, topic, broker.Message{Key: keys[i%64], Payload: p})
	})
	syncSample := sample{n: n, elapsed: time.Since(start), allocs: -1}
	if err != nil {
		return nil, fmt.Errorf("publish: %w", err)
	}

	apub, err := rabbitmq.NewPublisher(ctx, t.urls[0], append(opts, rabbitmq.WithChannels(rmqPublishers), rabbitmq.WithMaxInFlight(rmqClusterWindow))...)
	if err != nil {
		return []sample{syncSample}, err
	}
	defer apub.Close()
	var (
		mu    sync.Mutex
		first error
	)
	done := func(_ broker.Message, err error) {
		if err != nil {
			mu.Lock()
			if first == nil {
				first = err
			}
			mu.Unlock()
		}
	}
	start = time.Now()
	err = publishParallel(ctx, n, rmqPublishers, func(_ context.Context, i int) error {
		// the round's context: messages outlive publishParallel's
		apub.PublishAsync(ctx, topic, broker.Message{Key: keys[i%64], Payload: p}, done)
		return nil
	})
	if err == nil {
		err = apub.Flush(ctx)
	}
	asyncSample := sample{n: n, elapsed: time.Since(start), allocs: -1}
	mu.Lock()
	if err == nil {
		err = first
	}
	mu.Unlock()
	if err != nil {
		return []sample{syncSample}, fmt.Errorf("async publish: %w", err)
	}
	return []sample{syncSample, asyncSample}, nil
}

// clusterRaw does what clusterOurs does with amqp091-go: 16 channels, first
// waiting for each confirm, then keeping rmqClusterWindow in flight each.
func clusterRaw(ctx context.Context, t amqpTarget, round, n int) ([]sample, error) {
	topic := fmt.Sprintf("raw-%d", round)
	drop, err := declareGroup(t, topic)
	if err != nil {
		return nil, err
	}
	defer drop()
	conn, err := amqp.DialConfig(t.urls[0], amqp.Config{Properties: amqp.Table{"connection_name": "bench-cluster-raw"}})
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	chans, err := confirmChannels(conn, rmqPublishers)
	if err != nil {
		return nil, err
	}
	p, keys := payload1K(), benchKeys()
	run := func(window int) (sample, error) {
		errs := make(chan error, len(chans))
		start := time.Now()
		for g, ch := range chans {
			count := n / len(chans)
			if g < n%len(chans) {
				count++
			}
			go func() {
				errs <- rawPublishWith(ctx, ch, window, count, func(i int) (string, string, amqp.Publishing) {
					now := time.Now()
					return topic, keys[(g+i*len(chans))%64], amqp.Publishing{
						DeliveryMode: amqp.Persistent, MessageId: clusterID(), Timestamp: now,
						Headers: amqp.Table{"x-patterns-time": now.UnixNano()}, Body: p,
					}
				})
			}()
		}
		var err error
		for range chans {
			if e := <-errs; e != nil && err == nil {
				err = e
			}
		}
		return sample{n: n, elapsed: time.Since(start), allocs: -1}, err
	}
	syncSample, err := run(1)
	if err != nil {
		return nil, fmt.Errorf("publish: %w", err)
	}
	asyncSample, err := run(rmqClusterWindow)
	if err != nil {
		return []sample{syncSample}, fmt.Errorf("async publish: %w", err)
	}
	return []sample{syncSample, asyncSample}, nil
}

// clusterID is a message ID like broker.NewID's: 16 random bytes in hex.
func clusterID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
