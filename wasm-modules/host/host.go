// Package host runs Warden's WASM provisioning modules under wazero
// (DESIGN §5): it loads a module file, verifies its pinned SHA-256 digest
// and/or Ed25519 signature, compiles it once (with an on-disk compilation
// cache), and runs each job in a fresh instance with limits on memory,
// wall-clock time, host calls, output and log bytes. The job's JSON is the
// module's standard input; its result envelope (guest.Envelope) is read
// from standard output.
//
// Host calls (import module "warden", defined in package guest) go through
// the interfaces Keys, CertStore and TPM, and each is a policy decision
// (action.service "modules", input.module set) by a Decider. http.do is
// done by the host: TLS with the client key used through Keys (it never
// enters the module), trust by cert store IDs, and the module's egress
// allowlist enforced before the policy is asked.
//
// Modules are swapped with Load/Reload: the next job uses the new version,
// running jobs finish on the old one. The package knows nothing of HTTP
// servers and does not import broker/.
package host

import (
	"context"
	"crypto"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sort"
	"sync"
	"time"

	"github.com/tetratelabs/wazero"

	"github.com/warden-iot/warden/hsm"
	"github.com/warden-iot/warden/policy"
)

// Keys is what the host needs of the key store; *hsm.Keys implements it.
// Private keys are only ever used through Signer, symmetric keys through
// HMACSHA256.
type Keys interface {
	CreateKeyPair(ctx context.Context, id string, algs []hsm.Algorithm) error
	PublicKey(ctx context.Context, id string) (crypto.PublicKey, error)
	Signer(ctx context.Context, id string) (crypto.Signer, error)
	HMACSHA256(ctx context.Context, id string, msg []byte) ([]byte, error)
}

// CertStore is what the host needs of the certificate store (certd
// implements it). A missing certificate is an error wrapping ErrNotFound
// (or fs.ErrNotExist).
type CertStore interface {
	Get(ctx context.Context, id string) ([]byte, error)
	Put(ctx context.Context, id string, pem []byte) error
}

// TPM is what the host needs of the TPM (package tpm implements it): the
// marshalled TPM2B_PUBLIC of the EK and SRK, the import of a DPS auth key
// blob, and HMAC-SHA256 with the imported auth key.
type TPM interface {
	Keys(ctx context.Context) (ek, srk []byte, err error)
	ImportAuthKey(ctx context.Context, blob []byte) error
	SignWithAuthKey(ctx context.Context, data []byte) ([]byte, error)
}

// Decider evaluates the policy; *policy.Engine implements it (and records
// each decision in its decision log).
type Decider interface {
	Decide(ctx context.Context, in *policy.Input) (policy.Decision, error)
}

// ErrNotFound is what CertStore and TPM errors wrap for a missing object;
// the module sees guest.CodeNotFound.
var ErrNotFound = errors.New("not found")

// Options configure a Host. Keys, Certs and TPM may be nil: their host
// calls then fail with guest.CodeUnavailable.
type Options struct {
	// CacheDir holds the compilation cache (the broker uses
	// <state_dir>/module-cache); "" compiles in memory only.
	CacheDir string
	Keys     Keys
	Certs    CertStore
	TPM      TPM
	// Decider decides every host call but log. nil denies them all.
	Decider Decider
	// ReservedKeys are key IDs no module may use, whatever the policy: the
	// broker's token key, with which a module could forge tokens.
	ReservedKeys []string
	// Caller is input.caller of host-call decisions: the broker itself.
	Caller policy.Caller
	// Defaults are the limits of modules that do not set their own; zero
	// fields take DefaultLimits.
	Defaults Limits
	// Logger receives module logs and job outcomes; nil is slog.Default().
	Logger *slog.Logger
}

// Limits bound one job. A zero field means "the default".
type Limits struct {
	// MemoryMB caps the instance's linear memory (MiB).
	MemoryMB int
	// Timeout is the job's wall-clock deadline.
	Timeout time.Duration
	// MaxHostCalls is how many host calls a job may make; one more fails it.
	MaxHostCalls int
	// MaxOutputBytes caps the result envelope on standard output.
	MaxOutputBytes int
	// MaxLogBytes caps what a job logs (standard error and log calls).
	MaxLogBytes int
	// MaxSleep is the longest single clock.sleep.
	MaxSleep time.Duration
	// MaxHTTPBodyBytes caps an http.do response body.
	MaxHTTPBodyBytes int64
}

// DefaultLimits are the limits of a module that sets none.
var DefaultLimits = Limits{
	MemoryMB:         64,
	Timeout:          time.Minute,
	MaxHostCalls:     1000,
	MaxOutputBytes:   1 << 20,
	MaxLogBytes:      64 << 10,
	MaxSleep:         5 * time.Minute,
	MaxHTTPBodyBytes: 4 << 20,
}

// withDefaults fills l's zero fields from d.
func (l Limits) withDefaults(d Limits) Limits {
	if l.MemoryMB <= 0 {
		l.MemoryMB = d.MemoryMB
	}
	if l.Timeout <= 0 {
		l.Timeout = d.Timeout
	}
	if l.MaxHostCalls <= 0 {
		l.MaxHostCalls = d.MaxHostCalls
	}
	if l.MaxOutputBytes <= 0 {
		l.MaxOutputBytes = d.MaxOutputBytes
	}
	if l.MaxLogBytes <= 0 {
		l.MaxLogBytes = d.MaxLogBytes
	}
	if l.MaxSleep <= 0 {
		l.MaxSleep = d.MaxSleep
	}
	if l.MaxHTTPBodyBytes <= 0 {
		l.MaxHTTPBodyBytes = d.MaxHTTPBodyBytes
	}
	return l
}

// ModuleConfig is one configured module ([warden.modules.<name>]).
type ModuleConfig struct {
	// Name is the module's name (input.module.name).
	Name string
	// Path is the .wasm file.
	Path string
	// SHA256 is the hex digest the file must have, or "".
	SHA256 string
	// Signature is the file's detached Ed25519 signature: base64 of the 64
	// bytes, or the absolute path of a file holding them (raw or base64).
	// "" means none is required.
	Signature string
	// TrustedKeys are the Ed25519 public keys a Signature may be made by:
	// each base64 of the 32 bytes, PEM text, or the absolute path of a PEM
	// ("PUBLIC KEY") or raw key file.
	TrustedKeys []string
	// Egress lists the host[:port] (or *.domain[:port]) http.do may reach.
	Egress []string
	// Limits override the host's defaults.
	Limits Limits
}

// Host loads and runs modules. It is safe for concurrent use.
type Host struct {
	opts     Options
	defaults Limits
	log      *slog.Logger
	cache    wazero.CompilationCache

	loadMu  sync.Mutex // serialises Load
	mu      sync.Mutex // guards entries and closed
	entries map[string]*entry
	closed  bool
}

// New returns a Host with no modules (see Load).
func New(opts Options) (*Host, error) {
	h := &Host{opts: opts, log: opts.Logger, entries: map[string]*entry{}}
	if h.log == nil {
		h.log = slog.Default()
	}
	h.defaults = opts.Defaults.withDefaults(DefaultLimits)
	if opts.CacheDir != "" {
		if err := os.MkdirAll(opts.CacheDir, 0o700); err != nil {
			return nil, fmt.Errorf("module cache: %w", err)
		}
		c, err := wazero.NewCompilationCacheWithDir(opts.CacheDir)
		if err != nil {
			return nil, fmt.Errorf("module cache %s: %w", opts.CacheDir, err)
		}
		h.cache = c
	} else {
		h.cache = wazero.NewCompilationCache()
	}
	return h, nil
}

// Close retires every module (running jobs finish first, then their
// runtimes close) and the compilation cache.
func (h *Host) Close(ctx context.Context) error {
	h.loadMu.Lock()
	defer h.loadMu.Unlock()
	h.mu.Lock()
	h.closed = true
	var retired []*module
	for name, e := range h.entries {
		if e.cur != nil {
			retired = append(retired, e.cur)
		}
		delete(h.entries, name)
	}
	h.mu.Unlock()
	for _, m := range retired {
		m.retire(ctx)
	}
	return h.cache.Close(ctx)
}

// ModuleStatus describes a configured module (GET /modules).
type ModuleStatus struct {
	Name string `json:"name"`
	Path string `json:"path"`
	// Digest is "sha256:<hex>" of the version that runs jobs, "" if none.
	Digest string `json:"digest,omitempty"`
	// SHA256Pinned: the config pins the digest.
	SHA256Pinned bool `json:"sha256Pinned"`
	// Signature is "verified", "none" (not required), or "" when no
	// version is loaded.
	Signature string `json:"signature,omitempty"`
	// SignatureKey is the fingerprint of the key that verified it.
	SignatureKey string `json:"signatureKey,omitempty"`
	// Loaded: a version is ready to run jobs.
	Loaded   bool       `json:"loaded"`
	LoadedAt *time.Time `json:"loadedAt,omitempty"`
	// Error is why the module, or its last reload, was refused (when a
	// reload was refused the previous version may still be Loaded).
	Error    string     `json:"error,omitempty"`
	Running  int        `json:"running"`
	Jobs     uint64     `json:"jobs"`
	Failures uint64     `json:"failures"`
	LastJob  *JobRecord `json:"lastJob,omitempty"`
}

// JobRecord is the outcome of a module's last job.
type JobRecord struct {
	Time   time.Time `json:"time"`
	Digest string    `json:"digest"`
	OK     bool      `json:"ok"`
	// Kind classifies a failure (see Kind); "" when OK.
	Kind       string  `json:"kind,omitempty"`
	Error      string  `json:"error,omitempty"`
	DurationMS float64 `json:"durationMs"`
	HostCalls  int     `json:"hostCalls"`
	Native     bool    `json:"native,omitempty"`
}

// Modules lists the configured modules, sorted by name.
func (h *Host) Modules() []ModuleStatus {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]ModuleStatus, 0, len(h.entries))
	for _, e := range h.entries {
		out = append(out, e.status())
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Module returns the status of module name.
func (h *Host) Module(name string) (ModuleStatus, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	e, ok := h.entries[name]
	if !ok {
		return ModuleStatus{}, false
	}
	return e.status(), true
}
