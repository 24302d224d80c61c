package tpm_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"
	"github.com/warden-iot/warden/conformance/emulator"
	"github.com/warden-iot/warden/tpm"
	"github.com/warden-iot/warden/tpm/swtpmtest"
)

// open returns a TPM on sw, closed when t ends.
func open(t *testing.T, sw *swtpmtest.SWTPM, opts tpm.Options) *tpm.TPM {
	t.Helper()
	opts.TCTI = sw.TCTI()
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	tp := tpm.New(opts)
	t.Cleanup(func() { tp.Close() })
	return tp
}

// testWriter sends log lines to t.Log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// activate makes an emulator blob for tp's EK and SRK.
func activate(t *testing.T, tp *tpm.TPM) *emulator.TPMActivation {
	t.Helper()
	ek, srk, err := tp.Keys(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	a, err := emulator.NewTPMActivation(rand.Reader, ek, srk)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// TestImportAndSign: on swtpm over TCP and a Unix socket, T1's keys parse
// and are stable, an emulator blob imports, and the TPM's HMAC equals the
// emulator's for data from empty to several TPM2_HMAC buffers.
func TestImportAndSign(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts swtpmtest.Options
	}{
		{"tcp", swtpmtest.Options{}},
		{"unix", swtpmtest.Options{Unix: true}},
		{"unstarted", swtpmtest.Options{NoStartup: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sw := swtpmtest.Start(t, tc.opts)
			tp := open(t, sw, tpm.Options{})
			ctx := context.Background()
			ek, srk, err := tp.Keys(ctx)
			if err != nil {
				t.Fatal(err)
			}
			for name, b := range map[string][]byte{"EK": ek, "SRK": srk} {
				pub, err := tpm2.Unmarshal[tpm2.TPM2BPublic](b)
				if err != nil {
					t.Fatalf("%s does not unmarshal as TPM2B_PUBLIC: %v", name, err)
				}
				if c, err := pub.Contents(); err != nil || c.Type != tpm2.TPMAlgRSA {
					t.Fatalf("%s: %v, type %v", name, err, c)
				}
			}
			ek2, srk2, err := tp.Keys(ctx)
			if err != nil || !bytes.Equal(ek, ek2) || !bytes.Equal(srk, srk2) {
				t.Fatalf("second Keys differs (err %v)", err)
			}
			a := activate(t, tp)
			if err := tp.ImportAuthKey(ctx, a.Blob); err != nil {
				t.Fatal(err)
			}
			for _, n := range []int{0, 1, 32, 1024, 1025, 5000} {
				data := bytes.Repeat([]byte{byte(n)}, n)
				mac, err := tp.SignWithAuthKey(ctx, data)
				if err != nil {
					t.Fatalf("%d bytes: %v", n, err)
				}
				if !bytes.Equal(mac, a.Sign(data)) {
					t.Fatalf("%d bytes: TPM HMAC %x, emulator %x", n, mac, a.Sign(data))
				}
			}
		})
	}
}

// TestEKMatchesTPM2Tools: the EK Keys returns is what tpm2_readpublic
// reads at 0x81010001 on the same swtpm (once Warden's connection is
// closed: swtpm serves one client at a time).
func TestEKMatchesTPM2Tools(t *testing.T) {
	sw := swtpmtest.Start(t, swtpmtest.Options{})
	tp := open(t, sw, tpm.Options{})
	ek, srk, err := tp.Keys(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	tp.Close()
	for _, tc := range []struct {
		handle string
		want   []byte
	}{{"0x81010001", ek}, {"0x81000001", srk}} {
		out := filepath.Join(sw.Dir, tc.handle+".pub")
		sw.Tool("tpm2_readpublic", "-c", tc.handle, "-o", out)
		got, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, tc.want) {
			t.Fatalf("%s: tpm2_readpublic %x\nWarden %x", tc.handle, got, tc.want)
		}
	}
}

// TestSecondImportReplaces: a second import replaces the key; a garbage
// blob fails and leaves the key in place.
func TestSecondImportReplaces(t *testing.T) {
	sw := swtpmtest.Start(t, swtpmtest.Options{})
	tp := open(t, sw, tpm.Options{})
	ctx := context.Background()
	first, second := activate(t, tp), activate(t, tp)
	data := []byte("0ne000a1b2c/registrations/device\n1700000000")
	for _, a := range []*emulator.TPMActivation{first, second} {
		if err := tp.ImportAuthKey(ctx, a.Blob); err != nil {
			t.Fatal(err)
		}
		if mac, err := tp.SignWithAuthKey(ctx, data); err != nil || !bytes.Equal(mac, a.Sign(data)) {
			t.Fatalf("after import: %x, %v; want %x", mac, err, a.Sign(data))
		}
	}
	// A blob for another TPM (its own EK and SRK) passes parsing and fails
	// in the TPM: the previous key stays.
	other := swtpmtest.Start(t, swtpmtest.Options{})
	foreign := activate(t, open(t, other, tpm.Options{}))
	for name, blob := range map[string][]byte{
		"garbage":     []byte("not a blob"),
		"truncated":   second.Blob[:len(second.Blob)/2],
		"other TPM's": foreign.Blob,
	} {
		err := tp.ImportAuthKey(ctx, blob)
		if err == nil {
			t.Fatalf("%s blob imported", name)
		}
		t.Logf("%s blob: %v", name, err)
		if mac, err := tp.SignWithAuthKey(ctx, data); err != nil || !bytes.Equal(mac, second.Sign(data)) {
			t.Fatalf("after the %s blob the key changed: %v", name, err)
		}
	}
}

// TestTPMErrorsDecoded: a blob whose credential was made for another TPM
// fails in TPM2_ActivateCredential with a decoded response code.
func TestTPMErrorsDecoded(t *testing.T) {
	sw := swtpmtest.Start(t, swtpmtest.Options{})
	tp := open(t, sw, tpm.Options{})
	other := swtpmtest.Start(t, swtpmtest.Options{})
	foreign := activate(t, open(t, other, tpm.Options{}))
	activate(t, tp)
	err := tp.ImportAuthKey(context.Background(), foreign.Blob)
	ce, ok := tpm.Decode(err)
	if !ok {
		t.Fatalf("no TPM response code in %v", err)
	}
	if ce.Command != "TPM2_ActivateCredential" || !strings.HasPrefix(ce.Name(), "TPM_RC_") || ce.Meaning() == "" {
		t.Fatalf("decoded %q %q %q from %v", ce.Command, ce.Name(), ce.Meaning(), err)
	}
	t.Logf("%s: %s: %s", ce.Command, ce.Name(), ce.Meaning())
}

// TestSignWithoutKey: signing before any import is ErrNoAuthKey.
func TestSignWithoutKey(t *testing.T) {
	sw := swtpmtest.Start(t, swtpmtest.Options{})
	tp := open(t, sw, tpm.Options{})
	if _, err := tp.SignWithAuthKey(context.Background(), []byte("x")); !errors.Is(err, tpm.ErrNoAuthKey) {
		t.Fatalf("err = %v, want ErrNoAuthKey", err)
	}
}

// TestConcurrentSign: 8 goroutines share one TPM; every HMAC matches.
func TestConcurrentSign(t *testing.T) {
	sw := swtpmtest.Start(t, swtpmtest.Options{})
	tp := open(t, sw, tpm.Options{})
	a := activate(t, tp)
	if err := tp.ImportAuthKey(context.Background(), a.Blob); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := range 8 {
		wg.Go(func() {
			for i := range 50 {
				data := []byte{byte(g), byte(i)}
				mac, err := tp.SignWithAuthKey(context.Background(), data)
				if err == nil && !bytes.Equal(mac, a.Sign(data)) {
					err = errors.New("HMAC mismatch")
				}
				if err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

// TestReconnect: swtpm restarts (state kept) under an open connection; the
// next operation reconnects and the persisted key still signs.
func TestReconnect(t *testing.T) {
	for _, unix := range []bool{false, true} {
		sw := swtpmtest.Start(t, swtpmtest.Options{Unix: unix})
		tp := open(t, sw, tpm.Options{IdleTimeout: -1})
		a := activate(t, tp)
		ctx := context.Background()
		if err := tp.ImportAuthKey(ctx, a.Blob); err != nil {
			t.Fatal(err)
		}
		sw.Restart()
		if mac, err := tp.SignWithAuthKey(ctx, []byte("after restart")); err != nil || !bytes.Equal(mac, a.Sign([]byte("after restart"))) {
			t.Fatalf("unix=%v: after swtpm restart: %v", unix, err)
		}
	}
}

// TestIdleConnectionReleased: after the idle timeout another client of the
// single-client swtpm gets through.
func TestIdleConnectionReleased(t *testing.T) {
	sw := swtpmtest.Start(t, swtpmtest.Options{})
	tp := open(t, sw, tpm.Options{IdleTimeout: 100 * time.Millisecond})
	if _, _, err := tp.Keys(context.Background()); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	sw.Tool("tpm2_getrandom", "8")
	t.Logf("tpm2_getrandom got through after %v", time.Since(start))
	if _, _, err := tp.Keys(context.Background()); err != nil {
		t.Fatalf("after the idle close: %v", err)
	}
}

// TestLeftoversFlushed: transient objects an earlier client left loaded on
// a TPM without resource manager are flushed when Warden connects.
func TestLeftoversFlushed(t *testing.T) {
	sw := swtpmtest.Start(t, swtpmtest.Options{})
	ctxFile := filepath.Join(sw.Dir, "primary.ctx")
	for range 3 {
		sw.Tool("tpm2_createprimary", "-C", "o", "-G", "ecc", "-c", ctxFile)
	}
	if out := sw.Tool("tpm2_getcap", "handles-transient"); !bytes.Contains(out, []byte("0x80")) {
		t.Fatalf("no transient objects left to flush: %s", out)
	}
	tp := open(t, sw, tpm.Options{})
	if _, _, err := tp.Keys(context.Background()); err != nil {
		t.Fatal(err)
	}
	tp.Close()
	if out := sw.Tool("tpm2_getcap", "handles-transient"); bytes.Contains(out, []byte("0x80")) {
		t.Fatalf("transient objects remain: %s", out)
	}
}

// TestLeftoverSessionsFlushed: policy sessions an earlier client left
// loaded (a go-tpm client, or a wardend stopped during an import) are
// flushed on connecting, as transient objects are: swtpm has three session
// slots, and with them taken every import fails with TPM_RC_SESSION_MEMORY.
func TestLeftoverSessionsFlushed(t *testing.T) {
	sw := swtpmtest.Start(t, swtpmtest.Options{})
	raw, err := tpm.OpenRaw(sw.TCTI())
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if _, _, err := tpm2.PolicySession(raw, tpm2.TPMAlgSHA256, 16); err != nil {
			t.Fatal(err)
		}
	}
	raw.Close()
	tp := open(t, sw, tpm.Options{})
	a := activate(t, tp)
	if err := tp.ImportAuthKey(context.Background(), a.Blob); err != nil {
		t.Fatal(err)
	}
	tp.Close()
	if out := sw.Tool("tpm2_getcap", "handles-loaded-session"); bytes.Contains(out, []byte("0x")) {
		t.Fatalf("sessions remain loaded: %s", out)
	}
}

// TestOversizedBlob: a blob with a field too large for one TPM command
// fails without reaching swtpm, which reads a command in one read() of at
// most 4105 bytes and takes the rest of a longer one as further commands:
// their answers would be read as those of Warden's next commands, and the
// caller's bytes would run as TPM commands of their own. Here the blob ends
// in TPM2_EvictControl of the auth key, placed where swtpm 0.7.1 cuts
// TPM2_ActivateCredential (90 bytes of go-tpm v0.9.8's header, handles and
// sessions before the credential blob); the key must stay and still sign.
func TestOversizedBlob(t *testing.T) {
	sw := swtpmtest.Start(t, swtpmtest.Options{})
	tp := open(t, sw, tpm.Options{})
	ctx := context.Background()
	good := activate(t, tp)
	if err := tp.ImportAuthKey(ctx, good.Blob); err != nil {
		t.Fatal(err)
	}
	ab, err := tpm.ParseActivationBlob(good.Blob)
	if err != nil {
		t.Fatal(err)
	}
	evict := []byte{0x80, 0x02, 0, 0, 0, 35, 0, 0, 0x01, 0x20, 0x40, 0, 0, 0x01, 0x81, 0, 0x01, 0,
		0, 0, 0, 9, 0x40, 0, 0, 9, 0, 0, 0, 0, 0, 0x81, 0, 0x01, 0}
	crafted := append(bytes.Repeat([]byte{0x41}, 4105-90-2-len(ab.CredentialBlob)), evict...)
	tp.Close() // swtpm serves one connection at a time
	for _, tc := range []struct {
		name   string
		secret []byte
	}{{"oversized", bytes.Repeat([]byte{0x41}, 9000)}, {"crafted", crafted}} {
		var blob []byte
		for _, p := range [][]byte{ab.CredentialBlob, tc.secret, ab.Duplicate, ab.EncryptedSeed, ab.Public} {
			blob = append(blob, tpm2b(p)...)
		}
		tp := open(t, sw, tpm.Options{})
		if err := tp.ImportAuthKey(ctx, blob); err == nil {
			t.Fatalf("%s blob imported", tc.name)
		} else {
			t.Logf("%s blob: %v", tc.name, err)
		}
		data := []byte("after the " + tc.name + " blob")
		if mac, err := tp.SignWithAuthKey(ctx, data); err != nil || !bytes.Equal(mac, good.Sign(data)) {
			t.Errorf("after the %s blob: %x, %v", tc.name, mac, err)
		}
		tp.Close()
	}
	if out := sw.Tool("tpm2_getcap", "handles-persistent"); !bytes.Contains(out, []byte("0x81000100")) {
		t.Fatalf("the auth key is gone: %s", out)
	}
}

// TestCorruptedBlob: a byte flipped in any part of a valid blob fails the
// import (in parsing or in the TPM, with a decoded response code) and the
// previous key stays.
func TestCorruptedBlob(t *testing.T) {
	sw := swtpmtest.Start(t, swtpmtest.Options{})
	tp := open(t, sw, tpm.Options{})
	ctx := context.Background()
	good := activate(t, tp)
	if err := tp.ImportAuthKey(ctx, good.Blob); err != nil {
		t.Fatal(err)
	}
	fresh := activate(t, tp)
	ab, err := tpm.ParseActivationBlob(fresh.Blob)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		part []byte
	}{
		{"credential blob", ab.CredentialBlob},
		{"secret", ab.Secret},
		{"duplicate", ab.Duplicate},
		{"encrypted seed", ab.EncryptedSeed},
		{"public area", ab.Public},
	} {
		t.Run(tc.name, func(t *testing.T) {
			blob := bytes.Clone(fresh.Blob)
			i := bytes.Index(fresh.Blob, tc.part) + len(tc.part) - 1
			blob[i] ^= 0x01
			err := tp.ImportAuthKey(ctx, blob)
			if err == nil {
				t.Fatal("imported")
			}
			if ce, ok := tpm.Decode(err); ok {
				t.Logf("%s: %s", ce.Name(), err)
			} else if !errors.Is(err, tpm.ErrBadBlob) {
				t.Fatalf("neither a TPM error nor ErrBadBlob: %v", err)
			} else {
				t.Log(err)
			}
			if mac, err := tp.SignWithAuthKey(ctx, []byte("x")); err != nil || !bytes.Equal(mac, good.Sign([]byte("x"))) {
				t.Fatalf("previous key gone: %v", err)
			}
		})
	}
}

// TestKeyEvictedUnderneath: when another tool evicts the auth key, the
// next signature says there is no auth key.
func TestKeyEvictedUnderneath(t *testing.T) {
	sw := swtpmtest.Start(t, swtpmtest.Options{})
	tp := open(t, sw, tpm.Options{IdleTimeout: 50 * time.Millisecond})
	a := activate(t, tp)
	if err := tp.ImportAuthKey(context.Background(), a.Blob); err != nil {
		t.Fatal(err)
	}
	if _, err := tp.SignWithAuthKey(context.Background(), []byte("x")); err != nil {
		t.Fatal(err)
	}
	sw.Tool("tpm2_evictcontrol", "-C", "o", "-c", "0x81000100")
	if _, err := tp.SignWithAuthKey(context.Background(), []byte("x")); !errors.Is(err, tpm.ErrNoAuthKey) {
		t.Fatalf("err = %v, want ErrNoAuthKey", err)
	}
}
