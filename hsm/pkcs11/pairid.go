package pkcs11

import (
	"bytes"
	"crypto/rand"
	"fmt"

	"github.com/miekg/pkcs11"
)

// pairIDPrefix starts the CKA_ID Warden gives both halves of a key pair.
//
// A move relabels the private key and then the public key; a token has no
// transaction around the two, so a crash in between leaves the private key
// under the new label and the public key under the old one. The shared ID
// is what lets the next lookup of either label finish that move
// (finishMove). Only IDs with this prefix pair objects up: keys made by
// other tools, whose IDs mean something to those tools, are never
// relabelled or given a new ID.
var pairIDPrefix = []byte("warden-pair:")

// newPairID returns a fresh pair ID: the prefix and 16 random bytes.
func newPairID() []byte {
	id := make([]byte, len(pairIDPrefix)+16)
	copy(id, pairIDPrefix)
	rand.Read(id[len(pairIDPrefix):])
	return id
}

// isPairID reports whether id is one newPairID made.
func isPairID(id []byte) bool {
	return len(id) == len(pairIDPrefix)+16 && bytes.HasPrefix(id, pairIDPrefix)
}

// ensurePairID gives the halves priv and pub one pair ID if neither has a
// CKA_ID yet (a pair made before Warden set one), so that moving them is
// crash-safe. Halves that already share a pair ID are left as they are, and
// so are halves with any other ID.
func (t *token) ensurePairID(s pkcs11.SessionHandle, priv, pub pkcs11.ObjectHandle) {
	var ids [2][]byte
	for i, h := range []pkcs11.ObjectHandle{priv, pub} {
		a, err := t.attrs(s, h, pkcs11.CKA_ID)
		if err != nil {
			return
		}
		ids[i] = a[0].Value
	}
	// The public half is written first, so a crash between the two writes
	// leaves a public half with a pair ID and a private half with none,
	// which the next move completes.
	var id []byte
	set := []pkcs11.ObjectHandle{pub, priv}
	switch {
	case len(ids[0]) == 0 && len(ids[1]) == 0:
		id = newPairID()
	case len(ids[0]) == 0 && isPairID(ids[1]):
		id, set = ids[1], set[1:]
	default:
		return // a pair ID already, or an ID another tool set
	}
	for _, h := range set {
		if err := t.b.p.SetAttributeValue(s, h, []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_ID, id)}); err != nil {
			t.b.log.Info("PKCS#11 token would not set a key pair's CKA_ID; its move is not crash-safe",
				"token", t.name, "err", describe(err))
			return
		}
	}
}

// finishMove completes a key pair move that a crash interrupted between
// its two relabellings, if label holds exactly one half of a pair whose
// other half, found by their shared pair ID, carries another label:
//   - label holds the private key: the move to label had begun, and the
//     public key is relabelled to label;
//   - label holds the public key: the private key has already moved on,
//     and the public key follows it.
//
// Either way the move ends as if it had not been interrupted. A label
// holding both halves, neither, or halves without a pair ID is left alone.
func (t *token) finishMove(s pkcs11.SessionHandle, label string) error {
	priv, err := t.labelled(s, pkcs11.CKO_PRIVATE_KEY, label)
	if err != nil {
		return err
	}
	pub, err := t.labelled(s, pkcs11.CKO_PUBLIC_KEY, label)
	if err != nil {
		return err
	}
	var half pkcs11.ObjectHandle
	var other uint
	switch {
	case len(priv) == 1 && len(pub) == 0:
		half, other = priv[0], pkcs11.CKO_PUBLIC_KEY
	case len(priv) == 0 && len(pub) == 1:
		half, other = pub[0], pkcs11.CKO_PRIVATE_KEY
	default:
		return nil
	}
	a, err := t.attrs(s, half, pkcs11.CKA_ID)
	if err != nil || !isPairID(a[0].Value) {
		return nil
	}
	partners, err := t.findAll(s, []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, other),
		pkcs11.NewAttribute(pkcs11.CKA_ID, a[0].Value),
	})
	if err != nil || len(partners) != 1 {
		return err
	}
	pubH, dest := partners[0], label
	if other == pkcs11.CKO_PRIVATE_KEY {
		l, err := t.attrs(s, partners[0], pkcs11.CKA_LABEL)
		if err != nil {
			return err
		}
		pubH, dest = half, string(l[0].Value)
		// Only a lone private key is finished: never give a label two
		// public keys.
		if hs, err := t.labelled(s, pkcs11.CKO_PUBLIC_KEY, dest); err != nil || len(hs) != 0 {
			return err
		}
	}
	if err := t.b.p.SetAttributeValue(s, pubH, []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_LABEL, dest)}); err != nil {
		return fmt.Errorf("finish an interrupted key pair move: %w", describe(err))
	}
	t.forget(label)
	t.forget(dest)
	t.b.log.Warn("PKCS#11 finished a key pair move that was interrupted", "token", t.name, "label", dest)
	return nil
}
