package pkcs11

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"sync/atomic"
	"testing"
)

// softhsmLib is where Debian's softhsm2 package puts the module.
const softhsmLib = "/usr/lib/softhsm/libsofthsm2.so"

// testPIN is the user PIN of test tokens (the SO PIN is 5678).
const testPIN = "1234"

// softhsmDir holds the SoftHSM2 configuration and token directory of this
// test binary. SoftHSM reads SOFTHSM2_CONF once, at C_Initialize, so every
// test token lives in this one directory, each with its own label.
var softhsmDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "warden-softhsm-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "softhsm temp dir:", err)
		os.Exit(1)
	}
	conf := filepath.Join(dir, "softhsm2.conf")
	tokens := filepath.Join(dir, "tokens")
	body := "directories.tokendir = " + tokens + "\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n"
	if err := os.Mkdir(tokens, 0o700); err == nil {
		err = os.WriteFile(conf, []byte(body), 0o600)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "softhsm config:", err)
		os.Exit(1)
	}
	os.Setenv("SOFTHSM2_CONF", conf)
	softhsmDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// requireSoftHSM skips the test when SoftHSM2 is not installed, or fails it
// when the CI variable is set (CI must run these tests).
func requireSoftHSM(tb testing.TB) {
	tb.Helper()
	_, libErr := os.Stat(softhsmLib)
	_, toolErr := exec.LookPath("softhsm2-util")
	if libErr == nil && toolErr == nil {
		return
	}
	msg := fmt.Sprintf("SoftHSM2 is not installed (%s: %v; softhsm2-util: %v); apt-get install softhsm2", softhsmLib, libErr, toolErr)
	if os.Getenv("CI") != "" {
		tb.Fatal(msg)
	}
	tb.Skip(msg)
}

var tokenSeq atomic.Int64

// newTestToken initialises a fresh SoftHSM token (user PIN pin) and returns
// its label. SoftHSM gives it a random slot ID, so tests find it by label.
func newTestToken(tb testing.TB, pin string) string {
	tb.Helper()
	requireSoftHSM(tb)
	label := fmt.Sprintf("warden-test-%d-%d", os.Getpid()%100000, tokenSeq.Add(1))
	cmd := exec.Command("softhsm2-util", "--init-token", "--free", "--label", label, "--so-pin", "5678", "--pin", pin)
	if out, err := cmd.CombinedOutput(); err != nil {
		tb.Fatalf("softhsm2-util --init-token: %v\n%s", err, out)
	}
	return label
}

// testLogger writes to the test's output and, if capture is not nil, to it.
func testLogger(tb testing.TB, capture io.Writer) *slog.Logger {
	var w io.Writer = io.Discard
	if t, ok := tb.(*testing.T); ok && testing.Verbose() {
		w = t.Output()
	}
	if capture != nil {
		w = io.MultiWriter(w, capture)
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// newTestBackend returns a backend on a fresh token and the token's base URI
// (token label and PIN, no object).
func newTestBackend(tb testing.TB) (*Backend, *URI) {
	tb.Helper()
	label := newTestToken(tb, testPIN)
	b, err := New(softhsmLib, testLogger(tb, nil))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := b.Close(); err != nil {
			tb.Error(err)
		}
	})
	base := &URI{Token: label, PIN: testPIN}
	if err := b.Login(context.Background(), base.String()); err != nil {
		tb.Fatal(err)
	}
	return b, base
}
