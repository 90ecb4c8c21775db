package rabbitmq_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/go-integration/patterns/broker"
	"github.com/go-integration/patterns/internal/testenv"
)

// A topic whose exchange name AMQP cannot carry fails Publish at once with
// broker.ErrInvalidMessage, without touching the connection: amqp091 would
// close the connection over a 300-byte name, RabbitMQ over invalid UTF-8,
// and the channel over "amq.", and republishing would reconnect forever.
func TestPublishRefusesBadTopicNames(t *testing.T) {
	t.Parallel()
	_, url := testenv.VHost(t)
	p := newPublisher(t, url)
	ctx := ctxT(t, 30*time.Second)
	if err := p.Publish(ctx, "names_ok", broker.Message{Payload: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	before := p.Stats()
	for name, topic := range map[string]string{
		"300 bytes": strings.Repeat("t", 300),
		"not UTF-8": "orders\xff\xfe",
		"reserved":  "amq.x",
	} {
		start := time.Now()
		err := p.Publish(ctx, topic, broker.Message{Payload: []byte("x")})
		took := time.Since(start)
		if !errors.Is(err, broker.ErrInvalidMessage) {
			t.Errorf("%s: Publish = %v, want ErrInvalidMessage", name, err)
		}
		if took > time.Second {
			t.Errorf("%s: Publish took %v, want under 1s", name, took)
		}
		t.Logf("%s: %v", name, err)
	}
	if err := p.Publish(ctx, "names_ok", broker.Message{Payload: []byte("y")}); err != nil {
		t.Errorf("Publish after the refused ones: %v", err)
	}
	after := p.Stats()
	if after.Connects != before.Connects || after.Reconnects != before.Reconnects || after.Disconnects != before.Disconnects {
		t.Errorf("stats went from %+v to %+v: the connection was touched", before, after)
	}
	if after.Published != before.Published+1 {
		t.Errorf("published %d messages, want 1 (the refused ones must not be sent)", after.Published-before.Published)
	}
}

// An exchange the server refuses to declare fails Publish at once with
// broker.ErrNotConfirmed (it used to be retried for about 3 s): an exchange
// of another type, and one the user has no configure permission on.
func TestPublishFailsAtOnceWhenTheDeclareIsRefused(t *testing.T) {
	t.Parallel()
	vhost, url := testenv.VHost(t)
	ch := admin(t, url)
	if err := ch.ExchangeDeclare("names_fanout", "fanout", true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	// configure permission only on names_*: other exchanges cannot be declared.
	if out, err := testenv.Rabbitmqctl("set_permissions", "-p", vhost, "guest", "^names_.*", ".*", ".*"); err != nil {
		t.Fatalf("set_permissions: %v: %s", err, out)
	}
	p := newPublisher(t, url)
	ctx := ctxT(t, 30*time.Second)
	if err := p.Publish(ctx, "names_ok", broker.Message{Payload: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	before := p.Stats()
	for _, c := range []struct{ topic, want string }{
		{"names_fanout", "another type"},
		{"denied", "access refused"},
	} {
		start := time.Now()
		err := p.Publish(ctx, c.topic, broker.Message{Payload: []byte("x")})
		took := time.Since(start)
		if !errors.Is(err, broker.ErrNotConfirmed) || errors.Is(err, broker.ErrInvalidMessage) || err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Publish to %s = %v, want ErrNotConfirmed saying %q", c.topic, err, c.want)
		}
		if took > time.Second {
			t.Errorf("Publish to %s took %v, want under 1s", c.topic, took)
		}
		t.Logf("%s: %v after %v", c.topic, err, took.Round(time.Millisecond))
	}
	if err := p.Publish(ctx, "names_ok", broker.Message{Payload: []byte("y")}); err != nil {
		t.Errorf("Publish after the refused ones: %v", err)
	}
	if after := p.Stats(); after.Reconnects != before.Reconnects || after.Connects != before.Connects {
		t.Errorf("stats went from %+v to %+v: channel errors must not reconnect", before, after)
	}
}

// Subscribe and Provision refuse names AMQP cannot carry before declaring
// anything: here the group's queue name, topic + ":" + group, is over 255
// bytes though topic and group are not.
func TestSubscribeRefusesBadQueueNames(t *testing.T) {
	t.Parallel()
	_, url := testenv.VHost(t)
	s := newSubscriber(t, url)
	sub := broker.Subscription{Topic: strings.Repeat("t", 250), Group: "billing"}
	ok := func(context.Context, broker.Message) error { return nil }
	ctx := ctxT(t, 30*time.Second)
	before := s.Stats()
	for name, call := range map[string]func() error{
		"Provision": func() error { return s.Provision(ctx, sub) },
		"Subscribe": func() error { return s.Subscribe(ctx, sub, ok) },
	} {
		start := time.Now()
		err := call()
		if !errors.Is(err, broker.ErrInvalidSubscription) || !strings.Contains(err.Error(), "queue name") {
			t.Errorf("%s = %v, want ErrInvalidSubscription naming the queue", name, err)
		}
		if took := time.Since(start); took > time.Second {
			t.Errorf("%s took %v", name, took)
		}
	}
	if after := s.Stats(); after != before {
		t.Errorf("stats went from %+v to %+v", before, after)
	}
}
