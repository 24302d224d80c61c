// Package tpm is Warden's TPM mechanism on go-tpm's tpm2 package: the
// endorsement key (EK) and storage root key (SRK) that DPS TPM attestation
// registers, the import of the auth key DPS sends in its activation blob
// (ActivateCredential, Import, Load, EvictControl), and HMAC-SHA256 with
// that key for SAS tokens. It knows nothing of HTTP; broker/tpmd serves it.
//
// One connection to the TPM is shared by all callers: each operation (a
// sequence of TPM commands) holds it alone, transient objects and sessions
// an operation creates are flushed before it returns, and the connection is
// closed after an idle period so that other clients of a single-client TPM
// (swtpm, /dev/tpm0) get their turn. A connection that breaks is reopened
// once per operation.
package tpm

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
)

// Persistent handles (aziot-api.md §7, spec/protocols.md §1.3).
const (
	// EKHandle is where the endorsement key is persisted.
	EKHandle tpm2.TPMHandle = 0x81010001
	// SRKHandle is where the storage root key is persisted.
	SRKHandle tpm2.TPMHandle = 0x81000001
	// DefaultAuthKeyHandle is aziot's default auth key handle,
	// 0x81000000 + auth_key_index 0x100.
	DefaultAuthKeyHandle tpm2.TPMHandle = 0x81000100
)

// Defaults of Options.
const (
	DefaultIdleTimeout = 2 * time.Second
	DefaultTimeout     = 2 * time.Minute
)

// Options configure a TPM.
type Options struct {
	// TCTI is [tpm] tcti (see ParseTCTI).
	TCTI string
	// AuthKeyHandle is the persistent handle of the DPS auth key;
	// 0 means DefaultAuthKeyHandle.
	AuthKeyHandle uint32
	// EndorsementAuth and OwnerAuth are the hierarchies' authorization
	// values ([tpm.hierarchy_authorization]); empty by default.
	EndorsementAuth, OwnerAuth string
	// IdleTimeout closes the connection after this long without use; 0
	// means DefaultIdleTimeout, a negative value keeps it open.
	IdleTimeout time.Duration
	// Timeout bounds connecting to swtpm and each command exchange on its
	// socket; 0 means DefaultTimeout (RSA key generation on a slow TPM
	// takes tens of seconds).
	Timeout time.Duration
	// Logger receives connection events; nil discards them.
	Logger *slog.Logger
}

// TPM is a TPM reached through a TCTI. It is safe for concurrent use.
type TPM struct {
	opts    Options
	tcti    TCTI
	tctiErr error
	authKey tpm2.TPMHandle
	log     *slog.Logger

	// sem admits one operation at a time and guards the fields below.
	sem         chan struct{}
	conn        transport.TPMCloser
	lastUsed    time.Time
	idle        *time.Timer // nil when the connection is kept open
	idleArmed   bool
	closed      bool
	authKeyName *tpm2.TPM2BName // cached name of the persisted auth key
}

// New returns a TPM for opts. It does not connect: the first operation
// does, so that a broker without a TPM starts. An invalid TCTI is reported
// by TCTI and by every operation.
func New(opts Options) *TPM {
	if opts.IdleTimeout == 0 {
		opts.IdleTimeout = DefaultIdleTimeout
	}
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultTimeout
	}
	if opts.AuthKeyHandle == 0 {
		opts.AuthKeyHandle = uint32(DefaultAuthKeyHandle)
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	t := &TPM{opts: opts, authKey: tpm2.TPMHandle(opts.AuthKeyHandle), log: opts.Logger, sem: make(chan struct{}, 1)}
	t.tcti, t.tctiErr = ParseTCTI(opts.TCTI)
	if opts.IdleTimeout > 0 {
		t.idle = time.AfterFunc(time.Hour, t.closeIdle)
		t.idle.Stop()
	}
	return t
}

// TCTI returns the parsed TCTI, or why it is invalid.
func (t *TPM) TCTI() (TCTI, error) { return t.tcti, t.tctiErr }

// AuthKeyHandle returns the persistent handle of the auth key.
func (t *TPM) AuthKeyHandle() tpm2.TPMHandle { return t.authKey }

// errClosed is returned by operations after Close.
var errClosed = errors.New("tpm: closed")

// do runs op's command sequence f alone on the connection, connecting
// first when needed. When a connection that served earlier operations turns
// out broken, it is reopened and f run once more: every sequence is
// idempotent (it reads before it writes). ctx bounds only the wait for the
// TPM: a command the TPM has started cannot be interrupted.
func (t *TPM) do(ctx context.Context, op string, f func(tp transport.TPM) error) error {
	select {
	case t.sem <- struct{}{}:
	case <-ctx.Done():
		return fmt.Errorf("%s: waiting for the TPM: %w", op, ctx.Err())
	}
	defer func() { <-t.sem }()
	if t.closed {
		return fmt.Errorf("%s: %w", op, errClosed)
	}
	if t.tctiErr != nil {
		return fmt.Errorf("%s: %w", op, t.tctiErr)
	}
	for retried := false; ; retried = true {
		fresh := t.conn == nil
		if fresh {
			if err := t.connect(); err != nil {
				return fmt.Errorf("%s: %w", op, err)
			}
		}
		err := f(t.conn)
		if err == nil || !errors.Is(err, ErrConnection) {
			t.touch()
			if err != nil {
				return fmt.Errorf("%s: %w", op, err)
			}
			return nil
		}
		t.drop()
		t.authKeyName = nil
		if fresh || retried {
			return fmt.Errorf("%s: %w", op, err)
		}
		t.log.Warn("tpm: connection lost, reconnecting", "tcti", t.tcti.String(), "err", err)
	}
}

// connect opens the transport, starts an unstarted swtpm, and on a TPM
// without a resource manager flushes what earlier clients left loaded.
func (t *TPM) connect() error {
	tp, path, err := t.tcti.open(t.opts.Timeout)
	if err != nil {
		return err
	}
	t.conn = tp
	if t.tcti.Kind == "swtpm" {
		// swtpm started without --flags startup-clear needs TPM2_Startup;
		// a started TPM answers TPM_RC_INITIALIZE, which is fine.
		_, err := tpm2.Startup{StartupType: tpm2.TPMSUClear}.Execute(tp)
		if err = cmdErr("TPM2_Startup", err); err != nil && !errors.Is(err, tpm2.TPMRCInitialize) {
			t.drop()
			if errors.Is(err, ErrConnection) {
				return fmt.Errorf("%w: %s closed the connection: %w", ErrNoTPM, t.tcti.where(), err)
			}
			return err
		}
	}
	if !t.tcti.resourceManaged(path) {
		if err := flushLeftovers(tp, t.log); err != nil {
			t.drop()
			if errors.Is(err, ErrConnection) {
				return fmt.Errorf("%w: %s does not answer TPM commands: %w", ErrNoTPM, t.tcti.where(), err)
			}
			return err
		}
	}
	t.log.Debug("tpm: connected", "tcti", t.tcti.String(), "device", path)
	return nil
}

// flushLeftovers flushes the transient objects and loaded sessions in the
// TPM. Without a resource manager the TPM is shared by its clients one at a
// time and nothing flushes what a crashed client left, until the TPM runs
// out of object slots (tpm2-tools users run tpm2_flushcontext for this).
func flushLeftovers(tp transport.TPM, log *slog.Logger) error {
	n := 0
	// Transient objects (0x80…), then loaded sessions (0x02…), which the TPM
	// lists under their own type: HMAC sessions 0x02…, policy sessions 0x03….
	for _, first := range []tpm2.TPMHandle{0x80000000, 0x02000000} {
		rsp, err := tpm2.GetCapability{Capability: tpm2.TPMCapHandles, Property: uint32(first), PropertyCount: 64}.Execute(tp)
		if err != nil {
			return cmdErr("TPM2_GetCapability", err)
		}
		hs, err := rsp.CapabilityData.Data.Handles()
		if err != nil {
			return fmt.Errorf("TPM2_GetCapability: %w", err)
		}
		for _, h := range hs.Handle {
			if ht := h >> 24; ht != first>>24 && !(first == 0x02000000 && ht == 0x03) {
				continue
			}
			if _, err := (tpm2.FlushContext{FlushHandle: h}).Execute(tp); err == nil {
				n++
			}
		}
	}
	if n > 0 {
		log.Info("tpm: flushed transient objects and sessions left by an earlier client", "count", n)
	}
	return nil
}

// touch records a use and arms the idle timer.
func (t *TPM) touch() {
	t.lastUsed = time.Now()
	if t.idle != nil && !t.idleArmed {
		t.idleArmed = true
		t.idle.Reset(t.opts.IdleTimeout)
	}
}

// closeIdle closes the connection when it has not been used for the idle
// timeout, and re-arms itself otherwise.
func (t *TPM) closeIdle() {
	select {
	case t.sem <- struct{}{}:
	default: // in use: look again later
		t.idle.Reset(t.opts.IdleTimeout)
		return
	}
	defer func() { <-t.sem }()
	if t.conn == nil || t.closed {
		t.idleArmed = false
		return
	}
	if left := t.opts.IdleTimeout - time.Since(t.lastUsed); left > 0 {
		t.idle.Reset(left)
		return
	}
	t.drop()
	t.idleArmed = false
	t.log.Debug("tpm: idle connection closed", "tcti", t.tcti.String())
}

// drop closes the connection, if any.
func (t *TPM) drop() {
	if t.conn != nil {
		t.conn.Close()
		t.conn = nil
	}
}

// Close closes the connection; later operations fail.
func (t *TPM) Close() error {
	t.sem <- struct{}{}
	defer func() { <-t.sem }()
	t.closed = true
	if t.idle != nil {
		t.idle.Stop()
	}
	t.drop()
	return nil
}

// flush flushes a transient object or session, logging a failure (the
// object would otherwise stay loaded on a TPM without resource manager).
func (t *TPM) flush(tp transport.TPM, h tpm2.TPMHandle) {
	if _, err := (tpm2.FlushContext{FlushHandle: h}).Execute(tp); err != nil {
		t.log.Warn("tpm: could not flush a transient handle", "handle", fmt.Sprintf("%#x", uint32(h)), "err", cmdErr("TPM2_FlushContext", err))
	}
}
