package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// runCmd runs wardenctl with args and returns its exit code and what it
// printed on standard output.
func runCmd(t *testing.T, args ...string) (int, string) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout := os.Stdout
	os.Stdout = w
	out := make(chan string)
	go func() {
		b, _ := io.ReadAll(r)
		out <- string(b)
	}()
	code := run(args)
	os.Stdout = stdout
	w.Close()
	return code, <-out
}

// silentBroker listens on a socket in a temp dir, accepts connections and
// never answers, as a stopped or wedged wardend would.
func silentBroker(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "broker.sock")
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		l.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	return path
}

// TestBrokerCommandsTimeOut: a command that talks to wardend gives up
// after -timeout (exit 1) rather than waiting forever for an answer that
// does not come. Before, health, token and identity had no timeout.
func TestBrokerCommandsTimeOut(t *testing.T) {
	sock := silentBroker(t)
	cfg := filepath.Join(t.TempDir(), "config.toml")
	dir := filepath.Dir(sock)
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf("[warden]\nsocket_dir = %q\n", dir)), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(sock, filepath.Join(dir, "identityd.sock")); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"health", "--socket", sock},
		{"token", "mint", "--socket", sock, "--cap", "key:x=sign"},
		{"token", "introspect", "--socket", sock, "--token", "t"},
		{"identity", "get", "-c", cfg},
		{"modules", "list", "--socket", sock},
	} {
		t.Run(strings.Join(args[:2], " "), func(t *testing.T) {
			done := make(chan int, 1)
			go func() {
				code, _ := runCmd(t, append(args, "-timeout", "300ms")...)
				done <- code
			}()
			select {
			case code := <-done:
				if code != 1 {
					t.Errorf("exit %d, want 1", code)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("still waiting after 10 s")
			}
		})
	}
}

// fakeBroker answers POST /tokens and records the bodies it was sent.
func fakeBroker(t *testing.T) (string, func() []map[string]any) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "broker.sock")
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	var mu sync.Mutex
	var bodies []map[string]any
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				br := bufio.NewReader(c)
				for {
					req, err := http.ReadRequest(br)
					if err != nil {
						return
					}
					var body map[string]any
					json.NewDecoder(req.Body).Decode(&body)
					mu.Lock()
					bodies = append(bodies, body)
					mu.Unlock()
					answer := `{"token":"t","id":"i","expiresAt":"2026-12-01T00:00:00Z"}`
					fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", len(answer), answer)
				}
			}()
		}
	}()
	return path, func() []map[string]any {
		mu.Lock()
		defer mu.Unlock()
		return bodies
	}
}

// TestTokenTTL: --ttl is sent in whole seconds; a lifetime under a second
// is a usage error. Before, it was sent as ttlSeconds 0, which means the
// broker's default_ttl: asking for 500ms gave a token of 15 minutes.
func TestTokenTTL(t *testing.T) {
	sock, sent := fakeBroker(t)
	if code, _ := runCmd(t, "token", "mint", "--socket", sock, "--cap", "key:x=sign", "--ttl", "90s", "--raw"); code != 0 {
		t.Fatalf("--ttl 90s: exit %d", code)
	}
	if b := sent(); len(b) != 1 || b[0]["ttlSeconds"] != float64(90) {
		t.Fatalf("--ttl 90s sent %v, want ttlSeconds 90", b)
	}
	for _, ttl := range []string{"500ms"} {
		for _, sub := range [][]string{{"token", "mint"}, {"token", "attenuate", "--token", "t"}} {
			args := append(sub, "--socket", sock, "--cap", "key:x=sign", "--ttl", ttl)
			if code, _ := runCmd(t, args...); code != 2 {
				t.Errorf("%s --ttl %s: exit %d, want 2", sub[1], ttl, code)
			}
		}
	}
	if b := sent(); len(b) != 1 {
		t.Errorf("requests sent for refused lifetimes: %v", b[1:])
	}
	// --uid is attenuate's: a minted token is bound to its caller, and
	// mint used to take --uid and drop it.
	if code, _ := runCmd(t, "token", "mint", "--socket", sock, "--cap", "key:x=sign", "--uid", "1000"); code != 2 {
		t.Errorf("mint --uid: exit %d, want 2", code)
	}
	if code, _ := runCmd(t, "token", "attenuate", "--socket", sock, "--token", "t", "--cap", "key:x=sign", "--uid", "1000"); code != 0 {
		t.Errorf("attenuate --uid: exit %d, want 0", code)
	}
	if b := sent(); len(b) != 2 || b[1]["uid"] != float64(1000) {
		t.Errorf("attenuate --uid 1000 sent %v", b[1:])
	}
}

// TestSASTTL: identity sas refuses a lifetime under a second rather than
// printing a token that has expired when it is made.
func TestSASTTL(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "config.toml")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf("[warden]\nsocket_dir = %q\n", filepath.Dir(silentBroker(t)))), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, ttl := range []string{"0s", "-1h", "500ms"} {
		if code, _ := runCmd(t, "identity", "sas", "-c", cfg, "--ttl", ttl, "-timeout", "300ms"); code != 2 {
			t.Errorf("--ttl %s: exit %d, want 2", ttl, code)
		}
	}
}

// TestPolicyEvalLocalID: policy eval -c gives the policy the principals as
// wardend does, localid included. Before, localid was left out, so a
// policy that reads it decided otherwise offline than in the daemon.
func TestPolicyEvalLocalID(t *testing.T) {
	dir := t.TempDir()
	pol := filepath.Join(dir, "policy")
	if err := os.Mkdir(pol, 0o700); err != nil {
		t.Fatal(err)
	}
	rego := `package warden.authz

import rego.v1

default allow := false

allow if {
	some p in data.warden.principals[sprintf("%d", [input.caller.uid])]
	p.localid.attributes == "server"
}

decision := {"allow": allow, "reasons": []}
`
	cfg := filepath.Join(dir, "config.toml")
	files := map[string]string{
		filepath.Join(pol, "authz.rego"): rego,
		cfg: fmt.Sprintf("[localid]\ndomain = \"example.com\"\n[warden.policy]\ndir = %q\n"+
			"[[principal]]\nuid = 1003\nname = \"hp2\"\nidtype = [\"local\"]\nlocalid = { type = \"x509\", attributes = \"server\" }\n", pol),
		filepath.Join(dir, "input.json"): `{"caller": {"uid": 1003}, "action": {"service": "identityd", "operation": "get"}}`,
	}
	for name, text := range files {
		if err := os.WriteFile(name, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	code, out := runCmd(t, "policy", "eval", "--input", filepath.Join(dir, "input.json"), "-c", cfg)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, out)
	}
	var d struct{ Allow bool }
	if err := json.Unmarshal([]byte(out), &d); err != nil || !d.Allow {
		t.Errorf("decision %s (%v), want allow: the principal's localid is server", out, err)
	}
}
