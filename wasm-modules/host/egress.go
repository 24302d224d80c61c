package host

import (
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"

	"golang.org/x/net/idna"
)

// egressRule is one entry of a module's egress allowlist.
type egressRule struct {
	host     string // lower case, no trailing dot; for a wildcard, the suffix after "*."
	wildcard bool   // "*.example.org": any name ending in ".example.org" (not example.org itself)
	ip       net.IP // set when host is an IP literal
	port     string // "" means any port
}

// parseEgress parses allowlist entries: host, host:port, *.domain[:port],
// an IPv4 literal, an IPv6 literal bare or in brackets ([v6]:port).
func parseEgress(entries []string) ([]egressRule, error) {
	out := make([]egressRule, 0, len(entries))
	for _, s := range entries {
		r, err := parseEgressRule(s)
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, nil
}

func parseEgressRule(s string) (egressRule, error) {
	host, port := s, ""
	if strings.HasPrefix(s, "[") || strings.Count(s, ":") == 1 {
		h, p, err := net.SplitHostPort(s)
		if err != nil {
			return egressRule{}, fmt.Errorf("egress %q: want host or host:port: %w", s, err)
		}
		host, port = h, p
	}
	if port != "" {
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return egressRule{}, fmt.Errorf("egress %q: port must be 1–65535", s)
		}
	}
	r := egressRule{port: port}
	if ip := net.ParseIP(host); ip != nil {
		r.ip, r.host = ip, ip.String()
		return r, nil
	}
	if strings.Contains(host, ":") {
		return egressRule{}, fmt.Errorf("egress %q: want host or host:port", s)
	}
	host = strings.TrimSuffix(strings.ToLower(host), ".")
	if rest, ok := strings.CutPrefix(host, "*."); ok {
		r.wildcard, host = true, rest
	}
	if h, ok := dialHost(host); ok {
		host = h
	}
	if host == "" || strings.ContainsAny(host, "*/@ \t") {
		return egressRule{}, fmt.Errorf("egress %q: invalid host", s)
	}
	r.host = host
	return r, nil
}

// allows reports whether host:port (from a URL) matches the rule.
func (r egressRule) allows(host, port string) bool {
	if r.port != "" && r.port != port {
		return false
	}
	if r.ip != nil {
		ip := net.ParseIP(host)
		return ip != nil && ip.Equal(r.ip)
	}
	host = strings.TrimSuffix(strings.ToLower(host), ".")
	if r.wildcard {
		return strings.HasSuffix(host, "."+r.host)
	}
	return host == r.host
}

// dialHost is the name net/http dials for a URL's host name: a non-ASCII
// name in IDNA's lookup form (as net/http converts it), in lower case,
// without the trailing dot of an absolute name. ok is false for a name
// IDNA refuses.
func dialHost(host string) (_ string, ok bool) {
	for i := 0; i < len(host); i++ {
		if host[i] >= 0x80 {
			a, err := idna.Lookup.ToASCII(host)
			if err != nil {
				return "", false
			}
			host = a
			break
		}
	}
	return strings.TrimSuffix(strings.ToLower(host), "."), true
}

// egressAllowed reports whether a request to u is in the allowlist, and
// the "host:port" the policy sees (url:<host:port>). Both are about the
// host net/http dials: a policy rule on url:h:p must not be escaped by
// another spelling of h (a trailing dot, an IDNA-equivalent form).
func egressAllowed(rules []egressRule, u *url.URL) (bool, string) {
	host, port := u.Hostname(), u.Port()
	if port == "" {
		port = "443"
		if u.Scheme == "http" {
			port = "80"
		}
	}
	host, ok := dialHost(host)
	if !ok {
		return false, net.JoinHostPort(strings.ToLower(u.Hostname()), port)
	}
	hp := net.JoinHostPort(host, port)
	for _, r := range rules {
		if r.allows(host, port) {
			return true, hp
		}
	}
	return false, hp
}
