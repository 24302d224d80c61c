package capabilities

import (
	"crypto"
	"crypto/ecdsa"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/lestrrat-go/jwx/v3/jwk"
	"github.com/lestrrat-go/jwx/v3/jws"
)

// Token format constants (docs/tokens.md).
const (
	// TokenType is the JOSE "typ" header of every capability token.
	TokenType = "warden-cap+jwt"
	// Issuer is both the "iss" and the "aud" of every capability token.
	Issuer = "warden"

	maxTokenLen = 8192 // bytes; larger input is rejected before any parsing
	maxIDLen    = 128  // bytes of a jti
	maxSubLen   = 256  // bytes of a subject
)

// wireClaims is the JWT claims set as serialised.
type wireClaims struct {
	Iss string        `json:"iss"`
	Aud string        `json:"aud"`
	Sub string        `json:"sub"`
	Iat int64         `json:"iat"`
	Nbf int64         `json:"nbf"`
	Exp int64         `json:"exp"`
	Jti string        `json:"jti"`
	Cnf *confirmation `json:"cnf"`
	Cap []Capability  `json:"cap"`
	Par string        `json:"par,omitempty"`
	Anc []string      `json:"anc,omitempty"`
}

// confirmation is the "cnf" claim: the uid the token is bound to.
type confirmation struct {
	UID *uint32 `json:"uid"`
}

// sign serialises and signs c as a compact JWS.
func (a *Authority) sign(c *Claims) (string, error) {
	uid := c.UID
	payload, err := json.Marshal(&wireClaims{
		Iss: Issuer, Aud: Issuer, Sub: c.Subject,
		Iat: c.IssuedAt.Unix(), Nbf: c.NotBefore.Unix(), Exp: c.Expiry.Unix(),
		Jti: c.ID, Cnf: &confirmation{UID: &uid}, Cap: c.Capabilities,
		Par: c.Parent, Anc: c.Ancestors,
	})
	if err != nil {
		return "", fmt.Errorf("sign token: encode claims: %w", err)
	}
	hdr := jws.NewHeaders()
	if err := hdr.Set(jws.TypeKey, TokenType); err != nil {
		return "", fmt.Errorf("sign token: header: %w", err)
	}
	if err := hdr.Set(jws.KeyIDKey, a.kid); err != nil {
		return "", fmt.Errorf("sign token: header: %w", err)
	}
	tok, err := jws.Sign(payload, jws.WithKey(jwa.ES256(), a.signer, jws.WithProtectedHeaders(hdr)))
	if err != nil {
		return "", fmt.Errorf("sign token with the token key: %w", err)
	}
	return string(tok), nil
}

// parse verifies token's signature with the token key, algorithm pinned to
// ES256 (so "none" and HS256-keyed-with-the-public-key cannot pass), refuses
// critical header extensions, checks typ, and decodes and checks the claims. It does not check time,
// revocation or uid.
func (a *Authority) parse(token string) (*Claims, error) {
	var sig *jws.Signature
	payload, err := jws.Verify([]byte(token),
		jws.WithCompact(),
		jws.WithKey(jwa.ES256(), a.pub),
		jws.WithAlgorithmMatch(true),
		jws.WithCritValidation(true), // we understand no extension: any crit fails
		jws.WithVerifiedSignature(&sig))
	if err != nil {
		// jwx's message may quote parts of the token: do not pass it on.
		return nil, fmt.Errorf("%w: not a compact JWS signed with ES256 by this broker's token key", ErrInvalid)
	}
	if typ, _ := sig.ProtectedHeaders().Type(); typ != TokenType {
		return nil, fmt.Errorf("%w: header typ is not %s", ErrInvalid, TokenType)
	}
	var w wireClaims
	if err := json.Unmarshal(payload, &w); err != nil {
		return nil, fmt.Errorf("%w: claims are not a valid JSON claims set", ErrInvalid)
	}
	return w.claims()
}

// claims checks a decoded claims set and converts it.
func (w *wireClaims) claims() (*Claims, error) {
	bad := func(why string) (*Claims, error) { return nil, fmt.Errorf("%w: %s", ErrInvalid, why) }
	switch {
	case w.Iss != Issuer:
		return bad("iss is not " + Issuer)
	case w.Aud != Issuer:
		return bad("aud is not " + Issuer)
	case w.Sub == "" || len(w.Sub) > maxSubLen:
		return bad("sub is missing or too long")
	case w.Jti == "" || len(w.Jti) > maxIDLen:
		return bad("jti is missing or too long")
	case w.Iat <= 0 || w.Nbf <= 0 || w.Exp <= w.Nbf:
		return bad("iat, nbf or exp missing, or exp not after nbf")
	case w.Cnf == nil || w.Cnf.UID == nil:
		return bad("cnf.uid is missing")
	case len(w.Anc) > maxChain:
		return bad("too many ancestors")
	case (w.Par == "") != (len(w.Anc) == 0) || len(w.Anc) > 0 && w.Anc[len(w.Anc)-1] != w.Par:
		return bad("par is not the last of anc")
	}
	if ValidateCapabilities(w.Cap) != nil {
		return bad("cap is not a valid scope")
	}
	return &Claims{
		ID:           w.Jti,
		Subject:      w.Sub,
		IssuedAt:     time.Unix(w.Iat, 0),
		NotBefore:    time.Unix(w.Nbf, 0),
		Expiry:       time.Unix(w.Exp, 0),
		UID:          *w.Cnf.UID,
		Capabilities: w.Cap,
		Parent:       w.Par,
		Ancestors:    w.Anc,
	}, nil
}

// publicJWKS returns the key's RFC 7638 thumbprint (base64url SHA-256), used
// as kid, and the JWK set publishing the key.
func publicJWKS(pub *ecdsa.PublicKey) (string, []byte, error) {
	key, err := jwk.Import(pub)
	if err != nil {
		return "", nil, fmt.Errorf("import public key as JWK: %w", err)
	}
	tp, err := key.Thumbprint(crypto.SHA256)
	if err != nil {
		return "", nil, fmt.Errorf("JWK thumbprint: %w", err)
	}
	kid := base64.RawURLEncoding.EncodeToString(tp)
	for k, v := range map[string]any{jwk.KeyIDKey: kid, jwk.AlgorithmKey: jwa.ES256(), jwk.KeyUsageKey: "sig"} {
		if err := key.Set(k, v); err != nil {
			return "", nil, fmt.Errorf("JWK field %s: %w", k, err)
		}
	}
	set := jwk.NewSet()
	if err := set.AddKey(key); err != nil {
		return "", nil, fmt.Errorf("JWK set: %w", err)
	}
	data, err := json.Marshal(set)
	if err != nil {
		return "", nil, fmt.Errorf("encode JWK set: %w", err)
	}
	return kid, data, nil
}
