package webhook_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"time"

	"github.com/go-integration/patterns/webhook"
)

// Sign a message as Standard Webhooks does: the published test vector.
func ExampleSigner() {
	s, err := webhook.NewSigner("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
	if err != nil {
		panic(err)
	}
	sig, err := s.Sign("msg_p5jXN8AQM9LWM0D4loKWxJek", time.Unix(1614265330, 0), []byte(`{"test": 2432232314}`))
	if err != nil {
		panic(err)
	}
	fmt.Println(sig)
	// Output: v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=
}

// Verify a request's headers against the raw body; errors say which check failed.
func ExampleVerifier() {
	v, err := webhook.NewVerifier([]string{"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"},
		webhook.WithClock(func() time.Time { return time.Unix(1614265330, 0) }))
	if err != nil {
		panic(err)
	}
	h := http.Header{}
	h.Set("webhook-id", "msg_p5jXN8AQM9LWM0D4loKWxJek")
	h.Set("webhook-timestamp", "1614265330")
	h.Set("webhook-signature", "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=")
	fmt.Println(v.Verify(h, []byte(`{"test": 2432232314}`)))
	err = v.Verify(h, []byte(`{"test": 1}`))
	fmt.Println(errors.Is(err, webhook.ErrNoMatchingSignature))
	// Output:
	// <nil>
	// true
}

// Receive webhooks: verification, a body limit and replay protection around
// your handler.
func ExampleReceiver() {
	secret := webhook.NewSecret()
	v, _ := webhook.NewVerifier([]string{secret})
	recv, err := webhook.NewReceiver(v, webhook.WithMaxBodyBytes(64<<10))
	if err != nil {
		panic(err)
	}
	srv := httptest.NewServer(recv.Handler(func(ctx context.Context, e webhook.Event) error {
		fmt.Printf("handled %s: %s\n", e.ID, e.Body)
		return nil // 204; an error answers 500 and the sender retries
	}))
	defer srv.Close()

	signer, _ := webhook.NewSigner(secret)
	for range 2 { // the second is a replay: acknowledged, not handled
		body := []byte(`{"type":"invoice.paid"}`)
		req, _ := http.NewRequest(http.MethodPost, srv.URL, strings.NewReader(string(body)))
		signer.SignHeader(req.Header, "msg_1", time.Now(), body)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			panic(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		fmt.Println(resp.StatusCode)
	}
	// Output:
	// handled msg_1: {"type":"invoice.paid"}
	// 204
	// 200
}

// Send webhooks: endpoints subscribe to types, Send enqueues, Run delivers
// with retries. Use pgstore.Store for durable delivery across processes.
func ExampleSender() {
	got := make(chan string, 1)
	endpoint := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		got <- r.Header.Get("webhook-id") + " " + string(body)
	}))
	defer endpoint.Close()

	store := webhook.NewMemoryStore()
	ctx := context.Background()
	_ = store.SaveEndpoint(ctx, webhook.Endpoint{
		ID: "billing", URL: endpoint.URL, Secrets: []string{webhook.NewSecret()},
		EventTypes: []string{"invoice.paid"},
	})
	sender, err := webhook.NewSender(store,
		// The SSRF guard refuses loopback addresses; this test endpoint is one.
		webhook.WithAllowedNetworks(netip.MustParsePrefix("127.0.0.0/8")))
	if err != nil {
		panic(err)
	}
	done := make(chan error)
	go func() { done <- sender.Run(ctx) }()

	_, n, _ := sender.Send(ctx, webhook.Message{ID: "msg_42", Type: "invoice.paid", Payload: []byte(`{"amount":10}`)})
	fmt.Println("deliveries:", n)
	fmt.Println(<-got)
	// Close stops Run, letting attempts in flight finish (up to WithDrainTimeout).
	_ = sender.Close()
	fmt.Println(errors.Is(<-done, webhook.ErrClosed))
	// Output:
	// deliveries: 1
	// msg_42 {"amount":10}
	// true
}

// attemptLog is a tracer: it implements webhook.AttemptTracer.
type attemptLog struct{}

func (attemptLog) TraceAttemptStart(ctx context.Context, d webhook.TraceAttemptStartData) context.Context {
	d.Header.Set("X-Request-Id", d.DeliveryID+"-"+fmt.Sprint(d.Attempt)) // a tracer may add headers
	return ctx
}

func (attemptLog) TraceAttemptEnd(_ context.Context, d webhook.TraceAttemptEndData) {
	fmt.Println("attempt", d.Attempt.Number, d.StatusCode, d.State, d.Err)
}

// Trace every attempt: WithTracer takes any value implementing one or more
// of the tracer interfaces (an OpenTelemetry adapter makes spans here).
func ExampleWithTracer() {
	var calls int
	endpoint := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if calls++; calls == 1 {
			http.Error(w, "try later", http.StatusServiceUnavailable)
		}
	}))
	defer endpoint.Close()
	store := webhook.NewMemoryStore()
	ctx := context.Background()
	_ = store.SaveEndpoint(ctx, webhook.Endpoint{ID: "e", URL: endpoint.URL, Secrets: []string{webhook.NewSecret()}})
	sender, err := webhook.NewSender(store, webhook.WithTracer(attemptLog{}),
		webhook.WithAllowedNetworks(netip.MustParsePrefix("127.0.0.0/8")), webhook.WithSchedule(0, 0))
	if err != nil {
		panic(err)
	}
	defer sender.Close()
	_, _, _ = sender.Send(ctx, webhook.Message{Type: "t", Payload: []byte(`{}`)})
	_, _ = sender.RunOnce(ctx)
	_, _ = sender.RunOnce(ctx)
	// Output:
	// attempt 1 503 pending webhook: endpoint answered 503 Service Unavailable
	// attempt 2 200 succeeded <nil>
}

// Deliver every message as a CloudEvent too: here in structured mode, the
// event as JSON with the payload inline. The Standard Webhooks headers sign
// the exact body sent.
func ExampleWithCloudEvents() {
	got := make(chan string, 1)
	endpoint := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		got <- r.Header.Get("Content-Type") + "\n" + string(body)
	}))
	defer endpoint.Close()

	store := webhook.NewMemoryStore()
	ctx := context.Background()
	_ = store.SaveEndpoint(ctx, webhook.Endpoint{ID: "billing", URL: endpoint.URL, Secrets: []string{webhook.NewSecret()}})
	sender, err := webhook.NewSender(store,
		webhook.WithCloudEvents(webhook.CloudEventsStructured, "https://billing.example.com"),
		webhook.WithCloudEventsSubject(func(m webhook.Message) string { return "inv_7" }),
		webhook.WithAllowedNetworks(netip.MustParsePrefix("127.0.0.0/8")))
	if err != nil {
		panic(err)
	}
	defer sender.Close()
	_, _, _ = sender.Send(ctx, webhook.Message{ID: "msg_42", Type: "invoice.paid", Payload: []byte(`{"amount":10}`),
		Time: time.Date(2026, 12, 1, 9, 30, 0, 0, time.UTC)})
	_, _ = sender.RunOnce(ctx)
	fmt.Println(<-got)
	// Output:
	// application/cloudevents+json
	// {"specversion":"1.0","id":"msg_42","source":"https://billing.example.com","type":"invoice.paid","time":"2026-12-01T09:30:00Z","subject":"inv_7","datacontenttype":"application/json","data":{"amount":10}}
}

// Receive CloudEvents from producers that do not sign (Knative, Dapr, the
// CloudEvents SDKs): no Verifier, only CloudEvents accepted, deduplicated
// on source and id. Put authentication in front (mTLS, a gateway).
func ExampleWithUnsignedCloudEvents() {
	recv, err := webhook.NewReceiver(nil, webhook.WithUnsignedCloudEvents())
	if err != nil {
		panic(err)
	}
	srv := httptest.NewServer(recv.Handler(func(ctx context.Context, e webhook.Event) error {
		ce := e.CloudEvent
		fmt.Printf("%s %s %s from %s: %s\n", ce.Mode, ce.Type, ce.ID, ce.Source, ce.Data)
		return nil
	}))
	defer srv.Close()

	post := func(header map[string]string, body string) {
		req, _ := http.NewRequest(http.MethodPost, srv.URL, strings.NewReader(body))
		for k, v := range header {
			req.Header.Set(k, v)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			panic(err)
		}
		msg, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		fmt.Println(strings.TrimSpace(fmt.Sprint(resp.StatusCode, " ", string(msg))))
	}
	// Binary mode: attributes in ce-* headers, the data is the body.
	post(map[string]string{"Ce-Specversion": "1.0", "Ce-Id": "e1", "Ce-Source": "/orders", "Ce-Type": "order.created",
		"Content-Type": "application/json"}, `{"order":1}`)
	// Structured mode: the whole event as JSON.
	post(map[string]string{"Content-Type": "application/cloudevents+json"},
		`{"specversion":"1.0","id":"e2","source":"/orders","type":"order.paid","data":{"order":1}}`)
	// A required attribute missing: 400, the handler is not called.
	post(map[string]string{"Content-Type": "application/cloudevents+json"}, `{"specversion":"1.0","id":"e3","source":"/orders"}`)
	// Output:
	// binary order.created e1 from /orders: {"order":1}
	// 204
	// structured order.paid e2 from /orders: {"order":1}
	// 204
	// 400 webhook: invalid CloudEvent: attribute type is missing or empty
}
