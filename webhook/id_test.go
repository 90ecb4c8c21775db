package webhook_test

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/go-integration/patterns/webhook"
)

// TestDottedIDIsAmbiguous shows why IDs with '.' are refused: the content
// signed for ID "x.1700000300", timestamp 1700000000 and body B is the same
// bytes as for ID "x", timestamp 1700000300 and body "1700000000.B", so one
// signature would be valid for both. The Signer refuses to sign the dotted ID
// and the Verifier refuses to accept it, so only the dot-free reading exists.
func TestDottedIDIsAmbiguous(t *testing.T) {
	secret := webhook.NewSecret()
	raw, _ := base64.StdEncoding.DecodeString(strings.TrimPrefix(secret, webhook.SecretPrefix))
	m := hmac.New(sha256.New, raw)
	m.Write([]byte("x.1700000300.1700000000.B")) // the bytes both readings sign
	sig := "v1," + base64.StdEncoding.EncodeToString(m.Sum(nil))

	v, err := webhook.NewVerifier([]string{secret}, webhook.WithTolerance(-1))
	if err != nil {
		t.Fatal(err)
	}
	if err := v.VerifyValues("x", "1700000300", sig, []byte("1700000000.B")); err != nil {
		t.Fatalf("dot-free reading: %v", err)
	}
	if err := v.VerifyValues("x.1700000300", "1700000000", sig, []byte("B")); !errors.Is(err, webhook.ErrInvalidMessageID) {
		t.Fatalf("Verify with webhook-id x.1700000300 = %v, want ErrInvalidMessageID", err)
	}
	h := http.Header{}
	h.Set("webhook-id", "x.1700000300")
	h.Set("webhook-timestamp", "1700000000")
	h.Set("webhook-signature", sig)
	if err := v.Verify(h, []byte("B")); !errors.Is(err, webhook.ErrInvalidMessageID) {
		t.Fatalf("Verify(header) = %v, want ErrInvalidMessageID", err)
	}

	s, err := webhook.NewSigner(secret)
	if err != nil {
		t.Fatal(err)
	}
	ts := time.Unix(1700000000, 0)
	if err := s.SignHeader(http.Header{}, "x.1700000300", ts, []byte("B")); !errors.Is(err, webhook.ErrInvalidMessageID) {
		t.Fatalf("SignHeader = %v, want ErrInvalidMessageID", err)
	}
	if _, err := s.Sign("x.1700000300", ts, []byte("B")); !errors.Is(err, webhook.ErrInvalidMessageID) {
		t.Fatalf("Sign = %v, want ErrInvalidMessageID", err)
	}
	if _, err := s.AppendSignature(nil, "x.1700000300", ts.Unix(), []byte("B")); !errors.Is(err, webhook.ErrInvalidMessageID) {
		t.Fatalf("AppendSignature = %v, want ErrInvalidMessageID", err)
	}
	if got, err := s.Sign("x", time.Unix(1700000300, 0), []byte("1700000000.B")); err != nil || got != sig {
		t.Fatalf("Sign(x) = %s, %v; want %s", got, err, sig)
	}
}

func TestInvalidMessageIDs(t *testing.T) {
	for _, id := range []string{"", ".", "a.b", "msg_1."} {
		if err := webhook.ValidateMessageID(id); !errors.Is(err, webhook.ErrInvalidMessageID) {
			t.Errorf("ValidateMessageID(%q) = %v", id, err)
		}
	}
	for _, id := range []string{"msg_1", webhook.NewID(), "a-b_c~d"} {
		if err := webhook.ValidateMessageID(id); err != nil {
			t.Errorf("ValidateMessageID(%q) = %v", id, err)
		}
	}
	s, _ := webhook.NewSigner(webhook.NewSecret())
	if err := s.SignHeader(http.Header{}, "", time.Now(), nil); !errors.Is(err, webhook.ErrInvalidMessageID) {
		t.Errorf("SignHeader(empty ID) = %v", err)
	}

	ctx := context.Background()
	store := webhook.NewMemoryStore()
	if err := store.SaveEndpoint(ctx, webhook.Endpoint{ID: "e", URL: "https://example.com/", Secrets: []string{webhook.NewSecret()}}); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"", "a.b"} {
		if _, err := store.Enqueue(ctx, webhook.Message{ID: id, Type: "t"}, time.Now()); !errors.Is(err, webhook.ErrInvalidMessageID) {
			t.Errorf("MemoryStore.Enqueue(%q) = %v", id, err)
		}
	}
	sender, err := webhook.NewSender(store)
	if err != nil {
		t.Fatal(err)
	}
	if _, n, err := sender.Send(ctx, webhook.Message{ID: "order.1", Type: "t"}); !errors.Is(err, webhook.ErrInvalidMessageID) || n != 0 {
		t.Errorf("Send(order.1) = %d, %v", n, err)
	}
	if _, err := sender.Resend(ctx, "order.1", ""); !errors.Is(err, webhook.ErrInvalidMessageID) {
		t.Errorf("Resend(order.1) = %v", err)
	}
	if m, n, err := sender.Send(ctx, webhook.Message{Type: "t"}); err != nil || n != 1 || webhook.ValidateMessageID(m.ID) != nil {
		t.Errorf("Send without ID = %q, %d, %v", m.ID, n, err)
	}
	if ds, _ := store.Deliveries(ctx, "order.1"); len(ds) != 0 {
		t.Errorf("deliveries of order.1: %v", ds)
	}
}

// A Receiver answers 400 to a webhook-id with '.', even correctly signed,
// without calling the handler.
func TestReceiverRefusesDottedID(t *testing.T) {
	secret := webhook.NewSecret()
	raw, _ := base64.StdEncoding.DecodeString(strings.TrimPrefix(secret, webhook.SecretPrefix))
	ts := strconv.FormatInt(time.Now().Unix(), 10)
	m := hmac.New(sha256.New, raw)
	m.Write([]byte("a.b." + ts + ".{}"))
	v, _ := webhook.NewVerifier([]string{secret})
	called := false
	h := mustReceiver(t, v).Handler(func(context.Context, webhook.Event) error { called = true; return nil })
	req := httptest.NewRequest("POST", "/", strings.NewReader("{}"))
	req.Header.Set("webhook-id", "a.b")
	req.Header.Set("webhook-timestamp", ts)
	req.Header.Set("webhook-signature", "v1,"+base64.StdEncoding.EncodeToString(m.Sum(nil)))
	w := httptest.NewRecorder()
	h.ServeHTTP(w, req)
	if w.Code != http.StatusBadRequest || called {
		t.Fatalf("status %d, handler called %v; want 400, not called", w.Code, called)
	}
}

// legacyStore hands out deliveries whose message ID has a '.', as a store
// filled before IDs were checked could.
type legacyStore struct{ *webhook.MemoryStore }

func (s legacyStore) Claim(ctx context.Context, now time.Time, lease time.Duration, limit int) ([]webhook.Delivery, error) {
	ds, err := s.MemoryStore.Claim(ctx, now, lease, limit)
	for i := range ds {
		ds[i].Message.ID = "legacy." + ds[i].Message.ID
	}
	return ds, err
}

// A stored delivery with a dotted ID fails at once, without a request.
func TestSenderFailsDottedStoredID(t *testing.T) {
	ctx := context.Background()
	es := newEndpointServer(t, func(int, http.ResponseWriter, *http.Request) {})
	store := webhook.NewMemoryStore()
	if err := store.SaveEndpoint(ctx, webhook.Endpoint{ID: "e", URL: es.URL, Secrets: []string{webhook.NewSecret()}}); err != nil {
		t.Fatal(err)
	}
	var got []webhook.Attempt
	s, err := webhook.NewSender(legacyStore{store}, webhook.WithAllowedNetworks(loopback...),
		webhook.WithTracer(onAttempt(func(a webhook.Attempt) { got = append(got, a) })))
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Send(ctx, webhook.Message{ID: "m1", Type: "t"}); err != nil {
		t.Fatal(err)
	}
	if n, err := s.RunOnce(ctx); n != 1 || err != nil {
		t.Fatalf("RunOnce = %d, %v", n, err)
	}
	if len(got) != 1 || got[0].State != webhook.DeliveryFailed || !strings.Contains(got[0].Error, "invalid message ID") {
		t.Fatalf("attempts %+v; want one, failed, invalid message ID", got)
	}
	if n := len(es.requests()); n != 0 {
		t.Fatalf("%d requests sent", n)
	}
}
