package pkcs11

import (
	"context"
	"crypto/ecdsa"
	"crypto/sha256"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/miekg/pkcs11"

	"github.com/warden-iot/warden/hsm"
	"github.com/warden-iot/warden/internal/syncbuf"
)

func TestLogin(t *testing.T) {
	b, base := newTestBackend(t)
	ctx := context.Background()
	tok, err := b.token(ctx, base)
	if err != nil {
		t.Fatal(err)
	}
	bySlot := fmt.Sprintf("pkcs11:slot-id=%d?pin-value=%s", tok.slot, testPIN)
	tests := []struct {
		name, uri, wantErr string
	}{
		{"token label", base.String(), ""},
		{"slot id", bySlot, ""},
		{"slot id wins over token", fmt.Sprintf("pkcs11:token=nope;slot-id=%d?pin-value=%s", tok.slot, testPIN), ""},
		{"object ignored", base.WithObject("x").String(), ""},
		{"unknown token", "pkcs11:token=no%20such%20token?pin-value=1234", `no token labelled "no such token"`},
		{"unknown slot", "pkcs11:slot-id=4294967295?pin-value=1234", "CKR_SLOT_ID_INVALID"},
		{"not a URI", "file:///var/lib/aziot/keyd", "scheme"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := b.Login(ctx, tt.uri)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Login(%q) = %v, want an error containing %q", tt.uri, err, tt.wantErr)
			}
		})
	}
	// Both names lead to one token: one pool, one handle cache.
	u, _ := ParseURI(bySlot)
	if again, err := b.token(ctx, u); err != nil || again != tok {
		t.Fatalf("slot-id and token label gave different tokens (%v)", err)
	}
}

// TestSessionLimit: the pool is the backend's size, or less when the token
// reports a smaller session limit; 0 (effectively infinite), ~0
// (unavailable) and counts above it leave the backend's size.
func TestSessionLimit(t *testing.T) {
	const unavailable = pkcs11.CK_UNAVAILABLE_INFORMATION
	b := &Backend{maxSessions: 6}
	for _, tt := range []struct {
		name       string
		max, maxRW uint
		want       int
	}{
		{"no limits", pkcs11.CK_EFFECTIVELY_INFINITE, unavailable, 6},
		{"smaller limit", 4, unavailable, 4},
		{"smaller read-write limit", 100, 2, 2},
		{"larger limit", 1000, 1000, 6},
		// Converted to int these were negative: a pool of one session.
		{"limit past MaxInt", 1 << 63, unavailable, 6},
		{"limit just under unavailable", unavailable - 1, unavailable - 1, 6},
	} {
		t.Run(tt.name, func(t *testing.T) {
			tok := newToken(b, 0, pkcs11.TokenInfo{MaxSessionCount: tt.max, MaxRwSessionCount: tt.maxRW}, "")
			if got := cap(tok.permits); got != tt.want {
				t.Errorf("pool of %d sessions, want %d", got, tt.want)
			}
		})
	}
}

// TestSecretsStayOut checks that neither logs nor errors carry a PIN, right
// or wrong.
func TestSecretsStayOut(t *testing.T) {
	const pin, wrongPIN = "31415926", "27182818"
	label := newTestToken(t, pin)
	other := newTestToken(t, pin)
	var logs syncbuf.Buffer
	b, err := New(softhsmLib, testLogger(t, &logs))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	ctx := context.Background()
	var errs []error
	record := func(err error) {
		if err != nil {
			errs = append(errs, err)
		}
	}
	record(b.Login(ctx, "pkcs11:token="+other+"?pin-value="+wrongPIN))
	record(b.Login(ctx, "pkcs11:token="+label))
	base := &URI{Token: label, PIN: pin}
	loc := base.WithObject("k").String()
	record(b.CreateKeyPair(ctx, loc, []hsm.Algorithm{"nope"}))
	// The token was first named without a PIN: the first URI with one logs in.
	if err := b.CreateKeyPair(ctx, loc, []hsm.Algorithm{hsm.ECP256}); err != nil {
		t.Fatalf("CreateKeyPair after a PIN-less Login: %v", err)
	}
	record(b.Login(ctx, "pkcs11:token="+label+"?pin-value="+wrongPIN)) // ignored: logged in already
	_, err = b.HMACSHA256(ctx, loc, []byte("m"))
	record(err)
	_, err = b.SignECDSA(ctx, base.WithObject("absent").String(), []byte("m"))
	record(err)
	record(b.MoveKeyPair(ctx, loc, "pkcs11:token=elsewhere;object=k?pin-value="+pin))
	_, err = ParseURI("pkcs11:object=%zz?pin-value=" + pin)
	record(err)
	if len(errs) < 6 {
		t.Fatalf("expected failures, got %d: %v", len(errs), errs)
	}
	if !strings.Contains(errs[0].Error(), "CKR_PIN_INCORRECT") {
		t.Errorf("wrong PIN: %v", errs[0])
	}
	for _, e := range errs {
		if strings.Contains(e.Error(), pin) || strings.Contains(e.Error(), wrongPIN) {
			t.Errorf("error carries a PIN: %v", e)
		}
	}
	if strings.Contains(logs.String(), pin) || strings.Contains(logs.String(), wrongPIN) {
		t.Errorf("logs carry a PIN:\n%s", logs.String())
	}
	if _, err := b.SignECDSA(ctx, base.WithObject("absent").String(), []byte("m")); err == nil ||
		err.Error() != fmt.Sprintf(`pkcs11: sign with "absent" on token %q: key not found`, label) {
		t.Errorf("message: %v", err)
	}
}

func TestBadLocations(t *testing.T) {
	b, base := newTestBackend(t)
	ctx := context.Background()
	for _, loc := range []string{base.String(), "/var/lib/aziot/keyd/keys/x.key", "pkcs11:object=x"} {
		if _, err := b.SignECDSA(ctx, loc, make([]byte, 32)); !errors.Is(err, hsm.ErrInvalidParameter) {
			t.Errorf("SignECDSA(%q): %v, want ErrInvalidParameter", loc, err)
		}
		if _, err := b.KeyExists(ctx, loc); !errors.Is(err, hsm.ErrInvalidParameter) {
			t.Errorf("KeyExists(%q): %v, want ErrInvalidParameter", loc, err)
		}
	}
}

// TestStaleHandles changes the token behind the backend's handle cache.
func TestStaleHandles(t *testing.T) {
	b, base := newTestBackend(t)
	ctx := context.Background()
	loc := base.WithObject("device-id").String()
	digest := sha256.Sum256([]byte("m"))
	if err := b.CreateKeyPair(ctx, loc, []hsm.Algorithm{hsm.ECP256}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.SignECDSA(ctx, loc, digest[:]); err != nil { // caches the handle
		t.Fatal(err)
	}
	// A second backend (its own cache, the same library) replaces the pair.
	other, err := New(softhsmLib, testLogger(t, nil))
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if err := other.DeleteKeyPair(ctx, loc); err != nil {
		t.Fatal(err)
	}
	if _, err := b.SignECDSA(ctx, loc, digest[:]); !errors.Is(err, hsm.ErrNotFound) {
		t.Fatalf("sign after the pair was deleted elsewhere: %v, want ErrNotFound", err)
	}
	if err := other.CreateKeyPair(ctx, loc, []hsm.Algorithm{hsm.ECP256}); err != nil {
		t.Fatal(err)
	}
	pub, err := other.PublicKey(ctx, loc)
	if err != nil {
		t.Fatal(err)
	}
	sig, err := b.SignECDSA(ctx, loc, digest[:])
	if err != nil || !ecdsa.VerifyASN1(pub.(*ecdsa.PublicKey), digest[:], sig) {
		t.Fatalf("sign with the recreated pair: %v", err)
	}
}

// TestBrokenSession closes a pooled session behind the pool's back: the next
// operation must drop it and succeed on a new session.
func TestBrokenSession(t *testing.T) {
	b, base := newTestBackend(t)
	ctx := context.Background()
	loc := base.WithObject("k").String()
	if err := b.CreateKey(ctx, loc, hsm.UsageSign); err != nil {
		t.Fatal(err)
	}
	tok, _ := b.token(ctx, base)
	s := <-tok.idle
	if err := b.p.CloseSession(s); err != nil {
		t.Fatal(err)
	}
	tok.idle <- s
	if _, err := b.HMACSHA256(ctx, loc, []byte("m")); err != nil {
		t.Fatalf("HMAC after a session was closed: %v", err)
	}
	if _, err := b.HMACSHA256(ctx, loc, []byte("m")); err != nil {
		t.Fatal(err)
	}
}

func TestPoolBound(t *testing.T) {
	label := newTestToken(t, testPIN)
	b, err := New(softhsmLib, testLogger(t, nil))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	b.maxSessions = 2
	ctx := context.Background()
	tok, err := b.token(ctx, &URI{Token: label, PIN: testPIN})
	if err != nil {
		t.Fatal(err)
	}
	s1, err1 := tok.acquire(ctx)
	s2, err2 := tok.acquire(ctx)
	if err1 != nil || err2 != nil || s1 == s2 {
		t.Fatalf("two sessions: %v %v %v %v", s1, s2, err1, err2)
	}
	short, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	if _, err := tok.acquire(short); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("a third session beyond the bound: %v, want DeadlineExceeded", err)
	}
	got := make(chan pkcs11.SessionHandle)
	go func() {
		s, _ := tok.acquire(ctx)
		got <- s
	}()
	tok.release(s1, nil)
	if s := <-got; s != s1 {
		t.Fatalf("the waiter got session %d, want the released %d", s, s1)
	}
	tok.release(s1, nil)
	tok.release(s2, nil)
	if len(tok.idle) != 2 {
		t.Fatalf("%d idle sessions, want 2", len(tok.idle))
	}
}

func TestClose(t *testing.T) {
	b1, base := newTestBackend(t)
	ctx := context.Background()
	loc := base.WithObject("k").String()
	if err := b1.CreateKey(ctx, loc, hsm.UsageSign); err != nil {
		t.Fatal(err)
	}
	b2, err := New(softhsmLib, testLogger(t, nil))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b2.HMACSHA256(ctx, loc, []byte("m")); err != nil {
		t.Fatal(err)
	}
	// Closing one backend leaves the shared library to the other.
	if err := b2.Close(); err != nil {
		t.Fatal(err)
	}
	if err := b2.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := b2.HMACSHA256(ctx, loc, []byte("m")); !errors.Is(err, errClosed) {
		t.Fatalf("HMAC after Close: %v, want errClosed", err)
	}
	if _, err := b1.HMACSHA256(ctx, loc, []byte("m")); err != nil {
		t.Fatalf("the other backend broke: %v", err)
	}
	if _, err := New("/nonexistent/libpkcs11.so", nil); err == nil {
		t.Fatal("New with a missing library succeeded")
	}
	if _, err := New("/etc/hostname", nil); err == nil {
		t.Fatal("New with a file that is not a library succeeded")
	}
}
