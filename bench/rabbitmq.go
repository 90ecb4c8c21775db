package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	wamqp "github.com/ThreeDotsLabs/watermill-amqp/v3/pkg/amqp"
	"github.com/ThreeDotsLabs/watermill/message"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/go-integration/patterns/internal/testenv"
)

// RabbitMQ scenario: each side publishes n persistent 1 KiB messages with
// publisher confirms from 16 goroutines into a durable queue, then consumes
// them back with 16 handlers and manual acks.
const (
	rmqPublishers = 16
	rmqHandlers   = 16
	rmqWindow     = 128 // raw: unconfirmed publishes per goroutine
	rmqPrefetch   = 256 // raw: one consumer channel; watermill: 16 per subscription
	rmqBatch      = 128 // messages per Publish call in the batch row
)

func rabbitScenario(ctx context.Context, cfg config) []*row {
	n := cfg.scaled(10_000)
	pub := &row{scenario: "RabbitMQ publish with confirms, 1 KiB persistent, 16 publishing goroutines", unit: msgPerSec, n: n}
	con := &row{scenario: "RabbitMQ consume with acks, 16 handlers, messages the side published (Subscribe to last handled)", unit: msgPerSec, n: n}
	batch := &row{scenario: fmt.Sprintf("RabbitMQ publish with confirms, 1 KiB persistent, 16 publishing goroutines, %d messages per Publish call", rmqBatch), unit: msgPerSec, n: n}
	async := &row{scenario: "RabbitMQ publish async with confirms, 1 KiB persistent, 16 publishing goroutines, one message per call, then Flush", unit: msgPerSec, n: n}
	asyncTopic := &row{scenario: "RabbitMQ publish async with confirms, 1 KiB persistent, 16 publishing goroutines, one message per call, then Flush; raw through a topic exchange with our message properties", unit: msgPerSec, n: n}
	rows := []*row{pub, batch, async, asyncTopic, con}
	env, err := newRabbitEnv()
	if err != nil {
		return []*row{{scenario: "RabbitMQ publish with confirms and consume with acks", skip: err}}
	}
	defer env.close()
	pub.ours.label = "broker/rabbitmq"
	pub.raw.label = fmt.Sprintf("amqp091-go v1.16.0, a channel per goroutine, %d deferred confirms in flight each (RabbitMQ %s)", rmqWindow, env.version)
	pub.peer.label = "watermill-amqp v3.0.2, NewDurableQueueConfig, ConfirmDelivery, ChannelPoolSize 16"
	batch.ours.label = fmt.Sprintf("broker/rabbitmq, Publish(ctx, topic, msgs...) with %d messages", rmqBatch)
	batch.peer.label = fmt.Sprintf("watermill-amqp v3.0.2, Publish(topic, msgs...) with %d messages", rmqBatch)
	async.ours.label = fmt.Sprintf("broker/rabbitmq PublishAsync + Flush, WithChannels(16), WithMaxInFlight(%d): %d confirms in flight", rmqWindow, rmqPublishers*rmqWindow)
	async.peer.label = "none"
	async.peer.err = notApplicable("watermill-amqp has no asynchronous publish")
	con.ours.label = "broker/rabbitmq, Subscription.Concurrency 16"
	con.raw.label = fmt.Sprintf("amqp091-go v1.16.0, one channel, prefetch %d, 16 goroutines acking each delivery", rmqPrefetch)
	con.peer.label = "watermill-amqp v3.0.2, 16 Subscribe calls on the queue (one message in flight each), prefetch 16"
	runRounds(ctx, cfg.rounds, cfg.perRun,
		side{[]*outcome{&pub.ours, &con.ours, &batch.ours, &async.ours}, func(ctx context.Context, r int) ([]sample, error) { return rabbitOurs(ctx, env, r, n) }},
		side{[]*outcome{&pub.raw, &con.raw, &asyncTopic.raw}, func(ctx context.Context, r int) ([]sample, error) { return rabbitRaw(ctx, env, n) }},
		side{[]*outcome{&pub.peer, &con.peer, &batch.peer}, func(ctx context.Context, r int) ([]sample, error) { return rabbitWatermill(ctx, env, n) }},
	)
	batch.raw = pub.raw
	batch.raw.label = "the raw run of the row above (it keeps 128 confirms in flight per goroutine)"
	async.raw = pub.raw
	async.raw.label = fmt.Sprintf("the raw run of the first RabbitMQ publish row (%d goroutines × %d confirms in flight)", rmqPublishers, rmqWindow)
	asyncTopic.ours = async.ours
	asyncTopic.ours.label = "the ours run of the row above"
	asyncTopic.raw.label = fmt.Sprintf("amqp091-go as in the first RabbitMQ publish row (%d channels × %d confirms in flight), through a topic exchange bound with \"#\", with a message ID, timestamp and one int64 header as broker/rabbitmq sends", rmqPublishers, rmqWindow)
	asyncTopic.peer.label = "none"
	asyncTopic.peer.err = async.peer.err
	return rows
}

// rabbitEnv is a private vhost on the RabbitMQ server, so that the benchmark
// neither sees nor disturbs other users of the server.
type rabbitEnv struct {
	vhost   string
	url     string // AMQP URL of the vhost
	version string // server version
}

func newRabbitEnv() (*rabbitEnv, error) {
	base := os.Getenv("AMQP_URL")
	if base == "" {
		base = testenv.DefaultAMQPURL
	}
	u, err := url.Parse(base)
	if err != nil {
		return nil, skipped("AMQP_URL: %v", err)
	}
	host := u.Host
	if u.Port() == "" {
		host = net.JoinHostPort(u.Hostname(), "5672")
	}
	c, err := net.DialTimeout("tcp", host, 2*time.Second)
	if err != nil {
		return nil, skipped("RabbitMQ at %s unreachable (%v); start it with scripts/services", host, err)
	}
	_ = c.Close()
	if _, err := exec.LookPath("rabbitmqctl"); err != nil {
		return nil, skipped("rabbitmqctl not found (needed for a private vhost): %v", err)
	}
	buf := make([]byte, 4)
	_, _ = rand.Read(buf)
	e := &rabbitEnv{vhost: "bench_" + hex.EncodeToString(buf)}
	if out, err := testenv.Rabbitmqctl("add_vhost", e.vhost); err != nil {
		return nil, skipped("rabbitmqctl add_vhost: %v: %s", err, out)
	}
	user := u.User.Username()
	if user == "" {
		user = "guest"
	}
	if out, err := testenv.Rabbitmqctl("set_permissions", "-p", e.vhost, user, ".*", ".*", ".*"); err != nil {
		e.close()
		return nil, skipped("rabbitmqctl set_permissions: %v: %s", err, out)
	}
	u.Path, u.RawPath = "/"+e.vhost, ""
	e.url = u.String()
	conn, err := amqp.Dial(e.url)
	if err != nil {
		e.close()
		return nil, skipped("RabbitMQ: %v", err)
	}
	e.version = fmt.Sprint(conn.Properties["version"])
	_ = conn.Close()
	return e, nil
}

func (e *rabbitEnv) close() {
	if out, err := testenv.Rabbitmqctl("delete_vhost", e.vhost); err != nil {
		fmt.Fprintf(os.Stderr, "bench: rabbitmqctl delete_vhost %s: %v: %s\n", e.vhost, err, out)
	}
}

// dial opens a named connection to the vhost.
func (e *rabbitEnv) dial(name string) (*amqp.Connection, error) {
	return amqp.DialConfig(e.url, amqp.Config{Properties: amqp.Table{"connection_name": name}})
}

// admin runs f on a channel of a connection of its own.
func (e *rabbitEnv) admin(f func(ch *amqp.Channel) error) error {
	conn, err := e.dial("bench-admin")
	if err != nil {
		return err
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		return err
	}
	return f(ch)
}

// purge declares queue (durable) and empties it, so a round starts clean.
func (e *rabbitEnv) purge(queue string) error {
	return e.admin(func(ch *amqp.Channel) error {
		if _, err := ch.QueueDeclare(queue, true, false, false, false, nil); err != nil {
			return err
		}
		_, err := ch.QueuePurge(queue, false)
		return err
	})
}

// purgeExisting empties queue, which must exist (declared with whatever
// arguments its owner chose).
func (e *rabbitEnv) purgeExisting(queue string) error {
	return e.admin(func(ch *amqp.Channel) error {
		_, err := ch.QueuePurge(queue, false)
		return err
	})
}

// deleteQueue deletes queue with its messages.
func (e *rabbitEnv) deleteQueue(queue string) error {
	return e.admin(func(ch *amqp.Channel) error {
		_, err := ch.QueueDelete(queue, false, false, false)
		return err
	})
}

// confirmChannels opens n channels on conn in confirm mode.
func confirmChannels(conn *amqp.Connection, n int) ([]*amqp.Channel, error) {
	chans := make([]*amqp.Channel, n)
	for i := range chans {
		var err error
		if chans[i], err = conn.Channel(); err != nil {
			return nil, err
		}
		if err := chans[i].Confirm(false); err != nil {
			return nil, err
		}
	}
	return chans, nil
}

func rabbitRaw(ctx context.Context, env *rabbitEnv, n int) ([]sample, error) {
	const queue = "raw"
	if err := env.purge(queue); err != nil {
		return nil, err
	}
	conn, err := env.dial("bench-raw")
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	chans, err := confirmChannels(conn, rmqPublishers)
	if err != nil {
		return nil, err
	}
	p := payload1K()
	start := time.Now()
	errs := make(chan error, rmqPublishers)
	for g, ch := range chans {
		count := n / rmqPublishers
		if g < n%rmqPublishers {
			count++
		}
		go func() { errs <- rawPublish(ctx, ch, queue, p, count) }()
	}
	for range chans {
		if e := <-errs; e != nil && err == nil {
			err = e
		}
	}
	pubSample := sample{n: n, elapsed: time.Since(start), allocs: -1}
	if err != nil {
		return nil, fmt.Errorf("publish: %w", err)
	}

	t := newConsumeTimer(n)
	ch, err := conn.Channel()
	if err != nil {
		return []sample{pubSample}, err
	}
	if err := ch.Qos(rmqPrefetch, 0, false); err != nil {
		return []sample{pubSample}, err
	}
	deliveries, err := ch.ConsumeWithContext(ctx, queue, "bench-raw", false, false, false, false, nil)
	if err != nil {
		return []sample{pubSample}, err
	}
	var wg sync.WaitGroup
	for range rmqHandlers {
		wg.Go(func() {
			for d := range deliveries {
				if d.Ack(false) == nil {
					t.inc()
				}
			}
		})
	}
	err = t.wait(ctx)
	_ = ch.Cancel("bench-raw", false)
	_ = ch.Close()
	wg.Wait()
	if err != nil {
		return []sample{pubSample}, fmt.Errorf("consume: %w", err)
	}
	conSample := t.sample()

	// The same publish through a topic exchange bound to the queue, with
	// the properties broker/rabbitmq sends (message ID, timestamp, a
	// header with the time in nanoseconds): what the server does for ours.
	if err := env.purge(queue); err != nil {
		return []sample{pubSample, conSample}, err
	}
	ach, err := conn.Channel()
	if err != nil {
		return []sample{pubSample, conSample}, err
	}
	if err := ach.ExchangeDeclare("raw-topic", amqp.ExchangeTopic, true, false, false, false, nil); err != nil {
		return []sample{pubSample, conSample}, err
	}
	if err := ach.QueueBind(queue, "#", "raw-topic", false, nil); err != nil {
		return []sample{pubSample, conSample}, err
	}
	_ = ach.Close()
	keys := benchKeys()
	start = time.Now()
	for g, ch := range chans {
		count := n / rmqPublishers
		if g < n%rmqPublishers {
			count++
		}
		go func() {
			errs <- rawPublishWith(ctx, ch, rmqWindow, count, func(i int) (string, string, amqp.Publishing) {
				now := time.Now()
				return "raw-topic", keys[(g+i*rmqPublishers)%64], amqp.Publishing{
					DeliveryMode: amqp.Persistent, MessageId: rawID(), Timestamp: now,
					Headers: amqp.Table{"x-patterns-time": now.UnixNano()}, Body: p,
				}
			})
		}()
	}
	for range chans {
		if e := <-errs; e != nil && err == nil {
			err = e
		}
	}
	topicSample := sample{n: n, elapsed: time.Since(start), allocs: -1}
	if err != nil {
		return []sample{pubSample, conSample}, fmt.Errorf("publish through a topic exchange: %w", err)
	}
	return []sample{pubSample, conSample, topicSample}, env.purge(queue)
}

// rawID is a message ID like broker.NewID's: 16 random bytes in hex.
func rawID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// rawPublish publishes count messages on ch keeping rmqWindow confirms in flight.
func rawPublish(ctx context.Context, ch *amqp.Channel, queue string, p []byte, count int) error {
	return rawPublishWith(ctx, ch, rmqWindow, count, func(int) (string, string, amqp.Publishing) {
		return "", queue, amqp.Publishing{DeliveryMode: amqp.Persistent, ContentType: "application/octet-stream", Body: p}
	})
}

// rawPublishWith publishes count messages made by msg (exchange, routing
// key, message) on ch keeping window confirms in flight.
func rawPublishWith(ctx context.Context, ch *amqp.Channel, window, count int, msg func(i int) (string, string, amqp.Publishing)) error {
	pending := make([]*amqp.DeferredConfirmation, 0, window)
	wait := func(dc *amqp.DeferredConfirmation) error {
		ok, err := dc.WaitContext(ctx)
		if err != nil {
			return err
		}
		if !ok {
			return errors.New("nacked by the broker")
		}
		return nil
	}
	for i := range count {
		exchange, key, m := msg(i)
		dc, err := ch.PublishWithDeferredConfirmWithContext(ctx, exchange, key, false, false, m)
		if err != nil {
			return err
		}
		pending = append(pending, dc)
		if len(pending) == window {
			if err := wait(pending[0]); err != nil {
				return err
			}
			pending = pending[1:] // append reallocates now and then: no copy per message
		}
	}
	for _, dc := range pending {
		if err := wait(dc); err != nil {
			return err
		}
	}
	return nil
}

func rabbitWatermill(ctx context.Context, env *rabbitEnv, n int) ([]sample, error) {
	const topic = "watermill" // NewDurableQueueConfig: the queue is named after the topic
	if err := env.purge(topic); err != nil {
		return nil, err
	}
	cfg := wamqp.NewDurableQueueConfig(env.url)
	cfg.Publish.ConfirmDelivery = true
	cfg.Publish.ChannelPoolSize = rmqPublishers
	cfg.Consume.Qos.PrefetchCount = 16
	pub, err := wamqp.NewPublisher(cfg, watermill.NopLogger{})
	if err != nil {
		return nil, err
	}
	defer pub.Close()
	p := payload1K()
	start := time.Now()
	err = publishParallel(ctx, n, rmqPublishers, func(ctx context.Context, _ int) error {
		m := message.NewMessage(watermill.NewUUID(), p)
		m.SetContext(ctx)
		return pub.Publish(topic, m)
	})
	pubSample := sample{n: n, elapsed: time.Since(start), allocs: -1}
	if err != nil {
		return nil, fmt.Errorf("publish: %w", err)
	}

	t := newConsumeTimer(n)
	sub, err := wamqp.NewSubscriber(cfg, watermill.NopLogger{})
	if err != nil {
		return []sample{pubSample}, err
	}
	defer sub.Close()
	sctx, stop := context.WithCancel(ctx)
	defer stop()
	var wg sync.WaitGroup
	for range rmqHandlers {
		msgs, err := sub.Subscribe(sctx, topic)
		if err != nil {
			stop()
			wg.Wait()
			return []sample{pubSample}, err
		}
		wg.Go(func() {
			for m := range msgs {
				if m.Ack() {
					t.inc()
				}
			}
		})
	}
	err = t.wait(ctx)
	stop()
	_ = sub.Close()
	wg.Wait()
	if err != nil {
		return []sample{pubSample}, fmt.Errorf("consume: %w", err)
	}
	conSample := t.sample()

	batchSample, err := publishBatches(ctx, n, rmqBatch, rmqPublishers, func(ctx context.Context, lo, hi int) error {
		msgs := make([]*message.Message, hi-lo)
		for i := range msgs {
			msgs[i] = message.NewMessage(watermill.NewUUID(), p)
			msgs[i].SetContext(ctx)
		}
		return pub.Publish(topic, msgs...)
	})
	if err != nil {
		return []sample{pubSample, conSample}, fmt.Errorf("batch publish: %w", err)
	}
	if err := env.purge(topic); err != nil {
		return []sample{pubSample, conSample}, err
	}
	return []sample{pubSample, conSample, batchSample}, nil
}
