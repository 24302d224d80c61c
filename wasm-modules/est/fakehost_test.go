package main

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/warden-iot/warden/wasm-modules/guest"
)

// fakeHost is a guest.Caller that answers the host calls of the EST
// module in memory: http.do goes to an in-process EST server, keys and
// certificates live in maps, sleeps are recorded, not slept.
type fakeHost struct {
	t   testing.TB
	est *fakeServer

	mu     sync.Mutex
	keys   map[string]*ecdsa.PrivateKey
	certs  map[string]string
	sleeps []time.Duration
	calls  []string
}

func newFakeHost(t testing.TB, est *fakeServer) *fakeHost {
	return &fakeHost{t: t, est: est, keys: map[string]*ecdsa.PrivateKey{}, certs: map[string]string{}}
}

func hostErr(code, format string, args ...any) error {
	return &guest.Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// Call implements guest.Caller.
func (h *fakeHost) Call(ctx context.Context, op string, req []byte) ([]byte, error) {
	h.mu.Lock()
	h.calls = append(h.calls, op)
	h.mu.Unlock()
	switch op {
	case guest.OpHTTPDo:
		var r guest.HTTPRequest
		json.Unmarshal(req, &r)
		return json.Marshal(h.est.serve(&r))
	case guest.OpCertsGet:
		var r guest.CertRequest
		json.Unmarshal(req, &r)
		h.mu.Lock()
		defer h.mu.Unlock()
		if p, ok := h.certs[r.CertID]; ok {
			return json.Marshal(guest.CertResponse{PEM: p})
		}
		return nil, hostErr(guest.CodeNotFound, "cert %q not found", r.CertID)
	case guest.OpCertsPut:
		var r guest.CertPutRequest
		json.Unmarshal(req, &r)
		h.mu.Lock()
		h.certs[r.CertID] = r.PEM
		h.mu.Unlock()
		return nil, nil
	case guest.OpKeysCreateKeyPair, guest.OpKeysPublic:
		var r guest.CreateKeyPairRequest
		json.Unmarshal(req, &r)
		h.mu.Lock()
		k, ok := h.keys[r.KeyID]
		if !ok && op == guest.OpKeysCreateKeyPair {
			k, _ = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
			h.keys[r.KeyID] = k
		}
		h.mu.Unlock()
		if k == nil {
			return nil, hostErr(guest.CodeNotFound, "key %q not found", r.KeyID)
		}
		der, _ := x509.MarshalPKIXPublicKey(k.Public())
		return json.Marshal(guest.PublicKeyResponse{PublicKey: der})
	case guest.OpKeysSign:
		var r guest.SignRequest
		json.Unmarshal(req, &r)
		h.mu.Lock()
		k := h.keys[r.KeyID]
		h.mu.Unlock()
		if k == nil {
			return nil, hostErr(guest.CodeNotFound, "key %q not found", r.KeyID)
		}
		sig, err := ecdsa.SignASN1(rand.Reader, k, r.Digest)
		if err != nil {
			return nil, err
		}
		return json.Marshal(guest.SignResponse{Signature: sig})
	case guest.OpClockSleep:
		var r guest.SleepRequest
		json.Unmarshal(req, &r)
		h.mu.Lock()
		h.sleeps = append(h.sleeps, time.Duration(r.Milliseconds)*time.Millisecond)
		h.mu.Unlock()
		return nil, nil
	case guest.OpLog:
		return nil, nil
	}
	return nil, hostErr(guest.CodeUnavailable, "no host call %s", op)
}

// fakeServer is an EST server behind http.do: it signs CSRs with its CA,
// checks Basic credentials (when password is set), TLS client identities
// by store ID, and defers the first `defer` enrollments with 202.
type fakeServer struct {
	ca       *x509.Certificate
	caKey    crypto.Signer
	password string
	// requireClient lists the client cert IDs simpleenroll accepts; empty
	// accepts any (or none).
	requireClient map[string]bool
	deferN        int
	retryAfter    string
	contentType   string
	// issueFor, when set, is the key the server certifies instead of the
	// CSR's (a misbehaving server).
	issueFor crypto.PublicKey
	// caFirst sends the CA certificate before the issued one.
	caFirst bool

	mu   sync.Mutex
	seen []guest.HTTPRequest
}

func newFakeServer(t testing.TB) *fakeServer {
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "fake EST CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, k.Public(), k)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(der)
	return &fakeServer{ca: ca, caKey: k, retryAfter: "1", contentType: "application/pkcs7-mime; smime-type=certs-only"}
}

// certsOnly encodes a degenerate SignedData (base64 wrapped at 76 with
// CRLF, as GlobalSign's server sends).
func certsOnly(certs ...[]byte) string {
	set := []byte{}
	for _, c := range certs {
		set = append(set, c...)
	}
	sd, _ := asn1.Marshal(struct {
		Version    int
		Digests    asn1.RawValue
		Encap      struct{ Type asn1.ObjectIdentifier }
		Certs      asn1.RawValue
		SignerInfo asn1.RawValue
	}{1, asn1.RawValue{Tag: 17, IsCompound: true}, struct{ Type asn1.ObjectIdentifier }{asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 7, 1}},
		asn1.RawValue{Class: 2, Tag: 0, IsCompound: true, Bytes: set}, asn1.RawValue{Tag: 17, IsCompound: true}})
	ci, _ := asn1.Marshal(struct {
		Type    asn1.ObjectIdentifier
		Content asn1.RawValue
	}{asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 7, 2}, asn1.RawValue{Class: 2, Tag: 0, IsCompound: true, Bytes: sd}})
	b64 := base64.StdEncoding.EncodeToString(ci)
	var b strings.Builder
	for len(b64) > 76 {
		b.WriteString(b64[:76] + "\r\n")
		b64 = b64[76:]
	}
	b.WriteString(b64 + "\r\n")
	return b.String()
}

func (s *fakeServer) serve(r *guest.HTTPRequest) guest.HTTPResponse {
	s.mu.Lock()
	s.seen = append(s.seen, *r)
	s.mu.Unlock()
	hreq := httptest.NewRequest(r.Method, r.URL, strings.NewReader(string(r.Body)))
	for k, vs := range r.Header {
		for _, v := range vs {
			hreq.Header.Add(k, v)
		}
	}
	w := httptest.NewRecorder()
	s.handle(w, hreq, r.TLS)
	body, _ := io.ReadAll(w.Result().Body)
	return guest.HTTPResponse{Status: w.Code, Header: w.Result().Header, Body: body}
}

func (s *fakeServer) handle(w http.ResponseWriter, r *http.Request, t *guest.TLSOptions) {
	op := r.URL.Path[strings.LastIndexByte(r.URL.Path, '/')+1:]
	if op == "cacerts" {
		w.Header().Set("Content-Type", "application/pkcs7-mime")
		io.WriteString(w, certsOnly(s.ca.Raw))
		return
	}
	if u, p, ok := r.BasicAuth(); s.password != "" && (!ok || u != "estuser" || p != s.password) {
		w.Header().Set("WWW-Authenticate", `Basic realm="est"`)
		http.Error(w, "401 authorization required", 401)
		return
	}
	client := ""
	if t != nil {
		client = t.ClientCertID
	}
	if len(s.requireClient) > 0 && !s.requireClient[client] {
		http.Error(w, "403 client certificate required", 403)
		return
	}
	s.mu.Lock()
	deferIt := s.deferN > 0
	if deferIt {
		s.deferN--
	}
	s.mu.Unlock()
	if deferIt {
		w.Header().Set("Retry-After", s.retryAfter)
		w.WriteHeader(202)
		return
	}
	b, _ := io.ReadAll(r.Body)
	der, err := base64.StdEncoding.DecodeString(strings.ReplaceAll(string(b), "\n", ""))
	if err != nil {
		http.Error(w, "400 bad base64", 400)
		return
	}
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil || csr.CheckSignature() != nil {
		http.Error(w, "400 bad CSR", 400)
		return
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), RawSubject: csr.RawSubject,
		NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour), ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	pub := csr.PublicKey
	if s.issueFor != nil {
		pub = s.issueFor
	}
	cert, err := x509.CreateCertificate(rand.Reader, tmpl, s.ca, pub, s.caKey)
	if err != nil {
		http.Error(w, err.Error(), 500)
		return
	}
	w.Header().Set("Content-Type", s.contentType)
	if s.caFirst {
		io.WriteString(w, certsOnly(s.ca.Raw, cert))
		return
	}
	io.WriteString(w, certsOnly(cert))
}

// newCSR returns a DER CSR for a new key with CN cn.
func newCSR(t testing.TB, cn string) ([]byte, crypto.PublicKey) {
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: cn}}, k)
	if err != nil {
		t.Fatal(err)
	}
	return der, k.Public()
}

func pemCert(der []byte) string {
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
}
