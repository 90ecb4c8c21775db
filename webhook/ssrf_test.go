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
		// Missed by the hand-written list the generated table replaced
		// (issue 14, defect 5): documentation, SRv6 SIDs, benchmarking,
		// the deprecated 6to4 relay anycast block.
		"3fff::1", "3fff:fff:ffff:ffff:ffff:ffff:ffff:ffff", "5f00::1", "5f00:ffff::1", "2001:2::1",
		"2001:2:0:ffff:ffff:ffff:ffff:ffff", "192.88.99.1", "192.88.99.2", "192.88.99.255",
		"::ffff:192.88.99.1", "64:ff9b::c058:6301", "2002:c058:6301::1",
		// Other registry rows: dummy prefixes, Teredo, ORCHID, local NAT64,
		// IETF protocol assignments around the anycast exceptions.
		"100:0:0:1::1", "100::1", "2001::1", "2001:10::1", "64:ff9b:1::808:808", "192.0.0.8", "192.0.0.11",
		"2001:1::4", "fec0::1", "::a00:1", "4000::1", "5f01::1", "fe80::1%eth0",
	}
	public := []string{"8.8.8.8", "1.1.1.1", "93.184.216.34", "2606:4700:4700::1111", "2a00:1450:4001:80b::200e",
		"::ffff:8.8.8.8", "64:ff9b::808:808", "172.32.0.1", "100.128.0.1", "11.0.0.1",
		// Next to the newly refused blocks, and the registry's globally
		// reachable exceptions inside refused ones.
		"3fff:1000::1", "3ffe:ffff::1", "2001:3::1", "2001:1::1", "192.0.0.9", "192.88.98.255",
		"192.88.100.0", "2002:808:808::1", "2001:20::1", "2620:4f:8000::1"}
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
