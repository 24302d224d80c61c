package emulator

import (
	"bytes"
	"crypto"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/google/go-tpm/tpm2"
)

// TPMActivation is what DPS sends a TPM device in its 401 challenge: an
// activation blob carrying a fresh HMAC auth key that only that device's
// TPM can import, and the key itself, which DPS keeps to check the SAS
// tokens the device signs with it.
type TPMActivation struct {
	// Blob is the activation blob (the challenge's authenticationKey,
	// base64-decoded): TPM2B_ID_OBJECT, TPM2B_ENCRYPTED_SECRET,
	// TPM2B_PRIVATE, TPM2B_ENCRYPTED_SECRET and TPM2B_PUBLIC back to back.
	Blob []byte
	// Key is the HMAC-SHA256 key duplicated in Blob.
	Key []byte
}

// Sign returns HMAC-SHA256(Key, data): what the device's TPM must answer.
func (a *TPMActivation) Sign(data []byte) []byte {
	m := hmac.New(sha256.New, a.Key)
	m.Write(data)
	return m.Sum(nil)
}

// Key sizes of the activation: a 32-byte HMAC key, and AES-128 for the
// inner wrapper (the credential), as the device imports with AES-128-CFB.
const (
	hmacKeySize  = 32
	innerKeySize = 16
)

// NewTPMActivation makes the activation blob for the device whose EK and
// SRK public areas are ek and srk (marshalled TPM2B_PUBLIC, as tpmd's T1
// returns and DPS receives them), as DPS does (spec/protocols.md §1.3):
//
//   - a fresh HMAC-SHA256 key is duplicated for the SRK, with an inner
//     wrapper (AES-128-CFB under a fresh key, SHA-256 integrity) and the
//     outer wrapper (seed encrypted to the SRK, label "DUPLICATE");
//   - the inner wrapper's key is made a credential for the SRK's name under
//     the EK (TPM2_MakeCredential in software, label "IDENTITY"), so only
//     the TPM holding both can recover it with TPM2_ActivateCredential.
//
// The crypto follows TPM 2.0 Part 1 §23 (duplication) and §24 (credential
// protection), written here from the specification rather than taken from
// the device side's library, so that the tests cross-check the two.
func NewTPMActivation(random io.Reader, ek, srk []byte) (*TPMActivation, error) {
	ekPub, _, err := parsePublic(ek)
	if err != nil {
		return nil, fmt.Errorf("EK: %w", err)
	}
	srkPub, srkName, err := parsePublic(srk)
	if err != nil {
		return nil, fmt.Errorf("SRK: %w", err)
	}
	key, seedValue, inner := make([]byte, hmacKeySize), make([]byte, sha256.Size), make([]byte, innerKeySize)
	for _, b := range [][]byte{key, seedValue, inner} {
		if _, err := io.ReadFull(random, b); err != nil {
			return nil, fmt.Errorf("random: %w", err)
		}
	}
	public, name := hmacKeyPublic(key, seedValue)
	dup, encSeed, err := duplicate(random, srkPub, name, keyedHashSensitive(key, seedValue), inner)
	if err != nil {
		return nil, fmt.Errorf("duplicate the auth key for the SRK: %w", err)
	}
	idObject, encSecret, err := makeCredential(random, ekPub, srkName, inner)
	if err != nil {
		return nil, fmt.Errorf("make the credential for the EK: %w", err)
	}
	var blob []byte
	for _, part := range [][]byte{idObject, encSecret, dup, encSeed, public} {
		blob = append(blob, tpm2b(part)...)
	}
	return &TPMActivation{Blob: blob, Key: key}, nil
}

// parsePublic parses a TPM2B_PUBLIC and returns the key and its name.
func parsePublic(b []byte) (*tpm2.TPMTPublic, []byte, error) {
	if len(b) < 2 || int(binary.BigEndian.Uint16(b)) != len(b)-2 {
		return nil, nil, errors.New("not a TPM2B_PUBLIC: the size does not match")
	}
	pub, err := tpm2.Unmarshal[tpm2.TPMTPublic](b[2:])
	if err != nil {
		return nil, nil, fmt.Errorf("TPMT_PUBLIC: %w", err)
	}
	if pub.NameAlg != tpm2.TPMAlgSHA256 || pub.Type != tpm2.TPMAlgRSA {
		return nil, nil, errors.New("want an RSA key with name algorithm SHA-256")
	}
	return pub, objectName(b[2:]), nil
}

// objectName is an object's name: nameAlg (SHA-256) ‖ SHA-256(TPMT_PUBLIC).
func objectName(public []byte) []byte {
	h := sha256.Sum256(public)
	return append([]byte{0x00, 0x0b}, h[:]...)
}

// hmacKeyPublic returns the TPMT_PUBLIC of an importable HMAC-SHA256 key
// (fixedTPM and fixedParent clear, as duplication requires; usable with
// its empty authorization value) and its name. unique is
// SHA-256(seedValue ‖ key), which the TPM checks on load.
func hmacKeyPublic(key, seedValue []byte) (public, name []byte) {
	unique := sha256.Sum256(append(append([]byte{}, seedValue...), key...))
	pub := tpm2.TPMTPublic{
		Type:             tpm2.TPMAlgKeyedHash,
		NameAlg:          tpm2.TPMAlgSHA256,
		ObjectAttributes: tpm2.TPMAObject{UserWithAuth: true, SignEncrypt: true},
		Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgKeyedHash, &tpm2.TPMSKeyedHashParms{
			Scheme: tpm2.TPMTKeyedHashScheme{
				Scheme:  tpm2.TPMAlgHMAC,
				Details: tpm2.NewTPMUSchemeKeyedHash(tpm2.TPMAlgHMAC, &tpm2.TPMSSchemeHMAC{HashAlg: tpm2.TPMAlgSHA256}),
			},
		}),
		Unique: tpm2.NewTPMUPublicID(tpm2.TPMAlgKeyedHash, &tpm2.TPM2BDigest{Buffer: unique[:]}),
	}
	public = tpm2.Marshal(pub)
	return public, objectName(public)
}

// keyedHashSensitive marshals the key's TPMT_SENSITIVE: sensitiveType
// KEYEDHASH, an empty authValue, seedValue, and the key bits.
func keyedHashSensitive(key, seedValue []byte) []byte {
	var b bytes.Buffer
	binary.Write(&b, binary.BigEndian, uint16(tpm2.TPMAlgKeyedHash))
	b.Write(tpm2b(nil))
	b.Write(tpm2b(seedValue))
	b.Write(tpm2b(key))
	return b.Bytes()
}

// duplicate wraps sensitive (a TPMT_SENSITIVE) of the object called name
// for import under parent (Part 1 §23.3.2): when innerKey is set, the inner
// wrapper first, AES-CFB (zero IV) under innerKey over
// TPM2B_DIGEST(SHA-256(TPM2B_SENSITIVE ‖ name)) ‖ TPM2B_SENSITIVE; then
// the outer wrapper with a seed encrypted to parent (label "DUPLICATE"). It
// returns the TPM2B_PRIVATE's contents and the encrypted seed.
func duplicate(random io.Reader, parent *tpm2.TPMTPublic, name, sensitive, innerKey []byte) (dup, encSeed []byte, err error) {
	data := tpm2b(sensitive)
	if innerKey != nil {
		integrity := sha256.Sum256(append(append([]byte{}, data...), name...))
		data = append(tpm2b(integrity[:]), data...)
		if data, err = cfbEncrypt(innerKey, data); err != nil {
			return nil, nil, fmt.Errorf("inner wrapper: %w", err)
		}
	}
	return outerWrap(random, parent, "DUPLICATE", name, data)
}

// makeCredential is TPM2_MakeCredential in software (Part 1 §24): the
// credential encrypted for the TPM that holds ek, bound to objectName. It
// returns the TPMS_ID_OBJECT (the TPM2B_ID_OBJECT's contents) and the
// encrypted secret.
func makeCredential(random io.Reader, ek *tpm2.TPMTPublic, objectName, credential []byte) (idObject, encSecret []byte, err error) {
	return outerWrap(random, ek, "IDENTITY", objectName, tpm2b(credential))
}

// outerWrap protects data for the TPM holding key, as duplication's outer
// wrapper and credential protection both do: a seed of the name
// algorithm's size is RSA-OAEP encrypted to key with label; from it KDFa
// derives an AES-CFB key ("STORAGE", context name) that encrypts data, and
// an HMAC key ("INTEGRITY") over ciphertext ‖ name. It returns
// TPM2B_DIGEST(hmac) ‖ ciphertext and the encrypted seed.
func outerWrap(random io.Reader, key *tpm2.TPMTPublic, label string, name, data []byte) (wrapped, encSeed []byte, err error) {
	parms, err := key.Parameters.RSADetail()
	if err != nil {
		return nil, nil, fmt.Errorf("key parameters: %w", err)
	}
	bits, err := parms.Symmetric.KeyBits.AES()
	if err != nil || parms.Symmetric.Algorithm != tpm2.TPMAlgAES {
		return nil, nil, errors.New("the key's symmetric algorithm is not AES")
	}
	modulus, err := key.Unique.RSA()
	if err != nil {
		return nil, nil, fmt.Errorf("key modulus: %w", err)
	}
	pub, err := tpm2.RSAPub(parms, modulus)
	if err != nil {
		return nil, nil, fmt.Errorf("RSA public key: %w", err)
	}
	seed := make([]byte, sha256.Size)
	if _, err := io.ReadFull(random, seed); err != nil {
		return nil, nil, fmt.Errorf("random: %w", err)
	}
	encSeed, err = rsa.EncryptOAEP(sha256.New(), random, pub, seed, []byte(label+"\x00"))
	if err != nil {
		return nil, nil, fmt.Errorf("encrypt the seed: %w", err)
	}
	ciphertext, err := cfbEncrypt(kdfa(crypto.SHA256, seed, "STORAGE", name, nil, int(*bits)), data)
	if err != nil {
		return nil, nil, err
	}
	m := hmac.New(sha256.New, kdfa(crypto.SHA256, seed, "INTEGRITY", nil, nil, sha256.Size*8))
	m.Write(ciphertext)
	m.Write(name)
	return append(tpm2b(m.Sum(nil)), ciphertext...), encSeed, nil
}

// kdfa is TPM 2.0's KDFa (Part 1 §11.4.10.2), SP 800-108 counter mode with
// HMAC: K(i) = HMAC(key, [i]₃₂ ‖ label ‖ 0x00 ‖ contextU ‖ contextV ‖ [bits]₃₂).
func kdfa(h crypto.Hash, key []byte, label string, contextU, contextV []byte, bits int) []byte {
	out := make([]byte, 0, (bits+7)/8+h.Size())
	var n [4]byte
	for i := uint32(1); len(out) < (bits+7)/8; i++ {
		m := hmac.New(h.New, key)
		binary.BigEndian.PutUint32(n[:], i)
		m.Write(n[:])
		m.Write([]byte(label))
		m.Write([]byte{0})
		m.Write(contextU)
		m.Write(contextV)
		binary.BigEndian.PutUint32(n[:], uint32(bits))
		m.Write(n[:])
		out = m.Sum(out)
	}
	return out[:(bits+7)/8]
}

// cfbEncrypt is AES-CFB with a zero IV, as the TPM uses for wrappers.
func cfbEncrypt(key, data []byte) ([]byte, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("AES key: %w", err)
	}
	out := make([]byte, len(data))
	cipher.NewCFBEncrypter(block, make([]byte, aes.BlockSize)).XORKeyStream(out, data)
	return out, nil
}

// tpm2b marshals b as a TPM2B: a big-endian uint16 size, then b.
func tpm2b(b []byte) []byte {
	return append(binary.BigEndian.AppendUint16(nil, uint16(len(b))), b...)
}
