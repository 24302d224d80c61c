package certd

import (
	"encoding/json"
	"net/http"

	"github.com/warden-iot/warden/broker/api"
)

// Request bodies are decoded with broker/api's serde-like fields.
type (
	str        = api.String
	fieldState = api.FieldState
)

const (
	absent    = api.FieldAbsent
	null      = api.FieldNull
	present   = api.FieldPresent
	wrongType = api.FieldWrongType
)

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
	if err := r.CertID.Check("certId"); err != nil {
		return err
	}
	if err := r.CSR.Check("csr"); err != nil {
		return err
	}
	switch r.Issuer.state {
	case absent, null:
		return nil
	case wrongType:
		return api.Unprocessable("invalid type for field `issuer`: expected struct CreateCertRequestIssuer")
	}
	if err := r.Issuer.certID.Check("certId"); err != nil {
		return err
	}
	return r.Issuer.privateKeyHandle.Check("privateKeyHandle")
}

// importRequest is C2's body.
type importRequest struct {
	PEM str `json:"pem"`
}

func (r *importRequest) check() error { return r.PEM.Check("pem") }

// decode reads a required JSON body into v (aziot's 400/415/422 rules) and
// checks it.
func decode[T interface{ check() error }](w http.ResponseWriter, r *http.Request, v T) error {
	if err := api.RequireJSON(w, r, v); err != nil {
		return err
	}
	return v.check()
}
