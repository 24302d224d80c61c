package host

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/warden-iot/warden/hsm"
	"github.com/warden-iot/warden/policy"
	"github.com/warden-iot/warden/wasm-modules/guest"
	"golang.org/x/net/http/httpguts"
)

// fuzzOps are the operations FuzzHostCall picks from by index: every host
// call, then names the host must refuse. An index keeps the fuzzer's
// mutations on the request instead of on op names it would mostly break.
var fuzzOps = append(slices.Clone(guest.Ops), "no.such.op", "", "HTTP.DO")

// hostCodes are the codes the host may give a host-call error.
var hostCodes = map[string]bool{
	guest.CodeDenied: true, guest.CodeInvalid: true, guest.CodeNotFound: true,
	guest.CodeUnavailable: true, guest.CodeDeadline: true, guest.CodeFailed: true,
}

// fuzzLimits keep one call short: a sleep is at most 20 ms and a response
// body at most 1 KiB (the TLS server's /big is longer).
var fuzzLimits = Limits{Timeout: time.Minute, MaxSleep: 20 * time.Millisecond, MaxHTTPBodyBytes: 1 << 10, MaxLogBytes: 4 << 10}

// FuzzHostCall sends an arbitrary request to each host call, as a module's
// warden.call would, through the host's dispatch in-process (no WASM
// guest). It asserts: no panic (also in the goroutines of bounded store
// calls, which would kill the broker); a success is JSON; a failure is a
// *guest.Error with one of the host's codes and a message, that the guest
// decodes back unchanged; an unknown op and an over-long sleep are
// CodeInvalid; no call outlives its context by much. Only two loopback
// test servers are in the egress allowlist, so nothing leaves the machine;
// requests name them PLAIN and SECURE, replaced here, so that saved inputs
// replay against this run's ports.
func FuzzHostCall(f *testing.F) {
	r := newFuzzRig(f)
	for _, s := range hostCallSeeds {
		f.Add(uint8(slices.Index(fuzzOps, s.op)), []byte(s.req))
	}
	f.Fuzz(func(t *testing.T, opIndex uint8, req []byte) {
		op := fuzzOps[int(opIndex)%len(fuzzOps)]
		start := time.Now()
		resp, gerr := r.call(op, req)
		if d := time.Since(start); d > 10*time.Second {
			t.Fatalf("%s %q took %v", op, req, d)
		}
		checkHostCall(t, op, req, resp, gerr)
	})
}

var hostCallSeeds = []struct{ op, req string }{
	{guest.OpHTTPDo, `{"method":"POST","url":"http://PLAIN/x","header":{"X-A":["1"]},"body":"Ym9keQ=="}`},
	{guest.OpHTTPDo, `{"url":"https://SECURE/","tls":{"trust_cert_ids":["ca"],"client_cert_id":"client-cert","client_key_id":"ec"}}`},
	{guest.OpHTTPDo, `{"url":"https://SECURE/big","tls":{"insecure_skip_verify":true,"server_name":"x"},"max_response_bytes":10}`},
	{guest.OpHTTPDo, `{"url":"http://PLAIN/redirect","tls":{"trust_pem":"-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n","system_roots":true}}`},
	{guest.OpHTTPDo, `{"method":"GET /","url":"https://example.org:8443/"}`},
	{guest.OpHTTPDo, `{"url":"http://PLAIN/x","header":{"X A":["1"],"X-B":["a\r\nb"]}}`},
	{guest.OpHTTPDo, `{"url":"ftp://PLAIN/","tls":{"client_cert_id":"ca"}}`},
	{guest.OpKeysSign, `{"key_id":"ec","digest":"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=","hash":"SHA-256"}`},
	{guest.OpKeysSign, `{"key_id":"rsa","digest":"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=","hash":"SHA-256","pss":true,"salt_length":-1}`},
	{guest.OpKeysSign, `{"key_id":"rsa","digest":"AA==","pss":true}`},
	// A salt length near MaxInt wrapped rsapad's fit check and sized the
	// salt: a panic in bounded's goroutine, which ended the broker.
	{guest.OpKeysSign, `{"key_id":"rsa","digest":"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=","hash":"SHA-256","pss":true,"salt_length":9223372036854775807}`},
	{guest.OpKeysSign, `{"key_id":"forbidden","digest":"AA==","hash":"MD5"}`},
	{guest.OpKeysCreateKeyPair, `{"key_id":"new","algorithms":["rsa-4096","ec-p256"]}`},
	{guest.OpKeysCreateKeyPair, `{"key_id":"rsa","algorithms":["dsa"]}`},
	{guest.OpKeysPublic, `{"key_id":"sym"}`},
	{guest.OpKeysHMAC, `{"key_id":"sym","message":"bWVzc2FnZQ=="}`},
	{guest.OpKeysHMAC, `{"key_id":"ec","message":null}`},
	{guest.OpCertsGet, `{"cert_id":"ca"}`},
	{guest.OpCertsPut, `{"cert_id":"readonly-x","pem":"x"}`},
	{guest.OpTPMKeys, `{}`},
	{guest.OpTPMImportAuthKey, `{"key":"YmxvYg=="}`},
	{guest.OpTPMSign, `{"data":"ZA=="}`},
	{guest.OpClockSleep, `{"ms":1}`},
	{guest.OpClockSleep, `{"ms":600000}`},
	{guest.OpClockSleep, `{"ms":9223372036854}`}, // the longest sleep a time.Duration holds
	{guest.OpLog, `{"level":"warn","msg":"m","attrs":{"a":[1,{"b":null}],"c":"d"}}`},
	{"no.such.op", `{}`},
	{guest.OpLog, `[`},
	{guest.OpKeysSign, ``},
}

// checkHostCall asserts what FuzzHostCall promises of one call's outcome.
func checkHostCall(t *testing.T, op string, req, resp []byte, gerr *guest.Error) {
	t.Helper()
	if gerr == nil {
		if !json.Valid(resp) {
			t.Fatalf("%s %q: response %q is not JSON", op, req, resp)
		}
		if !slices.Contains(guest.Ops, op) {
			t.Fatalf("unknown op %q %q succeeded", op, req)
		}
	} else {
		if !hostCodes[gerr.Code] || gerr.Message == "" {
			t.Fatalf("%s %q: error %#v has no host code or no message", op, req, gerr)
		}
		// What wasmCall writes for the guest must read back as the same error.
		var back guest.Error
		b, err := json.Marshal(gerr)
		if err != nil || json.Unmarshal(b, &back) != nil || back != *gerr {
			t.Fatalf("%s %q: error %#v does not survive the wire: %s, %v", op, req, gerr, b, err)
		}
	}
	if !slices.Contains(guest.Ops, op) && (gerr == nil || gerr.Code != guest.CodeInvalid) {
		t.Fatalf("unknown op %q: %v, want %s", op, gerr, guest.CodeInvalid)
	}
	var h guest.HTTPRequest
	if op == guest.OpHTTPDo && json.Unmarshal(req, &h) == nil && badHeader(h.Header) && (gerr == nil || gerr.Code == guest.CodeUnavailable) {
		t.Fatalf("http.do with an invalid header %q: %v, want it refused before the request", req, gerr)
	}
	var s guest.SleepRequest
	if op == guest.OpClockSleep && json.Unmarshal(req, &s) == nil && s.Milliseconds > fuzzLimits.MaxSleep.Milliseconds() &&
		(gerr == nil || gerr.Code != guest.CodeInvalid) {
		t.Fatalf("clock.sleep of %d ms (max %v): %v, want %s", s.Milliseconds, fuzzLimits.MaxSleep, gerr, guest.CodeInvalid)
	}
}

// badHeader reports whether a header has a name or value HTTP/1.1 cannot
// carry.
func badHeader(h map[string][]string) bool {
	for k, vs := range h {
		if !httpguts.ValidHeaderFieldName(k) {
			return true
		}
		for _, v := range vs {
			if !httpguts.ValidHeaderFieldValue(v) {
				return true
			}
		}
	}
	return false
}

// fuzzRig is a host whose stores FuzzHostCall resets before each call.
type fuzzRig struct {
	h             *Host
	m             *module
	certs         memCerts
	seedCerts     memCerts
	tpm           *fakeTPM
	plain, secure *httptest.Server
}

// call runs op in a fresh job, as one host call of a module's job.
func (r *fuzzRig) call(op string, req []byte) ([]byte, *guest.Error) {
	clear(r.certs)
	for k, v := range r.seedCerts {
		r.certs[k] = v
	}
	r.tpm.imported = nil
	req = bytes.ReplaceAll(req, []byte("PLAIN"), []byte(r.plain.Listener.Addr().String()))
	req = bytes.ReplaceAll(req, []byte("SECURE"), []byte(r.secure.Listener.Addr().String()))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	j := newJob(r.h, r.m, time.Now().Add(fuzzLimits.Timeout))
	defer j.close()
	return j.dispatch(ctx, op, req)
}

func newFuzzRig(f *testing.F) *fuzzRig {
	f.Helper()
	keys := newFuzzKeys(f)
	r := &fuzzRig{certs: memCerts{}, tpm: &fakeTPM{}}
	r.plain = httptest.NewServer(http.HandlerFunc(fuzzServe))
	f.Cleanup(r.plain.Close)
	r.secure = httptest.NewUnstartedServer(http.HandlerFunc(fuzzServe))
	r.secure.TLS = &tls.Config{ClientAuth: tls.RequestClientCert}
	r.secure.StartTLS()
	f.Cleanup(r.secure.Close)
	pemOf := func(der []byte) []byte { return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}) }
	r.seedCerts = memCerts{"ca": pemOf(r.secure.Certificate().Raw), "client-cert": pemOf(clientCert(f, keys.Keys, "ec"))}
	h, err := New(Options{Keys: keys, Certs: r.certs, TPM: r.tpm, Decider: denyForbidden{}, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { h.Close(context.Background()) })
	egress, err := parseEgress([]string{r.plain.Listener.Addr().String(), r.secure.Listener.Addr().String()})
	if err != nil {
		f.Fatal(err)
	}
	r.h = h
	r.m = &module{name: "fuzz", digest: "sha256:" + strings.Repeat("0", 64), limits: fuzzLimits.withDefaults(DefaultLimits), egress: egress}
	return r
}

// fuzzServe answers the fuzzer's requests: /big is over fuzzLimits'
// body cap, /redirect is returned as it is.
func fuzzServe(w http.ResponseWriter, r *http.Request) {
	io.Copy(io.Discard, io.LimitReader(r.Body, 1<<20))
	switch r.URL.Path {
	case "/big":
		w.Write(make([]byte, 4<<10))
	case "/redirect":
		http.Redirect(w, r, "/", http.StatusFound)
	default:
		fmt.Fprintf(w, "%s %d", r.Method, len(r.Header))
	}
}

// denyForbidden allows every host call but on a resource ending in
// "forbidden", so that both answers of the policy are reached.
type denyForbidden struct{}

func (denyForbidden) Decide(_ context.Context, in *policy.Input) (policy.Decision, error) {
	if strings.HasSuffix(in.Action.Resource, "forbidden") {
		return policy.Decision{Reasons: []string{"fuzz policy"}}, nil
	}
	return policy.Decision{Allow: true}, nil
}

// fuzzKeys is a file key store holding "ec" (P-256), "rsa" (RSA-2048) and
// "sym" (HMAC) that makes no new RSA key: generating one takes up to
// seconds, which would stall the fuzzer without testing the host.
type fuzzKeys struct{ *hsm.Keys }

func newFuzzKeys(f *testing.F) fuzzKeys {
	ctx := context.Background()
	k, err := hsm.Open(ctx, hsm.Config{HomeDir: f.TempDir()})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { k.Close() })
	err = errors.Join(k.CreateKeyPair(ctx, "ec", []hsm.Algorithm{hsm.ECP256}), k.CreateKeyPair(ctx, "rsa", []hsm.Algorithm{hsm.RSA2048}),
		k.ImportKey(ctx, "sym", bytes.Repeat([]byte{7}, 32), hsm.UsageSign))
	if err != nil {
		f.Fatal(err)
	}
	return fuzzKeys{k}
}

// CreateKeyPair keeps an existing key pair as the store does, and creates
// only EC keys.
func (k fuzzKeys) CreateKeyPair(ctx context.Context, id string, algs []hsm.Algorithm) error {
	if _, err := k.PublicKey(ctx, id); err == nil {
		return k.Keys.CreateKeyPair(ctx, id, algs)
	}
	algs = slices.DeleteFunc(slices.Clone(algs), func(a hsm.Algorithm) bool { return a != hsm.ECP256 })
	if len(algs) == 0 {
		return fmt.Errorf("fuzz key store: %w: only ec-p256 is created", hsm.ErrUnsupported)
	}
	return k.Keys.CreateKeyPair(ctx, id, algs)
}

// clientCert is a certificate for key pair id, signed by a throwaway CA.
func clientCert(f *testing.F, keys *hsm.Keys, id string) []byte {
	pub, err := keys.PublicKey(context.Background(), id)
	if err != nil {
		f.Fatal(err)
	}
	ca, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "device"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, pub, ca)
	if err != nil {
		f.Fatal(err)
	}
	return der
}
