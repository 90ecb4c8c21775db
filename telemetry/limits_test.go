package telemetry_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/baggage"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"go.opentelemetry.io/otel/trace"

	"github.com/go-integration/patterns/broker"
	"github.com/go-integration/patterns/broker/kafka"
	"github.com/go-integration/patterns/broker/outbox"
	"github.com/go-integration/patterns/internal/testenv"
	"github.com/go-integration/patterns/internal/testenv/kafkaenv"
	"github.com/go-integration/patterns/rpc"
	"github.com/go-integration/patterns/rpc/amqprpc"
	"github.com/go-integration/patterns/telemetry"
	"github.com/go-integration/patterns/webhook"
)

// The largest trace context the carriers write: a 55-byte traceparent, a
// tracestate cut to exactly 512 bytes and a baggage of exactly 8192.
const limTraceID = "4bf92f3577b34da6a3ce929d0e0e4736"

// limMember is a list-member key=value of exactly n bytes.
func limMember(key string, n int) string { return key + "=" + strings.Repeat("v", n-len(key)-1) }

// limTracestate is a 713-byte tracestate whose W3C cut (the 200-byte
// member first) is limWantTracestate, 512 bytes.
var (
	limTracestate     = strings.Join([]string{limMember("a", 125), limMember("big", 200), limMember("c", 128), limMember("d", 128), limMember("e", 128)}, ",")
	limWantTracestate = strings.Join([]string{limMember("a", 125), limMember("c", 128), limMember("d", 128), limMember("e", 128)}, ",")
)

// limContext is a context whose span context carries limTracestate and
// whose baggage is, with oversized, 40 members of 255 bytes (10239 bytes,
// which the carriers cut to 32 members, 8191 bytes), else 32 members making
// exactly 8192 bytes (sent as is).
func limContext(t *testing.T, oversized bool) context.Context {
	t.Helper()
	ts, err := trace.ParseTraceState(limTracestate)
	if err != nil {
		t.Fatal(err)
	}
	tid, _ := trace.TraceIDFromHex(limTraceID)
	sid, _ := trace.SpanIDFromHex("00f067aa0ba902b7")
	ctx := trace.ContextWithRemoteSpanContext(context.Background(), trace.NewSpanContext(trace.SpanContextConfig{
		TraceID: tid, SpanID: sid, TraceFlags: trace.FlagsSampled, TraceState: ts, Remote: true}))
	var bag baggage.Baggage
	n := 32
	if oversized {
		n = 40
	}
	for i := range n {
		size := 255
		if !oversized && i == n-1 {
			size = 256
		}
		kv := strings.SplitN(limMember(fmt.Sprintf("k%02d", i), size), "=", 2)
		m, err := baggage.NewMember(kv[0], kv[1])
		if err != nil {
			t.Fatal(err)
		}
		// SetMember, unlike baggage.New, does not cut at 8192 bytes.
		if bag, err = bag.SetMember(m); err != nil {
			t.Fatal(err)
		}
	}
	if s := bag.String(); oversized && len(s) != 10239 || !oversized && len(s) != 8192 {
		t.Fatalf("test baggage of %d bytes", len(s))
	}
	return baggage.ContextWithBaggage(ctx, bag)
}

// limCheckHeader fails t unless get returns what limContext's context
// becomes: its trace, the cut tracestate, a baggage of whole members within
// 8192 bytes (exactly 8192 when not oversized).
func limCheckHeader(t *testing.T, what string, get func(string) string, oversized bool) {
	t.Helper()
	tp := get("traceparent")
	if len(tp) != 55 || !strings.Contains(tp, limTraceID) {
		t.Errorf("%s: traceparent %q", what, tp)
	}
	if ts := get("tracestate"); ts != limWantTracestate {
		t.Errorf("%s: tracestate of %d bytes, want %d (%q)", what, len(ts), len(limWantTracestate), ts)
	}
	limCheckBaggage(t, what, get("baggage"), oversized)
}

func limCheckBaggage(t *testing.T, what, bs string, oversized bool) {
	t.Helper()
	bag, err := baggage.Parse(bs)
	if err != nil {
		t.Errorf("%s: baggage of %d bytes does not parse: %v", what, len(bs), err)
		return
	}
	wantLen, wantMembers := 8192, 32
	if oversized {
		wantLen = 8191
	}
	if len(bs) != wantLen || bag.Len() != wantMembers {
		t.Errorf("%s: baggage of %d bytes, %d members; want %d, %d", what, len(bs), bag.Len(), wantLen, wantMembers)
	}
	for _, m := range bag.Members() {
		if len(m.Key())+1+len(m.Value()) != 255 && len(m.Key())+1+len(m.Value()) != 256 {
			t.Errorf("%s: baggage member %s cut inside", what, m.Key())
		}
	}
}

// limCheckContext fails t unless the handler's ctx continues the trace with
// the cut tracestate and the baggage as sent.
func limCheckContext(t *testing.T, what string, ctx context.Context, oversized bool) {
	t.Helper()
	sc := trace.SpanContextFromContext(ctx)
	if sc.TraceID().String() != limTraceID {
		t.Errorf("%s: handler's trace %v", what, sc.TraceID())
	}
	if ts := sc.TraceState().String(); ts != limWantTracestate {
		t.Errorf("%s: handler's tracestate of %d bytes", what, len(ts))
	}
	limCheckBaggage(t, what+" (handler's context)", baggage.FromContext(ctx).String(), oversized)
}

// The largest trace context a publisher writes (55 + 512 + 8192 bytes of
// headers), and an oversized one cut to the limits, go through every
// broker and reach the handler whole: RabbitMQ takes them (AMQP's 255-byte
// short-string limit is on header names, not values; frame_max 131072 is far
// off), Kafka (record headers count toward the batch, well under 1 MB) and
// the memory broker.
func TestHeaderLimitsBrokers(t *testing.T) {
	for _, a := range btAdapters() {
		t.Run(a.name, func(t *testing.T) {
			t.Parallel()
			e := newBTEnv(t)
			p, s := a.setup(t, e.tel.Broker(), true)
			topic := a.topic(t)
			type got struct {
				header map[string]string
				ctx    context.Context
			}
			handled := make(chan got, 2)
			btSubscribe(t, s, broker.Subscription{Topic: topic, Group: "g"}, func(ctx context.Context, m broker.Message) error {
				handled <- got{m.Header, ctx}
				return nil
			})
			for _, oversized := range []bool{false, true} {
				what := fmt.Sprintf("%s oversized=%v", a.name, oversized)
				btPublish(t, limContext(t, oversized), p, topic, broker.Message{ID: what, Payload: []byte("x")})
				select {
				case g := <-handled:
					limCheckHeader(t, what, func(k string) string { return g.header[k] }, oversized)
					limCheckContext(t, what, g.ctx, oversized)
				case <-time.After(30 * time.Second):
					t.Fatalf("%s: not handled", what)
				}
			}
		})
	}
}

// A message near the Kafka publisher's WithMaxMessageBytes that the
// maximal trace headers push over it fails at once with
// broker.ErrInvalidMessage, naming the record's size with its headers; it
// is not retried, dropped or published. Without trace context it is sent.
func TestHeaderLimitsKafkaMaxMessageBytes(t *testing.T) {
	e := newBTEnv(t)
	bs := kafkaenv.Brokers(t)
	const maxBytes = 16384
	p, err := kafka.NewPublisher(bs, kafka.WithCreateTopics(kafka.Topic{Partitions: 1}), kafka.WithTracer(e.tel.Broker()),
		kafka.WithMaxMessageBytes(maxBytes), kafka.WithLogger(quietLogger()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	topic := testenv.Name(t, "k")
	// About 4 KB under the limit alone; 8.8 KB of trace headers tip it over.
	payload := make([]byte, maxBytes-4096)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := p.Publish(ctx, topic, broker.Message{ID: "plain", Payload: payload}); err != nil {
		t.Fatalf("without trace context: %v", err)
	}
	start := time.Now()
	err = p.Publish(limContext(t, false), topic, broker.Message{ID: "traced", Payload: payload})
	if !errors.Is(err, broker.ErrInvalidMessage) {
		t.Fatalf("with maximal trace headers: err %v, want broker.ErrInvalidMessage", err)
	}
	if !strings.Contains(err.Error(), "max.message.bytes") {
		t.Errorf("error does not say what limit: %v", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("failing took %v: retried?", d)
	}
	if st := p.Stats(); st.Published != 1 || st.Failed != 1 {
		t.Errorf("publisher stats %+v, want 1 published and 1 failed", st)
	}
	// The span and the metric say why.
	var failed int
	for _, s := range e.waitSpans(t, "send "+topic, 2) {
		if s.Status().Code == codes.Error && strings.Contains(s.Status().Description, "max.message.bytes") {
			failed++
		}
	}
	if failed != 1 {
		t.Errorf("%d failed send spans naming max.message.bytes, want 1", failed)
	}
	var rm metricdata.ResourceMetrics
	if err := e.reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	if n := btSum(t, rm, "messaging.client.sent.messages", attribute.String("error.type", "invalid_message"), attribute.String("messaging.destination.name", topic)); n != 1 {
		t.Errorf("sent messages with error.type invalid_message: %d, want 1", n)
	}
}

// An rpc/amqprpc request carries the largest trace context, and an
// oversized one cut, to the server's handler.
func TestHeaderLimitsAMQPRPC(t *testing.T) {
	rig := newRWRig(t)
	_, url := testenv.VHost(t)
	queue := testenv.Name(t, "tel")
	type got struct {
		header map[string]string
		ctx    context.Context
	}
	handled := make(chan got, 1)
	startAMQPRPCServer(t, rig, url, queue, func(ctx context.Context, req amqprpc.Message) (amqprpc.Message, error) {
		handled <- got{req.Header, ctx}
		return amqprpc.Message{Body: []byte("ok")}, nil
	})
	c, err := amqprpc.NewClient(context.Background(), url, amqprpc.WithTracer(rig.tel.AMQPRPC()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	for _, oversized := range []bool{false, true} {
		what := fmt.Sprintf("amqprpc oversized=%v", oversized)
		ctx, cancel := context.WithTimeout(limContext(t, oversized), 30*time.Second)
		_, err := c.Call(ctx, queue, amqprpc.Message{Body: []byte("x")})
		cancel()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		g := <-handled
		limCheckHeader(t, what, func(k string) string { return g.header[k] }, oversized)
		limCheckContext(t, what, g.ctx, oversized)
	}
}

// An rpc client request and a webhook delivery (with propagation on)
// carry the largest trace context, and an oversized one cut, in their HTTP
// headers; the server takes them (Go's default limit is 1 MB of headers).
func TestHeaderLimitsHTTP(t *testing.T) {
	rig := newRWRig(t)
	var mu sync.Mutex
	var headers []http.Header
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		headers = append(headers, r.Header.Clone())
		mu.Unlock()
	}))
	defer srv.Close()
	last := func() http.Header {
		mu.Lock()
		defer mu.Unlock()
		return headers[len(headers)-1]
	}
	c, err := rpc.NewClient(rpc.WithTracer(rig.tel.RPC()))
	if err != nil {
		t.Fatal(err)
	}
	for _, oversized := range []bool{false, true} {
		what := fmt.Sprintf("rpc oversized=%v", oversized)
		req, _ := http.NewRequestWithContext(limContext(t, oversized), http.MethodGet, srv.URL, nil)
		resp, err := c.Do(req)
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("%s: %v %v", what, resp, err)
		}
		resp.Body.Close()
		h := last()
		limCheckHeader(t, what, h.Get, oversized)
	}

	p := newWHPartner(t)
	s := whSender(t, webhook.NewMemoryStore(), p, rig.tel.Webhook(telemetry.WithWebhookPropagation(true)))
	for i, oversized := range []bool{false, true} {
		ctx := limContext(t, oversized)
		if _, _, err := s.Send(ctx, webhook.Message{Type: "x", Payload: []byte(`{}`)}); err != nil {
			t.Fatal(err)
		}
		runOnce(t, ctx, s, 1)
		got := p.got()
		if len(got) != i+1 {
			t.Fatalf("partner got %d requests", len(got))
		}
		limCheckHeader(t, fmt.Sprintf("webhook oversized=%v", oversized), got[i].Get, oversized)
	}
}

// outbox.Table.Add stores the cut context in the rows' headers.
func TestHeaderLimitsOutboxAdd(t *testing.T) {
	rig := newRWRig(t)
	tr := rig.tel.Outbox().(outbox.AddTracer)
	for _, oversized := range []bool{false, true} {
		msgs := []broker.Message{{ID: "m", Header: map[string]string{}}}
		ctx := tr.TraceAddStart(limContext(t, oversized), outbox.TraceAddStartData{Table: "outbox", Topic: "t", Messages: msgs})
		tr.TraceAddEnd(ctx, outbox.TraceAddEndData{})
		h := msgs[0].Header
		limCheckHeader(t, fmt.Sprintf("outbox oversized=%v", oversized), func(k string) string { return h[k] }, oversized)
	}
}

// A received message or request whose baggage is over 8192 bytes or whose
// tracestate is over 512 is handled as usual: the traceparent is kept,
// the oversized header ignored, no error.
func TestHeaderLimitsInboundOversized(t *testing.T) {
	const tp = "00-" + limTraceID + "-00f067aa0ba902b7-01"
	var big []string
	for i := range 40 {
		big = append(big, limMember(fmt.Sprintf("k%02d", i), 255))
	}
	bigBaggage := strings.Join(big, ",")
	cases := map[string]map[string]string{
		"baggage":    {"traceparent": tp, "tracestate": "a=1", "baggage": bigBaggage},
		"tracestate": {"traceparent": tp, "tracestate": limTracestate, "baggage": "k=v"},
	}
	check := func(t *testing.T, what string, ctx context.Context) {
		t.Helper()
		sc := trace.SpanContextFromContext(ctx)
		if sc.TraceID().String() != limTraceID {
			t.Errorf("%s: trace %v, want the traceparent's", what, sc.TraceID())
		}
		bag, ts := baggage.FromContext(ctx), sc.TraceState().String()
		switch {
		case strings.HasSuffix(what, "baggage") && (bag.Len() != 0 || ts != "a=1"):
			t.Errorf("%s: baggage of %d members, tracestate %q; want none and a=1", what, bag.Len(), ts)
		case strings.HasSuffix(what, "tracestate") && (bag.Member("k").Value() != "v" || ts != ""):
			t.Errorf("%s: baggage %q, tracestate %q; want k=v and none", what, bag.String(), ts)
		}
	}
	t.Run("brokers", func(t *testing.T) {
		for _, a := range btAdapters() {
			t.Run(a.name, func(t *testing.T) {
				t.Parallel()
				e := newBTEnv(t)
				p, s := a.setup(t, e.tel.Broker(), false)
				topic := a.topic(t)
				type got struct {
					id  string
					ctx context.Context
				}
				handled := make(chan got, len(cases))
				btSubscribe(t, s, broker.Subscription{Topic: topic, Group: "g"}, func(ctx context.Context, m broker.Message) error {
					handled <- got{m.ID, ctx}
					return nil
				})
				for name, h := range cases {
					btPublish(t, context.Background(), p, topic, broker.Message{ID: name, Header: h})
				}
				for range cases {
					select {
					case g := <-handled:
						check(t, a.name+" "+g.id, g.ctx)
					case <-time.After(30 * time.Second):
						t.Fatal("not every message was handled")
					}
				}
			})
		}
	})
	t.Run("amqprpc", func(t *testing.T) {
		rig := newRWRig(t)
		_, url := testenv.VHost(t)
		queue := testenv.Name(t, "tel")
		startAMQPRPCServer(t, rig, url, queue, func(ctx context.Context, req amqprpc.Message) (amqprpc.Message, error) {
			check(t, "amqprpc "+string(req.Body), ctx)
			return req, nil
		})
		c, err := amqprpc.NewClient(context.Background(), url) // no tracer: the test writes the header
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		for name, h := range cases {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			reply, err := c.Call(ctx, queue, amqprpc.Message{Body: []byte(name), Header: h})
			cancel()
			if err != nil || string(reply.Body) != name {
				t.Fatalf("%s: reply %q, err %v", name, reply.Body, err)
			}
		}
	})
	t.Run("webhook receiver", func(t *testing.T) {
		rig := newRWRig(t)
		secret := webhook.NewSecret()
		v, err := webhook.NewVerifier([]string{secret})
		if err != nil {
			t.Fatal(err)
		}
		recv, err := webhook.NewReceiver(v, webhook.WithTracer(rig.tel.Webhook(telemetry.WithWebhookPropagation(true))), webhook.WithLogger(whQuiet))
		if err != nil {
			t.Fatal(err)
		}
		handled := make(chan context.Context, 1)
		srv := httptest.NewServer(recv.Handler(func(ctx context.Context, e webhook.Event) error {
			handled <- ctx
			return nil
		}))
		defer srv.Close()
		signer, err := webhook.NewSigner(secret)
		if err != nil {
			t.Fatal(err)
		}
		for name, h := range cases {
			body := []byte(`{}`)
			req, _ := http.NewRequest(http.MethodPost, srv.URL, strings.NewReader(string(body)))
			for k, v := range h {
				req.Header.Set(k, v)
			}
			if err := signer.SignHeader(req.Header, "msg_"+name, time.Now(), body); err != nil {
				t.Fatal(err)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode/100 != 2 {
				t.Fatalf("%s: status %d", name, resp.StatusCode)
			}
			check(t, "webhook "+name, <-handled)
		}
	})
}
