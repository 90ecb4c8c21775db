package webhook

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"syscall"
	"time"
)

// ErrBlockedAddress is returned (wrapped) when the SSRF guard refuses to
// connect to an address that is not public, such as 127.0.0.1 or the cloud
// metadata address 169.254.169.254.
var ErrBlockedAddress = errors.New("webhook: address blocked by the SSRF guard")

var blockedPrefixes = func() []netip.Prefix {
	var ps []netip.Prefix
	for _, s := range []string{
		"0.0.0.0/8",       // "this network"
		"100.64.0.0/10",   // carrier-grade NAT (RFC 6598)
		"192.0.0.0/24",    // IETF protocol assignments
		"192.0.2.0/24",    // documentation
		"198.18.0.0/15",   // benchmarking
		"198.51.100.0/24", // documentation
		"203.0.113.0/24",  // documentation
		"240.0.0.0/4",     // reserved, broadcast
		"::/96",           // IPv4-compatible (deprecated)
		"100::/64",        // discard
		"2001:db8::/32",   // documentation
		"fec0::/10",       // site-local (deprecated)
		"2001::/32",       // Teredo
		"2001:10::/28",    // ORCHID
		"::ffff:0:0:0/96", // SIIT translated
		"64:ff9b:1::/48",  // local-use NAT64
	} {
		ps = append(ps, netip.MustParsePrefix(s))
	}
	return ps
}()

var (
	nat64     = netip.MustParsePrefix("64:ff9b::/96")
	sixToFour = netip.MustParsePrefix("2002::/16")
)

// IsPublicAddr reports whether the SSRF guard lets the sender connect to a:
// it refuses loopback, private (RFC 1918 and IPv6 ULA), link-local,
// carrier-grade NAT, multicast, unspecified, documentation and reserved
// addresses, looking through IPv4-mapped, NAT64 and 6to4 IPv6 forms.
func IsPublicAddr(a netip.Addr) bool {
	a = a.Unmap()
	if !a.IsValid() {
		return false
	}
	if a.Is6() {
		b := a.As16()
		switch {
		case nat64.Contains(a):
			return IsPublicAddr(netip.AddrFrom4([4]byte(b[12:16])))
		case sixToFour.Contains(a):
			return IsPublicAddr(netip.AddrFrom4([4]byte(b[2:6])))
		}
	}
	if a.IsUnspecified() || a.IsLoopback() || a.IsPrivate() || a.IsLinkLocalUnicast() ||
		a.IsLinkLocalMulticast() || a.IsInterfaceLocalMulticast() || a.IsMulticast() {
		return false
	}
	for _, p := range blockedPrefixes {
		if p.Contains(a) {
			return false
		}
	}
	return true
}

// guard dials only to allowed addresses. The check runs in the dialer's
// Control hook, that is on the resolved address right before connect(2), so a
// DNS answer that changes between a check and the connection (rebinding)
// cannot bypass it.
type guard struct {
	enabled bool
	allow   []netip.Prefix
	lookup  func(ctx context.Context, host string) ([]netip.Addr, error)
	dialer  net.Dialer
}

func newGuard(enabled bool, allow []netip.Prefix, lookup func(context.Context, string) ([]netip.Addr, error)) *guard {
	g := &guard{enabled: enabled, allow: allow, lookup: lookup}
	g.dialer = net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second, Control: g.control}
	return g
}

func (g *guard) check(a netip.Addr) error {
	a = a.Unmap()
	for _, p := range g.allow {
		if p.Contains(a) {
			return nil
		}
	}
	if !g.enabled || IsPublicAddr(a) {
		return nil
	}
	return fmt.Errorf("%w: %v is not a public address", ErrBlockedAddress, a)
}

func (g *guard) control(_, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("%w: cannot parse %q", ErrBlockedAddress, address)
	}
	return g.check(ap.Addr())
}

// DialContext connects through the guard. With a custom lookup function the
// host is resolved by it; otherwise by the system resolver inside the dialer.
func (g *guard) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	if g.lookup == nil {
		return g.dialer.DialContext(ctx, network, address)
	}
	host, port, err := net.SplitHostPort(address)
	if err != nil {
		return nil, err
	}
	var addrs []netip.Addr
	if a, err := netip.ParseAddr(host); err == nil {
		addrs = []netip.Addr{a}
	} else if addrs, err = g.lookup(ctx, host); err != nil {
		return nil, err
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		return nil, fmt.Errorf("webhook: bad port %q", port)
	}
	var firstErr error
	for _, a := range addrs {
		c, err := g.dialer.DialContext(ctx, network, netip.AddrPortFrom(a, uint16(p)).String())
		if err == nil {
			return c, nil
		}
		if firstErr == nil {
			firstErr = err
		}
	}
	if firstErr == nil {
		firstErr = fmt.Errorf("webhook: no address for %s", host)
	}
	return nil, firstErr
}
