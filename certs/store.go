// Package certs is Warden's certificate mechanism: the certificate store
// (aziot certd's file layout and preloaded certificates), local issuance
// (self-signed and CA-signed certificates from a CSR, signed by a key that
// never leaves its store), CSR building, and the renewal arithmetic and
// scheduler of aziot's cert-renewal crate. It knows nothing of HTTP; the
// certd service (broker/certd) composes it with the key store and policy.
package certs

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/warden-iot/warden/hsm"
	"github.com/warden-iot/warden/internal/atomicfile"
)

// notFound is ErrNotFound: its text is aziot's cause ("not found") and it
// matches fs.ErrNotExist, so callers that know only the standard library
// (the module host's cert store interface) recognise it.
type notFound struct{}

// Error is aziot's cause text.
func (notFound) Error() string { return "not found" }

// Is matches fs.ErrNotExist.
func (notFound) Is(target error) bool { return target == fs.ErrNotExist }

// Errors of the store.
var (
	// ErrNotFound: no certificate with that ID. It matches fs.ErrNotExist.
	ErrNotFound error = notFound{}
	// ErrBundle: a preloaded bundle (a list of IDs) cannot be written or deleted.
	ErrBundle = errors.New("the certificate is a preloaded bundle of other certificates and cannot be modified")
	// ErrInvalidID: an ID the store cannot hold (empty, with a NUL byte,
	// or too long for a file name).
	ErrInvalidID = errors.New("invalid certificate ID")
)

// maxCertFileSize bounds a certificate file read from disk.
const maxCertFileSize = 1 << 20

// Preloaded is a [preloaded_certs] entry: a file (Path) or a bundle of other
// cert IDs (Bundle, non-nil).
type Preloaded struct {
	// Path is the absolute path of a PEM file (from a file:// URI).
	Path string
	// Bundle lists cert IDs whose certificates a read concatenates.
	Bundle []string
}

// Store holds certificates by ID: dynamic ones as PEM files under
// <dir>/<FileName(id)>, preloaded ones where [preloaded_certs] says. It is
// safe for concurrent use; writes are atomic (a crash leaves the old or the
// new file).
type Store struct {
	dir string
	log *slog.Logger

	mu        sync.RWMutex // guards preloaded
	preloaded map[string]Preloaded

	wmu sync.Mutex // serialises writes and deletes
}

// OpenStore returns the store whose dynamic certificates live in dir
// (created 0700 when missing), with the preloaded entries p.
func OpenStore(dir string, p map[string]Preloaded, logger *slog.Logger) (*Store, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("certs: store directory %q: %w", dir, err)
	}
	if err := os.MkdirAll(abs, 0o700); err != nil {
		return nil, fmt.Errorf("certs: store directory: %w", err)
	}
	// A crash between writing and renaming a certificate leaves a temp file.
	if n, err := atomicfile.RemoveTemps(abs); err != nil {
		logger.Warn("could not remove leftover temp files", "err", err)
	} else if n > 0 {
		logger.Info("removed leftover temp files of interrupted certificate writes", "count", n)
	}
	s := &Store{dir: abs, log: logger}
	s.SetPreloaded(p)
	return s, nil
}

// SetPreloaded replaces the preloaded entries (on a configuration reload).
func (s *Store) SetPreloaded(p map[string]Preloaded) {
	cp := make(map[string]Preloaded, len(p))
	for id, e := range p {
		cp[id] = Preloaded{Path: e.Path, Bundle: append([]string(nil), e.Bundle...)}
	}
	s.mu.Lock()
	s.preloaded = cp
	s.mu.Unlock()
}

// Dir is the directory of dynamic certificates.
func (s *Store) Dir() string { return s.dir }

// FileName is aziot's file name for cert ID id: keyd's key file name
// (hsm.KeyFileName: the ASCII alphanumerics of id, "-", the hex SHA-256 of
// id) with ".cer" in place of ".key".
func FileName(id string) string {
	return strings.TrimSuffix(hsm.KeyFileName(id), ".key") + ".cer"
}

func checkID(id string) error {
	if id == "" {
		return fmt.Errorf("%w: empty", ErrInvalidID)
	}
	for i := 0; i < len(id); i++ {
		if id[i] == 0 {
			return fmt.Errorf("%w: NUL byte at position %d", ErrInvalidID, i)
		}
	}
	return nil
}

// check is checkID and, for an ID kept in the store's own directory, that
// its file name fits a file system's 255 bytes (aziot fails there too,
// with a 500).
func (s *Store) check(id string) error {
	if err := checkID(id); err != nil {
		return err
	}
	if _, ok := s.entry(id); !ok {
		if n := len(FileName(id)); n > hsm.MaxFileName {
			return fmt.Errorf("%w: too long, its file name would be %d bytes (at most %d)", ErrInvalidID, n, hsm.MaxFileName)
		}
	}
	return nil
}

// entry returns the preloaded entry of id, if any.
func (s *Store) entry(id string) (Preloaded, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	e, ok := s.preloaded[id]
	return e, ok
}

// path returns the file that holds id (preloaded or dynamic); bundle is
// set instead for a preloaded bundle.
func (s *Store) path(id string) (path string, bundle []string) {
	if e, ok := s.entry(id); ok {
		if e.Bundle != nil {
			return "", e.Bundle
		}
		return e.Path, nil
	}
	return filepath.Join(s.dir, FileName(id)), nil
}

// Path returns the file that holds certificate id, whether or not it exists
// yet. A bundle has no file (ErrBundle).
func (s *Store) Path(id string) (string, error) {
	if err := s.check(id); err != nil {
		return "", err
	}
	p, b := s.path(id)
	if b != nil {
		return "", fmt.Errorf("certs: %q: %w", id, ErrBundle)
	}
	return p, nil
}

// Get returns the PEM of certificate id. A bundle concatenates those of its
// members that exist (a member that is itself a bundle is skipped); a
// bundle none of whose members exists is not found.
func (s *Store) Get(id string) ([]byte, error) {
	if err := s.check(id); err != nil {
		return nil, err
	}
	p, bundle := s.path(id)
	if bundle == nil {
		return readCert(id, p)
	}
	var out []byte
	for _, m := range bundle {
		mp, nested := s.path(m)
		if nested != nil || s.check(m) != nil {
			continue
		}
		b, err := readCert(m, mp)
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		out = append(out, b...)
		if len(b) > 0 && b[len(b)-1] != '\n' {
			out = append(out, '\n')
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("certs: bundle %q: %w", id, ErrNotFound)
	}
	return out, nil
}

func readCert(id, path string) ([]byte, error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("certs: %q: %w", id, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("certs: read %q: %w", id, err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxCertFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("certs: read %q: %w", id, err)
	}
	if len(b) > maxCertFileSize {
		return nil, fmt.Errorf("certs: read %q: file larger than %d bytes", id, maxCertFileSize)
	}
	return b, nil
}

// Exists reports whether certificate id can be read.
func (s *Store) Exists(id string) bool {
	_, err := s.Get(id)
	return err == nil
}

// Put writes pem as certificate id (the bytes as given), atomically, mode
// 0644; the directory of a dynamic certificate is created 0700.
func (s *Store) Put(id string, pem []byte) error {
	p, err := s.Path(id)
	if err != nil {
		return err
	}
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		return fmt.Errorf("certs: write %q: %w", id, err)
	}
	if err := atomicfile.Write(p, pem, 0o644); err != nil {
		return fmt.Errorf("certs: write %q: %w", id, err)
	}
	s.log.Debug("certificate written", "cert", id)
	return nil
}

// Delete removes certificate id; a missing one is not an error. For a
// preloaded ID the preloaded file itself is deleted, as in aziot.
func (s *Store) Delete(id string) error {
	p, err := s.Path(id)
	if err != nil {
		return err
	}
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("certs: delete %q: %w", id, err)
	}
	if err := atomicfile.SyncDir(filepath.Dir(p)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("certs: delete %q: %w", id, err)
	}
	s.log.Debug("certificate deleted", "cert", id)
	return nil
}
