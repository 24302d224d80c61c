package emulator

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"io"
	"testing"

	"github.com/google/go-tpm/tpm2"
)

// TestKDFaMatchesGoTPM: kdfa against go-tpm's KDFa for the sizes the
// wrappers use.
func TestKDFaMatchesGoTPM(t *testing.T) {
	key := bytes.Repeat([]byte{7}, 32)
	for _, tc := range []struct {
		label    string
		u, v     []byte
		bits     int
		hashName crypto.Hash
	}{
		{"STORAGE", []byte("name"), nil, 128, crypto.SHA256},
		{"INTEGRITY", nil, nil, 256, crypto.SHA256},
		{"STORAGE", []byte("u"), []byte("v"), 300, crypto.SHA256},
		{"X", nil, nil, 8, crypto.SHA1},
	} {
		got := kdfa(tc.hashName, key, tc.label, tc.u, tc.v, tc.bits)
		want := tpm2.KDFa(tc.hashName, key, tc.label, tc.u, tc.v, tc.bits)
		if !bytes.Equal(got, want) {
			t.Errorf("%s/%d: %x, go-tpm %x", tc.label, tc.bits, got, want)
		}
	}
}

// testKey is an RSA-2048 storage key as T1 returns it (TPM2B_PUBLIC).
func testKey(t *testing.T) (*rsa.PrivateKey, *tpm2.TPMTPublic, []byte) {
	t.Helper()
	priv, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	pub := tpm2.RSASRKTemplate
	pub.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgRSA, &tpm2.TPM2BPublicKeyRSA{Buffer: priv.N.Bytes()})
	return priv, &pub, tpm2.Marshal(tpm2.New2B(pub))
}

// stream is a deterministic "random" reader, so two implementations fed
// the same stream must produce the same bytes.
func stream(seed byte) io.Reader {
	return bytes.NewReader(bytes.Repeat([]byte{seed, seed + 1, seed + 2}, 4096))
}

// TestWrappersMatchGoTPM: with the same random stream, makeCredential is
// byte for byte go-tpm's CreateCredential and duplicate without an inner
// wrapper is its CreateDuplicate (go-tpm has no inner wrapper; the TPM
// tests in package tpm check that one by importing on swtpm).
func TestWrappersMatchGoTPM(t *testing.T) {
	_, pub, _ := testKey(t)
	kem, err := tpm2.ImportEncapsulationKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	name := append([]byte{0, 0x0b}, bytes.Repeat([]byte{9}, 32)...)
	cred := bytes.Repeat([]byte{5}, 16)

	gotID, gotSecret, err := makeCredential(stream(1), pub, name, cred)
	if err != nil {
		t.Fatal(err)
	}
	wantID, wantSecret, err := tpm2.CreateCredential(stream(1), kem, name, cred)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(gotID, wantID) || !bytes.Equal(gotSecret, wantSecret) {
		t.Errorf("makeCredential differs from go-tpm CreateCredential")
	}

	sensitive := keyedHashSensitive([]byte("key"), bytes.Repeat([]byte{3}, 32))
	gotDup, gotSeed, err := duplicate(stream(2), pub, name, sensitive, nil)
	if err != nil {
		t.Fatal(err)
	}
	wantDup, wantSeed, err := tpm2.CreateDuplicate(stream(2), kem, name, sensitive)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(gotDup, wantDup) || !bytes.Equal(gotSeed, wantSeed) {
		t.Errorf("duplicate differs from go-tpm CreateDuplicate")
	}
}

// TestSeedLabels: the seeds decrypt with the labels the TPM uses, and not
// with the other one.
func TestSeedLabels(t *testing.T) {
	priv, pub, _ := testKey(t)
	name := append([]byte{0, 0x0b}, make([]byte, 32)...)
	_, secret, err := makeCredential(rand.Reader, pub, name, []byte("c"))
	if err != nil {
		t.Fatal(err)
	}
	_, seed, err := duplicate(rand.Reader, pub, name, []byte("s"), bytes.Repeat([]byte{1}, 16))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		ct           []byte
		right, wrong string
	}{{secret, "IDENTITY\x00", "DUPLICATE\x00"}, {seed, "DUPLICATE\x00", "IDENTITY\x00"}} {
		if _, err := rsa.DecryptOAEP(sha256.New(), nil, priv, tc.ct, []byte(tc.right)); err != nil {
			t.Errorf("label %q: %v", tc.right, err)
		}
		if _, err := rsa.DecryptOAEP(sha256.New(), nil, priv, tc.ct, []byte(tc.wrong)); err == nil {
			t.Errorf("decrypts with label %q too", tc.wrong)
		}
	}
}

// TestNewTPMActivationShape: the blob is five TPM2Bs; the public area is
// an HMAC-SHA256 key whose unique binds the key; bad inputs are refused.
func TestNewTPMActivationShape(t *testing.T) {
	_, _, ek := testKey(t)
	_, _, srk := testKey(t)
	a, err := NewTPMActivation(rand.Reader, ek, srk)
	if err != nil {
		t.Fatal(err)
	}
	var parts [][]byte
	for b := a.Blob; len(b) > 0; {
		n := int(b[0])<<8 | int(b[1])
		parts, b = append(parts, b[2:2+n]), b[2+n:]
	}
	if len(parts) != 5 || len(a.Key) != hmacKeySize {
		t.Fatalf("%d parts, key %d bytes", len(parts), len(a.Key))
	}
	pub, err := tpm2.Unmarshal[tpm2.TPMTPublic](parts[4])
	if err != nil || pub.Type != tpm2.TPMAlgKeyedHash || pub.ObjectAttributes.FixedTPM || pub.ObjectAttributes.FixedParent {
		t.Fatalf("public area: %v %+v", err, pub)
	}
	for name, in := range map[string][2][]byte{
		"empty EK":      {nil, srk},
		"size mismatch": {ek[:len(ek)-1], srk},
		"garbage SRK":   {ek, []byte{0, 2, 1, 2}},
	} {
		if _, err := NewTPMActivation(rand.Reader, in[0], in[1]); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if got := a.Sign([]byte("x")); len(got) != sha256.Size {
		t.Fatalf("Sign: %d bytes", len(got))
	}
}
