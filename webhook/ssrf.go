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

//go:generate go run ./internal/ssrfgen

// specialPrefix is a row of the generated table (ssrf_table.go).
type specialPrefix struct {
	prefix  netip.Prefix
	allowed bool // globally reachable and forwardable
}

var (
	nat64         = netip.MustParsePrefix("64:ff9b::/96")
	sixToFour     = netip.MustParsePrefix("2002::/16")
	globalUnicast = netip.MustParsePrefix("2000::/3")
)

// IsPublicAddr reports whether the SSRF guard lets the sender connect to a.
// It looks through IPv4-mapped, NAT64 (64:ff9b::/96) and 6to4 (2002::/16)
// IPv6 forms to the IPv4 address inside, then consults a table generated
// from IANA's IPv4 and IPv6 Special-Purpose Address Registries: an address
// in a block the registry does not mark globally reachable and forwardable
// is refused (loopback, private, link-local, CGNAT, documentation,
// benchmarking, reserved, SRv6 SIDs, the deprecated 6to4 relay anycast
// block, ...), the most specific block deciding. Multicast, the deprecated
// IPv4-compatible and site-local forms and IPv6 outside 2000::/3 (the only
// space IANA allocates for global unicast) are refused too.
func IsPublicAddr(a netip.Addr) bool {
	a = a.Unmap()
	if !a.IsValid() || a.Zone() != "" {
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
	best := -1
	for i, p := range specialPrefixes {
		if p.prefix.Contains(a) && (best < 0 || p.prefix.Bits() > specialPrefixes[best].prefix.Bits()) {
			best = i
		}
	}
	if best >= 0 {
		return specialPrefixes[best].allowed
	}
	return a.Is4() || globalUnicast.Contains(a)
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
