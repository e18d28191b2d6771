package delivery

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"syscall"
	"time"
)

// Reasons an EgressPolicy gives for refusing a destination. They appear in
// EgressRefusedError.Reason, the manager's log and its metrics; status says
// only "refused by the egress policy".
const (
	egressReasonLoopback    = "loopback"
	egressReasonLinkLocal   = "link-local"
	egressReasonMetadata    = "cloud metadata"
	egressReasonPrivate     = "private network"
	egressReasonShared      = "shared address space (CGNAT)"
	egressReasonUnspecified = "unspecified"
	egressReasonMulticast   = "multicast"
	egressReasonBroadcast   = "broadcast"
	egressReasonReserved    = "reserved"
	egressReasonDenied      = "denied by --egress-deny-cidrs"
	egressReasonInvalid     = "invalid address"
)

// defaultRefused lists the destinations the default policy refuses, in the
// order they are checked: the metadata addresses come before the ranges
// that hold them, so that each is reported as what it is.
var defaultRefused = []struct {
	prefix netip.Prefix
	reason string
}{
	// Instance metadata (and often credentials): AWS, GCP, Azure,
	// OpenStack and others at 169.254.169.254; Alibaba Cloud at
	// 100.100.100.200; Azure's wire server at 168.63.129.16; AWS's IPv6
	// endpoint fd00:ec2::254 and GCP's fd20:ce::254.
	{netip.MustParsePrefix("169.254.169.254/32"), egressReasonMetadata},
	{netip.MustParsePrefix("100.100.100.200/32"), egressReasonMetadata},
	{netip.MustParsePrefix("168.63.129.16/32"), egressReasonMetadata},
	{netip.MustParsePrefix("fd00:ec2::254/128"), egressReasonMetadata},
	{netip.MustParsePrefix("fd20:ce::254/128"), egressReasonMetadata},
	{netip.MustParsePrefix("127.0.0.0/8"), egressReasonLoopback},
	{netip.MustParsePrefix("::1/128"), egressReasonLoopback},
	{netip.MustParsePrefix("169.254.0.0/16"), egressReasonLinkLocal},
	{netip.MustParsePrefix("fe80::/10"), egressReasonLinkLocal},
	// Private networks (RFC 1918, IPv6 unique local addresses) hold a
	// cluster's Pod and Service ranges and the networks around it.
	{netip.MustParsePrefix("10.0.0.0/8"), egressReasonPrivate},
	{netip.MustParsePrefix("172.16.0.0/12"), egressReasonPrivate},
	{netip.MustParsePrefix("192.168.0.0/16"), egressReasonPrivate},
	{netip.MustParsePrefix("fc00::/7"), egressReasonPrivate},
	// Carrier-grade NAT space, which some clusters use for Pods.
	{netip.MustParsePrefix("100.64.0.0/10"), egressReasonShared},
	// "This network": a destination of 0.0.0.0 reaches the local host on
	// Linux, and the rest of 0.0.0.0/8 is never a valid destination.
	{netip.MustParsePrefix("0.0.0.0/8"), egressReasonUnspecified},
	{netip.MustParsePrefix("::/128"), egressReasonUnspecified},
	{netip.MustParsePrefix("224.0.0.0/4"), egressReasonMulticast},
	{netip.MustParsePrefix("ff00::/8"), egressReasonMulticast},
	{netip.MustParsePrefix("255.255.255.255/32"), egressReasonBroadcast},
	// The IPv4-compatible form (::a.b.c.d, deprecated) never reaches the
	// network as such; an address of it that unmapIPv4 leaves (below
	// ::1.0.0.0) is refused here.
	{netip.MustParsePrefix("::/96"), egressReasonReserved},
}

// EgressPolicy decides which destination IP addresses deliveries may connect
// to. It is operator-wide, built once from the --egress-allow-cidrs and
// --egress-deny-cidrs flags, and safe for concurrent use.
//
// The default policy, NewEgressPolicy(nil, nil), refuses:
//
//   - cloud metadata: 169.254.169.254, 100.100.100.200 (Alibaba),
//     168.63.129.16 (Azure), fd00:ec2::254 (AWS) and fd20:ce::254 (GCP);
//   - loopback: 127.0.0.0/8 and ::1;
//   - link-local: 169.254.0.0/16 and fe80::/10;
//   - private networks: 10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16 (RFC 1918)
//     and fc00::/7 (unique local), where a cluster's Pods and Services live;
//   - shared address space: 100.64.0.0/10 (CGNAT);
//   - unspecified: 0.0.0.0 (with the rest of 0.0.0.0/8, "this network") and ::;
//   - multicast: 224.0.0.0/4 and ff00::/8;
//   - broadcast: 255.255.255.255.
//
// IPv6 forms that carry an IPv4 address are judged as that address: the
// IPv4-mapped (::ffff:a.b.c.d) and IPv4-compatible (::a.b.c.d) forms, NAT64
// (64:ff9b::a.b.c.d, RFC 6052) and 6to4 (2002:aabb:ccdd::/48). Otherwise
// anyone who may create a WebhookConfig could make the manager POST to
// services inside the cluster, and read in status whether a port answered.
// Receivers in the cluster or a private network are allowed with
// --egress-allow-cidrs.
//
// Allow CIDRs widen the policy: an address in an allow CIDR is permitted even
// if a default rule refuses it. Deny CIDRs narrow it: an address in a deny
// CIDR is refused even if it is also in an allow CIDR. Deny wins over allow.
//
// The zero value and a nil *EgressPolicy apply the default policy, exactly as
// NewEgressPolicy(nil, nil) does; neither allows everything.
type EgressPolicy struct {
	allow, deny []netip.Prefix
}

// NewEgressPolicy returns the policy that applies the default rules widened
// by allowCIDRs and narrowed by denyCIDRs. Each entry is a CIDR such as
// "10.0.0.0/8" or "fd00::/8"; surrounding spaces and empty entries are
// ignored. IPv4-mapped IPv6 prefixes (::ffff:10.0.0.0/104) are treated as
// the IPv4 prefixes they map. The error names the first entry that is not a
// valid CIDR and the flag it came from.
func NewEgressPolicy(allowCIDRs, denyCIDRs []string) (*EgressPolicy, error) {
	allow, err := parseEgressCIDRs("--egress-allow-cidrs", allowCIDRs)
	if err != nil {
		return nil, err
	}
	deny, err := parseEgressCIDRs("--egress-deny-cidrs", denyCIDRs)
	if err != nil {
		return nil, err
	}
	return &EgressPolicy{allow: allow, deny: deny}, nil
}

func parseEgressCIDRs(flag string, cidrs []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, s := range cidrs {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return nil, fmt.Errorf("invalid %s entry %q: %w", flag, s, err)
		}
		if a := p.Addr(); a.Is4In6() && p.Bits() >= 96 {
			p = netip.PrefixFrom(a.Unmap(), p.Bits()-96)
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

// Check returns nil if the policy allows connecting to ip, and otherwise an
// *EgressRefusedError saying why not. An IPv6 zone is ignored and an
// IPv4-mapped IPv6 address is judged as the IPv4 address it maps. The zero
// netip.Addr is refused.
func (p *EgressPolicy) Check(ip netip.Addr) error {
	if !ip.IsValid() {
		return &EgressRefusedError{IP: ip, Reason: egressReasonInvalid}
	}
	// Prefix.Contains never matches an address with a zone, so drop it.
	a := unmapIPv4(ip.WithZone(""))
	var allow, deny []netip.Prefix
	if p != nil {
		allow, deny = p.allow, p.deny
	}
	for _, pfx := range deny {
		if pfx.Contains(a) {
			return &EgressRefusedError{IP: ip, Reason: egressReasonDenied}
		}
	}
	for _, pfx := range allow {
		if pfx.Contains(a) {
			return nil
		}
	}
	for _, r := range defaultRefused {
		if r.prefix.Contains(a) {
			return &EgressRefusedError{IP: ip, Reason: r.reason}
		}
	}
	return nil
}

// nat64 is the well-known NAT64 prefix (RFC 6052): 64:ff9b::a.b.c.d reaches
// a.b.c.d through a NAT64 gateway.
var nat64 = netip.MustParsePrefix("64:ff9b::/96")

// sixToFour is the 6to4 prefix (RFC 3056): 2002:aabb:ccdd::/48 is routed to
// the IPv4 address aa.bb.cc.dd.
var sixToFour = netip.MustParsePrefix("2002::/16")

// unmapIPv4 returns the IPv4 address an IPv6 address carries, in the
// IPv4-mapped, IPv4-compatible, NAT64 and 6to4 forms, and a unchanged
// otherwise. An IPv4-compatible address is ::a.b.c.d with a.b.c.d at least
// 1.0.0.0 (so :: and ::1 stay themselves).
func unmapIPv4(a netip.Addr) netip.Addr {
	if !a.Is6() {
		return a
	}
	if a.Is4In6() {
		return a.Unmap()
	}
	b := a.As16()
	switch {
	case nat64.Contains(a):
		return netip.AddrFrom4([4]byte(b[12:16]))
	case sixToFour.Contains(a):
		return netip.AddrFrom4([4]byte(b[2:6]))
	case b[0]|b[1]|b[2]|b[3]|b[4]|b[5]|b[6]|b[7]|b[8]|b[9]|b[10]|b[11] == 0 && b[12] != 0:
		return netip.AddrFrom4([4]byte(b[12:16]))
	}
	return a
}

// Control returns a function for net.Dialer.ControlContext that refuses
// connections to addresses the policy refuses. The dialer calls it with the
// resolved IP address of each connection attempt, after DNS resolution and
// before connecting, so a hostname that resolves (or is rebound) to a refused
// address cannot bypass the policy. The function returns an
// *EgressRefusedError for a refused address, and an error for an address it
// cannot parse; the dialer then does not connect.
func (p *EgressPolicy) Control() func(ctx context.Context, network, address string, c syscall.RawConn) error {
	return func(_ context.Context, network, address string, _ syscall.RawConn) error {
		ap, err := netip.ParseAddrPort(address)
		if err != nil {
			return fmt.Errorf("egress policy cannot check %s address %q: %w", network, address, err)
		}
		return p.Check(ap.Addr())
	}
}

// EgressRefusedError reports a destination refused by an EgressPolicy.
type EgressRefusedError struct {
	// IP is the refused address, as it was dialled.
	IP netip.Addr
	// Reason names the rule that refused it: "loopback", "link-local",
	// "cloud metadata", "private network", "shared address space (CGNAT)",
	// "unspecified", "multicast", "broadcast", "reserved",
	// "denied by --egress-deny-cidrs" or "invalid address".
	Reason string
}

// Error describes the refusal and, unless a deny CIDR caused it, how to
// allow the destination.
func (e *EgressRefusedError) Error() string {
	if e.Reason == egressReasonDenied || e.Reason == egressReasonInvalid {
		return fmt.Sprintf("destination %s refused by the egress policy (%s)", e.IP, e.Reason)
	}
	return fmt.Sprintf("destination %s refused by the egress policy (%s); allow it with --egress-allow-cidrs", e.IP, e.Reason)
}

// IsEgressRefused reports whether err is, or wraps, an *EgressRefusedError,
// and returns it. Errors from an http.Client built by NewHTTPClient carry it
// inside a *url.Error and a *net.OpError.
func IsEgressRefused(err error) (*EgressRefusedError, bool) {
	var e *EgressRefusedError
	if errors.As(err, &e) {
		return e, true
	}
	return nil, false
}

// NewHTTPClient returns the one http.Client all deliveries share. Every
// connection it opens is checked against p at connect time (a nil p applies
// the default policy). It never uses a proxy from the environment, since the
// policy must judge the real destination, and it never follows redirects: a
// 3xx response is returned as it is. It has no overall timeout; each attempt
// bounds itself, response headers included, with its context.
func NewHTTPClient(p *EgressPolicy) *http.Client {
	dialer := &net.Dialer{
		Timeout:        10 * time.Second,
		KeepAlive:      30 * time.Second,
		ControlContext: p.Control(),
	}
	transport := &http.Transport{
		Proxy:                 nil,
		DialContext:           dialer.DialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          1024,
		MaxIdleConnsPerHost:   256,
		MaxConnsPerHost:       0,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ExpectContinueTimeout: 0,
		// Response bodies are read only to reuse the connection (up to
		// MaxResponseBytes) and then dropped: asking for gzip would only
		// make receivers compress and the transport decompress them.
		DisableCompression: true,
	}
	return &http.Client{
		Transport: transport,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
}
