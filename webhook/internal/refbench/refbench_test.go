package refbench

import (
	"net/http"
	"testing"
	"time"

	"github.com/go-integration/patterns/webhook"
	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"
)

const (
	secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	msgID  = "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W"
)

func body() []byte {
	b := make([]byte, 1024)
	for i := range b {
		b[i] = byte('a' + i%26)
	}
	return b
}

// The two libraries produce the same signature, so the comparison is fair.
func TestSameSignature(t *testing.T) {
	ref, err := standardwebhooks.NewWebhook(secret)
	if err != nil {
		t.Fatal(err)
	}
	ours, _ := webhook.NewSigner(secret)
	ts := time.Now()
	want, _ := ref.Sign(msgID, ts, body())
	if got, _ := ours.Sign(msgID, ts, body()); got != want {
		t.Fatalf("ours %s, reference %s", got, want)
	}
}

func BenchmarkSign(b *testing.B) {
	payload := body()
	ts := time.Now()
	b.Run("patterns", func(b *testing.B) {
		s, _ := webhook.NewSigner(secret)
		b.ReportAllocs()
		for b.Loop() {
			_, _ = s.Sign(msgID, ts, payload)
		}
	})
	b.Run("reference", func(b *testing.B) {
		wh, _ := standardwebhooks.NewWebhook(secret)
		b.ReportAllocs()
		for b.Loop() {
			_, _ = wh.Sign(msgID, ts, payload)
		}
	})
}

func BenchmarkVerify(b *testing.B) {
	payload := body()
	h := http.Header{}
	s, _ := webhook.NewSigner(secret)
	s.SignHeader(h, msgID, time.Now(), payload)
	b.Run("patterns", func(b *testing.B) {
		v, _ := webhook.NewVerifier([]string{secret})
		b.ReportAllocs()
		for b.Loop() {
			if err := v.Verify(h, payload); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("reference", func(b *testing.B) {
		wh, _ := standardwebhooks.NewWebhook(secret)
		b.ReportAllocs()
		for b.Loop() {
			if err := wh.Verify(payload, h); err != nil {
				b.Fatal(err)
			}
		}
	})
}
