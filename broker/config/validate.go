package config

import (
	"crypto/ed25519"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// validator checks the merged configuration; errors are attributed to files
// through the merge origins.
type validator struct {
	reporter
	c *Config
}

// opt is a key of a table and whether it is set.
type opt struct {
	key string
	set bool
}

func (c *Config) validate(og origins) error {
	v := &validator{reporter: reporter{origins: og}, c: c}
	v.top()
	if c.Provisioning != nil {
		v.provisioning(keyPath{}.k("provisioning"), c.Provisioning)
	}
	v.keys()
	v.certIssuance(keyPath{}.k("cert_issuance"))
	v.preloadedCerts(keyPath{}.k("preloaded_certs"))
	v.principals(keyPath{}.k("principal"))
	v.warden(keyPath{}.k("warden"))
	return v.err()
}

// notWith reports the options that are set although why excludes them.
func (v *validator) notWith(p keyPath, why string, opts ...opt) {
	for _, o := range opts {
		if o.set {
			v.addf(p.k(o.key), "not used with %s", why)
		}
	}
}

// need reports the options that are missing although why requires them.
func (v *validator) need(p keyPath, why string, opts ...opt) {
	for _, o := range opts {
		if !o.set {
			v.addf(p.k(o.key), "required with %s", why)
		}
	}
}

// check reports err, if any, at p.
func (v *validator) check(p keyPath, err error) {
	if err != nil {
		v.add(p, err)
	}
}

func (v *validator) top() {
	c, root := v.c, keyPath{}
	switch {
	case c.CloudTimeoutSec < DefaultCloudTimeoutSec:
		v.addf(root.k("cloud_timeout_sec"), "must be at least %d, not %d", DefaultCloudTimeoutSec, c.CloudTimeoutSec)
	case c.CloudTimeoutSec > MaxCloudTimeoutSec:
		v.addf(root.k("cloud_timeout_sec"), "must be at most %d (a day), not %d", MaxCloudTimeoutSec, c.CloudTimeoutSec)
	}
	if c.CloudRetries < 0 {
		v.addf(root.k("cloud_retries"), "must not be negative")
	}
	if m := c.AziotMaxRequests; m != nil {
		p := root.k("aziot_max_requests")
		for _, o := range []struct {
			key string
			n   int
		}{{"keyd", m.Keyd}, {"certd", m.Certd}, {"tpmd", m.Tpmd}, {"identityd", m.Identityd}} {
			if o.n < 1 {
				v.addf(p.k(o.key), "must be at least 1, not %d", o.n)
			}
		}
	}
	if c.LocalID != nil && c.LocalID.Domain == "" {
		v.addf(root.k("localid").k("domain"), "must not be empty")
	}
	if c.LocalGatewayHostname != "" && c.Provisioning != nil && c.Provisioning.Source == "dps" {
		v.addf(root.k("local_gateway_hostname"), "DPS provisioning is not supported in nested mode")
	}
	if t := c.TPM; t.AuthKeyIndex < 0 || t.AuthKeyIndex > MaxAuthKeyIndex {
		v.addf(root.k("tpm").k("auth_key_index"), "%#x is out of range 0..%#x", t.AuthKeyIndex, MaxAuthKeyIndex)
	}
}

func (v *validator) provisioning(p keyPath, pr *Provisioning) {
	manual := []opt{{"connection_string", pr.ConnectionString != ""}, {"iothub_hostname", pr.IothubHostname != ""},
		{"device_id", pr.DeviceID != ""}, {"authentication", pr.Authentication != nil}}
	dps := []opt{{"global_endpoint", pr.GlobalEndpoint != ""}, {"id_scope", pr.IDScope != ""},
		{"attestation", pr.Attestation != nil}, {"payload", pr.Payload != nil}}
	switch pr.Source {
	case "manual":
		v.notWith(p, `source = "manual"`, dps...)
		if pr.ConnectionString != "" {
			v.notWith(p, "connection_string", manual[1:]...)
			v.check(p.k("connection_string"), checkConnectionString(pr.ConnectionString))
			return
		}
		v.need(p, `source = "manual" (or set connection_string)`, manual[1:]...)
		if a := pr.Authentication; a != nil {
			v.manualAuth(p.k("authentication"), a)
		}
	case "dps":
		v.notWith(p, `source = "dps"`, manual...)
		v.need(p, `source = "dps"`, dps[:3]...)
		if pr.GlobalEndpoint != "" {
			v.check(p.k("global_endpoint"), checkHTTPURL(pr.GlobalEndpoint))
		}
		if pr.Payload != nil {
			v.check(p.k("payload").k("uri"), checkFileURI(pr.Payload.URI))
		}
		if a := pr.Attestation; a != nil {
			v.attestation(p.k("attestation"), a)
		}
	case "none":
		v.notWith(p, `source = "none"`, append(manual, dps...)...)
	default:
		v.addf(p.k("source"), `must be "manual", "dps" or "none", not %q`, pr.Source)
	}
}

func (v *validator) manualAuth(p keyPath, a *ManualAuthentication) {
	switch a.Method {
	case "sas":
		why := `method = "sas"`
		v.need(p, why, opt{"device_id_pk", a.DeviceIDPK != nil})
		v.notWith(p, why, opt{"identity_cert", a.IdentityCert != nil}, opt{"identity_pk", a.IdentityPK != ""})
		if a.DeviceIDPK != nil {
			v.symmetricKey(p.k("device_id_pk"), a.DeviceIDPK)
		}
	case "x509":
		v.notWith(p, `method = "x509"`, opt{"device_id_pk", a.DeviceIDPK != nil})
		v.identity(p, a.IdentityCert, a.IdentityPK)
	default:
		v.addf(p.k("method"), `must be "sas" or "x509", not %q`, a.Method)
	}
}

func (v *validator) attestation(p keyPath, a *Attestation) {
	regID := opt{"registration_id", a.RegistrationID != nil}
	symKey := opt{"symmetric_key", a.SymmetricKey != nil}
	x509 := []opt{{"identity_cert", a.IdentityCert != nil}, {"identity_pk", a.IdentityPK != ""},
		{"identity_auto_renew", a.IdentityAutoRenew != nil}}
	switch a.Method {
	case "symmetric_key":
		why := `method = "symmetric_key"`
		v.need(p, why, regID, symKey)
		v.notWith(p, why, x509...)
		v.registrationID(p.k("registration_id"), a.RegistrationID, false)
		if a.SymmetricKey != nil {
			v.symmetricKey(p.k("symmetric_key"), a.SymmetricKey)
		}
	case "x509":
		v.notWith(p, `method = "x509"`, symKey)
		v.registrationID(p.k("registration_id"), a.RegistrationID, true)
		v.identity(p, a.IdentityCert, a.IdentityPK)
		if a.IdentityAutoRenew != nil && a.IdentityCert != nil && a.IdentityCert.Issued != nil &&
			a.IdentityCert.Issued.AutoRenew != nil {
			v.addf(p.k("identity_auto_renew"), "set both here and as identity_cert.auto_renew")
		}
	case "tpm":
		why := `method = "tpm"`
		v.need(p, why, regID)
		v.notWith(p, why, append(x509, symKey)...)
		v.registrationID(p.k("registration_id"), a.RegistrationID, false)
	default:
		v.addf(p.k("method"), `must be "symmetric_key", "x509" or "tpm", not %q`, a.Method)
	}
}

func (v *validator) registrationID(p keyPath, r *RegistrationID, subjectOK bool) {
	switch {
	case r == nil:
	case r.Subject != nil && !subjectOK:
		v.addf(p, "must be a string with this method")
	case r.Subject != nil:
		v.subject(p, r.Subject)
	case r.Name == "":
		v.addf(p, "must not be empty")
	}
}

func (v *validator) subject(p keyPath, s map[string]string) {
	if len(s) == 0 {
		v.addf(p, "subject must not be empty")
	}
	for _, k := range sortedKeys(s) {
		if k == "" || s[k] == "" {
			v.addf(p.k(k), "subject attributes need a name and a value")
		}
	}
}

func (v *validator) symmetricKey(p keyPath, k *SymmetricKey) {
	switch {
	case (k.Value == "") == (k.URI == ""):
		v.addf(p, "set exactly one of value and uri")
	case k.Value != "":
		if b, err := k.Bytes(); err != nil {
			v.add(p.k("value"), err)
		} else if len(b) == 0 {
			v.addf(p.k("value"), "empty key")
		}
	default:
		v.keyURI(p.k("uri"), k.URI)
	}
}

// identity checks an X.509 identity: identity_cert as a reference (with
// identity_pk) or as an issuance table (without).
func (v *validator) identity(p keyPath, cert *CertSource, pk string) {
	if cert == nil {
		v.addf(p.k("identity_cert"), `required with method = "x509"`)
		return
	}
	if cert.Issued != nil {
		if pk != "" {
			v.addf(p.k("identity_pk"), "not used when identity_cert is an issuance table (the key is generated)")
		}
		v.certOptions(p.k("identity_cert"), &cert.Issued.CertOptions, "device-id")
		return
	}
	v.check(p.k("identity_cert"), checkCertRef(cert.Ref))
	if pk == "" {
		v.addf(p.k("identity_pk"), "required when identity_cert is a certificate reference")
	} else {
		v.keyRef(p.k("identity_pk"), pk)
	}
}

// keyURI checks a file:// or pkcs11: key URI; pkcs11: needs the PKCS#11
// library to be configured.
func (v *validator) keyURI(p keyPath, s string) {
	switch {
	case strings.HasPrefix(s, "pkcs11:"):
		v.check(p, checkPKCS11URI(s))
		if v.c.AziotKeys["pkcs11_lib_path"] == "" {
			v.addf(p, "a pkcs11: key needs aziot_keys.pkcs11_lib_path")
		}
	case strings.HasPrefix(s, "file:"):
		v.check(p, checkFileURI(s))
	default:
		v.addf(p, "%q is not a file:// or pkcs11: URI", redactURI(s))
	}
}

// keyRef checks a key URI or key ID.
func (v *validator) keyRef(p keyPath, s string) {
	if IsURI(s) {
		v.keyURI(p, s)
	} else {
		v.check(p, checkID(s))
	}
}

func (v *validator) keys() {
	p := keyPath{}.k("aziot_keys")
	for _, k := range sortedKeys(v.c.AziotKeys) {
		val := v.c.AziotKeys[k]
		switch k {
		case "homedir_path", "pkcs11_lib_path":
			v.absPath(p.k(k), val, true)
		case "pkcs11_base_slot":
			v.check(p.k(k), checkPKCS11URI(val))
			if v.c.AziotKeys["pkcs11_lib_path"] == "" {
				v.addf(p.k(k), "needs pkcs11_lib_path")
			}
		default:
			v.addf(p.k(k), "unknown key: [aziot_keys] takes homedir_path, pkcs11_lib_path and pkcs11_base_slot")
		}
	}
	p = keyPath{}.k("preloaded_keys")
	for _, id := range sortedKeys(v.c.PreloadedKeys) {
		v.check(p.k(id), checkID(id))
		v.keyURI(p.k(id), v.c.PreloadedKeys[id])
	}
}

func (v *validator) certIssuance(p keyPath) {
	ci := &v.c.CertIssuance
	if e := ci.EST; e != nil {
		ep := p.k("est")
		for i, ref := range e.TrustedCerts {
			v.check(ep.k("trusted_certs").i(i), checkCertRef(ref))
		}
		v.estAuth(ep.k("auth"), &e.Auth)
		for _, id := range sortedKeys(e.URLs) {
			v.check(ep.k("urls").k(id), checkHTTPURL(e.URLs[id]))
		}
	}
	if ca := ci.LocalCA; ca != nil {
		cp := p.k("local_ca")
		if ca.Cert.Issued != nil {
			if ca.PK != "" {
				v.addf(cp.k("pk"), "not used when cert is an issuance table (the key is generated)")
			}
			if ca.Cert.Issued.Method == "local_ca" {
				v.addf(cp.k("cert").k("method"), "the local CA cannot be issued by itself")
			} else {
				v.certOptions(cp.k("cert"), &ca.Cert.Issued.CertOptions, "local-ca")
			}
		} else {
			v.check(cp.k("cert"), checkCertRef(ca.Cert.Ref))
			if ca.PK == "" {
				v.addf(cp.k("pk"), "required when cert is a certificate reference")
			} else {
				v.keyRef(cp.k("pk"), ca.PK)
			}
		}
	}
	for _, id := range sortedKeys(ci.Certs) {
		o := ci.Certs[id]
		v.check(p.k(id), checkID(id))
		if o.Method == "local_ca" && ci.LocalCA != nil && ci.LocalCA.Cert.Issued == nil && ci.LocalCA.Cert.Ref == id {
			// The local CA named by reference, issued when missing: by
			// itself it could not be.
			v.addf(p.k(id).k("method"), "the local CA cannot be issued by itself")
			continue
		}
		v.certOptions(p.k(id), &o, id)
	}
}

// certOptions checks how certificate certID is issued.
func (v *validator) certOptions(p keyPath, o *CertOptions, certID string) {
	a := &o.ESTAuth
	est := []opt{{"url", o.URL != ""}, {"username", a.Username != ""}, {"password", a.Password != ""},
		{"identity_cert", a.IdentityCert != ""}, {"identity_pk", a.IdentityPK != ""},
		{"bootstrap_identity_cert", a.BootstrapIdentityCert != ""}, {"bootstrap_identity_pk", a.BootstrapIdentityPK != ""}}
	switch o.Method {
	case "est":
		if o.URL != "" {
			v.check(p.k("url"), checkHTTPURL(o.URL))
		} else if e := v.c.CertIssuance.EST; e == nil || (e.URLs[certID] == "" && e.URLs["default"] == "") {
			v.addf(p.k("method"), "cert %q is configured to be issued by EST, but EST URL is not configured "+
				"(set url, or cert_issuance.est.urls.%s or .default)", certID, quoteKey(certID))
		}
		v.estAuth(p, a)
	case "local_ca":
		if v.c.CertIssuance.LocalCA == nil {
			v.addf(p.k("method"), `method = "local_ca" needs a [cert_issuance.local_ca] table`)
		}
		v.notWith(p, `method = "local_ca"`, est...)
	case "self_signed":
		v.notWith(p, `method = "self_signed"`, est...)
	default:
		v.addf(p.k("method"), `must be "est", "local_ca" or "self_signed", not %q`, o.Method)
	}
	switch {
	case o.ExpiryDays <= 0:
		v.addf(p.k("expiry_days"), "must be greater than 0, not %d", o.ExpiryDays)
	case o.ExpiryDays > MaxExpiryDays:
		v.addf(p.k("expiry_days"), "must be at most %d (the longest validity Warden computes, ~292 years), not %d", MaxExpiryDays, o.ExpiryDays)
	}
	if o.Subject != nil {
		if o.CommonName != "" {
			v.addf(p.k("subject"), "set either common_name or subject, not both")
		}
		v.subject(p.k("subject"), o.Subject)
	}
}

func (v *validator) estAuth(p keyPath, a *ESTAuth) {
	pairs := []struct {
		k1, k2 string
		v1, v2 string
		cert   bool
	}{
		{"username", "password", a.Username, a.Password, false},
		{"identity_cert", "identity_pk", a.IdentityCert, a.IdentityPK, true},
		{"bootstrap_identity_cert", "bootstrap_identity_pk", a.BootstrapIdentityCert, a.BootstrapIdentityPK, true},
	}
	for _, pr := range pairs {
		if (pr.v1 == "") != (pr.v2 == "") {
			missing := pr.k2
			if pr.v1 == "" {
				missing = pr.k1
			}
			v.addf(p.k(missing), "%s and %s go together", pr.k1, pr.k2)
			continue
		}
		if pr.cert && pr.v1 != "" {
			v.check(p.k(pr.k1), checkCertRef(pr.v1))
			v.keyRef(p.k(pr.k2), pr.v2)
		}
	}
}

func (v *validator) preloadedCerts(p keyPath) {
	pc := v.c.PreloadedCerts
	for _, id := range sortedKeys(pc) {
		v.check(p.k(id), checkID(id))
		c := pc[id]
		if c.Bundle == nil {
			v.check(p.k(id), checkFileURI(c.URI))
			continue
		}
		for i, ref := range c.Bundle {
			if err := checkID(ref); err != nil {
				v.add(p.k(id).i(i), err)
			} else if other, ok := pc[ref]; ok && other.Bundle != nil {
				v.addf(p.k(id).i(i), "%q is itself a bundle; a bundle lists file-backed or issued certs", ref)
			}
		}
	}
}

func (v *validator) principals(p keyPath) {
	c := v.c
	names := map[string]int{}
	for i := range c.Principals {
		pr := &c.Principals[i]
		pp := p.i(i)
		if pr.Name != "" {
			if j, dup := names[pr.Name]; dup {
				file, key := v.origins.locate(p.i(j))
				v.addf(pp.k("name"), "duplicate principal name %q (also %s in %s)", pr.Name, key, file)
			} else {
				names[pr.Name] = i
			}
		}
		for j, t := range pr.IDType {
			switch t {
			case "device", "module":
				if c.Provisioning != nil && c.Provisioning.Source == "none" {
					v.addf(pp.k("idtype").i(j), `%q needs IoT Hub provisioning, but provisioning.source is "none"`, t)
				}
			case "local":
				if c.LocalID == nil {
					v.addf(pp.k("idtype").i(j), `"local" needs a [localid] table`)
				}
			default:
				v.addf(pp.k("idtype").i(j), `must be "device", "module" or "local", not %q`, t)
			}
		}
		if l := pr.LocalID; l != nil {
			if !pr.HasIDType("local") {
				v.addf(pp.k("localid"), `only allowed with "local" in idtype`)
			}
			if l.Type != "x509" {
				v.addf(pp.k("localid").k("type"), `must be "x509", not %q`, l.Type)
			}
			if l.Attributes != "client" && l.Attributes != "server" {
				v.addf(pp.k("localid").k("attributes"), `must be "client" or "server", not %q`, l.Attributes)
			}
		}
		for j, id := range pr.Keys {
			v.check(pp.k("keys").i(j), checkID(id))
		}
		for j, id := range pr.Certs {
			v.check(pp.k("certs").i(j), checkID(id))
		}
	}
}

// maxSocketPath is the longest path a Unix socket address holds (Linux
// sun_path is 108 bytes including the terminating NUL).
const maxSocketPath = 107

func (v *validator) warden(p keyPath) {
	w := &v.c.Warden
	v.absPath(p.k("state_dir"), w.StateDir, true)
	if v.absPath(p.k("socket_dir"), w.SocketDir, true) {
		if s := filepath.Join(w.SocketDir, "identityd.sock"); len(s) > maxSocketPath {
			v.addf(p.k("socket_dir"), "socket path %s is longer than %d bytes", s, maxSocketPath)
		}
	}
	if v.absPath(p.k("broker_socket"), w.BrokerSocket, true) {
		if len(w.BrokerSocket) > maxSocketPath {
			v.addf(p.k("broker_socket"), "longer than %d bytes", maxSocketPath)
		}
		v.brokerSocket(p.k("broker_socket"))
	}
	if g := w.SocketGroup; g != "" {
		n, err := strconv.ParseUint(g, 10, 32)
		switch {
		case errors.Is(err, strconv.ErrRange) || err == nil && n == math.MaxUint32:
			// The kernel's gid_t is 32 bits: chown wrapped a larger gid
			// (4294967296 gave the sockets to root's group 0), and
			// 4294967295 is (gid_t)-1, which leaves the group unchanged.
			v.addf(p.k("socket_group"), "gid %s is out of range 0..%d", g, uint32(math.MaxUint32-1))
		case err != nil && (len(g) > 32 || strings.ContainsAny(g, ": \t\n/") || g[0] == '-'):
			v.addf(p.k("socket_group"), "%q is neither a group name nor a numeric gid", g)
		}
	}
	v.absPath(p.k("policy").k("dir"), w.Policy.Dir, false)
	v.absPath(p.k("policy").k("decision_log"), w.Policy.DecisionLog, false)

	// Token lifetimes are whole seconds (exp is a NumericDate): the token
	// authority refuses less than a second.
	tp := p.k("tokens")
	if w.Tokens.DefaultTTL.Duration < time.Second {
		v.addf(tp.k("default_ttl"), "must be at least 1s, not %s", w.Tokens.DefaultTTL)
	}
	if w.Tokens.MaxTTL.Duration < time.Second {
		v.addf(tp.k("max_ttl"), "must be at least 1s, not %s", w.Tokens.MaxTTL)
	} else if w.Tokens.DefaultTTL.Duration > w.Tokens.MaxTTL.Duration {
		v.addf(tp.k("default_ttl"), "%s is longer than max_ttl %s", w.Tokens.DefaultTTL, w.Tokens.MaxTTL)
	}

	for _, name := range sortedKeys(w.Modules) {
		v.module(p.k("modules").k(name), name, w.Modules[name])
	}
}

// brokerSocket checks that broker_socket is a path of its own: the
// socket is put in place of whatever is at the path, so it must not be an
// aziot socket (broker.sock would be unreachable), the socket directory or
// the state directory, or a directory above them.
func (v *validator) brokerSocket(p keyPath) {
	w := &v.c.Warden
	bs := filepath.Clean(w.BrokerSocket)
	for _, name := range []string{"keyd", "certd", "identityd", "tpmd"} {
		if bs == v.c.SocketPath(name) {
			v.addf(p, "%s is also the %s socket", bs, name)
		}
	}
	for _, d := range []struct{ key, dir string }{{"socket_dir", w.SocketDir}, {"state_dir", w.StateDir}} {
		if d.dir == "" {
			continue
		}
		if dir := filepath.Clean(d.dir); dir == bs || strings.HasPrefix(dir, bs+"/") || bs == "/" {
			v.addf(p, "%s would replace %s %s", bs, d.key, d.dir)
		}
	}
}

// maxModuleMemoryMB is the most a wasm32 instance can address (65536 pages
// of 64 KiB).
const maxModuleMemoryMB = 4096

func (v *validator) module(p keyPath, name string, m Module) {
	if name == "" || strings.ContainsAny(name, " \t\n/\\") {
		v.addf(p, "invalid module name %q", name)
	}
	v.absPath(p.k("path"), m.Path, true)
	if m.SHA256 != "" {
		if b, err := hex.DecodeString(m.SHA256); err != nil || len(b) != 32 {
			v.addf(p.k("sha256"), "must be 64 hex digits (a SHA-256 digest), not %q", m.SHA256)
		}
	}
	if m.SHA256 == "" && m.Signature == "" {
		v.addf(p, "a module needs sha256 or signature (or both) to pin its integrity")
	}
	if m.Signature != "" {
		v.check(p.k("signature"), checkModuleBlob(m.Signature, "a 64-byte Ed25519 signature", ed25519.SignatureSize, false))
		if len(m.TrustedKeys) == 0 {
			v.addf(p.k("trusted_keys"), "signature needs trusted_keys, the public keys that may sign the module")
		}
	}
	for i, k := range m.TrustedKeys {
		v.check(p.k("trusted_keys").i(i), checkModuleBlob(k, "a 32-byte Ed25519 public key", ed25519.PublicKeySize, true))
	}
	if m.MaxHostCalls < 0 {
		v.addf(p.k("max_host_calls"), "must not be negative")
	}
	if m.MaxOutputBytes < 0 {
		v.addf(p.k("max_output_bytes"), "must not be negative")
	}
	if m.MemoryLimitMB < 0 || m.MemoryLimitMB > maxModuleMemoryMB {
		v.addf(p.k("memory_limit_mb"), "must be 0..%d, not %d", maxModuleMemoryMB, m.MemoryLimitMB)
	}
	if m.Timeout.Duration < 0 {
		v.addf(p.k("timeout"), "must not be negative")
	}
	for i, e := range m.Egress {
		v.check(p.k("egress").i(i), checkEgress(e))
	}
}

// checkModuleBlob accepts base64 (any alphabet, padded or not) of n bytes,
// an absolute path (read by the module host), or, when pemOK, PEM text.
func checkModuleBlob(s, what string, n int, pemOK bool) error {
	s = strings.TrimSpace(s)
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if b, err := enc.DecodeString(s); err == nil && len(b) == n {
			return nil
		}
	}
	if filepath.IsAbs(s) && !strings.ContainsRune(s, 0) {
		return nil
	}
	if pemOK && strings.HasPrefix(s, "-----BEGIN") {
		return nil
	}
	alt := "an absolute path"
	if pemOK {
		alt += ", or PEM"
	}
	return fmt.Errorf("want base64 of %s or %s", what, alt)
}

// absPath checks that s is an absolute path; empty is an error only
// when required. It reports whether s is usable.
func (v *validator) absPath(p keyPath, s string, required bool) bool {
	switch {
	case s == "":
		if required {
			v.addf(p, "must not be empty")
		}
		return false
	case !filepath.IsAbs(s):
		v.addf(p, "%q is not an absolute path", s)
		return false
	case strings.ContainsRune(s, 0):
		v.addf(p, "path contains a NUL byte")
		return false
	}
	return true
}
