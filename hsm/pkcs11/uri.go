// Package pkcs11 is Warden's hsm.Backend over a PKCS#11 token (an HSM, a
// TPM through tpm2-pkcs11, SoftHSM2…), reached through a vendor library that
// is loaded with dlopen.
//
// Locations are PKCS#11 URIs (RFC 7512, the subset aziot understands): the
// token is named by slot-id or token label, the key by object=<label>, and the
// user PIN by the pin-value query attribute, for example
//
//	pkcs11:slot-id=0;object=local%2Dca?pin-value=1234
//	pkcs11:token=Key%20pair;object=device-id?pin-value=1234
package pkcs11

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"
)

// URI is a parsed PKCS#11 URI: the token (by slot ID or, when there is no
// slot-id, by token label), the object label and the user PIN. Other RFC 7512
// attributes are not kept.
type URI struct {
	// HasSlotID says the token is named by SlotID; otherwise by Token.
	HasSlotID bool
	// SlotID is the PKCS#11 slot ID (slot-id), used when HasSlotID is set.
	SlotID uint
	// Token is the token label (token), used when HasSlotID is not set.
	Token string
	// Object is the object label (object); "" means the URI names no object.
	Object string
	// PIN is the user PIN (pin-value); "" means the session does not log in.
	PIN string
}

// ParseURI parses s as aziot does: the scheme "pkcs11:", then path attributes
// separated by ";" and, after "?", query attributes separated by "&". Only
// object, slot-id and token (path) and pin-value (query) are read; the others
// are ignored. slot-id wins over token; a URI with neither is an error.
// Names and values are percent-decoded; a malformed escape or a value that is
// not UTF-8 is an error. A repeated attribute keeps its last value.
func ParseURI(s string) (*URI, error) {
	const scheme = "pkcs11:"
	if len(s) < len(scheme) || !strings.EqualFold(s[:len(scheme)], scheme) {
		return nil, fmt.Errorf("pkcs11: parse URI %q: the scheme is not %q", Redact(s), scheme)
	}
	path, query, _ := strings.Cut(s[len(scheme):], "?")
	var (
		u        URI
		hasToken bool
	)
	for comp := range strings.SplitSeq(path, ";") {
		name, value, err := splitAttr(comp, func(n string) bool {
			return n == "object" || n == "slot-id" || n == "token"
		})
		if err != nil {
			return nil, fmt.Errorf("pkcs11: parse URI %q: %w", Redact(s), err)
		}
		switch name {
		case "object":
			u.Object = value
		case "token":
			u.Token, hasToken = value, true
		case "slot-id":
			id, err := strconv.ParseUint(value, 10, strconv.IntSize)
			if err != nil {
				return nil, fmt.Errorf("pkcs11: parse URI %q: slot-id %q is not an unsigned integer", Redact(s), value)
			}
			u.SlotID, u.HasSlotID = uint(id), true
		}
	}
	if query != "" {
		for comp := range strings.SplitSeq(query, "&") {
			name, value, err := splitAttr(comp, func(n string) bool { return n == "pin-value" })
			if err != nil {
				return nil, fmt.Errorf("pkcs11: parse URI %q: %w", Redact(s), err)
			}
			if name == "pin-value" {
				u.PIN = value
			}
		}
	}
	switch {
	case u.HasSlotID:
		u.Token = "" // slot-id wins
	case !hasToken:
		return nil, fmt.Errorf("pkcs11: parse URI %q: it has neither slot-id nor token", Redact(s))
	}
	return &u, nil
}

// splitAttr splits "name=value", percent-decoding both. It returns name ""
// for attributes that want rejects (their value is not decoded).
func splitAttr(comp string, want func(string) bool) (name, value string, err error) {
	if comp == "" {
		return "", "", nil
	}
	rawName, rawValue, _ := strings.Cut(comp, "=")
	name, err = percentDecode(rawName)
	if err != nil {
		return "", "", fmt.Errorf("attribute name %q: %w", rawName, err)
	}
	if !want(name) {
		return "", "", nil
	}
	value, err = percentDecode(rawValue)
	if err != nil {
		return "", "", fmt.Errorf("attribute %s: %w", name, err)
	}
	if !utf8.ValidString(value) {
		return "", "", fmt.Errorf("attribute %s: the value is not UTF-8", name)
	}
	return name, value, nil
}

var errBadEscape = errors.New("malformed percent escape")

func percentDecode(s string) (string, error) {
	if !strings.Contains(s, "%") {
		return s, nil
	}
	b := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		if s[i] != '%' {
			b = append(b, s[i])
			continue
		}
		if i+2 >= len(s) {
			return "", errBadEscape
		}
		hi, ok1 := unhex(s[i+1])
		lo, ok2 := unhex(s[i+2])
		if !ok1 || !ok2 {
			return "", errBadEscape
		}
		b = append(b, hi<<4|lo)
		i += 2
	}
	return string(b), nil
}

func unhex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// percentEncode escapes every byte that is not an ASCII letter or digit, as
// aziot's serialiser does ("local-ca" → "local%2Dca").
func percentEncode(s string) string {
	const hexDigits = "0123456789ABCDEF"
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('%')
		b.WriteByte(hexDigits[c>>4])
		b.WriteByte(hexDigits[c&15])
	}
	return b.String()
}

// String serialises u as aziot does: slot-id or token, then object, then
// ?pin-value, every value percent-encoded except ASCII letters and digits,
// e.g. "pkcs11:slot-id=0;object=local%2Dca?pin-value=1234". It includes the
// PIN: use Redacted for logs and errors.
func (u *URI) String() string {
	s := u.Redacted()
	if u.PIN != "" {
		s += "?pin-value=" + percentEncode(u.PIN)
	}
	return s
}

// Redacted is String without the PIN, for logs and error messages.
func (u *URI) Redacted() string {
	var b strings.Builder
	b.WriteString("pkcs11:")
	if u.HasSlotID {
		b.WriteString("slot-id=")
		b.WriteString(strconv.FormatUint(uint64(u.SlotID), 10))
	} else {
		b.WriteString("token=")
		b.WriteString(percentEncode(u.Token))
	}
	if u.Object != "" {
		b.WriteString(";object=")
		b.WriteString(percentEncode(u.Object))
	}
	return b.String()
}

// WithObject returns a copy of u that names the object labelled label.
func (u *URI) WithObject(label string) *URI {
	c := *u
	c.Object = label
	return &c
}

// tokenKey names the token of u for the backend's token cache.
func (u *URI) tokenKey() string {
	if u.HasSlotID {
		return "slot-id=" + strconv.FormatUint(uint64(u.SlotID), 10)
	}
	return "token=" + u.Token
}

// Redact replaces the value of every pin-value attribute of s, a string that
// may or may not be a well-formed PKCS#11 URI, with "REDACTED", so that s can
// be logged. The query (after the first '?') is split on '&' only, as
// ParseURI splits it, so a PIN holding '?' or ';' is redacted whole.
func Redact(s string) string {
	var b strings.Builder
	b.Grow(len(s))
	if i := strings.IndexByte(s, ':'); i >= 0 {
		b.WriteString(s[:i+1])
		s = s[i+1:]
	}
	path, query, hasQuery := strings.Cut(s, "?")
	redactAttrs(&b, path, ";&")
	if hasQuery {
		b.WriteByte('?')
		redactAttrs(&b, query, "&")
	}
	return b.String()
}

// redactAttrs writes s, attributes separated by any of seps, to b with the
// value of pin-value replaced.
func redactAttrs(b *strings.Builder, s, seps string) {
	for s != "" {
		end := strings.IndexAny(s, seps)
		seg, sep := s, ""
		if end >= 0 {
			seg, sep, s = s[:end], s[end:end+1], s[end+1:]
		} else {
			s = ""
		}
		rawName, _, hasValue := strings.Cut(seg, "=")
		name, err := percentDecode(rawName)
		if err != nil {
			name = rawName
		}
		if hasValue && name == "pin-value" {
			seg = rawName + "=REDACTED"
		}
		b.WriteString(seg)
		b.WriteString(sep)
	}
}
