package tpm

import (
	"bytes"
	"context"
	"errors"
	"fmt"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
)

// object is a persistent object as read from the TPM.
type object struct {
	handle tpm2.TPMHandle
	name   tpm2.TPM2BName
	// public is the TPMT_PUBLIC exactly as the TPM marshals it.
	public []byte
}

// marshal2B returns the object's TPM2B_PUBLIC.
func (o *object) marshal2B() []byte {
	out := make([]byte, 2+len(o.public))
	out[0], out[1] = byte(len(o.public)>>8), byte(len(o.public))
	copy(out[2:], o.public)
	return out
}

// keySpec is one of the primary keys Warden creates when absent.
type keySpec struct {
	role      string // "EK" or "SRK"
	handle    tpm2.TPMHandle
	hierarchy tpm2.TPMHandle
	hierName  string // the [tpm.hierarchy_authorization] key
	template  tpm2.TPMTPublic
	// fits reports why an object found at handle cannot serve, or "".
	fits func(*tpm2.TPMTPublic) string
}

// ekPolicy is the EK's authPolicy: TPM2_PolicySecret(TPM_RH_ENDORSEMENT).
var ekPolicy = tpm2.RSAEKTemplate.AuthPolicy.Buffer

func (t *TPM) ekSpec() keySpec {
	return keySpec{role: "EK", handle: EKHandle, hierarchy: tpm2.TPMRHEndorsement, hierName: "endorsement",
		template: tpm2.RSAEKTemplate, fits: func(p *tpm2.TPMTPublic) string {
			if why := rsaStorageShape(p); why != "" {
				return why
			}
			if !p.ObjectAttributes.AdminWithPolicy || !bytes.Equal(p.AuthPolicy.Buffer, ekPolicy) {
				return "its policy is not the TCG EK policy (PolicySecret on the endorsement hierarchy)"
			}
			return ""
		}}
}

func (t *TPM) srkSpec() keySpec {
	return keySpec{role: "SRK", handle: SRKHandle, hierarchy: tpm2.TPMRHOwner, hierName: "owner",
		template: tpm2.RSASRKTemplate, fits: func(p *tpm2.TPMTPublic) string {
			if why := rsaStorageShape(p); why != "" {
				return why
			}
			if !p.ObjectAttributes.UserWithAuth {
				return "it cannot be used with its authorization value (userWithAuth clear)"
			}
			return ""
		}}
}

// rsaStorageShape checks what DPS relies on in the EK and SRK: RSA keys
// that are restricted decryption keys with AES-128-CFB for their children.
func rsaStorageShape(p *tpm2.TPMTPublic) string {
	if p.Type != tpm2.TPMAlgRSA {
		return "it is not an RSA key (DPS encrypts to RSA EKs and SRKs)"
	}
	a := p.ObjectAttributes
	if !a.Restricted || !a.Decrypt || a.SignEncrypt {
		return "it is not a restricted decryption key"
	}
	rsa, err := p.Parameters.RSADetail()
	if err != nil {
		return "its RSA parameters do not parse"
	}
	bits, err1 := rsa.Symmetric.KeyBits.AES()
	mode, err2 := rsa.Symmetric.Mode.AES()
	if rsa.Symmetric.Algorithm != tpm2.TPMAlgAES || err1 != nil || err2 != nil || *bits != 128 || *mode != tpm2.TPMAlgCFB {
		return "its symmetric algorithm is not AES-128-CFB"
	}
	return ""
}

// describe names an object's kind for messages.
func describe(p *tpm2.TPMTPublic) string {
	kind := map[tpm2.TPMAlgID]string{tpm2.TPMAlgRSA: "RSA", tpm2.TPMAlgECC: "ECC",
		tpm2.TPMAlgKeyedHash: "keyed-hash", tpm2.TPMAlgSymCipher: "symmetric"}[p.Type]
	if kind == "" {
		kind = fmt.Sprintf("type %#x", uint16(p.Type))
	}
	if rsa, err := p.Parameters.RSADetail(); p.Type == tpm2.TPMAlgRSA && err == nil {
		kind = fmt.Sprintf("RSA-%d", rsa.KeyBits)
	}
	a := p.ObjectAttributes
	switch {
	case a.Restricted && a.Decrypt:
		kind += " storage key"
	case a.Restricted && a.SignEncrypt:
		kind += " restricted signing key"
	case a.SignEncrypt && a.Decrypt:
		kind += " sign+decrypt key"
	case a.SignEncrypt:
		kind += " signing key"
	case a.Decrypt:
		kind += " decryption key"
	default:
		kind += " object (sealed data?)"
	}
	return kind
}

// readPublic reads the object at h; ok is false when there is none.
func readPublic(tp transport.TPM, h tpm2.TPMHandle) (_ *object, pub *tpm2.TPMTPublic, ok bool, err error) {
	rsp, err := tpm2.ReadPublic{ObjectHandle: h}.Execute(tp)
	if err != nil {
		err = cmdErr("TPM2_ReadPublic", err)
		if errors.Is(err, tpm2.TPMRCHandle) {
			return nil, nil, false, nil
		}
		return nil, nil, false, fmt.Errorf("read %#x: %w", uint32(h), err)
	}
	pub, err = rsp.OutPublic.Contents()
	if err != nil {
		return nil, nil, false, fmt.Errorf("read %#x: public area does not parse: %w", uint32(h), err)
	}
	return &object{handle: h, name: rsp.Name, public: rsp.OutPublic.Bytes()}, pub, true, nil
}

// ensureKey reads the key of spec, creating it as a primary key from the
// template and persisting it when absent. An object of another kind at the
// handle is ErrHandleOccupied: Warden never evicts what it did not create.
func (t *TPM) ensureKey(tp transport.TPM, spec keySpec) (*object, error) {
	obj, pub, ok, err := readPublic(tp, spec.handle)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", spec.role, err)
	}
	if ok {
		if why := spec.fits(pub); why != "" {
			return nil, fmt.Errorf("%s: %w: %#x holds a %s, and %s; evict it (tpm2_evictcontrol -C o -c %#x) if nothing else uses it, and Warden creates the standard %s",
				spec.role, ErrHandleOccupied, uint32(spec.handle), describe(pub), why, uint32(spec.handle), spec.role)
		}
		return obj, nil
	}
	auth := t.opts.OwnerAuth
	if spec.hierarchy == tpm2.TPMRHEndorsement {
		auth = t.opts.EndorsementAuth
	}
	cp, err := tpm2.CreatePrimary{
		PrimaryHandle: tpm2.AuthHandle{Handle: spec.hierarchy, Auth: tpm2.PasswordAuth([]byte(auth))},
		InPublic:      tpm2.New2B(spec.template),
	}.Execute(tp)
	if err != nil {
		return nil, fmt.Errorf("create %s: %w", spec.role, hierarchyErr(spec.hierName, cmdErr("TPM2_CreatePrimary", err)))
	}
	defer t.flush(tp, cp.ObjectHandle)
	if err := t.persist(tp, cp.ObjectHandle, cp.Name, spec.handle); err != nil {
		return nil, fmt.Errorf("persist %s: %w", spec.role, err)
	}
	t.log.Info("tpm: created and persisted a primary key", "key", spec.role, "handle", fmt.Sprintf("%#x", uint32(spec.handle)))
	obj, _, ok, err = readPublic(tp, spec.handle)
	if err == nil && !ok {
		err = fmt.Errorf("%#x is empty right after EvictControl", uint32(spec.handle))
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", spec.role, err)
	}
	return obj, nil
}

// persist makes the transient object h persistent at handle (owner auth).
func (t *TPM) persist(tp transport.TPM, h tpm2.TPMHandle, name tpm2.TPM2BName, handle tpm2.TPMHandle) error {
	_, err := tpm2.EvictControl{
		Auth:             tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.PasswordAuth([]byte(t.opts.OwnerAuth))},
		ObjectHandle:     tpm2.NamedHandle{Handle: h, Name: name},
		PersistentHandle: handle,
	}.Execute(tp)
	return hierarchyErr("owner", cmdErr("TPM2_EvictControl", err))
}

// evict removes the persistent object o (owner auth).
func (t *TPM) evict(tp transport.TPM, o *object) error {
	_, err := tpm2.EvictControl{
		Auth:             tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.PasswordAuth([]byte(t.opts.OwnerAuth))},
		ObjectHandle:     tpm2.NamedHandle{Handle: o.handle, Name: o.name},
		PersistentHandle: o.handle,
	}.Execute(tp)
	return hierarchyErr("owner", cmdErr("TPM2_EvictControl", err))
}

// Keys returns the EK's and the SRK's public areas, each a marshalled
// TPM2B_PUBLIC as DPS expects them (aziot's T1), creating and persisting
// either key when it is absent.
func (t *TPM) Keys(ctx context.Context) (ek, srk []byte, err error) {
	err = t.do(ctx, "get TPM keys", func(tp transport.TPM) error {
		e, err := t.ensureKey(tp, t.ekSpec())
		if err != nil {
			return err
		}
		s, err := t.ensureKey(tp, t.srkSpec())
		if err != nil {
			return err
		}
		ek, srk = e.marshal2B(), s.marshal2B()
		return nil
	})
	return ek, srk, err
}
