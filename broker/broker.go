// Package broker assembles wardend: configuration, the key store, the
// policy engine, the token authority, and one HTTP server per socket, each
// behind the shared request pipeline of package api.
package broker

import (
	"context"
	"crypto"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/warden-iot/warden/broker/api"
	"github.com/warden-iot/warden/broker/certd"
	"github.com/warden-iot/warden/broker/config"
	"github.com/warden-iot/warden/broker/control"
	"github.com/warden-iot/warden/broker/identityd"
	"github.com/warden-iot/warden/broker/keyd"
	"github.com/warden-iot/warden/broker/tpmd"
	"github.com/warden-iot/warden/capabilities"
	"github.com/warden-iot/warden/hsm"
	"github.com/warden-iot/warden/hsm/pkcs11"
	"github.com/warden-iot/warden/policy"
	"github.com/warden-iot/warden/tpm"
	"github.com/warden-iot/warden/wasm-modules/host"
)

// TokenKeyID is the key-store ID of the key that signs capability tokens.
const TokenKeyID = capabilities.TokenKeyID

// Broker is a running wardend.
type Broker struct {
	log     *slog.Logger
	engine  *policy.Engine
	dlog    *policy.DecisionLog
	tokens  *capabilities.Authority
	guard   *api.Guard
	keys    *hsm.Keys
	certd   *certd.Server
	modules *host.Host
	tpm     *tpm.TPM // shared by tpmd and the modules (it serialises its commands)
	ident   *identityd.Server
	servers []*server

	mu  sync.Mutex
	cfg *config.Config
}

type server struct {
	name     string
	path     string
	listener *api.Listener
	http     *api.Server
}

// New builds a broker from cfg: it creates the state directory (0700), loads
// or creates the token key, prepares the policy and opens every socket.
func New(ctx context.Context, cfg *config.Config, logger *slog.Logger) (_ *Broker, err error) {
	b := &Broker{log: logger, cfg: cfg}
	defer func() {
		if err != nil {
			b.close()
		}
	}()
	w := cfg.Warden
	if err := os.MkdirAll(w.StateDir, 0o700); err != nil {
		return nil, fmt.Errorf("state dir: %w", err)
	}
	if err := os.Chmod(w.StateDir, 0o700); err != nil {
		return nil, fmt.Errorf("state dir: %w", err)
	}
	signer, err := b.openKeys(ctx, cfg, logger)
	if err != nil {
		return nil, err
	}
	b.tokens, err = capabilities.NewAuthority(signer, capabilities.Options{
		DefaultTTL:     w.Tokens.DefaultTTL.Duration,
		MaxTTL:         w.Tokens.MaxTTL.Duration,
		RevocationPath: filepath.Join(w.StateDir, "revoked-tokens.json"),
		Logger:         logger,
	})
	if err != nil {
		return nil, err
	}
	if w.Policy.DecisionLog != "" {
		b.dlog, err = policy.OpenDecisionLog(w.Policy.DecisionLog, policy.DecisionLogOptions{FailClosed: w.Policy.DecisionLogFailClosed})
		if err != nil {
			return nil, err
		}
	}
	b.engine, err = policy.New(ctx, policy.Options{
		Dir: w.Policy.Dir, Principals: principals(cfg), Logger: logger, DecisionLog: b.dlog})
	if err != nil {
		return nil, err
	}
	b.guard = api.NewGuard(b.tokens, b.engine, logger, nil)
	b.guard.SetPrincipalNames(principalNames(cfg))
	b.certd, err = certd.New(cfg, b.keys, hsm.NewHandles(b.keys), b.guard, certd.Options{Logger: logger,
		OnRenewed: func(ctx context.Context, certID string) {
			if b.ident != nil { // identityd opens after certd, before renewals run
				b.ident.CertRenewed(ctx, certID)
			}
		}})
	if err != nil {
		return nil, err
	}
	if err := b.openModules(ctx, cfg); err != nil {
		return nil, err
	}
	if err := b.openIdentity(ctx, cfg, logger); err != nil {
		return nil, err
	}
	if err := b.listen(cfg); err != nil {
		return nil, err
	}
	return b, nil
}

// openKeys opens the key store of [aziot_keys] and [preloaded_keys] (file
// keys under homedir_path, default the state directory; the PKCS#11 base
// slot first when configured) and returns the token key as a signer that
// never leaves the store: created as an EC P-256 key pair on first start.
func (b *Broker) openKeys(ctx context.Context, cfg *config.Config, logger *slog.Logger) (crypto.Signer, error) {
	home := cfg.AziotKeys["homedir_path"]
	if home == "" {
		home = cfg.Warden.StateDir
	}
	keys, err := hsm.Open(ctx, hsm.Config{
		HomeDir:        home,
		PKCS11LibPath:  cfg.AziotKeys["pkcs11_lib_path"],
		PKCS11BaseSlot: cfg.AziotKeys["pkcs11_base_slot"],
		Preloaded:      certd.PreloadedKeys(cfg), // [preloaded_keys] + keys the cert settings name by URI
		OpenPKCS11:     openPKCS11,
		Logger:         logger,
	})
	if err != nil {
		return nil, fmt.Errorf("key store: %w", err)
	}
	b.keys = keys
	if err := keys.CreateKeyPair(ctx, TokenKeyID, []hsm.Algorithm{hsm.ECP256}); err != nil {
		return nil, fmt.Errorf("token signing key: %w", err)
	}
	signer, err := keys.Signer(ctx, TokenKeyID)
	if err != nil {
		return nil, fmt.Errorf("token signing key: %w", err)
	}
	return signer, nil
}

// openPKCS11 opens a PKCS#11 library for the key store (package hsm cannot
// import hsm/pkcs11, which implements its Backend).
func openPKCS11(libPath string, logger *slog.Logger) (hsm.PKCS11Backend, error) {
	b, err := pkcs11.New(libPath, logger)
	if err != nil {
		return nil, err
	}
	return b, nil
}

// services lists each socket's API. The aziot services whose routes have not
// been built yet still answer with the shared framework (api-version, 404).
func (b *Broker) services() map[string]*api.Service {
	ctl := control.New(b.tokens, b.guard, b.log, b.engine.Revision)
	ctlSvc := ctl.Service()
	ctlSvc.Routes = append(ctlSvc.Routes, ctl.ModuleRoutes(b.modules)...)
	// keyd reuses allow decisions of handle operations for a second, unless
	// every decision must reach the decision log.
	keydOpts := keyd.Options{DecisionTTL: time.Second, PolicyRevision: b.engine.Revision}
	if b.cfg.Warden.Policy.DecisionLog != "" {
		keydOpts.DecisionTTL = 0
	}
	return map[string]*api.Service{
		"broker":    ctlSvc,
		"identityd": b.ident.Service(),
		"keyd":      keyd.New(b.keys, hsm.NewHandles(b.keys), b.guard, b.log, keydOpts).Service(),
		"certd":     b.certd.Service(),
		"tpmd":      tpmd.NewWithTPM(b.tpm, b.guard, b.log).Service(),
	}
}

// SocketNames are the sockets wardend serves, in start order.
var SocketNames = []string{"broker", "keyd", "certd", "identityd", "tpmd"}

func (b *Broker) listen(cfg *config.Config) error {
	gid, err := socketGroup(cfg.Warden.SocketGroup)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(cfg.Warden.SocketDir, 0o755); err != nil {
		return fmt.Errorf("socket dir: %w", err)
	}
	svcs := b.services()
	for _, name := range SocketNames {
		path := cfg.SocketPath(name)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return fmt.Errorf("socket %s: %w", name, err)
		}
		l, err := api.Listen(path, name, gid)
		if err != nil {
			return err
		}
		ln := api.NewListener(l, name, cfg.MaxRequests(name), b.log)
		b.servers = append(b.servers, &server{name: name, path: path, listener: ln, http: &api.Server{
			Handler:     svcs[name].Handler(),
			ReadTimeout: 5 * time.Second,
			IdleTimeout: 30 * time.Second,
			Logger:      b.log.With("socket", name),
		}})
	}
	return nil
}

func socketGroup(g string) (int, error) {
	if g == "" {
		return -1, nil
	}
	// A gid is what a 32-bit gid_t holds: Atoi also took "+4294967296",
	// which chown wrapped to root's group.
	if n, err := strconv.ParseUint(g, 10, 32); err == nil {
		return int(n), nil
	}
	grp, err := user.LookupGroup(g)
	if err != nil {
		return 0, fmt.Errorf("warden.socket_group: %w", err)
	}
	return strconv.Atoi(grp.Gid)
}

// Serve serves every socket until ctx is done, then shuts down gracefully
// (in-flight requests get up to 10 s).
func (b *Broker) Serve(ctx context.Context) error {
	watchCtx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	if b.cfg.Warden.Policy.Dir != "" {
		go func() {
			if err := b.engine.Watch(watchCtx); err != nil && !errors.Is(err, context.Canceled) {
				b.log.Error("policy watch stopped", "err", err)
			}
		}()
	}
	go b.certd.Run(watchCtx) // certificate renewals
	errc := make(chan error, len(b.servers))
	for _, s := range b.servers {
		go func() {
			if err := s.http.Serve(s.listener); err != nil && !errors.Is(err, http.ErrServerClosed) {
				errc <- fmt.Errorf("socket %s: %w", s.name, err)
				return
			}
			errc <- nil
		}()
		b.log.Info("listening", "socket", s.name, "path", s.path)
	}
	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	shutCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	for _, s := range b.servers {
		s.http.Shutdown(shutCtx)
	}
	b.close()
	return err
}

func (b *Broker) close() {
	for _, s := range b.servers {
		s.listener.Close()
	}
	if b.modules != nil {
		b.modules.Close(context.Background())
	}
	if b.tpm != nil {
		b.tpm.Close()
	}
	if b.dlog != nil {
		b.dlog.Close()
	}
	if b.keys != nil {
		if err := b.keys.Close(); err != nil {
			b.log.Error("closing the key store", "err", err)
		}
	}
}

// Keys returns the broker's key store (for the key service and tests).
func (b *Broker) Keys() *hsm.Keys { return b.keys }

// Reload applies a new configuration: principals (policy data and names),
// connection limits, and the policy directory. Socket paths and group, the
// state directory, the decision log and token lifetimes need a restart; a
// change to them is logged.
func (b *Broker) Reload(ctx context.Context, cfg *config.Config) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	old := b.cfg.Warden
	if old.StateDir != cfg.Warden.StateDir || old.SocketDir != cfg.Warden.SocketDir || old.BrokerSocket != cfg.Warden.BrokerSocket ||
		old.SocketGroup != cfg.Warden.SocketGroup || old.Policy != cfg.Warden.Policy || old.Tokens != cfg.Warden.Tokens {
		b.log.Warn("reload: changes to warden state_dir, sockets, socket_group, policy (dir, decision log) or tokens take effect at the next restart")
	}
	if err := b.engine.SetPrincipals(ctx, principals(cfg)); err != nil {
		return fmt.Errorf("reload: %w", err)
	}
	if b.cfg.Warden.Policy.Dir != "" {
		if err := b.engine.Reload(ctx); err != nil {
			b.log.Error("reload: policy refused, the previous policy stays", "err", err)
		}
	}
	b.guard.SetPrincipalNames(principalNames(cfg))
	b.certd.Reload(cfg)
	if err := b.ident.Reload(ctx, cfg); err != nil {
		b.log.Error("reload: module identities not reconciled", "err", err)
	}
	if err := b.modules.Load(ctx, moduleConfigs(cfg)); err != nil {
		b.log.Error("reload: modules refused", "err", err)
	}
	for _, s := range b.servers {
		s.listener.SetMaxRequests(cfg.MaxRequests(s.name))
	}
	b.cfg.Principals = cfg.Principals
	b.log.Info("configuration reloaded", "principals", len(cfg.Principals), "policy_revision", b.engine.Revision())
	return nil
}

func principals(cfg *config.Config) []policy.Principal {
	out := make([]policy.Principal, len(cfg.Principals))
	for i, p := range cfg.Principals {
		out[i] = policy.Principal{UID: p.UID, Name: p.Name, IDType: p.IDType, Keys: p.Keys, Certs: p.Certs}
		if p.LocalID != nil {
			out[i].LocalID = map[string]any{"type": p.LocalID.Type, "attributes": p.LocalID.Attributes}
		}
	}
	return out
}

// principalNames maps each uid to the name of its first named principal.
func principalNames(cfg *config.Config) map[uint32]string {
	m := make(map[uint32]string, len(cfg.Principals))
	for _, p := range cfg.Principals {
		if _, seen := m[p.UID]; !seen && p.Name != "" {
			m[p.UID] = p.Name
		}
	}
	return m
}

// Handler returns the HTTP handler served on the named socket (for
// in-process benchmarks and tests), or nil.
func (b *Broker) Handler(socket string) http.Handler {
	for _, s := range b.servers {
		if s.name == socket {
			return s.http.Handler
		}
	}
	return nil
}

// openModules starts the WASM module host (compilation cache under
// <state_dir>/module-cache; host calls decided by the policy as the broker
// itself) and loads [warden.modules]. A module that is refused is logged
// and its jobs fail; the broker serves regardless. certd runs EST jobs in
// the module named "est".
func (b *Broker) openModules(ctx context.Context, cfg *config.Config) error {
	t := cfg.TPM
	b.tpm = tpm.New(tpm.Options{TCTI: t.TCTI, AuthKeyHandle: t.AuthKeyHandle(), EndorsementAuth: t.HierarchyAuthorization.Endorsement,
		OwnerAuth: t.HierarchyAuthorization.Owner, Logger: b.log})
	if _, err := b.tpm.TCTI(); err != nil {
		b.log.Error("[tpm] tcti is invalid; every tpmd request and module TPM call will fail until it is fixed", "err", err)
	}
	exe, _ := os.Executable()
	h, err := host.New(host.Options{
		CacheDir: filepath.Join(cfg.Warden.StateDir, "module-cache"),
		Keys:     b.keys,
		Certs:    b.certd.ModuleCerts(),
		TPM:      b.tpm,
		Decider:  b.engine,
		// keyd's Guard refuses the token key to its callers; modules get
		// the same refusal here.
		ReservedKeys: []string{TokenKeyID, hsm.HandleValidationKeyID},
		Caller:       policy.Caller{UID: uint32(os.Getuid()), GID: uint32(os.Getgid()), PID: int32(os.Getpid()), Exe: exe},
		Logger:       b.log,
	})
	if err != nil {
		return err
	}
	b.modules = h
	if err := h.Load(ctx, moduleConfigs(cfg)); err != nil {
		b.log.Error("modules refused; wardend serves without them", "err", err)
	}
	b.certd.SetEST(certd.ModuleRunner{Host: h})
	return nil
}

// moduleConfigs maps [warden.modules.<name>] to the module host's configs.
func moduleConfigs(cfg *config.Config) []host.ModuleConfig {
	out := make([]host.ModuleConfig, 0, len(cfg.Warden.Modules))
	for _, name := range slices.Sorted(maps.Keys(cfg.Warden.Modules)) {
		m := cfg.Warden.Modules[name]
		out = append(out, host.ModuleConfig{
			Name: name, Path: m.Path, SHA256: m.SHA256, Signature: m.Signature, TrustedKeys: m.TrustedKeys, Egress: m.Egress,
			Limits: host.Limits{MemoryMB: m.MemoryLimitMB, Timeout: m.Timeout.Duration, MaxHostCalls: m.MaxHostCalls, MaxOutputBytes: m.MaxOutputBytes},
		})
	}
	return out
}

// Modules returns the broker's module host (for tests and benchmarks).
func (b *Broker) Modules() *host.Host { return b.modules }

// openIdentity starts identityd (state in <state_dir>/identity) and
// provisions the device: DPS and IoT Hub calls run in the modules "dps" and
// "hub". Provisioning that fails without a backup stops wardend.
func (b *Broker) openIdentity(ctx context.Context, cfg *config.Config, logger *slog.Logger) error {
	s, err := identityd.New(b.guard, cfg, identityd.Options{Keys: b.keys, Handles: hsm.NewHandles(b.keys),
		Modules: b.modules, StateDir: filepath.Join(cfg.Warden.StateDir, "identity"), Logger: logger,
		Issue: func(ctx context.Context, id string, csrPEM []byte) ([]byte, error) {
			return b.certd.Issue(ctx, id, csrPEM, nil)
		},
		CertPEM: b.certd.ModuleCerts().Get})
	if err != nil {
		return err
	}
	b.ident = s
	return s.Start(ctx)
}

// Identity returns the broker's identity service (for tests).
func (b *Broker) Identity() *identityd.Server { return b.ident }
