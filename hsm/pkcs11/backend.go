package pkcs11

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"runtime"
	"sync"

	"github.com/miekg/pkcs11"

	"github.com/warden-iot/warden/hsm"
)

var _ hsm.Backend = (*Backend)(nil)

// errClosed is returned by every method after Close.
var errClosed = errors.New("pkcs11: the backend is closed")

// Backend is an hsm.Backend whose keys live on PKCS#11 tokens, found by the
// token and object labels of their location URI. It keeps, per token, a pool
// of logged-in read-write sessions that grows on demand up to a bound, so that
// concurrent callers do not wait for each other, and a cache of object
// handles by label. It is safe for concurrent use.
//
// The first PIN a URI gives for a token is the one the backend logs in with
// (a later, different PIN is ignored with a warning): PKCS#11 login state
// belongs to the process, not to a session or URI.
type Backend struct {
	lib         *library
	p           *pkcs11.Ctx
	log         *slog.Logger
	maxSessions int

	done      chan struct{}
	closeOnce sync.Once

	byKey  sync.Map // URI.tokenKey() → *token; read lock-free on the hot path
	mu     sync.Mutex
	bySlot map[uint]*token // guarded by mu; one token per slot
}

// New loads the PKCS#11 library at libPath (dlopen) and initialises it. The
// library is shared, reference-counted, by every Backend of the process that
// names the same file, and finalised when the last one closes. A nil logger
// discards logs.
func New(libPath string, logger *slog.Logger) (*Backend, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	lib, err := openLibrary(libPath, logger)
	if err != nil {
		return nil, err
	}
	return &Backend{
		lib:         lib,
		p:           lib.ctx,
		log:         logger.With("component", "pkcs11"),
		maxSessions: 2*runtime.GOMAXPROCS(0) + 2,
		done:        make(chan struct{}),
		bySlot:      make(map[uint]*token),
	}, nil
}

// Login opens a session on the token uri names and logs in with its
// pin-value, so that a wrong library, slot or PIN fails at start-up rather
// than on the first key operation. The object attribute is ignored.
func (b *Backend) Login(ctx context.Context, uri string) error {
	u, err := ParseURI(uri)
	if err != nil {
		return err
	}
	if u.PIN == "" {
		b.log.Warn("PKCS#11 URI has no pin-value: the session is not logged in and private keys stay invisible",
			"uri", u.Redacted())
	}
	_, err = b.token(ctx, u)
	return err
}

// Close closes every session (waiting for operations in progress) and
// releases the library. Methods called after Close fail.
func (b *Backend) Close() error {
	var errs []error
	b.closeOnce.Do(func() {
		close(b.done)
		b.mu.Lock()
		defer b.mu.Unlock()
		for _, t := range b.bySlot {
			if err := t.close(); err != nil {
				errs = append(errs, err)
			}
		}
		b.bySlot = nil
		if err := b.lib.release(); err != nil {
			errs = append(errs, err)
		}
	})
	return errors.Join(errs...)
}

// target parses loc and returns its token and object label.
func (b *Backend) target(ctx context.Context, loc string) (*token, string, error) {
	u, err := ParseURI(loc)
	if err != nil {
		return nil, "", fmt.Errorf("%w (%w)", err, hsm.ErrInvalidParameter)
	}
	if u.Object == "" {
		return nil, "", fmt.Errorf("pkcs11: location %q names no object (%w)", u.Redacted(), hsm.ErrInvalidParameter)
	}
	t, err := b.token(ctx, u)
	if err != nil {
		return nil, "", err
	}
	return t, u.Object, nil
}

// token returns the token u names, logged in with u's PIN if the token has
// none yet.
func (b *Backend) token(ctx context.Context, u *URI) (*token, error) {
	t, err := b.lookupToken(ctx, u)
	if err != nil || u.PIN == "" {
		return t, err
	}
	if p := t.pin.Load(); p == nil || *p != u.PIN {
		if err := t.usePIN(ctx, u.PIN); err != nil {
			return nil, err
		}
	}
	return t, nil
}

// lookupToken returns the token u names, finding its slot, opening its first
// session and logging in the first time.
func (b *Backend) lookupToken(ctx context.Context, u *URI) (*token, error) {
	key := u.tokenKey()
	if v, ok := b.byKey.Load(key); ok {
		return v.(*token), nil
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	select {
	case <-b.done:
		return nil, errClosed
	default:
	}
	if v, ok := b.byKey.Load(key); ok {
		return v.(*token), nil
	}
	slot, info, err := b.findSlot(u)
	if err != nil {
		return nil, err
	}
	t := b.bySlot[slot]
	if t == nil {
		t = newToken(b, slot, info, u.PIN)
		s, err := t.open()
		if err != nil {
			return nil, opError("open", "", t.name, err)
		}
		t.idle <- s // no permit is held: the pool is empty
		b.bySlot[slot] = t
		b.log.Info("PKCS#11 token opened", "token", t.name, "slot", slot,
			"model", info.Model, "manufacturer", info.ManufacturerID, "max_sessions", cap(t.permits))
	}
	b.byKey.Store(key, t)
	return t, nil
}

// findSlot resolves u's slot-id or token label to a slot with a token.
func (b *Backend) findSlot(u *URI) (uint, pkcs11.TokenInfo, error) {
	if u.HasSlotID {
		info, err := b.p.GetTokenInfo(u.SlotID)
		if err != nil {
			return 0, info, opError("open", "", fmt.Sprintf("slot %d", u.SlotID), err)
		}
		return u.SlotID, info, nil
	}
	slots, err := b.p.GetSlotList(true)
	if err != nil {
		return 0, pkcs11.TokenInfo{}, opError("list slots for", "", u.Token, err)
	}
	for _, slot := range slots {
		info, err := b.p.GetTokenInfo(slot)
		if err != nil {
			b.log.Debug("PKCS#11 slot skipped", "slot", slot, "err", err)
			continue
		}
		if info.Label == u.Token {
			return slot, info, nil
		}
	}
	return 0, pkcs11.TokenInfo{}, fmt.Errorf("pkcs11: no token labelled %q among %d slots with a token", u.Token, len(slots))
}

// library is a PKCS#11 module loaded once per process and file.
type library struct {
	key  string
	ctx  *pkcs11.Ctx
	refs int  // guarded by libs.mu
	owns bool // we initialised it, so we finalise it
}

var libs struct {
	mu sync.Mutex
	m  map[string]*library
}

func openLibrary(path string, log *slog.Logger) (*library, error) {
	key, err := filepath.EvalSymlinks(path)
	if err != nil {
		return nil, fmt.Errorf("pkcs11: load library %q: %w", path, err)
	}
	libs.mu.Lock()
	defer libs.mu.Unlock()
	if l := libs.m[key]; l != nil {
		l.refs++
		return l, nil
	}
	ctx := pkcs11.New(key)
	if ctx == nil {
		return nil, fmt.Errorf("pkcs11: load library %q: dlopen or C_GetFunctionList failed (is it a PKCS#11 module for this architecture?)", path)
	}
	owns := true
	if err := ctx.Initialize(); err != nil {
		if code(err) != pkcs11.CKR_CRYPTOKI_ALREADY_INITIALIZED {
			ctx.Destroy()
			return nil, opError("initialise library", path, "", err)
		}
		log.Warn("PKCS#11 library already initialised by someone else in this process; not finalising it", "lib", path)
		owns = false
	}
	l := &library{key: key, ctx: ctx, refs: 1, owns: owns}
	if libs.m == nil {
		libs.m = make(map[string]*library)
	}
	libs.m[key] = l
	return l, nil
}

func (l *library) release() error {
	libs.mu.Lock()
	defer libs.mu.Unlock()
	l.refs--
	if l.refs > 0 {
		return nil
	}
	delete(libs.m, l.key)
	var err error
	if l.owns {
		if e := l.ctx.Finalize(); e != nil {
			err = opError("finalise library", l.key, "", e)
		}
	}
	l.ctx.Destroy()
	return err
}
