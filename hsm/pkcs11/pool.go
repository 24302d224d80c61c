package pkcs11

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/miekg/pkcs11"

	"github.com/warden-iot/warden/hsm"
)

// token is one PKCS#11 token: its pool of logged-in sessions and its cache of
// object handles by label.
type token struct {
	b    *Backend
	slot uint
	name string // label, or "slot N", for messages

	pin     atomic.Pointer[string] // the PIN sessions log in with; nil: none
	pinMu   sync.Mutex             // serialises adopting a PIN
	pinWarn sync.Once

	// permits bounds the sessions in use: a send takes a permit, a receive
	// gives it back. idle holds open sessions nobody uses. A session is
	// opened only while holding a permit and finding idle empty, so there
	// are never more open sessions than cap(permits).
	permits chan struct{}
	idle    chan pkcs11.SessionHandle

	// handles caches objects by class and label; loads are lock-free.
	// cacheMu and gen make a store lose against a forget that ran since its
	// lookup began, so a stale handle cannot be cached after a delete.
	handles sync.Map // objKey → *object
	cacheMu sync.Mutex
	gen     uint64 // guarded by cacheMu

	// createMu serialises the create, import, move and delete paths, so that
	// two first uses of a label cannot each create an object.
	createMu sync.Mutex
}

type objKey struct {
	class uint
	label string
}

func newToken(b *Backend, slot uint, info pkcs11.TokenInfo, pin string) *token {
	n := b.maxSessions
	for _, m := range []uint{info.MaxSessionCount, info.MaxRwSessionCount} {
		// Compared as CK_ULONGs: a token's count past MaxInt converted to
		// int was negative and shrank the pool to one session.
		if m != pkcs11.CK_EFFECTIVELY_INFINITE && m != pkcs11.CK_UNAVAILABLE_INFORMATION && m < uint(n) {
			n = max(int(m), 1)
		}
	}
	name := info.Label
	if name == "" {
		name = fmt.Sprintf("slot %d", slot)
	}
	t := &token{
		b:       b,
		slot:    slot,
		name:    name,
		permits: make(chan struct{}, n),
		idle:    make(chan pkcs11.SessionHandle, n),
	}
	if pin != "" {
		t.pin.Store(&pin)
	}
	return t
}

// usePIN logs the token in with pin if it has no PIN yet (its first URI had
// no pin-value). A PIN that differs from the one in use is ignored, with a
// warning: login state belongs to the process, not to a URI.
func (t *token) usePIN(ctx context.Context, pin string) error {
	t.pinMu.Lock()
	defer t.pinMu.Unlock()
	if p := t.pin.Load(); p != nil {
		if *p != pin {
			t.pinWarn.Do(func() {
				t.b.log.Warn("PKCS#11 URIs for one token carry different PINs; the first one logged in is used", "token", t.name)
			})
		}
		return nil
	}
	s, err := t.acquire(ctx)
	if err != nil {
		return opError("log in", "", t.name, err)
	}
	err = t.b.p.Login(s, pkcs11.CKU_USER, pin)
	t.release(s, err)
	if err != nil && code(err) != pkcs11.CKR_USER_ALREADY_LOGGED_IN {
		return opError("log in", "", t.name, err)
	}
	t.pin.Store(&pin)
	t.b.log.Info("PKCS#11 token logged in", "token", t.name)
	return nil
}

// open opens a read-write session and logs it in (PKCS#11 login is per
// token, so later sessions find the user already logged in).
func (t *token) open() (pkcs11.SessionHandle, error) {
	p := t.b.p
	s, err := p.OpenSession(t.slot, pkcs11.CKF_SERIAL_SESSION|pkcs11.CKF_RW_SESSION)
	if err != nil {
		return 0, fmt.Errorf("open a session: %w", describe(err))
	}
	if pin := t.pin.Load(); pin != nil {
		if err := p.Login(s, pkcs11.CKU_USER, *pin); err != nil && code(err) != pkcs11.CKR_USER_ALREADY_LOGGED_IN {
			_ = p.CloseSession(s)
			return 0, fmt.Errorf("log in: %w", describe(err))
		}
	}
	return s, nil
}

// acquire returns a session for the caller's exclusive use until release:
// an idle one, a new one while below the bound, or else the first one another
// caller gives back.
func (t *token) acquire(ctx context.Context) (pkcs11.SessionHandle, error) {
	select {
	case t.permits <- struct{}{}:
	default:
		select {
		case t.permits <- struct{}{}:
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-t.b.done:
			return 0, errClosed
		}
	}
	select {
	case <-t.b.done:
		<-t.permits
		return 0, errClosed
	case s := <-t.idle:
		return s, nil
	default:
	}
	s, err := t.open()
	if err != nil {
		<-t.permits
		return 0, err
	}
	t.b.log.Debug("PKCS#11 session pool grew", "token", t.name, "in_use", len(t.permits))
	return s, nil
}

// release gives s back, or closes it when opErr says it is broken.
func (t *token) release(s pkcs11.SessionHandle, opErr error) {
	if opErr != nil && brokenSession(opErr) {
		t.b.log.Warn("PKCS#11 session dropped", "token", t.name, "err", opErr)
		_ = t.b.p.CloseSession(s)
	} else {
		t.idle <- s
	}
	<-t.permits
}

// drainIdle closes the idle sessions.
func (t *token) drainIdle() {
	for {
		select {
		case s := <-t.idle:
			_ = t.b.p.CloseSession(s)
		default:
			return
		}
	}
}

// close waits for every session to come back and closes them.
func (t *token) close() error {
	for range cap(t.permits) {
		t.permits <- struct{}{}
	}
	var errs []error
	for {
		select {
		case s := <-t.idle:
			if err := t.b.p.CloseSession(s); err != nil {
				errs = append(errs, opError("close a session", "", t.name, err))
			}
		default:
			return errors.Join(errs...)
		}
	}
}

// findAll returns the handles of every object matching template.
func (t *token) findAll(s pkcs11.SessionHandle, template []*pkcs11.Attribute) ([]pkcs11.ObjectHandle, error) {
	p := t.b.p
	if err := p.FindObjectsInit(s, template); err != nil {
		return nil, err
	}
	var all []pkcs11.ObjectHandle
	for {
		hs, _, err := p.FindObjects(s, 16)
		if err != nil {
			_ = p.FindObjectsFinal(s)
			return nil, err
		}
		if len(hs) == 0 {
			break
		}
		all = append(all, hs...)
	}
	return all, p.FindObjectsFinal(s)
}

// labelled returns the handles of the objects of class labelled label.
func (t *token) labelled(s pkcs11.SessionHandle, class uint, label string) ([]pkcs11.ObjectHandle, error) {
	return t.findAll(s, []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, class),
		pkcs11.NewAttribute(pkcs11.CKA_LABEL, label),
	})
}

// object is a cached key object: its handle and the attributes the backend
// checks before using it.
type object struct {
	h       pkcs11.ObjectHandle
	keyType uint   // CKA_KEY_TYPE; CK_UNAVAILABLE_INFORMATION if unreadable
	modulus []byte // CKA_MODULUS of RSA keys
}

// find returns the (cached) object of class labelled label, or
// hsm.ErrNotFound.
func (t *token) find(s pkcs11.SessionHandle, class uint, label string) (*object, error) {
	k := objKey{class, label}
	if o, ok := t.handles.Load(k); ok {
		return o.(*object), nil
	}
	t.cacheMu.Lock()
	gen := t.gen
	t.cacheMu.Unlock()
	hs, err := t.labelled(s, class, label)
	if err == nil && len(hs) == 0 && class != pkcs11.CKO_SECRET_KEY {
		// One half of a pair may be missing because a move was interrupted.
		if err = t.finishMove(s, label); err == nil {
			hs, err = t.labelled(s, class, label)
		}
	}
	if err != nil {
		return nil, err
	}
	if len(hs) == 0 {
		return nil, hsm.ErrNotFound
	}
	if len(hs) > 1 {
		t.b.log.Warn("PKCS#11 token holds several objects with one label; using the first",
			"token", t.name, "label", label, "count", len(hs))
	}
	o := &object{h: hs[0], keyType: pkcs11.CK_UNAVAILABLE_INFORMATION}
	if a, err := t.attrs(s, o.h, pkcs11.CKA_KEY_TYPE); err == nil {
		o.keyType = ulong(a[0].Value)
	}
	if o.keyType == pkcs11.CKK_RSA && class != pkcs11.CKO_SECRET_KEY {
		if a, err := t.attrs(s, o.h, pkcs11.CKA_MODULUS); err == nil {
			o.modulus = a[0].Value
		}
	}
	t.cacheMu.Lock()
	if t.gen == gen {
		t.handles.Store(k, o)
	}
	t.cacheMu.Unlock()
	return o, nil
}

// forget drops the cached objects labelled label.
func (t *token) forget(label string) {
	t.cacheMu.Lock()
	defer t.cacheMu.Unlock()
	t.gen++
	for _, c := range []uint{pkcs11.CKO_SECRET_KEY, pkcs11.CKO_PRIVATE_KEY, pkcs11.CKO_PUBLIC_KEY} {
		t.handles.Delete(objKey{c, label})
	}
}

// with runs fn with the object of class labelled label, looking it up again
// once if the cached handle turns out stale.
func (t *token) with(s pkcs11.SessionHandle, class uint, label string, fn func(*object) error) error {
	o, err := t.find(s, class, label)
	if err != nil {
		return err
	}
	err = fn(o)
	if err != nil && staleHandle(err) {
		t.forget(label)
		if o, err = t.find(s, class, label); err != nil {
			return err
		}
		err = fn(o)
	}
	return err
}

// wantType fails with hsm.ErrInvalidParameter if o is known not to be of key
// type kt (what is the name of kt, for the message).
func (o *object) wantType(kt uint, what string) error {
	if o.keyType != kt && o.keyType != pkcs11.CK_UNAVAILABLE_INFORMATION {
		return fmt.Errorf("the key is not an %s key (CKA_KEY_TYPE 0x%x) (%w)", what, o.keyType, hsm.ErrInvalidParameter)
	}
	return nil
}

// do runs fn on a pooled session of loc's token with loc's object label, and
// wraps a failure as `pkcs11: <op> "<label>" on token "<token>": …`.
func (b *Backend) do(ctx context.Context, loc, op string, fn func(t *token, s pkcs11.SessionHandle, label string) error) error {
	t, label, err := b.target(ctx, loc)
	if err != nil {
		return err
	}
	for attempt := 0; ; attempt++ {
		s, err := t.acquire(ctx)
		if err != nil {
			return opError(op, label, t.name, err)
		}
		err = fn(t, s, label)
		t.release(s, err)
		if err != nil && brokenSession(err) && attempt == 0 {
			// The token was reset or removed and reinserted, or a session
			// closed under us: the other idle sessions are likely dead too.
			t.drainIdle()
			continue
		}
		if err != nil {
			return opError(op, label, t.name, err)
		}
		return nil
	}
}

// attrs reads attributes of h.
func (t *token) attrs(s pkcs11.SessionHandle, h pkcs11.ObjectHandle, types ...uint) ([]*pkcs11.Attribute, error) {
	q := make([]*pkcs11.Attribute, len(types))
	for i, typ := range types {
		q[i] = pkcs11.NewAttribute(typ, nil)
	}
	return t.b.p.GetAttributeValue(s, h, q)
}
