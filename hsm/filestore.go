// Package hsm holds Warden's key stores. Keys never leave a store: callers get
// a crypto.Signer that signs inside the process and exposes only the public key.
//
// FileStore is the default store and reads and writes the files of aziot's
// libaziot-keys file backend, so an existing /var/lib/aziot/keyd home directory
// works as it is.
package hsm

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sync"

	"github.com/warden-iot/warden/internal/atomicfile"
)

// FileStore keeps key pairs as PKCS#8 PEM files under <homedir>/keys, named as
// aziot names them (see KeyFileName).
type FileStore struct {
	dir string
	// mu serialises the create path so that two concurrent first uses of an
	// ID cannot each write a different key and hand out the loser.
	mu sync.Mutex
}

// NewFileStore returns a store whose keys live in <homedir>/keys. The
// directory is created (0700) on the first key creation, not here.
func NewFileStore(homedir string) (*FileStore, error) {
	if homedir == "" {
		return nil, errors.New("hsm: file store: home directory is empty")
	}
	return &FileStore{dir: filepath.Join(homedir, "keys")}, nil
}

// KeyFileName is aziot's file name for key ID id: the ASCII alphanumerics of id,
// then "-", the hex SHA-256 of id, and ".key".
// For example "device-id" gives "deviceid-bd7321…e655.key".
func KeyFileName(id string) string {
	sum := sha256.Sum256([]byte(id))
	b := make([]byte, 0, len(id)+1+2*len(sum)+len(".key"))
	for i := 0; i < len(id); i++ {
		c := id[i]
		if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' {
			b = append(b, c)
		}
	}
	b = append(b, '-')
	b = hex.AppendEncode(b, sum[:])
	b = append(b, ".key"...)
	return string(b)
}

// KeyPair returns the key pair id, creating an EC P-256 key pair if the store
// has none. A file that is empty or is not a PEM private key is treated as
// missing and replaced (aziot PR #612: an ungraceful shutdown could leave one).
func (s *FileStore) KeyPair(ctx context.Context, id string) (crypto.Signer, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("hsm: key pair %q: %w", id, err)
	}
	if id == "" {
		return nil, errors.New("hsm: key pair: key ID is empty")
	}
	path := filepath.Join(s.dir, KeyFileName(id))
	if k, err := loadKeyPair(path); err == nil {
		return k, nil
	} else if !errors.Is(err, errMissing) && !errors.Is(err, errMalformed) {
		return nil, fmt.Errorf("hsm: key pair %q: %w", id, err)
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	// Another caller may have created it while we waited.
	k, err := loadKeyPair(path)
	switch {
	case err == nil:
		return k, nil
	case errors.Is(err, errMalformed):
		slog.Warn("replacing malformed key file", "key", id, "path", path, "reason", err)
	case !errors.Is(err, errMissing):
		return nil, fmt.Errorf("hsm: key pair %q: %w", id, err)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("hsm: key pair %q: %w", id, err)
	}
	if k, err = createKeyPair(path); err != nil {
		return nil, fmt.Errorf("hsm: key pair %q: %w", id, err)
	}
	return k, nil
}

// errMissing and errMalformed mark a key file that is absent, or empty or not
// a PEM private key: in both cases the create path (re)generates it.
var (
	errMissing   = errors.New("no key file")
	errMalformed = errors.New("malformed key file")
)

func loadKeyPair(path string) (crypto.Signer, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, errMissing
	}
	if err != nil {
		return nil, fmt.Errorf("read key file: %w", err)
	}
	priv, err := parsePrivateKey(data)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errMalformed, err)
	}
	return &fileKey{priv: priv}, nil
}

// parsePrivateKey accepts what aziot writes (PKCS#8 "PRIVATE KEY") and the
// traditional "EC PRIVATE KEY" and "RSA PRIVATE KEY" blocks of preloaded keys.
func parsePrivateKey(data []byte) (crypto.Signer, error) {
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, errors.New("no PEM block")
	}
	var key any
	var err error
	switch block.Type {
	case "PRIVATE KEY":
		key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	case "EC PRIVATE KEY":
		key, err = x509.ParseECPrivateKey(block.Bytes)
	case "RSA PRIVATE KEY":
		key, err = x509.ParsePKCS1PrivateKey(block.Bytes)
	default:
		return nil, fmt.Errorf("PEM block %q is not a private key", block.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("parse %s: %w", block.Type, err)
	}
	signer, ok := key.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("%T cannot sign", key)
	}
	return signer, nil
}

func createKeyPair(path string) (crypto.Signer, error) {
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate P-256 key: %w", err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return nil, fmt.Errorf("encode PKCS#8: %w", err)
	}
	data := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("create key directory: %w", err)
	}
	if err := atomicfile.Write(path, data, 0o600); err != nil {
		return nil, fmt.Errorf("store new key: %w", err)
	}
	return &fileKey{priv: priv}, nil
}

// fileKey hides the concrete private key: a caller cannot type-assert its way
// to *ecdsa.PrivateKey and copy the key material out.
type fileKey struct{ priv crypto.Signer }

// Public returns the public half of the key pair.
func (k *fileKey) Public() crypto.PublicKey { return k.priv.Public() }

// Sign signs digest with the private key, as crypto.Signer specifies.
func (k *fileKey) Sign(r io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	return k.priv.Sign(r, digest, opts)
}
