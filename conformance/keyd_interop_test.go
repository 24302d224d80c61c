package conformance

import (
	"bytes"
	"context"
	"crypto"
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdsa"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/warden-iot/warden/client/keyd"
)

// TestKeydTLS13: a TLS 1.3 handshake between Go's crypto/tls client and
// server, where the server's certificate key is in Warden and signs over
// keyd.sock through client/keyd's Signer: ECDSA P-256 (/sign) and
// RSA-2048 (RSA-PSS encoded client-side, /encrypt RSA-NO-PADDING; the
// self-signed certificate itself is PKCS#1 v1.5, /encrypt RSA-PKCS1).
func TestKeydTLS13(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b keydBackend) {
		k := startKeyd(t, b, "")
		c := keyd.New(k.recordingSocket())
		defer c.Close()
		ctx := context.Background()
		for _, tc := range []struct{ id, algs string }{{"tls-ec", "ec-p256"}, {"tls-rsa", "rsa-2048"}} {
			t.Run(tc.algs, func(t *testing.T) {
				h, err := c.CreateKeyPairIfNotExists(ctx, tc.id, tc.algs)
				if err != nil {
					t.Fatal(err)
				}
				signer, err := c.Signer(ctx, h)
				if err != nil {
					t.Fatal(err)
				}
				tlsHandshake(t, signer)
			})
		}
	})
}

func tlsHandshake(t *testing.T, signer crypto.Signer) {
	t.Helper()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "warden.test"}, DNSNames: []string{"warden.test"},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, BasicConstraintsValid: true, IsCA: true,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, signer.Public(), signer)
	if err != nil {
		t.Fatalf("self-signed certificate signed through keyd: %v", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	if err := cert.CheckSignatureFrom(cert); err != nil {
		t.Fatalf("the certificate's keyd signature does not verify: %v", err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(cert)
	cc, sc := net.Pipe()
	defer cc.Close()
	defer sc.Close()
	server := tls.Server(sc, &tls.Config{
		Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: signer}},
		MinVersion:   tls.VersionTLS13,
	})
	client := tls.Client(cc, &tls.Config{RootCAs: roots, ServerName: "warden.test", MinVersion: tls.VersionTLS13})
	errc := make(chan error, 1)
	go func() {
		err := server.Handshake()
		if err == nil {
			_, err = server.Write([]byte("hello over TLS 1.3"))
		}
		errc <- err
	}()
	client.SetDeadline(time.Now().Add(30 * time.Second))
	if err := client.Handshake(); err != nil {
		t.Fatalf("client handshake: %v (server: %v)", err, <-errc)
	}
	buf := make([]byte, 18)
	if _, err := io.ReadFull(client, buf); err != nil || string(buf) != "hello over TLS 1.3" {
		t.Fatalf("read: %q %v", buf, err)
	}
	if err := <-errc; err != nil {
		t.Fatalf("server: %v", err)
	}
	st := client.ConnectionState()
	if st.Version != tls.VersionTLS13 {
		t.Fatalf("negotiated %x, want TLS 1.3", st.Version)
	}
	t.Logf("TLS 1.3 %s with a %T in Warden", tls.CipherSuiteName(st.CipherSuite), signer.Public())
}

// needOpenSSL returns the openssl binary (fatal in CI when missing).
func needOpenSSL(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("openssl")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("openssl is not installed: make deps installs it")
		}
		t.Skip("openssl is not installed")
	}
	return p
}

// TestKeydOpenSSLVerifies: openssl verifies an ECDSA and an RSA PKCS#1
// v1.5 (and PSS) signature made by Warden, with the public key rebuilt
// from /parameters/* only.
func TestKeydOpenSSLVerifies(t *testing.T) {
	openssl := needOpenSSL(t)
	forEachBackend(t, func(t *testing.T, b keydBackend) {
		k := startKeyd(t, b, "")
		c := keyd.New(k.recordingSocket())
		defer c.Close()
		ctx := context.Background()
		msg := []byte("a message openssl hashes itself")
		digest := sha256.Sum256(msg)
		cases := []struct {
			name, algs string
			sign       func(h string, pub crypto.PublicKey) ([]byte, error)
			sigopts    []string
		}{
			{"ECDSA", "ec-p256", func(h string, _ crypto.PublicKey) ([]byte, error) {
				return c.Sign(ctx, h, keyd.ECDSA, digest[:])
			}, nil},
			{"RSA-PKCS1", "rsa-2048", func(h string, _ crypto.PublicKey) ([]byte, error) {
				prefix := []byte{0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05, 0x00, 0x04, 0x20}
				return c.Encrypt(ctx, h, keyd.Mechanism{Algorithm: keyd.RSAPKCS1}, append(prefix, digest[:]...))
			}, nil},
			{"RSA-PSS", "rsa-2048", func(h string, _ crypto.PublicKey) ([]byte, error) {
				s, err := c.Signer(ctx, h)
				if err != nil {
					return nil, err
				}
				return s.Sign(rand.Reader, digest[:], &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash, Hash: crypto.SHA256})
			}, []string{"-sigopt", "rsa_padding_mode:pss", "-sigopt", "rsa_pss_saltlen:32"}},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				h, err := c.CreateKeyPairIfNotExists(ctx, "ossl-"+tc.algs, tc.algs)
				if err != nil {
					t.Fatal(err)
				}
				pub, err := c.PublicKey(ctx, h)
				if err != nil {
					t.Fatal(err)
				}
				sig, err := tc.sign(h, pub)
				if err != nil {
					t.Fatal(err)
				}
				dir := t.TempDir()
				spki, err := x509.MarshalPKIXPublicKey(pub)
				if err != nil {
					t.Fatal(err)
				}
				files := map[string][]byte{"pub.pem": pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: spki}), "sig": sig, "msg": msg}
				for name, data := range files {
					if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
						t.Fatal(err)
					}
				}
				args := append([]string{"dgst", "-sha256", "-verify", "pub.pem", "-signature", "sig"}, tc.sigopts...)
				cmd := exec.Command(openssl, append(args, "msg")...)
				cmd.Dir = dir
				out, err := cmd.CombinedOutput()
				if err != nil || !strings.Contains(string(out), "Verified OK") {
					t.Fatalf("openssl %v: %v\n%s", args, err, out)
				}
				// And a wrong message does not verify.
				os.WriteFile(filepath.Join(dir, "msg"), []byte("another message"), 0o600)
				if out, err := exec.Command(openssl, append(append([]string{"dgst", "-sha256", "-verify", filepath.Join(dir, "pub.pem"), "-signature", filepath.Join(dir, "sig")}, tc.sigopts...), filepath.Join(dir, "msg"))...).CombinedOutput(); err == nil {
					t.Fatalf("openssl verified a signature over another message: %s", out)
				}
			})
		}
	})
}

// TestKeydSymmetricInterop: AES-GCM ciphertexts of /encrypt open with Go's
// crypto/cipher and the imported key (after the 0x02 byte), Go's open with
// /decrypt; HMACs, derived keys and their export equal Go's computation.
func TestKeydSymmetricInterop(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b keydBackend) {
		k := startKeyd(t, b, "")
		c := keyd.New(k.recordingSocket())
		defer c.Close()
		ctx := context.Background()
		encKey, macKey := make([]byte, 32), make([]byte, 32)
		rand.Read(encKey)
		rand.Read(macKey)
		k.addSecret("AES key", encKey)
		k.addSecret("HMAC key", macKey)
		enc, err := c.ImportKey(ctx, "sym-enc", encKey, "encrypt")
		if err != nil {
			t.Fatal(err)
		}
		mac, err := c.ImportKey(ctx, "sym-mac", macKey, "derive,sign")
		if err != nil {
			t.Fatal(err)
		}
		block, _ := aes.NewCipher(encKey)
		gcm, _ := cipher.NewGCM(block)
		for _, tc := range []struct{ name, pt, aad string }{{"short", "x", ""}, {"empty", "", "aad"}, {"long", strings.Repeat("secret ", 200), "some aad"}} {
			t.Run("AEAD "+tc.name, func(t *testing.T) {
				iv := make([]byte, 12)
				rand.Read(iv)
				m := keyd.Mechanism{Algorithm: keyd.AEAD, IV: iv, AAD: []byte(tc.aad)}
				ct, err := c.Encrypt(ctx, enc, m, []byte(tc.pt))
				if err != nil {
					t.Fatal(err)
				}
				if len(ct) != 1+len(tc.pt)+16 || ct[0] != 0x02 {
					t.Fatalf("ciphertext of %d bytes, version %d", len(ct), ct[0])
				}
				pt, err := gcm.Open(nil, iv, ct[1:], []byte(tc.aad))
				if err != nil || string(pt) != tc.pt {
					t.Fatalf("Go cannot open Warden's ciphertext: %v", err)
				}
				mine := append([]byte{0x02}, gcm.Seal(nil, iv, []byte(tc.pt+"!"), []byte(tc.aad))...)
				back, err := c.Decrypt(ctx, enc, m, mine)
				if err != nil || string(back) != tc.pt+"!" {
					t.Fatalf("Warden cannot open Go's ciphertext: %q %v", back, err)
				}
			})
		}
		t.Run("HMAC and derived keys", func(t *testing.T) {
			msg, data := []byte("SharedAccessSignature sr=..."), []byte("module-7:3:primary")
			sig, err := c.Sign(ctx, mac, keyd.HMACSHA256, msg)
			if err != nil || !hmac.Equal(sig, goHMAC(macKey, msg)) {
				t.Fatalf("HMAC differs from Go's: %v", err)
			}
			dh, err := c.DeriveKey(ctx, mac, data)
			if err != nil {
				t.Fatal(err)
			}
			derived := goHMAC(macKey, data)
			if exp, err := c.ExportDerivedKey(ctx, dh); err != nil || !bytes.Equal(exp, derived) {
				t.Fatalf("exported derived key differs: %v", err)
			}
			if sig, err := c.Sign(ctx, dh, keyd.HMACSHA256, msg); err != nil || !hmac.Equal(sig, goHMAC(derived, msg)) {
				t.Fatalf("derived HMAC differs: %v", err)
			}
			iv := []byte("0123456789ab")
			ct, err := c.Encrypt(ctx, dh, keyd.Mechanism{Algorithm: keyd.AEAD, IV: iv}, []byte("module secret"))
			if err != nil {
				t.Fatal(err)
			}
			db, _ := aes.NewCipher(derived)
			dg, _ := cipher.NewGCM(db)
			if pt, err := dg.Open(nil, iv, ct[1:], nil); err != nil || string(pt) != "module secret" {
				t.Fatalf("derived AEAD differs from Go's: %v", err)
			}
		})
		t.Run("ECDSA digest in, DER out", func(t *testing.T) {
			h, err := c.CreateKeyPairIfNotExists(ctx, "ec-digest", "ec-p256")
			if err != nil {
				t.Fatal(err)
			}
			pub, err := c.PublicKey(ctx, h)
			if err != nil {
				t.Fatal(err)
			}
			for _, n := range []int{20, 32, 48} { // the digest is signed as given
				d := bytes.Repeat([]byte{byte(n)}, n)
				sig, err := c.Sign(ctx, h, keyd.ECDSA, d)
				if err != nil || !ecdsa.VerifyASN1(pub.(*ecdsa.PublicKey), d, sig) {
					t.Fatalf("%d-byte digest: %v", n, err)
				}
			}
		})
	})
}

func goHMAC(key, msg []byte) []byte {
	m := hmac.New(sha256.New, key)
	m.Write(msg)
	return m.Sum(nil)
}

// TestKeydClientConcurrency: more concurrent calls than keyd's per-uid
// connection limit (10) all succeed through one client/keyd Client, which
// keeps at most MaxConcurrency requests in flight.
func TestKeydClientConcurrency(t *testing.T) {
	k := startKeyd(t, keydBackends[0], "")
	c := keyd.New(k.d.socket("keyd"))
	defer c.Close()
	ctx := context.Background()
	h, err := c.CreateKey(ctx, "busy", "sign")
	if err != nil {
		t.Fatal(err)
	}
	errs := make(chan error, 40)
	for range 40 {
		go func() {
			_, err := c.Sign(ctx, h, keyd.HMACSHA256, []byte("m"))
			errs <- err
		}()
	}
	for range 40 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
}
