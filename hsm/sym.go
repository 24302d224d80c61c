package hsm

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/sha256"
	"errors"
	"fmt"
)

// Ciphertext framing of aziot's /encrypt and /decrypt (libaziot-keys):
// v2 is 0x02 || ct || tag, written by every current version; v1 is
// 0x01 || tag || ct, IoT Edge 1.1's libiothsm format, still accepted on
// decrypt for file keys (and derived keys, which are used as file keys).
const (
	aeadV1   = 0x01
	aeadV2   = 0x02
	gcmTag   = 16
	aes256Sz = 32
)

// DerivedHMACSHA256 is HMAC-SHA256(key, msg): how a derived key (which is
// never stored) signs, and how DeriveKey derives.
func DerivedHMACSHA256(key, msg []byte) []byte {
	m := hmac.New(sha256.New, key)
	m.Write(msg)
	return m.Sum(nil)
}

// DerivedEncrypt encrypts with a derived key as a file key: AES-256-GCM
// (key must be 32 bytes), any non-empty IV, 16-byte tag, framed
// 0x02 || ct || tag.
func DerivedEncrypt(key, iv, aad, plaintext []byte) ([]byte, error) {
	ct, err := sealGCM(key, iv, aad, plaintext)
	if err != nil {
		return nil, err
	}
	return frameV2(ct), nil
}

// DerivedDecrypt decrypts 0x02 || ct || tag (or the legacy 0x01 || tag || ct)
// with a derived key used as a file key.
func DerivedDecrypt(key, iv, aad, ciphertext []byte) ([]byte, error) {
	ct, err := unframe(ciphertext, true)
	if err != nil {
		return nil, err
	}
	return openGCM(key, iv, aad, ct)
}

// frameV2 prefixes ct||tag with the v2 version byte.
func frameV2(ctTag []byte) []byte {
	out := make([]byte, 1+len(ctTag))
	out[0] = aeadV2
	copy(out[1:], ctTag)
	return out
}

// unframe turns a framed ciphertext into ct||tag, the backends' form. v1
// (tag first) is accepted only when allowV1 (file keys).
func unframe(framed []byte, allowV1 bool) ([]byte, error) {
	if len(framed) < 1+gcmTag {
		return nil, fmt.Errorf("%w: ciphertext is %d bytes, shorter than a version byte and a %d-byte tag",
			ErrInvalidParameter, len(framed), gcmTag)
	}
	body := framed[1:]
	switch framed[0] {
	case aeadV2:
		return body, nil
	case aeadV1:
		if !allowV1 {
			return nil, fmt.Errorf("%w: ciphertext version 1 is accepted only for file keys", ErrInvalidParameter)
		}
		out := make([]byte, 0, len(body))
		out = append(out, body[gcmTag:]...)
		return append(out, body[:gcmTag]...), nil
	default:
		return nil, fmt.Errorf("%w: unknown ciphertext version %d", ErrInvalidParameter, framed[0])
	}
}

func newGCM(key, iv []byte) (cipher.AEAD, error) {
	if len(key) != aes256Sz {
		return nil, fmt.Errorf("%w: AES-256-GCM needs a 32-byte key, the key is %d bytes", ErrInvalidParameter, len(key))
	}
	if len(iv) == 0 {
		return nil, fmt.Errorf("%w: the IV is empty", ErrInvalidParameter)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("AES: %w", err)
	}
	var aead cipher.AEAD
	if len(iv) == 12 {
		aead, err = cipher.NewGCM(block)
	} else {
		aead, err = cipher.NewGCMWithNonceSize(block, len(iv))
	}
	if err != nil {
		return nil, fmt.Errorf("%w: AES-GCM with a %d-byte IV: %w", ErrInvalidParameter, len(iv), err)
	}
	return aead, nil
}

// sealGCM returns ct||tag.
func sealGCM(key, iv, aad, plaintext []byte) ([]byte, error) {
	aead, err := newGCM(key, iv)
	if err != nil {
		return nil, err
	}
	return aead.Seal(nil, iv, plaintext, aad), nil
}

// errAuth is the cause of a failed AEAD open.
var errAuth = errors.New("message authentication failed (wrong key, IV, AAD or tag)")

// openGCM opens ct||tag.
func openGCM(key, iv, aad, ctTag []byte) ([]byte, error) {
	aead, err := newGCM(key, iv)
	if err != nil {
		return nil, err
	}
	if len(ctTag) < gcmTag {
		return nil, fmt.Errorf("%w: ciphertext is shorter than the %d-byte tag", ErrInvalidParameter, gcmTag)
	}
	pt, err := aead.Open(nil, iv, ctTag, aad)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidParameter, errAuth)
	}
	return pt, nil
}
