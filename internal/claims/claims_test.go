package claims

import (
	"testing"
	"time"
)

func TestClaimSettleRelease(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	m := New[string](func() time.Time { return now })

	_, tok, ok := m.Claim("k", time.Minute)
	if !ok || tok == "" {
		t.Fatalf("first claim: ok=%v token=%q", ok, tok)
	}
	if held, _, ok := m.Claim("k", time.Minute); ok || held.Done {
		t.Fatalf("second claim while held: ok=%v done=%v", ok, held.Done)
	}
	// The claim expires; a new owner takes it; the stale owner is refused.
	now = now.Add(2 * time.Minute)
	_, tok2, ok := m.Claim("k", time.Minute)
	if !ok || tok2 == tok {
		t.Fatalf("claim after expiry: ok=%v token reused=%v", ok, tok2 == tok)
	}
	if m.Complete("k", tok, "stale", time.Hour) {
		t.Fatal("stale owner completed")
	}
	if owned, _ := m.Release("k", tok); owned {
		t.Fatal("stale owner released")
	}
	if m.Forget("k", tok) || m.Complete("k", "", "x", time.Hour) {
		t.Fatal("stale or empty token accepted")
	}
	if !m.Complete("k", tok2, "v", time.Hour) {
		t.Fatal("owner could not complete")
	}
	held, _, ok := m.Claim("k", time.Minute)
	if ok || !held.Done || held.Value != "v" || held.Token != "" {
		t.Fatalf("after complete: %+v ok=%v", held, ok)
	}
	if owned, done := m.Release("k", tok2); !owned || !done {
		t.Fatalf("release of settled: owned=%v done=%v", owned, done)
	}
	if m.Len() != 1 {
		t.Fatal("release dropped a settled entry")
	}
	if !m.Forget("k", tok2) || m.Len() != 0 {
		t.Fatal("forget did not drop the settled entry")
	}
	// Release frees the key at once.
	_, tok3, _ := m.Claim("j", time.Hour)
	if owned, done := m.Release("j", tok3); !owned || done {
		t.Fatalf("release: owned=%v done=%v", owned, done)
	}
	if _, _, ok := m.Claim("j", time.Hour); !ok {
		t.Fatal("released key not claimable")
	}
}

func TestSweepDropsExpired(t *testing.T) {
	now := time.Unix(0, 0)
	m := New[int](func() time.Time { return now })
	for _, k := range []string{"a", "b", "c"} {
		m.Claim(k, time.Second)
	}
	now = now.Add(2 * time.Minute)
	m.Claim("d", time.Second)
	if m.Len() != 1 {
		t.Fatalf("Len after sweep = %d, want 1", m.Len())
	}
}

func TestClaimWithShowsTheValueWhileRunning(t *testing.T) {
	m := New[string](nil)
	_, tok, ok := m.ClaimWith("k", time.Minute, "fp")
	if !ok {
		t.Fatal("not claimed")
	}
	if held, _, ok := m.Claim("k", time.Minute); ok || held.Done || held.Value != "fp" {
		t.Fatalf("held %+v ok=%v; want the running entry with its value", held, ok)
	}
	if e, ok := m.Owned("k", tok); !ok || e.Value != "fp" || e.Done {
		t.Fatalf("Owned = %+v, %v; want the running entry", e, ok)
	}
	if _, ok := m.Owned("k", tok+"x"); ok {
		t.Fatal("Owned with a wrong token")
	}
	if !m.Complete("k", tok, "done", time.Minute) {
		t.Fatal("owner could not complete")
	}
	if held, _, _ := m.Claim("k", time.Minute); !held.Done || held.Value != "done" {
		t.Fatalf("held %+v; want the settled value", held)
	}
}

// TestUntil: ClaimUntil and CompleteUntil use the caller's times, not the
// Map's clock.
func TestUntil(t *testing.T) {
	reads := 0
	m := New[struct{}](func() time.Time { reads++; return time.Time{} })
	reads = 0 // New reads it once
	at := time.Unix(1_700_000_000, 0)
	_, tok, ok := m.ClaimUntil("k", at, at.Add(time.Minute))
	if !ok {
		t.Fatal("first claim refused")
	}
	if _, _, ok := m.ClaimUntil("k", at.Add(59*time.Second), at.Add(2*time.Minute)); ok {
		t.Fatal("claimed while held")
	}
	if !m.CompleteUntil("k", tok, struct{}{}, at.Add(time.Hour)) {
		t.Fatal("owner could not complete")
	}
	if held, _, ok := m.ClaimUntil("k", at.Add(59*time.Minute), at.Add(2*time.Hour)); ok || !held.Done || !held.Expires.Equal(at.Add(time.Hour)) {
		t.Fatalf("held %+v ok=%v; want the settled entry until the hour", held, ok)
	}
	if _, _, ok := m.ClaimUntil("k", at.Add(time.Hour), at.Add(2*time.Hour)); !ok {
		t.Fatal("settled entry outlived its until")
	}
	if reads != 0 {
		t.Fatalf("the Map's clock was read %d times", reads)
	}
}
