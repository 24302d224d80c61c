// Package pkcs7 extracts the certificates of a PKCS#7 / CMS "certs-only"
// SignedData (the Simple PKI Response of EST, RFC 7030 §4.1.3 and §4.2.3)
// with a small DER reader of its own: no cgo, no reflection, so that it
// builds for GOOS=wasip1 and can be fuzzed natively.
//
// Only definite-length DER is accepted (RFC 7030 responses are DER). The
// certificates are returned as their raw DER TLVs, unparsed.
package pkcs7

import (
	"bytes"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
)

// Errors of the parser; each returned error wraps ErrMalformed or
// ErrNotSignedData.
var (
	ErrMalformed     = errors.New("pkcs7: malformed DER")
	ErrNotSignedData = errors.New("pkcs7: not a PKCS#7 signedData")
)

// maxCerts bounds the certificates of one response.
const maxCerts = 64

// oidSignedData is 1.2.840.113549.1.7.2, DER-encoded content.
var oidSignedData = []byte{0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x02}

// ASN.1 tags used here.
const (
	tagInteger  = 0x02
	tagOID      = 0x06
	tagSequence = 0x30
	tagSet      = 0x31
	tagContext0 = 0xa0 // [0] constructed
	tagContext1 = 0xa1 // [1] constructed
)

// tlv is one DER element: its tag byte, its contents, and all its bytes.
type tlv struct {
	tag      byte
	contents []byte
	raw      []byte
}

// next reads one element from b and returns it and the rest of b.
func next(b []byte) (tlv, []byte, error) {
	if len(b) < 2 {
		return tlv{}, nil, fmt.Errorf("%w: truncated element", ErrMalformed)
	}
	tag := b[0]
	if tag&0x1f == 0x1f {
		return tlv{}, nil, fmt.Errorf("%w: high tag numbers are not used here", ErrMalformed)
	}
	n, hdr := int(b[1]), 2
	switch {
	case n == 0x80:
		return tlv{}, nil, fmt.Errorf("%w: indefinite length", ErrMalformed)
	case n > 0x80:
		k := n & 0x7f
		if k > 4 || len(b) < 2+k {
			return tlv{}, nil, fmt.Errorf("%w: bad length", ErrMalformed)
		}
		n = 0
		for _, c := range b[2 : 2+k] {
			n = n<<8 | int(c)
		}
		if b[2] == 0 || n < 0x80 {
			return tlv{}, nil, fmt.Errorf("%w: length not minimally encoded", ErrMalformed)
		}
		hdr += k
	}
	if n < 0 || n > len(b)-hdr {
		return tlv{}, nil, fmt.Errorf("%w: length %d exceeds the %d bytes left", ErrMalformed, n, len(b)-hdr)
	}
	return tlv{tag: tag, contents: b[hdr : hdr+n], raw: b[:hdr+n]}, b[hdr+n:], nil
}

// expect reads one element with tag from b.
func expect(b []byte, tag byte, what string) (tlv, []byte, error) {
	t, rest, err := next(b)
	if err != nil {
		return tlv{}, nil, fmt.Errorf("%s: %w", what, err)
	}
	if t.tag != tag {
		return tlv{}, nil, fmt.Errorf("%w: %s has tag 0x%02x, want 0x%02x", ErrMalformed, what, t.tag, tag)
	}
	return t, rest, nil
}

// Certificates returns the certificates (raw DER, in order) of a DER
// ContentInfo holding a SignedData. A SignedData without certificates
// returns none and no error.
func Certificates(der []byte) ([][]byte, error) {
	ci, rest, err := expect(der, tagSequence, "ContentInfo")
	if err != nil {
		return nil, err
	}
	if len(rest) != 0 {
		return nil, fmt.Errorf("%w: %d bytes after ContentInfo", ErrMalformed, len(rest))
	}
	oid, body, err := expect(ci.contents, tagOID, "contentType")
	if err != nil {
		return nil, err
	}
	if !bytes.Equal(oid.contents, oidSignedData) {
		return nil, fmt.Errorf("%w: contentType is not signedData", ErrNotSignedData)
	}
	explicit, rest, err := expect(body, tagContext0, "content")
	if err != nil {
		return nil, err
	}
	if len(rest) != 0 {
		return nil, fmt.Errorf("%w: bytes after content", ErrMalformed)
	}
	sd, rest, err := expect(explicit.contents, tagSequence, "SignedData")
	if err != nil {
		return nil, err
	}
	if len(rest) != 0 {
		return nil, fmt.Errorf("%w: bytes after SignedData", ErrMalformed)
	}
	b := sd.contents
	if _, b, err = expect(b, tagInteger, "version"); err != nil {
		return nil, err
	}
	if _, b, err = expect(b, tagSet, "digestAlgorithms"); err != nil {
		return nil, err
	}
	if _, b, err = expect(b, tagSequence, "encapContentInfo"); err != nil {
		return nil, err
	}
	var out [][]byte
	if len(b) > 0 && b[0] == tagContext0 {
		var set tlv
		if set, b, err = next(b); err != nil {
			return nil, fmt.Errorf("certificates: %w", err)
		}
		for c := set.contents; len(c) > 0; {
			var cert tlv
			cert, c, err = next(c)
			if err != nil {
				return nil, fmt.Errorf("certificate %d: %w", len(out), err)
			}
			// CertificateChoices: only the X.509 Certificate (a SEQUENCE)
			// is kept; attribute certificates and others are skipped.
			if cert.tag != tagSequence {
				continue
			}
			if len(out) == maxCerts {
				return nil, fmt.Errorf("%w: more than %d certificates", ErrMalformed, maxCerts)
			}
			out = append(out, cert.raw)
		}
	}
	if len(b) > 0 && b[0] == tagContext1 {
		if _, b, err = next(b); err != nil {
			return nil, fmt.Errorf("crls: %w", err)
		}
	}
	if _, b, err = expect(b, tagSet, "signerInfos"); err != nil {
		return nil, err
	}
	if len(b) != 0 {
		return nil, fmt.Errorf("%w: bytes after signerInfos", ErrMalformed)
	}
	return out, nil
}

// Decode returns the DER of an EST PKCS#7 payload: PEM ("PKCS7" or "CMS"
// block), else base64 (RFC 4648 §4, padding optional) with CR, LF, space
// and tab ignored anywhere (RFC 8951 §3), else the bytes themselves when
// they already are a DER SEQUENCE.
func Decode(body []byte) ([]byte, error) {
	trimmed := bytes.TrimSpace(body)
	if bytes.HasPrefix(trimmed, []byte("-----BEGIN")) {
		for rest := trimmed; ; {
			var b *pem.Block
			b, rest = pem.Decode(rest)
			if b == nil {
				return nil, fmt.Errorf("%w: PEM without a PKCS7 block", ErrMalformed)
			}
			if b.Type == "PKCS7" || b.Type == "CMS" {
				return b.Bytes, nil
			}
		}
	}
	compact := make([]byte, 0, len(trimmed))
	for _, c := range trimmed {
		switch c {
		case '\r', '\n', ' ', '\t':
		default:
			compact = append(compact, c)
		}
	}
	enc := base64.StdEncoding
	if len(compact)%4 != 0 {
		enc = base64.RawStdEncoding
		compact = bytes.TrimRight(compact, "=")
	}
	der := make([]byte, enc.DecodedLen(len(compact)))
	n, err := enc.Decode(der, compact)
	if err == nil {
		return der[:n], nil
	}
	if len(trimmed) > 0 && trimmed[0] == tagSequence {
		if _, _, derErr := next(body); derErr == nil {
			return body, nil
		}
	}
	return nil, fmt.Errorf("%w: body is neither PEM nor base64: %w", ErrMalformed, err)
}

// ParseResponse decodes an EST certs-only response body (Decode) and
// returns its certificates (Certificates).
func ParseResponse(body []byte) ([][]byte, error) {
	der, err := Decode(body)
	if err != nil {
		return nil, err
	}
	return Certificates(der)
}
