package rabbitmq_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-integration/patterns/broker"
	"github.com/go-integration/patterns/broker/rabbitmq"
	"github.com/go-integration/patterns/internal/testenv"
)

// startApp restarts the RabbitMQ application and waits until it serves again.
func startApp(t testing.TB) {
	t.Helper()
	if out, err := testenv.Rabbitmqctl("start_app"); err != nil {
		t.Errorf("rabbitmqctl start_app: %v: %s", err, out)
	}
	if out, err := testenv.Rabbitmqctl("await_startup"); err != nil {
		t.Errorf("rabbitmqctl await_startup: %v: %s", err, out)
	}
}

// TestFaultBrokerRestart stops and starts the RabbitMQ application while
// 10,000 messages are published and consumed: every confirmed message is
// delivered and both sides resume on their own. Server-wide: runs only with
// FAULT_TESTS=1 (under flock /tmp/patterns-fault.lock when run by hand).
func TestFaultBrokerRestart(t *testing.T) {
	testenv.FaultTest(t)
	_, url := testenv.VHost(t)
	t.Cleanup(func() { startApp(t) }) // whatever happens, leave the server running
	streamThroughFault(t, url, 10000, func() {
		if out, err := testenv.Rabbitmqctl("stop_app"); err != nil {
			t.Errorf("rabbitmqctl stop_app: %v: %s", err, out)
		}
		time.Sleep(2 * time.Second) // an outage Publish has to wait through
		startApp(t)
	})
}

// TestFaultBlockedConnection raises a memory alarm (the broker blocks
// publishing connections): Publish honours its context instead of hanging,
// and succeeds again once the alarm clears.
func TestFaultBlockedConnection(t *testing.T) {
	testenv.FaultTest(t)
	_, url := testenv.VHost(t)
	p := newPublisher(t, url)
	closing := newPublisher(t, url) // closed while blocked
	if err := p.Publish(ctxT(t, 10*time.Second), "alarm", broker.Message{ID: "before"}); err != nil {
		t.Fatal(err)
	}
	restore := func() {
		if out, err := testenv.Rabbitmqctl("set_vm_memory_high_watermark", "0.4"); err != nil {
			t.Errorf("restore watermark: %v: %s", err, out)
		}
	}
	t.Cleanup(restore)
	if out, err := testenv.Rabbitmqctl("set_vm_memory_high_watermark", "0.0000001"); err != nil {
		t.Fatalf("set watermark: %v: %s", err, out)
	}
	// The block arrives asynchronously: publish until a call times out.
	deadline := time.Now().Add(15 * time.Second)
	var err error
	for time.Now().Before(deadline) {
		start := time.Now()
		err = p.Publish(ctxT(t, 500*time.Millisecond), "alarm", broker.Message{})
		if err != nil {
			if took := time.Since(start); took > 2*time.Second {
				t.Fatalf("Publish took %v with a 500ms context", took)
			}
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if !errors.Is(err, broker.ErrNotConfirmed) {
		t.Fatalf("Publish under a memory alarm = %v, want ErrNotConfirmed", err)
	}
	t.Logf("blocked: %v (stats %+v)", err, p.Stats())
	// Ping opens a channel, an RPC a blocked connection never answers: it
	// must still honour its context.
	start := time.Now()
	pingErr := make(chan error, 1)
	go func() { pingErr <- p.Ping(ctxT(t, 500*time.Millisecond)) }()
	select {
	case err := <-pingErr:
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Ping on a blocked connection: %v, want its context's error", err)
		}
		if took := time.Since(start); took > 2*time.Second {
			t.Errorf("Ping took %v with a 500ms context", took)
		}
	case <-time.After(5 * time.Second):
		t.Errorf("Ping on a blocked connection ignored its 500ms context")
	}
	// Close returns although the blocked connection never answers
	// connection.close (and the broker's heartbeats keep it alive).
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		err := closing.Publish(ctxT(t, 500*time.Millisecond), "alarm", broker.Message{})
		if errors.Is(err, broker.ErrNotConfirmed) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("second publisher under the alarm: %v, want ErrNotConfirmed", err)
		}
	}
	start = time.Now()
	closed := make(chan struct{})
	go func() { _ = closing.Close(); close(closed) }()
	select {
	case <-closed:
		t.Logf("Close of a blocked publisher took %v", time.Since(start))
	case <-time.After(15 * time.Second):
		t.Errorf("Close of a blocked publisher hangs")
	}
	restore()
	if err := p.Publish(ctxT(t, 30*time.Second), "alarm", broker.Message{ID: "after"}); err != nil {
		t.Fatalf("Publish after the alarm cleared: %v", err)
	}
}

// TestFaultServerMessageSizeLimit lowers the server's max_message_size: a
// larger message is refused by the server (not by the client-side check,
// switched off here) and Publish names the cause; the publisher keeps working.
func TestFaultServerMessageSizeLimit(t *testing.T) {
	testenv.FaultTest(t)
	_, url := testenv.VHost(t)
	t.Cleanup(func() {
		if out, err := testenv.Rabbitmqctl("eval", "application:set_env(rabbit, max_message_size, 134217728)."); err != nil {
			t.Errorf("restore max_message_size: %v: %s", err, out)
		}
	})
	if out, err := testenv.Rabbitmqctl("eval", "application:set_env(rabbit, max_message_size, 4096)."); err != nil {
		t.Fatalf("set max_message_size: %v: %s", err, out)
	}
	// One channel, so small messages published at the same time share the
	// channel the server closes: they must be republished, not failed.
	p := newPublisher(t, url, rabbitmq.WithMaxMessageSize(0), rabbitmq.WithChannels(1))
	ctx := ctxT(t, 30*time.Second)
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 50 {
				if err := p.Publish(ctx, "size", broker.Message{Payload: make([]byte, 100)}); err != nil {
					t.Errorf("small message published alongside the large one: %v", err)
					return
				}
			}
		}()
	}
	err := p.Publish(ctx, "size", broker.Message{Payload: make([]byte, 8192)})
	wg.Wait()
	if !errors.Is(err, broker.ErrInvalidMessage) || !strings.Contains(err.Error(), "max size") {
		t.Fatalf("Publish over the server's limit: %v, want ErrInvalidMessage naming the size limit", err)
	}
	t.Logf("over the limit: %v", err)
	if err := p.Publish(ctx, "size", broker.Message{Payload: make([]byte, 100)}); err != nil {
		t.Fatalf("Publish after the refused message: %v", err)
	}
}
