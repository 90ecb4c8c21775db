package amqprpc_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/go-integration/patterns/internal/testenv"
	"github.com/go-integration/patterns/rpc/amqprpc"
)

// A queue name AMQP cannot carry makes Run fail at once with
// ErrInvalidOption instead of reconnecting every second forever, and Call
// fail at once instead of closing the connection every call shares.
func TestBadQueueNamesFailAtOnce(t *testing.T) {
	t.Parallel()
	_, url := testenv.VHost(t)
	echo := func(_ context.Context, req amqprpc.Message) (amqprpc.Message, error) { return req, nil }
	bad := map[string]string{
		"300 bytes": strings.Repeat("q", 300),
		"not UTF-8": "rpc\xff",
		"reserved":  "amq.rpc",
	}
	for name, queue := range bad {
		s, err := amqprpc.NewServer(url, queue, echo, quiet)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		start := time.Now()
		err = s.Run(ctx)
		took := time.Since(start)
		cancel()
		if !errors.Is(err, amqprpc.ErrInvalidOption) || !strings.Contains(err.Error(), "queue name") {
			t.Errorf("%s: Run = %v, want ErrInvalidOption naming the queue", name, err)
		}
		if took > time.Second {
			t.Errorf("%s: Run took %v, want under 1s", name, took)
		}
		t.Logf("%s: %v", name, err)
		s.Close()
	}

	queue := testenv.Name(t, "q")
	startServer(t, url, queue, echo)
	c := newClient(t, url)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for name, queue := range bad {
		if name == "reserved" {
			continue // a routing key may start with amq. (amq.rabbitmq.reply-to does)
		}
		start := time.Now()
		_, err := c.Call(ctx, queue, amqprpc.Message{Body: []byte("x")})
		if !errors.Is(err, amqprpc.ErrInvalidOption) {
			t.Errorf("%s: Call = %v, want ErrInvalidOption", name, err)
		}
		if took := time.Since(start); took > time.Second {
			t.Errorf("%s: Call took %v", name, took)
		}
	}
	// the shared connection survived.
	resp, err := c.Call(ctx, queue, amqprpc.Message{Body: []byte("still here")})
	if err != nil || string(resp.Body) != "still here" {
		t.Errorf("Call after the refused ones = %q, %v", resp.Body, err)
	}
}
