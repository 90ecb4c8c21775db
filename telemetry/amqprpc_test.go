package telemetry_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/go-integration/patterns/internal/testenv"
	"github.com/go-integration/patterns/rpc/amqprpc"
)

// amqpUp signals a Server's (or Client's) first ConnectionUp.
type amqpUp struct {
	once sync.Once
	ch   chan struct{}
}

func newAMQPUp() *amqpUp { return &amqpUp{ch: make(chan struct{})} }

func (u *amqpUp) TraceConnection(_ context.Context, d amqprpc.TraceConnectionData) {
	if d.Event == amqprpc.ConnectionUp {
		u.once.Do(func() { close(u.ch) })
	}
}

// startAMQPRPCServer runs a Server with the rig's tracer until the test ends
// and waits until it consumes.
func startAMQPRPCServer(t *testing.T, rig *rwRig, url, queue string, h amqprpc.Handler) {
	t.Helper()
	up := newAMQPUp()
	s, err := amqprpc.NewServer(url, queue, h, amqprpc.WithTracer(rig.tel.AMQPRPC()), amqprpc.WithTracer(up))
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
	select {
	case <-up.ch:
	case err := <-errc:
		t.Fatalf("server stopped: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("server did not connect")
	}
}

// A call and the request it serves are one trace: the client span "call
// <queue>" is the parent of the server span "serve <queue>", which is the
// parent of what the handler does; a handler error is an Error on both; the
// durations and connection events are counted exactly.
func TestAMQPRPCCallAndServeShareTheTrace(t *testing.T) {
	rig := newRWRig(t)
	_, url := testenv.VHost(t)
	queue := testenv.Name(t, "tel")
	tracer := rig.tp.Tracer("test")
	startAMQPRPCServer(t, rig, url, queue, func(ctx context.Context, req amqprpc.Message) (amqprpc.Message, error) {
		_, span := tracer.Start(ctx, "handler")
		span.End()
		if string(req.Body) == "fail" {
			return amqprpc.Message{}, &amqprpc.Error{Code: "not_found", Message: "no such order"}
		}
		return amqprpc.Message{Body: []byte("pong")}, nil
	})
	c, err := amqprpc.NewClient(context.Background(), url, amqprpc.WithTracer(rig.tel.AMQPRPC()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ctx, parent := tracer.Start(ctx, "caller")
	if _, err := c.Call(ctx, queue, amqprpc.Message{Body: []byte("ping")}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Call(ctx, queue, amqprpc.Message{Body: []byte("fail")}); !errors.Is(err, &amqprpc.Error{Code: "not_found"}) {
		t.Fatalf("err = %v", err)
	}
	parent.End()
	// The server ends its span after replying: wait for both and their durations.
	testenv.Eventually(t, 10*time.Second, "two serve spans", func() bool {
		_, n := rwHist(t, rig.collect(t), "patterns.amqprpc.serve.duration")
		return len(rig.named("serve "+queue)) == 2 && n == 2
	})

	calls, serves, handlers := rig.named("call "+queue), rig.named("serve "+queue), rig.named("handler")
	if len(calls) != 2 || len(handlers) != 2 {
		t.Fatalf("%d call spans, %d handler spans", len(calls), len(handlers))
	}
	// The spans are recorded as they end, and a serve span ends after its
	// reply is sent: the second call's serve span can end first.
	byStart(serves)
	for i := range 2 {
		call, serve, handler := calls[i], serves[i], handlers[i]
		if call.SpanKind() != trace.SpanKindClient || serve.SpanKind() != trace.SpanKindServer {
			t.Errorf("kinds %v %v", call.SpanKind(), serve.SpanKind())
		}
		if call.Parent().SpanID() != parent.SpanContext().SpanID() {
			t.Errorf("call %d is not a child of the caller", i)
		}
		if serve.SpanContext().TraceID() != parent.SpanContext().TraceID() || serve.Parent().SpanID() != call.SpanContext().SpanID() || !serve.Parent().IsRemote() {
			t.Errorf("serve %d: trace %v parent %v, want the call's span %v", i, serve.SpanContext().TraceID(), serve.Parent(), call.SpanContext())
		}
		if handler.Parent().SpanID() != serve.SpanContext().SpanID() {
			t.Errorf("handler %d does not run in the serve span", i)
		}
		rwWantAttr(t, call, "messaging.system", "rabbitmq")
		rwWantAttr(t, call, "messaging.destination.name", queue)
		rwWantAttr(t, call, "messaging.operation.name", "call")
		rwWantAttr(t, call, "messaging.operation.type", "send")
		rwWantAttr(t, serve, "messaging.operation.name", "serve")
		rwWantAttr(t, serve, "messaging.operation.type", "process")
		rwWantAttr(t, serve, "messaging.rabbitmq.destination.routing_key", queue)
		rwWantAttr(t, call, "messaging.message.body.size", int64(4))
		cid, _ := rwAttr(call, "messaging.message.conversation_id")
		sid, _ := rwAttr(serve, "messaging.message.conversation_id")
		if cid.AsString() == "" || cid.AsString() != sid.AsString() {
			t.Errorf("correlation ids %q and %q", cid.AsString(), sid.AsString())
		}
	}
	rwWantAttr(t, calls[0], "patterns.amqprpc.reply.body.size", int64(4))
	if calls[0].Status().Code != codes.Unset || serves[0].Status().Code != codes.Unset {
		t.Error("a good call has an error status")
	}
	for _, s := range []string{"call", "serve"} {
		span := calls[1]
		if s == "serve" {
			span = serves[1]
		}
		if span.Status().Code != codes.Error {
			t.Errorf("failed %s status %v", s, span.Status())
		}
		rwWantAttr(t, span, "error.type", "not_found")
	}

	rm := rig.collect(t)
	rmq := attribute.String("messaging.system", "rabbitmq")
	dest := attribute.String("messaging.destination.name", queue)
	nf := attribute.String("error.type", "not_found")
	for _, name := range []string{"patterns.amqprpc.call.duration", "patterns.amqprpc.serve.duration"} {
		ok, total := rwHist(t, rm, name, rmq, dest)
		bad, _ := rwHist(t, rm, name, rmq, dest, nf)
		if ok != 1 || bad != 1 || total != 2 {
			t.Errorf("%s: ok %d, not_found %d, total %d; want 1, 1, 2", name, ok, bad, total)
		}
	}
	if n := rwSum(t, rm, "patterns.amqprpc.connection.events", rmq, attribute.String("patterns.amqprpc.role", "client"),
		attribute.String("patterns.amqprpc.connection.event", "up")); n != 1 {
		t.Errorf("client up events = %d, want 1", n)
	}
	if n := rwSum(t, rm, "patterns.amqprpc.connection.events", rmq, attribute.String("patterns.amqprpc.role", "server"),
		attribute.String("patterns.amqprpc.connection.event", "up"), dest); n != 1 {
		t.Errorf("server up events = %d, want 1", n)
	}
}

// A request whose traceparent is malformed or oversized, or whose
// tracestate is oversized, is served in a new root span (or, for a bad
// tracestate alone, under the good traceparent), and handled.
func TestAMQPRPCServeIgnoresBadTraceContext(t *testing.T) {
	rig := newRWRig(t)
	_, url := testenv.VHost(t)
	queue := testenv.Name(t, "tel")
	startAMQPRPCServer(t, rig, url, queue, func(ctx context.Context, req amqprpc.Message) (amqprpc.Message, error) {
		return req, nil
	})
	c, err := amqprpc.NewClient(context.Background(), url) // no tracer: the test writes the header
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	const good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	cases := []struct {
		name       string
		header     map[string]string
		wantParent bool
	}{
		{"garbage", map[string]string{"traceparent": "not-a-traceparent"}, false},
		{"bad hex", map[string]string{"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e47zz-00f067aa0ba902b7-01"}, false},
		{"oversized", map[string]string{"traceparent": good + strings.Repeat("-ff", 1000)}, false},
		{"future version too long", map[string]string{"traceparent": "01" + good[2:] + "-extra"}, false},
		{"oversized tracestate", map[string]string{"traceparent": good, "tracestate": bigTracestate()}, true},
		{"good", map[string]string{"traceparent": good, "tracestate": "k=v"}, true},
	}
	for _, tc := range cases {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		reply, err := c.Call(ctx, queue, amqprpc.Message{Body: []byte(tc.name), Header: tc.header})
		cancel()
		if err != nil || string(reply.Body) != tc.name {
			t.Fatalf("%s: reply %q, err %v", tc.name, reply.Body, err)
		}
	}
	testenv.Eventually(t, 10*time.Second, "serve spans", func() bool { return len(rig.named("serve "+queue)) == len(cases) })
	serves := rig.named("serve " + queue)
	byStart(serves) // in call order: see TestAMQPRPCCallAndServeShareTheTrace
	for i, s := range serves {
		tc := cases[i]
		if got := s.Parent().IsValid(); got != tc.wantParent {
			t.Errorf("%s: has parent %v, want %v", tc.name, got, tc.wantParent)
		}
		if tc.wantParent && s.SpanContext().TraceID().String() != "4bf92f3577b34da6a3ce929d0e0e4736" {
			t.Errorf("%s: trace id %v", tc.name, s.SpanContext().TraceID())
		}
		ts := s.SpanContext().TraceState().String()
		if tc.name == "oversized tracestate" && ts != "" {
			t.Errorf("%s: tracestate %q kept", tc.name, ts)
		}
		if tc.name == "good" && ts != "k=v" {
			t.Errorf("good: tracestate %q", ts)
		}
	}
}

// byStart orders spans by their start: serve spans of calls made one
// after the other in the order of the calls, which their ends need not be.
func byStart(spans []sdktrace.ReadOnlySpan) {
	slices.SortFunc(spans, func(a, b sdktrace.ReadOnlySpan) int { return a.StartTime().Compare(b.StartTime()) })
}

// bigTracestate is a well-formed tracestate (20 members) over 512 bytes.
func bigTracestate() string {
	m := make([]string, 20)
	for i := range m {
		m[i] = fmt.Sprintf("k%d=%s", i, strings.Repeat("v", 30))
	}
	return strings.Join(m, ",")
}

// A failed dial is counted as a connection event.
func TestAMQPRPCDialFailedCounted(t *testing.T) {
	rig := newRWRig(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := amqprpc.NewClient(ctx, "amqp://guest:guest@127.0.0.1:1/", amqprpc.WithTracer(rig.tel.AMQPRPC())); err == nil {
		t.Fatal("NewClient to a closed port succeeded")
	}
	rm := rig.collect(t)
	if n := rwSum(t, rm, "patterns.amqprpc.connection.events", attribute.String("messaging.system", "rabbitmq"),
		attribute.String("patterns.amqprpc.role", "client"), attribute.String("patterns.amqprpc.connection.event", "dial-failed")); n != 1 {
		t.Errorf("dial-failed events = %d, want 1", n)
	}
}
