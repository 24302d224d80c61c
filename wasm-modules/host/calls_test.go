package host

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/warden-iot/warden/hsm"
	"github.com/warden-iot/warden/internal/syncbuf"
	"github.com/warden-iot/warden/policy"
	"github.com/warden-iot/warden/wasm-modules/guest"
)

// pki is a test CA with a server and a client certificate; the client's
// key lives in a file key store.
type pki struct {
	keys      *hsm.Keys
	certs     memCerts
	caPEM     string
	serverTLS *tls.Config
}

func newPKI(t *testing.T) *pki {
	t.Helper()
	ctx := context.Background()
	keys, err := hsm.Open(ctx, hsm.Config{HomeDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { keys.Close() })
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"}, IsCA: true,
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	caDER, _ := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	ca, _ := x509.ParseCertificate(caDER)
	pemOf := func(der []byte) string {
		return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
	}

	srvKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	srvDER, _ := x509.CreateCertificate(rand.Reader, &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "server"},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}, ca, &srvKey.PublicKey, caKey)

	if err := keys.CreateKeyPair(ctx, "client-key", []hsm.Algorithm{hsm.ECP256}); err != nil {
		t.Fatal(err)
	}
	clientPub, _ := keys.PublicKey(ctx, "client-key")
	cliDER, _ := x509.CreateCertificate(rand.Reader, &x509.Certificate{SerialNumber: big.NewInt(3), Subject: pkix.Name{CommonName: "device-1"},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)},
		ca, clientPub, caKey)

	pool := x509.NewCertPool()
	pool.AddCert(ca)
	return &pki{
		keys:  keys,
		certs: memCerts{"ca": []byte(pemOf(caDER)), "client-cert": []byte(pemOf(cliDER))},
		caPEM: pemOf(caDER),
		serverTLS: &tls.Config{
			Certificates: []tls.Certificate{{Certificate: [][]byte{srvDER, caDER}, PrivateKey: srvKey}},
			ClientAuth:   tls.VerifyClientCertIfGiven,
			ClientCAs:    pool,
		},
	}
}

// tlsServer answers with the client certificate's CN, or 401 without one.
func tlsServer(t *testing.T, p *pki) *httptest.Server {
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if len(r.TLS.PeerCertificates) == 0 {
			http.Error(w, "client certificate required", http.StatusUnauthorized)
			return
		}
		w.Header().Set("X-Echo", r.Header.Get("X-Probe"))
		w.Write([]byte(r.Method + " " + r.TLS.PeerCertificates[0].Subject.CommonName + " " + string(body)))
	}))
	srv.TLS = p.serverTLS
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv
}

func TestHTTPDoAndKeys(t *testing.T) {
	p := newPKI(t)
	srv := tlsServer(t, p)
	u, _ := url.Parse(srv.URL)
	f := newFixture(t, func(c *ModuleConfig) { c.Egress = []string{u.Host} }, func(o *Options) {
		o.Keys, o.Certs = p.keys, p.certs
	})
	f.dec.deny["keys.sign key:forbidden"] = true
	tlsOpts := &guest.TLSOptions{ClientCertID: "client-cert", ClientKeyID: "client-key", TrustCertIDs: []string{"ca"}}
	digest := sha256.Sum256([]byte("to be signed"))
	res, err := f.h.Run(context.Background(), "probe", steps(
		call(guest.OpHTTPDo, guest.HTTPRequest{Method: "POST", URL: srv.URL + "/est", Header: map[string][]string{"X-Probe": {"1"}}, Body: []byte("csr"), TLS: tlsOpts}),
		call(guest.OpHTTPDo, guest.HTTPRequest{URL: srv.URL, TLS: &guest.TLSOptions{TrustPEM: p.caPEM}}),
		call(guest.OpHTTPDo, guest.HTTPRequest{URL: srv.URL}),
		call(guest.OpHTTPDo, guest.HTTPRequest{URL: "https://example.org/", TLS: tlsOpts}),
		call(guest.OpHTTPDo, guest.HTTPRequest{URL: strings.Replace(srv.URL, "127.0.0.1", "localhost", 1)}),
		call(guest.OpKeysSign, guest.SignRequest{KeyID: "client-key", Digest: digest[:], Hash: "SHA-256"}),
		call(guest.OpKeysSign, guest.SignRequest{KeyID: "forbidden", Digest: digest[:], Hash: "SHA-256"}),
		call(guest.OpKeysCreateKeyPair, guest.CreateKeyPairRequest{KeyID: "new-key"}),
		call(guest.OpKeysPublic, guest.KeyRequest{KeyID: "missing"}),
		call(guest.OpHTTPDo, guest.HTTPRequest{URL: srv.URL, MaxResponseBytes: 3, TLS: tlsOpts}),
	))
	if err != nil {
		t.Fatal(err)
	}
	s := parseProbe(t, res).Steps
	var r0 guest.HTTPResponse
	json.Unmarshal(s[0].Resp, &r0)
	if s[0].Error != nil || r0.Status != 200 || string(r0.Body) != "POST device-1 csr" || r0.Header["X-Echo"][0] != "1" || len(r0.PeerCertificates) != 2 {
		t.Fatalf("mutual TLS: %+v %s", s[0].Error, s[0].Resp)
	}
	var r1 guest.HTTPResponse
	json.Unmarshal(s[1].Resp, &r1)
	if s[1].Error != nil || r1.Status != http.StatusUnauthorized {
		t.Fatalf("without a client certificate: %+v %s", s[1].Error, s[1].Resp)
	}
	if e := s[2].Error; e == nil || e.Code != guest.CodeUnavailable || !strings.Contains(e.Message, "certificate") {
		t.Fatalf("untrusted server: %+v", e)
	}
	for i := 3; i <= 4; i++ {
		if e := s[i].Error; e == nil || e.Code != guest.CodeDenied || !strings.Contains(e.Message, "egress allowlist") {
			t.Fatalf("step %d outside the allowlist: %+v", i, e)
		}
	}
	var sig guest.SignResponse
	json.Unmarshal(s[5].Resp, &sig)
	pub, _ := p.keys.PublicKey(context.Background(), "client-key")
	if !ecdsa.VerifyASN1(pub.(*ecdsa.PublicKey), digest[:], sig.Signature) {
		t.Fatalf("keys.sign: %+v %s", s[5].Error, s[5].Resp)
	}
	if e := s[6].Error; e == nil || e.Code != guest.CodeDenied || !strings.Contains(e.Message, "denied by policy") {
		t.Fatalf("denied keys.sign: %+v", e)
	}
	var pk guest.PublicKeyResponse
	json.Unmarshal(s[7].Resp, &pk)
	if _, err := x509.ParsePKIXPublicKey(pk.PublicKey); err != nil {
		t.Fatalf("keys.create_keypair: %+v %s", s[7].Error, s[7].Resp)
	}
	if e := s[8].Error; e == nil || e.Code != guest.CodeNotFound {
		t.Fatalf("keys.public of a missing key: %+v", e)
	}
	if e := s[9].Error; e == nil || !strings.Contains(e.Message, "larger than 3 bytes") {
		t.Fatalf("response cap: %+v", e)
	}
	// The egress allowlist is checked before the policy is asked.
	for _, op := range f.dec.ops() {
		if strings.Contains(op, "example.org") || strings.Contains(op, "localhost") {
			t.Fatalf("policy asked about %s", op)
		}
	}
	if got := strings.Join(f.dec.ops(), ","); !strings.Contains(got, "http.do url:"+u.Host+",certs.get cert:ca,certs.get cert:client-cert,keys.sign key:client-key") {
		t.Fatalf("decisions %s", got)
	}
}

// TestPolicyDeniesHostCall runs the real policy engine: the default policy
// plus a data.json that restricts the probe, with a decision log.
func TestPolicyDeniesHostCall(t *testing.T) {
	dir := t.TempDir()
	fs.WalkDir(policy.DefaultPolicy(), ".", func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			b, _ := fs.ReadFile(policy.DefaultPolicy(), p)
			os.WriteFile(filepath.Join(dir, p), b, 0o600)
		}
		return err
	})
	data := `{"warden": {"modules": {"probe": {"host_calls": {"certs.get": ["cert:allowed-*"], "log": ["*"]}}}}}`
	os.WriteFile(filepath.Join(dir, "data.json"), []byte(data), 0o600)
	logBuf := &syncbuf.Buffer{}
	dlog := policy.NewDecisionLog(logBuf, policy.DecisionLogOptions{})
	eng, err := policy.New(context.Background(), policy.Options{Dir: dir, DecisionLog: dlog})
	if err != nil {
		t.Fatal(err)
	}
	f := newFixture(t, nil, func(o *Options) {
		o.Decider = eng
		o.Caller = policy.Caller{UID: 0, PID: int32(os.Getpid()), Exe: "wardend"}
		o.Certs = memCerts{"allowed-1": []byte("PEM1"), "secret": []byte("SECRET")}
	})
	res, err := f.h.Run(context.Background(), "probe", steps(
		call(guest.OpCertsGet, guest.CertRequest{CertID: "allowed-1"}),
		call(guest.OpCertsGet, guest.CertRequest{CertID: "secret"}),
		call(guest.OpCertsPut, guest.CertPutRequest{CertID: "allowed-2", PEM: "x"}),
	))
	if err != nil {
		t.Fatal(err)
	}
	s := parseProbe(t, res).Steps
	if s[0].Error != nil {
		t.Fatalf("allowed call: %v", s[0].Error)
	}
	for i := 1; i <= 2; i++ {
		if e := s[i].Error; e == nil || e.Code != guest.CodeDenied || !strings.Contains(e.Message, "not in data.warden.modules.probe.host_calls") {
			t.Fatalf("step %d: %+v", i, e)
		}
		if strings.Contains(s[i].Error.Message, "SECRET") {
			t.Fatal("a denied call leaked the certificate")
		}
	}
	dlog.Close()
	var denied, allowed int
	for _, line := range strings.Split(strings.TrimSpace(logBuf.String()), "\n") {
		var e policy.DecisionEntry
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("decision log line %q: %v", line, err)
		}
		if e.Module == nil || e.Module.Name != "probe" || e.Module.Digest != "sha256:"+f.cfg.SHA256 || e.Action.Service != "modules" {
			t.Fatalf("decision log entry without the module: %s", line)
		}
		switch e.Result {
		case "deny":
			denied++
		case "allow":
			allowed++
		}
	}
	if denied != 2 || allowed != 1 {
		t.Fatalf("decision log: %d denied, %d allowed:\n%s", denied, allowed, logBuf)
	}
	if !strings.Contains(f.logs.String(), "host call denied by policy") {
		t.Fatal("the denial is not in the broker log")
	}
}

func TestNoDeciderDenies(t *testing.T) {
	f := newFixture(t, nil, func(o *Options) { o.Decider = nil })
	res, err := f.h.Run(context.Background(), "probe", steps(call(guest.OpCertsGet, guest.CertRequest{CertID: "x"}), call(guest.OpLog, guest.LogRequest{Msg: "ok"})))
	if err != nil {
		t.Fatal(err)
	}
	s := parseProbe(t, res).Steps
	if e := s[0].Error; e == nil || e.Code != guest.CodeDenied || s[1].Error != nil {
		t.Fatalf("steps %+v", s)
	}
}

// fakeTPM answers the TPM host calls.
type fakeTPM struct{ imported []byte }

func (f *fakeTPM) Keys(context.Context) ([]byte, []byte, error) {
	return []byte("ek"), []byte("srk"), nil
}
func (f *fakeTPM) ImportAuthKey(_ context.Context, b []byte) error {
	f.imported = b
	return nil
}
func (f *fakeTPM) SignWithAuthKey(_ context.Context, d []byte) ([]byte, error) {
	if f.imported == nil {
		return nil, ErrNotFound
	}
	return append([]byte("hmac:"), d...), nil
}

func TestTPMCalls(t *testing.T) {
	tpm := &fakeTPM{}
	f := newFixture(t, nil, func(o *Options) { o.TPM = tpm })
	res, err := f.h.Run(context.Background(), "probe", steps(
		call(guest.OpTPMKeys, guest.Empty{}),
		call(guest.OpTPMSign, guest.TPMSignRequest{Data: []byte("d")}),
		call(guest.OpTPMImportAuthKey, guest.TPMImportRequest{Key: []byte("blob")}),
		call(guest.OpTPMSign, guest.TPMSignRequest{Data: []byte("d")}),
	))
	if err != nil {
		t.Fatal(err)
	}
	s := parseProbe(t, res).Steps
	var keys guest.TPMKeysResponse
	json.Unmarshal(s[0].Resp, &keys)
	var sig guest.TPMSignResponse
	json.Unmarshal(s[3].Resp, &sig)
	if string(keys.EndorsementKey) != "ek" || s[1].Error == nil || s[1].Error.Code != guest.CodeNotFound ||
		string(tpm.imported) != "blob" || string(sig.Digest) != "hmac:d" {
		t.Fatalf("steps %+v", s)
	}
	if got := strings.Join(f.dec.ops(), ","); got != "tpm.keys tpm:keys,tpm.sign tpm:authkey,tpm.import_auth_key tpm:authkey,tpm.sign tpm:authkey" {
		t.Fatalf("decisions %s", got)
	}
}

// TestRunNative runs a handler compiled into the test against the same
// host calls as the module, with the same policy decisions and limits.
func TestRunNative(t *testing.T) {
	p := newPKI(t)
	f := newFixture(t, func(c *ModuleConfig) { c.Limits.MaxHostCalls = 5 }, func(o *Options) { o.Keys, o.Certs = p.keys, p.certs })
	handler := func(ctx context.Context, job json.RawMessage) (any, error) {
		s, err := guest.Signer(ctx, "client-key")
		if err != nil {
			return nil, err
		}
		d := sha256.Sum256(job)
		sig, err := s.Sign(rand.Reader, d[:], crypto.SHA256)
		if err != nil {
			return nil, err
		}
		_, err = guest.GetCert(ctx, "ca")
		return map[string]any{"ok": ecdsa.VerifyASN1(s.Public().(*ecdsa.PublicKey), d[:], sig)}, err
	}
	res, err := f.h.RunNative(context.Background(), "probe", handler, []byte(`{"a":1}`))
	if err != nil || string(res.Output) != `{"ok":true}` || res.HostCalls != 3 {
		t.Fatalf("RunNative = %+v, %v", res, err)
	}
	if got := strings.Join(f.dec.ops(), ","); got != "keys.public key:client-key,keys.sign key:client-key,certs.get cert:ca" {
		t.Fatalf("decisions %s", got)
	}
	flood := func(ctx context.Context, _ json.RawMessage) (any, error) {
		for {
			if _, err := guest.GetCert(ctx, "ca"); err != nil {
				return nil, nil // a handler that swallows the limit error
			}
		}
	}
	if _, err := f.h.RunNative(context.Background(), "probe", flood, nil); !isKind(err, ErrHostCallLimit) {
		t.Fatalf("flood: %v", err)
	}
	f.cfg.Limits.Timeout = 100 * time.Millisecond
	f.h.Load(context.Background(), []ModuleConfig{f.cfg})
	stuck := func(ctx context.Context, _ json.RawMessage) (any, error) {
		<-ctx.Done()
		time.Sleep(50 * time.Millisecond)
		return "late", nil
	}
	if _, err := f.h.RunNative(context.Background(), "probe", stuck, nil); !isKind(err, ErrDeadline) {
		t.Fatalf("stuck: %v", err)
	}
	if st, _ := f.h.Module("probe"); !st.LastJob.Native || st.LastJob.Kind != "deadline" {
		t.Fatalf("last job %+v", st.LastJob)
	}
}

func isKind(err, kind error) bool { return err != nil && Kind(err) == Kind(kind) }

// hangingCerts ignores its context and never answers.
type hangingCerts struct{ release chan struct{} }

func (h hangingCerts) Get(context.Context, string) ([]byte, error) {
	<-h.release
	return nil, ErrNotFound
}
func (h hangingCerts) Put(context.Context, string, []byte) error { <-h.release; return nil }

// TestHangingBackend: a store that ignores the context cannot hold a job
// past its deadline.
func TestHangingBackend(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	f := newFixture(t, func(c *ModuleConfig) { c.Limits.Timeout = 300 * time.Millisecond }, func(o *Options) {
		o.Certs = hangingCerts{release}
	})
	start := time.Now()
	_, err := f.h.Run(context.Background(), "probe", steps(call(guest.OpCertsGet, guest.CertRequest{CertID: "x"}), map[string]any{"op": "loop"}))
	if d := time.Since(start); !errors.Is(err, ErrDeadline) || d > 2*time.Second {
		t.Fatalf("err = %v after %v", err, d)
	}
}

// TestKeysHMAC computes HMAC-SHA256 with a symmetric key in the key store:
// the module gets the MAC, never the key; a denied or missing key fails.
func TestKeysHMAC(t *testing.T) {
	ctx := context.Background()
	keys, err := hsm.Open(ctx, hsm.Config{HomeDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { keys.Close() })
	secret := []byte("0123456789abcdef0123456789abcdef")
	if err := keys.ImportKey(ctx, "device-id", secret, hsm.UsageSign); err != nil {
		t.Fatal(err)
	}
	f := newFixture(t, nil, func(o *Options) { o.Keys = keys })
	f.dec.deny["keys.hmac key:forbidden"] = true
	res, err := f.h.Run(ctx, "probe", steps(
		call(guest.OpKeysHMAC, guest.HMACRequest{KeyID: "device-id", Message: []byte("sr\n123")}),
		call(guest.OpKeysHMAC, guest.HMACRequest{KeyID: "forbidden", Message: []byte("m")}),
		call(guest.OpKeysHMAC, guest.HMACRequest{KeyID: "missing", Message: []byte("m")}),
		call(guest.OpKeysHMAC, guest.HMACRequest{Message: []byte("m")}),
	))
	if err != nil {
		t.Fatal(err)
	}
	s := parseProbe(t, res).Steps
	var mac guest.HMACResponse
	json.Unmarshal(s[0].Resp, &mac)
	want := hsm.DerivedHMACSHA256(secret, []byte("sr\n123"))
	if s[0].Error != nil || string(mac.Signature) != string(want) {
		t.Fatalf("keys.hmac: %+v %s", s[0].Error, s[0].Resp)
	}
	if e := s[1].Error; e == nil || e.Code != guest.CodeDenied || !strings.Contains(e.Message, "denied by policy") {
		t.Fatalf("denied keys.hmac: %+v", e)
	}
	if e := s[2].Error; e == nil || e.Code != guest.CodeNotFound {
		t.Fatalf("keys.hmac of a missing key: %+v", e)
	}
	if e := s[3].Error; e == nil || e.Code != guest.CodeInvalid {
		t.Fatalf("keys.hmac without key_id: %+v", e)
	}
	if got := strings.Join(f.dec.ops(), ","); got != "keys.hmac key:device-id,keys.hmac key:forbidden,keys.hmac key:missing" {
		t.Fatalf("decisions %s", got)
	}
}

// TestKeysHMACWithoutKeyStore: without a key store keys.hmac is unavailable.
func TestKeysHMACWithoutKeyStore(t *testing.T) {
	f := newFixture(t, nil, nil)
	res, err := f.h.Run(context.Background(), "probe", steps(call(guest.OpKeysHMAC, guest.HMACRequest{KeyID: "device-id", Message: []byte("m")})))
	if err != nil {
		t.Fatal(err)
	}
	if e := parseProbe(t, res).Steps[0].Error; e == nil || e.Code != guest.CodeUnavailable {
		t.Fatalf("keys.hmac without a key store: %+v", e)
	}
}

// TestBoundedRecovers: a store operation that panics fails its call, with
// the panic logged, instead of ending the process (bounded's goroutine is
// beyond any other recover).
func TestBoundedRecovers(t *testing.T) {
	var logged strings.Builder
	log := slog.New(slog.NewTextHandler(&logged, nil))
	_, err := bounded(context.Background(), log, func() ([]byte, error) {
		var m map[string]int
		m["x"] = 1 // a nil map write: a runtime panic
		return nil, nil
	})
	if !errors.Is(err, errPanic) {
		t.Fatalf("err = %v, want errPanic", err)
	}
	if ge := mapErr("keys.sign", err); ge.Code != guest.CodeFailed || strings.Contains(ge.Message, "nil map") {
		t.Fatalf("module sees %+v: want %s without the panic's text", ge, guest.CodeFailed)
	}
	if !strings.Contains(logged.String(), "panicked") || !strings.Contains(logged.String(), "nil map") {
		t.Fatalf("log = %q, want the panic", logged.String())
	}
}

// TestHostLogsWithinBudget: the host's lines about a job's refused host
// calls count against the job's log budget, and its line about a failed
// job carries at most a line's worth of the module's error. A module
// chooses the resource it is refused (up to its memory) and how often (up
// to its host-call limit), and the text of its error (up to its output
// limit): that was up to a gigabyte of log per job, past a 64 KiB budget.
func TestHostLogsWithinBudget(t *testing.T) {
	long := strings.Repeat("x", 16<<10)
	f := newFixture(t, func(c *ModuleConfig) {
		c.Limits.MaxLogBytes = 2000
		c.Egress = []string{"allowed.example"}
	}, nil)
	f.dec.deny["certs.get cert:"+long] = true
	handler := func(ctx context.Context, _ json.RawMessage) (any, error) {
		for range 50 {
			if _, err := guest.HTTPDo(ctx, &guest.HTTPRequest{URL: "https://" + long + ".example/"}); err == nil {
				return nil, errors.New("http.do outside the egress allowlist succeeded")
			}
			if _, err := guest.GetCert(ctx, long); err == nil {
				return nil, errors.New("a denied certs.get succeeded")
			}
		}
		return nil, guest.Errorf(guest.CodeFailed, "%s", strings.Repeat("e", 64<<10))
	}
	if _, err := f.h.RunNative(context.Background(), "probe", handler, nil); !isKind(err, ErrModuleError) {
		t.Fatalf("RunNative: %.200v", err)
	}
	logs := f.logs.String()
	if len(logs) > 16<<10 || strings.Count(logs, "module log truncated") != 1 || !strings.Contains(logs, "module job failed") {
		t.Fatalf("%d KiB of log for a job with a %d-byte budget:\n%.1000s", len(logs)>>10, 2000, logs)
	}
}

// TestJobKeepsFewTransports: a job keeps a transport per TLS identity it
// uses, up to maxTransports; a module that varies its TLS options on every
// call gets a transport for the call alone. It had one kept for each call,
// each with its trust_pem, until the job ended.
func TestJobKeepsFewTransports(t *testing.T) {
	p := newPKI(t)
	srv := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	t.Cleanup(srv.Close)
	u, _ := url.Parse(srv.URL)
	f := newFixture(t, func(c *ModuleConfig) { c.Egress = []string{u.Host} }, nil)
	pad := strings.Repeat("#", 256<<10) // text around PEM blocks is skipped
	heap := func() int64 {
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return int64(m.HeapAlloc)
	}
	const n = 40
	var grown int64
	handler := func(ctx context.Context, _ json.RawMessage) (any, error) {
		before := heap()
		for i := range n {
			tlsOpts := &guest.TLSOptions{TrustPEM: p.caPEM + pad, ServerName: fmt.Sprint("name-", i)}
			if resp, err := guest.HTTPDo(ctx, &guest.HTTPRequest{URL: srv.URL, TLS: tlsOpts}); err != nil || resp.Status != http.StatusOK {
				return nil, fmt.Errorf("call %d: %v, %v", i, resp, err)
			}
		}
		grown = heap() - before
		return "ok", nil
	}
	if _, err := f.h.RunNative(context.Background(), "probe", handler, nil); err != nil {
		t.Fatal(err)
	}
	if grown > int64(n*len(pad)/2) {
		t.Fatalf("a job holds %d KiB after %d calls with %d KiB of trust_pem each", grown>>10, n, len(pad)>>10)
	}
}

// TestReservedKeys: no host call may use a reserved key (the broker's token
// key), whatever the policy says: not to sign, MAC, read, create over, or
// sign a TLS handshake with.
func TestReservedKeys(t *testing.T) {
	p := newPKI(t)
	srv := tlsServer(t, p)
	u, _ := url.Parse(srv.URL)
	f := newFixture(t, func(c *ModuleConfig) { c.Egress = []string{u.Host} }, func(o *Options) {
		o.Keys, o.Certs = p.keys, p.certs
		o.ReservedKeys = []string{"client-key"}
	})
	digest := sha256.Sum256([]byte("to be signed"))
	res, err := f.h.Run(context.Background(), "probe", steps(
		call(guest.OpKeysSign, guest.SignRequest{KeyID: "client-key", Digest: digest[:], Hash: "SHA-256"}),
		call(guest.OpKeysHMAC, guest.HMACRequest{KeyID: "client-key", Message: []byte("m")}),
		call(guest.OpKeysPublic, guest.KeyRequest{KeyID: "client-key"}),
		call(guest.OpKeysCreateKeyPair, guest.CreateKeyPairRequest{KeyID: "client-key"}),
		call(guest.OpHTTPDo, guest.HTTPRequest{URL: srv.URL, TLS: &guest.TLSOptions{ClientCertID: "client-cert", ClientKeyID: "client-key", TrustCertIDs: []string{"ca"}}}),
		call(guest.OpKeysPublic, guest.KeyRequest{KeyID: "client-key-2"}),
	))
	if err != nil {
		t.Fatal(err)
	}
	s := parseProbe(t, res).Steps
	for i := range 5 {
		if e := s[i].Error; e == nil || e.Code != guest.CodeDenied || !strings.Contains(e.Message, "reserved for the broker") {
			t.Fatalf("step %d on the reserved key: %+v %s", i, e, s[i].Resp)
		}
	}
	if e := s[5].Error; e == nil || e.Code != guest.CodeNotFound {
		t.Fatalf("a key whose ID only starts with the reserved one: %+v", e)
	}
	for _, op := range f.dec.ops() {
		if strings.HasSuffix(op, " key:client-key") {
			t.Fatalf("the policy was asked about the reserved key (%s): it is refused before", op)
		}
	}
}

// TestEgressPolicySeesCanonicalHost: the policy narrows the egress
// allowlist by url:<host:port>, so the host it sees must be the one
// net/http dials. A trailing dot, or a non-ASCII form that IDNA maps to
// the same name, passed the allowlist (which trims the dot) but reached
// the policy as another resource than the deny rule's, and the request
// went out.
func TestEgressPolicySeesCanonicalHost(t *testing.T) {
	f := newFixture(t, func(c *ModuleConfig) {
		c.Egress = []string{"*.example.org:443"}
		c.Limits.Timeout = 5 * time.Second
	}, nil)
	f.dec.deny["http.do url:internal.example.org:443"] = true
	urls := []string{
		"https://internal.example.org/",
		"https://internal.example.org./",
		"https://INTERNAL.example.org:443/",
		"https://\uff49nternal.example.org/", // fullwidth i: IDNA maps it to i
	}
	var ss []map[string]any
	for _, u := range urls {
		ss = append(ss, call(guest.OpHTTPDo, guest.HTTPRequest{URL: u}))
	}
	res, err := f.h.Run(context.Background(), "probe", steps(ss...))
	if err != nil {
		t.Fatal(err)
	}
	for i, s := range parseProbe(t, res).Steps {
		if s.Error == nil || s.Error.Code != guest.CodeDenied {
			t.Errorf("%s: %+v, want denied by the policy", urls[i], s.Error)
		}
	}
	for _, op := range f.dec.ops() {
		if op != "http.do url:internal.example.org:443" {
			t.Errorf("the policy was asked about %q", op)
		}
	}
}
