package webhook

import (
	"crypto/tls"
	"net/http"
	"reflect"
	"time"
)

// WithTLSConfig sets the TLS configuration of the Sender's connections: root
// CAs for endpoints with private certificates, a client certificate for
// mutual TLS, a minimum version. The Sender uses a clone of cfg. It is
// applied before a WithTransport function, which sees it in
// base.TLSClientConfig. Default nil (the system roots); nil keeps it.
func WithTLSConfig(cfg *tls.Config) SenderOption {
	return senderOpt(func(c *senderConfig) error { c.tlsConfig = cfg.Clone(); return nil })
}

// WithTransport lets f configure and wrap the Sender's HTTP transport without
// leaving the SSRF guard. The Sender builds base, an *http.Transport whose
// DialContext is the guard (it refuses non-public addresses after DNS, see
// WithAllowedNetworks) and whose Proxy is nil, and calls f(base) once, in
// NewSender. f may set TLSClientConfig, timeouts, connection limits and other
// fields of base, and return base or a RoundTripper that wraps it (an
// OpenTelemetry or metrics RoundTripper); the result carries every attempt.
// Redirects are still refused: they are the client's business, not the
// transport's. The last WithTransport wins.
//
// Setting base.DialContext, base.DialTLSContext, base.DialTLS or base.Proxy
// removes the guard, so NewSender checks the *http.Transport f returns (base,
// a clone of it, or any other) and fails with an error wrapping
// ErrInvalidOption when its DialContext is not the guard's or one of the
// others is set. NewSender cannot look inside a wrapper: a wrapper must send
// through base (or a base.Clone()), not through a transport of its own.
// Under WithoutSSRFGuard there is no guard to keep, and nothing is checked.
//
// WithTransport takes a function rather than a ready http.RoundTripper
// because the guard is the Sender's to build: a function of the guarded base
// keeps it by default, where a RoundTripper built by the caller would
// silently have none. A nil f is refused.
func WithTransport(f func(base *http.Transport) http.RoundTripper) SenderOption {
	return senderOpt(func(c *senderConfig) error {
		if f == nil {
			return optionErrorf("webhook: WithTransport(nil)")
		}
		c.transport = f
		return nil
	})
}

// newTransport builds the Sender's round tripper: the guarded base, handed to
// the WithTransport function if there is one. It also returns base, whose idle
// connections Close releases even when a wrapper does not pass that on.
func newTransport(c *senderConfig, g *guard) (http.RoundTripper, *http.Transport, error) {
	base := &http.Transport{
		Proxy:                 nil, // a proxy would connect on our behalf, past the guard
		DialContext:           g.DialContext,
		TLSClientConfig:       c.tlsConfig,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          100,
		MaxIdleConnsPerHost:   4,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ExpectContinueTimeout: time.Second,
	}
	if c.transport == nil {
		return base, base, nil
	}
	guarded := base.DialContext
	rt := c.transport(base)
	if rt == nil {
		return nil, nil, optionErrorf("webhook: WithTransport: the function returned a nil RoundTripper")
	}
	if !c.guard {
		return rt, base, nil
	}
	if err := checkGuarded(base, guarded); err != nil {
		return nil, nil, err
	}
	if t, ok := rt.(*http.Transport); ok && t != base {
		if err := checkGuarded(t, guarded); err != nil {
			return nil, nil, err
		}
	}
	return rt, base, nil
}

// checkGuarded reports an error wrapping ErrInvalidOption when t would
// connect other than through the guard's dialer. Functions cannot be
// compared, so DialContext is compared by code pointer: every method value
// of (*guard).DialContext shares one, which is enough, since all of them
// dial through a guard.
func checkGuarded(t *http.Transport, guarded any) error {
	var field string
	switch {
	case reflect.ValueOf(t.DialContext).Pointer() != reflect.ValueOf(guarded).Pointer():
		field = "DialContext"
	case t.DialTLSContext != nil:
		field = "DialTLSContext"
	case t.DialTLS != nil: //lint:ignore SA1019 checked because the transport still honours it
		field = "DialTLS"
	case t.Proxy != nil:
		field = "Proxy"
	default:
		return nil
	}
	return optionErrorf("webhook: WithTransport: the transport's %s was replaced, which removes the SSRF guard (use WithAllowedNetworks or WithoutSSRFGuard)", field)
}
