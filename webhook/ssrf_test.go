package webhook

import (
	"context"
	"errors"
	"net/netip"
	"testing"
	"time"
)

func TestIsPublicAddr(t *testing.T) {
	blocked := []string{
		"127.0.0.1", "127.255.0.1", "::1", "10.0.0.1", "172.16.5.4", "172.31.255.255", "192.168.1.1",
		"169.254.169.254", "fe80::1", "fc00::1", "fd12:3456::1", "100.64.0.1", "100.127.255.254",
		"224.0.0.1", "239.255.255.250", "ff02::1", "ff05::2", "0.0.0.0", "::", "255.255.255.255", "240.0.0.1",
		"::ffff:127.0.0.1", "::ffff:169.254.169.254", "::ffff:10.0.0.1", "64:ff9b::7f00:1", "64:ff9b::a9fe:a9fe",
		"2002:7f00:1::", "2002:c0a8:101::1", "192.0.2.1", "198.18.0.1", "0.1.2.3",
	}
	public := []string{"8.8.8.8", "1.1.1.1", "93.184.216.34", "2606:4700:4700::1111", "2a00:1450:4001:80b::200e",
		"::ffff:8.8.8.8", "64:ff9b::808:808", "172.32.0.1", "100.128.0.1", "11.0.0.1"}
	for _, s := range blocked {
		if IsPublicAddr(netip.MustParseAddr(s)) {
			t.Errorf("%s is public, want blocked", s)
		}
	}
	for _, s := range public {
		if !IsPublicAddr(netip.MustParseAddr(s)) {
			t.Errorf("%s is blocked, want public", s)
		}
	}
}

func TestGuardDialErrors(t *testing.T) {
	g := newGuard(true, nil, func(context.Context, string) ([]netip.Addr, error) {
		return []netip.Addr{netip.MustParseAddr("169.254.169.254")}, nil
	})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, addr := range []string{"metadata.internal:80", "127.0.0.1:1", "[::1]:1", "[::ffff:127.0.0.1]:1"} {
		_, err := g.DialContext(ctx, "tcp", addr)
		if !errors.Is(err, ErrBlockedAddress) {
			t.Errorf("dial %s: %v, want ErrBlockedAddress", addr, err)
		}
	}
	// Without a custom lookup the check runs in the dialer's Control hook,
	// after the system resolver: "localhost" resolves to loopback.
	g = newGuard(true, nil, nil)
	if _, err := g.DialContext(ctx, "tcp", "localhost:1"); !errors.Is(err, ErrBlockedAddress) {
		t.Errorf("dial localhost: %v, want ErrBlockedAddress", err)
	}
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, c := range []struct {
		v    string
		want time.Duration
	}{
		{"", 0}, {"0", 0}, {"-3", 0}, {"12", 12 * time.Second}, {" 5 ", 5 * time.Second}, {"1.5", 0}, {"soon", 0},
		{"Fri, 02 Jan 2026 03:05:05 GMT", time.Minute},
		{"Fri, 02 Jan 2026 03:00:00 GMT", 0}, // past
		{"99999999999999999999", 0},          // overflows ParseInt: not a number
	} {
		if got := parseRetryAfter(c.v, now); got != c.want {
			t.Errorf("parseRetryAfter(%q) = %v, want %v", c.v, got, c.want)
		}
	}
}

func TestJitterBounds(t *testing.T) {
	s, err := NewSender(NewMemoryStore())
	if err != nil {
		t.Fatal(err)
	}
	d := 10 * time.Second
	seen := map[time.Duration]bool{}
	for range 1000 {
		j := s.jittered(d)
		if j < 8*time.Second || j > 12*time.Second {
			t.Fatalf("jittered(%v) = %v, outside ±20%%", d, j)
		}
		seen[j] = true
	}
	if len(seen) < 100 {
		t.Fatalf("only %d distinct delays in 1000", len(seen))
	}
	if s.jittered(0) != 0 {
		t.Fatal("jitter moved an immediate attempt")
	}
}

func TestNewSenderRejectsBadOptions(t *testing.T) {
	for name, opts := range map[string][]SenderOption{
		"empty schedule":   {WithSchedule()},
		"negative delay":   {WithSchedule(0, -time.Second)},
		"jitter 1":         {WithJitter(1)},
		"lease <= timeout": {WithAttemptTimeout(time.Minute), WithLease(time.Minute)},
		"concurrency 0":    {WithConcurrency(0)},
	} {
		if _, err := NewSender(NewMemoryStore(), opts...); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if _, err := NewSender(nil); err == nil {
		t.Error("nil store accepted")
	}
}
