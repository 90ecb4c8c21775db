package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync/atomic"
	"time"

	"github.com/go-integration/patterns/telemetry"
	"github.com/go-integration/patterns/webhook"
)

// partnerWebhook delivers a signed booking_created webhook to a partner's
// endpoint, which verifies it. The partner fails the first attempt, so the
// sender retries with the same webhook-id and a fresh signature.
func partnerWebhook(ctx context.Context, t *tour) error {
	t.printf("   A partner (a ski-rental shop in Névache) wants to hear about new bookings.\n")
	t.printf("   We sign each webhook with a shared secret; the partner checks the signature.\n")
	secret := webhook.NewSecret()

	// The partner's side: Receiver verifies, deduplicates and hands the event on.
	verifier, err := webhook.NewVerifier([]string{secret})
	if err != nil {
		return err
	}
	rejected := make(chan error, 4)
	// Partner and sender are both ours here, so trace context may cross
	// (with a third party, leave propagation off: the default).
	traced := webhook.WithTracer(t.tel.Webhook(telemetry.WithWebhookPropagation(true)))
	recv, err := webhook.NewReceiver(verifier, traced, webhook.WithTracer(rejectFunc(func(err error) {
		rejected <- err
	})))
	if err != nil {
		return err
	}
	var calls atomic.Int32
	handled := make(chan booking, 4)
	mux := http.NewServeMux()
	mux.Handle("POST /webhooks", recv.Handler(func(ctx context.Context, ev webhook.Event) error {
		var b booking
		if err := json.Unmarshal(ev.Body, &b); err != nil {
			return &webhook.StatusError{Code: http.StatusBadRequest, Err: err}
		}
		if calls.Add(1) == 1 {
			t.printf("   partner: verified %s for %s, but its database is busy: answers 500\n", ev.ID, b.ID)
			return errors.New("database busy")
		}
		t.printf("   partner: verified %s for %s (%s, %d nights): stored, answers 204\n", ev.ID, b.ID, b.Rental, b.Nights)
		handled <- b
		return nil
	}))
	srv := httptest.NewServer(mux)
	defer srv.Close()
	endpointURL := srv.URL + "/webhooks"

	// Anyone can POST to the endpoint; a forged request is turned away.
	forger, err := webhook.NewSigner(webhook.NewSecret())
	if err != nil {
		return err
	}
	body := []byte(`{"id":"b-6666","rental":"chalet-17","nights":99}`)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpointURL, strings.NewReader(string(body)))
	if err != nil {
		return err
	}
	forger.SignHeader(req.Header, webhook.NewID(), time.Now(), body)
	resp, err := srv.Client().Do(req)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		return fmt.Errorf("forged webhook got %d, want 401", resp.StatusCode)
	}
	t.printf("   a forged webhook (signed with another secret) gets %d: %v\n", resp.StatusCode, <-rejected)

	// The SSRF guard: a sender refuses loopback and private addresses unless
	// they are allowed, so a customer cannot point a webhook at our internals.
	if err := ssrfRefusal(ctx, t, endpointURL, secret); err != nil {
		return err
	}

	// Our side: the Sender, allowed to reach 127.0.0.0/8 for this in-process partner.
	delivered := make(chan webhook.Attempt, 4)
	// Endpoints and deliveries live in the sender's store (MemoryStore here;
	// webhook/pgstore for durable delivery shared by several processes).
	store := webhook.NewMemoryStore()
	sender, err := webhook.NewSender(store,
		webhook.WithAllowedNetworks(netip.MustParsePrefix("127.0.0.0/8")),
		webhook.WithSchedule(0, 100*time.Millisecond, time.Second),
		webhook.WithJitter(0),
		webhook.WithPollInterval(time.Second),
		webhook.WithAttemptTimeout(5*time.Second),
		traced,
		webhook.WithTracer(attemptFunc(func(messageID string, a webhook.Attempt) {
			if a.State == webhook.DeliveryPending {
				t.printf("   sender: attempt %d of %s got %d, retry in %s\n", a.Number, messageID, a.StatusCode, time.Until(a.NextAttempt).Round(10*time.Millisecond))
			} else {
				t.printf("   sender: attempt %d of %s got %d, delivery %s\n", a.Number, messageID, a.StatusCode, a.State)
			}
			if a.State != webhook.DeliveryPending {
				delivered <- a
			}
		})))
	if err != nil {
		return err
	}
	defer sender.Close()
	if err := store.SaveEndpoint(ctx, webhook.Endpoint{
		ID: "skiloc-nevache", URL: endpointURL, Secrets: []string{secret}, EventTypes: []string{"booking_created"},
	}); err != nil {
		return err
	}
	runCtx, stop := context.WithCancel(ctx)
	runDone := make(chan error, 1)
	go func() { runDone <- sender.Run(runCtx) }()
	defer func() {
		stop()
		<-runDone
	}()

	b := sampleBookings[0]
	payload, err := json.Marshal(b)
	if err != nil {
		return err
	}
	msg, n, err := sender.Send(ctx, webhook.Message{Type: "booking_created", Payload: payload})
	if err != nil {
		return err
	}
	t.printf("   sent booking_created %s for %s to %d endpoint(s)\n", msg.ID, b.ID, n)
	wait, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	select {
	case a := <-delivered:
		if a.State != webhook.DeliverySucceeded {
			return fmt.Errorf("delivery %s: %s", a.State, a.Error)
		}
	case <-wait.Done():
		return errors.New("webhook not delivered within 10 s")
	}
	select {
	case got := <-handled:
		if got.ID != b.ID {
			return fmt.Errorf("partner stored %s, want %s", got.ID, b.ID)
		}
	case <-wait.Done():
		return errors.New("partner did not store the booking")
	}
	if c := calls.Load(); c != 2 {
		return fmt.Errorf("partner handler ran %d times, want 2 (one failure, one success)", c)
	}
	t.printf("   delivered after one retry; the partner stored %s once\n", b.ID)

	// Delivery is at-least-once: the same webhook-id may arrive again (here
	// an operator resends it). The partner's Receiver remembers handled IDs.
	if _, err := sender.Resend(ctx, msg.ID, "skiloc-nevache"); err != nil {
		return err
	}
	t.printf("   an operator resends %s\n", msg.ID)
	select {
	case a := <-delivered:
		if a.StatusCode != http.StatusOK {
			return fmt.Errorf("resent webhook got %d, want 200 (already handled)", a.StatusCode)
		}
	case <-wait.Done():
		return errors.New("resent webhook not delivered within 10 s")
	}
	if c := calls.Load(); c != 2 {
		return fmt.Errorf("partner handler ran %d times after the resend, want still 2", c)
	}
	t.printf("   the partner's Receiver knows that webhook-id: it answers 200 without storing the booking again\n")
	return nil
}

// ssrfRefusal shows a sender without an allow-list refusing the loopback endpoint.
func ssrfRefusal(ctx context.Context, t *tour, endpointURL, secret string) error {
	store := webhook.NewMemoryStore()
	attempts := make(chan webhook.Attempt, 1)
	guarded, err := webhook.NewSender(store, webhook.WithTracer(t.tel.Webhook()), webhook.WithTracer(attemptFunc(func(_ string, a webhook.Attempt) {
		attempts <- a
	})))
	if err != nil {
		return err
	}
	defer guarded.Close()
	if err := store.SaveEndpoint(ctx, webhook.Endpoint{ID: "internal", URL: endpointURL, Secrets: []string{secret}}); err != nil {
		return err
	}
	if _, _, err := guarded.Send(ctx, webhook.Message{Type: "booking_created", Payload: []byte(`{}`)}); err != nil {
		return err
	}
	if _, err := guarded.RunOnce(ctx); err != nil {
		return err
	}
	a := <-attempts
	if a.StatusCode != 0 || !strings.Contains(a.Error, "SSRF") {
		return fmt.Errorf("a sender without allow-list reached %s: status %d, error %q", endpointURL, a.StatusCode, a.Error)
	}
	reason := a.Error
	if i := strings.LastIndex(reason, "webhook: "); i >= 0 {
		reason = reason[i:]
	}
	t.printf("   a sender without an allow-list refuses the partner's 127.0.0.1 address: %s\n", reason)
	return nil
}

// attemptFunc is a webhook.AttemptTracer: it calls f with the message ID and
// each attempt, once recorded.
type attemptFunc func(messageID string, a webhook.Attempt)

type messageIDKey struct{}

func (attemptFunc) TraceAttemptStart(ctx context.Context, d webhook.TraceAttemptStartData) context.Context {
	return context.WithValue(ctx, messageIDKey{}, d.MessageID)
}

func (f attemptFunc) TraceAttemptEnd(ctx context.Context, d webhook.TraceAttemptEndData) {
	id, _ := ctx.Value(messageIDKey{}).(string)
	f(id, d.Attempt)
}

// rejectFunc is a webhook.RejectTracer: it calls f with the reason of each
// rejected request.
type rejectFunc func(err error)

func (f rejectFunc) TraceReject(_ context.Context, d webhook.TraceRejectData) { f(d.Err) }
