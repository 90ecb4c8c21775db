package webhook_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"

	"github.com/go-integration/patterns/webhook"
)

var allowLoopback = webhook.WithAllowedNetworks(loopback...)

// capture is an endpoint that keeps every request (header and raw body) and
// answers with the next status of codes (then 204).
type capture struct {
	mu    sync.Mutex
	reqs  []*http.Request
	bodys [][]byte
	codes []int
	srv   *httptest.Server
}

func newCapture(t *testing.T, codes ...int) *capture {
	c := &capture{codes: codes}
	c.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		c.mu.Lock()
		c.reqs = append(c.reqs, r)
		c.bodys = append(c.bodys, body)
		code := http.StatusNoContent
		if len(c.codes) > 0 {
			code, c.codes = c.codes[0], c.codes[1:]
		}
		c.mu.Unlock()
		w.WriteHeader(code)
	}))
	t.Cleanup(c.srv.Close)
	return c
}

// request returns the i-th request with its body restored.
func (c *capture) request(i int) (*http.Request, []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	r := c.reqs[i].Clone(context.Background())
	r.Body = io.NopCloser(bytes.NewReader(c.bodys[i]))
	return r, c.bodys[i]
}

func (c *capture) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.reqs)
}

// sendOne sends m through a Sender with opts to url and runs one attempt.
func sendOne(t *testing.T, url, secret string, m webhook.Message, opts ...webhook.SenderOption) *webhook.Sender {
	t.Helper()
	ctx := context.Background()
	store := webhook.NewMemoryStore()
	if err := store.SaveEndpoint(ctx, webhook.Endpoint{ID: "e", URL: url, Secrets: []string{secret}}); err != nil {
		t.Fatal(err)
	}
	s, err := webhook.NewSender(store, append([]webhook.SenderOption{allowLoopback, webhook.WithJitter(0)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	if _, n, err := s.Send(ctx, m); err != nil || n != 1 {
		t.Fatalf("Send: %d, %v", n, err)
	}
	if n, err := s.RunOnce(ctx); err != nil || n != 1 {
		t.Fatalf("RunOnce: %d, %v", n, err)
	}
	return s
}

// What our Sender emits, the SDK reads: every attribute and the data, in
// both modes, and the event validates. The Standard Webhooks signature
// still verifies over the exact body sent.
func TestCloudEventsSenderToSDK(t *testing.T) {
	at := time.Date(2026, 11, 30, 12, 34, 56, 789000000, time.UTC)
	cases := []struct {
		name     string
		mode     webhook.CloudEventsMode
		ct       string
		payload  string
		wantBody string // the body on the wire, when it is fixed
	}{
		{name: "binary json", mode: webhook.CloudEventsBinary, ct: "application/json", payload: `{"amount":10}`},
		{name: "binary text", mode: webhook.CloudEventsBinary, ct: "text/plain; charset=utf-8", payload: "hello"},
		{name: "structured json", mode: webhook.CloudEventsStructured, ct: "application/json", payload: `{"amount":10}`,
			wantBody: `{"specversion":"1.0","id":"msg_1","source":"https://billing.example.com/","type":"invoice.paid","time":"2026-11-30T12:34:56.789Z","subject":"inv_7","datacontenttype":"application/json","data":{"amount":10}}`},
		{name: "structured binary data", mode: webhook.CloudEventsStructured, ct: "application/octet-stream", payload: "\x00\x01\xfe\xff",
			wantBody: `{"specversion":"1.0","id":"msg_1","source":"https://billing.example.com/","type":"invoice.paid","time":"2026-11-30T12:34:56.789Z","subject":"inv_7","datacontenttype":"application/octet-stream","data_base64":"AAH+/w=="}`},
		{name: "structured invalid json", mode: webhook.CloudEventsStructured, ct: "application/json", payload: `{"amount":`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ep := newCapture(t)
			secret := webhook.NewSecret()
			sendOne(t, ep.srv.URL, secret, webhook.Message{ID: "msg_1", Type: "invoice.paid", Payload: []byte(tc.payload), Time: at},
				webhook.WithCloudEvents(tc.mode, "https://billing.example.com/"),
				webhook.WithCloudEventsSubject(func(m webhook.Message) string { return "inv_7" }),
				webhook.WithContentType(tc.ct))
			if ep.len() != 1 {
				t.Fatalf("%d requests", ep.len())
			}
			req, body := ep.request(0)
			if tc.wantBody != "" && string(body) != tc.wantBody {
				t.Errorf("body\n got %s\nwant %s", body, tc.wantBody)
			}
			v, _ := webhook.NewVerifier([]string{secret})
			if err := v.Verify(req.Header, body); err != nil {
				t.Errorf("signature over the body sent: %v", err)
			}
			e, err := cehttp.NewEventFromHTTPRequest(req)
			if err != nil {
				t.Fatalf("SDK cannot read it: %v", err)
			}
			if err := e.Validate(); err != nil {
				t.Errorf("Validate: %v", err)
			}
			if e.SpecVersion() != "1.0" || e.ID() != "msg_1" || e.Source() != "https://billing.example.com/" ||
				e.Type() != "invoice.paid" || e.Subject() != "inv_7" || !e.Time().Equal(at) || e.DataContentType() != tc.ct {
				t.Errorf("attributes: %s", e.Context)
			}
			if string(e.Data()) != tc.payload {
				t.Errorf("data %q, want %q", e.Data(), tc.payload)
			}
			wantCT := tc.ct
			if tc.mode == webhook.CloudEventsStructured {
				wantCT = webhook.ContentTypeCloudEventsJSON
			}
			if got := req.Header.Get("Content-Type"); got != wantCT {
				t.Errorf("Content-Type %q, want %q", got, wantCT)
			}
		})
	}
}

// sdkClient returns an sdk-go HTTP client; with a secret it signs every
// request as Standard Webhooks does, in a round tripper.
func sdkClient(t *testing.T, secret string) cloudevents.Client {
	t.Helper()
	var opts []cehttp.Option
	if secret != "" {
		signer, err := webhook.NewSigner(secret)
		if err != nil {
			t.Fatal(err)
		}
		opts = append(opts, cloudevents.WithRoundTripper(signingTransport{signer}))
	}
	c, err := cloudevents.NewClientHTTP(opts...)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

type signingTransport struct{ s *webhook.Signer }

func (st signingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return nil, err
	}
	r = r.Clone(r.Context())
	r.Body = io.NopCloser(bytes.NewReader(body))
	if err := st.s.SignHeader(r.Header, "sdk_"+strings.ReplaceAll(r.Header.Get("Ce-Id"), ".", "_"), time.Now(), body); err != nil {
		return nil, err
	}
	return http.DefaultTransport.RoundTrip(r)
}

// What the SDK emits, our Receiver reads: both modes, signed (by a round
// tripper) and unsigned (WithUnsignedCloudEvents), JSON, text and binary data,
// optional attributes and extensions.
func TestCloudEventsSDKToReceiver(t *testing.T) {
	at := time.Date(2026, 11, 30, 1, 2, 3, 456000000, time.UTC)
	type dataCase struct {
		name, ct string
		data     any
		want     string
	}
	datas := []dataCase{
		{"json", "application/json", map[string]int{"amount": 10}, `{"amount":10}`},
		{"text", "text/plain", "hello world", "hello world"},
		{"bytes", "application/octet-stream", []byte{0, 1, 0xfe, 0xff}, "\x00\x01\xfe\xff"},
	}
	for _, signed := range []bool{true, false} {
		for _, structured := range []bool{false, true} {
			for _, dc := range datas {
				name := map[bool]string{true: "signed", false: "unsigned"}[signed] + "/" +
					map[bool]string{true: "structured", false: "binary"}[structured] + "/" + dc.name
				t.Run(name, func(t *testing.T) {
					secret := ""
					var got webhook.Event
					var calls atomic.Int32
					handler := func(_ context.Context, e webhook.Event) error { got = e; calls.Add(1); return nil }
					var recv *webhook.Receiver
					if signed {
						secret = webhook.NewSecret()
						v, _ := webhook.NewVerifier([]string{secret})
						recv = mustReceiver(t, v)
					} else {
						recv = mustReceiver(t, nil, webhook.WithUnsignedCloudEvents())
					}
					srv := httptest.NewServer(recv.Handler(handler))
					t.Cleanup(srv.Close)

					e := cloudevents.NewEvent()
					e.SetID("evt-1")
					e.SetSource("/orders/eu")
					e.SetType("com.example.order.created")
					e.SetSubject("order-42")
					e.SetTime(at)
					e.SetDataSchema("https://schemas.example.com/order")
					e.SetExtension("partitionkey", "k1")
					e.SetExtension("sequence", 7)
					e.SetExtension("urgent", true)
					if err := e.SetData(dc.ct, dc.data); err != nil {
						t.Fatal(err)
					}
					ctx := cloudevents.ContextWithTarget(context.Background(), srv.URL)
					if structured {
						ctx = cloudevents.WithEncodingStructured(ctx)
					} else {
						ctx = cloudevents.WithEncodingBinary(ctx)
					}
					if res := sdkClient(t, secret).Send(ctx, e); !cloudevents.IsACK(res) {
						t.Fatalf("Send: %v", res)
					}
					if calls.Load() != 1 {
						t.Fatalf("handler called %d times", calls.Load())
					}
					ce := got.CloudEvent
					if ce == nil {
						t.Fatal("Event.CloudEvent is nil")
					}
					wantMode := webhook.CloudEventsBinary
					if structured {
						wantMode = webhook.CloudEventsStructured
					}
					if ce.Mode != wantMode || ce.SpecVersion != "1.0" || ce.ID != "evt-1" || ce.Source != "/orders/eu" ||
						ce.Type != "com.example.order.created" || ce.Subject != "order-42" || !ce.Time.Equal(at) ||
						ce.DataSchema != "https://schemas.example.com/order" || !strings.HasPrefix(ce.DataContentType, dc.ct) {
						t.Errorf("attributes: %+v", *ce)
					}
					if string(ce.Data) != dc.want {
						t.Errorf("data %q, want %q", ce.Data, dc.want)
					}
					wantExt := map[string]string{"partitionkey": "k1", "sequence": "7", "urgent": "true"}
					if len(ce.Extensions) != len(wantExt) {
						t.Errorf("extensions %v, want %v", ce.Extensions, wantExt)
					}
					for k, v := range wantExt {
						if ce.Extensions[k] != v {
							t.Errorf("extension %s = %q, want %q", k, ce.Extensions[k], v)
						}
					}
					if signed && !strings.HasPrefix(got.ID, "sdk_") || !signed && got.ID != "evt-1" {
						t.Errorf("Event.ID %q", got.ID)
					}
				})
			}
		}
	}
}

// Our Sender to our Receiver, signed, both modes: attribute values that
// need percent-encoding survive, retries send (and sign) the same body,
// and the receiver deduplicates on the webhook-id.
func TestCloudEventsRoundTrip(t *testing.T) {
	for _, mode := range []webhook.CloudEventsMode{webhook.CloudEventsBinary, webhook.CloudEventsStructured} {
		t.Run(mode.String(), func(t *testing.T) {
			secret := webhook.NewSecret()
			v, _ := webhook.NewVerifier([]string{secret})
			var mu sync.Mutex
			var events []webhook.Event
			var bodies []string
			fail := true
			recv := mustReceiver(t, v)
			srv := httptest.NewServer(recv.Handler(func(_ context.Context, e webhook.Event) error {
				mu.Lock()
				defer mu.Unlock()
				events, bodies = append(events, e), append(bodies, string(e.Body))
				if fail {
					fail = false
					return errors.New("first attempt fails")
				}
				return nil
			}))
			t.Cleanup(srv.Close)
			subject := `Euro € 😀 50% "q"`
			at := time.Now().UTC()
			s := sendOne(t, srv.URL, secret, webhook.Message{Type: "type with space", Payload: []byte(`{"x":1}`), Time: at},
				webhook.WithCloudEvents(mode, "urn:example:billing"),
				webhook.WithCloudEventsSubject(func(webhook.Message) string { return subject }),
				webhook.WithSchedule(0, 0))
			if n, err := s.RunOnce(context.Background()); err != nil || n != 1 {
				t.Fatalf("second RunOnce: %d, %v", n, err)
			}
			if st := s.Stats(); st.Succeeded != 1 || st.Failed != 1 {
				t.Fatalf("stats %+v", st)
			}
			mu.Lock()
			defer mu.Unlock()
			if len(events) != 2 || bodies[0] != bodies[1] {
				t.Fatalf("%d events, bodies %q", len(events), bodies)
			}
			ce := events[1].CloudEvent
			if ce == nil || ce.Mode != mode || ce.ID != events[1].ID || ce.Source != "urn:example:billing" ||
				ce.Type != "type with space" || ce.Subject != subject || !ce.Time.Equal(at) ||
				ce.DataContentType != "application/json" || string(ce.Data) != `{"x":1}` {
				t.Fatalf("CloudEvent %+v", ce)
			}
			if mode == webhook.CloudEventsBinary {
				if h := events[1].Header.Get("Ce-Subject"); h != `Euro%20%E2%82%AC%20%F0%9F%98%80%2050%25%20%22q%22` {
					t.Errorf("ce-subject header %q", h)
				}
			}
		})
	}
}

// Bad CloudEvents are answered 400 with ErrInvalidCloudEvent naming what is
// wrong, and the handler is not called.
func TestCloudEventsBadInput(t *testing.T) {
	binary := func(drop string, set ...string) func(h http.Header) {
		return func(h http.Header) {
			h.Set("Ce-Specversion", "1.0")
			h.Set("Ce-Id", "e1")
			h.Set("Ce-Source", "/s")
			h.Set("Ce-Type", "t")
			h.Set("Content-Type", "application/json")
			h.Del(drop)
			for i := 0; i+1 < len(set); i += 2 {
				h.Set(set[i], set[i+1])
			}
		}
	}
	structured := func(h http.Header) { h.Set("Content-Type", "application/cloudevents+json; charset=utf-8") }
	good := map[string]any{"specversion": "1.0", "id": "e1", "source": "/s", "type": "t"}
	without := func(k string, set ...any) string {
		m := map[string]any{}
		for kk, v := range good {
			if kk != k {
				m[kk] = v
			}
		}
		for i := 0; i+1 < len(set); i += 2 {
			m[set[i].(string)] = set[i+1]
		}
		b, _ := json.Marshal(m)
		return string(b)
	}
	cases := []struct {
		name   string
		header func(http.Header)
		body   string
		want   string // in the error
	}{
		{"binary no specversion", binary("Ce-Specversion"), `{}`, "specversion is missing"},
		{"binary no id", binary("Ce-Id"), `{}`, "id is missing"},
		{"binary no source", binary("Ce-Source"), `{}`, "source is missing"},
		{"binary no type", binary("Ce-Type"), `{}`, "type is missing"},
		{"binary empty type", binary("", "Ce-Type", ""), `{}`, "type is missing"},
		{"binary specversion 0.3", binary("", "Ce-Specversion", "0.3"), `{}`, `specversion "0.3" is not supported`},
		{"binary bad time", binary("", "Ce-Time", "yesterday"), `{}`, "time"},
		{"binary bad percent", binary("", "Ce-Subject", "50%"), `{}`, "ce-subject: bad percent-encoding"},
		{"binary overlong utf8", binary("", "Ce-Subject", "%C0%A0"), `{}`, "ce-subject: not UTF-8"},
		{"structured not json", structured, `not json`, "not a JSON object"},
		{"structured array", structured, `[{"specversion":"1.0"}]`, "not a JSON object"},
		{"structured no specversion", structured, without("specversion"), "specversion is missing"},
		{"structured no id", structured, without("id"), "id is missing"},
		{"structured no source", structured, without("source"), "source is missing"},
		{"structured no type", structured, without("type"), "type is missing"},
		{"structured specversion 0.3", structured, without("", "specversion", "0.3"), `specversion "0.3" is not supported`},
		{"structured id not a string", structured, without("", "id", 7), "id is not a string"},
		{"structured bad data_base64", structured, without("", "data_base64", "!!not base64!!"), "data_base64"},
		{"structured data and data_base64", structured, without("", "data", 1, "data_base64", "AA=="), "both data and data_base64"},
		{"structured extension object", structured, without("", "ext", map[string]int{"a": 1}), "attribute ext"},
		{"batch", func(h http.Header) { h.Set("Content-Type", "application/cloudevents-batch+json") }, `[]`, "batched content mode"},
		{"other format", func(h http.Header) { h.Set("Content-Type", "application/cloudevents+avro") }, `x`, "not supported"},
		{"not a cloudevent", func(h http.Header) { h.Set("Content-Type", "application/json") }, `{}`, "not a CloudEvent"},
	}
	var rejected []error
	var mu sync.Mutex
	recv := mustReceiver(t, nil, webhook.WithUnsignedCloudEvents(), webhook.WithTracer(onReject(func(_ *http.Request, err error) {
		mu.Lock()
		rejected = append(rejected, err)
		mu.Unlock()
	})))
	var calls atomic.Int32
	srv := httptest.NewServer(recv.Handler(func(context.Context, webhook.Event) error { calls.Add(1); return nil }))
	t.Cleanup(srv.Close)
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest(http.MethodPost, srv.URL, strings.NewReader(tc.body))
			tc.header(req.Header)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			msg, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(msg), tc.want) {
				t.Fatalf("%d %q, want 400 with %q", resp.StatusCode, msg, tc.want)
			}
			mu.Lock()
			defer mu.Unlock()
			if len(rejected) != i+1 || !errors.Is(rejected[i], webhook.ErrInvalidCloudEvent) {
				t.Fatalf("reject reasons %v", rejected)
			}
		})
	}
	if n := calls.Load(); n != 0 {
		t.Fatalf("handler called %d times", n)
	}
	// A signed receiver checks the signature first: an unsigned bad event is 400 for the missing header.
	v, _ := webhook.NewVerifier([]string{webhook.NewSecret()})
	signed := httptest.NewServer(mustReceiver(t, v).Handler(func(context.Context, webhook.Event) error { calls.Add(1); return nil }))
	t.Cleanup(signed.Close)
	req, _ := http.NewRequest(http.MethodPost, signed.URL, strings.NewReader(`{}`))
	binary("Ce-Id")(req.Header)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	msg, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(msg), "webhook-id") {
		t.Fatalf("signed receiver, unsigned request: %d %q", resp.StatusCode, msg)
	}
}

// Unsigned CloudEvents are deduplicated on source and id together.
func TestCloudEventsUnsignedDedup(t *testing.T) {
	var calls atomic.Int32
	srv := httptest.NewServer(mustReceiver(t, nil, webhook.WithUnsignedCloudEvents()).Handler(
		func(context.Context, webhook.Event) error { calls.Add(1); return nil }))
	t.Cleanup(srv.Close)
	post := func(source, id string) int {
		req, _ := http.NewRequest(http.MethodPost, srv.URL, strings.NewReader(`{}`))
		req.Header.Set("Ce-Specversion", "1.0")
		req.Header.Set("Ce-Id", id)
		req.Header.Set("Ce-Source", source)
		req.Header.Set("Ce-Type", "t")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	codes := []int{post("/a", "1"), post("/b", "1"), post("/a", "1"), post(`/a" "1`, "")}
	if want := []int{204, 204, 200, 400}; !equalInts(codes, want) || calls.Load() != 2 {
		t.Fatalf("codes %v (want %v), %d calls", codes, want, calls.Load())
	}
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestCloudEventsOptions(t *testing.T) {
	store := webhook.NewMemoryStore()
	bad := map[string][]webhook.SenderOption{
		"mode 0":                 {webhook.WithCloudEvents(0, "/s")},
		"empty source":           {webhook.WithCloudEvents(webhook.CloudEventsBinary, "")},
		"bad source":             {webhook.WithCloudEvents(webhook.CloudEventsBinary, "http://[::1")},
		"subject without CE":     {webhook.WithCloudEventsSubject(func(webhook.Message) string { return "" })},
		"nil subject":            {webhook.WithCloudEvents(webhook.CloudEventsBinary, "/s"), webhook.WithCloudEventsSubject(nil)},
		"cloudevents media type": {webhook.WithCloudEvents(webhook.CloudEventsStructured, "/s"), webhook.WithContentType("application/cloudevents+json")},
	}
	for name, opts := range bad {
		if _, err := webhook.NewSender(store, opts...); !errors.Is(err, webhook.ErrInvalidOption) {
			t.Errorf("%s: %v", name, err)
		}
	}
	v, _ := webhook.NewVerifier([]string{webhook.NewSecret()})
	if _, err := webhook.NewReceiver(v, webhook.WithUnsignedCloudEvents()); !errors.Is(err, webhook.ErrInvalidOption) ||
		!strings.Contains(err.Error(), "WithUnsignedCloudEvents") {
		t.Errorf("Verifier and WithUnsignedCloudEvents: %v", err)
	}
	if _, err := webhook.NewReceiver(nil); !errors.Is(err, webhook.ErrInvalidOption) {
		t.Errorf("nil Verifier: %v", err)
	}
	if webhook.CloudEventsBinary.String() != "binary" || webhook.CloudEventsStructured.String() != "structured" ||
		webhook.CloudEventsMode(9).String() != "CloudEventsMode(9)" {
		t.Error("String")
	}
}

// A message without a Type cannot be a CloudEvent: Send refuses it, and one
// enqueued around Send (pgstore.EnqueueTx) fails without a request.
func TestCloudEventsEmptyType(t *testing.T) {
	ctx := context.Background()
	ep := newCapture(t)
	store := webhook.NewMemoryStore()
	if err := store.SaveEndpoint(ctx, webhook.Endpoint{ID: "e", URL: ep.srv.URL, Secrets: []string{webhook.NewSecret()}}); err != nil {
		t.Fatal(err)
	}
	s, err := webhook.NewSender(store, allowLoopback, webhook.WithCloudEvents(webhook.CloudEventsBinary, "/s"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, _, err := s.Send(ctx, webhook.Message{Payload: []byte(`{}`)}); !errors.Is(err, webhook.ErrInvalidCloudEvent) {
		t.Fatalf("Send without Type: %v", err)
	}
	if _, err := store.Enqueue(ctx, webhook.Message{ID: "msg_x", Payload: []byte(`{}`), Time: time.Now()}, time.Now()); err != nil {
		t.Fatal(err)
	}
	if n, err := s.RunOnce(ctx); err != nil || n != 1 {
		t.Fatalf("RunOnce: %d, %v", n, err)
	}
	ds, err := store.Deliveries(ctx, "msg_x")
	if err != nil || len(ds) != 1 || ds[0].State != webhook.DeliveryFailed || !strings.Contains(ds[0].LastError, "type") {
		t.Fatalf("deliveries %+v, %v", ds, err)
	}
	if ep.len() != 0 {
		t.Fatalf("%d requests sent", ep.len())
	}
}

// A Sender without WithCloudEvents sends no ce-* headers, and a receiver's
// plain Standard Webhooks requests have no CloudEvent.
func TestCloudEventsOff(t *testing.T) {
	ep := newCapture(t)
	sendOne(t, ep.srv.URL, webhook.NewSecret(), webhook.Message{Type: "t", Payload: []byte(`{}`)})
	req, _ := ep.request(0)
	for k := range req.Header {
		if strings.HasPrefix(strings.ToLower(k), "ce-") {
			t.Errorf("header %s", k)
		}
	}
	var got webhook.Event
	f := newReceiverFixture(t, func(_ context.Context, e webhook.Event) error { got = e; return nil })
	if code, _ := f.post(t, "msg_1", []byte(`{}`), nil); code != http.StatusNoContent || got.CloudEvent != nil {
		t.Fatalf("%d, CloudEvent %+v", code, got.CloudEvent)
	}
}

// BenchmarkReceiverCloudEvents measures a signed request through
// Receiver.Middleware (no dedup): a plain Standard Webhooks request, and
// the same payload as a binary and a structured CloudEvent.
func BenchmarkReceiverCloudEvents(b *testing.B) {
	secret := webhook.NewSecret()
	v, _ := webhook.NewVerifier([]string{secret})
	signer, _ := webhook.NewSigner(secret)
	recv := mustReceiver(b, v, webhook.WithoutDedup())
	h := recv.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNoContent) }))
	payload := bytes.Repeat([]byte(`{"k":"0123456789abcdef"},`), 40)
	payload = append(append([]byte(`{"items":[`), payload[:len(payload)-1]...), `]}`...)
	structured := append(append([]byte(`{"specversion":"1.0","id":"msg_1","source":"/s","type":"t","time":"2026-12-01T00:00:00Z","datacontenttype":"application/json","data":`), payload...), '}')
	cases := []struct {
		name   string
		body   []byte
		header map[string]string
	}{
		{"plain", payload, map[string]string{"Content-Type": "application/json"}},
		{"binary", payload, map[string]string{"Content-Type": "application/json", "Ce-Specversion": "1.0", "Ce-Id": "msg_1",
			"Ce-Source": "/s", "Ce-Type": "t", "Ce-Time": "2026-12-01T00:00:00Z"}},
		{"structured", structured, map[string]string{"Content-Type": webhook.ContentTypeCloudEventsJSON}},
	}
	for _, tc := range cases {
		b.Run(tc.name, func(b *testing.B) {
			hdr := http.Header{}
			for k, v := range tc.header {
				hdr.Set(k, v)
			}
			if err := signer.SignHeader(hdr, "msg_1", time.Now(), tc.body); err != nil {
				b.Fatal(err)
			}
			b.SetBytes(int64(len(tc.body)))
			b.ReportAllocs()
			for b.Loop() {
				req := httptest.NewRequest(http.MethodPost, "/", bytes.NewReader(tc.body))
				req.Header = hdr
				w := httptest.NewRecorder()
				h.ServeHTTP(w, req)
				if w.Code != http.StatusNoContent {
					b.Fatalf("%d %s", w.Code, w.Body)
				}
			}
		})
	}
}
