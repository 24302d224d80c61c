package certd

import (
	"fmt"
	"maps"
	"net/url"
	"path/filepath"
	"slices"
	"strconv"

	"github.com/warden-iot/warden/broker/config"
	"github.com/warden-iot/warden/certs"
)

// The store IDs aziot's `config apply` gives to certificates and keys the
// super-config names by URI (aziot-api.md §9.3). Warden reads the
// super-config directly, so certd makes the same assignment: a URI becomes
// a preloaded certificate or key under that ID.
const (
	DeviceID        = "device-id"
	LocalCAID       = "local-ca"
	estIdentityID   = "est-id"
	estBootstrapID  = "est-bootstrap-id"
	estServerCAStem = "est-server-ca-"
	tempSuffix      = "-temp"
)

// estAuth are EST credentials with every reference resolved to a store ID.
type estAuth struct {
	username, password          string
	identityCert, identityKey   string
	bootstrapCert, bootstrapKey string
}

func (a estAuth) empty() bool { return a == estAuth{} }

// certOptions is how one certificate is issued ([cert_issuance.<id>], or
// an issuance table elsewhere in the configuration).
type certOptions struct {
	method     string // est | local_ca | self_signed
	commonName string
	subject    map[string]string
	expiryDays int
	url        string // EST base URL, resolved
	auth       estAuth
}

// renewSpec is a certificate certd renews on its own.
type renewSpec struct {
	certID, keyID string
	policy        certs.RenewalPolicy
	// estIdentity: an EST identity certificate, renewed at url with
	// itself (simplereenroll) or, once expired, with the bootstrap
	// credentials of auth.
	estIdentity bool
	url         string
	auth        estAuth
}

// settings is certd's view of the configuration.
type settings struct {
	opts           map[string]certOptions
	trusted        []string // cert IDs of extra EST server roots
	localCACert    string   // "" without [cert_issuance.local_ca]
	localCAKey     string
	preloadedCerts map[string]certs.Preloaded
	preloadedKeys  map[string]string
	renew          map[string]renewSpec
	problems       []string // references that could not be used, logged
}

// PreloadedKeys returns cfg's [preloaded_keys] plus the keys that the
// certificate settings name by URI, under aziot's IDs (est-id,
// est-bootstrap-id, local-ca, device-id, …). The broker opens its key store
// with them. An explicit [preloaded_keys] entry wins.
func PreloadedKeys(cfg *config.Config) map[string]string {
	return resolve(cfg).preloadedKeys
}

// resolve builds the settings of cfg.
func resolve(cfg *config.Config) *settings {
	s := &settings{
		opts:           map[string]certOptions{},
		preloadedCerts: map[string]certs.Preloaded{},
		preloadedKeys:  map[string]string{},
		renew:          map[string]renewSpec{},
	}
	for id, p := range cfg.PreloadedCerts {
		if p.Bundle != nil {
			s.preloadedCerts[id] = certs.Preloaded{Bundle: p.Bundle}
		} else if path, err := filePath(p.URI); err == nil {
			s.preloadedCerts[id] = certs.Preloaded{Path: path}
		} else {
			s.problems = append(s.problems, fmt.Sprintf("preloaded_certs.%s: %v", id, err))
		}
	}
	for id, uri := range cfg.PreloadedKeys {
		s.preloadedKeys[id] = uri
	}
	ci := cfg.CertIssuance
	var global estAuth
	var urls map[string]string
	identityRenew := certs.DefaultRenewalPolicy
	if e := ci.EST; e != nil {
		n := 0
		for _, ref := range e.TrustedCerts {
			if config.IsURI(ref) {
				n++
				ref = s.certRef(estServerCAStem+strconv.Itoa(n), ref)
			}
			s.trusted = append(s.trusted, ref)
		}
		global = s.auth(e.Auth, "")
		urls = e.URLs
		identityRenew = renewalPolicy(e.IdentityAutoRenew)
	}
	if ca := ci.LocalCA; ca != nil {
		s.localCACert, s.localCAKey = LocalCAID, LocalCAID
		if ca.Cert.Issued != nil {
			s.addIssued(LocalCAID, ca.Cert.Issued, urls, global)
		} else {
			s.localCACert = s.certRef(LocalCAID, ca.Cert.Ref)
			s.localCAKey = s.keyRef(LocalCAID, ca.PK)
		}
	}
	if p := cfg.Provisioning; p != nil {
		var cert *config.CertSource
		var pk string
		var renew *config.AutoRenew
		if a := p.Authentication; a != nil && a.Method == "x509" {
			cert, pk = a.IdentityCert, a.IdentityPK
		}
		if a := p.Attestation; a != nil && a.Method == "x509" {
			cert, pk, renew = a.IdentityCert, a.IdentityPK, a.IdentityAutoRenew
		}
		if cert != nil && cert.Issued != nil {
			issued := *cert.Issued
			if issued.AutoRenew == nil {
				issued.AutoRenew = renew
			}
			s.addIssued(DeviceID, &issued, urls, global)
			// identityd renews the device identity through a temporary
			// certificate issued the same way (aziot's device-id-temp).
			s.opts[DeviceID+tempSuffix] = s.opts[DeviceID]
		} else if cert != nil {
			s.certRef(DeviceID, cert.Ref)
			s.keyRef(DeviceID, pk)
		}
	}
	for _, id := range slices.Sorted(maps.Keys(ci.Certs)) {
		o := ci.Certs[id]
		s.opts[id] = s.options(id, &o, urls, global)
	}
	// Every EST identity certificate renews with the EST identity policy,
	// at the URL of the first certificate (by ID) that enrolls with it.
	for _, id := range slices.Sorted(maps.Keys(s.opts)) {
		o := s.opts[id]
		if o.method != "est" || o.auth.identityCert == "" {
			continue
		}
		if _, done := s.renew[o.auth.identityCert]; done {
			continue
		}
		s.renew[o.auth.identityCert] = renewSpec{certID: o.auth.identityCert, keyID: o.auth.identityKey,
			policy: identityRenew, estIdentity: true, url: o.url, auth: o.auth}
	}
	if global.identityCert != "" && urls["default"] != "" {
		if _, done := s.renew[global.identityCert]; !done {
			s.renew[global.identityCert] = renewSpec{certID: global.identityCert, keyID: global.identityKey,
				policy: identityRenew, estIdentity: true, url: urls["default"], auth: global}
		}
	}
	return s
}

// addIssued records the options of an issuance table for id, and its
// auto_renew policy.
func (s *settings) addIssued(id string, t *config.IssuedCert, urls map[string]string, global estAuth) {
	s.opts[id] = s.options(id, &t.CertOptions, urls, global)
	if t.AutoRenew != nil {
		s.renew[id] = renewSpec{certID: id, keyID: id, policy: renewalPolicy(*t.AutoRenew)}
	}
}

// options resolves the options of certificate id: its EST URL (own url,
// else urls.<id>, else urls.default) and credentials (its own when it has
// any, else the [cert_issuance.est] ones, as aziot).
func (s *settings) options(id string, o *config.CertOptions, urls map[string]string, global estAuth) certOptions {
	out := certOptions{method: o.Method, commonName: o.CommonName, subject: o.Subject, expiryDays: o.ExpiryDays}
	if o.Method != "est" {
		return out
	}
	out.url = o.URL
	if out.url == "" {
		out.url = urls[id]
	}
	if out.url == "" {
		out.url = urls["default"]
	}
	out.auth = s.auth(o.ESTAuth, id)
	if out.auth.empty() {
		out.auth = global
	}
	return out
}

// auth resolves EST credentials; URIs become est-id[-<certId>] and
// est-bootstrap-id[-<certId>]. A bootstrap credential without an identity
// gets the identity IDs aziot's apply would give it.
func (s *settings) auth(a config.ESTAuth, certID string) estAuth {
	suffix := ""
	if certID != "" {
		suffix = "-" + certID
	}
	out := estAuth{username: a.Username, password: a.Password}
	if a.IdentityCert != "" {
		out.identityCert = s.certRef(estIdentityID+suffix, a.IdentityCert)
		out.identityKey = s.keyRef(estIdentityID+suffix, a.IdentityPK)
	}
	if a.BootstrapIdentityCert != "" {
		out.bootstrapCert = s.certRef(estBootstrapID+suffix, a.BootstrapIdentityCert)
		out.bootstrapKey = s.keyRef(estBootstrapID+suffix, a.BootstrapIdentityPK)
		if out.identityCert == "" {
			out.identityCert, out.identityKey = estIdentityID+suffix, estIdentityID+suffix
		}
	}
	return out
}

// certRef returns the cert ID of a reference: an ID as it is, a file://
// URI preloaded under id (unless [preloaded_certs] already has id).
func (s *settings) certRef(id, ref string) string {
	if !config.IsURI(ref) {
		return ref
	}
	path, err := filePath(ref)
	if err != nil {
		s.problems = append(s.problems, fmt.Sprintf("certificate %s: %v", id, err))
		return id
	}
	if _, explicit := s.preloadedCerts[id]; !explicit {
		s.preloadedCerts[id] = certs.Preloaded{Path: path}
	}
	return id
}

// keyRef returns the key ID of a reference: an ID as it is, a URI
// preloaded under id (unless [preloaded_keys] already has id), id itself
// when ref is empty.
func (s *settings) keyRef(id, ref string) string {
	switch {
	case ref == "":
		return id
	case !config.IsURI(ref):
		return ref
	}
	if _, explicit := s.preloadedKeys[id]; !explicit {
		s.preloadedKeys[id] = ref
	}
	return id
}

// filePath turns file:///abs/path into /abs/path.
func filePath(uri string) (string, error) {
	u, err := url.Parse(uri)
	if err != nil {
		return "", fmt.Errorf("invalid URI %q: %w", uri, err)
	}
	if u.Scheme != "file" || (u.Host != "" && u.Host != "localhost") || !filepath.IsAbs(u.Path) {
		return "", fmt.Errorf("%q is not a file:///absolute/path URI", uri)
	}
	return filepath.Clean(u.Path), nil
}

// renewalPolicy converts a configured auto-renewal policy.
func renewalPolicy(a config.AutoRenew) certs.RenewalPolicy {
	p := certs.RenewalPolicy{RotateKey: a.RotateKey,
		Threshold: certs.Period{Percent: a.Threshold.Percent, Duration: a.Threshold.Period},
		Retry:     certs.Period{Percent: a.Retry.Percent, Duration: a.Retry.Period}}
	d := certs.DefaultRenewalPolicy
	if p.Threshold == (certs.Period{}) {
		p.Threshold = d.Threshold
	}
	if p.Retry == (certs.Period{}) {
		p.Retry = d.Retry
	}
	return p
}
