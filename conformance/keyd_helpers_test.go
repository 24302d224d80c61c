package conformance

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// keydVersion is the api-version the keyd cases use unless they say otherwise.
const keydVersion = "2021-05-01"

// keydBackend is one key store the keyd suite runs against.
type keydBackend struct {
	name string
	// setup returns the extra config and wardend environment for a test.
	setup func(t *testing.T) (config string, env []string, hsm *softHSM)
}

var keydBackends = []keydBackend{
	{"file", func(*testing.T) (string, []string, *softHSM) { return "", nil, nil }},
	{"softhsm", func(t *testing.T) (string, []string, *softHSM) {
		s := newSoftHSM(t)
		return s.config(), s.env(), s
	}},
}

// forEachBackend runs f as a subtest per key store.
func forEachBackend(t *testing.T, f func(t *testing.T, b keydBackend)) {
	for _, b := range keydBackends {
		t.Run(b.name, func(t *testing.T) { f(t, b) })
	}
}

// secret is private key material the suite put into Warden; no keyd
// response may carry it in any encoding.
type secret struct {
	name string
	raw  []byte
}

// keydConn talks to a daemon's keyd.sock, records every response body and,
// when the test ends, checks that none carries a registered secret.
type keydConn struct {
	t   *testing.T
	d   *daemon
	hsm *softHSM

	mu      sync.Mutex
	secrets []secret
	bodies  []string
}

// startKeyd starts wardend on backend b with extra config (after the
// backend's) and returns a recording keyd connection.
func startKeyd(t *testing.T, b keydBackend, extra string) *keydConn {
	t.Helper()
	cfg, env, h := b.setup(t)
	k := &keydConn{t: t, hsm: h}
	k.d = startDaemonEnv(t, cfg+extra, env)
	t.Cleanup(k.scan)
	return k
}

// request builds a keyd request; body is JSON-encoded unless it is a string.
func (k *keydConn) request(method, path string, body any, header map[string]string) request {
	target := path
	if !strings.Contains(path, "api-version=") {
		sep := "?"
		if strings.Contains(path, "?") {
			sep = "&"
		}
		target += sep + "api-version=" + keydVersion
	}
	r := request{Socket: k.d.socket("keyd"), Method: method, Target: target, Header: map[string]string{}}
	for h, v := range header {
		r.Header[h] = v
	}
	if body != nil {
		r.Header["Content-Type"] = "application/json"
		if s, ok := body.(string); ok {
			r.Body = s
		} else {
			b, err := json.Marshal(body)
			if err != nil {
				k.t.Fatal(err)
			}
			r.Body = string(b)
		}
	}
	return r
}

func (k *keydConn) record(r response) response {
	k.mu.Lock()
	k.bodies = append(k.bodies, string(r.Body))
	k.mu.Unlock()
	return r
}

// call sends a request as root.
func (k *keydConn) call(method, path string, body any) response {
	k.t.Helper()
	return k.record(do(k.t, k.request(method, path, body, nil)))
}

// callAs sends a request from a process running as uid, with header.
func (k *keydConn) callAs(uid uint32, method, path string, body any, header map[string]string) response {
	k.t.Helper()
	return k.record(doAs(k.t, uid, k.request(method, path, body, header)))
}

// handle returns the keyHandle of a 200.
func (k *keydConn) handle(r response) string {
	k.t.Helper()
	var v struct {
		KeyHandle string `json:"keyHandle"`
	}
	if r.Status != 200 || json.Unmarshal(r.Body, &v) != nil || v.KeyHandle == "" {
		k.t.Fatalf("want 200 {keyHandle}, got %d %s", r.Status, r.Body)
	}
	return v.KeyHandle
}

// bytesField decodes the base64 member name of a 200 body.
func (k *keydConn) bytesField(r response, name string) []byte {
	k.t.Helper()
	var v map[string]string
	if r.Status != 200 || json.Unmarshal(r.Body, &v) != nil {
		k.t.Fatalf("want 200 with %q, got %d %s", name, r.Status, r.Body)
	}
	b, err := base64.StdEncoding.DecodeString(v[name])
	if err != nil {
		k.t.Fatalf("%s is not base64: %s", name, r.Body)
	}
	return b
}

// addSecret registers private key material that must never come back.
func (k *keydConn) addSecret(name string, raw []byte) {
	k.mu.Lock()
	k.secrets = append(k.secrets, secret{name, bytes.Clone(raw)})
	k.mu.Unlock()
}

// addKeySecrets registers a private key: its scalar or primes and exponent,
// and its PKCS#8 DER.
func (k *keydConn) addKeySecrets(name string, priv crypto.Signer) {
	switch p := priv.(type) {
	case *ecdsa.PrivateKey:
		d, err := p.Bytes()
		if err != nil {
			k.t.Fatal(err)
		}
		k.addSecret(name+" scalar", d)
	case *rsa.PrivateKey:
		k.addSecret(name+" d", p.D.Bytes())
		for i, prime := range p.Primes {
			k.addSecret(fmt.Sprintf("%s prime %d", name, i), prime.Bytes())
		}
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		k.t.Fatal(err)
	}
	k.addSecret(name+" PKCS#8", der)
}

// secretForms are the ways raw could appear in a body: as it is, in hex,
// and in base64 (standard and URL alphabets) at each of the three byte
// alignments it could have inside a longer base64 string.
func secretForms(raw []byte) []string {
	forms := []string{string(raw), hex.EncodeToString(raw), strings.ToUpper(hex.EncodeToString(raw))}
	for o := range 3 {
		enc := base64.StdEncoding.EncodeToString(append(make([]byte, o), raw...))
		// Skip the quantum that mixes in the unknown bytes before raw, and
		// the last one, which mixes in those after it.
		from, to := 4*((o+2)/3), 4*((o+len(raw))/3)
		if to-from < 16 {
			continue
		}
		part := enc[from:to]
		forms = append(forms, part, strings.NewReplacer("+", "-", "/", "_").Replace(part))
	}
	return forms
}

// scan fails the test if a recorded body carries a registered secret.
func (k *keydConn) scan() {
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, s := range k.secrets {
		for _, f := range secretForms(s.raw) {
			for _, b := range k.bodies {
				if strings.Contains(b, f) {
					k.t.Errorf("a keyd response carries %s: %s", s.name, b)
				}
			}
		}
	}
	k.t.Logf("checked %d keyd responses for %d private key secrets", len(k.bodies), len(k.secrets))
}

// preloadedKeys writes an EC P-256 and an RSA-2048 private key as PEM files
// and returns the [preloaded_keys] table naming them pre-ec and pre-rsa.
func preloadedKeys(t *testing.T) (config string, ec *ecdsa.PrivateKey, rs *rsa.PrivateKey) {
	t.Helper()
	dir := newDir(t)
	ec, _ = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	rs, _ = rsa.GenerateKey(rand.Reader, 2048)
	var b strings.Builder
	b.WriteString("\n[preloaded_keys]\n")
	for id, k := range map[string]crypto.Signer{"pre-ec": ec, "pre-rsa": rs} {
		der, err := x509.MarshalPKCS8PrivateKey(k)
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(dir, id+".pem")
		if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&b, "%s = \"file://%s\"\n", id, path)
	}
	return b.String(), ec, rs
}

// recordingSocket returns the path of a Unix socket that forwards HTTP to
// keyd.sock and records every response body for the secret scan, so that
// client/keyd's traffic is scanned too. The proxy connects as this
// process's uid, as its clients do.
func (k *keydConn) recordingSocket() string {
	k.t.Helper()
	path := filepath.Join(newDir(k.t), "keyd-proxy.sock")
	l, err := net.Listen("unix", path)
	if err != nil {
		k.t.Fatal(err)
	}
	target := k.d.socket("keyd")
	proxy := &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) { r.Out.URL.Scheme, r.Out.URL.Host = "http", "keyd.sock" },
		Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", target)
		}},
		ModifyResponse: func(resp *http.Response) error {
			b, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil {
				return err
			}
			k.record(response{Body: b})
			resp.Body = io.NopCloser(bytes.NewReader(b))
			return nil
		},
	}
	srv := &http.Server{Handler: proxy}
	go srv.Serve(l)
	k.t.Cleanup(func() { srv.Close() })
	return path
}
