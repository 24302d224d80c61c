package tpm_test

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"encoding/binary"
	"errors"
	"strings"
	"testing"

	"github.com/google/go-tpm/tpm2"
	"github.com/warden-iot/warden/conformance/emulator"
	"github.com/warden-iot/warden/tpm"
)

// softwareBlob returns an emulator blob for software RSA keys standing in
// for an EK and an SRK (enough for the parser, which never decrypts).
func softwareBlob(t testing.TB) []byte {
	t.Helper()
	var keys [2][]byte
	for i := range keys {
		priv, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			t.Fatal(err)
		}
		pub := tpm2.RSASRKTemplate
		pub.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgRSA, &tpm2.TPM2BPublicKeyRSA{Buffer: priv.N.Bytes()})
		keys[i] = tpm2.Marshal(tpm2.New2B(pub))
	}
	a, err := emulator.NewTPMActivation(rand.Reader, keys[0], keys[1])
	if err != nil {
		t.Fatal(err)
	}
	return a.Blob
}

// tpm2b is a TPM2B of b.
func tpm2b(b []byte) []byte { return append(binary.BigEndian.AppendUint16(nil, uint16(len(b))), b...) }

func TestParseActivationBlob(t *testing.T) {
	good := softwareBlob(t)
	ab, err := tpm.ParseActivationBlob(good)
	if err != nil {
		t.Fatal(err)
	}
	prefix := len(good) - len(ab.Public) - 2 // everything before the TPM2B_PUBLIC
	rsaPub := tpm2.Marshal(tpm2.RSASRKTemplate)
	for _, tc := range []struct {
		name    string
		blob    []byte
		want    string // "" for success
		trailer int
	}{
		{"emulator blob", good, "", 0},
		{"C SDK trailer ignored", append(bytes.Clone(good), 0, 3, 1, 2, 3), "", 5},
		{"empty", nil, "0 bytes end before the TPM2B_ID_OBJECT", 0},
		{"one byte", []byte{0}, "end before the TPM2B_ID_OBJECT", 0},
		{"size past the end", []byte{0, 9, 1}, "TPM2B_ID_OBJECT credential blob at offset 0 has size 9, 1 bytes left", 0},
		{"empty field", []byte{0, 0}, "has size 0", 0},
		{"missing public", good[:prefix], "end before the TPM2B_PUBLIC", 0},
		{"public cut short", append(bytes.Clone(good[:prefix]), tpm2b(ab.Public[:10])...), "does not unmarshal", 0},
		{"public with a tail", append(bytes.Clone(good[:prefix]), tpm2b(append(bytes.Clone(ab.Public), 0))...), "bytes after its TPMT_PUBLIC", 0},
		{"RSA key instead of HMAC", append(bytes.Clone(good[:prefix]), tpm2b(rsaPub)...), "is a RSA-2048 storage key, want an HMAC key", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tpm.ParseActivationBlob(tc.blob)
			if tc.want == "" {
				if err != nil || got.Trailing != tc.trailer || !bytes.Equal(got.Public, ab.Public) {
					t.Fatalf("%v, %+v", err, got)
				}
				return
			}
			if !errors.Is(err, tpm.ErrBadBlob) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want ErrBadBlob with %q", err, tc.want)
			}
		})
	}
}

// FuzzParseActivationBlob: any input parses or fails with ErrBadBlob,
// never panics, and what parses re-marshals to the input's prefix.
func FuzzParseActivationBlob(f *testing.F) {
	good := softwareBlob(f)
	f.Add(good)
	f.Add(good[:len(good)-7])
	f.Add(append(bytes.Clone(good), 1, 2, 3))
	f.Add([]byte{0, 1, 0, 0, 1, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		ab, err := tpm.ParseActivationBlob(b)
		if err != nil {
			if !errors.Is(err, tpm.ErrBadBlob) {
				t.Fatalf("error without ErrBadBlob: %v", err)
			}
			return
		}
		var again []byte
		for _, p := range [][]byte{ab.CredentialBlob, ab.Secret, ab.Duplicate, ab.EncryptedSeed, ab.Public} {
			again = append(again, tpm2b(p)...)
		}
		if !bytes.Equal(again, b[:len(b)-ab.Trailing]) {
			t.Fatalf("re-marshalled blob differs")
		}
	})
}
