package amqprpc_test

import (
	"bytes"
	"context"
	"errors"
	"strconv"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/go-integration/patterns/internal/testenv"
	"github.com/go-integration/patterns/rpc/amqprpc"
)

// wireHandler answers by the request body; a successful reply echoes the
// request's headers and the handler's deadline, so the raw client can check
// what reached the server.
func wireHandler(ctx context.Context, req amqprpc.Message) (amqprpc.Message, error) {
	switch string(req.Body) {
	case "sold out":
		return amqprpc.Message{}, &amqprpc.Error{Code: "sold_out", Message: "room 7 is taken"}
	case "fail":
		return amqprpc.Message{}, errors.New("database down")
	case "panic":
		panic("boom")
	case "expired":
		panic("a request past its deadline ran")
	}
	h := map[string]string{}
	for k, v := range req.Header {
		h["echo-"+k] = v
	}
	if dl, ok := ctx.Deadline(); ok {
		h["echo-deadline"] = strconv.FormatInt(dl.UnixMilli(), 10)
	}
	return amqprpc.Message{Body: bytes.ToUpper(req.Body), ContentType: req.ContentType, Header: h}, nil
}

// rawClient speaks the wire format documented in doc.go and docs/rpc.md with
// plain amqp091-go, as a client in another language would.
type rawClient struct {
	ch      *amqp.Channel
	replies <-chan amqp.Delivery
	returns <-chan amqp.Return
	seq     int
}

func newRawClient(t *testing.T, url string) *rawClient {
	t.Helper()
	conn, err := amqp.Dial(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	// Direct reply-to: consume the pseudo-queue with no-ack, on the channel
	// we publish on, before publishing.
	replies, err := ch.Consume("amq.rabbitmq.reply-to", "", true, false, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	returns := ch.NotifyReturn(make(chan amqp.Return, 1))
	return &rawClient{ch: ch, replies: replies, returns: returns}
}

// publish sends body to queue on the default exchange with the mandatory
// flag and returns the correlation id. headers may be nil.
func (c *rawClient) publish(t *testing.T, queue, body string, deadline time.Time, headers amqp.Table) string {
	t.Helper()
	c.seq++
	id := "wire-" + strconv.Itoa(c.seq)
	if headers == nil {
		headers = amqp.Table{}
	}
	p := amqp.Publishing{
		CorrelationId: id,
		ReplyTo:       "amq.rabbitmq.reply-to",
		ContentType:   "text/plain",
		Headers:       headers,
		Body:          []byte(body),
	}
	if !deadline.IsZero() {
		if _, set := headers["x-rpc-deadline"]; !set {
			headers["x-rpc-deadline"] = deadline.UnixMilli()
		}
		if left := time.Until(deadline).Milliseconds(); left > 0 {
			p.Expiration = strconv.FormatInt(left, 10)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.ch.PublishWithContext(ctx, "", queue, true, false, p); err != nil {
		t.Fatal(err)
	}
	return id
}

// reply waits for the next reply and checks it answers id.
func (c *rawClient) reply(t *testing.T, id string) amqp.Delivery {
	t.Helper()
	select {
	case d := <-c.replies:
		if d.CorrelationId != id {
			t.Fatalf("reply correlation_id %q, want %q", d.CorrelationId, id)
		}
		return d
	case r := <-c.returns:
		t.Fatalf("request %s returned: %d %s", r.CorrelationId, r.ReplyCode, r.ReplyText)
	case <-time.After(10 * time.Second):
		t.Fatalf("no reply to %s", id)
	}
	panic("unreachable")
}

func TestWireFormat(t *testing.T) {
	_, url := testenv.VHost(t)
	queue := testenv.Name(t, "q")
	// One handler at a time, so replies come back in request order.
	startServer(t, url, queue, wireHandler, amqprpc.WithConcurrency(1))
	c := newRawClient(t, url)

	t.Run("success", func(t *testing.T) {
		deadline := time.Now().Add(30 * time.Second)
		id := c.publish(t, queue, "room 7", deadline, amqp.Table{
			"x-in":         "hello",
			"x-count":      int32(7),   // not a string: arrives as text
			"x-rpc-custom": "reserved", // reserved prefix: never reaches the handler
		})
		d := c.reply(t, id)
		if string(d.Body) != "ROOM 7" || d.ContentType != "text/plain" {
			t.Errorf("reply %q (%s), want \"ROOM 7\" (text/plain)", d.Body, d.ContentType)
		}
		if _, isErr := d.Headers["x-rpc-error-code"]; isErr {
			t.Errorf("success reply has x-rpc-error-code: %v", d.Headers)
		}
		want := map[string]string{
			"echo-x-in":     "hello",
			"echo-x-count":  "7",
			"echo-deadline": strconv.FormatInt(deadline.UnixMilli(), 10),
		}
		for k, v := range want {
			if got, _ := d.Headers[k].(string); got != v {
				t.Errorf("reply header %s = %v, want %q", k, d.Headers[k], v)
			}
		}
		if v, ok := d.Headers["echo-x-rpc-custom"]; ok {
			t.Errorf("reserved header reached the handler: %v", v)
		}
	})

	t.Run("deadline as decimal string", func(t *testing.T) {
		deadline := time.Now().Add(30 * time.Second)
		ms := strconv.FormatInt(deadline.UnixMilli(), 10)
		d := c.reply(t, c.publish(t, queue, "x", deadline, amqp.Table{"x-rpc-deadline": ms}))
		if got := d.Headers["echo-deadline"]; got != ms {
			t.Errorf("handler deadline %v, want %s", got, ms)
		}
	})

	t.Run("errors", func(t *testing.T) {
		for _, tc := range []struct{ body, code, msg string }{
			{"sold out", "sold_out", "room 7 is taken"},
			{"fail", amqprpc.CodeInternal, "database down"},
			{"panic", amqprpc.CodePanic, "boom"},
		} {
			d := c.reply(t, c.publish(t, queue, tc.body, time.Now().Add(30*time.Second), nil))
			code, codeIsString := d.Headers["x-rpc-error-code"].(string)
			msg, msgIsString := d.Headers["x-rpc-error"].(string)
			if !codeIsString || !msgIsString || code != tc.code || msg != tc.msg {
				t.Errorf("%s: headers %v, want x-rpc-error-code %q and x-rpc-error %q as strings", tc.body, d.Headers, tc.code, tc.msg)
			}
			if len(d.Body) != 0 {
				t.Errorf("%s: error reply has a body: %q", tc.body, d.Body)
			}
		}
	})

	t.Run("past deadline is dropped without a reply", func(t *testing.T) {
		// No expiration, so RabbitMQ delivers it and the server sees the
		// past deadline itself; the handler would panic if it ran.
		c.publish(t, queue, "expired", time.Time{}, amqp.Table{"x-rpc-deadline": time.Now().Add(-time.Second).UnixMilli()})
		id := c.publish(t, queue, "next", time.Now().Add(30*time.Second), nil)
		// With one handler at a time the next reply would answer the expired
		// request first, if the server answered it at all.
		if d := c.reply(t, id); string(d.Body) != "NEXT" {
			t.Errorf("reply %q, want NEXT", d.Body)
		}
		if n := queueDepth(t, url, queue); n != 0 {
			t.Errorf("%d requests left in the queue, want 0 (the expired one acked)", n)
		}
	})

	t.Run("no queue returns the request", func(t *testing.T) {
		id := c.publish(t, testenv.Name(t, "missing"), "x", time.Now().Add(30*time.Second), nil)
		select {
		case r := <-c.returns:
			if r.CorrelationId != id || r.ReplyCode != amqp.NoRoute {
				t.Errorf("basic.return %s %d %s, want %s 312 NO_ROUTE", r.CorrelationId, r.ReplyCode, r.ReplyText, id)
			}
		case d := <-c.replies:
			t.Fatalf("reply %q for a request to no queue", d.Body)
		case <-time.After(10 * time.Second):
			t.Fatal("no basic.return")
		}
	})
}
