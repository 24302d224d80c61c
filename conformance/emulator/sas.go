package emulator

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// SASToken is a parsed "SharedAccessSignature sr=…&sig=…&se=…[&skn=…]"
// header value, with sr kept exactly as sent.
type SASToken struct {
	// SR is the resource as it appears in the token (not decoded): the
	// HMAC input is SR + "\n" + SE.
	SR string
	// Resource is SR percent-decoded, to compare with the expected audience.
	Resource string
	// Sig is the decoded base64 signature.
	Sig string
	// SE is the expiry as sent (decimal seconds since the epoch).
	SE string
	// Expiry is SE parsed.
	Expiry time.Time
	// SKN is the key name, empty when absent.
	SKN string
}

// ParseSAS parses a SAS token (with or without the "SharedAccessSignature "
// prefix). Fields may come in any order; sr, sig and se are required.
func ParseSAS(token string) (*SASToken, error) {
	token = strings.TrimSpace(token)
	rest, ok := strings.CutPrefix(token, "SharedAccessSignature ")
	if !ok && strings.HasPrefix(token, "SharedAccessSignature") {
		return nil, errors.New("SAS: no fields after SharedAccessSignature")
	}
	t := &SASToken{}
	seen := map[string]bool{}
	for _, field := range strings.Split(strings.TrimSpace(rest), "&") {
		k, v, ok := strings.Cut(field, "=")
		if !ok {
			return nil, fmt.Errorf("SAS: field %q has no value", field)
		}
		if seen[k] {
			return nil, fmt.Errorf("SAS: field %q twice", k)
		}
		seen[k] = true
		switch k {
		case "sr":
			t.SR = v
		case "sig":
			// PathUnescape: a raw "+" of base64 stays a "+".
			sig, err := url.PathUnescape(v)
			if err != nil {
				return nil, fmt.Errorf("SAS: sig: %w", err)
			}
			t.Sig = sig
		case "se":
			t.SE = v
		case "skn":
			skn, err := url.QueryUnescape(v)
			if err != nil {
				return nil, fmt.Errorf("SAS: skn: %w", err)
			}
			t.SKN = skn
		}
	}
	if t.SR == "" || t.Sig == "" || t.SE == "" {
		return nil, errors.New("SAS: sr, sig and se are required")
	}
	res, err := url.PathUnescape(t.SR)
	if err != nil {
		return nil, fmt.Errorf("SAS: sr: %w", err)
	}
	t.Resource = res
	se, err := strconv.ParseInt(t.SE, 10, 64)
	if err != nil {
		return nil, fmt.Errorf("SAS: se: %w", err)
	}
	t.Expiry = time.Unix(se, 0)
	return t, nil
}

// Errors of a SAS check, wrapped by VerifySAS.
var (
	ErrSASAudience = errors.New("SAS: the token's resource is not the expected audience")
	ErrSASExpired  = errors.New("SAS: the token has expired")
	ErrSASKeyName  = errors.New("SAS: unexpected key name (skn)")
	ErrSASSig      = errors.New("SAS: the signature does not match")
)

// VerifySAS checks a parsed token as Azure does (spec/protocols.md §1.2):
// the decoded resource names audience (case-insensitive), the expiry is in
// the future, skn is absent or equals skn (when skn is not empty), and sig
// is HMAC-SHA256 over sr as sent + "\n" + se with one of keys (base64).
func VerifySAS(t *SASToken, audience, skn string, now time.Time, keys ...string) error {
	if !strings.EqualFold(t.Resource, audience) {
		return fmt.Errorf("%w: %q, want %q", ErrSASAudience, t.Resource, audience)
	}
	if !t.Expiry.After(now) {
		return fmt.Errorf("%w at %s", ErrSASExpired, t.Expiry.UTC().Format(time.RFC3339))
	}
	if t.SKN != "" && skn != "" && t.SKN != skn {
		return fmt.Errorf("%w: %q, want %q", ErrSASKeyName, t.SKN, skn)
	}
	if skn == "" && t.SKN != "" {
		return fmt.Errorf("%w: %q on a device or module key", ErrSASKeyName, t.SKN)
	}
	for _, k := range keys {
		if k == "" {
			continue
		}
		want, err := Sign(k, t.SR+"\n"+t.SE)
		if err != nil {
			return err
		}
		if subtle.ConstantTimeCompare([]byte(want), []byte(t.Sig)) == 1 {
			return nil
		}
	}
	return ErrSASSig
}

// Sign returns base64(HMAC-SHA256(base64decode(key), msg)).
func Sign(key, msg string) (string, error) {
	k, err := base64.StdEncoding.DecodeString(key)
	if err != nil {
		return "", fmt.Errorf("key is not base64: %w", err)
	}
	m := hmac.New(sha256.New, k)
	m.Write([]byte(msg))
	return base64.StdEncoding.EncodeToString(m.Sum(nil)), nil
}

// DeriveDeviceKey returns a group enrollment's device key for
// registrationID: base64(HMAC-SHA256(base64decode(groupKey), registrationID)).
func DeriveDeviceKey(groupKey, registrationID string) (string, error) {
	return Sign(groupKey, registrationID)
}

// NewSASToken returns a token for resource signed with key (base64) that
// expires at expiry, in aziot's form: the resource lower-cased and not
// percent-encoded, sig form-encoded, and "&skn=" + skn when skn is set.
func NewSASToken(key, resource string, expiry time.Time, skn string) (string, error) {
	sr := strings.ToLower(resource)
	se := strconv.FormatInt(expiry.Unix(), 10)
	sig, err := Sign(key, sr+"\n"+se)
	if err != nil {
		return "", err
	}
	tok := "SharedAccessSignature sr=" + sr + "&sig=" + url.QueryEscape(sig) + "&se=" + se
	if skn != "" {
		tok += "&skn=" + skn
	}
	return tok, nil
}
