package host

import (
	"context"
	"crypto/ed25519"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/imports/wasi_snapshot_preview1"

	"github.com/warden-iot/warden/wasm-modules/guest"
)

// maxModuleBytes caps a module file (a Go module is about 2–10 MB).
const maxModuleBytes = 64 << 20

// entry is one configured module name: its config, the version that runs
// new jobs, and its record.
type entry struct {
	cfg      ModuleConfig
	cur      *module // nil when no version is loaded
	loadErr  error
	loadedAt time.Time
	running  int
	jobs     uint64
	failures uint64
	last     *JobRecord
}

func (e *entry) status() ModuleStatus {
	s := ModuleStatus{Name: e.cfg.Name, Path: e.cfg.Path, SHA256Pinned: e.cfg.SHA256 != "",
		Running: e.running, Jobs: e.jobs, Failures: e.failures}
	if e.cur != nil {
		s.Loaded = true
		s.Digest = e.cur.digest
		s.Signature = "none"
		if e.cur.signedBy != "" {
			s.Signature, s.SignatureKey = "verified", e.cur.signedBy
		}
		t := e.loadedAt
		s.LoadedAt = &t
	}
	if e.loadErr != nil {
		s.Error = e.loadErr.Error()
	}
	if e.last != nil {
		r := *e.last
		s.LastJob = &r
	}
	return s
}

// module is one verified, compiled version of a module file, in its own
// wazero runtime (the memory limit is per runtime). Jobs hold a reference;
// a retired version closes when its last job ends.
type module struct {
	name     string
	digest   string            // "sha256:<hex>"
	signedBy string            // fingerprint of the verifying key, "" if unsigned
	signer   ed25519.PublicKey // the verifying key, nil if unsigned
	limits   Limits
	egress   []egressRule
	rt       wazero.Runtime
	compiled wazero.CompiledModule

	mu      sync.Mutex
	refs    int
	retired bool
}

func (m *module) acquire() {
	m.mu.Lock()
	m.refs++
	m.mu.Unlock()
}

func (m *module) release(ctx context.Context) {
	m.mu.Lock()
	m.refs--
	done := m.retired && m.refs == 0
	m.mu.Unlock()
	if done {
		m.rt.Close(context.WithoutCancel(ctx))
	}
}

// retire closes the version now if no job runs on it, else after the last.
func (m *module) retire(ctx context.Context) {
	m.mu.Lock()
	m.retired = true
	done := m.refs == 0
	m.mu.Unlock()
	if done {
		m.rt.Close(context.WithoutCancel(ctx))
	}
}

// sameIntegrity: a and b pin the same file the same way, so a version
// verified under a is still acceptable under b.
func sameIntegrity(a, b ModuleConfig) bool {
	return a.Path == b.Path && strings.EqualFold(a.SHA256, b.SHA256) && a.Signature == b.Signature &&
		slices.Equal(a.TrustedKeys, b.TrustedKeys)
}

func sameConfig(a, b ModuleConfig) bool {
	return sameIntegrity(a, b) && slices.Equal(a.Egress, b.Egress) && a.Limits == b.Limits
}

// Load makes cfgs the configured modules: each file is read and verified
// again; a new or changed file (or config) is compiled into a new version
// that the next job uses, while running jobs finish on the old one. Modules
// not in cfgs are removed. A module that fails to load is refused (its jobs
// fail with ErrUnavailable) — unless its previous version still satisfies
// its config, which then keeps serving; the returned error joins every
// refusal, and the host serves the other modules regardless.
func (h *Host) Load(ctx context.Context, cfgs []ModuleConfig) error {
	h.loadMu.Lock()
	defer h.loadMu.Unlock()
	return h.load(ctx, cfgs)
}

// load is Load with h.loadMu held.
func (h *Host) load(ctx context.Context, cfgs []ModuleConfig) error {
	h.mu.Lock()
	closed := h.closed
	old := make(map[string]entry, len(h.entries))
	for name, e := range h.entries {
		old[name] = *e
	}
	h.mu.Unlock()
	if closed {
		return ErrClosed
	}
	seen := map[string]bool{}
	type outcome struct {
		cfg  ModuleConfig
		m    *module // the new version, or nil to keep or drop the old
		keep bool    // keep the old version
		err  error
	}
	var outs []outcome
	var errs []error
	for _, cfg := range cfgs {
		if seen[cfg.Name] {
			errs = append(errs, fmt.Errorf("module %q configured twice", cfg.Name))
			continue
		}
		seen[cfg.Name] = true
		prev, had := old[cfg.Name]
		var prevMod *module
		if had {
			prevMod = prev.cur
		}
		m, unchanged, err := h.loadVersion(ctx, cfg, prevMod, had && sameConfig(prev.cfg, cfg))
		switch {
		case err != nil:
			keep := prevMod != nil && sameConfig(prev.cfg, cfg) && stillTrusted(prevMod.signer, cfg)
			if keep {
				err = fmt.Errorf("%w (version %s keeps serving)", err, prevMod.digest)
			}
			errs = append(errs, err)
			h.log.Error("module refused", "module", cfg.Name, "path", cfg.Path, "err", err)
			outs = append(outs, outcome{cfg: cfg, keep: keep, err: err})
		case unchanged:
			outs = append(outs, outcome{cfg: cfg, keep: true})
		default:
			h.log.Info("module loaded", "module", cfg.Name, "digest", m.digest, "signed_by", m.signedBy,
				"memory_mb", m.limits.MemoryMB, "timeout", m.limits.Timeout)
			outs = append(outs, outcome{cfg: cfg, m: m})
		}
	}
	var retired []*module
	h.mu.Lock()
	for _, o := range outs {
		e := h.entries[o.cfg.Name]
		if e == nil {
			e = &entry{}
			h.entries[o.cfg.Name] = e
		}
		e.cfg, e.loadErr = o.cfg, o.err
		switch {
		case o.m != nil:
			if e.cur != nil {
				retired = append(retired, e.cur)
			}
			e.cur, e.loadedAt = o.m, time.Now()
		case !o.keep && e.cur != nil:
			retired = append(retired, e.cur)
			e.cur = nil
		}
	}
	for name, e := range h.entries {
		if !seen[name] {
			if e.cur != nil {
				retired = append(retired, e.cur)
			}
			delete(h.entries, name)
			h.log.Info("module removed", "module", name)
		}
	}
	h.mu.Unlock()
	for _, m := range retired {
		m.retire(ctx)
	}
	return errors.Join(errs...)
}

// Reload re-reads and re-verifies every configured module file (Load with
// the current configuration): POST /modules/reload and SIGHUP.
func (h *Host) Reload(ctx context.Context) error {
	// The configuration is read under loadMu: read before a Load in
	// progress ends, it would be loaded over that Load's newer one.
	h.loadMu.Lock()
	defer h.loadMu.Unlock()
	h.mu.Lock()
	cfgs := make([]ModuleConfig, 0, len(h.entries))
	for _, e := range h.entries {
		cfgs = append(cfgs, e.cfg)
	}
	h.mu.Unlock()
	sort.Slice(cfgs, func(i, j int) bool { return cfgs[i].Name < cfgs[j].Name })
	return h.load(ctx, cfgs)
}

// loadVersion reads, verifies and compiles cfg's file. When prev has the
// same digest and the config is the same, it reports unchanged instead.
func (h *Host) loadVersion(ctx context.Context, cfg ModuleConfig, prev *module, sameCfg bool) (_ *module, unchanged bool, _ error) {
	bin, err := readModule(cfg.Path)
	if err != nil {
		return nil, false, fmt.Errorf("module %s: %w", cfg.Name, err)
	}
	v, err := verify(bin, cfg)
	if err != nil {
		return nil, false, fmt.Errorf("module %s: %w", cfg.Name, err)
	}
	if prev != nil && sameCfg && prev.digest == v.digest {
		return nil, true, nil
	}
	egress, err := parseEgress(cfg.Egress)
	if err != nil {
		return nil, false, fmt.Errorf("module %s: %w", cfg.Name, err)
	}
	m := &module{name: cfg.Name, digest: v.digest, signedBy: v.signedBy, signer: v.signer, egress: egress,
		limits: cfg.Limits.withDefaults(h.defaults)}
	if err := h.compile(ctx, m, bin); err != nil {
		return nil, false, fmt.Errorf("module %s (%s): %w", cfg.Name, v.digest, err)
	}
	return m, false, nil
}

func readModule(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read: %w", err)
	}
	defer f.Close()
	bin, err := io.ReadAll(io.LimitReader(f, maxModuleBytes+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if len(bin) > maxModuleBytes {
		return nil, fmt.Errorf("read %s: larger than %d MiB", path, maxModuleBytes>>20)
	}
	return bin, nil
}

// compile makes m's runtime (memory limit, close on context done, the
// shared compilation cache, WASI and the warden imports) and compiles bin,
// which must be a WASI command importing nothing else.
func (h *Host) compile(ctx context.Context, m *module, bin []byte) error {
	pages := uint32(m.limits.MemoryMB) * 16 // 64 KiB pages
	rcfg := wazero.NewRuntimeConfig().
		// Without reference types, no table.grow (nor more than one table):
		// a table lives in the host's memory, outside the memory limit,
		// and table.grow took it up to 32 GiB (see checkTables).
		WithCoreFeatures(api.CoreFeaturesV2 &^ api.CoreFeatureReferenceTypes).
		WithCompilationCache(h.cache).
		WithMemoryLimitPages(pages).
		WithCloseOnContextDone(true)
	rt := wazero.NewRuntimeWithConfig(ctx, rcfg)
	ok := false
	defer func() {
		if !ok {
			rt.Close(ctx)
		}
	}()
	if _, err := wasi_snapshot_preview1.Instantiate(ctx, rt); err != nil {
		return fmt.Errorf("instantiate WASI: %w", err)
	}
	if err := h.instantiateImports(ctx, rt); err != nil {
		return err
	}
	compiled, err := rt.CompileModule(ctx, bin)
	if err != nil {
		return fmt.Errorf("compile: %w", err)
	}
	if err := checkShape(compiled); err != nil {
		return err
	}
	if err := checkTables(bin, uint64(m.limits.MemoryMB)<<20); err != nil {
		return err
	}
	m.rt, m.compiled, ok = rt, compiled, true
	return nil
}

// checkShape refuses a module that is not a WASI command or that imports
// anything but WASI preview 1 and warden.call/warden.take.
func checkShape(c wazero.CompiledModule) error {
	exports := c.ExportedFunctions()
	if _, ok := exports["_start"]; !ok {
		if _, reactor := exports["_initialize"]; reactor {
			return errors.New("the module is a WASI reactor (built with -buildmode=c-shared): build it as a command, GOOS=wasip1 GOARCH=wasm go build")
		}
		return errors.New("the module has no _start export: build it as a WASI command, GOOS=wasip1 GOARCH=wasm go build")
	}
	for _, f := range c.ImportedFunctions() {
		mod, name, _ := f.Import()
		switch {
		case mod == wasi_snapshot_preview1.ModuleName:
		case mod == guest.ImportModule && (name == "call" || name == "take"):
		default:
			return fmt.Errorf("the module imports %s.%s, which the host does not provide", mod, name)
		}
	}
	for _, mem := range c.ImportedMemories() {
		mod, name, _ := mem.Import()
		return fmt.Errorf("the module imports memory %s.%s, which the host does not provide", mod, name)
	}
	return nil
}

// tableEntryBytes is what wazero's tables take of the host's memory per
// entry (a pointer).
const tableEntryBytes = 8

// checkTables refuses a module whose function table would take more of the
// host's memory than the module may have of linear memory: a table is
// allocated in the host, outside the memory limit, at its declared minimum
// (up to 2^27 entries, a gigabyte per job). It cannot grow (no reference
// types, see compile), so that is its size. bin has compiled: it is valid.
func checkTables(bin []byte, limit uint64) error {
	errBad := errors.New("the module's table section cannot be read")
	r := bin[min(8, len(bin)):] // past the magic number and version
	for len(r) > 0 {
		id := r[0]
		size, n := binary.Uvarint(r[1:])
		if n <= 0 || size > uint64(len(r)-1-n) {
			return errBad
		}
		sec := r[1+n : 1+n+int(size)]
		r = r[1+n+int(size):]
		if id != 4 { // the table section
			continue
		}
		count, n := binary.Uvarint(sec)
		if n <= 0 {
			return errBad
		}
		sec = sec[n:]
		for range count {
			// funcref (0x70) or externref (0x6f), then limits: a flag
			// (bit 0: a maximum follows) and the minimum.
			if len(sec) < 3 || sec[0] != 0x70 && sec[0] != 0x6f || sec[1] > 1 {
				return errBad
			}
			hasMax := sec[1] == 1
			entries, n := binary.Uvarint(sec[2:])
			if n <= 0 {
				return errBad
			}
			if entries*tableEntryBytes > limit {
				return fmt.Errorf("the module's table of %d entries takes more than its %d MiB memory limit", entries, limit>>20)
			}
			sec = sec[2+n:]
			if hasMax {
				if _, n = binary.Uvarint(sec); n <= 0 {
					return errBad
				}
				sec = sec[n:]
			}
		}
	}
	return nil
}

// instantiateImports defines the warden import module in rt: call and take
// (see guest/run_wasip1.go for the guest side).
func (h *Host) instantiateImports(ctx context.Context, rt wazero.Runtime) error {
	i32, i64 := api.ValueTypeI32, api.ValueTypeI64
	_, err := rt.NewHostModuleBuilder(guest.ImportModule).
		NewFunctionBuilder().
		WithGoModuleFunction(api.GoModuleFunc(wasmCall), []api.ValueType{i32, i32, i32, i32}, []api.ValueType{i64}).
		WithParameterNames("op_ptr", "op_len", "req_ptr", "req_len").
		Export("call").
		NewFunctionBuilder().
		WithGoModuleFunction(api.GoModuleFunc(wasmTake), []api.ValueType{i32, i32}, []api.ValueType{i32}).
		WithParameterNames("ptr", "len").
		Export("take").
		Instantiate(ctx)
	if err != nil {
		return fmt.Errorf("instantiate the %s imports: %w", guest.ImportModule, err)
	}
	return nil
}

// acquire returns the version of name that runs a new job, referenced.
func (h *Host) acquire(name string) (*module, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return nil, ErrClosed
	}
	e, ok := h.entries[name]
	if !ok {
		return nil, fmt.Errorf("module %q: %w", name, ErrUnknownModule)
	}
	if e.cur == nil {
		if e.loadErr != nil {
			return nil, fmt.Errorf("module %q: %w: %w", name, ErrUnavailable, e.loadErr)
		}
		return nil, fmt.Errorf("module %q: %w", name, ErrUnavailable)
	}
	e.cur.acquire()
	e.running++
	return e.cur, nil
}

// finish records a job's outcome and releases its version.
func (h *Host) finish(ctx context.Context, m *module, rec JobRecord) {
	h.mu.Lock()
	if e, ok := h.entries[m.name]; ok {
		if e.running > 0 {
			e.running--
		}
		e.jobs++
		if !rec.OK {
			e.failures++
		}
		e.last = &rec
	}
	h.mu.Unlock()
	m.release(ctx)
}
