// Package hsm holds Warden's key stores. Keys never leave a store: callers
// name keys by ID and get signatures, ciphertexts and public keys back, or a
// crypto.Signer that signs inside the store.
//
// Keys is the key store the broker and keyd use: it resolves a key ID to
// locations exactly as aziot's libaziot-keys does (preloaded keys, then the
// PKCS#11 base slot, then the file home directory) and runs each operation
// in the Backend of the location where the key is. FileBackend reads and
// writes aziot's file formats, so an existing aziot home directory works as
// it is; the PKCS#11 backend lives in package hsm/pkcs11. Handles issues and
// verifies aziot-compatible key handles.
package hsm

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"log/slog"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/warden-iot/warden/internal/atomicfile"
)

// PKCS11Backend is what Keys needs of a PKCS#11 backend. Package hsm/pkcs11
// provides one; hsm cannot import it (it implements this package's Backend),
// so the caller of Open passes a constructor in Config.OpenPKCS11.
type PKCS11Backend interface {
	Backend
	// Login opens a session on the slot of a pkcs11: URI and logs in with
	// its pin-value.
	Login(ctx context.Context, uri string) error
}

// Config says where keys live: the [aziot_keys] and [preloaded_keys] tables.
type Config struct {
	// HomeDir is [aziot_keys] homedir_path: file keys live in
	// <HomeDir>/keys/<KeyFileName(id)>. Empty: no file location.
	HomeDir string
	// PKCS11LibPath is [aziot_keys] pkcs11_lib_path.
	PKCS11LibPath string
	// PKCS11BaseSlot is [aziot_keys] pkcs11_base_slot, a pkcs11: URI; with
	// PKCS11LibPath it makes the token the first location of every key.
	PKCS11BaseSlot string
	// Preloaded is [preloaded_keys]: key ID → "file:///abs/path" or
	// "pkcs11:…". A preloaded ID has that single location.
	Preloaded map[string]string
	// OpenPKCS11 opens the PKCS#11 library (e.g. a wrapper of pkcs11.New).
	// Needed only when PKCS11LibPath is set.
	OpenPKCS11 func(libPath string, logger *slog.Logger) (PKCS11Backend, error)
	// Logger receives the store's logs (nil: discard). Key bytes are never
	// logged, nor PKCS#11 URIs (they may carry a PIN).
	Logger *slog.Logger
}

// Keys is the key store: aziot's location rules over a file backend and an
// optional PKCS#11 backend. It is safe for concurrent use.
type Keys struct {
	log       *slog.Logger
	file      *FileBackend
	homeDir   string
	libPath   string
	baseSlot  string
	preloaded map[string]preloaded
	open      func(string, *slog.Logger) (PKCS11Backend, error)

	p11mu  sync.Mutex                   // opening and closing the PKCS#11 backend
	p11    atomic.Pointer[pkcs11Holder] // opened at Open with a base slot, else on first use
	closed bool

	seed  maphash.Seed
	locks [64]sync.Mutex // create/import/delete/move, striped by key ID

	// hvkGen counts changes to the handle-validation key made through the
	// store; Handles drops its cache when it moves.
	hvkGen atomic.Uint64

	// paths caches keyPath (a SHA-256 and a join per call otherwise), for
	// at most maxCachedPaths IDs so that probes of unknown IDs cannot grow it.
	paths  sync.Map // key ID → file path
	npaths atomic.Int64
}

const maxCachedPaths = 4096

// keyPath is the key file of id in the home directory.
func (k *Keys) keyPath(id string) string {
	if p, ok := k.paths.Load(id); ok {
		return p.(string)
	}
	p := filepath.Join(k.homeDir, "keys", KeyFileName(id))
	// Only IDs as short as a file name are kept, and as copies: entries
	// stay for good, and a caller's ID may be up to 1 MiB long, or a path
	// segment whose bytes are those of its whole request line.
	if len(id) <= MaxFileName && k.npaths.Add(1) <= maxCachedPaths {
		k.paths.Store(strings.Clone(id), p)
	}
	return p
}

// pkcs11Holder lets an interface value sit in an atomic.Pointer.
type pkcs11Holder struct{ b PKCS11Backend }

// preloaded is a parsed [preloaded_keys] entry: a file path or a pkcs11 URI.
type preloaded struct {
	path string
	uri  string
}

// location is one place a key may be.
type location struct {
	b    Backend
	loc  string
	file bool // the file backend: v1 AEAD framing accepted
}

// Open returns the key store cfg describes. When both the PKCS#11 library
// and base slot are set, it opens the library and logs in to the base slot
// now, so a wrong library, slot or PIN fails at startup as with aziot.
func Open(ctx context.Context, cfg Config) (*Keys, error) {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	k := &Keys{
		log:       log,
		file:      NewFileBackend(log),
		libPath:   cfg.PKCS11LibPath,
		baseSlot:  cfg.PKCS11BaseSlot,
		preloaded: make(map[string]preloaded, len(cfg.Preloaded)),
		open:      cfg.OpenPKCS11,
		seed:      maphash.MakeSeed(),
	}
	if cfg.HomeDir != "" {
		abs, err := filepath.Abs(cfg.HomeDir)
		if err != nil {
			return nil, fmt.Errorf("hsm: home directory %q: %w", cfg.HomeDir, err)
		}
		k.homeDir = abs
		// A crash between writing and renaming a key leaves a temp file.
		if n, err := atomicfile.RemoveTemps(filepath.Join(abs, "keys")); err != nil {
			log.Warn("could not remove leftover temp files", "err", err)
		} else if n > 0 {
			log.Info("removed leftover temp files of interrupted key writes", "count", n)
		}
	}
	for id, uri := range cfg.Preloaded {
		p, err := parsePreloaded(uri)
		if err != nil {
			return nil, fmt.Errorf("hsm: preloaded key %q: %w", id, err)
		}
		k.preloaded[id] = p
	}
	if k.baseSlot != "" && k.libPath == "" {
		log.Warn("pkcs11_base_slot is ignored without pkcs11_lib_path")
	}
	if k.libPath != "" && k.baseSlot != "" {
		p, err := k.pkcs11()
		if err != nil {
			return nil, err
		}
		if err := p.Login(ctx, k.baseSlot); err != nil {
			k.Close()
			return nil, fmt.Errorf("hsm: log in to the PKCS#11 base slot: %w", err)
		}
		log.Info("PKCS#11 base slot ready: new keys are created in the token", "lib", k.libPath)
	}
	return k, nil
}

// parsePreloaded accepts file:///absolute/path (host empty or localhost,
// percent-decoded) and pkcs11: URIs (parsed by the PKCS#11 backend on use).
func parsePreloaded(uri string) (preloaded, error) {
	scheme, _, ok := strings.Cut(uri, ":")
	if !ok {
		return preloaded{}, fmt.Errorf("%w: location %q has no URI scheme", ErrInvalidParameter, uri)
	}
	switch scheme {
	case "file":
		u, err := url.Parse(uri)
		if err != nil {
			return preloaded{}, fmt.Errorf("%w: location %q: %w", ErrInvalidParameter, uri, err)
		}
		if u.Host != "" && u.Host != "localhost" || !filepath.IsAbs(u.Path) || u.Path == "/" {
			return preloaded{}, fmt.Errorf("%w: location %q is not file:///absolute/path", ErrInvalidParameter, uri)
		}
		return preloaded{path: filepath.Clean(u.Path)}, nil
	case "pkcs11":
		return preloaded{uri: uri}, nil
	default:
		return preloaded{}, fmt.Errorf("%w: location %q: scheme %q is neither file nor pkcs11", ErrInvalidParameter, uri, scheme)
	}
}

// pkcs11 returns the PKCS#11 backend, opening the library on first use.
func (k *Keys) pkcs11() (PKCS11Backend, error) {
	if h := k.p11.Load(); h != nil {
		return h.b, nil
	}
	k.p11mu.Lock()
	defer k.p11mu.Unlock()
	if h := k.p11.Load(); h != nil {
		return h.b, nil
	}
	if k.closed {
		return nil, errors.New("hsm: the key store is closed")
	}
	if k.open == nil {
		return nil, fmt.Errorf("hsm: PKCS#11 library %s is configured but this build has no PKCS#11 support", k.libPath)
	}
	p, err := k.open(k.libPath, k.log)
	if err != nil {
		return nil, fmt.Errorf("hsm: open PKCS#11 library %s: %w", k.libPath, err)
	}
	k.p11.Store(&pkcs11Holder{b: p})
	return p, nil
}

// MaxFileName is the longest file name Linux file systems take: the bound
// on a key file's name, and on the certificate files named the same way.
const MaxFileName = 255

// locations returns where key id may be, in aziot's order (spec §4.1):
// a preloaded ID's single location; else the base slot with object=<id>,
// then <HomeDir>/keys/<KeyFileName(id)>.
func (k *Keys) locations(id string) ([]location, error) {
	if id == "" {
		return nil, fmt.Errorf("%w: the key ID is empty", ErrInvalidParameter)
	}
	if p, ok := k.preloaded[id]; ok {
		if p.path != "" {
			return []location{{b: k.file, loc: p.path, file: true}}, nil
		}
		if k.libPath == "" {
			return nil, fmt.Errorf("%w: pre-loaded key requires PKCS#11 lib path to be configured", ErrInvalidParameter)
		}
		b, err := k.pkcs11()
		if err != nil {
			return nil, err
		}
		return []location{{b: b, loc: p.uri}}, nil
	}
	locs := make([]location, 0, 2)
	if k.libPath != "" && k.baseSlot != "" {
		b, err := k.pkcs11()
		if err != nil {
			return nil, err
		}
		locs = append(locs, location{b: b, loc: withObject(k.baseSlot, id)})
	}
	tooLong := false
	if k.homeDir != "" {
		// An ID whose file name would pass a file system's 255 bytes has no
		// file (aziot fails there too); it may still live in PKCS#11.
		if path := k.keyPath(id); len(filepath.Base(path)) <= MaxFileName {
			locs = append(locs, location{b: k.file, loc: path, file: true})
		} else {
			tooLong = true
		}
	}
	switch {
	case len(locs) == 0 && tooLong:
		return nil, fmt.Errorf("%w: the key ID is too long for a key file name (at most %d bytes)", ErrInvalidParameter, MaxFileName)
	case len(locs) == 0:
		return nil, fmt.Errorf("%w: no way to create keys (set homedir_path or a PKCS#11 base slot)", ErrInvalidParameter)
	}
	return locs, nil
}

// withObject returns the pkcs11: URI base with its object attribute set to
// label (replacing any), percent-encoding every byte that is not an ASCII
// letter or digit, as aziot's URI serializer does.
func withObject(base, label string) string {
	rest := strings.TrimPrefix(base, "pkcs11:")
	path, query, hasQuery := strings.Cut(rest, "?")
	var b strings.Builder
	b.WriteString("pkcs11:")
	for _, attr := range strings.Split(path, ";") {
		if attr == "" || strings.HasPrefix(attr, "object=") {
			continue
		}
		b.WriteString(attr)
		b.WriteByte(';')
	}
	b.WriteString("object=")
	const hexDigits = "0123456789ABCDEF"
	for i := 0; i < len(label); i++ {
		c := label[i]
		if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' {
			b.WriteByte(c)
		} else {
			b.WriteByte('%')
			b.WriteByte(hexDigits[c>>4])
			b.WriteByte(hexDigits[c&15])
		}
	}
	if hasQuery {
		b.WriteByte('?')
		b.WriteString(query)
	}
	return b.String()
}

// lock serialises the mutations of key id; the returned func unlocks.
func (k *Keys) lock(ids ...string) func() {
	idx := make([]int, 0, len(ids))
	for _, id := range ids {
		i := int(maphash.String(k.seed, id) % uint64(len(k.locks)))
		dup := false
		for _, j := range idx {
			dup = dup || i == j
		}
		if !dup {
			idx = append(idx, i)
		}
	}
	if len(idx) == 2 && idx[0] > idx[1] {
		idx[0], idx[1] = idx[1], idx[0]
	}
	for _, i := range idx {
		k.locks[i].Lock()
	}
	return func() {
		for j := len(idx) - 1; j >= 0; j-- {
			k.locks[idx[j]].Unlock()
		}
	}
}

func notFound(what, id string) error {
	return fmt.Errorf("hsm: %s %q: %w", what, id, ErrNotFound)
}

// changed notes a change to key id for Handles' cache.
func (k *Keys) changed(id string) {
	if id == HandleValidationKeyID {
		k.hvkGen.Add(1)
	}
}

// CreateKey creates symmetric key id unless it exists at one of its
// locations (an empty key file counts as missing). It generates the key at
// the first location that can: a PKCS#11 token that answers ErrUnsupported,
// or that cannot then do AES-GCM with a new encryption key, is skipped for
// the next location, as aziot does.
func (k *Keys) CreateKey(ctx context.Context, id string, usage Usage) error {
	return k.putKey(ctx, id, nil, usage)
}

// ImportKey stores key as symmetric key id, replacing any, at the first of
// its locations that accepts it (with the same fallbacks as CreateKey).
func (k *Keys) ImportKey(ctx context.Context, id string, key []byte, usage Usage) error {
	if len(key) == 0 {
		return fmt.Errorf("hsm: import key %q: %w: the key is empty", id, ErrInvalidParameter)
	}
	return k.putKey(ctx, id, key, usage)
}

func (k *Keys) putKey(ctx context.Context, id string, key []byte, usage Usage) error {
	what := "create key"
	if key != nil {
		what = "import key"
	}
	locs, err := k.locations(id)
	if err != nil {
		return fmt.Errorf("hsm: %s %q: %w", what, id, err)
	}
	defer k.lock(id)()
	if key == nil {
		for _, l := range locs {
			ok, err := l.b.KeyExists(ctx, l.loc)
			if errors.Is(err, ErrMalformed) {
				continue
			}
			if err != nil {
				return fmt.Errorf("hsm: %s %q: look for an existing key: %w", what, id, err)
			}
			if ok {
				return nil
			}
		}
	}
	var lastErr error
	var skipped []location // tokens that refused an import: the key they hold is replaced too
	for _, l := range locs {
		if key == nil {
			err = l.b.CreateKey(ctx, l.loc, usage)
		} else {
			err = l.b.ImportKey(ctx, l.loc, key, usage)
		}
		if errors.Is(err, ErrUnsupported) && !l.file {
			k.log.Info("PKCS#11 token cannot store this key, trying the next location", "key", id, "op", what, "err", err)
			lastErr = err
			if key != nil {
				skipped = append(skipped, l)
			}
			continue
		}
		if err != nil {
			return fmt.Errorf("hsm: %s %q: %w", what, id, err)
		}
		if !l.file && usage&UsageEncrypt != 0 {
			if err := probeGCM(ctx, l); err != nil {
				k.log.Info("PKCS#11 token cannot do AES-GCM with the new key, trying the next location", "key", id, "err", err)
				if derr := l.b.DeleteKey(ctx, l.loc); derr != nil {
					k.log.Warn("could not delete the unusable PKCS#11 key", "key", id, "err", derr)
				}
				lastErr = err
				continue
			}
		}
		k.changed(id)
		// An older key at a location that refused the import would be
		// found first and used instead of the imported one.
		for _, s := range skipped {
			if err := s.b.DeleteKey(ctx, s.loc); err != nil {
				return fmt.Errorf("hsm: %s %q: delete the key it replaces: %w", what, id, err)
			}
		}
		return nil
	}
	return fmt.Errorf("hsm: %s %q: no location can store it: %w", what, id, lastErr)
}

// probeGCM checks that a new PKCS#11 encryption key can do AES-GCM (aziot
// encrypts a dummy message the same way).
func probeGCM(ctx context.Context, l location) error {
	_, err := l.b.EncryptAEAD(ctx, l.loc, []byte("123456789012"), []byte("someaad"), []byte("someplaintext"))
	return err
}

// LoadKey checks that symmetric key id exists (ErrNotFound if not). A key
// file that is empty is an error, not a missing key.
func (k *Keys) LoadKey(ctx context.Context, id string) error {
	return k.exists(ctx, "load key", id, Backend.KeyExists)
}

// LoadKeyPair checks that key pair id exists (ErrNotFound if not).
func (k *Keys) LoadKeyPair(ctx context.Context, id string) error {
	return k.exists(ctx, "load key pair", id, Backend.KeyPairExists)
}

func (k *Keys) exists(ctx context.Context, what, id string, fn func(Backend, context.Context, string) (bool, error)) error {
	locs, err := k.locations(id)
	if err != nil {
		return fmt.Errorf("hsm: %s %q: %w", what, id, err)
	}
	for _, l := range locs {
		ok, err := fn(l.b, ctx, l.loc)
		if err != nil {
			return fmt.Errorf("hsm: %s %q: %w", what, id, err)
		}
		if ok {
			return nil
		}
	}
	return notFound(what, id)
}

// DeleteKey removes symmetric key id from every location; absent is not an
// error.
func (k *Keys) DeleteKey(ctx context.Context, id string) error {
	return k.deleteAll(ctx, "delete key", id, Backend.DeleteKey)
}

// DeleteKeyPair removes key pair id from every location; absent is not an
// error.
func (k *Keys) DeleteKeyPair(ctx context.Context, id string) error {
	return k.deleteAll(ctx, "delete key pair", id, Backend.DeleteKeyPair)
}

func (k *Keys) deleteAll(ctx context.Context, what, id string, fn func(Backend, context.Context, string) error) error {
	locs, err := k.locations(id)
	if err != nil {
		return fmt.Errorf("hsm: %s %q: %w", what, id, err)
	}
	defer k.lock(id)()
	defer k.changed(id)
	for _, l := range locs {
		if err := fn(l.b, ctx, l.loc); err != nil {
			return fmt.Errorf("hsm: %s %q: %w", what, id, err)
		}
	}
	return nil
}

// CreateKeyPair creates key pair id with the first of algs the store can do,
// unless it exists at one of its locations (a malformed key file counts as
// missing). Only the first location is used to create, as in aziot; the
// file backend uses only algs[0].
func (k *Keys) CreateKeyPair(ctx context.Context, id string, algs []Algorithm) error {
	if len(algs) == 0 {
		return fmt.Errorf("hsm: create key pair %q: %w: no algorithm given", id, ErrInvalidParameter)
	}
	for _, a := range algs {
		if a != ECP256 && a != RSA2048 && a != RSA4096 {
			return fmt.Errorf("hsm: create key pair %q: %w: unknown algorithm %q", id, ErrInvalidParameter, a)
		}
	}
	locs, err := k.locations(id)
	if err != nil {
		return fmt.Errorf("hsm: create key pair %q: %w", id, err)
	}
	defer k.lock(id)()
	for _, l := range locs {
		ok, err := l.b.KeyPairExists(ctx, l.loc)
		if errors.Is(err, ErrMalformed) {
			continue
		}
		if err != nil {
			return fmt.Errorf("hsm: create key pair %q: look for an existing key pair: %w", id, err)
		}
		if ok {
			return nil
		}
	}
	err = locs[0].b.CreateKeyPair(ctx, locs[0].loc, algs)
	if errors.Is(err, ErrUnsupported) {
		return fmt.Errorf("hsm: create key pair %q: %w: no algorithm succeeded: %w", id, ErrInvalidParameter, err)
	}
	if err != nil {
		return fmt.Errorf("hsm: create key pair %q: %w", id, err)
	}
	return nil
}

// MoveKeyPair renames key pair from to to, replacing to. The key moves
// within the store it is in (a file rename, or a PKCS#11 relabel) to the
// location to has in that store; keys never move between stores.
func (k *Keys) MoveKeyPair(ctx context.Context, from, to string) error {
	if from == to {
		return fmt.Errorf("hsm: move key pair %q: %w: source and destination for move are identical", from, ErrInvalidParameter)
	}
	fromLocs, err := k.locations(from)
	if err != nil {
		return fmt.Errorf("hsm: move key pair %q: %w", from, err)
	}
	toLocs, err := k.locations(to)
	if err != nil {
		return fmt.Errorf("hsm: move key pair to %q: %w", to, err)
	}
	defer k.lock(from, to)()
	var src *location
	for i, l := range fromLocs {
		ok, err := l.b.KeyPairExists(ctx, l.loc)
		if err != nil {
			return fmt.Errorf("hsm: move key pair %q: %w", from, err)
		}
		if ok {
			src = &fromLocs[i]
			break
		}
	}
	if src == nil {
		return notFound("move key pair", from)
	}
	for _, dst := range toLocs {
		if dst.b != src.b {
			continue
		}
		if err := src.b.MoveKeyPair(ctx, src.loc, dst.loc); err != nil {
			return fmt.Errorf("hsm: move key pair %q to %q: %w", from, to, err)
		}
		return nil
	}
	return fmt.Errorf("hsm: move key pair %q to %q: %w: the destination is in another key store", from, to, ErrInvalidParameter)
}

// Close releases the PKCS#11 backend, if one was opened. The store must not
// be used afterwards.
func (k *Keys) Close() error {
	k.p11mu.Lock()
	defer k.p11mu.Unlock()
	k.closed = true
	h := k.p11.Swap(nil)
	if h == nil {
		return nil
	}
	if err := h.b.Close(); err != nil {
		return fmt.Errorf("hsm: close PKCS#11 backend: %w", err)
	}
	return nil
}
