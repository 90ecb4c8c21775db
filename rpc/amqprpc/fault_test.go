package amqprpc_test

import (
	"context"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/go-integration/patterns/internal/testenv"
	"github.com/go-integration/patterns/rpc/amqprpc"
)

// TestFaultCloseDuringMemoryAlarm raises a memory alarm after the server's
// connection published a reply (so the broker blocks it and stops reading
// from it): Server.Close and Client.Close still return, instead of waiting
// for basic.cancel-ok or connection.close-ok the broker will not send until
// the alarm clears. Server-wide: runs only with FAULT_TESTS=1 (under flock
// /tmp/patterns-fault.lock when run by hand).
func TestFaultCloseDuringMemoryAlarm(t *testing.T) {
	testenv.FaultTest(t)
	_, url := testenv.VHost(t)
	queue := testenv.Name(t, "q")
	restore := func() {
		if out, err := testenv.Rabbitmqctl("set_vm_memory_high_watermark", "0.4"); err != nil {
			t.Errorf("restore watermark: %v: %s", err, out)
		}
	}
	t.Cleanup(restore)

	gate := make(chan struct{})
	started := make(chan struct{}, 1)
	s, err := amqprpc.NewServer(url, queue, func(ctx context.Context, req amqprpc.Message) (amqprpc.Message, error) {
		started <- struct{}{}
		<-gate
		return req, nil
	}, quiet, amqprpc.WithDrainTimeout(300*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() { errc <- s.Run(context.Background()) }()
	waitForConsumer(t, url, queue)
	c, err := amqprpc.NewClient(context.Background(), url, amqprpc.WithDrainTimeout(300*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	go func() { _, _ = call(t, c, queue, "x", 30*time.Second) }()
	<-started

	probe, err := amqp.Dial(url)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = probe.CloseDeadline(time.Now().Add(5 * time.Second)) }()
	blocked := probe.NotifyBlocked(make(chan amqp.Blocking, 4))
	if out, err := testenv.Rabbitmqctl("set_vm_memory_high_watermark", "0.0000001"); err != nil {
		t.Fatalf("set watermark: %v: %s", err, out)
	}
	// The broker tells a connection it is blocked once it publishes.
	pch, err := probe.Channel()
	if err != nil {
		t.Fatal(err)
	}
	for deadline := time.After(15 * time.Second); ; {
		_ = pch.Publish("", "nowhere", false, false, amqp.Publishing{})
		select {
		case b := <-blocked:
			if !b.Active {
				t.Fatalf("blocked notification %+v", b)
			}
		case <-time.After(100 * time.Millisecond):
			continue
		case <-deadline:
			t.Fatal("the memory alarm did not block connections")
		}
		break
	}
	close(gate) // the reply is a publish: the broker blocks the server's connection
	// and a request is one for the client's.
	go func() { _, _ = call(t, c, queue, "y", 30*time.Second) }()
	time.Sleep(300 * time.Millisecond)

	for name, closeFn := range map[string]func() error{"Server": s.Close, "Client": c.Close} {
		done := make(chan struct{})
		go func() { _ = closeFn(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Errorf("%s.Close hangs on a blocked connection", name)
		}
	}
	restore()
	if err := <-errc; err == nil {
		t.Log("Run returned nil")
	}
}
