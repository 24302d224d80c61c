package main

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/warden-iot/warden/conformance/emulator"
)

// TestProgram: the built program loads a TOML file, writes its CA, prints
// its ready line with generated keys, registers a device, and stops on
// SIGTERM.
func TestProgram(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "warden-emulator")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	file, ca := filepath.Join(dir, "en.toml"), filepath.Join(dir, "ca.pem")
	os.WriteFile(file, []byte("[[symmetricKey]]\nregistrationId = \"cmd-dev\"\n"), 0o600)
	cmd := exec.Command(bin, "-enrollments", file, "-ca-out", ca, "-poll-delay", "0", "-quiet")
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	var ready struct {
		URL, IDScope string
		Enrollments  emulator.Enrollments
	}
	if err := json.Unmarshal([]byte(line), &ready); err != nil || len(ready.Enrollments.SymmetricKey) != 1 {
		t.Fatalf("ready line %q: %v", line, err)
	}
	key := ready.Enrollments.SymmetricKey[0].PrimaryKey
	pem, _ := os.ReadFile(ca)
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		t.Fatalf("CA file %q", pem)
	}
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	tok, _ := emulator.NewSASToken(key, ready.IDScope+"/registrations/cmd-dev", time.Now().Add(time.Minute), "registration")
	req, _ := http.NewRequest("PUT", ready.URL+"/"+ready.IDScope+"/registrations/cmd-dev/register?api-version=2021-06-01",
		strings.NewReader(`{"registrationId":"cmd-dev"}`))
	req.Header.Set("Authorization", tok)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 202 || resp.Header.Get("Retry-After") != "0" {
		t.Fatalf("register: %d %v", resp.StatusCode, resp.Header)
	}
	cmd.Process.Signal(syscall.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("exit: %v", err)
	}
}
