package conformance

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync/atomic"
	"testing"
)

// softhsmLib is where Debian's softhsm2 package puts the PKCS#11 module.
const softhsmLib = "/usr/lib/softhsm/libsofthsm2.so"

// softHSM is a SoftHSM2 token in a private token directory.
type softHSM struct {
	conf  string // SOFTHSM2_CONF
	label string
	pin   string
}

var softhsmTokens atomic.Int64

// newSoftHSM initialises a token with softhsm2-util in a temp SOFTHSM2_CONF.
// Without SoftHSM2 the test fails in CI and is skipped elsewhere.
func newSoftHSM(t testing.TB) *softHSM {
	t.Helper()
	_, libErr := os.Stat(softhsmLib)
	_, toolErr := exec.LookPath("softhsm2-util")
	if libErr != nil || toolErr != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("SoftHSM2 is not installed (%v; %v): make deps installs it", libErr, toolErr)
		}
		t.Skip("SoftHSM2 is not installed (apt-get install softhsm2)")
	}
	dir, err := os.MkdirTemp("", "warden-softhsm-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	tokens := filepath.Join(dir, "tokens")
	if err := os.Mkdir(tokens, 0o700); err != nil {
		t.Fatal(err)
	}
	s := &softHSM{conf: filepath.Join(dir, "softhsm2.conf"), pin: "1234",
		label: fmt.Sprintf("warden-conf-%d-%d", os.Getpid()%100000, softhsmTokens.Add(1))}
	conf := "directories.tokendir = " + tokens + "\nobjectstore.backend = file\nlog.level = ERROR\n"
	if err := os.WriteFile(s.conf, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("softhsm2-util", "--init-token", "--free", "--label", s.label, "--so-pin", "5678", "--pin", s.pin)
	cmd.Env = append(os.Environ(), s.env()...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("softhsm2-util --init-token: %v\n%s", err, out)
	}
	return s
}

// env is what a process using the token needs in its environment.
func (s *softHSM) env() []string { return []string{"SOFTHSM2_CONF=" + s.conf} }

// config is the [aziot_keys] table that makes the token the base slot.
func (s *softHSM) config() string {
	return fmt.Sprintf("\n[aziot_keys]\npkcs11_lib_path = %q\npkcs11_base_slot = \"pkcs11:token=%s?pin-value=%s\"\n", softhsmLib, s.label, s.pin)
}

// tool runs pkcs11-tool logged in to the token and returns its output.
func (s *softHSM) tool(t *testing.T, args ...string) string {
	t.Helper()
	if _, err := exec.LookPath("pkcs11-tool"); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("pkcs11-tool (opensc) is not installed: make deps installs it")
		}
		t.Skip("pkcs11-tool is not installed (apt-get install opensc)")
	}
	cmd := exec.Command("pkcs11-tool", append([]string{"--module", softhsmLib, "--token-label", s.label, "--login", "--pin", s.pin}, args...)...)
	cmd.Env = append(os.Environ(), s.env()...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("pkcs11-tool %v: %v\n%s", args, err, out)
	}
	return string(out)
}
