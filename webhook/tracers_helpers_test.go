package webhook_test

import (
	"context"
	"net/http"
	"testing"

	"github.com/go-integration/patterns/webhook"
)

// Small tracers for tests, each a function of the data it cares about.

// onAttempt calls f with every attempt as recorded.
type onAttempt func(a webhook.Attempt)

func (onAttempt) TraceAttemptStart(ctx context.Context, _ webhook.TraceAttemptStartData) context.Context {
	return ctx
}
func (f onAttempt) TraceAttemptEnd(_ context.Context, d webhook.TraceAttemptEndData) { f(d.Attempt) }

// onDisable calls f with every endpoint disabled.
type onDisable func(e webhook.Endpoint, reason string)

func (f onDisable) TraceDisable(_ context.Context, d webhook.TraceDisableData) {
	f(d.Endpoint, d.Reason)
}

// onStoreError calls f with every store failure survived.
type onStoreError func(err error)

func (f onStoreError) TraceStoreError(_ context.Context, d webhook.TraceStoreErrorData) { f(d.Err) }

// onReject calls f with every rejected request.
type onReject func(r *http.Request, err error)

func (f onReject) TraceReject(_ context.Context, d webhook.TraceRejectData) { f(d.Request, d.Err) }

// mustReceiver is NewReceiver failing the test on error.
func mustReceiver(t testing.TB, v *webhook.Verifier, opts ...webhook.ReceiverOption) *webhook.Receiver {
	t.Helper()
	r, err := webhook.NewReceiver(v, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return r
}
