package main

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"log/slog"
	"mime"
	"strconv"
	"strings"
	"time"

	"github.com/warden-iot/warden/wasm-modules/est/estjob"
	"github.com/warden-iot/warden/wasm-modules/est/pkcs7"
	"github.com/warden-iot/warden/wasm-modules/guest"
)

// Bounds of one job.
const (
	// maxDeferrals bounds the 202 answers waited out for one request.
	maxDeferrals = 20
	// defaultRetryAfter is used for a 202 without a usable Retry-After.
	defaultRetryAfter = 30 * time.Second
	// maxResponseBytes caps an EST response body.
	maxResponseBytes = 1 << 20
)

// The EST operations (path segments after the base URL).
const (
	opCACerts        = "cacerts"
	opSimpleEnroll   = "simpleenroll"
	opSimpleReenroll = "simplereenroll"
)

// HTTP bits the module needs (net/http itself would double its size).
const (
	methodGet      = "GET"
	methodPost     = "POST"
	statusOK       = 200
	statusAccepted = 202
	// timeFormat is the IMF-fixdate of HTTP dates (RFC 9110 §5.6.7).
	timeFormat = "Mon, 02 Jan 2006 15:04:05 GMT"
)

// identityAlgorithms is aziot's "ec-p256:rsa-4096:*" for a new identity key.
var identityAlgorithms = []string{"ec-p256", "rsa-4096", "rsa-2048"}

// client runs one job.
type client struct {
	job       *estjob.Job
	log       *slog.Logger
	waited    time.Duration
	deferrals int
}

// credential is a TLS client identity by store IDs ("" for none).
type credential struct {
	certID, keyID string
}

// caCertsOnly fetches /cacerts.
func (c *client) caCertsOnly(ctx context.Context) (*estjob.Result, error) {
	ca, err := c.caCerts(ctx, c.identityIfExists(ctx))
	if err != nil {
		return nil, err
	}
	return &estjob.Result{CACerts: ca}, nil
}

// identityIfExists is the identity credential when its certificate exists.
func (c *client) identityIfExists(ctx context.Context) credential {
	if c.job.IdentityCertID == "" {
		return credential{}
	}
	if _, err := guest.GetCert(ctx, c.job.IdentityCertID); err != nil {
		return credential{}
	}
	return credential{c.job.IdentityCertID, c.job.IdentityKeyID}
}

// enroll is simpleenroll of the job's CSR with the identity credential,
// obtaining that credential first with the bootstrap one when needed.
func (c *client) enroll(ctx context.Context) (*estjob.Result, error) {
	if len(c.job.CSR) == 0 {
		return nil, errorf(guest.CodeInvalid, "enroll needs a CSR")
	}
	res := &estjob.Result{}
	cred, err := c.credential(ctx, res)
	if err != nil {
		return nil, err
	}
	if res.CACerts, err = c.caCerts(ctx, cred); err != nil {
		return nil, err
	}
	if res.Certs, err = c.post(ctx, opSimpleEnroll, c.job.CSR, cred); err != nil {
		return nil, err
	}
	res.Deferrals = c.deferrals
	return res, nil
}

// reenroll is simplereenroll authenticated by the identity certificate
// being renewed (RFC 7030 §4.2.2).
func (c *client) reenroll(ctx context.Context) (*estjob.Result, error) {
	if len(c.job.CSR) == 0 || c.job.IdentityCertID == "" {
		return nil, errorf(guest.CodeInvalid, "reenroll needs a CSR and the identity certificate to renew")
	}
	cred := credential{c.job.IdentityCertID, c.job.IdentityKeyID}
	ca, err := c.caCerts(ctx, cred)
	if err != nil {
		return nil, err
	}
	certs, err := c.post(ctx, opSimpleReenroll, c.job.CSR, cred)
	if err != nil {
		return nil, err
	}
	return &estjob.Result{Certs: certs, CACerts: ca, Deferrals: c.deferrals}, nil
}

// credential returns the TLS client credential of an enrollment: the
// identity certificate when it exists; else, with a bootstrap credential,
// a new identity enrolled with it (aziot-api §5.4) and stored; else none
// when no identity is configured.
func (c *client) credential(ctx context.Context, res *estjob.Result) (credential, error) {
	j := c.job
	if j.IdentityCertID == "" {
		if j.BootstrapCertID != "" {
			return credential{j.BootstrapCertID, j.BootstrapKeyID}, nil
		}
		return credential{}, nil
	}
	_, err := guest.GetCert(ctx, j.IdentityCertID)
	if err == nil {
		return credential{j.IdentityCertID, j.IdentityKeyID}, nil
	}
	var ge *guest.Error
	if !errors.As(err, &ge) || ge.Code != guest.CodeNotFound {
		return credential{}, err
	}
	if j.BootstrapCertID == "" {
		return credential{}, errorf(estjob.CodeConfig, "EST identity certificate %q does not exist and no bootstrap certificate is configured", j.IdentityCertID)
	}
	c.log.Info("EST identity certificate missing: enrolling one with the bootstrap certificate",
		"identity_cert", j.IdentityCertID, "bootstrap_cert", j.BootstrapCertID)
	if _, err := guest.CreateKeyPair(ctx, j.IdentityKeyID, identityAlgorithms...); err != nil {
		return credential{}, err
	}
	signer, err := guest.Signer(ctx, j.IdentityKeyID)
	if err != nil {
		return credential{}, err
	}
	subject := j.IdentitySubject
	if len(subject) == 0 {
		csr, err := x509.ParseCertificateRequest(j.CSR)
		if err != nil {
			return credential{}, errorf(guest.CodeInvalid, "parse the job's CSR: %v", err)
		}
		subject = csr.RawSubject
	}
	eku, _ := asn1.Marshal([]asn1.ObjectIdentifier{{1, 3, 6, 1, 5, 5, 7, 3, 2}})
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		RawSubject:      subject,
		ExtraExtensions: []pkix.Extension{{Id: asn1.ObjectIdentifier{2, 5, 29, 37}, Value: eku}},
	}, signer)
	if err != nil {
		return credential{}, errorf(guest.CodeFailed, "build the identity CSR: %v", err)
	}
	boot := credential{j.BootstrapCertID, j.BootstrapKeyID}
	ca, err := c.caCerts(ctx, boot)
	if err != nil {
		return credential{}, err
	}
	certs, err := c.post(ctx, opSimpleEnroll, csr, boot)
	if err != nil {
		return credential{}, err
	}
	var chain []byte
	for _, d := range append(certs, ca...) {
		chain = append(chain, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: d})...)
	}
	if err := guest.PutCert(ctx, j.IdentityCertID, string(chain)); err != nil {
		return credential{}, err
	}
	res.IdentityIssued = true
	return credential{j.IdentityCertID, j.IdentityKeyID}, nil
}

// request is one EST HTTP request through the host.
func (c *client) request(method, op string, body []byte, cred credential) *guest.HTTPRequest {
	j := c.job
	h := map[string][]string{"User-Agent": {"warden-est/" + version}}
	if j.Username != "" || j.Password != "" {
		h["Authorization"] = []string{"Basic " + base64.StdEncoding.EncodeToString([]byte(j.Username+":"+j.Password))}
	}
	if body != nil {
		h["Content-Type"] = []string{"application/pkcs10"}
		h["Content-Transfer-Encoding"] = []string{"base64"}
	}
	req := &guest.HTTPRequest{Method: method, URL: strings.TrimSuffix(j.URL, "/") + "/" + op, Header: h,
		Body: body, MaxResponseBytes: maxResponseBytes}
	if cred.certID != "" || len(j.TrustCertIDs) > 0 || j.SystemRoots {
		req.TLS = &guest.TLSOptions{ClientCertID: cred.certID, ClientKeyID: cred.keyID,
			TrustCertIDs: j.TrustCertIDs, SystemRoots: j.SystemRoots}
	}
	return req
}

// caCerts is GET /cacerts.
func (c *client) caCerts(ctx context.Context, cred credential) ([][]byte, error) {
	return c.do(ctx, c.request(methodGet, opCACerts, nil, cred), opCACerts)
}

// post sends csr (DER) to simpleenroll or simplereenroll, base64 wrapped at
// 64 characters as aziot does, and returns the answer's certificates with
// the one issued for the CSR's key first.
func (c *client) post(ctx context.Context, op string, csr []byte, cred credential) ([][]byte, error) {
	req, err := x509.ParseCertificateRequest(csr)
	if err != nil {
		return nil, errorf(guest.CodeInvalid, "%s: parse the CSR: %v", op, err)
	}
	certs, err := c.do(ctx, c.request(methodPost, op, wrap64(base64.StdEncoding.EncodeToString(csr)), cred), op)
	if err != nil {
		return nil, err
	}
	return issuedFirst(op, certs, req.PublicKey)
}

// issuedFirst moves the certificate for pub to the front of certs (the
// order of a certs-only SET is the server's), and refuses an answer that
// certifies another key: stored as the EST identity, it would fail every
// later TLS handshake. A CSR key Go cannot parse (nil) is not checked.
func issuedFirst(op string, certs [][]byte, pub crypto.PublicKey) ([][]byte, error) {
	want, ok := pub.(interface{ Equal(crypto.PublicKey) bool })
	if !ok {
		return certs, nil
	}
	for i, d := range certs {
		if c, err := x509.ParseCertificate(d); err == nil && want.Equal(c.PublicKey) {
			out := make([][]byte, 0, len(certs))
			out = append(append(append(out, d), certs[:i]...), certs[i+1:]...)
			return out, nil
		}
	}
	return nil, errorf(estjob.CodeResponse, "%s: the response holds no certificate for the CSR's key", op)
}

func wrap64(s string) []byte {
	out := make([]byte, 0, len(s)+len(s)/64+1)
	for len(s) > 64 {
		out = append(out, s[:64]...)
		out = append(out, '\n')
		s = s[64:]
	}
	return append(append(out, s...), '\n')
}

// do sends req, waits out 202 + Retry-After within the job's budget, and
// parses a 200 certs-only answer.
func (c *client) do(ctx context.Context, req *guest.HTTPRequest, op string) ([][]byte, error) {
	for {
		resp, err := guest.HTTPDo(ctx, req)
		if err != nil {
			return nil, err
		}
		switch resp.Status {
		case statusOK:
			return parseCertsOnly(op, resp)
		case statusAccepted:
			if err := c.deferred(ctx, op, resp); err != nil {
				return nil, err
			}
			continue
		}
		return nil, errorf(estjob.CodeServer, "%s: HTTP %d: %s", op, resp.Status, snippet(resp.Body))
	}
}

// deferred waits out a 202's Retry-After (seconds or an HTTP date), or
// fails with estjob.CodeDeferred when that would exceed the job's budget.
func (c *client) deferred(ctx context.Context, op string, resp *guest.HTTPResponse) error {
	wait := retryAfter(header(resp, "Retry-After"), time.Now())
	c.deferrals++
	left := time.Duration(c.job.MaxWaitSeconds)*time.Second - c.waited
	if c.deferrals > maxDeferrals || wait > left {
		return errorf(estjob.CodeDeferred, "%s: the server deferred the request (202): retry after %d s, beyond this job's remaining %d s of waiting",
			op, int(wait.Seconds()), int(max(left, 0).Seconds()))
	}
	c.log.Info("EST server deferred the request", "op", op, "retry_after_s", wait.Seconds(), "deferral", c.deferrals)
	if err := guest.Sleep(ctx, wait); err != nil {
		return errorf(estjob.CodeDeferred, "%s: the server deferred the request (202) for %d s: %v", op, int(wait.Seconds()), err)
	}
	c.waited += wait
	return nil
}

// retryAfter parses Retry-After: delta-seconds or an HTTP date; missing or
// malformed gives defaultRetryAfter. At least one second.
func retryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	d := defaultRetryAfter
	if n, err := strconv.ParseUint(v, 10, 31); err == nil {
		d = time.Duration(n) * time.Second
	} else if t, err := time.Parse(timeFormat, v); err == nil {
		d = t.Sub(now)
	}
	return max(d, time.Second)
}

func header(resp *guest.HTTPResponse, name string) string {
	for k, vs := range resp.Header {
		if strings.EqualFold(k, name) && len(vs) > 0 {
			return vs[0]
		}
	}
	return ""
}

// parseCertsOnly checks a 200's Content-Type (application/pkcs7-mime) and
// returns the certificates of its body.
func parseCertsOnly(op string, resp *guest.HTTPResponse) ([][]byte, error) {
	ct := header(resp, "Content-Type")
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil || !strings.EqualFold(mt, "application/pkcs7-mime") {
		return nil, errorf(estjob.CodeResponse, "%s: Content-Type %q, want application/pkcs7-mime", op, snippet([]byte(ct)))
	}
	certs, err := pkcs7.ParseResponse(resp.Body)
	if err != nil {
		return nil, errorf(estjob.CodeResponse, "%s: %v", op, err)
	}
	if len(certs) == 0 {
		return nil, errorf(estjob.CodeResponse, "%s: the response holds no certificate", op)
	}
	return certs, nil
}

// snippet is the start of an error body, printable.
func snippet(b []byte) string {
	if len(b) > 200 {
		b = b[:200]
	}
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, strings.TrimSpace(string(b)))
}
