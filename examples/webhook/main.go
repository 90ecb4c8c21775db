// Command webhook delivers a signed event from a Sender to a Receiver
// (Standard Webhooks): the receiver fails once and the sender retries with
// the same webhook-id; then a replay of the captured request is acknowledged
// without being handled again, and a tampered copy is rejected.
//
//	go run ./examples/webhook
package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/go-integration/patterns/webhook"
)

func main() {
	// Ctrl-C or SIGTERM cancels ctx, so run still cleans up after itself.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Stdout)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "webhook:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, w io.Writer) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	secret := webhook.NewSecret() // shared with the receiver out of band

	// The receiving service: verify, deduplicate on webhook-id, then handle.
	verifier, err := webhook.NewVerifier([]string{secret})
	if err != nil {
		return err
	}
	rejected := make(chan error, 4)
	recv, err := webhook.NewReceiver(verifier, webhook.WithTracer(rejectFunc(func(err error) { rejected <- err })))
	if err != nil {
		return err
	}
	handled := make(chan webhook.Event, 4)
	var calls atomic.Int32
	var captured recorder // keeps the first request, as an eavesdropper could
	mux := http.NewServeMux()
	mux.Handle("POST /webhooks", captured.wrap(
		recv.Handler(func(ctx context.Context, e webhook.Event) error {
			if calls.Add(1) == 1 {
				return errors.New("database busy") // 500: the ID is forgotten, the sender retries
			}
			handled <- e
			return nil
		})))
	srv := httptest.NewServer(mux)
	defer srv.Close()

	// The sending service: endpoints subscribe to event types; Run delivers.
	store := webhook.NewMemoryStore()
	if err := store.SaveEndpoint(ctx, webhook.Endpoint{ID: "billing", URL: srv.URL + "/webhooks",
		Secrets: []string{secret}, EventTypes: []string{"invoice.paid"}}); err != nil {
		return err
	}
	attempts := make(chan webhook.Attempt, 4)
	sender, err := webhook.NewSender(store,
		webhook.WithAllowedNetworks(netip.MustParsePrefix("127.0.0.0/8")),                        // the SSRF guard refuses loopback otherwise
		webhook.WithSchedule(0, 20*time.Millisecond, 20*time.Millisecond), webhook.WithJitter(0), // demo: retry fast
		webhook.WithTracer(attemptFunc(func(a webhook.Attempt) { attempts <- a })))
	if err != nil {
		return err
	}
	defer sender.Close()
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- sender.Run(runCtx) }()
	defer func() { stop(); <-done }()

	m, n, err := sender.Send(ctx, webhook.Message{ID: "msg_invoice_42", Type: "invoice.paid", Payload: []byte(`{"invoice":42,"amount":100}`)})
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "sent %s (%s) to %d endpoint(s)\n", m.ID, m.Type, n)
	a, err := next(ctx, attempts)
	if err != nil {
		return fmt.Errorf("waiting for the first attempt: %w", err)
	}
	fmt.Fprintf(w, "attempt %d: %d, delivery %s\n", a.Number, a.StatusCode, a.State)
	e, err := next(ctx, handled)
	if err != nil {
		return fmt.Errorf("waiting for the retry: %w", err)
	}
	fmt.Fprintf(w, "receiver handled %s: %s\n", e.ID, e.Body)
	if a, err = next(ctx, attempts); err != nil {
		return fmt.Errorf("waiting for the second attempt: %w", err)
	}
	fmt.Fprintf(w, "attempt %d: %d, delivery %s\n", a.Number, a.StatusCode, a.State)

	// The captured request sent again is acknowledged (200) but not handled
	// twice; with a changed body its signature no longer matches (401).
	tampered := []byte(`{"invoice":42,"amount":1000000}`)
	for _, c := range []struct {
		name string
		body []byte
	}{{"replayed request", captured.body}, {"tampered request", tampered}} {
		status, err := post(ctx, srv.Client(), srv.URL+"/webhooks", captured.header, c.body)
		if err != nil {
			return err
		}
		reason, err := next(ctx, rejected)
		if err != nil {
			return err
		}
		fmt.Fprintf(w, "%s: %d (%v), handled again: %t\n", c.name, status, reason, len(handled) > 0)
	}
	err = verifier.Verify(captured.header, tampered) // the check the Receiver ran, callable on its own
	fmt.Fprintf(w, "Verify on the tampered body: ErrNoMatchingSignature=%t\n", errors.Is(err, webhook.ErrNoMatchingSignature))
	return nil
}

// next waits for a value from ch, or for ctx to end.
func next[T any](ctx context.Context, ch <-chan T) (T, error) {
	select {
	case v := <-ch:
		return v, nil
	case <-ctx.Done():
		var zero T
		return zero, ctx.Err()
	}
}

// recorder keeps a copy of the first request's headers and body.
type recorder struct {
	once   sync.Once
	header http.Header
	body   []byte
}

func (rec *recorder) wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		rec.once.Do(func() { rec.header, rec.body = r.Header.Clone(), b })
		r.Body = io.NopCloser(bytes.NewReader(b))
		next.ServeHTTP(w, r)
	})
}

func post(ctx context.Context, c *http.Client, url string, h http.Header, body []byte) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	req.Header = h.Clone()
	resp, err := c.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, nil
}

// attemptFunc is a webhook.AttemptTracer: it calls f with each attempt, once
// recorded.
type attemptFunc func(a webhook.Attempt)

func (attemptFunc) TraceAttemptStart(ctx context.Context, _ webhook.TraceAttemptStartData) context.Context {
	return ctx
}

func (f attemptFunc) TraceAttemptEnd(_ context.Context, d webhook.TraceAttemptEndData) { f(d.Attempt) }

// rejectFunc is a webhook.RejectTracer: it calls f with the reason of each
// rejected request.
type rejectFunc func(err error)

func (f rejectFunc) TraceReject(_ context.Context, d webhook.TraceRejectData) { f(d.Err) }
