package config

import (
	"encoding/base64"
	"fmt"
	"reflect"
	"strings"
)

// Provisioning is [provisioning]. Source selects which other keys apply:
//   - "manual": ConnectionString, or IothubHostname + DeviceID +
//     Authentication;
//   - "dps": GlobalEndpoint, IDScope, Attestation, optional Payload;
//   - "none": nothing else (local identities only).
type Provisioning struct {
	// Source (source) is "manual", "dps" or "none"; required.
	Source string `toml:"source,required"`
	// ConnectionString (connection_string) is
	// "HostName=…;DeviceId=…;SharedAccessKey=<base64>".
	ConnectionString string `toml:"connection_string,omitempty"`
	// IothubHostname (iothub_hostname) is the IoT Hub of manual provisioning.
	IothubHostname string `toml:"iothub_hostname,omitempty"`
	// DeviceID (device_id) is the device of manual provisioning.
	DeviceID string `toml:"device_id,omitempty"`
	// Authentication ([provisioning.authentication]) is the credential of
	// explicit manual provisioning.
	Authentication *ManualAuthentication `toml:"authentication,omitempty"`
	// GlobalEndpoint (global_endpoint) is the DPS endpoint URL.
	GlobalEndpoint string `toml:"global_endpoint,omitempty"`
	// IDScope (id_scope, alias scope_id) is the DPS ID scope.
	IDScope string `toml:"id_scope,omitempty" alias:"scope_id"`
	// Payload (payload = { uri }) is a JSON file sent with the DPS request.
	Payload *Payload `toml:"payload,omitempty"`
	// Attestation ([provisioning.attestation]) is the DPS credential.
	Attestation *Attestation `toml:"attestation,omitempty"`
}

// ManualAuthentication is [provisioning.authentication]: Method "sas" uses
// DeviceIDPK; "x509" uses IdentityCert (+ IdentityPK unless the cert is
// issued).
type ManualAuthentication struct {
	Method       string        `toml:"method,required"`
	DeviceIDPK   *SymmetricKey `toml:"device_id_pk,omitempty"`
	IdentityCert *CertSource   `toml:"identity_cert,omitempty"`
	IdentityPK   string        `toml:"identity_pk,omitempty"`
}

// Attestation is [provisioning.attestation]: Method "symmetric_key" uses
// RegistrationID + SymmetricKey; "x509" uses IdentityCert (+ IdentityPK
// unless issued), an optional RegistrationID (name or subject) and
// IdentityAutoRenew; "tpm" uses RegistrationID.
type Attestation struct {
	Method         string          `toml:"method,required"`
	RegistrationID *RegistrationID `toml:"registration_id,omitempty"`
	SymmetricKey   *SymmetricKey   `toml:"symmetric_key,omitempty"`
	IdentityCert   *CertSource     `toml:"identity_cert,omitempty"`
	IdentityPK     string          `toml:"identity_pk,omitempty"`
	// IdentityAutoRenew (identity_auto_renew, alias auto_renew) renews the
	// device identity certificate (identityd's form; the super-config puts
	// auto_renew inside the identity_cert issuance table).
	IdentityAutoRenew *AutoRenew `toml:"identity_auto_renew,omitempty" alias:"auto_renew"`
}

// SymmetricKey is { value = "<base64>" } (the key itself, padding optional)
// or { uri = "file://…" | "pkcs11:…" } (where the key is).
type SymmetricKey struct {
	// Value (value) is the key itself, base64.
	Value string `toml:"value,omitempty"`
	// URI (uri) is where the key is: a file:// or pkcs11: URI.
	URI string `toml:"uri,omitempty"`
}

// Bytes decodes Value, with or without base64 padding.
func (k *SymmetricKey) Bytes() ([]byte, error) {
	return decodeBase64(k.Value)
}

func decodeBase64(s string) ([]byte, error) {
	b, err := base64.RawStdEncoding.DecodeString(strings.TrimRight(s, "="))
	if err != nil {
		return nil, fmt.Errorf("invalid base64: %w", err)
	}
	return b, nil
}

// Payload is payload = { uri = "file://…json" }.
type Payload struct {
	URI string `toml:"uri,required"`
}

// RegistrationID is a DPS registration ID: a plain name, or (x509 only) a
// subject table such as { CN = "my-device", L = "AQ" }.
type RegistrationID struct {
	// Name is set when the ID is given as a string.
	Name string
	// Subject is set (non-nil) when the ID is given as a subject table.
	Subject map[string]string
}

func (r *RegistrationID) decodeTOML(d *decoder, p keyPath, data any) {
	switch v := data.(type) {
	case string:
		*r = RegistrationID{Name: v}
	case map[string]any:
		r.Name = ""
		d.value(p, v, reflect.ValueOf(&r.Subject).Elem())
	default:
		d.typeErr(p, "a string or a subject table", data)
	}
}

func (r RegistrationID) encodeTOML() any {
	if r.Subject != nil {
		return r.Subject
	}
	return r.Name
}

// CertSource is a certificate given either as a reference to an existing one
// (a file:// URI, or a cert ID) or as a table saying how to issue it.
type CertSource struct {
	// Ref is set when the certificate is given as a string (see IsURI).
	Ref string
	// Issued is set when the certificate is given as an issuance table.
	Issued *IssuedCert
}

func (c *CertSource) decodeTOML(d *decoder, p keyPath, data any) {
	switch v := data.(type) {
	case string:
		*c = CertSource{Ref: v}
	case map[string]any:
		c.Ref = ""
		d.value(p, v, reflect.ValueOf(&c.Issued).Elem())
	default:
		d.typeErr(p, "a string (URI) or a table (issuance options)", data)
	}
}

func (c CertSource) encodeTOML() any {
	if c.Issued != nil {
		return c.Issued
	}
	return c.Ref
}

// CertOptions is how a certificate is issued: [cert_issuance.<certId>], and
// the core of an issuance table.
type CertOptions struct {
	// Method (method) is "est", "local_ca" or "self_signed"; required.
	Method string `toml:"method,required"`
	// CommonName (common_name) overrides the CSR's subject CN.
	CommonName string `toml:"common_name,omitempty"`
	// Subject (subject) overrides the CSR's subject, e.g. { CN, L, ST }.
	Subject map[string]string `toml:"subject,omitempty"`
	// ExpiryDays (expiry_days) is the validity of locally issued certs, > 0;
	// default 30.
	ExpiryDays int `toml:"expiry_days"`
	// URL (url) is the EST base URL for this cert (est only).
	URL string `toml:"url,omitempty"`
	// ESTAuth are this cert's EST credentials (est only).
	ESTAuth
}

func (o *CertOptions) setDefaults() { o.ExpiryDays = DefaultExpiryDays }

// IssuedCert is an issuance table in place of a certificate URI
// (identity_cert = { method = … }, [cert_issuance.local_ca] cert = { … }).
type IssuedCert struct {
	CertOptions
	// AutoRenew (auto_renew) renews the certificate before it expires.
	AutoRenew *AutoRenew `toml:"auto_renew,omitempty"`
}

// ESTAuth are EST client credentials: HTTP basic and/or TLS client
// certificate, with an optional bootstrap certificate used to obtain the
// identity certificate. Values are file:// / pkcs11: URIs or store IDs.
type ESTAuth struct {
	Username              string `toml:"username,omitempty"`
	Password              string `toml:"password,omitempty"`
	IdentityCert          string `toml:"identity_cert,omitempty"`
	IdentityPK            string `toml:"identity_pk,omitempty"`
	BootstrapIdentityCert string `toml:"bootstrap_identity_cert,omitempty"`
	BootstrapIdentityPK   string `toml:"bootstrap_identity_pk,omitempty"`
}

// AutoRenew is an auto-renewal policy { rotate_key, threshold, retry }.
type AutoRenew struct {
	// RotateKey (rotate_key) generates a new key at renewal; default true.
	RotateKey bool `toml:"rotate_key"`
	// Threshold (threshold) is when to renew; default "80%".
	Threshold RenewalPolicy `toml:"threshold"`
	// Retry (retry) is the retry period after a failure; default "4%".
	Retry RenewalPolicy `toml:"retry"`
}

func (a *AutoRenew) setDefaults() {
	*a = AutoRenew{RotateKey: true, Threshold: RenewalPolicy{Percent: 80}, Retry: RenewalPolicy{Percent: 4}}
}

// CertIssuance is [cert_issuance]: the EST and local-CA settings and, under
// any other name, the options of the certificate with that ID.
type CertIssuance struct {
	// EST ([cert_issuance.est]) are the EST defaults.
	EST *EST
	// LocalCA ([cert_issuance.local_ca]) is the local CA.
	LocalCA *LocalCA
	// Certs ([cert_issuance.<certId>]) are per-certificate options.
	Certs map[string]CertOptions
}

func (c *CertIssuance) decodeTOML(d *decoder, p keyPath, data any) {
	m, ok := data.(map[string]any)
	if !ok {
		d.typeErr(p, "a table", data)
		return
	}
	for _, k := range sortedKeys(m) {
		switch k {
		case "est":
			d.value(p.k(k), m[k], reflect.ValueOf(&c.EST).Elem())
		case "local_ca":
			d.value(p.k(k), m[k], reflect.ValueOf(&c.LocalCA).Elem())
		default:
			if c.Certs == nil {
				c.Certs = map[string]CertOptions{}
			}
			var o CertOptions
			o.setDefaults()
			d.value(p.k(k), m[k], reflect.ValueOf(&o).Elem())
			c.Certs[k] = o
		}
	}
}

func (c CertIssuance) encodeTOML() any {
	m := map[string]any{}
	if c.EST != nil {
		m["est"] = c.EST
	}
	if c.LocalCA != nil {
		m["local_ca"] = c.LocalCA
	}
	for id, o := range c.Certs {
		m[id] = o
	}
	if len(m) == 0 {
		return nil
	}
	return m
}

// EST is [cert_issuance.est]. The auth keys are also accepted directly in
// the table, as certd's own config writes them.
type EST struct {
	// TrustedCerts (trusted_certs) are extra roots for the EST server's TLS
	// certificate (file:// URIs or cert IDs).
	TrustedCerts []string `toml:"trusted_certs,omitempty"`
	// Auth ([cert_issuance.est.auth]) are the default EST credentials.
	Auth ESTAuth `toml:"auth,omitempty,flatten"`
	// IdentityAutoRenew ([cert_issuance.est.identity_auto_renew]) renews the
	// EST identity certificates; always on.
	IdentityAutoRenew AutoRenew `toml:"identity_auto_renew"`
	// URLs ([cert_issuance.est.urls]) maps cert IDs, or "default", to EST
	// base URLs.
	URLs map[string]string `toml:"urls,omitempty"`
}

func (e *EST) setDefaults() { e.IdentityAutoRenew.setDefaults() }

// LocalCA is [cert_issuance.local_ca]: Cert is an existing certificate (URI
// or ID) with its key PK, or an issuance table (the key is then generated).
type LocalCA struct {
	// Cert (cert) is the CA certificate; required.
	Cert CertSource `toml:"cert,required"`
	// PK (pk) is the CA key (a key URI or ID) when Cert is a reference.
	PK string `toml:"pk,omitempty"`
}

// PreloadedCert is a [preloaded_certs] entry: a file:// URI, or a bundle of
// other cert IDs.
type PreloadedCert struct {
	// URI is set when the entry is a string.
	URI string
	// Bundle is set (non-nil) when the entry is an array of cert IDs.
	Bundle []string
}

func (c *PreloadedCert) decodeTOML(d *decoder, p keyPath, data any) {
	switch v := data.(type) {
	case string:
		*c = PreloadedCert{URI: v}
	case []any, []map[string]any:
		c.URI = ""
		d.value(p, v, reflect.ValueOf(&c.Bundle).Elem())
	default:
		d.typeErr(p, "a file:// URI or an array of cert IDs", data)
	}
}

func (c PreloadedCert) encodeTOML() any {
	if c.Bundle != nil {
		return c.Bundle
	}
	return c.URI
}
