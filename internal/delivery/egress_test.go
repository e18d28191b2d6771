package delivery

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
)

func TestEgressPolicyCheck(t *testing.T) {
	tests := []struct {
		name   string
		allow  []string
		deny   []string
		ip     string
		reason string // "" means allowed
	}{
		{name: "loopback 127.0.0.1 is refused", ip: "127.0.0.1", reason: "loopback"},
		{name: "anywhere in 127.0.0.0/8 is loopback", ip: "127.1.2.3", reason: "loopback"},
		{name: "IPv6 loopback is refused", ip: "::1", reason: "loopback"},
		{name: "IPv4-mapped loopback is refused", ip: "::ffff:127.0.0.1", reason: "loopback"},
		{name: "the cloud metadata address is refused as metadata", ip: "169.254.169.254", reason: "cloud metadata"},
		{name: "the IPv4-mapped cloud metadata address is refused as metadata", ip: "::ffff:169.254.169.254", reason: "cloud metadata"},
		{name: "the AWS IPv6 metadata address is refused as metadata", ip: "fd00:ec2::254", reason: "cloud metadata"},
		{name: "IPv4 link-local is refused", ip: "169.254.1.1", reason: "link-local"},
		{name: "IPv6 link-local is refused", ip: "fe80::1", reason: "link-local"},
		{name: "IPv6 link-local with a zone is refused", ip: "fe80::1%eth0", reason: "link-local"},
		{name: "IPv4 unspecified is refused", ip: "0.0.0.0", reason: "unspecified"},
		{name: "IPv4-mapped unspecified is refused", ip: "::ffff:0.0.0.0", reason: "unspecified"},
		{name: "IPv6 unspecified is refused", ip: "::", reason: "unspecified"},
		{name: "IPv4 multicast is refused", ip: "224.0.0.1", reason: "multicast"},
		{name: "IPv6 multicast is refused", ip: "ff02::1", reason: "multicast"},
		{name: "broadcast is refused", ip: "255.255.255.255", reason: "broadcast"},
		{name: "a public IPv4 address is allowed", ip: "93.184.216.34"},
		{name: "a public IPv6 address is allowed", ip: "2606:2800:220:1:248:1893:25c8:1946"},
		{name: "RFC 1918 10/8 (Pods, Services) is refused", ip: "10.1.2.3", reason: "private network"},
		{name: "RFC 1918 172.16/12 is refused", ip: "172.31.255.254", reason: "private network"},
		{name: "RFC 1918 192.168/16 is refused", ip: "192.168.1.1", reason: "private network"},
		{name: "an IPv6 unique local address is refused", ip: "fd00::1", reason: "private network"},
		{name: "fc00::/7 is unique local too", ip: "fc12::1", reason: "private network"},
		{name: "CGNAT 100.64/10 is refused", ip: "100.64.0.1", reason: "shared address space (CGNAT)"},
		{name: "just outside CGNAT is allowed", ip: "100.128.0.1"},
		{name: "just outside 172.16/12 is allowed", ip: "172.32.0.1"},
		{name: "Alibaba's metadata address is refused as metadata", ip: "100.100.100.200", reason: "cloud metadata"},
		{name: "Azure's wire server is refused as metadata", ip: "168.63.129.16", reason: "cloud metadata"},
		{name: "GCP's IPv6 metadata address is refused as metadata", ip: "fd20:ce::254", reason: "cloud metadata"},
		{name: "IPv4-compatible loopback is refused", ip: "::7f00:1", reason: "loopback"},
		{name: "IPv4-compatible metadata is refused", ip: "::a9fe:a9fe", reason: "cloud metadata"},
		{name: "IPv4-compatible private is refused", ip: "::10.0.0.1", reason: "private network"},
		{name: "the rest of ::/96 is reserved", ip: "::2", reason: "reserved"},
		{name: "NAT64 of loopback is refused", ip: "64:ff9b::7f00:1", reason: "loopback"},
		{name: "NAT64 of metadata is refused", ip: "64:ff9b::169.254.169.254", reason: "cloud metadata"},
		{name: "NAT64 of a public address is allowed", ip: "64:ff9b::93.184.216.34"},
		{name: "6to4 of loopback is refused", ip: "2002:7f00:1::1", reason: "loopback"},
		{name: "6to4 of a private address is refused", ip: "2002:a00:1::", reason: "private network"},
		{name: "an allow CIDR permits the cluster's range", allow: []string{"10.96.0.0/12"}, ip: "10.96.0.10"},
		{name: "an allow CIDR permits its NAT64 form", allow: []string{"10.96.0.0/12"}, ip: "64:ff9b::10.96.0.10"},
		{name: "an allow CIDR permits only the range it names", allow: []string{"10.96.0.0/12"}, ip: "10.0.0.1", reason: "private network"},
		{name: "an allow CIDR permits loopback", allow: []string{"127.0.0.0/8"}, ip: "127.0.0.1"},
		{name: "an allow CIDR permits IPv4-mapped loopback", allow: []string{"127.0.0.0/8"}, ip: "::ffff:127.0.0.1"},
		{name: "an allow CIDR permits only what it covers", allow: []string{"127.0.0.0/8"}, ip: "::1", reason: "loopback"},
		{name: "an allow CIDR can permit the metadata address", allow: []string{"169.254.169.254/32"}, ip: "169.254.169.254"},
		{name: "a deny CIDR refuses a private address", deny: []string{"10.0.0.0/8"}, ip: "10.1.2.3", reason: "denied by --egress-deny-cidrs"},
		{name: "a deny CIDR leaves other addresses alone", deny: []string{"10.0.0.0/8"}, ip: "93.184.216.34"},
		{name: "a deny CIDR refuses the IPv4-mapped form too", deny: []string{"10.0.0.0/8"}, ip: "::ffff:10.1.2.3", reason: "denied by --egress-deny-cidrs"},
		{name: "an IPv4-mapped deny CIDR refuses the IPv4 address", deny: []string{"::ffff:10.0.0.0/104"}, ip: "10.1.2.3", reason: "denied by --egress-deny-cidrs"},
		{name: "deny wins over allow for the same address", allow: []string{"10.0.0.0/8"}, deny: []string{"10.1.0.0/16"}, ip: "10.1.2.3", reason: "denied by --egress-deny-cidrs"},
		{name: "deny wins over allow for loopback", allow: []string{"127.0.0.0/8"}, deny: []string{"127.0.0.1/32"}, ip: "127.0.0.1", reason: "denied by --egress-deny-cidrs"},
		{name: "spaces and empty entries in the lists are ignored", allow: []string{" 127.0.0.0/8 ", ""}, ip: "127.0.0.1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := NewEgressPolicy(tt.allow, tt.deny)
			if err != nil {
				t.Fatalf("NewEgressPolicy: %v", err)
			}
			ip := netip.MustParseAddr(tt.ip)
			err = p.Check(ip)
			if tt.reason == "" {
				if err != nil {
					t.Fatalf("Check(%s) = %v, want allowed", ip, err)
				}
				return
			}
			refused, ok := IsEgressRefused(err)
			if !ok {
				t.Fatalf("Check(%s) = %v, want an *EgressRefusedError", ip, err)
			}
			if refused.Reason != tt.reason {
				t.Errorf("Check(%s) reason = %q, want %q", ip, refused.Reason, tt.reason)
			}
			if refused.IP != ip {
				t.Errorf("Check(%s) IP = %s, want the address as given", ip, refused.IP)
			}
		})
	}
}

func TestEgressPolicyNilAndZeroApplyTheDefault(t *testing.T) {
	for name, p := range map[string]*EgressPolicy{
		"a nil policy refuses loopback":       nil,
		"a zero policy refuses loopback":      {},
		"the default policy refuses loopback": mustEgressPolicy(t, nil),
	} {
		t.Run(name, func(t *testing.T) {
			if _, ok := IsEgressRefused(p.Check(netip.MustParseAddr("127.0.0.1"))); !ok {
				t.Error("loopback allowed")
			}
			if err := p.Check(netip.MustParseAddr("93.184.216.34")); err != nil {
				t.Errorf("public address refused: %v", err)
			}
			if _, ok := IsEgressRefused(p.Check(netip.Addr{})); !ok {
				t.Error("the zero Addr allowed")
			}
		})
	}
}

func TestEgressNewPolicyErrors(t *testing.T) {
	tests := []struct {
		name  string
		allow []string
		deny  []string
		want  []string // substrings of the error
	}{
		{name: "a bare word in the allow list is named", allow: []string{"10.0.0.0/8", "not-a-cidr"}, want: []string{`"not-a-cidr"`, "--egress-allow-cidrs"}},
		{name: "a bare IP in the deny list is named", deny: []string{"10.1.2.3"}, want: []string{`"10.1.2.3"`, "--egress-deny-cidrs"}},
		{name: "an out-of-range prefix length is named", deny: []string{"10.0.0.0/33"}, want: []string{`"10.0.0.0/33"`, "--egress-deny-cidrs"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := NewEgressPolicy(tt.allow, tt.deny)
			if err == nil {
				t.Fatalf("NewEgressPolicy = %v, nil; want an error", p)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

func TestEgressRefusedErrorText(t *testing.T) {
	tests := []struct {
		name string
		err  *EgressRefusedError
		want string
	}{
		{
			name: "a default rule suggests the allow flag",
			err:  &EgressRefusedError{IP: netip.MustParseAddr("127.0.0.1"), Reason: "loopback"},
			want: "destination 127.0.0.1 refused by the egress policy (loopback); allow it with --egress-allow-cidrs",
		},
		{
			name: "a deny CIDR does not suggest the allow flag, which cannot override it",
			err:  &EgressRefusedError{IP: netip.MustParseAddr("10.1.2.3"), Reason: "denied by --egress-deny-cidrs"},
			want: "destination 10.1.2.3 refused by the egress policy (denied by --egress-deny-cidrs)",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.err.Error(); got != tt.want {
				t.Errorf("Error() = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestEgressIsEgressRefused(t *testing.T) {
	refused := &EgressRefusedError{IP: netip.MustParseAddr("::1"), Reason: "loopback"}
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{name: "nil is not a refusal", err: nil},
		{name: "an unrelated error is not a refusal", err: errors.New("connection reset")},
		{name: "the error itself is a refusal", err: refused, want: true},
		{name: "a refusal wrapped as the HTTP client wraps it is found", want: true, err: &url.Error{
			Op: "Post", URL: "http://localhost/", Err: &net.OpError{Op: "dial", Net: "tcp", Err: refused},
		}},
		{name: "a refusal wrapped with %w is found", err: fmt.Errorf("attempt 3: %w", refused), want: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := IsEgressRefused(tt.err)
			if ok != tt.want {
				t.Fatalf("IsEgressRefused(%v) ok = %v, want %v", tt.err, ok, tt.want)
			}
			if ok && got != refused {
				t.Errorf("IsEgressRefused returned %v, want the wrapped error", got)
			}
		})
	}
}

func TestEgressControl(t *testing.T) {
	control := mustEgressPolicy(t, nil).Control()
	tests := []struct {
		name      string
		address   string
		wantErr   bool
		wantRefus bool
	}{
		{name: "a public IPv4 address and port is allowed", address: "93.184.216.34:443"},
		{name: "a public IPv6 address and port is allowed", address: "[2606:2800:220:1:248:1893:25c8:1946]:443"},
		{name: "loopback is refused", address: "127.0.0.1:8080", wantErr: true, wantRefus: true},
		{name: "link-local with a zone is refused", address: "[fe80::1%eth0]:80", wantErr: true, wantRefus: true},
		{name: "an address that cannot be parsed is refused, not allowed", address: "localhost:80", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := control(context.Background(), "tcp", tt.address, nil)
			if (err != nil) != tt.wantErr {
				t.Fatalf("Control(%q) = %v, want error %v", tt.address, err, tt.wantErr)
			}
			if _, ok := IsEgressRefused(err); ok != tt.wantRefus {
				t.Errorf("Control(%q) = %v, want an *EgressRefusedError: %v", tt.address, err, tt.wantRefus)
			}
		})
	}
}

// countingServer starts a server on 127.0.0.1 that answers 204 and counts
// the requests it sees.
func countingServer(t *testing.T) (*httptest.Server, *atomic.Int64) {
	t.Helper()
	var n atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		n.Add(1)
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(srv.Close)
	return srv, &n
}

func TestEgressHTTPClientConnections(t *testing.T) {
	tests := []struct {
		name   string
		allow  []string
		host   string // replaces the server's host; "" keeps 127.0.0.1
		reason string // "" means the request must get through
	}{
		{name: "the default policy refuses a loopback server before connecting", reason: "loopback"},
		{name: "allowing 127.0.0.0/8 lets the request through", allow: []string{"127.0.0.0/8"}},
		{name: "a hostname resolving to loopback is refused on the resolved address", host: "localhost", reason: "loopback"},
		{name: "allowing loopback lets a hostname resolving to it through", allow: []string{"127.0.0.0/8", "::1/128"}, host: "localhost"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv, seen := countingServer(t)
			client := NewHTTPClient(mustEgressPolicy(t, tt.allow))
			t.Cleanup(client.CloseIdleConnections)

			u, err := url.Parse(srv.URL)
			if err != nil {
				t.Fatal(err)
			}
			if tt.host != "" {
				u.Host = net.JoinHostPort(tt.host, u.Port())
			}
			resp, err := client.Post(u.String(), "application/json", strings.NewReader(`{}`))
			if tt.reason == "" {
				if err != nil {
					t.Fatalf("POST %s: %v", u, err)
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				_ = resp.Body.Close()
				if resp.StatusCode != http.StatusNoContent {
					t.Errorf("status = %d, want 204", resp.StatusCode)
				}
				if got := seen.Load(); got != 1 {
					t.Errorf("server saw %d requests, want 1", got)
				}
				return
			}
			if err == nil {
				_ = resp.Body.Close()
				t.Fatalf("POST %s succeeded with status %d, want a refusal", u, resp.StatusCode)
			}
			refused, ok := IsEgressRefused(err)
			if !ok {
				t.Fatalf("POST %s: %v, want an *EgressRefusedError", u, err)
			}
			if refused.Reason != tt.reason {
				t.Errorf("reason = %q, want %q", refused.Reason, tt.reason)
			}
			if got := seen.Load(); got != 0 {
				t.Errorf("server saw %d requests, want none", got)
			}
		})
	}
}

func TestEgressHTTPClientDoesNotFollowRedirects(t *testing.T) {
	var target atomic.Int64
	mux := http.NewServeMux()
	mux.HandleFunc("/hook", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/elsewhere", http.StatusFound)
	})
	mux.HandleFunc("/elsewhere", func(w http.ResponseWriter, _ *http.Request) {
		target.Add(1)
		w.WriteHeader(http.StatusOK)
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	client := NewHTTPClient(mustEgressPolicy(t, []string{"127.0.0.0/8"}))
	t.Cleanup(client.CloseIdleConnections)

	resp, err := client.Post(srv.URL+"/hook", "application/json", strings.NewReader(`{}`))
	if err != nil {
		t.Fatalf("POST: %v", err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusFound {
		t.Errorf("status = %d, want the 302 itself", resp.StatusCode)
	}
	if loc := resp.Header.Get("Location"); loc != "/elsewhere" {
		t.Errorf("Location = %q, want /elsewhere", loc)
	}
	if got := target.Load(); got != 0 {
		t.Errorf("redirect target saw %d requests, want none", got)
	}
}

func TestEgressHTTPClientSettings(t *testing.T) {
	// The proxy is checked here rather than with a real proxy because Go
	// never proxies requests to loopback, the only destination a test has.
	client := NewHTTPClient(nil)
	tr, ok := client.Transport.(*http.Transport)
	if !ok {
		t.Fatalf("Transport is %T, want *http.Transport", client.Transport)
	}
	checks := []struct {
		name string
		ok   bool
	}{
		{"no proxy, so the policy judges the real destination", tr.Proxy == nil},
		{"a dialer is set, so the policy applies", tr.DialContext != nil},
		{"HTTP/2 is attempted despite the custom dialer", tr.ForceAttemptHTTP2},
		{"idle connections are pooled for many endpoints", tr.MaxIdleConns == 1024 && tr.MaxIdleConnsPerHost == 256},
		{"connections per host are not limited by the transport", tr.MaxConnsPerHost == 0},
		{"response headers are bounded by the attempt context only", tr.ResponseHeaderTimeout == 0 && client.Timeout == 0},
		{"redirects are not followed", client.CheckRedirect != nil && errors.Is(client.CheckRedirect(nil, nil), http.ErrUseLastResponse)},
	}
	for _, c := range checks {
		if !c.ok {
			t.Errorf("want %s", c.name)
		}
	}
}

func mustEgressPolicy(t testing.TB, allow []string) *EgressPolicy {
	t.Helper()
	p, err := NewEgressPolicy(allow, nil)
	if err != nil {
		t.Fatalf("NewEgressPolicy(%q, nil): %v", allow, err)
	}
	return p
}
