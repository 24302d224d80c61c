package tpm

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
)

// ActivationBlob is the auth key DPS sends a TPM device (the
// authenticationKey of its 401 challenge, base64-decoded): TPM-marshalled
// structures back to back (spec/protocols.md §1.3).
type ActivationBlob struct {
	// CredentialBlob is the TPM2B_ID_OBJECT's contents: the credential
	// (the inner wrapper key) made for the SRK's name under the EK.
	CredentialBlob []byte
	// Secret is the TPM2B_ENCRYPTED_SECRET that ActivateCredential
	// decrypts with the EK.
	Secret []byte
	// Duplicate is the TPM2B_PRIVATE: the auth key wrapped for the SRK.
	Duplicate []byte
	// EncryptedSeed is the TPM2B_ENCRYPTED_SECRET of the outer wrapper.
	EncryptedSeed []byte
	// Public is the TPM2B_PUBLIC's contents: the auth key's TPMT_PUBLIC.
	Public []byte
	// Trailing counts the bytes after the TPM2B_PUBLIC (the C SDK's
	// encrypted-data trailer, which import does not use).
	Trailing int
}

// ParseActivationBlob unmarshals an activation blob. The public area must
// be an HMAC key's TPMT_PUBLIC with nothing after it; the other structures
// are checked by the TPM. Errors wrap ErrBadBlob and say where it broke.
func ParseActivationBlob(b []byte) (*ActivationBlob, error) {
	var ab ActivationBlob
	fields := []struct {
		name string
		dst  *[]byte
	}{
		{"TPM2B_ID_OBJECT credential blob", &ab.CredentialBlob},
		{"TPM2B_ENCRYPTED_SECRET secret", &ab.Secret},
		{"TPM2B_PRIVATE duplicate", &ab.Duplicate},
		{"TPM2B_ENCRYPTED_SECRET encrypted seed", &ab.EncryptedSeed},
		{"TPM2B_PUBLIC public area", &ab.Public},
	}
	off := 0
	for _, f := range fields {
		if len(b)-off < 2 {
			return nil, fmt.Errorf("%w: %d bytes end before the %s", ErrBadBlob, len(b), f.name)
		}
		n := int(binary.BigEndian.Uint16(b[off:]))
		off += 2
		if n == 0 || len(b)-off < n {
			return nil, fmt.Errorf("%w: the %s at offset %d has size %d, %d bytes left", ErrBadBlob, f.name, off-2, n, len(b)-off)
		}
		*f.dst = b[off : off+n : off+n]
		off += n
	}
	ab.Trailing = len(b) - off
	pub, err := tpm2.Unmarshal[tpm2.TPMTPublic](ab.Public)
	if err != nil {
		return nil, fmt.Errorf("%w: the public area does not unmarshal: %w", ErrBadBlob, err)
	}
	if !bytes.Equal(tpm2.Marshal(pub), ab.Public) {
		return nil, fmt.Errorf("%w: the public area has bytes after its TPMT_PUBLIC", ErrBadBlob)
	}
	if !isHMACKey(pub) {
		return nil, fmt.Errorf("%w: the key in the blob is a %s, want an HMAC key", ErrBadBlob, describe(pub))
	}
	return &ab, nil
}

// isHMACKey reports whether p is a keyed-hash signing key, which is what
// DPS sends and TPM2_HMAC needs.
func isHMACKey(p *tpm2.TPMTPublic) bool {
	if p.Type != tpm2.TPMAlgKeyedHash || !p.ObjectAttributes.SignEncrypt || p.ObjectAttributes.Decrypt {
		return false
	}
	d, err := p.Parameters.KeyedHashDetail()
	return err == nil && (d.Scheme.Scheme == tpm2.TPMAlgHMAC || d.Scheme.Scheme == tpm2.TPMAlgNull)
}

// readAuthKey reads the object at the auth key's handle: nil when there is
// none, ErrHandleOccupied when it is not an HMAC key (then it is not ours to
// evict or use).
func (t *TPM) readAuthKey(tp transport.TPM) (*object, error) {
	obj, pub, ok, err := readPublic(tp, t.authKey)
	if err != nil || !ok {
		return nil, err
	}
	if !isHMACKey(pub) {
		return nil, fmt.Errorf("%w: the auth key handle %#x holds a %s, not an HMAC key; choose another [tpm] auth_key_index, or evict it (tpm2_evictcontrol -C o -c %#x) if nothing else uses it",
			ErrHandleOccupied, uint32(t.authKey), describe(pub), uint32(t.authKey))
	}
	return obj, nil
}

// ImportAuthKey imports the auth key of a DPS activation blob and persists
// it at the auth key handle, replacing the key there (aziot's T2). The
// credential is activated with the EK through a policy session
// (PolicySecret on the endorsement hierarchy) for the SRK, giving the inner
// wrapper's key; the duplicate is imported under the SRK with it (AES-128-
// CFB), loaded, and persisted. The old key is evicted only once the new one
// is loaded, so a bad blob leaves the old key in place.
func (t *TPM) ImportAuthKey(ctx context.Context, blob []byte) error {
	ab, err := ParseActivationBlob(blob)
	if err != nil {
		return fmt.Errorf("import auth key: %w", err)
	}
	return t.do(ctx, "import auth key", func(tp transport.TPM) error {
		t.authKeyName = nil
		ek, err := t.ensureKey(tp, t.ekSpec())
		if err != nil {
			return err
		}
		srk, err := t.ensureKey(tp, t.srkSpec())
		if err != nil {
			return err
		}
		old, err := t.readAuthKey(tp)
		if err != nil {
			return err
		}
		inner, err := t.activate(tp, ek, srk, ab)
		if err != nil {
			return err
		}
		srkAuth := tpm2.AuthHandle{Handle: srk.handle, Name: srk.name, Auth: tpm2.PasswordAuth(nil)}
		public := tpm2.BytesAs2B[tpm2.TPMTPublic](ab.Public)
		imp, err := tpm2.Import{
			ParentHandle:  srkAuth,
			EncryptionKey: tpm2.TPM2BData{Buffer: inner},
			ObjectPublic:  public,
			Duplicate:     tpm2.TPM2BPrivate{Buffer: ab.Duplicate},
			InSymSeed:     tpm2.TPM2BEncryptedSecret{Buffer: ab.EncryptedSeed},
			Symmetric: tpm2.TPMTSymDef{
				Algorithm: tpm2.TPMAlgAES,
				KeyBits:   tpm2.NewTPMUSymKeyBits(tpm2.TPMAlgAES, tpm2.TPMKeyBits(128)),
				Mode:      tpm2.NewTPMUSymMode(tpm2.TPMAlgAES, tpm2.TPMAlgCFB),
			},
		}.Execute(tp)
		if err != nil {
			return fmt.Errorf("import the duplicated key under the SRK (fails for a damaged duplicate or seed): %w", cmdErr("TPM2_Import", err))
		}
		ld, err := tpm2.Load{ParentHandle: srkAuth, InPrivate: imp.OutPrivate, InPublic: public}.Execute(tp)
		if err != nil {
			return cmdErr("TPM2_Load", err)
		}
		defer t.flush(tp, ld.ObjectHandle)
		if old != nil {
			if err := t.evict(tp, old); err != nil {
				return fmt.Errorf("evict the previous auth key at %#x: %w", uint32(t.authKey), err)
			}
		}
		if err := t.persist(tp, ld.ObjectHandle, ld.Name, t.authKey); err != nil {
			return fmt.Errorf("persist the auth key at %#x: %w", uint32(t.authKey), err)
		}
		t.authKeyName = &ld.Name
		t.log.Info("tpm: auth key imported", "handle", fmt.Sprintf("%#x", uint32(t.authKey)), "replaced", old != nil)
		return nil
	})
}

// activate runs ActivateCredential(SRK, EK) on the blob's credential and
// returns it: the key of the duplicate's inner wrapper.
func (t *TPM) activate(tp transport.TPM, ek, srk *object, ab *ActivationBlob) ([]byte, error) {
	sess, closeSess, err := tpm2.PolicySession(tp, tpm2.TPMAlgSHA256, 16)
	if err != nil {
		return nil, cmdErr("TPM2_StartAuthSession", err)
	}
	defer func() {
		if err := closeSess(); err != nil && !errors.Is(err, tpm2.TPMRCHandle) {
			t.log.Warn("tpm: could not flush the EK policy session", "err", cmdErr("TPM2_FlushContext", err))
		}
	}()
	_, err = tpm2.PolicySecret{
		AuthHandle:    tpm2.AuthHandle{Handle: tpm2.TPMRHEndorsement, Auth: tpm2.PasswordAuth([]byte(t.opts.EndorsementAuth))},
		PolicySession: sess.Handle(),
		NonceTPM:      sess.NonceTPM(),
	}.Execute(tp)
	if err != nil {
		return nil, hierarchyErr("endorsement", cmdErr("TPM2_PolicySecret", err))
	}
	ac, err := tpm2.ActivateCredential{
		ActivateHandle: tpm2.AuthHandle{Handle: srk.handle, Name: srk.name, Auth: tpm2.PasswordAuth(nil)},
		KeyHandle:      tpm2.AuthHandle{Handle: ek.handle, Name: ek.name, Auth: sess},
		CredentialBlob: tpm2.TPM2BIDObject{Buffer: ab.CredentialBlob},
		Secret:         tpm2.TPM2BEncryptedSecret{Buffer: ab.Secret},
	}.Execute(tp)
	if err != nil {
		return nil, fmt.Errorf("activate the credential (fails for a blob made for another TPM's EK and SRK, or damaged): %w",
			cmdErr("TPM2_ActivateCredential", err))
	}
	return ac.CertInfo.Buffer, nil
}

// maxHMACBuffer is the most data one TPM2_HMAC takes (MAX_DIGEST_BUFFER
// of PC-client TPMs); longer data goes through an HMAC sequence.
const maxHMACBuffer = 1024

// SignWithAuthKey returns HMAC-SHA256(auth key, data) computed by the TPM
// (aziot's T3). Without an auth key it fails with ErrNoAuthKey.
func (t *TPM) SignWithAuthKey(ctx context.Context, data []byte) ([]byte, error) {
	var mac []byte
	err := t.do(ctx, "sign with auth key", func(tp transport.TPM) error {
		if t.authKeyName == nil {
			obj, err := t.readAuthKey(tp)
			if err != nil {
				return err
			}
			if obj == nil {
				return fmt.Errorf("%w: nothing at %#x; DPS provisioning imports it (T2)", ErrNoAuthKey, uint32(t.authKey))
			}
			t.authKeyName = &obj.name
		}
		var err error
		if len(data) <= maxHMACBuffer {
			mac, err = hmac(tp, t.authKey, data)
		} else {
			key := tpm2.AuthHandle{Handle: t.authKey, Name: *t.authKeyName, Auth: tpm2.PasswordAuth(nil)}
			mac, err = t.hmacSequence(tp, key, data)
		}
		if err != nil {
			t.authKeyName = nil // read the key again next time
			if errors.Is(err, tpm2.TPMRCHandle) {
				if obj, rerr := t.readAuthKey(tp); rerr == nil && obj == nil {
					err = fmt.Errorf("%w: nothing at %#x (evicted by another tool?); DPS provisioning imports it (T2): %w", ErrNoAuthKey, uint32(t.authKey), err)
				}
			}
		}
		return err
	})
	return mac, err
}

// hmacSequence computes the HMAC of data longer than one TPM2_HMAC takes.
func (t *TPM) hmacSequence(tp transport.TPM, key tpm2.AuthHandle, data []byte) ([]byte, error) {
	auth := make([]byte, 16)
	rand.Read(auth)
	st, err := tpm2.HmacStart{Handle: key, Auth: tpm2.TPM2BAuth{Buffer: auth}, HashAlg: tpm2.TPMAlgSHA256}.Execute(tp)
	if err != nil {
		return nil, cmdErr("TPM2_HMAC_Start", err)
	}
	seq := tpm2.AuthHandle{Handle: st.SequenceHandle, Auth: tpm2.PasswordAuth(auth)}
	for len(data) > maxHMACBuffer {
		if _, err := (tpm2.SequenceUpdate{SequenceHandle: seq, Buffer: tpm2.TPM2BMaxBuffer{Buffer: data[:maxHMACBuffer]}}).Execute(tp); err != nil {
			t.flush(tp, st.SequenceHandle)
			return nil, cmdErr("TPM2_SequenceUpdate", err)
		}
		data = data[maxHMACBuffer:]
	}
	rsp, err := tpm2.SequenceComplete{SequenceHandle: seq, Buffer: tpm2.TPM2BMaxBuffer{Buffer: data}, Hierarchy: tpm2.TPMRHNull}.Execute(tp)
	if err != nil {
		t.flush(tp, st.SequenceHandle)
		return nil, cmdErr("TPM2_SequenceComplete", err)
	}
	return rsp.Result.Buffer, nil
}
