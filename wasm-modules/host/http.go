package host

import (
	"bytes"
	"context"
	"crypto"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"time"

	"github.com/warden-iot/warden/wasm-modules/guest"
	"golang.org/x/net/http/httpguts"
)

// httpDo performs a module's HTTP request: the egress allowlist first (a
// hard rule in Go), then one policy decision for the URL and one for each
// key and certificate the TLS options use, then the request, under the
// job's context. Redirects are returned, not followed.
func (j *job) httpDo(ctx context.Context, req []byte) ([]byte, *guest.Error) {
	const op = guest.OpHTTPDo
	var r guest.HTTPRequest
	if e := decode(op, req, &r); e != nil {
		return nil, e
	}
	u, err := url.Parse(r.URL)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Hostname() == "" {
		return nil, guest.Errorf(guest.CodeInvalid, "%s: want an absolute http or https URL, not %q", op, r.URL)
	}
	if r.Method == "" {
		r.Method = http.MethodGet
	}
	ok, hostport := egressAllowed(j.m.egress, u)
	if !ok {
		// Logged within the job's log budget: the module chooses the host
		// (as long as its memory allows) and how often it tries.
		j.emit(ctx, slog.LevelWarn, "http.do denied: not in the egress allowlist", slog.String("url_host", hostport))
		return nil, guest.Errorf(guest.CodeDenied, "%s: %s is not in module %s's egress allowlist", op, hostport, j.m.name)
	}
	details := map[string]any{"method": r.Method, "scheme": u.Scheme, "path": u.Path}
	if r.TLS != nil {
		details["insecure_skip_verify"] = r.TLS.InsecureSkipVerify
		details["client_key_id"] = r.TLS.ClientKeyID
	}
	if e := j.authorize(ctx, op, "url:"+hostport, details); e != nil {
		return nil, e
	}
	t, kept, e := j.transport(ctx, r.TLS)
	if e != nil {
		return nil, e
	}
	if !kept {
		defer t.CloseIdleConnections() // this call's own, after its body is closed
	}
	hreq, err := http.NewRequestWithContext(ctx, r.Method, r.URL, bytes.NewReader(r.Body))
	if err != nil {
		return nil, guest.Errorf(guest.CodeInvalid, "%s: %v", op, err)
	}
	for k, vs := range r.Header {
		// Checked here: net/http refuses them only inside the round trip,
		// an error the module would take for a network failure and retry.
		if !httpguts.ValidHeaderFieldName(k) {
			return nil, guest.Errorf(guest.CodeInvalid, "%s: invalid header name %q", op, k)
		}
		for _, v := range vs {
			if !httpguts.ValidHeaderFieldValue(v) {
				return nil, guest.Errorf(guest.CodeInvalid, "%s: invalid value for header %q", op, k)
			}
			hreq.Header.Add(k, v)
		}
	}
	client := &http.Client{Transport: t, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := client.Do(hreq)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctxError(ctx.Err())
		}
		return nil, guest.Errorf(guest.CodeUnavailable, "%s: %s %s: %v", op, r.Method, hostport, unwrapURLError(err))
	}
	defer resp.Body.Close()
	limit := j.m.limits.MaxHTTPBodyBytes
	if r.MaxResponseBytes > 0 && r.MaxResponseBytes < limit {
		limit = r.MaxResponseBytes
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctxError(ctx.Err())
		}
		return nil, guest.Errorf(guest.CodeUnavailable, "%s: read the response of %s: %v", op, hostport, err)
	}
	if int64(len(body)) > limit {
		return nil, guest.Errorf(guest.CodeFailed, "%s: the response body of %s is larger than %d bytes", op, hostport, limit)
	}
	out := guest.HTTPResponse{Status: resp.StatusCode, Header: resp.Header, Body: body}
	if resp.TLS != nil {
		for _, c := range resp.TLS.PeerCertificates {
			out.PeerCertificates = append(out.PeerCertificates, c.Raw)
		}
	}
	return encode(op, out)
}

func unwrapURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// maxTransports bounds the transports a job keeps. A module uses one per
// TLS identity (the EST module three at most), but one that varied its TLS
// options on every call had a transport kept for each, to the job's end:
// up to its host-call limit of them, each with a trust_pem as large as
// the module's memory.
const maxTransports = 8

// transport returns the job's transport for o, built on first use: each
// job has its own (connections are reused within a job, never across jobs
// or TLS identities) and they close when the job ends. Past maxTransports
// a new one is for the call alone (kept is false): the caller closes it.
func (j *job) transport(ctx context.Context, o *guest.TLSOptions) (_ *http.Transport, kept bool, _ *guest.Error) {
	var key [sha256.Size]byte // a digest: trust_pem may be megabytes
	if o != nil {
		key = sha256.Sum256(fmt.Appendf(nil, "%q|%q|%q|%q|%v|%q|%v", o.ClientCertID, o.ClientKeyID, o.TrustCertIDs, o.TrustPEM, o.SystemRoots, o.ServerName, o.InsecureSkipVerify))
	}
	j.tmu.Lock()
	t, ok := j.transports[key]
	j.tmu.Unlock()
	if ok {
		return t, true, nil
	}
	cfg, e := j.tlsConfig(ctx, o)
	if e != nil {
		return nil, false, e
	}
	dialer := &net.Dialer{Timeout: 15 * time.Second, KeepAlive: 30 * time.Second}
	t = &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           dialer.DialContext,
		TLSClientConfig:       cfg,
		TLSHandshakeTimeout:   15 * time.Second,
		MaxIdleConnsPerHost:   2,
		IdleConnTimeout:       30 * time.Second,
		ExpectContinueTimeout: time.Second,
	}
	j.tmu.Lock()
	defer j.tmu.Unlock()
	if j.transports == nil {
		j.transports = map[[sha256.Size]byte]*http.Transport{}
	}
	if len(j.transports) >= maxTransports {
		return t, false, nil
	}
	j.transports[key] = t
	return t, true, nil
}

// tlsConfig builds the TLS settings of o: trust from cert store IDs and
// PEM, the client certificate from the cert store and its key as a signer
// from the key store (each use a policy decision).
func (j *job) tlsConfig(ctx context.Context, o *guest.TLSOptions) (*tls.Config, *guest.Error) {
	const op = guest.OpHTTPDo
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if o == nil {
		return cfg, nil
	}
	cfg.ServerName = o.ServerName
	cfg.InsecureSkipVerify = o.InsecureSkipVerify
	if len(o.TrustCertIDs) > 0 || o.TrustPEM != "" {
		pool := x509.NewCertPool()
		if o.SystemRoots {
			if sys, err := x509.SystemCertPool(); err == nil {
				pool = sys
			}
		}
		for _, id := range o.TrustCertIDs {
			b, e := j.getCert(ctx, op, id, map[string]any{"purpose": "tls-trust"})
			if e != nil {
				return nil, e
			}
			if !pool.AppendCertsFromPEM(b) {
				return nil, guest.Errorf(guest.CodeInvalid, "%s: trusted cert %q holds no PEM certificate", op, id)
			}
		}
		if o.TrustPEM != "" && !pool.AppendCertsFromPEM([]byte(o.TrustPEM)) {
			return nil, guest.Errorf(guest.CodeInvalid, "%s: trust_pem holds no PEM certificate", op)
		}
		cfg.RootCAs = pool
	}
	if o.ClientCertID == "" && o.ClientKeyID == "" {
		return cfg, nil
	}
	if o.ClientCertID == "" || o.ClientKeyID == "" {
		return nil, guest.Errorf(guest.CodeInvalid, "%s: client_cert_id and client_key_id go together", op)
	}
	chain, e := j.getCert(ctx, op, o.ClientCertID, map[string]any{"purpose": "tls-client"})
	if e != nil {
		return nil, e
	}
	var cert tls.Certificate
	for rest := chain; ; {
		var blk *pem.Block
		blk, rest = pem.Decode(rest)
		if blk == nil {
			break
		}
		if blk.Type == "CERTIFICATE" {
			cert.Certificate = append(cert.Certificate, blk.Bytes)
		}
	}
	if len(cert.Certificate) == 0 {
		return nil, guest.Errorf(guest.CodeInvalid, "%s: client cert %q holds no PEM certificate", op, o.ClientCertID)
	}
	if j.h.opts.Keys == nil {
		return nil, unavailable(op, "key store")
	}
	if e := j.authorize(ctx, guest.OpKeysSign, "key:"+o.ClientKeyID, map[string]any{"purpose": "tls-client"}); e != nil {
		return nil, e
	}
	signer, err := bounded(ctx, j.log, func() (crypto.Signer, error) { return j.h.opts.Keys.Signer(ctx, o.ClientKeyID) })
	if err != nil {
		return nil, mapErr(op, err)
	}
	cert.PrivateKey = signer
	if leaf, err := x509.ParseCertificate(cert.Certificate[0]); err == nil {
		cert.Leaf = leaf
	}
	cfg.Certificates = []tls.Certificate{cert}
	return cfg, nil
}
