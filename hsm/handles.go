package hsm

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"unicode/utf8"
	"unsafe"
)

// HandleValidationKeyID is the symmetric key (usage sign) whose HMAC makes
// key handles unforgeable: aziot keyd's well-known ID, so handles issued by
// the Rust keyd verify here when its key file is kept.
const HandleValidationKeyID = "handle-validation-key"

// ErrInvalidHandle: a key handle that is malformed or not issued with this
// store's handle-validation key. keyd answers 400 `parameter "handle" has an
// invalid value\ncaused by: invalid handle`.
var ErrInvalidHandle = errors.New("invalid handle")

// ErrHandleTooLong: a handle Issue would make is longer than Verify
// accepts (a derived key's data of more than ~12 KiB): issuing it would give
// the caller a handle that never works.
var ErrHandleTooLong = errors.New("the key handle would be too long")

// Limits on what Verify accepts: handles longer than maxHandleLen, or
// derived handles nested deeper than maxDerivedDepth, are invalid. Real
// handles are a few hundred bytes, nested at most once.
const (
	maxHandleLen     = 64 << 10
	maxDerivedDepth  = 8
	handleCacheLimit = 4096 // verified handles remembered (two generations of half each)
)

// KeyKind is what a key handle names.
type KeyKind int

// Key kinds, as aziot's KeyId variants.
const (
	KindKey     KeyKind = iota + 1 // a symmetric key ({"Key":id})
	KindKeyPair                    // a key pair ({"KeyPair":id})
	KindDerived                    // a key derived from another handle ({"Derived":[base,data]})
)

// String returns aziot's variant name.
func (k KeyKind) String() string {
	switch k {
	case KindKey:
		return "Key"
	case KindKeyPair:
		return "KeyPair"
	case KindDerived:
		return "Derived"
	default:
		return fmt.Sprintf("KeyKind(%d)", int(k))
	}
}

// KeyRef is what a key handle refers to.
type KeyRef struct {
	// Kind is the variant.
	Kind KeyKind
	// ID is the key ID (KindKey, KindKeyPair).
	ID string
	// Base is the base key's handle (KindDerived).
	Base string
	// Data is the derivation data (KindDerived).
	Data []byte
	// BaseRef is what Base refers to (KindDerived, set by Verify; Base was
	// verified too). It may itself be KindDerived: keyd rejects nesting.
	BaseRef *KeyRef
}

func (r KeyRef) clone() KeyRef {
	if r.Data != nil {
		r.Data = bytes.Clone(r.Data)
	}
	if r.BaseRef != nil {
		b := r.BaseRef.clone()
		r.BaseRef = &b
	}
	return r
}

// Handles issues and verifies aziot key handles:
//
//	sr=<base64(SR_JSON)>&sig=<base64(HMAC-SHA256(handle-validation-key, SR_JSON))>
//
// with SR_JSON = {"key_id":<KeyId>,"nonce":"<base64 of 64 random bytes>"}
// byte for byte as aziot keyd (serde_json) writes it. Handles do not expire.
//
// Verified handles are cached (bounded; keyed by the SHA-256 of the handle,
// so the cache holds no usable handle), so a repeated handle costs a hash
// and a map lookup rather than an HMAC in the store. The cache is dropped
// when the handle-validation key changes through the store; the key is
// never changed in practice (changing it would invalidate every handle
// clients hold), and a change behind Warden's back needs a restart.
type Handles struct {
	keys *Keys

	mu       sync.Mutex
	gen      uint64 // keys.hvkGen the cache and ensured were computed at
	ensured  bool   // the validation key exists
	cur, old map[[32]byte]KeyRef
}

// NewHandles returns the handle issuer/verifier of keys. The validation key
// is created (CreateKey, usage sign) on first use.
func NewHandles(keys *Keys) *Handles {
	return &Handles{keys: keys, cur: make(map[[32]byte]KeyRef), old: make(map[[32]byte]KeyRef)}
}

// sync drops the cache if the validation key changed; it holds h.mu.
func (h *Handles) syncGen() {
	if g := h.keys.hvkGen.Load(); g != h.gen {
		h.gen, h.ensured = g, false
		clear(h.cur)
		clear(h.old)
	}
}

// ensureKey creates the validation key if it does not exist yet.
func (h *Handles) ensureKey(ctx context.Context) error {
	h.mu.Lock()
	h.syncGen()
	ok := h.ensured
	h.mu.Unlock()
	if ok {
		return nil
	}
	if err := h.keys.CreateKey(ctx, HandleValidationKeyID, UsageSign); err != nil {
		return fmt.Errorf("hsm: handle-validation key: %w", err)
	}
	h.mu.Lock()
	h.ensured = true
	h.mu.Unlock()
	return nil
}

// mac is HMAC-SHA256(handle-validation-key, sr), computed in the store.
func (h *Handles) mac(ctx context.Context, sr []byte) ([]byte, error) {
	if err := h.ensureKey(ctx); err != nil {
		return nil, err
	}
	sig, err := h.keys.HMACSHA256(ctx, HandleValidationKeyID, sr)
	if err != nil {
		return nil, fmt.Errorf("hsm: key handle MAC: %w", err)
	}
	return sig, nil
}

// Issue returns a new handle for ref (Kind and ID, or Kind, Base and Data
// for a derived key), with a fresh nonce: two handles for one key differ.
// Base is not verified here. Key-store failures are returned as they are.
func (h *Handles) Issue(ctx context.Context, ref KeyRef) (string, error) {
	var nonce [64]byte
	if _, err := rand.Read(nonce[:]); err != nil {
		return "", fmt.Errorf("hsm: issue handle: nonce: %w", err)
	}
	sr, err := srJSON(ref, base64.StdEncoding.EncodeToString(nonce[:]))
	if err != nil {
		return "", err
	}
	sig, err := h.mac(ctx, sr)
	if err != nil {
		return "", err
	}
	enc := base64.StdEncoding
	out := make([]byte, 0, 3+enc.EncodedLen(len(sr))+5+enc.EncodedLen(len(sig)))
	out = append(out, "sr="...)
	out = enc.AppendEncode(out, sr)
	out = append(out, "&sig="...)
	out = enc.AppendEncode(out, sig)
	if len(out) > maxHandleLen {
		return "", fmt.Errorf("hsm: issue handle: %w: it would be %d bytes, Verify takes at most %d", ErrHandleTooLong, len(out), maxHandleLen)
	}
	return string(out), nil
}

// srJSON returns SR_JSON for ref and nonce.
func srJSON(ref KeyRef, nonce string) ([]byte, error) {
	b := make([]byte, 0, 160+len(ref.ID)+len(ref.Base)+4*len(ref.Data))
	b = append(b, `{"key_id":{"`...)
	switch ref.Kind {
	case KindKey, KindKeyPair:
		if ref.ID == "" || !utf8.ValidString(ref.ID) {
			return nil, fmt.Errorf("hsm: issue handle: %w: the key ID is empty or not UTF-8", ErrInvalidParameter)
		}
		b = append(b, ref.Kind.String()...)
		b = append(b, `":`...)
		b = appendJSONString(b, ref.ID)
	case KindDerived:
		if ref.Base == "" || !utf8.ValidString(ref.Base) {
			return nil, fmt.Errorf("hsm: issue handle: %w: the base handle is empty or not UTF-8", ErrInvalidParameter)
		}
		b = append(b, `Derived":[`...)
		b = appendJSONString(b, ref.Base)
		b = append(b, ",["...)
		for i, c := range ref.Data {
			if i > 0 {
				b = append(b, ',')
			}
			b = strconv.AppendUint(b, uint64(c), 10)
		}
		b = append(b, "]]"...)
	default:
		return nil, fmt.Errorf("hsm: issue handle: %w: unknown key kind %d", ErrInvalidParameter, ref.Kind)
	}
	b = append(b, `},"nonce":`...)
	b = appendJSONString(b, nonce)
	return append(b, '}'), nil
}

// appendJSONString appends s as serde_json writes a string: only '"', '\\'
// and control characters are escaped (\b \t \n \f \r, else \u00xx in lower
// case); '/', '<', '>', '&', DEL and non-ASCII are written as they are.
func appendJSONString(b []byte, s string) []byte {
	const hexDigits = "0123456789abcdef"
	b = append(b, '"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"' || c == '\\':
			b = append(b, '\\', c)
		case c == '\b':
			b = append(b, '\\', 'b')
		case c == '\t':
			b = append(b, '\\', 't')
		case c == '\n':
			b = append(b, '\\', 'n')
		case c == '\f':
			b = append(b, '\\', 'f')
		case c == '\r':
			b = append(b, '\\', 'r')
		case c < 0x20:
			b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&15])
		default:
			b = append(b, c)
		}
	}
	return append(b, '"')
}

// Verify returns what handle refers to. Anything malformed or forged is
// ErrInvalidHandle: the parameters are split on '&' (later sr=/sig= win,
// others are ignored, as in aziot), both are strict standard base64, the
// HMAC is checked in constant time before SR_JSON is parsed. A derived
// handle's base handle is verified too and returned in BaseRef. A failure
// of the key store itself (I/O, PKCS#11) is returned as it is, not as
// ErrInvalidHandle: the handle may be fine.
func (h *Handles) Verify(ctx context.Context, handle string) (KeyRef, error) {
	if len(handle) > maxHandleLen {
		return KeyRef{}, fmt.Errorf("hsm: %w: longer than %d bytes", ErrInvalidHandle, maxHandleLen)
	}
	// The cache is keyed by the handle's digest; hashing the string's
	// bytes in place saves a copy of the handle on every keyd request.
	sum := sha256.Sum256(unsafe.Slice(unsafe.StringData(handle), len(handle)))
	h.mu.Lock()
	h.syncGen()
	gen := h.gen
	ref, ok := h.cur[sum]
	if !ok {
		if ref, ok = h.old[sum]; ok {
			h.put(sum, ref)
		}
	}
	h.mu.Unlock()
	if ok {
		return ref.clone(), nil
	}
	ref, err := h.verify(ctx, handle, 0)
	if err != nil {
		return KeyRef{}, err
	}
	h.mu.Lock()
	// A handle verified with a validation key that has changed since is
	// not cached: the cache was emptied for the new key.
	if h.syncGen(); h.gen == gen {
		h.put(sum, ref)
	}
	h.mu.Unlock()
	return ref.clone(), nil
}

// put remembers a verified handle; it holds h.mu. When the current
// generation is full it becomes the old one: the cache keeps between half
// and all of handleCacheLimit recently used handles.
func (h *Handles) put(sum [32]byte, ref KeyRef) {
	if len(h.cur) >= handleCacheLimit/2 {
		h.old, h.cur = h.cur, h.old
		clear(h.cur)
	}
	h.cur[sum] = ref
}

func invalid(why string) error {
	return fmt.Errorf("hsm: %w: %s", ErrInvalidHandle, why)
}

func (h *Handles) verify(ctx context.Context, handle string, depth int) (KeyRef, error) {
	if depth > maxDerivedDepth {
		return KeyRef{}, invalid("derived handles nested too deep")
	}
	var srB64, sigB64 string
	var haveSR, haveSig bool
	for _, param := range strings.Split(handle, "&") {
		if v, ok := strings.CutPrefix(param, "sr="); ok {
			srB64, haveSR = v, true
		} else if v, ok := strings.CutPrefix(param, "sig="); ok {
			sigB64, haveSig = v, true
		}
	}
	if !haveSR || !haveSig {
		return KeyRef{}, invalid("sr= or sig= missing")
	}
	sr, err := decodeB64(srB64)
	if err != nil {
		return KeyRef{}, invalid("sr is not base64")
	}
	sig, err := decodeB64(sigB64)
	if err != nil {
		return KeyRef{}, invalid("sig is not base64")
	}
	want, err := h.mac(ctx, sr)
	if err != nil {
		return KeyRef{}, err
	}
	if !hmac.Equal(sig, want) {
		return KeyRef{}, invalid("signature mismatch")
	}
	ref, err := parseSR(sr)
	if err != nil {
		return KeyRef{}, err
	}
	if ref.Kind == KindDerived {
		base, err := h.verify(ctx, ref.Base, depth+1)
		if err != nil {
			return KeyRef{}, err
		}
		ref.BaseRef = &base
	}
	return ref, nil
}

// decodeB64 is strict standard base64 with padding (no line breaks, no
// non-zero trailing bits).
func decodeB64(s string) ([]byte, error) {
	if strings.ContainsAny(s, "\r\n") {
		return nil, errors.New("line break in base64")
	}
	return base64.StdEncoding.Strict().DecodeString(s)
}

// parseSR parses an authenticated SR_JSON.
func parseSR(sr []byte) (KeyRef, error) {
	if !utf8.Valid(sr) {
		return KeyRef{}, invalid("sr is not UTF-8")
	}
	var v struct {
		KeyID map[string]json.RawMessage `json:"key_id"`
		Nonce *string                    `json:"nonce"`
	}
	if err := json.Unmarshal(sr, &v); err != nil {
		return KeyRef{}, invalid("sr is not JSON")
	}
	if v.Nonce == nil || len(v.KeyID) != 1 {
		return KeyRef{}, invalid("sr has no nonce or not exactly one key_id")
	}
	for kind, raw := range v.KeyID {
		switch kind {
		case "Key", "KeyPair":
			var id string
			if err := json.Unmarshal(raw, &id); err != nil || id == "" {
				return KeyRef{}, invalid("key ID is not a non-empty string")
			}
			k := KindKey
			if kind == "KeyPair" {
				k = KindKeyPair
			}
			return KeyRef{Kind: k, ID: id}, nil
		case "Derived":
			var parts []json.RawMessage
			if err := json.Unmarshal(raw, &parts); err != nil || len(parts) != 2 {
				return KeyRef{}, invalid("derived key_id is not [base, data]")
			}
			var base string
			var data []int
			if json.Unmarshal(parts[0], &base) != nil || base == "" || json.Unmarshal(parts[1], &data) != nil {
				return KeyRef{}, invalid("derived key_id is not [string, [bytes]]")
			}
			ref := KeyRef{Kind: KindDerived, Base: base, Data: make([]byte, len(data))}
			for i, d := range data {
				if d < 0 || d > 255 {
					return KeyRef{}, invalid("derivation data is not bytes")
				}
				ref.Data[i] = byte(d)
			}
			return ref, nil
		}
	}
	return KeyRef{}, invalid("unknown key_id variant")
}
