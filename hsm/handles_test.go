package hsm

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"log/slog"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"sync"
	"testing"
)

// validationKey is a fixed handle-validation key, written where aziot keeps
// it, so the tests can compute handles by hand.
var validationKey = bytes.Repeat([]byte{0x5a}, 32)

func handlesWithKnownKey(t *testing.T) (*Handles, *Keys) {
	t.Helper()
	k := openFileKeys(t)
	writeFile(t, filepath.Join(k.homeDir, "keys", "handlevalidationkey-40f1ca41fe8b50f53e10f3e3a580dcae24087f37aa498ba9903f2612b03e90ba.key"), validationKey)
	return NewHandles(k), k
}

// handBuilt is the documented algorithm (spec §3.3), computed with nothing
// from this package: sr=b64(SR)&sig=b64(HMAC-SHA256(key, SR)).
func handBuilt(sr string) string {
	m := hmac.New(sha256.New, validationKey)
	m.Write([]byte(sr))
	return "sr=" + base64.StdEncoding.EncodeToString([]byte(sr)) + "&sig=" + base64.StdEncoding.EncodeToString(m.Sum(nil))
}

const testNonce = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJygpKissLS4vMDEyMzQ1Njc4OTo7PD0+Pw=="

// TestHandleByteCompatible: handles built by hand as aziot keyd builds them
// verify, and what Issue writes is exactly that format.
func TestHandleByteCompatible(t *testing.T) {
	ctx := context.Background()
	h, _ := handlesWithKnownKey(t)

	key := handBuilt(`{"key_id":{"Key":"aziot_identityd_master_id"},"nonce":"` + testNonce + `"}`)
	pair := handBuilt(`{"key_id":{"KeyPair":"device-id"},"nonce":"` + testNonce + `"}`)
	derived := handBuilt(`{"key_id":{"Derived":["` + key + `",[109,49,58,0,255]]},"nonce":"` + testNonce + `"}`)
	tests := []struct {
		handle string
		want   KeyRef
	}{
		{key, KeyRef{Kind: KindKey, ID: "aziot_identityd_master_id"}},
		{pair, KeyRef{Kind: KindKeyPair, ID: "device-id"}},
		{derived, KeyRef{Kind: KindDerived, Base: key, Data: []byte{109, 49, 58, 0, 255},
			BaseRef: &KeyRef{Kind: KindKey, ID: "aziot_identityd_master_id"}}},
		// serde_json escapes only '"', '\\' and control characters.
		{handBuilt(`{"key_id":{"Key":"a\"b\\c\n\u0001/<>&é"},"nonce":"n"}`), KeyRef{Kind: KindKey, ID: "a\"b\\c\n\x01/<>&é"}},
	}
	for _, tt := range tests {
		for range 2 { // the second time from the cache
			got, err := h.Verify(ctx, tt.handle)
			if err != nil {
				t.Fatalf("Verify(%s): %v", tt.handle, err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("Verify = %+v, want %+v", got, tt.want)
			}
		}
	}

	// The spec's example sr (nonce "...") is what srJSON writes.
	sr, _ := srJSON(KeyRef{Kind: KindKey, ID: "aziot_identityd_master_id"}, "...")
	if got := base64.StdEncoding.EncodeToString(sr); got != "eyJrZXlfaWQiOnsiS2V5IjoiYXppb3RfaWRlbnRpdHlkX21hc3Rlcl9pZCJ9LCJub25jZSI6Ii4uLiJ9" {
		t.Fatalf("sr = %s", got)
	}
	for _, ref := range []KeyRef{
		{Kind: KindKey, ID: "a\"b\\c\n\x01\x7f/<>&é"},
		{Kind: KindKeyPair, ID: "device-id"},
		{Kind: KindDerived, Base: key, Data: []byte{0, 1, 255}},
		{Kind: KindDerived, Base: key, Data: nil},
	} {
		issued, err := h.Issue(ctx, ref)
		if err != nil {
			t.Fatal(err)
		}
		srB64, sig, _ := strings.Cut(strings.TrimPrefix(issued, "sr="), "&sig=")
		srBytes, err := base64.StdEncoding.DecodeString(srB64)
		if err != nil {
			t.Fatal(err)
		}
		var keyID string
		switch ref.Kind {
		case KindKey:
			keyID = `{"Key":"a\"b\\c\n\u0001` + "\x7f" + `/<>&é"}`
		case KindKeyPair:
			keyID = `{"KeyPair":"device-id"}`
		default:
			data := "[]"
			if ref.Data != nil {
				data = "[0,1,255]"
			}
			keyID = `{"Derived":["` + key + `",` + data + `]}`
		}
		pattern := `^\{"key_id":` + regexp.QuoteMeta(keyID) + `,"nonce":"[A-Za-z0-9+/]{86}=="\}$`
		if !regexp.MustCompile(pattern).Match(srBytes) {
			t.Fatalf("SR_JSON %s does not match %s", srBytes, pattern)
		}
		if handBuilt(string(srBytes)) != issued {
			t.Fatalf("sig=%s is not HMAC-SHA256(validation key, SR_JSON)", sig)
		}
	}
	a, _ := h.Issue(ctx, KeyRef{Kind: KindKey, ID: "k"})
	b, _ := h.Issue(ctx, KeyRef{Kind: KindKey, ID: "k"})
	if a == b {
		t.Fatal("two issues of one key gave the same handle")
	}
}

func TestHandleRejects(t *testing.T) {
	ctx := context.Background()
	h, _ := handlesWithKnownKey(t)
	var good string
	for !strings.ContainsAny(good, "+/") { // for the url-safe case
		var err error
		if good, err = h.Issue(ctx, KeyRef{Kind: KindKeyPair, ID: "device-id"}); err != nil {
			t.Fatal(err)
		}
	}
	srB64, sigB64, _ := strings.Cut(strings.TrimPrefix(good, "sr="), "&sig=")
	sr, _ := base64.StdEncoding.DecodeString(srB64)
	swapped := bytes.Replace(sr, []byte(`"KeyPair"`), []byte(`"Key"`), 1)
	otherID := bytes.Replace(sr, []byte(`device-id`), []byte(`device-ie`), 1)
	sig, _ := base64.StdEncoding.DecodeString(sigB64)
	sig[0] ^= 1
	other := strings.Repeat("A", 43) + "="

	bad := map[string]string{
		"empty":                "",
		"no sig":               "sr=" + srB64,
		"no sr":                "sig=" + sigB64,
		"sr tampered: kind":    "sr=" + base64.StdEncoding.EncodeToString(swapped) + "&sig=" + sigB64,
		"sr tampered: id":      "sr=" + base64.StdEncoding.EncodeToString(otherID) + "&sig=" + sigB64,
		"sig tampered":         "sr=" + srB64 + "&sig=" + base64.StdEncoding.EncodeToString(sig),
		"sig of another key":   "sr=" + srB64 + "&sig=" + other,
		"sig truncated":        "sr=" + srB64 + "&sig=" + sigB64[:20],
		"sr not base64":        "sr=" + srB64 + "!&sig=" + sigB64,
		"sr unpadded":          "sr=" + strings.TrimRight(srB64, "=") + "&sig=" + sigB64,
		"sr with a line break": "sr=" + srB64[:10] + "\n" + srB64[10:] + "&sig=" + sigB64,
		"url-safe base64":      strings.NewReplacer("+", "-", "/", "_").Replace(good),
		"later sig wins":       good + "&sig=" + other,
		"valid MAC, not JSON":  handBuilt(`not json`),
		"valid MAC, no nonce":  handBuilt(`{"key_id":{"Key":"k"}}`),
		"valid MAC, 2 kinds":   handBuilt(`{"key_id":{"Key":"k","KeyPair":"k"},"nonce":""}`),
		"valid MAC, bad kind":  handBuilt(`{"key_id":{"Secret":"k"},"nonce":""}`),
		"valid MAC, empty id":  handBuilt(`{"key_id":{"Key":""},"nonce":""}`),
		"valid MAC, byte 256":  handBuilt(`{"key_id":{"Derived":["` + good + `",[256]]},"nonce":""}`),
		"valid MAC, bad base":  handBuilt(`{"key_id":{"Derived":["sr=&sig=",[1]]},"nonce":""}`),
		"valid MAC, not UTF-8": handBuilt("{\"key_id\":{\"Key\":\"\xff\"},\"nonce\":\"\"}"),
		"too long":             good + "&x=" + strings.Repeat("a", maxHandleLen),
	}
	for name, handle := range bad {
		if _, err := h.Verify(ctx, handle); !errors.Is(err, ErrInvalidHandle) {
			t.Errorf("%s: Verify = %v, want ErrInvalidHandle", name, err)
		}
	}
	// Unknown parameters are ignored and the order does not matter, as in aziot.
	reordered := "x=1&sig=" + sigB64 + "&sr=" + srB64
	if ref, err := h.Verify(ctx, reordered); err != nil || ref.Kind != KindKeyPair {
		t.Fatalf("reordered handle: %+v, %v", ref, err)
	}
}

// TestHandleDerivedOfDerived: Verify returns the nesting; keyd rejects it.
func TestHandleDerivedOfDerived(t *testing.T) {
	ctx := context.Background()
	h, _ := handlesWithKnownKey(t)
	base, _ := h.Issue(ctx, KeyRef{Kind: KindKey, ID: "master"})
	d1, _ := h.Issue(ctx, KeyRef{Kind: KindDerived, Base: base, Data: []byte("one")})
	d2, _ := h.Issue(ctx, KeyRef{Kind: KindDerived, Base: d1, Data: []byte("two")})
	ref, err := h.Verify(ctx, d2)
	if err != nil {
		t.Fatal(err)
	}
	if ref.Kind != KindDerived || ref.BaseRef.Kind != KindDerived || ref.BaseRef.BaseRef.Kind != KindKey ||
		ref.BaseRef.BaseRef.ID != "master" || string(ref.BaseRef.Data) != "one" {
		t.Fatalf("nested derived ref = %+v", ref)
	}
	// Returned refs are copies: changing one does not poison the cache.
	ref.BaseRef.Data[0] = 'X'
	again, _ := h.Verify(ctx, d2)
	if string(again.BaseRef.Data) != "one" {
		t.Fatal("the cache handed out shared memory")
	}
	// A derived handle over a forged base is invalid even with a valid MAC.
	forged := strings.Replace(base, "sig=", "sig=A", 1)
	d3, _ := h.Issue(ctx, KeyRef{Kind: KindDerived, Base: forged, Data: []byte("x")})
	if _, err := h.Verify(ctx, d3); !errors.Is(err, ErrInvalidHandle) {
		t.Fatalf("derived over a forged base: %v", err)
	}
}

// TestHandleTooLong: a handle longer than Verify takes is not issued (a
// derived key's data past ~12 KiB); one under it verifies.
func TestHandleTooLong(t *testing.T) {
	ctx := context.Background()
	h, _ := handlesWithKnownKey(t)
	base, _ := h.Issue(ctx, KeyRef{Kind: KindKey, ID: "master"})
	ok, err := h.Issue(ctx, KeyRef{Kind: KindDerived, Base: base, Data: bytes.Repeat([]byte{0xFF}, 8<<10)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.Verify(ctx, ok); err != nil {
		t.Fatalf("an 8 KiB derived handle (%d bytes) does not verify: %v", len(ok), err)
	}
	if _, err := h.Issue(ctx, KeyRef{Kind: KindDerived, Base: base, Data: bytes.Repeat([]byte{0xFF}, 16<<10)}); !errors.Is(err, ErrHandleTooLong) {
		t.Fatalf("a 16 KiB derived handle: %v, want ErrHandleTooLong", err)
	}
}

// TestHandleValidationKeyLifecycle: the key is created on first use, kept
// across restarts, and a change through the store drops cached handles.
func TestHandleValidationKeyLifecycle(t *testing.T) {
	ctx := context.Background()
	home := t.TempDir()
	k1, _ := Open(ctx, Config{HomeDir: home})
	h1 := NewHandles(k1)
	handle, err := h1.Issue(ctx, KeyRef{Kind: KindKey, ID: "k"})
	if err != nil {
		t.Fatal(err)
	}
	if err := k1.LoadKey(ctx, HandleValidationKeyID); err != nil {
		t.Fatalf("validation key not created: %v", err)
	}
	k2, _ := Open(ctx, Config{HomeDir: home})
	h2 := NewHandles(k2)
	if _, err := h2.Verify(ctx, handle); err != nil {
		t.Fatalf("handle after restart: %v", err)
	}
	if _, err := h2.Verify(ctx, handle); err != nil { // now cached
		t.Fatal(err)
	}
	if err := k2.ImportKey(ctx, HandleValidationKeyID, bytes.Repeat([]byte{1}, 32), UsageSign); err != nil {
		t.Fatal(err)
	}
	if _, err := h2.Verify(ctx, handle); !errors.Is(err, ErrInvalidHandle) {
		t.Fatalf("cached handle survived a new validation key: %v", err)
	}
	// Deleting the key makes Handles create a new one.
	k2.DeleteKey(ctx, HandleValidationKeyID)
	if _, err := h2.Issue(ctx, KeyRef{Kind: KindKey, ID: "k"}); err != nil {
		t.Fatal(err)
	}
}

// TestHandleStoreFailureIsNotInvalid: a key store that cannot compute the
// MAC is an internal error (500), not an invalid handle (400).
func TestHandleStoreFailureIsNotInvalid(t *testing.T) {
	ctx := context.Background()
	notDir := filepath.Join(t.TempDir(), "file")
	writeFile(t, notDir, []byte("x"))
	k, err := Open(ctx, Config{Preloaded: map[string]string{HandleValidationKeyID: "file://" + notDir + "/hvk"}})
	if err != nil {
		t.Fatal(err)
	}
	h := NewHandles(k)
	_, err = h.Verify(ctx, handBuilt(`{"key_id":{"Key":"k"},"nonce":""}`))
	if err == nil || errors.Is(err, ErrInvalidHandle) {
		t.Fatalf("Verify with a broken store: %v", err)
	}
}

func TestHandleCacheBounded(t *testing.T) {
	ctx := context.Background()
	h, _ := handlesWithKnownKey(t)
	for i := range handleCacheLimit + 10 {
		handle, _ := h.Issue(ctx, KeyRef{Kind: KindKey, ID: "k"})
		if _, err := h.Verify(ctx, handle); err != nil {
			t.Fatal(err)
		}
		if n := len(h.cur) + len(h.old); n > handleCacheLimit {
			t.Fatalf("after %d handles the cache holds %d", i+1, n)
		}
	}
}

func FuzzVerifyHandle(f *testing.F) {
	ctx := context.Background()
	k, err := Open(ctx, Config{HomeDir: f.TempDir()})
	if err != nil {
		f.Fatal(err)
	}
	h := NewHandles(k)
	good, _ := h.Issue(ctx, KeyRef{Kind: KindKey, ID: "k"})
	derived, _ := h.Issue(ctx, KeyRef{Kind: KindDerived, Base: good, Data: []byte{1}})
	for _, s := range []string{good, derived, "", "sr=&sig=", "sr=e30=&sig=AAAA", good[:len(good)-3], strings.ToUpper(good)} {
		f.Add(s)
	}
	issued := map[string]bool{good: true, derived: true}
	f.Fuzz(func(t *testing.T, s string) {
		ref, err := h.Verify(ctx, s)
		if issued[s] {
			if err != nil {
				t.Fatalf("issued handle rejected: %v", err)
			}
			return
		}
		if err == nil {
			// Only a string that carries an issued handle's sr and sig
			// (plus ignored parameters) may verify.
			if !strings.Contains(s, strings.Split(good, "&")[0]) && !strings.Contains(s, strings.Split(derived, "&")[0]) {
				t.Fatalf("forged handle %q verified as %+v", s, ref)
			}
			return
		}
		if !errors.Is(err, ErrInvalidHandle) {
			t.Fatalf("Verify(%q) = %v, not ErrInvalidHandle", s, err)
		}
	})
}

func BenchmarkVerifyHandleCached(b *testing.B) {
	ctx := context.Background()
	k, _ := Open(ctx, Config{HomeDir: b.TempDir()})
	h := NewHandles(k)
	handle, _ := h.Issue(ctx, KeyRef{Kind: KindKeyPair, ID: "device-id"})
	for b.Loop() {
		if _, err := h.Verify(ctx, handle); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkVerifyHandleUncached(b *testing.B) {
	ctx := context.Background()
	k, _ := Open(ctx, Config{HomeDir: b.TempDir()})
	h := NewHandles(k)
	handle, _ := h.Issue(ctx, KeyRef{Kind: KindKeyPair, ID: "device-id"})
	for b.Loop() {
		if _, err := h.verify(ctx, handle, 0); err != nil {
			b.Fatal(err)
		}
	}
}

// hookP11 is fakeP11 with a hook run inside HMACSHA256, after the MAC is
// computed, to stop a caller there.
type hookP11 struct {
	*fakeP11
	hookMu sync.Mutex
	onMAC  func()
}

func (f *hookP11) setHook(onMAC func()) {
	f.hookMu.Lock()
	defer f.hookMu.Unlock()
	f.onMAC = onMAC
}

func (f *hookP11) HMACSHA256(ctx context.Context, loc string, msg []byte) ([]byte, error) {
	mac, err := f.fakeP11.HMACSHA256(ctx, loc, msg)
	f.hookMu.Lock()
	hook := f.onMAC
	f.hookMu.Unlock()
	if hook != nil {
		hook()
	}
	return mac, err
}

func openHookKeys(t *testing.T) (*Keys, *hookP11) {
	t.Helper()
	f := &hookP11{fakeP11: newFakeP11(t)}
	k, err := Open(context.Background(), Config{HomeDir: t.TempDir(), PKCS11LibPath: testLib, PKCS11BaseSlot: testSlot,
		OpenPKCS11: func(string, *slog.Logger) (PKCS11Backend, error) { return f, nil }})
	if err != nil {
		t.Fatal(err)
	}
	return k, f
}

// stopOnce returns a hook that stops its first caller until resume is
// closed, and the channel that says it was reached.
func stopOnce() (hook func(), reached, resume chan struct{}) {
	reached, resume = make(chan struct{}), make(chan struct{})
	var once sync.Once
	return func() { once.Do(func() { close(reached); <-resume }) }, reached, resume
}

// TestHandleCacheNotRefilledByOldKey: a Verify whose MAC was computed with
// the old validation key, and that finishes after the key changed through
// the store, does not put the handle back into the emptied cache.
func TestHandleCacheNotRefilledByOldKey(t *testing.T) {
	ctx := context.Background()
	k, f := openHookKeys(t)
	h := NewHandles(k)
	handle, err := h.Issue(ctx, KeyRef{Kind: KindKey, ID: "k"})
	if err != nil {
		t.Fatal(err)
	}
	hook, reached, resume := stopOnce()
	f.setHook(hook)
	done := make(chan error)
	go func() { _, err := h.Verify(ctx, handle); done <- err }()
	<-reached
	f.setHook(nil)
	if err := k.ImportKey(ctx, HandleValidationKeyID, bytes.Repeat([]byte{7}, 32), UsageSign); err != nil {
		t.Fatal(err)
	}
	h.Verify(ctx, "x") // another request notices the new key
	close(resume)
	<-done
	if _, err := h.Verify(ctx, handle); !errors.Is(err, ErrInvalidHandle) {
		t.Fatalf("a handle of the old validation key after the key changed: %v, want ErrInvalidHandle", err)
	}
}
