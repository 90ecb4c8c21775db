package webhook_test

import (
	"context"
	"errors"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/go-integration/patterns/webhook"
)

// misspeltTracer has TraceAttemptEnd but TraceAtemptStart: it implements no
// tracer interface.
type misspeltTracer struct{}

func (misspeltTracer) TraceAtemptStart(ctx context.Context, _ webhook.TraceAttemptStartData) context.Context {
	return ctx
}
func (misspeltTracer) TraceAttemptEnd(context.Context, webhook.TraceAttemptEndData) {}

// Every option value is checked by the constructor; the error wraps
// ErrInvalidOption and names the option.
func TestBadOptions(t *testing.T) {
	store := webhook.NewMemoryStore()
	sender := map[string][]webhook.SenderOption{
		"WithSchedule":         {webhook.WithSchedule()},
		"negative delay":       {webhook.WithSchedule(0, -time.Second)},
		"WithJitter":           {webhook.WithJitter(1)},
		"WithAttemptTimeout":   {webhook.WithAttemptTimeout(0)},
		"WithLease":            {webhook.WithAttemptTimeout(time.Minute), webhook.WithLease(time.Minute)},
		"WithMaxResponseBytes": {webhook.WithMaxResponseBytes(-1)},
		"WithMaxRetryAfter":    {webhook.WithMaxRetryAfter(-time.Second)},
		"WithDisableAfter":     {webhook.WithDisableAfter(-time.Second)},
		"WithConcurrency":      {webhook.WithConcurrency(0)},
		"WithPollInterval":     {webhook.WithPollInterval(0)},
		"WithDrainTimeout":     {webhook.WithDrainTimeout(0)},
		"WithAllowedNetworks":  {webhook.WithAllowedNetworks(netip.Prefix{})},
		"WithLookup":           {webhook.WithLookup(nil)},
		"WithContentType":      {webhook.WithContentType("")},
		"WithTransport":        {webhook.WithTransport(nil)},
		"WithLogger":           {webhook.WithLogger(nil)},
		"WithClock":            {webhook.WithClock(nil)},
		"WithTracer":           {webhook.WithTracer(misspeltTracer{})},
		"option 0 is nil":      {nil},
	}
	for name, opts := range sender {
		_, err := webhook.NewSender(store, opts...)
		if !errors.Is(err, webhook.ErrInvalidOption) || !strings.Contains(err.Error(), name) {
			t.Errorf("NewSender with bad %s: %v; want ErrInvalidOption naming it", name, err)
		}
	}
	// A Receiver's tracer is not a Sender's.
	if _, err := webhook.NewSender(store, webhook.WithTracer(onReject(nil))); !errors.Is(err, webhook.ErrInvalidOption) {
		t.Errorf("NewSender with a RejectTracer: %v; want ErrInvalidOption", err)
	}
	if _, err := webhook.NewSender(nil); err == nil {
		t.Error("nil store accepted")
	}

	v, err := webhook.NewVerifier([]string{webhook.NewSecret()})
	if err != nil {
		t.Fatal(err)
	}
	receiver := map[string][]webhook.ReceiverOption{
		"WithMaxBodyBytes":           {webhook.WithMaxBodyBytes(0)},
		"WithDedup(nil)":             {webhook.WithDedup(nil)},
		"WithDedup and WithoutDedup": {webhook.WithDedup(webhook.NewMemoryDedup()), webhook.WithoutDedup()},
		"WithDedupTimes":             {webhook.WithDedupTimes(0, time.Hour)},
		"WithLogger":                 {webhook.WithLogger(nil)},
		"WithClock":                  {webhook.WithClock(nil)},
		"WithTracer":                 {webhook.WithTracer(misspeltTracer{})},
		"option 0 is nil":            {nil},
	}
	for name, opts := range receiver {
		_, err := webhook.NewReceiver(v, opts...)
		if !errors.Is(err, webhook.ErrInvalidOption) || !strings.Contains(err.Error(), name) {
			t.Errorf("NewReceiver with bad %s: %v; want ErrInvalidOption naming it", name, err)
		}
	}
	if _, err := webhook.NewReceiver(v, webhook.WithTracer(onAttempt(nil))); !errors.Is(err, webhook.ErrInvalidOption) {
		t.Errorf("NewReceiver with an AttemptTracer: %v; want ErrInvalidOption", err)
	}

	verifier := map[string][]webhook.VerifierOption{
		"WithMaxSignatures": {webhook.WithMaxSignatures(0)},
		"WithClock":         {webhook.WithClock(nil)},
		"option 0 is nil":   {nil},
	}
	for name, opts := range verifier {
		_, err := webhook.NewVerifier([]string{webhook.NewSecret()}, opts...)
		if !errors.Is(err, webhook.ErrInvalidOption) || !strings.Contains(err.Error(), name) {
			t.Errorf("NewVerifier with bad %s: %v; want ErrInvalidOption naming it", name, err)
		}
	}
}

// The shared options fit every constructor they apply to; good values pass.
func TestSharedOptions(t *testing.T) {
	clock := webhook.WithClock(time.Now)
	v, err := webhook.NewVerifier([]string{webhook.NewSecret()}, clock, webhook.WithTolerance(-1))
	if err != nil {
		t.Fatal(err)
	}
	tr := webhook.WithTracer(onStoreError(func(error) {}))
	if _, err := webhook.NewReceiver(v, clock, tr); err != nil {
		t.Fatal(err)
	}
	if _, err := webhook.NewSender(webhook.NewMemoryStore(), clock, tr, webhook.WithTLSConfig(nil),
		webhook.WithTransport(func(base *http.Transport) http.RoundTripper { return base }), webhook.WithMaxRetryAfter(0),
		webhook.WithDisableAfter(0), webhook.WithMaxResponseBytes(0)); err != nil {
		t.Fatal(err)
	}
}
