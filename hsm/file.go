package hsm

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"hash/maphash"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/warden-iot/warden/internal/atomicfile"
)

// maxKeyFileSize bounds what the file backend reads: an RSA-4096 PKCS#8 PEM
// is about 3.3 KB, so anything near this is not a key.
const maxKeyFileSize = 1 << 20

// FileBackend keeps keys in files, in the formats of aziot's libaziot-keys
// file backend, so that an existing aziot home directory and aziot's preloaded
// key files work as they are. A location is an absolute file path.
//
//   - A symmetric key file holds the raw key bytes (generated keys are 32
//     random bytes; imported keys are written as given).
//   - A key-pair file holds a PKCS#8 PEM private key; loading also accepts the
//     traditional "EC PRIVATE KEY" and "RSA PRIVATE KEY" blocks.
//   - An empty file, or a key-pair file that is not a PEM private key, is
//     malformed (ErrMalformed): create paths replace it, other paths fail.
//
// Files are written atomically (internal/atomicfile) with mode 0600 in
// directories created 0700. Create-if-not-exists is serialised per path, so
// two concurrent creators never hand out different keys; the serialisation
// is per FileBackend, so one process should use one FileBackend per
// directory (Keys does).
//
// Parsed keys are cached in memory by path. A use stats the file when the
// entry was last checked more than recheckAfter ago, and re-reads it only
// when it changed (another inode, size, modification or change time). So a
// key replaced or removed behind Warden's back is noticed within 100 ms
// (aziot, which reads the file on every call, notices it at the next call);
// changes made through the backend are seen at once.
type FileBackend struct {
	log   *slog.Logger
	seed  maphash.Seed
	locks [64]sync.Mutex // create/import/delete/move, striped by path

	mu      sync.RWMutex
	cache   map[string]*fileEntry
	gen     uint64        // bumped by forget: a load that began before it does not cache
	recheck time.Duration // recheckAfter; tests shorten it
}

var _ Backend = (*FileBackend)(nil)

// fileEntry is one parsed key file.
type fileEntry struct {
	checked atomic.Int64 // when ver was last seen on disk (Unix ns)
	ver     fileVersion  // the file the entry was read from
	raw     []byte       // the file's bytes: the key, for a symmetric key
	priv    crypto.Signer
	err     error   // why priv is nil: the file is not a PEM private key
	crt     *rsaCRT // for RSA keys: the raw private operation
}

// NewFileBackend returns a file backend that logs to logger (nil: discard).
func NewFileBackend(logger *slog.Logger) *FileBackend {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &FileBackend{log: logger, seed: maphash.MakeSeed(), cache: make(map[string]*fileEntry), recheck: recheckAfter}
}

// KeyFileName is aziot's file name for key ID id: the ASCII alphanumerics of
// id, then "-", the hex SHA-256 of id, and ".key". For example "device-id"
// gives "deviceid-bd7321…e655.key".
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

// lock serialises the mutations of path; the returned func unlocks.
func (b *FileBackend) lock(path string) func() {
	m := &b.locks[maphash.String(b.seed, path)%uint64(len(b.locks))]
	m.Lock()
	return m.Unlock
}

// lock2 locks two paths in a fixed order, so two moves cannot deadlock.
func (b *FileBackend) lock2(p1, p2 string) func() {
	i := maphash.String(b.seed, p1) % uint64(len(b.locks))
	j := maphash.String(b.seed, p2) % uint64(len(b.locks))
	if i == j {
		b.locks[i].Lock()
		return b.locks[i].Unlock
	}
	if i > j {
		i, j = j, i
	}
	b.locks[i].Lock()
	b.locks[j].Lock()
	return func() { b.locks[j].Unlock(); b.locks[i].Unlock() }
}

func checkPath(path string) error {
	if !filepath.IsAbs(path) {
		return fmt.Errorf("%w: key file location %q is not an absolute path", ErrInvalidParameter, path)
	}
	return nil
}

// load returns the parsed key file at path: ErrNotFound if absent,
// ErrMalformed if empty.
func (b *FileBackend) load(path string) (*fileEntry, error) {
	if err := checkPath(path); err != nil {
		return nil, err
	}
	b.mu.RLock()
	e, gen := b.cache[path], b.gen
	b.mu.RUnlock()
	now := time.Now().UnixNano()
	if e != nil && now-e.checked.Load() < int64(b.recheck) {
		return e, nil
	}
	var st unix.Stat_t
	err := unix.Stat(path, &st)
	if errors.Is(err, fs.ErrNotExist) {
		if e != nil { // removed behind the backend's back
			b.mu.Lock()
			delete(b.cache, path)
			b.mu.Unlock()
		}
		return nil, fmt.Errorf("%w: no key file %s", ErrNotFound, path)
	}
	if err != nil {
		return nil, fmt.Errorf("stat key file %s: %w", path, err)
	}
	if e != nil && e.ver == versionOf(&st) {
		e.checked.Store(now)
		return e, nil
	}
	e, err = readKeyFile(path)
	if err != nil {
		return nil, err
	}
	e.checked.Store(now)
	b.mu.Lock()
	// A write, move or delete through the backend since the file was read
	// may have replaced what was read: then it is used once, not cached.
	if b.gen == gen {
		b.cache[path] = e
	}
	b.mu.Unlock()
	return e, nil
}

// recheckAfter is how long a cached key file is used without a stat: a
// stat costs about as much as the rest of an HMAC request on this path.
const recheckAfter = 100 * time.Millisecond

// fileVersion tells a key file from its replacement: another inode, size,
// modification or change time. (unix.Stat rather than os.Stat: this runs on
// every signature and os.Stat allocates.)
type fileVersion struct {
	dev, ino     uint64
	size         int64
	mtime, ctime unix.Timespec
}

func versionOf(st *unix.Stat_t) fileVersion {
	return fileVersion{dev: uint64(st.Dev), ino: uint64(st.Ino), size: st.Size, mtime: st.Mtim, ctime: st.Ctim}
}

func (b *FileBackend) forget(path string) {
	b.mu.Lock()
	b.gen++
	delete(b.cache, path)
	b.mu.Unlock()
}

// readKeyFile reads and parses path; the FileInfo is the open file's, so the
// entry describes exactly the bytes read.
func readKeyFile(path string) (*fileEntry, error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: no key file %s", ErrNotFound, path)
	}
	if err != nil {
		return nil, fmt.Errorf("open key file: %w", err)
	}
	defer f.Close()
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return nil, fmt.Errorf("stat key file %s: %w", path, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return nil, fmt.Errorf("%w: %s is not a regular file", ErrMalformed, path)
	}
	raw, err := io.ReadAll(io.LimitReader(f, maxKeyFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("read key file: %w", err)
	}
	switch {
	case len(raw) == 0:
		return nil, fmt.Errorf("%w: key file %s is empty", ErrMalformed, path)
	case len(raw) > maxKeyFileSize:
		return nil, fmt.Errorf("%w: key file %s is larger than %d bytes", ErrMalformed, path, maxKeyFileSize)
	}
	e := &fileEntry{ver: versionOf(&st), raw: raw}
	e.priv, e.err = parsePrivateKey(raw)
	if k, ok := e.priv.(*rsa.PrivateKey); ok {
		e.crt = newRSACRT(k)
	}
	return e, nil
}

// keyPair returns the entry's private key, or ErrMalformed.
func (e *fileEntry) keyPair(path string) (crypto.Signer, error) {
	if e.priv == nil {
		return nil, fmt.Errorf("%w: key file %s is not a PEM private key: %w", ErrMalformed, path, e.err)
	}
	return e.priv, nil
}

// parsePrivateKey accepts what aziot writes (PKCS#8 "PRIVATE KEY") and the
// traditional "EC PRIVATE KEY" and "RSA PRIVATE KEY" blocks of preloaded
// keys. Blocks before the key (EC PARAMETERS, as `openssl ecparam -genkey`
// writes) are skipped.
func parsePrivateKey(data []byte) (crypto.Signer, error) {
	for {
		block, rest := pem.Decode(data)
		if block == nil {
			return nil, errors.New("no PEM private key block")
		}
		data = rest
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
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("parse %s: %w", block.Type, err)
		}
		signer, ok := key.(crypto.Signer)
		if !ok {
			return nil, fmt.Errorf("a %T cannot sign", key)
		}
		return signer, nil
	}
}

// write stores data at path atomically (0600, parent created 0700) and
// drops the cached entry. The caller holds the path's lock.
func (b *FileBackend) write(path string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("create key directory: %w", err)
	}
	err := atomicfile.Write(path, data, 0o600)
	b.forget(path)
	if err != nil {
		return fmt.Errorf("store key: %w", err)
	}
	return nil
}

// CreateKey writes 32 random bytes at loc unless a symmetric key is there.
// usage is not recorded: file keys are usable for everything, as in aziot.
func (b *FileBackend) CreateKey(ctx context.Context, loc string, _ Usage) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := checkPath(loc); err != nil {
		return err
	}
	defer b.lock(loc)()
	_, err := b.load(loc)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, ErrMalformed):
		b.log.Warn("replacing malformed symmetric key file", "path", loc, "reason", err)
	case !errors.Is(err, ErrNotFound):
		return err
	}
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return fmt.Errorf("generate key: %w", err)
	}
	return b.write(loc, key)
}

// ImportKey writes key at loc, replacing what is there.
func (b *FileBackend) ImportKey(ctx context.Context, loc string, key []byte, _ Usage) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := checkPath(loc); err != nil {
		return err
	}
	if len(key) == 0 {
		return fmt.Errorf("%w: the key to import is empty", ErrInvalidParameter)
	}
	defer b.lock(loc)()
	return b.write(loc, key)
}

// KeyExists reports whether a non-empty file is at loc.
func (b *FileBackend) KeyExists(_ context.Context, loc string) (bool, error) {
	_, err := b.load(loc)
	if errors.Is(err, ErrNotFound) {
		return false, nil
	}
	return err == nil, err
}

// DeleteKey removes the file at loc; absent is not an error.
func (b *FileBackend) DeleteKey(_ context.Context, loc string) error {
	return b.remove(loc)
}

func (b *FileBackend) remove(loc string) error {
	if err := checkPath(loc); err != nil {
		return err
	}
	defer b.lock(loc)()
	err := os.Remove(loc)
	b.forget(loc)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("remove key file: %w", err)
	}
	return atomicfile.SyncDir(filepath.Dir(loc))
}

// symKey returns the symmetric key at loc.
func (b *FileBackend) symKey(loc string) ([]byte, error) {
	e, err := b.load(loc)
	if err != nil {
		return nil, err
	}
	return e.raw, nil
}

// HMACSHA256 signs msg with the key at loc.
func (b *FileBackend) HMACSHA256(_ context.Context, loc string, msg []byte) ([]byte, error) {
	key, err := b.symKey(loc)
	if err != nil {
		return nil, err
	}
	return DerivedHMACSHA256(key, msg), nil
}

// EncryptAEAD is AES-256-GCM with the 32-byte key at loc; it returns ct||tag.
func (b *FileBackend) EncryptAEAD(_ context.Context, loc string, iv, aad, plaintext []byte) ([]byte, error) {
	key, err := b.symKey(loc)
	if err != nil {
		return nil, err
	}
	return sealGCM(key, iv, aad, plaintext)
}

// DecryptAEAD opens ct||tag with the key at loc.
func (b *FileBackend) DecryptAEAD(_ context.Context, loc string, iv, aad, ciphertext []byte) ([]byte, error) {
	key, err := b.symKey(loc)
	if err != nil {
		return nil, err
	}
	return openGCM(key, iv, aad, ciphertext)
}

// CreateKeyPair writes a new key pair at loc unless a well-formed one is
// there. Only algs[0] is used, as aziot's file backend does.
func (b *FileBackend) CreateKeyPair(ctx context.Context, loc string, algs []Algorithm) error {
	if err := checkPath(loc); err != nil {
		return err
	}
	if len(algs) == 0 {
		return fmt.Errorf("%w: no key-pair algorithm given", ErrInvalidParameter)
	}
	defer b.lock(loc)()
	e, err := b.load(loc)
	if err == nil {
		_, err = e.keyPair(loc)
	}
	switch {
	case err == nil:
		return nil
	case errors.Is(err, ErrMalformed):
		b.log.Warn("replacing malformed key-pair file", "path", loc, "reason", err)
	case !errors.Is(err, ErrNotFound):
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	priv, err := generateKeyPair(algs[0])
	if err != nil {
		return err
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return fmt.Errorf("encode PKCS#8: %w", err)
	}
	return b.write(loc, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
}

func generateKeyPair(alg Algorithm) (crypto.Signer, error) {
	var priv crypto.Signer
	var err error
	switch alg {
	case ECP256:
		priv, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case RSA2048:
		priv, err = rsa.GenerateKey(rand.Reader, 2048)
	case RSA4096:
		priv, err = rsa.GenerateKey(rand.Reader, 4096)
	default:
		return nil, fmt.Errorf("%w: unknown key-pair algorithm %q", ErrInvalidParameter, alg)
	}
	if err != nil {
		return nil, fmt.Errorf("generate %s key: %w", alg, err)
	}
	return priv, nil
}

// KeyPairExists reports whether a PEM private key is at loc.
func (b *FileBackend) KeyPairExists(_ context.Context, loc string) (bool, error) {
	e, err := b.load(loc)
	if errors.Is(err, ErrNotFound) {
		return false, nil
	}
	if err == nil {
		_, err = e.keyPair(loc)
	}
	return err == nil, err
}

// DeleteKeyPair removes the file at loc; absent is not an error.
func (b *FileBackend) DeleteKeyPair(_ context.Context, loc string) error {
	return b.remove(loc)
}

// MoveKeyPair renames from to to (replacing to) and fsyncs the directories.
func (b *FileBackend) MoveKeyPair(_ context.Context, from, to string) error {
	if err := checkPath(from); err != nil {
		return err
	}
	if err := checkPath(to); err != nil {
		return err
	}
	if from == to {
		return fmt.Errorf("%w: source and destination for move are identical", ErrInvalidParameter)
	}
	defer b.lock2(from, to)()
	defer b.forget(from)
	defer b.forget(to)
	if err := os.MkdirAll(filepath.Dir(to), 0o700); err != nil {
		return fmt.Errorf("create key directory: %w", err)
	}
	err := os.Rename(from, to)
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("%w: no key file %s", ErrNotFound, from)
	}
	if err != nil {
		return fmt.Errorf("move key file: %w", err)
	}
	if err := atomicfile.SyncDir(filepath.Dir(to)); err != nil {
		return err
	}
	if filepath.Dir(from) != filepath.Dir(to) {
		return atomicfile.SyncDir(filepath.Dir(from))
	}
	return nil
}

// privateKey returns the parsed key pair at loc.
func (b *FileBackend) privateKey(loc string) (*fileEntry, crypto.Signer, error) {
	e, err := b.load(loc)
	if err != nil {
		return nil, nil, err
	}
	k, err := e.keyPair(loc)
	return e, k, err
}

// PublicKey returns the public half of the key pair at loc.
func (b *FileBackend) PublicKey(_ context.Context, loc string) (crypto.PublicKey, error) {
	_, k, err := b.privateKey(loc)
	if err != nil {
		return nil, err
	}
	return k.Public(), nil
}

// SignECDSA signs digest (not hashed again) with the EC key at loc; the
// signature is ASN.1 DER.
func (b *FileBackend) SignECDSA(_ context.Context, loc string, digest []byte) ([]byte, error) {
	_, k, err := b.privateKey(loc)
	if err != nil {
		return nil, err
	}
	ec, ok := k.(*ecdsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("%w: ECDSA needs an EC key, the key is %s", ErrInvalidParameter, keyType(k))
	}
	sig, err := ecdsa.SignASN1(rand.Reader, ec, digest)
	if err != nil {
		return nil, fmt.Errorf("ECDSA sign: %w", err)
	}
	return sig, nil
}

// RSAPrivate applies the RSA private key at loc to data.
func (b *FileBackend) RSAPrivate(_ context.Context, loc string, padding RSAPadding, data []byte) ([]byte, error) {
	e, k, err := b.privateKey(loc)
	if err != nil {
		return nil, err
	}
	rk, ok := k.(*rsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("%w: RSA needs an RSA key, the key is %s", ErrInvalidParameter, keyType(k))
	}
	switch padding {
	case RSAPKCS1:
		sig, err := rsa.SignPKCS1v15(rand.Reader, rk, 0, data)
		if errors.Is(err, rsa.ErrMessageTooLong) {
			return nil, fmt.Errorf("%w: %d bytes do not fit PKCS#1 v1.5 padding for a %d-byte modulus",
				ErrInvalidParameter, len(data), rk.Size())
		}
		if err != nil {
			return nil, fmt.Errorf("RSA PKCS#1 v1.5 private operation: %w", err)
		}
		return sig, nil
	case RSANoPadding:
		return e.crt.private(rand.Reader, data)
	default:
		return nil, fmt.Errorf("%w: unknown RSA padding %d", ErrInvalidParameter, padding)
	}
}

// Close releases nothing: files need no session.
func (b *FileBackend) Close() error { return nil }

func keyType(k crypto.Signer) string {
	switch k.(type) {
	case *ecdsa.PrivateKey:
		return "EC"
	case *rsa.PrivateKey:
		return "RSA"
	default:
		return fmt.Sprintf("%T", k)
	}
}
