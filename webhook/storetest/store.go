package storetest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/go-integration/patterns/webhook"
)

// Purger is implemented by stores that can delete finished messages
// (webhook.MemoryStore and pgstore.Store); Features.Purge tests it.
type Purger interface {
	Purge(ctx context.Context, cutoff time.Time) (int64, error)
}

// runStore runs the Store conformance tests.
func runStore(t *testing.T, h Harness) {
	newStore := h.NewStore
	ctx := context.Background()
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	secret := webhook.NewSecret()
	ep := func(id string, types ...string) webhook.Endpoint {
		return webhook.Endpoint{ID: id, URL: "https://" + id + ".example/hook", Secrets: []string{secret}, EventTypes: types}
	}
	save := func(t *testing.T, s webhook.Store, es ...webhook.Endpoint) {
		t.Helper()
		for _, e := range es {
			if err := s.SaveEndpoint(ctx, e); err != nil {
				t.Fatalf("SaveEndpoint(%s): %v", e.ID, err)
			}
		}
	}
	enqueue := func(t *testing.T, s webhook.Store, id, typ string, at time.Time, want int) {
		t.Helper()
		n, err := s.Enqueue(ctx, webhook.Message{ID: id, Type: typ, Payload: []byte(`{"id":"` + id + `"}`), Time: t0}, at)
		if err != nil {
			t.Fatalf("Enqueue(%s): %v", id, err)
		}
		if n != want {
			t.Fatalf("Enqueue(%s) created %d deliveries, want %d", id, n, want)
		}
	}
	claim := func(t *testing.T, s webhook.Store, now time.Time, limit int) []webhook.Delivery {
		t.Helper()
		ds, err := s.Claim(ctx, now, time.Minute, limit)
		if err != nil {
			t.Fatalf("Claim: %v", err)
		}
		return ds
	}

	t.Run("Endpoints", func(t *testing.T) {
		s := newStore(t)
		e := ep("a", "x.created", "x.deleted")
		save(t, s, e)
		got, err := s.Endpoint(ctx, "a")
		if err != nil {
			t.Fatal(err)
		}
		if got.URL != e.URL || len(got.Secrets) != 1 || got.Secrets[0] != secret || len(got.EventTypes) != 2 || got.Disabled {
			t.Fatalf("Endpoint = %+v", got)
		}
		if _, err := s.Endpoint(ctx, "nope"); !errors.Is(err, webhook.ErrNotFound) {
			t.Fatalf("missing endpoint: %v", err)
		}
		if err := s.SaveEndpoint(ctx, webhook.Endpoint{ID: "bad"}); err == nil {
			t.Fatal("endpoint without URL and secret saved")
		}
		if err := s.DisableEndpoint(ctx, "a", "testing"); err != nil {
			t.Fatal(err)
		}
		if got, _ := s.Endpoint(ctx, "a"); !got.Disabled || got.DisabledReason != "testing" {
			t.Fatalf("after disable: %+v", got)
		}
		if err := s.EnableEndpoint(ctx, "a"); err != nil {
			t.Fatal(err)
		}
		if got, _ := s.Endpoint(ctx, "a"); got.Disabled {
			t.Fatalf("after enable: %+v", got)
		}
		if err := s.DisableEndpoint(ctx, "nope", "x"); !errors.Is(err, webhook.ErrNotFound) {
			t.Fatalf("disable missing endpoint: %v", err)
		}
	})

	t.Run("EnqueueMatchesSubscriptions", func(t *testing.T) {
		s := newStore(t)
		save(t, s, ep("all"), ep("created", "x.created"), ep("other", "y.created"), ep("off"))
		if err := s.DisableEndpoint(ctx, "off", "off"); err != nil {
			t.Fatal(err)
		}
		enqueue(t, s, "m1", "x.created", t0, 2)
		enqueue(t, s, "m1", "x.created", t0, 0) // idempotent
		ds, err := s.Deliveries(ctx, "m1")
		if err != nil {
			t.Fatal(err)
		}
		if len(ds) != 2 || ds[0].Endpoint.ID != "all" || ds[1].Endpoint.ID != "created" {
			t.Fatalf("deliveries: %+v", ds)
		}
		for _, d := range ds {
			if d.State != webhook.DeliveryPending || d.Message.Type != "x.created" || string(d.Message.Payload) != `{"id":"m1"}` || d.Attempts != 0 {
				t.Fatalf("delivery: %+v", d)
			}
		}
	})

	t.Run("EnqueueRefusesInvalidMessageID", func(t *testing.T) {
		s := newStore(t)
		save(t, s, ep("all"))
		for _, id := range []string{"", "x.1700000300"} {
			n, err := s.Enqueue(ctx, webhook.Message{ID: id, Type: "t", Payload: []byte("{}"), Time: t0}, t0)
			if !errors.Is(err, webhook.ErrInvalidMessageID) || n != 0 {
				t.Fatalf("Enqueue(%q) = %d, %v; want 0, ErrInvalidMessageID", id, n, err)
			}
		}
		if ds, _ := s.Deliveries(ctx, "x.1700000300"); len(ds) != 0 {
			t.Fatalf("deliveries of a refused message: %+v", ds)
		}
	})

	t.Run("ClaimDueAndLease", func(t *testing.T) {
		s := newStore(t)
		save(t, s, ep("a"))
		enqueue(t, s, "now", "t", t0, 1)
		enqueue(t, s, "later", "t", t0.Add(time.Hour), 1)
		ds := claim(t, s, t0, 10)
		if len(ds) != 1 || ds[0].Message.ID != "now" || ds[0].Lease == "" || ds[0].Endpoint.URL == "" {
			t.Fatalf("claim at t0: %+v", ds)
		}
		if again := claim(t, s, t0.Add(30*time.Second), 10); len(again) != 0 {
			t.Fatalf("claimed while leased: %+v", again)
		}
		// The lease (one minute) runs out: the worker died; someone else may take it.
		retaken := claim(t, s, t0.Add(61*time.Second), 10)
		if len(retaken) != 1 || retaken[0].ID != ds[0].ID || retaken[0].Lease == ds[0].Lease {
			t.Fatalf("reclaim after lease expiry: %+v", retaken)
		}
		// The first worker's late record is logged but does not move the delivery.
		a := webhook.Attempt{Number: 1, Start: t0, Duration: time.Millisecond, StatusCode: 200, State: webhook.DeliverySucceeded}
		if _, err := s.Record(ctx, ds[0], a); !errors.Is(err, webhook.ErrLeaseLost) {
			t.Fatalf("record with a stale lease: %v", err)
		}
		if d := deliveryOf(t, s, "now"); d.State != webhook.DeliveryPending {
			t.Fatalf("stale record changed the delivery: %+v", d)
		}
		if _, err := s.Record(ctx, retaken[0], a); err != nil {
			t.Fatalf("record with the current lease: %v", err)
		}
		if d := deliveryOf(t, s, "now"); d.State != webhook.DeliverySucceeded || d.Attempts != 1 {
			t.Fatalf("after record: %+v", d)
		}
		if as, _ := s.Attempts(ctx, ds[0].ID); len(as) != 2 {
			t.Fatalf("attempt log has %d entries, want 2 (stale and current)", len(as))
		}
		if later := claim(t, s, t0.Add(2*time.Hour), 10); len(later) != 1 || later[0].Message.ID != "later" {
			t.Fatalf("claim later: %+v", later)
		}
	})

	t.Run("ClaimLimitAndOrder", func(t *testing.T) {
		s := newStore(t)
		save(t, s, ep("a"))
		for i := range 5 {
			enqueue(t, s, fmt.Sprintf("m%d", i), "t", t0.Add(-time.Duration(i)*time.Second), 1)
		}
		ds := claim(t, s, t0, 2)
		if len(ds) != 2 || ds[0].Message.ID != "m4" || ds[1].Message.ID != "m3" {
			t.Fatalf("claim 2 oldest due: %+v", ids(ds))
		}
		if rest := claim(t, s, t0, 10); len(rest) != 3 {
			t.Fatalf("claim the rest: %v", ids(rest))
		}
	})

	t.Run("RecordAndAttemptLog", func(t *testing.T) {
		s := newStore(t)
		save(t, s, ep("a"))
		enqueue(t, s, "m", "t", t0, 1)
		d := claim(t, s, t0, 1)[0]
		fail := webhook.Attempt{Number: 1, Start: t0, Duration: 1500 * time.Millisecond, StatusCode: 500,
			ResponseBody: []byte("oops"), Error: "500 Internal Server Error", State: webhook.DeliveryPending, NextAttempt: t0.Add(5 * time.Second)}
		since, err := s.Record(ctx, d, fail)
		if err != nil {
			t.Fatal(err)
		}
		if !since.Equal(t0) {
			t.Fatalf("failingSince = %v, want %v", since, t0)
		}
		got := deliveryOf(t, s, "m")
		if got.State != webhook.DeliveryPending || got.Attempts != 1 || !got.NextAttempt.Equal(t0.Add(5*time.Second)) || got.LastError != fail.Error {
			t.Fatalf("after failed attempt: %+v", got)
		}
		if ds := claim(t, s, t0.Add(4*time.Second), 1); len(ds) != 0 {
			t.Fatal("claimed before its next attempt")
		}
		d = claim(t, s, t0.Add(5*time.Second), 1)[0]
		if d.Attempts != 1 {
			t.Fatalf("claimed delivery attempts = %d", d.Attempts)
		}
		since, err = s.Record(ctx, d, webhook.Attempt{Number: 2, Start: t0.Add(6 * time.Second), StatusCode: 503, State: webhook.DeliveryPending, NextAttempt: t0.Add(time.Hour)})
		if err != nil || !since.Equal(t0) {
			t.Fatalf("second failure: since %v, %v (want the first failure's time)", since, err)
		}
		d = claim(t, s, t0.Add(time.Hour), 1)[0]
		since, err = s.Record(ctx, d, webhook.Attempt{Number: 3, Start: t0.Add(time.Hour), StatusCode: 204, State: webhook.DeliverySucceeded})
		if err != nil || !since.IsZero() {
			t.Fatalf("success: since %v, %v (want zero)", since, err)
		}
		as, err := s.Attempts(ctx, d.ID)
		if err != nil {
			t.Fatal(err)
		}
		if len(as) != 3 || as[0].StatusCode != 500 || string(as[0].ResponseBody) != "oops" || as[0].Duration != 1500*time.Millisecond ||
			!as[0].Start.Equal(t0) || as[0].Number != 1 || as[2].State != webhook.DeliverySucceeded || as[0].DeliveryID != d.ID {
			t.Fatalf("attempt log: %+v", as)
		}
		if e, _ := s.Endpoint(ctx, "a"); !e.FailingSince.IsZero() {
			t.Fatalf("endpoint still failing after success: %v", e.FailingSince)
		}
	})

	t.Run("DisableFailsPendingAndResend", func(t *testing.T) {
		s := newStore(t)
		save(t, s, ep("a"), ep("b"))
		enqueue(t, s, "m1", "t", t0, 2)
		enqueue(t, s, "m2", "t", t0, 2)
		if err := s.DisableEndpoint(ctx, "a", "gone"); err != nil {
			t.Fatal(err)
		}
		ok := webhook.Attempt{Number: 1, Start: t0, StatusCode: 200, State: webhook.DeliverySucceeded}
		for _, d := range claim(t, s, t0, 10) {
			if d.Endpoint.ID == "a" {
				t.Fatalf("claimed a delivery to a disabled endpoint: %+v", d)
			}
			if _, err := s.Record(ctx, d, ok); err != nil {
				t.Fatal(err)
			}
		}
		d := deliveriesOf(t, s, "m1")[0]
		if d.Endpoint.ID != "a" || d.State != webhook.DeliveryFailed {
			t.Fatalf("pending delivery of a disabled endpoint: %+v", d)
		}
		if err := s.EnableEndpoint(ctx, "a"); err != nil {
			t.Fatal(err)
		}
		n, err := s.ResendFailed(ctx, "a", t0.Add(time.Minute))
		if err != nil || n != 2 {
			t.Fatalf("ResendFailed = %d, %v; want 2", n, err)
		}
		ds := claim(t, s, t0.Add(time.Minute), 10)
		if len(ds) != 2 || ds[0].Endpoint.ID != "a" || ds[0].Attempts != 0 {
			t.Fatalf("claim after resend: %+v", ds)
		}
		for _, d := range ds {
			if _, err := s.Record(ctx, d, ok); err != nil {
				t.Fatal(err)
			}
		}
		// Resend one message to one endpoint, then to all.
		if n, err := s.Resend(ctx, "m1", "a", t0.Add(2*time.Minute)); err != nil || n != 1 {
			t.Fatalf("Resend(m1, a) = %d, %v", n, err)
		}
		if n, err := s.Resend(ctx, "m2", "", t0.Add(2*time.Minute)); err != nil || n != 2 {
			t.Fatalf("Resend(m2) = %d, %v", n, err)
		}
		if ds := claim(t, s, t0.Add(2*time.Minute), 10); len(ds) != 3 {
			t.Fatalf("claim after resends: %v", ids(ds))
		}
		if _, err := s.Resend(ctx, "nope", "", t0); !errors.Is(err, webhook.ErrNotFound) {
			t.Fatalf("Resend of an unknown message: %v", err)
		}
	})

	t.Run("Purge", func(t *testing.T) {
		if !h.Features.Purge {
			t.Skip("Features.Purge is off")
		}
		s := newStore(t)
		p, ok := s.(Purger)
		if !ok {
			t.Fatalf("Features.Purge is on but %T has no Purge method", s)
		}
		save(t, s, ep("a"))
		for _, id := range []string{"done", "pending"} {
			if _, err := s.Enqueue(ctx, webhook.Message{ID: id, Type: "t", Time: t0}, t0); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := s.Enqueue(ctx, webhook.Message{ID: "recent", Type: "t", Time: t0.Add(time.Hour)}, t0); err != nil {
			t.Fatal(err)
		}
		for _, d := range claim(t, s, t0, 10) {
			if d.Message.ID == "pending" {
				continue
			}
			if _, err := s.Record(ctx, d, webhook.Attempt{Number: 1, Start: t0, StatusCode: 200, State: webhook.DeliverySucceeded}); err != nil {
				t.Fatal(err)
			}
		}
		n, err := p.Purge(ctx, t0.Add(time.Minute))
		if err != nil || n != 1 {
			t.Fatalf("Purge = %d, %v; want 1 (old and finished)", n, err)
		}
		if ds := deliveriesOf(t, s, "done"); len(ds) != 0 {
			t.Fatalf("purged message still has deliveries: %+v", ds)
		}
		if len(deliveriesOf(t, s, "pending")) != 1 || len(deliveriesOf(t, s, "recent")) != 1 {
			t.Fatal("Purge deleted a pending or recent message")
		}
	})

	t.Run("ConcurrentClaimsNeverOverlap", func(t *testing.T) {
		if h.Features.NoConcurrency {
			t.Skip("Features.NoConcurrency")
		}
		s := newStore(t)
		save(t, s, ep("a"), ep("b"))
		const msgs = 40
		for i := range msgs {
			enqueue(t, s, fmt.Sprintf("m%02d", i), "t", t0, 2)
		}
		var mu sync.Mutex
		seen := map[string]int{}
		var wg sync.WaitGroup
		for range 6 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					ds, err := s.Claim(ctx, t0, time.Minute, 3)
					if err != nil {
						t.Error(err)
						return
					}
					if len(ds) == 0 {
						return
					}
					mu.Lock()
					for _, d := range ds {
						seen[d.ID]++
					}
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		if len(seen) != 2*msgs {
			t.Fatalf("claimed %d distinct deliveries, want %d", len(seen), 2*msgs)
		}
		for id, n := range seen {
			if n != 1 {
				t.Fatalf("delivery %s claimed %d times", id, n)
			}
		}
	})
}

func deliveriesOf(t *testing.T, s webhook.Store, msgID string) []webhook.Delivery {
	t.Helper()
	ds, err := s.Deliveries(context.Background(), msgID)
	if err != nil {
		t.Fatal(err)
	}
	return ds
}

func deliveryOf(t *testing.T, s webhook.Store, msgID string) webhook.Delivery {
	t.Helper()
	ds := deliveriesOf(t, s, msgID)
	if len(ds) != 1 {
		t.Fatalf("message %s has %d deliveries, want 1", msgID, len(ds))
	}
	return ds[0]
}

func ids(ds []webhook.Delivery) []string {
	out := make([]string, len(ds))
	for i, d := range ds {
		out[i] = d.Message.ID + "->" + d.Endpoint.ID
	}
	return out
}
