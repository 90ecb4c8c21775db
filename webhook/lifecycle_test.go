package webhook_test

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/go-integration/patterns/webhook"
)

// blockingEndpoint holds every request until release is closed (or the
// client gives up), signalling entered for each.
func blockingEndpoint(t *testing.T) (es *endpointServer, entered chan struct{}, release chan struct{}) {
	entered, release = make(chan struct{}, 10), make(chan struct{})
	es = newEndpointServer(t, func(_ int, w http.ResponseWriter, r *http.Request) {
		entered <- struct{}{}
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})
	return es, entered, release
}

func newLifecycleSender(t *testing.T, url string, opts ...webhook.SenderOption) (*webhook.Sender, *webhook.MemoryStore, *recordingTracer) {
	t.Helper()
	store := webhook.NewMemoryStore()
	if err := store.SaveEndpoint(context.Background(), webhook.Endpoint{ID: "e", URL: url, Secrets: []string{webhook.NewSecret()}}); err != nil {
		t.Fatal(err)
	}
	tr := newRecordingTracer("t", nil)
	s, err := webhook.NewSender(store, append([]webhook.SenderOption{webhook.WithAllowedNetworks(loopback...),
		webhook.WithPollInterval(5 * time.Millisecond), webhook.WithTracer(tr)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	return s, store, tr
}

// Close stops Run, which returns ErrClosed, and waits for the attempt in
// flight to finish and be recorded.
func TestCloseDrainsAttemptsInFlight(t *testing.T) {
	es, entered, release := blockingEndpoint(t)
	s, store, _ := newLifecycleSender(t, es.URL)
	ctx := context.Background()
	runErr := make(chan error, 1)
	go func() { runErr <- s.Run(ctx) }()
	m, _, err := s.Send(ctx, webhook.Message{Type: "t", Payload: []byte(`{}`)})
	if err != nil {
		t.Fatal(err)
	}
	<-entered
	closed := make(chan error, 1)
	go func() { closed <- s.Close() }()
	select {
	case err := <-runErr:
		t.Fatalf("Run returned %v with an attempt in flight", err)
	case <-closed:
		t.Fatal("Close returned with an attempt in flight")
	default:
	}
	close(release)
	if err := <-closed; err != nil {
		t.Fatalf("Close = %v", err)
	}
	if err := <-runErr; !errors.Is(err, webhook.ErrClosed) {
		t.Fatalf("Run = %v, want ErrClosed", err)
	}
	ds, _ := store.Deliveries(ctx, m.ID)
	if len(ds) != 1 || ds[0].State != webhook.DeliverySucceeded {
		t.Fatalf("after Close the delivery is %+v, want succeeded (recorded)", ds)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close = %v", err)
	}
}

// After the drain timeout Close cancels the attempt in flight: it is not
// recorded (the lease brings the delivery back), End says ErrClosed, and
// Stats counts it abandoned. Afterwards every method fails with ErrClosed.
func TestCloseCancelsAfterDrainTimeout(t *testing.T) {
	es, entered, _ := blockingEndpoint(t)
	s, store, tr := newLifecycleSender(t, es.URL, webhook.WithDrainTimeout(20*time.Millisecond))
	ctx := context.Background()
	runErr := make(chan error, 1)
	go func() { runErr <- s.Run(ctx) }()
	m, _, err := s.Send(ctx, webhook.Message{Type: "t", Payload: []byte(`{}`)})
	if err != nil {
		t.Fatal(err)
	}
	<-entered
	if err := s.Close(); err != nil {
		t.Fatalf("Close = %v", err)
	}
	if err := <-runErr; !errors.Is(err, webhook.ErrClosed) {
		t.Fatalf("Run = %v, want ErrClosed", err)
	}
	tr.mu.Lock()
	ends := append([]webhook.TraceAttemptEndData(nil), tr.ends...)
	tr.mu.Unlock()
	if len(ends) != 1 || !errors.Is(ends[0].Err, webhook.ErrClosed) || ends[0].State != webhook.DeliveryPending {
		t.Fatalf("attempt ends %+v, want one cancelled with ErrClosed", ends)
	}
	ds, _ := store.Deliveries(ctx, m.ID)
	if len(ds) != 1 || ds[0].State != webhook.DeliveryPending || ds[0].Attempts != 0 {
		t.Fatalf("delivery %+v, want pending and unrecorded", ds)
	}
	if as, _ := store.Attempts(ctx, ds[0].ID); len(as) != 0 {
		t.Fatalf("attempt log %+v, want empty", as)
	}
	if st := s.Stats(); st.Attempts != 1 || st.Abandoned != 1 || st.InFlight != 0 {
		t.Fatalf("Stats = %+v", st)
	}

	if _, _, err := s.Send(ctx, webhook.Message{Type: "t"}); !errors.Is(err, webhook.ErrClosed) {
		t.Errorf("Send after Close = %v", err)
	}
	if _, err := s.Resend(ctx, m.ID, ""); !errors.Is(err, webhook.ErrClosed) {
		t.Errorf("Resend after Close = %v", err)
	}
	if _, err := s.ResendFailed(ctx, "e"); !errors.Is(err, webhook.ErrClosed) {
		t.Errorf("ResendFailed after Close = %v", err)
	}
	if _, err := s.RunOnce(ctx); !errors.Is(err, webhook.ErrClosed) {
		t.Errorf("RunOnce after Close = %v", err)
	}
	if err := s.Run(ctx); !errors.Is(err, webhook.ErrClosed) {
		t.Errorf("Run after Close = %v", err)
	}
}

// Close is idempotent and safe from several goroutines; an idle Sender
// closes at once, and Run ended by its context returns nil.
func TestCloseIdempotentAndRunContext(t *testing.T) {
	s, _, _ := newLifecycleSender(t, "http://127.0.0.1:9/")
	ctx, cancel := context.WithCancel(context.Background())
	runErr := make(chan error, 1)
	go func() { runErr <- s.Run(ctx) }()
	cancel()
	if err := <-runErr; err != nil {
		t.Fatalf("Run after its context ended = %v, want nil", err)
	}
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			if err := s.Close(); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
}
