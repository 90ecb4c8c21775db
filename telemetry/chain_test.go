package telemetry_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/go-integration/patterns/broker"
	"github.com/go-integration/patterns/broker/outbox"
	"github.com/go-integration/patterns/filetransfer"
	"github.com/go-integration/patterns/internal/testenv"
	"github.com/go-integration/patterns/rpc"
	"github.com/go-integration/patterns/rpc/amqprpc"
	"github.com/go-integration/patterns/shareddb"
	"github.com/go-integration/patterns/webhook"
)

// TestTraceWholeChain is the chain the telemetry package exists for, on
// the real servers, as one trace: an incoming request (a server span, as
// otelhttp makes) adds an outbox row in PostgreSQL; the relay publishes it
// to RabbitMQ or Kafka; the consumer's handler, in its process span, calls
// an HTTP service through rpc, a RabbitMQ service through amqprpc (whose
// server serves in the same trace), makes a webhook delivery attempt,
// reads the shared database through the replica reader and exports a day
// of CSV. Every span is in the request's trace, with the parent each
// should have.
func TestTraceWholeChain(t *testing.T) {
	for _, a := range btAdapters()[1:] { // rabbitmq, kafka
		t.Run(a.name, func(t *testing.T) {
			t.Parallel()
			testTraceWholeChain(t, a)
		})
	}
}

func testTraceWholeChain(t *testing.T, a btAdapter) {
	rig := newRWRig(t)
	tel := rig.tel

	// The downstream HTTP service records the trace it was called in.
	var mu sync.Mutex
	var httpSeen []trace.SpanContext
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sc := trace.SpanContextFromContext(rig.prop.Extract(r.Context(), propagation.HeaderCarrier(r.Header)))
		mu.Lock()
		httpSeen = append(httpSeen, sc)
		mu.Unlock()
		io.WriteString(w, "ok")
	}))
	t.Cleanup(srv.Close)
	client, err := rpc.NewClient(rpc.WithTracer(tel.RPC()), fastBackoff())
	if err != nil {
		t.Fatal(err)
	}

	// The RabbitMQ service.
	_, amqpURL := testenv.VHost(t)
	queue := testenv.Name(t, "pricing")
	startAMQPRPCServer(t, rig, amqpURL, queue, func(ctx context.Context, req amqprpc.Message) (amqprpc.Message, error) {
		return amqprpc.Message{Body: []byte("42")}, nil
	})
	caller, err := amqprpc.NewClient(context.Background(), amqpURL, amqprpc.WithTracer(tel.AMQPRPC()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { caller.Close() })

	// The partner a webhook goes to, the shared database, the export.
	partner := newWHPartner(t)
	sender := whSender(t, webhook.NewMemoryStore(), partner, tel.Webhook())
	reader := sdbReader(t, testenv.DatabaseURL(t), shareddb.WithReplicas(testenv.ReplicaDatabaseURL(t)),
		shareddb.WithMaxLag(-1), shareddb.WithTracer(tel.SharedDB()))
	sdbWaitHealthy(t, reader)
	ftPool, store := ftSetup(t, "create table visits (id int primary key, day date not null)",
		"insert into visits values (1, '2024-01-01'), (2, '2024-01-01')")
	exporter, err := filetransfer.NewExporter(ftPool, store, filetransfer.WithTracer(tel.FileTransfer()))
	if err != nil {
		t.Fatal(err)
	}
	day := ftDay(t, "2024-01-01")
	ds := filetransfer.Dataset{Name: "visits", Query: "select id, day from visits order by id", DayColumn: "day"}

	// The consumer: everything its handler does is in the process span.
	tr := tel.Broker()
	pub, sub := a.setup(t, tr, true)
	topic := a.topic(t)
	handled := make(chan error, 1)
	btSubscribe(t, sub, broker.Subscription{Topic: topic, Group: "bookings"}, func(ctx context.Context, m broker.Message) error {
		handled <- func() error {
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+"/availability", nil)
			resp, err := client.Do(req)
			if err != nil {
				return fmt.Errorf("rpc: %w", err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if _, err := caller.Call(ctx, queue, amqprpc.Message{Body: []byte("price?")}); err != nil {
				return fmt.Errorf("amqprpc: %w", err)
			}
			if _, _, err := sender.Send(ctx, webhook.Message{Type: "booking.created", Payload: m.Payload}); err != nil {
				return fmt.Errorf("webhook send: %w", err)
			}
			if n, err := sender.RunOnce(ctx); err != nil || n != 1 {
				return fmt.Errorf("webhook delivery: %d attempts, %v", n, err)
			}
			var one int
			if err := reader.QueryRow(ctx, "select 1").Scan(&one); err != nil {
				return fmt.Errorf("shareddb: %w", err)
			}
			if _, err := exporter.Export(ctx, ds, day, day); err != nil {
				return fmt.Errorf("export: %w", err)
			}
			return nil
		}()
		return nil
	})

	// The request adds the row; the relay publishes it.
	pool := outboxDB(t)
	tbl, err := outbox.NewTable(outbox.DefaultTable, outbox.WithTracer(tel.Outbox()))
	if err != nil {
		t.Fatal(err)
	}
	ctx, request := rig.tp.Tracer("test").Start(context.Background(), "POST /bookings", trace.WithSpanKind(trace.SpanKindServer))
	outboxAdd(t, ctx, pool, tbl, topic, broker.Message{Key: "booking.b1", Payload: []byte(`{"id":"b1"}`)})
	request.End()
	relay, err := outbox.NewRelay(pool, pub, outbox.WithTracer(tel.Outbox()), outbox.WithPollInterval(10*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	stop := outboxRun(t, relay)
	select {
	case err := <-handled:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("the message was not handled within 60 s")
	}
	stop()

	// The spans end after the calls return: the server's after replying,
	// the process span after the handler is settled.
	process := "process " + topic
	names := []string{"create " + topic, process, "GET", "call " + queue, "serve " + queue, "POST", "postgresql", "export visits"}
	testenv.Eventually(t, 30*time.Second, "every span of the chain ended", func() bool {
		for _, n := range names {
			if len(rig.named(n)) == 0 {
				return false
			}
		}
		return true
	})
	reqSC := request.SpanContext()
	one := func(name string) sdktrace.ReadOnlySpan {
		t.Helper()
		s := rig.named(name)
		if len(s) != 1 {
			t.Fatalf("%d spans %q, want 1", len(s), name)
		}
		if s[0].SpanContext().TraceID() != reqSC.TraceID() {
			t.Errorf("%q is in trace %v, want the request's %v", name, s[0].SpanContext().TraceID(), reqSC.TraceID())
		}
		return s[0]
	}
	childOf := func(name string, s, parent sdktrace.ReadOnlySpan) {
		t.Helper()
		if s.Parent().SpanID() != parent.SpanContext().SpanID() {
			t.Errorf("%q: parent %v, want %q (%v)", name, s.Parent().SpanID(), parent.Name(), parent.SpanContext().SpanID())
		}
	}
	create := one("create " + topic)
	if create.Parent().SpanID() != reqSC.SpanID() {
		t.Errorf("create: parent %v, want the request", create.Parent().SpanID())
	}
	var msgSend sdktrace.ReadOnlySpan
	for _, s := range rig.named("send " + topic) {
		if s.Parent().SpanID() == create.SpanContext().SpanID() {
			msgSend = s
		}
	}
	if msgSend == nil {
		t.Fatal("no send span under the create span")
	}
	proc := one(process)
	childOf(process, proc, msgSend)
	if !btHasLink(proc, msgSend.SpanContext()) {
		t.Error("the process span does not link to the send span")
	}
	get := one("GET")
	childOf("GET", get, proc)
	call := one("call " + queue)
	childOf("call", call, proc)
	childOf("serve", one("serve "+queue), call)
	childOf("webhook POST", one("POST"), proc)
	childOf("postgresql", one("postgresql"), proc)
	childOf("export", one("export visits"), proc)

	mu.Lock()
	defer mu.Unlock()
	if len(httpSeen) != 1 || httpSeen[0].TraceID() != reqSC.TraceID() || httpSeen[0].SpanID() != get.SpanContext().SpanID() {
		t.Errorf("the HTTP service saw %v, want the GET span's context in the request's trace", httpSeen)
	}
}
