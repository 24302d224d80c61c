package host

import (
	"crypto/ed25519"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// verified is the outcome of a successful integrity check.
type verified struct {
	digest   string            // "sha256:<hex>"
	signedBy string            // key fingerprint, "" when no signature is required
	signer   ed25519.PublicKey // the key that verified the signature, or nil
}

// verify checks bin against cfg: the pinned digest when set, and the
// signature when set, by one of cfg.TrustedKeys. At least one must be set.
func verify(bin []byte, cfg ModuleConfig) (verified, error) {
	sum := sha256.Sum256(bin)
	v := verified{digest: "sha256:" + hex.EncodeToString(sum[:])}
	if cfg.SHA256 == "" && cfg.Signature == "" {
		return v, fmt.Errorf("%w: neither sha256 nor signature is configured", ErrIntegrity)
	}
	if cfg.SHA256 != "" && !strings.EqualFold(cfg.SHA256, hex.EncodeToString(sum[:])) {
		return v, fmt.Errorf("%w: %s has digest %s, the configuration pins sha256:%s", ErrIntegrity, cfg.Path, v.digest, strings.ToLower(cfg.SHA256))
	}
	if cfg.Signature == "" {
		return v, nil
	}
	sig, err := ParseSignature(cfg.Signature)
	if err != nil {
		return v, fmt.Errorf("%w: %w", ErrIntegrity, err)
	}
	if len(cfg.TrustedKeys) == 0 {
		return v, fmt.Errorf("%w: a signature is configured but no trusted_keys", ErrIntegrity)
	}
	for i, k := range cfg.TrustedKeys {
		pub, err := ParsePublicKey(k)
		if err != nil {
			return v, fmt.Errorf("%w: trusted key %d: %w", ErrIntegrity, i, err)
		}
		if ed25519.Verify(pub, bin, sig) {
			v.signedBy, v.signer = Fingerprint(pub), pub
			return v, nil
		}
	}
	return v, fmt.Errorf("%w: the signature of %s (%s) is not valid under any of the %d trusted keys", ErrIntegrity, cfg.Path, v.digest, len(cfg.TrustedKeys))
}

// stillTrusted reports whether a version verified under an earlier
// reading of cfg would still be: its signing key, when cfg requires a
// signature, is one of cfg's trusted keys as they read now. Keys given as
// paths change without the configuration's text changing (an operator
// revokes a key by replacing its file), so comparing the text is not enough.
func stillTrusted(signer ed25519.PublicKey, cfg ModuleConfig) bool {
	if cfg.Signature == "" {
		return true
	}
	for _, k := range cfg.TrustedKeys {
		if pub, err := ParsePublicKey(k); err == nil && signer != nil && pub.Equal(signer) {
			return true
		}
	}
	return false
}

// Fingerprint names an Ed25519 public key: "ed25519:" and the first 16 hex
// digits of the SHA-256 of its 32 bytes.
func Fingerprint(pub ed25519.PublicKey) string {
	sum := sha256.Sum256(pub)
	return "ed25519:" + hex.EncodeToString(sum[:8])
}

// ParseSignature reads a module signature setting: base64 (standard or
// URL, padded or not) of the 64-byte Ed25519 signature of the whole file,
// or the absolute path of a file that holds it raw or in base64.
func ParseSignature(s string) ([]byte, error) {
	s = strings.TrimSpace(s)
	if b, ok := decode64(s, ed25519.SignatureSize); ok {
		return b, nil
	}
	if !filepath.IsAbs(s) {
		return nil, errors.New("signature: want base64 of a 64-byte Ed25519 signature or an absolute path to a signature file")
	}
	raw, err := os.ReadFile(s)
	if err != nil {
		return nil, fmt.Errorf("signature: %w", err)
	}
	if len(raw) == ed25519.SignatureSize {
		return raw, nil
	}
	if b, ok := decode64(strings.TrimSpace(string(raw)), ed25519.SignatureSize); ok {
		return b, nil
	}
	return nil, fmt.Errorf("signature file %s: want the 64-byte Ed25519 signature, raw or base64", s)
}

// ParsePublicKey reads a trusted key setting: base64 of the 32-byte
// Ed25519 public key, PEM text ("PUBLIC KEY", as openssl pkey -pubout
// writes), or the absolute path of a file that holds either (or the 32 raw
// bytes).
func ParsePublicKey(s string) (ed25519.PublicKey, error) {
	s = strings.TrimSpace(s)
	if b, ok := decode64(s, ed25519.PublicKeySize); ok {
		return ed25519.PublicKey(b), nil
	}
	if strings.HasPrefix(s, "-----BEGIN") {
		return parsePEMKey([]byte(s))
	}
	if !filepath.IsAbs(s) {
		return nil, errors.New("trusted key: want base64 of a 32-byte Ed25519 public key, PEM, or an absolute path to a key file")
	}
	raw, err := os.ReadFile(s)
	if err != nil {
		return nil, fmt.Errorf("trusted key: %w", err)
	}
	if len(raw) == ed25519.PublicKeySize {
		return ed25519.PublicKey(raw), nil
	}
	if b, ok := decode64(strings.TrimSpace(string(raw)), ed25519.PublicKeySize); ok {
		return ed25519.PublicKey(b), nil
	}
	k, err := parsePEMKey(raw)
	if err != nil {
		return nil, fmt.Errorf("trusted key file %s: %w", s, err)
	}
	return k, nil
}

func parsePEMKey(b []byte) (ed25519.PublicKey, error) {
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "PUBLIC KEY" {
		return nil, errors.New("want a PEM PUBLIC KEY block")
	}
	pub, err := x509.ParsePKIXPublicKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("PEM public key: %w", err)
	}
	k, ok := pub.(ed25519.PublicKey)
	if !ok {
		return nil, fmt.Errorf("PEM public key is %T, want Ed25519", pub)
	}
	return k, nil
}

// decode64 decodes s in any base64 flavour to exactly n bytes.
func decode64(s string, n int) ([]byte, bool) {
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if b, err := enc.DecodeString(s); err == nil && len(b) == n {
			return b, true
		}
	}
	return nil, false
}
