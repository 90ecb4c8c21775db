package webhook_test

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-integration/patterns/webhook"
)

var loopback = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")}

type sentRequest struct {
	header http.Header
	body   []byte
}

// endpointServer records the requests it gets and answers with respond.
type endpointServer struct {
	*httptest.Server
	mu   sync.Mutex
	reqs []sentRequest
}

func newEndpointServer(t *testing.T, respond func(n int, w http.ResponseWriter, r *http.Request)) *endpointServer {
	t.Helper()
	es := &endpointServer{}
	es.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		es.mu.Lock()
		es.reqs = append(es.reqs, sentRequest{r.Header.Clone(), body})
		n := len(es.reqs)
		es.mu.Unlock()
		respond(n, w, r)
	}))
	t.Cleanup(es.Close)
	return es
}

func (es *endpointServer) requests() []sentRequest {
	es.mu.Lock()
	defer es.mu.Unlock()
	return append([]sentRequest(nil), es.reqs...)
}

type senderFixture struct {
	store    *webhook.MemoryStore
	sender   *webhook.Sender
	attempts chan webhook.Attempt
	secret   string
}

func newSenderFixture(t *testing.T, opts ...webhook.SenderOption) *senderFixture {
	t.Helper()
	f := &senderFixture{store: webhook.NewMemoryStore(), attempts: make(chan webhook.Attempt, 100), secret: webhook.NewSecret()}
	base := []webhook.SenderOption{
		webhook.WithAllowedNetworks(loopback...),
		webhook.WithSchedule(0, 5*time.Millisecond, 5*time.Millisecond),
		webhook.WithJitter(0),
		webhook.WithPollInterval(5 * time.Millisecond),
		webhook.WithAttemptTimeout(2 * time.Second),
		webhook.WithTracer(onAttempt(func(a webhook.Attempt) { f.attempts <- a })),
		webhook.WithTracer(onStoreError(func(err error) { t.Logf("sender: %v", err) })),
	}
	s, err := webhook.NewSender(f.store, append(base, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	f.sender = s
	t.Cleanup(func() { _ = s.Close() })
	return f
}

func (f *senderFixture) endpoint(t *testing.T, id, u string, types ...string) {
	t.Helper()
	if err := f.store.SaveEndpoint(context.Background(), webhook.Endpoint{ID: id, URL: u, Secrets: []string{f.secret}, EventTypes: types}); err != nil {
		t.Fatal(err)
	}
}

// run starts Run and stops it (waiting for it) when the test ends.
func (f *senderFixture) run(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- f.sender.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
}

// next waits for the next recorded attempt.
func (f *senderFixture) next(t *testing.T) webhook.Attempt {
	t.Helper()
	select {
	case a := <-f.attempts:
		return a
	case <-time.After(10 * time.Second):
		t.Fatal("no attempt within 10s")
		return webhook.Attempt{}
	}
}

// nextPair returns the next two attempts in the order they were made: a
// retry may be claimed by another worker and reported before the report of
// the attempt before it.
func (f *senderFixture) nextPair(t *testing.T) (webhook.Attempt, webhook.Attempt) {
	t.Helper()
	a1, a2 := f.next(t), f.next(t)
	if a1.Number > a2.Number {
		a1, a2 = a2, a1
	}
	return a1, a2
}

func (f *senderFixture) send(t *testing.T, typ, payload string) webhook.Message {
	t.Helper()
	m, _, err := f.sender.Send(context.Background(), webhook.Message{Type: typ, Payload: []byte(payload)})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestSenderToReceiver(t *testing.T) {
	f := newSenderFixture(t)
	v, _ := webhook.NewVerifier([]string{f.secret})
	var got sync.Map
	recv := mustReceiver(t, v).Handler(func(_ context.Context, e webhook.Event) error {
		got.Store(e.ID, string(e.Body))
		return nil
	})
	srv := httptest.NewServer(recv)
	defer srv.Close()
	other := newEndpointServer(t, func(int, http.ResponseWriter, *http.Request) {})
	f.endpoint(t, "orders", srv.URL, "order.created")
	f.endpoint(t, "users", other.URL, "user.created")
	f.run(t)

	m, n, err := f.sender.Send(context.Background(), webhook.Message{Type: "order.created", Payload: []byte(`{"order":1}`)})
	if err != nil || n != 1 || !strings.HasPrefix(m.ID, "msg_") {
		t.Fatalf("Send = %+v, %d, %v", m, n, err)
	}
	a := f.next(t)
	if a.State != webhook.DeliverySucceeded || a.StatusCode != http.StatusNoContent || a.Number != 1 {
		t.Fatalf("attempt: %+v", a)
	}
	if body, ok := got.Load(m.ID); !ok || body != `{"order":1}` {
		t.Fatalf("receiver got %v", body)
	}
	if len(other.requests()) != 0 {
		t.Fatal("an endpoint not subscribed to the type got the message")
	}
	ds, _ := f.store.Deliveries(context.Background(), m.ID)
	if len(ds) != 1 || ds[0].State != webhook.DeliverySucceeded || ds[0].Attempts != 1 {
		t.Fatalf("deliveries: %+v", ds)
	}
}

func TestSender500Then200(t *testing.T) {
	// Each call of the clock is a second later, so every attempt has its own timestamp.
	var tick atomic.Int64
	base := time.Now()
	clock := func() time.Time { return base.Add(time.Duration(tick.Add(1)) * time.Second) }
	f := newSenderFixture(t, webhook.WithClock(clock))
	es := newEndpointServer(t, func(n int, w http.ResponseWriter, _ *http.Request) {
		if n == 1 {
			http.Error(w, "database is down", http.StatusInternalServerError)
		}
	})
	f.endpoint(t, "e", es.URL)
	f.run(t)
	m := f.send(t, "t", `{"x":1}`)
	a1, a2 := f.nextPair(t)
	if a1.StatusCode != 500 || a1.State != webhook.DeliveryPending || !strings.Contains(string(a1.ResponseBody), "database is down") || a1.Error == "" {
		t.Fatalf("first attempt: %+v", a1)
	}
	if a2.StatusCode != 200 || a2.State != webhook.DeliverySucceeded || a2.Number != 2 {
		t.Fatalf("second attempt: %+v", a2)
	}
	reqs := es.requests()
	if len(reqs) != 2 {
		t.Fatalf("%d requests", len(reqs))
	}
	v, _ := webhook.NewVerifier([]string{f.secret}, webhook.WithClock(clock))
	for i, r := range reqs {
		if r.header.Get("webhook-id") != m.ID {
			t.Errorf("attempt %d webhook-id %q, want %q", i+1, r.header.Get("webhook-id"), m.ID)
		}
		if err := v.Verify(r.header, r.body); err != nil {
			t.Errorf("attempt %d does not verify: %v", i+1, err)
		}
		if ct := r.header.Get("Content-Type"); ct != "application/json" {
			t.Errorf("Content-Type %q", ct)
		}
	}
	if reqs[0].header.Get("webhook-timestamp") == reqs[1].header.Get("webhook-timestamp") ||
		reqs[0].header.Get("webhook-signature") == reqs[1].header.Get("webhook-signature") {
		t.Fatal("the retry reused the first attempt's timestamp and signature")
	}
	if a, _ := f.store.Attempts(context.Background(), a1.DeliveryID); len(a) != 2 {
		t.Fatalf("attempt log: %+v", a)
	}
}

func TestSenderRedirectIsNotFollowed(t *testing.T) {
	var followed atomic.Int32
	target := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { followed.Add(1) }))
	defer target.Close()
	f := newSenderFixture(t, webhook.WithSchedule(0, time.Millisecond))
	es := newEndpointServer(t, func(_ int, w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, target.URL, http.StatusTemporaryRedirect)
	})
	f.endpoint(t, "e", es.URL)
	f.run(t)
	f.send(t, "t", "{}")
	a1, a2 := f.nextPair(t)
	if a1.StatusCode != 307 || a1.State != webhook.DeliveryPending || !strings.Contains(a1.Error, "redirects are not followed") {
		t.Fatalf("first attempt: %+v", a1)
	}
	if a2.State != webhook.DeliveryFailed || !strings.Contains(a2.Error, "gave up after 2 attempts") {
		t.Fatalf("last attempt: %+v", a2)
	}
	if followed.Load() != 0 {
		t.Fatal("the redirect was followed")
	}
}

func TestSenderGoneDisablesEndpoint(t *testing.T) {
	disabled := make(chan string, 1)
	f := newSenderFixture(t, webhook.WithTracer(onDisable(func(e webhook.Endpoint, reason string) { disabled <- e.ID + ": " + reason })))
	es := newEndpointServer(t, func(_ int, w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusGone) })
	f.endpoint(t, "gone", es.URL)
	f.run(t)
	f.send(t, "t", "{}")
	if a := f.next(t); a.StatusCode != 410 || a.State != webhook.DeliveryFailed {
		t.Fatalf("attempt: %+v", a)
	}
	if r := <-disabled; !strings.HasPrefix(r, "gone: 410") {
		t.Fatalf("OnDisable: %s", r)
	}
	e, _ := f.store.Endpoint(context.Background(), "gone")
	if !e.Disabled {
		t.Fatal("endpoint not disabled")
	}
	if _, n, _ := f.sender.Send(context.Background(), webhook.Message{Type: "t"}); n != 0 {
		t.Fatalf("a disabled endpoint got %d new deliveries", n)
	}
	if len(es.requests()) != 1 {
		t.Fatalf("%d requests to a gone endpoint", len(es.requests()))
	}
}

func TestSenderHangingEndpointTimesOut(t *testing.T) {
	release := make(chan struct{})
	es := newEndpointServer(t, func(_ int, _ http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-release:
		}
	})
	defer close(release)
	f := newSenderFixture(t, webhook.WithAttemptTimeout(100*time.Millisecond), webhook.WithSchedule(0, time.Millisecond))
	f.endpoint(t, "slow", es.URL)
	f.run(t)
	f.send(t, "t", "{}")
	for i, a := range []webhook.Attempt{f.next(t), f.next(t)} {
		if a.StatusCode != 0 || !strings.Contains(a.Error, "deadline exceeded") || a.Duration < 100*time.Millisecond || a.Duration > 5*time.Second {
			t.Fatalf("attempt %d: %+v", i+1, a)
		}
	}
}

func TestSenderConnectionReset(t *testing.T) {
	es := newEndpointServer(t, func(n int, w http.ResponseWriter, _ *http.Request) {
		if n == 1 {
			conn, _, err := http.NewResponseController(w).Hijack()
			if err != nil {
				t.Error(err)
				return
			}
			_ = conn.(*net.TCPConn).SetLinger(0) // close with RST
			conn.Close()
		}
	})
	f := newSenderFixture(t)
	f.endpoint(t, "e", es.URL)
	f.run(t)
	f.send(t, "t", "{}")
	a1, a2 := f.nextPair(t)
	if a1.StatusCode != 0 || a1.Error == "" || a1.State != webhook.DeliveryPending {
		t.Fatalf("reset attempt: %+v", a1)
	}
	t.Logf("reset recorded as: %s", a1.Error)
	if a2.State != webhook.DeliverySucceeded {
		t.Fatalf("retry: %+v", a2)
	}
}

func TestSenderRetryAfter(t *testing.T) {
	for _, c := range []struct {
		name, header string
		status       int
		cap          time.Duration
		want         time.Duration
	}{
		{"seconds on 503", "7", 503, time.Hour, 7 * time.Second},
		{"seconds on 429", "3", 429, time.Hour, 3 * time.Second},
		{"capped", "86400", 502, 2 * time.Second, 2 * time.Second},
		{"http date on 504", "", 504, time.Hour, 90 * time.Second},
		{"ignored on 500", "60", 500, time.Hour, 5 * time.Millisecond},
		{"garbage", "soon", 503, time.Hour, 5 * time.Millisecond},
	} {
		t.Run(c.name, func(t *testing.T) {
			now := time.Now().Truncate(time.Second)
			header := c.header
			if header == "" {
				header = now.Add(90 * time.Second).UTC().Format(http.TimeFormat)
			}
			es := newEndpointServer(t, func(_ int, w http.ResponseWriter, _ *http.Request) {
				w.Header().Set("Retry-After", header)
				w.WriteHeader(c.status)
			})
			f := newSenderFixture(t, webhook.WithMaxRetryAfter(c.cap), webhook.WithClock(func() time.Time { return now }))
			f.endpoint(t, "e", es.URL)
			f.send(t, "t", "{}")
			if n, err := f.sender.RunOnce(context.Background()); n != 1 || err != nil {
				t.Fatalf("RunOnce = %d, %v", n, err)
			}
			a := f.next(t)
			if got := a.NextAttempt.Sub(a.Start.Add(a.Duration)); got != c.want {
				t.Fatalf("next attempt after %v, want %v (%+v)", got, c.want, a)
			}
		})
	}
}

func TestSenderDisablesEndpointFailingTooLong(t *testing.T) {
	var mu sync.Mutex
	now := time.Now()
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	var reason string
	f := newSenderFixture(t, webhook.WithClock(clock), webhook.WithDisableAfter(time.Hour),
		webhook.WithSchedule(0, time.Minute, time.Minute, time.Minute, time.Minute),
		webhook.WithTracer(onDisable(func(_ webhook.Endpoint, r string) { reason = r })))
	es := newEndpointServer(t, func(_ int, w http.ResponseWriter, _ *http.Request) { w.WriteHeader(500) })
	f.endpoint(t, "e", es.URL)
	f.send(t, "t", "{}")
	ctx := context.Background()
	for i := range 3 {
		if n, _ := f.sender.RunOnce(ctx); n != 1 {
			t.Fatalf("round %d: %d attempts", i, n)
		}
		if e, _ := f.store.Endpoint(ctx, "e"); e.Disabled {
			t.Fatalf("disabled after %d failures within the period", i+1)
		}
		advance(25 * time.Minute)
	}
	// 75 minutes after the first failure the next one disables the endpoint.
	if n, _ := f.sender.RunOnce(ctx); n != 1 {
		t.Fatal("no fourth attempt")
	}
	e, _ := f.store.Endpoint(ctx, "e")
	if !e.Disabled || !strings.Contains(reason, "failing since") || e.DisabledReason != reason {
		t.Fatalf("endpoint %+v, reason %q", e, reason)
	}
	advance(time.Hour)
	if n, _ := f.sender.RunOnce(ctx); n != 0 {
		t.Fatal("a disabled endpoint was attempted")
	}
	// Enabling it and resending the failed deliveries delivers again.
	if err := f.store.EnableEndpoint(ctx, "e"); err != nil {
		t.Fatal(err)
	}
	if n, err := f.sender.ResendFailed(ctx, "e"); n != 1 || err != nil {
		t.Fatalf("ResendFailed = %d, %v", n, err)
	}
	if n, _ := f.sender.RunOnce(ctx); n != 1 {
		t.Fatal("resent delivery not attempted")
	}
}

func TestSenderResponseBodyCap(t *testing.T) {
	es := newEndpointServer(t, func(_ int, w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(400)
		_, _ = w.Write([]byte(strings.Repeat("x", 100000)))
	})
	f := newSenderFixture(t, webhook.WithMaxResponseBytes(100), webhook.WithSchedule(0))
	f.endpoint(t, "e", es.URL)
	f.send(t, "t", "{}")
	if _, err := f.sender.RunOnce(context.Background()); err != nil {
		t.Fatal(err)
	}
	if a := f.next(t); len(a.ResponseBody) != 100 || a.StatusCode != 400 || a.State != webhook.DeliveryFailed {
		t.Fatalf("attempt: status %d, %d body bytes, %s", a.StatusCode, len(a.ResponseBody), a.State)
	}
}

func TestSenderRunDrainsOnCancel(t *testing.T) {
	entered := make(chan struct{})
	release := make(chan struct{})
	es := newEndpointServer(t, func(int, http.ResponseWriter, *http.Request) {
		close(entered)
		<-release
	})
	f := newSenderFixture(t)
	f.endpoint(t, "e", es.URL)
	f.send(t, "t", "{}")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- f.sender.Run(ctx) }()
	<-entered
	cancel()
	select {
	case <-done:
		t.Fatal("Run returned with an attempt in flight")
	case <-time.After(50 * time.Millisecond):
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if a := f.next(t); a.State != webhook.DeliverySucceeded {
		t.Fatalf("attempt in flight at shutdown: %+v", a)
	}
}

// crashingStore loses every Record, as a process killed between an attempt
// and its record would.
type crashingStore struct{ webhook.Store }

func (crashingStore) Record(context.Context, webhook.Delivery, webhook.Attempt) (time.Time, error) {
	return time.Time{}, errors.New("process killed")
}

func TestSenderKilledBetweenAttemptAndRecord(t *testing.T) {
	secret := webhook.NewSecret()
	v, _ := webhook.NewVerifier([]string{secret})
	var handled atomic.Int32
	srv := httptest.NewServer(mustReceiver(t, v).Handler(func(context.Context, webhook.Event) error {
		handled.Add(1)
		return nil
	}))
	defer srv.Close()
	var hits atomic.Int32
	counted := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		srv.Config.Handler.ServeHTTP(w, r)
	}))
	defer counted.Close()

	store := webhook.NewMemoryStore()
	ctx := context.Background()
	if err := store.SaveEndpoint(ctx, webhook.Endpoint{ID: "e", URL: counted.URL, Secrets: []string{secret}}); err != nil {
		t.Fatal(err)
	}
	opts := []webhook.SenderOption{webhook.WithAllowedNetworks(loopback...), webhook.WithAttemptTimeout(time.Second), webhook.WithLease(2 * time.Second)}
	doomed, _ := webhook.NewSender(crashingStore{store}, opts...)
	m, _, err := doomed.Send(ctx, webhook.Message{Type: "t", Payload: []byte("{}")})
	if err != nil {
		t.Fatal(err)
	}
	if n, _ := doomed.RunOnce(ctx); n != 1 || hits.Load() != 1 {
		t.Fatalf("doomed worker: %d attempts, %d requests", n, hits.Load())
	}
	// The survivor's clock is past the dead worker's lease.
	later := func() time.Time { return time.Now().Add(3 * time.Second) }
	survivor, _ := webhook.NewSender(store, append(opts, webhook.WithClock(later))...)
	if n, _ := survivor.RunOnce(ctx); n != 1 {
		t.Fatalf("survivor attempted %d deliveries, want the orphaned one", n)
	}
	ds, _ := store.Deliveries(ctx, m.ID)
	if len(ds) != 1 || ds[0].State != webhook.DeliverySucceeded {
		t.Fatalf("delivery lost: %+v", ds)
	}
	if hits.Load() != 2 || handled.Load() != 1 {
		t.Fatalf("%d requests, %d handled: want 2 requests (at-least-once) and 1 handled (receiver dedup)", hits.Load(), handled.Load())
	}
}

func TestSSRFGuardRefusesLoopbackByDefault(t *testing.T) {
	es := newEndpointServer(t, func(int, http.ResponseWriter, *http.Request) {})
	f := newSenderFixture(t)
	// A sender without the allow-list.
	s, err := webhook.NewSender(f.store, webhook.WithSchedule(0),
		webhook.WithTracer(onAttempt(func(a webhook.Attempt) { f.attempts <- a })))
	if err != nil {
		t.Fatal(err)
	}
	f.endpoint(t, "local", es.URL)
	if _, _, err := s.Send(context.Background(), webhook.Message{Type: "t"}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.RunOnce(context.Background()); err != nil {
		t.Fatal(err)
	}
	a := f.next(t)
	if !strings.Contains(a.Error, webhook.ErrBlockedAddress.Error()) || a.State != webhook.DeliveryFailed {
		t.Fatalf("attempt to loopback: %+v", a)
	}
	if len(es.requests()) != 0 {
		t.Fatal("the guarded sender reached a loopback server")
	}
}

func TestSSRFGuardChecksResolvedAddresses(t *testing.T) {
	es := newEndpointServer(t, func(int, http.ResponseWriter, *http.Request) {})
	u, _ := url.Parse(es.URL)
	port := u.Port()
	dns := map[string][]netip.Addr{
		"evil.example":     {netip.MustParseAddr("127.0.0.1")},
		"metadata.example": {netip.MustParseAddr("169.254.169.254")},
		"mapped.example":   {netip.MustParseAddr("::ffff:127.0.0.1")},
		"private.example":  {netip.MustParseAddr("10.1.2.3")},
	}
	lookup := func(_ context.Context, host string) ([]netip.Addr, error) {
		if a, ok := dns[host]; ok {
			return a, nil
		}
		return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
	}
	for _, allow := range []bool{false, true} {
		store := webhook.NewMemoryStore()
		attempts := make(chan webhook.Attempt, 10)
		opts := []webhook.SenderOption{webhook.WithLookup(lookup), webhook.WithSchedule(0), webhook.WithAttemptTimeout(time.Second),
			webhook.WithTracer(onAttempt(func(a webhook.Attempt) { attempts <- a }))}
		if allow {
			opts = append(opts, webhook.WithAllowedNetworks(loopback...))
		}
		s, err := webhook.NewSender(store, opts...)
		if err != nil {
			t.Fatal(err)
		}
		for host := range dns {
			if err := store.SaveEndpoint(context.Background(), webhook.Endpoint{ID: host, URL: "http://" + host + ":" + port + "/hook", Secrets: []string{webhook.NewSecret()}}); err != nil {
				t.Fatal(err)
			}
		}
		if _, _, err := s.Send(context.Background(), webhook.Message{Type: "t"}); err != nil {
			t.Fatal(err)
		}
		if n, _ := s.RunOnce(context.Background()); n != len(dns) {
			t.Fatalf("%d attempts", n)
		}
		for range dns {
			a := <-attempts
			blocked := strings.Contains(a.Error, webhook.ErrBlockedAddress.Error())
			switch {
			case !allow && !blocked:
				t.Errorf("guard on: attempt not blocked: %+v", a)
			case allow && a.StatusCode == 200:
				// loopback names reach the test server through the allow-list
			case allow && !blocked:
				t.Errorf("allow-list on: unexpected result %+v", a)
			}
		}
		wantReqs := 0
		if allow {
			wantReqs = 2 // evil.example and mapped.example
		}
		if got := len(es.requests()); got != wantReqs {
			t.Fatalf("allow=%v: the server got %d requests, want %d", allow, got, wantReqs)
		}
		_ = s.Close()
	}
}

func TestSenderResend(t *testing.T) {
	es := newEndpointServer(t, func(int, http.ResponseWriter, *http.Request) {})
	f := newSenderFixture(t)
	f.endpoint(t, "a", es.URL)
	f.endpoint(t, "b", es.URL)
	m := f.send(t, "t", `{"n":1}`)
	ctx := context.Background()
	if n, _ := f.sender.RunOnce(ctx); n != 2 {
		t.Fatalf("%d attempts", n)
	}
	if n, err := f.sender.Resend(ctx, m.ID, "b"); n != 1 || err != nil {
		t.Fatalf("Resend(b) = %d, %v", n, err)
	}
	if n, _ := f.sender.RunOnce(ctx); n != 1 {
		t.Fatalf("%d attempts after resend to one endpoint", n)
	}
	if n, err := f.sender.Resend(ctx, m.ID, ""); n != 2 || err != nil {
		t.Fatalf("Resend(all) = %d, %v", n, err)
	}
	if n, _ := f.sender.RunOnce(ctx); n != 2 {
		t.Fatalf("%d attempts after resend to all", n)
	}
	reqs := es.requests()
	if len(reqs) != 5 {
		t.Fatalf("%d requests, want 5", len(reqs))
	}
	for _, r := range reqs {
		if r.header.Get("webhook-id") != m.ID || string(r.body) != `{"n":1}` {
			t.Fatalf("resent request: %v %s", r.header, r.body)
		}
	}
	if _, err := f.sender.Resend(ctx, "msg_unknown", ""); !errors.Is(err, webhook.ErrNotFound) {
		t.Fatalf("Resend of an unknown message: %v", err)
	}
}

type failingDedup struct{}

func (failingDedup) Begin(context.Context, string, time.Time, time.Time) (webhook.DedupClaim, error) {
	return webhook.DedupClaim{}, errStoreDown
}
func (failingDedup) Done(context.Context, string, string, time.Time) error { return nil }
func (failingDedup) Forget(context.Context, string, string) error          { return nil }

func TestReceiverDedupStoreDown(t *testing.T) {
	f := newReceiverFixture(t, func(context.Context, webhook.Event) error { return nil }, webhook.WithDedup(failingDedup{}))
	if code, msg := f.post(t, "msg_d", []byte("{}"), nil); code != http.StatusServiceUnavailable || strings.Contains(msg, "store down") {
		t.Fatalf("dedup store down: %d %q, want 503 without the internal cause", code, msg)
	}
	if f.calls.Load() != 0 {
		t.Fatal("handled without replay protection")
	}
}

func TestSenderEd25519Endpoint(t *testing.T) {
	priv, pub := webhook.NewKeyPair()
	v, _ := webhook.NewVerifier([]string{pub})
	var handled atomic.Int32
	srv := httptest.NewServer(mustReceiver(t, v).Handler(func(context.Context, webhook.Event) error {
		handled.Add(1)
		return nil
	}))
	defer srv.Close()
	f := newSenderFixture(t)
	if err := f.store.SaveEndpoint(context.Background(), webhook.Endpoint{ID: "asym", URL: srv.URL, Secrets: []string{priv}}); err != nil {
		t.Fatal(err)
	}
	f.send(t, "t", `{"signed":"v1a"}`)
	if _, err := f.sender.RunOnce(context.Background()); err != nil {
		t.Fatal(err)
	}
	if a := f.next(t); a.State != webhook.DeliverySucceeded || handled.Load() != 1 {
		t.Fatalf("v1a delivery: %+v, handled %d", a, handled.Load())
	}
}

func TestSenderBadEndpointURL(t *testing.T) {
	f := newSenderFixture(t, webhook.WithSchedule(0))
	f.endpoint(t, "ftp", "ftp://files.example/hook")
	f.endpoint(t, "junk", "http://[::1")
	f.send(t, "t", "{}")
	if n, err := f.sender.RunOnce(context.Background()); n != 2 || err != nil {
		t.Fatalf("RunOnce = %d, %v", n, err)
	}
	for range 2 {
		if a := f.next(t); a.State != webhook.DeliveryFailed || !strings.Contains(a.Error, "endpoint URL") {
			t.Fatalf("attempt: %+v", a)
		}
	}
}

func TestSenderRunWakesForARetryDueBeforeThePoll(t *testing.T) {
	// With an hour between polls, the retry 20 ms later still goes out at once:
	// Run sets a timer for it instead of waiting for the next poll.
	f := newSenderFixture(t, webhook.WithPollInterval(time.Hour), webhook.WithSchedule(0, 20*time.Millisecond))
	es := newEndpointServer(t, func(n int, w http.ResponseWriter, _ *http.Request) {
		if n == 1 {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	})
	f.endpoint(t, "e", es.URL)
	f.run(t)
	f.send(t, "t", `{}`)
	if a := f.next(t); a.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("first attempt: %+v", a)
	}
	if a := f.next(t); a.StatusCode != http.StatusOK || a.State != webhook.DeliverySucceeded {
		t.Fatalf("second attempt: %+v", a)
	}
}
