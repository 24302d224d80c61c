package certd

import (
	"encoding/json"
	"fmt"
	"net/http"

	"github.com/warden-iot/warden/broker/api"
)

// The request bodies of certd, decoded as aziot's serde types: unknown
// members are ignored; a missing, null or mistyped required member is a 422
// worded as serde's ("missing field `certId`"). Members record what they
// saw and check turns it into the 422, so that the wording is ours.

type fieldState uint8

const (
	absent fieldState = iota
	null
	present
	wrongType
)

// str is a JSON string member.
type str struct {
	s     string
	state fieldState
}

// UnmarshalJSON records the string, or that the value was not one.
func (f *str) UnmarshalJSON(b []byte) error {
	switch {
	case string(b) == "null":
		f.state = null
	case json.Unmarshal(b, &f.s) == nil:
		f.state = present
	default:
		f.state = wrongType
	}
	return nil
}

// check returns the 422 for a required string member name, or nil.
func (f str) check(name string) error {
	switch f.state {
	case present:
		return nil
	case absent:
		return unprocessable("missing field `%s`", name)
	case null:
		return unprocessable("invalid type: null, expected a string (field `%s`)", name)
	}
	return unprocessable("invalid type for field `%s`: expected a string", name)
}

func unprocessable(format string, args ...any) *api.Error {
	return &api.Error{Status: http.StatusUnprocessableEntity, Message: fmt.Sprintf(format, args...)}
}

// issuerField is C1's optional issuer object.
type issuerField struct {
	state            fieldState
	certID           str
	privateKeyHandle str
}

// UnmarshalJSON decodes {"certId", "privateKeyHandle"} or null.
func (f *issuerField) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		f.state = null
		return nil
	}
	var v struct {
		CertID           str `json:"certId"`
		PrivateKeyHandle str `json:"privateKeyHandle"`
	}
	if len(b) == 0 || b[0] != '{' || json.Unmarshal(b, &v) != nil {
		f.state = wrongType
		return nil
	}
	f.state, f.certID, f.privateKeyHandle = present, v.CertID, v.PrivateKeyHandle
	return nil
}

// createRequest is C1's body.
type createRequest struct {
	CertID str         `json:"certId"`
	CSR    str         `json:"csr"`
	Issuer issuerField `json:"issuer"`
}

func (r *createRequest) check() error {
	if err := r.CertID.check("certId"); err != nil {
		return err
	}
	if err := r.CSR.check("csr"); err != nil {
		return err
	}
	switch r.Issuer.state {
	case absent, null:
		return nil
	case wrongType:
		return unprocessable("invalid type for field `issuer`: expected struct CreateCertRequestIssuer")
	}
	if err := r.Issuer.certID.check("certId"); err != nil {
		return err
	}
	return r.Issuer.privateKeyHandle.check("privateKeyHandle")
}

// importRequest is C2's body.
type importRequest struct {
	PEM str `json:"pem"`
}

func (r *importRequest) check() error { return r.PEM.check("pem") }

// decode reads a required JSON body into v (aziot's 400/415/422 rules) and
// checks it.
func decode[T interface{ check() error }](w http.ResponseWriter, r *http.Request, v T) error {
	if err := api.RequireJSON(w, r, v); err != nil {
		return err
	}
	return v.check()
}
