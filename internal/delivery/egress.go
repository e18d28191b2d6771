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
// EgressRefusedError.Reason and so in the error text shown on the resource.
const (
	egressReasonLoopback    = "loopback"
	egressReasonLinkLocal   = "link-local"
	egressReasonMetadata    = "cloud metadata"
	egressReasonUnspecified = "unspecified"
	egressReasonMulticast   = "multicast"
	egressReasonBroadcast   = "broadcast"
	egressReasonDenied      = "denied by --egress-deny-cidrs"
	egressReasonInvalid     = "invalid address"
)

// defaultRefused lists the destinations the default policy refuses, in the
// order they are checked: the metadata addresses come before link-local so
// that 169.254.169.254 is reported as what it is.
var defaultRefused = []struct {
	prefix netip.Prefix
	reason string
}{
	// AWS, GCP, Azure, OpenStack and others serve instance metadata (and
	// often credentials) here.
	{netip.MustParsePrefix("169.254.169.254/32"), egressReasonMetadata},
	// AWS's IPv6 metadata endpoint: a unique local address, not link-local,
	// so it needs its own rule.
	{netip.MustParsePrefix("fd00:ec2::254/128"), egressReasonMetadata},
	{netip.MustParsePrefix("127.0.0.0/8"), egressReasonLoopback},
	{netip.MustParsePrefix("::1/128"), egressReasonLoopback},
	{netip.MustParsePrefix("169.254.0.0/16"), egressReasonLinkLocal},
	{netip.MustParsePrefix("fe80::/10"), egressReasonLinkLocal},
	// "This network": a destination of 0.0.0.0 reaches the local host on
	// Linux, and the rest of 0.0.0.0/8 is never a valid destination.
	{netip.MustParsePrefix("0.0.0.0/8"), egressReasonUnspecified},
	{netip.MustParsePrefix("::/128"), egressReasonUnspecified},
	{netip.MustParsePrefix("224.0.0.0/4"), egressReasonMulticast},
	{netip.MustParsePrefix("ff00::/8"), egressReasonMulticast},
	{netip.MustParsePrefix("255.255.255.255/32"), egressReasonBroadcast},
}

// EgressPolicy decides which destination IP addresses deliveries may connect
// to. It is operator-wide, built once from the --egress-allow-cidrs and
// --egress-deny-cidrs flags, and safe for concurrent use.
//
// The default policy, NewEgressPolicy(nil, nil), refuses:
//
//   - loopback: 127.0.0.0/8 and ::1;
//   - cloud metadata: 169.254.169.254 and fd00:ec2::254;
//   - link-local: 169.254.0.0/16 and fe80::/10;
//   - unspecified: 0.0.0.0 (with the rest of 0.0.0.0/8, "this network") and ::;
//   - multicast: 224.0.0.0/4 and ff00::/8;
//   - broadcast: 255.255.255.255;
//
// and the IPv4-mapped IPv6 form (::ffff:a.b.c.d) of each of those. Everything
// else is allowed, including the private ranges of RFC 1918 (10.0.0.0/8,
// 172.16.0.0/12, 192.168.0.0/16) and IPv6 unique local addresses: receivers
// running in the same cluster or network are common. Narrow the policy with
// deny CIDRs to keep deliveries off those ranges.
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
	a := ip.WithZone("").Unmap()
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
	// "cloud metadata", "unspecified", "multicast", "broadcast",
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
