package webhook

import (
	"testing"
	"time"
)

// TestSignerCacheIsBounded signs with 10,000 distinct endpoint secrets: the
// Sender's signer cache stays at signerCacheSize entries, and signatures made
// with cached, new and evicted secrets all verify.
func TestSignerCacheIsBounded(t *testing.T) {
	s, err := NewSender(NewMemoryStore())
	if err != nil {
		t.Fatal(err)
	}
	const n = 10000
	secrets := make([]string, n)
	body := []byte(`{"n":1}`)
	ts := time.Unix(1700000000, 0)
	check := func(i int) {
		t.Helper()
		sg, err := s.signer([]string{secrets[i]})
		if err != nil {
			t.Fatal(err)
		}
		v, err := NewVerifier([]string{secrets[i]}, WithClock(func() time.Time { return ts }))
		if err != nil {
			t.Fatal(err)
		}
		if err := v.VerifyValues("msg_1", "1700000000", mustSign(t, sg, "msg_1", ts, body), body); err != nil {
			t.Fatalf("secret %d: %v", i, err)
		}
	}
	for i := range secrets {
		secrets[i] = NewSecret()
		check(i)
		if got := cachedSigners(s); got > signerCacheSize {
			t.Fatalf("after %d secrets the cache holds %d signers, want at most %d", i+1, got, signerCacheSize)
		}
	}
	if got := cachedSigners(s); got != signerCacheSize {
		t.Fatalf("cache holds %d signers, want %d", got, signerCacheSize)
	}
	check(0)     // evicted long ago: built again
	check(n - 1) // cached
	// A rotation (two secrets) is one entry, distinct from either alone.
	sg, err := s.signer([]string{secrets[1], secrets[2]})
	if err != nil {
		t.Fatal(err)
	}
	v, _ := NewVerifier([]string{secrets[2]}, WithClock(func() time.Time { return ts }))
	if err := v.VerifyValues("msg_1", "1700000000", mustSign(t, sg, "msg_1", ts, body), body); err != nil {
		t.Fatal(err)
	}
}

func cachedSigners(s *Sender) int { return s.signers.len() }
