package capabilities

import (
	"fmt"
	"slices"
	"strings"
)

// Limits on what a token may carry; they bound token size and verify cost.
const (
	maxCapabilities = 64  // capabilities in one token
	maxOps          = 32  // operations in one capability
	maxResourceLen  = 256 // bytes of one resource
	maxOpLen        = 64  // bytes of one operation name
)

// Capability grants the operations Ops on Resource. Resource is one of
// key:<id>, cert:<id>, identity:device, identity:module:<name>, tpm:keys,
// tpm:authkey, optionally ending in "*" to mean every resource that starts
// with what precedes the "*" (key:*, identity:module:*, key:edge-*).
type Capability struct {
	Resource string   `json:"res"`
	Ops      []string `json:"ops"`
}

// Covers reports whether c grants op on the concrete resource: some
// capability names resource exactly, or is "p*" with resource starting with p,
// and lists op.
func (c *Claims) Covers(resource, op string) bool {
	for i := range c.Capabilities {
		cp := &c.Capabilities[i]
		if resourceMatches(cp.Resource, resource) && slices.Contains(cp.Ops, op) {
			return true
		}
	}
	return false
}

// resourceMatches reports whether the capability resource pattern covers res.
func resourceMatches(pattern, res string) bool {
	if p, ok := strings.CutSuffix(pattern, "*"); ok {
		return strings.HasPrefix(res, p)
	}
	return pattern == res
}

// Within reports whether child grants nothing that parent does not: every
// (resource, op) pair of child is covered by a parent capability listing op.
// A child wildcard "p*" is within a parent "q*" only if p starts with q, and
// within an exact parent resource never; an exact child resource is within
// a parent that names it or whose wildcard covers it.
func Within(child, parent []Capability) bool {
	for _, c := range child {
		for _, op := range c.Ops {
			if !pairWithin(c.Resource, op, parent) {
				return false
			}
		}
	}
	return true
}

func pairWithin(res, op string, parent []Capability) bool {
	cp, childWild := strings.CutSuffix(res, "*")
	for _, p := range parent {
		if !slices.Contains(p.Ops, op) {
			continue
		}
		if pp, parentWild := strings.CutSuffix(p.Resource, "*"); parentWild {
			if strings.HasPrefix(cp, pp) {
				return true
			}
		} else if !childWild && res == p.Resource {
			return true
		}
	}
	return false
}

// ValidateResource checks resource against the resource syntax (see
// Capability); the error wraps ErrInvalidRequest.
func ValidateResource(resource string) error {
	if err := parseResource(resource); err != nil {
		return fmt.Errorf("%w: resource %q: %w", ErrInvalidRequest, truncate(resource), err)
	}
	return nil
}

// parseResource checks the syntax of a resource or resource pattern.
// An ID or module name is printable ASCII without spaces; "*" may appear only
// at the end, where it makes the resource a prefix pattern.
func parseResource(s string) error {
	if s == "" {
		return errSyntax("empty")
	}
	if len(s) > maxResourceLen {
		return errSyntax(fmt.Sprintf("longer than %d bytes", maxResourceLen))
	}
	base, wild := strings.CutSuffix(s, "*")
	for i := 0; i < len(base); i++ {
		if c := base[i]; c <= ' ' || c > '~' || c == '*' {
			return errSyntax(`only printable ASCII without spaces, and "*" only at the end`)
		}
	}
	kind, rest, ok := strings.Cut(base, ":")
	if !ok {
		return errSyntax(`want <kind>:…, kind one of key, cert, identity, tpm`)
	}
	switch kind {
	case "key", "cert":
		if rest == "" && !wild {
			return errSyntax("missing ID after " + kind + ":")
		}
		return nil
	case "identity":
		if name, ok := strings.CutPrefix(rest, "module:"); ok && (name != "" || wild) {
			return nil
		}
		if rest == "device" || wild && (strings.HasPrefix("device", rest) || strings.HasPrefix("module:", rest)) {
			return nil
		}
		return errSyntax("want identity:device or identity:module:<name>")
	case "tpm":
		if rest == "keys" || rest == "authkey" ||
			wild && (strings.HasPrefix("keys", rest) || strings.HasPrefix("authkey", rest)) {
			return nil
		}
		return errSyntax("want tpm:keys or tpm:authkey")
	}
	return errSyntax(fmt.Sprintf("unknown kind %q, want key, cert, identity or tpm", kind))
}

type errSyntax string

func (e errSyntax) Error() string { return string(e) }

// ValidateCapabilities checks the syntax of a requested scope; the error wraps
// ErrInvalidRequest.
func ValidateCapabilities(caps []Capability) error {
	if len(caps) == 0 {
		return fmt.Errorf("%w: no capabilities requested", ErrInvalidRequest)
	}
	if len(caps) > maxCapabilities {
		return fmt.Errorf("%w: %d capabilities, at most %d", ErrInvalidRequest, len(caps), maxCapabilities)
	}
	for _, c := range caps {
		if err := ValidateResource(c.Resource); err != nil {
			return err
		}
		if len(c.Ops) == 0 {
			return fmt.Errorf("%w: resource %q: no operations", ErrInvalidRequest, c.Resource)
		}
		if len(c.Ops) > maxOps {
			return fmt.Errorf("%w: resource %q: %d operations, at most %d", ErrInvalidRequest, c.Resource, len(c.Ops), maxOps)
		}
		for _, op := range c.Ops {
			if !validOp(op) {
				return fmt.Errorf("%w: resource %q: operation %q: want 1 to %d of a-z, 0-9, '_', '-', '.'",
					ErrInvalidRequest, c.Resource, truncate(op), maxOpLen)
			}
		}
	}
	return nil
}

// validOp reports whether op looks like a service operation name (sign,
// encrypt, reprovision, import_auth_key…).
func validOp(op string) bool {
	if op == "" || len(op) > maxOpLen {
		return false
	}
	for i := 0; i < len(op); i++ {
		if c := op[i]; !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '_' || c == '-' || c == '.') {
			return false
		}
	}
	return true
}

// truncate shortens caller input quoted back in error messages.
func truncate(s string) string {
	const n = 80
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// cloneCapabilities deep-copies caps so that a caller's later changes to its
// slices cannot alter claims the Authority holds.
func cloneCapabilities(caps []Capability) []Capability {
	out := make([]Capability, len(caps))
	for i, c := range caps {
		out[i] = Capability{Resource: c.Resource, Ops: slices.Clone(c.Ops)}
	}
	return out
}
