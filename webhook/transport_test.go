package webhook_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-integration/patterns/webhook"
)

// newTLSServer starts an httptest TLS server on 127.0.0.1 that answers
// respond, and returns it with a pool holding its certificate.
func newTLSServer(t *testing.T, respond http.HandlerFunc) (*httptest.Server, *x509.CertPool) {
	t.Helper()
	srv := httptest.NewTLSServer(respond)
	t.Cleanup(srv.Close)
	pool := x509.NewCertPool()
	pool.AddCert(srv.Certificate())
	return srv, pool
}

// roundTripFunc adapts a function to http.RoundTripper.
type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func TestWithTransportCustomRootCA(t *testing.T) {
	srv, pool := newTLSServer(t, func(http.ResponseWriter, *http.Request) {})

	// Default: the test server's certificate is not trusted.
	f := newSenderFixture(t)
	f.endpoint(t, "tls", srv.URL)
	f.send(t, "t", `{}`)
	if _, err := f.sender.RunOnce(context.Background()); err != nil {
		t.Fatal(err)
	}
	if a := f.next(t); a.StatusCode != 0 || !strings.Contains(a.Error, "certificate") {
		t.Fatalf("default transport: %+v, want a certificate error", a)
	}

	for name, opt := range map[string]webhook.SenderOption{
		"WithTransport": webhook.WithTransport(func(base *http.Transport) http.RoundTripper {
			base.TLSClientConfig = &tls.Config{RootCAs: pool}
			return base
		}),
		"WithTLSConfig": webhook.WithTLSConfig(&tls.Config{RootCAs: pool}),
	} {
		f := newSenderFixture(t, opt)
		f.endpoint(t, "tls", srv.URL)
		f.send(t, "t", `{}`)
		if _, err := f.sender.RunOnce(context.Background()); err != nil {
			t.Fatal(err)
		}
		if a := f.next(t); a.StatusCode != 200 || a.State != webhook.DeliverySucceeded {
			t.Fatalf("%s: %+v, want 200", name, a)
		}
	}
}

func TestWithTransportWrapperSeesEveryAttempt(t *testing.T) {
	srv, pool := newTLSServer(t, func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("X-Wrapped") != "1" {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		w.WriteHeader(http.StatusInternalServerError)
	})
	var mu sync.Mutex
	var seen []string
	f := newSenderFixture(t, webhook.WithTLSConfig(&tls.Config{RootCAs: pool}),
		webhook.WithTransport(func(base *http.Transport) http.RoundTripper {
			if base.TLSClientConfig == nil || base.TLSClientConfig.RootCAs == nil {
				t.Error("WithTLSConfig not applied before the transport function")
			}
			return roundTripFunc(func(r *http.Request) (*http.Response, error) {
				mu.Lock()
				seen = append(seen, r.Header.Get("webhook-id"))
				mu.Unlock()
				r = r.Clone(r.Context())
				r.Header.Set("X-Wrapped", "1")
				return base.RoundTrip(r)
			})
		}))
	f.endpoint(t, "tls", srv.URL)
	m := f.send(t, "t", `{}`)
	f.run(t)
	for i := range 3 { // the fixture's schedule: three attempts
		if a := f.next(t); a.StatusCode != 500 {
			t.Fatalf("attempt %d: %+v, want 500 through the wrapper", i+1, a)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(seen) != 3 {
		t.Fatalf("the wrapper saw %d attempts, want 3", len(seen))
	}
	for _, id := range seen {
		if id != m.ID {
			t.Fatalf("the wrapper saw webhook-id %q, want %q", id, m.ID)
		}
	}
}

func TestWithTransportKeepsTheGuard(t *testing.T) {
	// No traffic leaves: the guard refuses in the dialer's Control hook,
	// after socket(2) and before connect(2).
	dns := map[string]netip.Addr{
		"metadata.example": netip.MustParseAddr("169.254.169.254"),
		"private.example":  netip.MustParseAddr("10.0.0.1"),
	}
	lookup := func(_ context.Context, host string) ([]netip.Addr, error) {
		if a, ok := dns[host]; ok {
			return []netip.Addr{a}, nil
		}
		return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
	}
	urls := []string{"http://metadata.example/latest/meta-data/", "https://private.example/hook", "http://10.0.0.1/hook", "http://169.254.169.254/"}
	var mu sync.Mutex
	errs := map[string]error{}
	f := newSenderFixture(t, webhook.WithLookup(lookup), webhook.WithSchedule(0),
		webhook.WithTLSConfig(&tls.Config{MinVersion: tls.VersionTLS12}),
		webhook.WithTransport(func(base *http.Transport) http.RoundTripper {
			base.MaxIdleConnsPerHost = 1
			return roundTripFunc(func(r *http.Request) (*http.Response, error) {
				resp, err := base.RoundTrip(r)
				mu.Lock()
				errs[r.URL.String()] = err
				mu.Unlock()
				return resp, err
			})
		}))
	for i, u := range urls {
		f.endpoint(t, string(rune('a'+i)), u)
	}
	f.send(t, "t", `{}`)
	if n, err := f.sender.RunOnce(context.Background()); err != nil || n != len(urls) {
		t.Fatalf("RunOnce: %d, %v", n, err)
	}
	for range urls {
		if a := f.next(t); a.State != webhook.DeliveryFailed || !strings.Contains(a.Error, webhook.ErrBlockedAddress.Error()) {
			t.Errorf("attempt: %+v, want refused by the guard", a)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	for _, u := range urls {
		if err, ok := errs[u]; !ok || !errors.Is(err, webhook.ErrBlockedAddress) {
			t.Errorf("%s: wrapper saw %v, want an error wrapping ErrBlockedAddress", u, err)
		}
	}
}

func TestWithTransportRefusesAnUnguardedTransport(t *testing.T) {
	refused := map[string]func(*http.Transport) http.RoundTripper{
		"DialContext": func(b *http.Transport) http.RoundTripper {
			b.DialContext = (&net.Dialer{}).DialContext
			return b
		},
		"DialContext nil": func(b *http.Transport) http.RoundTripper {
			b.DialContext = nil
			return b
		},
		"DialContext wrapped": func(b *http.Transport) http.RoundTripper {
			dial := b.DialContext
			b.DialContext = func(ctx context.Context, n, a string) (net.Conn, error) { return dial(ctx, n, a) }
			return b
		},
		"DialTLSContext": func(b *http.Transport) http.RoundTripper {
			b.DialTLSContext = (&tls.Dialer{}).DialContext
			return b
		},
		"Proxy": func(b *http.Transport) http.RoundTripper {
			b.Proxy = http.ProxyFromEnvironment
			return b
		},
		"another transport": func(*http.Transport) http.RoundTripper { return http.DefaultTransport },
		"a changed clone": func(b *http.Transport) http.RoundTripper {
			c := b.Clone()
			c.DialContext = (&net.Dialer{}).DialContext
			return c
		},
		"nil": func(*http.Transport) http.RoundTripper { return nil },
	}
	for name, fn := range refused {
		s, err := webhook.NewSender(webhook.NewMemoryStore(), webhook.WithTransport(fn))
		if !errors.Is(err, webhook.ErrInvalidOption) {
			t.Errorf("%s: NewSender = %v, %v; want an error wrapping ErrInvalidOption", name, s, err)
		}
	}
	accepted := map[string]func(*http.Transport) http.RoundTripper{
		"base":  func(b *http.Transport) http.RoundTripper { return b },
		"clone": func(b *http.Transport) http.RoundTripper { return b.Clone() },
		"wrapper": func(b *http.Transport) http.RoundTripper {
			b.TLSHandshakeTimeout = 5 * time.Second
			return roundTripFunc(b.RoundTrip)
		},
	}
	for name, fn := range accepted {
		s, err := webhook.NewSender(webhook.NewMemoryStore(), webhook.WithTransport(fn))
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		_ = s.Close()
	}
	// Without the guard there is nothing to keep.
	s, err := webhook.NewSender(webhook.NewMemoryStore(), webhook.WithoutSSRFGuard(), webhook.WithTransport(refused["Proxy"]))
	if err != nil {
		t.Fatalf("WithoutSSRFGuard: %v", err)
	}
	_ = s.Close()
}

func TestNewSenderOptionErrorsAreErrInvalidOption(t *testing.T) {
	_, err := webhook.NewSender(webhook.NewMemoryStore(), webhook.WithJitter(1))
	if !errors.Is(err, webhook.ErrInvalidOption) || !strings.HasPrefix(err.Error(), "webhook: WithJitter(1)") {
		t.Fatalf("WithJitter(1): %v", err)
	}
}
