package pkcs11

import (
	"context"
	"errors"
	"fmt"

	"github.com/miekg/pkcs11"

	"github.com/warden-iot/warden/hsm"
)

// gcmTagBits is the AES-GCM tag length aziot uses.
const gcmTagBits = 128

// isAES maps a usage to the key type aziot creates for it: encrypt → AES,
// derive/sign → an HMAC-capable generic secret. Both or neither is invalid.
func isAES(usage hsm.Usage) (bool, error) {
	enc := usage&hsm.UsageEncrypt != 0
	sign := usage&hsm.UsageSign != 0
	if enc == sign {
		return false, fmt.Errorf("pkcs11: key usage %d must be either derive/sign or encrypt (%w)", usage, hsm.ErrInvalidParameter)
	}
	return enc, nil
}

// secretTemplate is the template of a token-resident, private, sensitive,
// non-extractable secret key labelled label.
func secretTemplate(label string, aes bool, extra ...*pkcs11.Attribute) []*pkcs11.Attribute {
	t := []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_SECRET_KEY),
		pkcs11.NewAttribute(pkcs11.CKA_TOKEN, true),
		pkcs11.NewAttribute(pkcs11.CKA_PRIVATE, true),
		pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, true),
		pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, false),
		pkcs11.NewAttribute(pkcs11.CKA_LABEL, label),
	}
	if aes {
		t = append(t,
			pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_AES),
			pkcs11.NewAttribute(pkcs11.CKA_ENCRYPT, true),
			pkcs11.NewAttribute(pkcs11.CKA_DECRYPT, true))
	} else {
		t = append(t,
			pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_GENERIC_SECRET),
			pkcs11.NewAttribute(pkcs11.CKA_SIGN, true),
			pkcs11.NewAttribute(pkcs11.CKA_VERIFY, true))
	}
	return append(t, extra...)
}

func mech(m uint, param any) []*pkcs11.Mechanism {
	return []*pkcs11.Mechanism{pkcs11.NewMechanism(m, param)}
}

// CreateKey generates a 32-byte symmetric key labelled with loc's object
// unless a secret key with that label exists. Encrypt keys are AES-256 (AES-128
// if the token refuses 256 bits) and must pass an AES-GCM self-test, else they
// are deleted again; derive/sign keys are generic secrets for CKM_SHA256_HMAC.
// A token without the mechanism gives an error wrapping hsm.ErrUnsupported.
func (b *Backend) CreateKey(ctx context.Context, loc string, usage hsm.Usage) error {
	aes, err := isAES(usage)
	if err != nil {
		return err
	}
	return b.do(ctx, loc, "create key", func(t *token, s pkcs11.SessionHandle, label string) error {
		t.createMu.Lock()
		defer t.createMu.Unlock()
		// Ask the token, not the cache: the key may have been deleted behind us.
		if hs, err := t.labelled(s, pkcs11.CKO_SECRET_KEY, label); err != nil || len(hs) > 0 {
			return err
		}
		if aes {
			_, err = t.generateAES(s, label)
		} else {
			_, err = t.generateHMAC(s, label)
		}
		t.forget(label)
		if err != nil {
			return err
		}
		t.b.log.Info("PKCS#11 symmetric key created", "token", t.name, "label", label, "aes", aes)
		return nil
	})
}

// generateHMAC makes a 32-byte generic secret and checks that the token can
// use it for CKM_SHA256_HMAC.
func (t *token) generateHMAC(s pkcs11.SessionHandle, label string) (pkcs11.ObjectHandle, error) {
	h, err := t.b.p.GenerateKey(s, mech(pkcs11.CKM_GENERIC_SECRET_KEY_GEN, nil),
		secretTemplate(label, false, pkcs11.NewAttribute(pkcs11.CKA_VALUE_LEN, 32)))
	if err != nil {
		return 0, fmt.Errorf("generate a generic secret for HMAC: %w", describe(err))
	}
	if err := t.selfTest(s, h, false); err != nil {
		t.destroyFailed(s, h, label)
		return 0, fmt.Errorf("the token made a generic secret but cannot use it for HMAC-SHA256, so it was deleted: %w: %w",
			plain(err), hsm.ErrUnsupported)
	}
	return h, nil
}

// destroyFailed destroys a key that failed its self-test.
func (t *token) destroyFailed(s pkcs11.SessionHandle, h pkcs11.ObjectHandle, label string) {
	if err := t.b.p.DestroyObject(s, h); err != nil {
		t.b.log.Error("PKCS#11 could not delete a key that failed its self-test",
			"token", t.name, "label", label, "err", plain(err))
	}
}

// generateAES makes an AES-256 key (AES-128 if the token refuses) and checks
// that the token can use it for AES-GCM.
func (t *token) generateAES(s pkcs11.SessionHandle, label string) (pkcs11.ObjectHandle, error) {
	p := t.b.p
	h, err := p.GenerateKey(s, mech(pkcs11.CKM_AES_KEY_GEN, nil),
		secretTemplate(label, true, pkcs11.NewAttribute(pkcs11.CKA_VALUE_LEN, 32)))
	if err != nil {
		if errors.Is(class(code(err)), hsm.ErrUnsupported) {
			return 0, fmt.Errorf("generate an AES key: %w", describe(err))
		}
		t.b.log.Info("PKCS#11 token refused an AES-256 key; trying AES-128", "token", t.name, "err", describe(err))
		h, err = p.GenerateKey(s, mech(pkcs11.CKM_AES_KEY_GEN, nil),
			secretTemplate(label, true, pkcs11.NewAttribute(pkcs11.CKA_VALUE_LEN, 16)))
		if err != nil {
			return 0, fmt.Errorf("generate an AES-128 key: %w", describe(err))
		}
	}
	if err := t.selfTest(s, h, true); err != nil {
		t.destroyFailed(s, h, label)
		return 0, fmt.Errorf("the token made an AES key but cannot use it for AES-GCM, so it was deleted: %w: %w",
			plain(err), hsm.ErrUnsupported)
	}
	return h, nil
}

// selfTest uses the key h once: an AES-GCM encryption or an HMAC-SHA256.
func (t *token) selfTest(s pkcs11.SessionHandle, h pkcs11.ObjectHandle, aes bool) error {
	var err error
	if aes {
		_, err = t.gcm(s, h, true, make([]byte, 12), nil, make([]byte, 16))
	} else {
		_, err = t.sign(s, h, pkcs11.CKM_SHA256_HMAC, []byte("warden self-test"))
	}
	return err
}

// plain gives a PKCS#11 return value its name and meaning without the hsm
// sentinel describe would add.
func plain(err error) error {
	if p, ok := err.(pkcs11.Error); ok {
		return ckrError{p}
	}
	return err
}

// ImportKey stores key as a secret key object labelled with loc's object
// (AES for encrypt, generic secret for derive/sign), then deletes the secret
// keys that had that label. If the token cannot create the object the error
// wraps hsm.ErrUnsupported, so the key store falls back as aziot does.
func (b *Backend) ImportKey(ctx context.Context, loc string, key []byte, usage hsm.Usage) error {
	aes, err := isAES(usage)
	if err != nil {
		return err
	}
	if len(key) == 0 {
		return fmt.Errorf("pkcs11: import key: the key is empty (%w)", hsm.ErrInvalidParameter)
	}
	return b.do(ctx, loc, "import key", func(t *token, s pkcs11.SessionHandle, label string) error {
		t.createMu.Lock()
		defer t.createMu.Unlock()
		p := t.b.p
		old, err := t.labelled(s, pkcs11.CKO_SECRET_KEY, label)
		if err != nil {
			return fmt.Errorf("look for the key it replaces: %w", describe(err))
		}
		h, err := p.CreateObject(s, secretTemplate(label, aes, pkcs11.NewAttribute(pkcs11.CKA_VALUE, key)))
		if err != nil {
			return fmt.Errorf("create the key object: %w: %w", plain(err), hsm.ErrUnsupported)
		}
		// Tokens accept key objects they cannot use (SoftHSM takes a 5-byte
		// AES key, and refuses HMAC keys under 32 bytes only when signing),
		// so try the key once, as aziot's AES-GCM check does.
		if err := t.selfTest(s, h, aes); err != nil {
			t.destroyFailed(s, h, label)
			return fmt.Errorf("the token took the key but cannot use it, so it was deleted: %w: %w", plain(err), hsm.ErrUnsupported)
		}
		t.forget(label)
		for _, o := range old {
			if err := p.DestroyObject(s, o); err != nil && code(err) != pkcs11.CKR_OBJECT_HANDLE_INVALID {
				_ = p.DestroyObject(s, h)
				return fmt.Errorf("delete the key it replaces: %w", describe(err))
			}
		}
		t.forget(label)
		t.b.log.Info("PKCS#11 symmetric key imported", "token", t.name, "label", label, "aes", aes, "replaced", len(old))
		return nil
	})
}

// KeyExists reports whether the token holds a secret key labelled with loc's
// object. It asks the token, not the handle cache.
func (b *Backend) KeyExists(ctx context.Context, loc string) (bool, error) {
	var found bool
	err := b.do(ctx, loc, "look up key", func(t *token, s pkcs11.SessionHandle, label string) error {
		t.handles.Delete(objKey{pkcs11.CKO_SECRET_KEY, label})
		_, err := t.find(s, pkcs11.CKO_SECRET_KEY, label)
		found = err == nil
		if errors.Is(err, hsm.ErrNotFound) {
			return nil
		}
		return err
	})
	return found, err
}

// DeleteKey destroys every secret key labelled with loc's object; none is
// not an error.
func (b *Backend) DeleteKey(ctx context.Context, loc string) error {
	return b.do(ctx, loc, "delete key", func(t *token, s pkcs11.SessionHandle, label string) error {
		t.createMu.Lock()
		defer t.createMu.Unlock()
		return t.destroy(s, label, pkcs11.CKO_SECRET_KEY)
	})
}

// destroy destroys the objects of the given classes labelled label.
func (t *token) destroy(s pkcs11.SessionHandle, label string, classes ...uint) error {
	defer t.forget(label)
	for _, c := range classes {
		hs, err := t.labelled(s, c, label)
		if err != nil {
			return fmt.Errorf("look for the objects: %w", describe(err))
		}
		for _, h := range hs {
			if err := t.b.p.DestroyObject(s, h); err != nil && code(err) != pkcs11.CKR_OBJECT_HANDLE_INVALID {
				return fmt.Errorf("destroy an object: %w", describe(err))
			}
		}
		if len(hs) > 0 {
			t.b.log.Info("PKCS#11 objects destroyed", "token", t.name, "label", label, "count", len(hs))
		}
	}
	return nil
}

// HMACSHA256 signs msg with CKM_SHA256_HMAC and the secret key labelled with
// loc's object.
func (b *Backend) HMACSHA256(ctx context.Context, loc string, msg []byte) ([]byte, error) {
	var mac []byte
	err := b.do(ctx, loc, "sign with", func(t *token, s pkcs11.SessionHandle, label string) error {
		return t.with(s, pkcs11.CKO_SECRET_KEY, label, func(o *object) error {
			var err error
			mac, err = t.sign(s, o.h, pkcs11.CKM_SHA256_HMAC, msg)
			return err
		})
	})
	return mac, err
}

// EncryptAEAD encrypts with CKM_AES_GCM (caller's IV and AAD, 128-bit tag)
// and the AES key labelled with loc's object; it returns ct||tag.
func (b *Backend) EncryptAEAD(ctx context.Context, loc string, iv, aad, plaintext []byte) ([]byte, error) {
	return b.aead(ctx, loc, true, iv, aad, plaintext)
}

// DecryptAEAD decrypts ct||tag with CKM_AES_GCM; a wrong tag gives an error
// wrapping hsm.ErrInvalidParameter.
func (b *Backend) DecryptAEAD(ctx context.Context, loc string, iv, aad, ciphertext []byte) ([]byte, error) {
	if len(ciphertext) < gcmTagBits/8 {
		return nil, fmt.Errorf("pkcs11: decrypt: the ciphertext is shorter than the %d-byte tag (%w)",
			gcmTagBits/8, hsm.ErrInvalidParameter)
	}
	return b.aead(ctx, loc, false, iv, aad, ciphertext)
}

func (b *Backend) aead(ctx context.Context, loc string, encrypt bool, iv, aad, in []byte) ([]byte, error) {
	if len(iv) == 0 {
		return nil, fmt.Errorf("pkcs11: AES-GCM needs an IV (%w)", hsm.ErrInvalidParameter)
	}
	op := "decrypt with"
	if encrypt {
		op = "encrypt with"
	}
	var out []byte
	err := b.do(ctx, loc, op, func(t *token, s pkcs11.SessionHandle, label string) error {
		return t.with(s, pkcs11.CKO_SECRET_KEY, label, func(o *object) error {
			if err := o.wantType(pkcs11.CKK_AES, "AES"); err != nil {
				return err
			}
			var err error
			out, err = t.gcm(s, o.h, encrypt, iv, aad, in)
			return err
		})
	})
	return out, err
}

// gcm runs one AES-GCM encryption or decryption on the token.
func (t *token) gcm(s pkcs11.SessionHandle, h pkcs11.ObjectHandle, encrypt bool, iv, aad, in []byte) ([]byte, error) {
	p := t.b.p
	params := pkcs11.NewGCMParams(iv, aad, gcmTagBits)
	defer params.Free()
	m := mech(pkcs11.CKM_AES_GCM, params)
	if encrypt {
		if err := p.EncryptInit(s, m, h); err != nil {
			return nil, err
		}
		return p.Encrypt(s, in)
	}
	if err := p.DecryptInit(s, m, h); err != nil {
		return nil, err
	}
	out, err := p.Decrypt(s, in)
	if c := code(err); c == pkcs11.CKR_FUNCTION_FAILED || c == pkcs11.CKR_GENERAL_ERROR {
		// Some tokens (SoftHSM among them) report a bad tag this way.
		return nil, fmt.Errorf("the tag does not match the ciphertext, IV and AAD (%w): %w", plain(err), hsm.ErrInvalidParameter)
	}
	return out, err
}
