package keyd

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"strings"

	"github.com/warden-iot/warden/broker/api"
	"github.com/warden-iot/warden/hsm"
)

// Request bodies are decoded with broker/api's serde-like fields; the
// short names below keep the request types readable.
type (
	str        = api.String
	fieldState = api.FieldState
)

const (
	absent    = api.FieldAbsent
	null      = api.FieldNull
	present   = api.FieldPresent
	wrongType = api.FieldWrongType
	badValue  = api.FieldBadValue
)

// bytesField is a base64 (standard, padded) JSON string member.
type bytesField struct {
	b     []byte
	state fieldState
}

// UnmarshalJSON decodes the base64 string, or records why it could not.
func (f *bytesField) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		f.state = null
		return nil
	}
	if len(b) < 2 || b[0] != '"' || b[len(b)-1] != '"' {
		f.state = wrongType
		return nil
	}
	raw := b[1 : len(b)-1]
	if bytes.IndexByte(raw, '\\') >= 0 {
		// An escaped string: let encoding/json unescape it first.
		var s string
		if json.Unmarshal(b, &s) != nil {
			f.state = wrongType
			return nil
		}
		raw = []byte(s)
	}
	f.b = make([]byte, base64.StdEncoding.DecodedLen(len(raw)))
	n, err := base64.StdEncoding.Decode(f.b, raw)
	if err != nil {
		f.state, f.b = badValue, nil
		return nil
	}
	f.b, f.state = f.b[:n], present
	return nil
}

const (
	expString = "a string"
	expBase64 = "a base64-encoded string"
)

// createKeyRequest is K1's body.
type createKeyRequest struct {
	KeyID    str        `json:"keyId"`
	Usage    str        `json:"usage"`
	KeyBytes bytesField `json:"keyBytes"`
	usage    hsm.Usage
}

func (r *createKeyRequest) check() error {
	if err := r.KeyID.State.Check("keyId", expString); err != nil {
		return err
	}
	if err := r.Usage.State.Check("usage", "KeyUsage"); err != nil {
		return err
	}
	u, err := hsm.ParseUsage(r.Usage.Value)
	if err != nil {
		bad := r.Usage.Value
		for _, part := range strings.Split(r.Usage.Value, ",") {
			if _, e := hsm.ParseUsage(part); e != nil {
				bad = part
				break
			}
		}
		return api.Unprocessable("invalid value: string %q, expected KeyUsage", bad)
	}
	r.usage = u
	return r.KeyBytes.state.CheckOptional("keyBytes", expBase64)
}

// createKeyPairRequest is K4's body.
type createKeyPairRequest struct {
	KeyID               str `json:"keyId"`
	PreferredAlgorithms str `json:"preferredAlgorithms"`
}

func (r *createKeyPairRequest) check() error {
	if err := r.KeyID.State.Check("keyId", expString); err != nil {
		return err
	}
	return r.PreferredAlgorithms.State.CheckOptional("preferredAlgorithms", expString)
}

// moveRequest is K6's body (and the body of any POST /key/{id}).
type moveRequest struct {
	From str `json:"from"`
}

func (r *moveRequest) check() error { return r.From.State.Check("from", expString) }

// handleRequest is the body of K3, K7, K8 and K10.
type handleRequest struct {
	KeyHandle str `json:"keyHandle"`
}

func (r *handleRequest) check() error { return r.KeyHandle.State.Check("keyHandle", expString) }

// deriveRequest is K9's body.
type deriveRequest struct {
	BaseKeyHandle  str        `json:"baseKeyHandle"`
	DerivationData bytesField `json:"derivationData"`
}

func (r *deriveRequest) check() error {
	if err := r.BaseKeyHandle.State.Check("baseKeyHandle", expString); err != nil {
		return err
	}
	return r.DerivationData.state.Check("derivationData", expBase64)
}

// Sign mechanisms (K11) and encrypt mechanisms (K12, K13) as on the wire.
const (
	mechECDSA        = "ECDSA"
	mechHMACSHA256   = "HMAC-SHA256"
	mechAEAD         = "AEAD"
	mechRSAPKCS1     = "RSA-PKCS1"
	mechRSANoPadding = "RSA-NO-PADDING"
)

// signRequest is K11's body: the algorithm/parameters pair is an
// adjacently tagged enum flattened into the object.
type signRequest struct {
	KeyHandle  str         `json:"keyHandle"`
	Algorithm  str         `json:"algorithm"`
	Parameters *signParams `json:"parameters"`
	data       []byte
}

// signParams holds the members of both variants' parameters.
type signParams struct {
	Digest  bytesField `json:"digest"`
	Message bytesField `json:"message"`
}

func (r *signRequest) check() error {
	if err := r.KeyHandle.State.Check("keyHandle", expString); err != nil {
		return err
	}
	if err := r.Algorithm.State.Check("algorithm", "variant identifier"); err != nil {
		return err
	}
	if r.Algorithm.Value != mechECDSA && r.Algorithm.Value != mechHMACSHA256 {
		return unknownVariant(r.Algorithm.Value, mechECDSA, mechHMACSHA256)
	}
	if r.Parameters == nil {
		return api.Unprocessable("missing field `parameters`")
	}
	f, name := r.Parameters.Message, "message"
	if r.Algorithm.Value == mechECDSA {
		f, name = r.Parameters.Digest, "digest"
	}
	if err := f.state.Check(name, expBase64); err != nil {
		return err
	}
	r.data = f.b
	return nil
}

// cryptRequest is K12's and K13's body; data is the plaintext or ciphertext.
type cryptRequest struct {
	KeyHandle  str             `json:"keyHandle"`
	Algorithm  str             `json:"algorithm"`
	Parameters json.RawMessage `json:"parameters"`
	Plaintext  bytesField      `json:"plaintext"`
	Ciphertext bytesField      `json:"ciphertext"`
	iv, aad    []byte
}

// check validates the body of /encrypt (dataField "plaintext") or /decrypt
// ("ciphertext").
func (r *cryptRequest) check(dataField string) error {
	if err := r.KeyHandle.State.Check("keyHandle", expString); err != nil {
		return err
	}
	if err := r.Algorithm.State.Check("algorithm", "variant identifier"); err != nil {
		return err
	}
	switch r.Algorithm.Value {
	case mechAEAD:
		if len(r.Parameters) == 0 {
			return api.Unprocessable("missing field `parameters`")
		}
		var p struct{ IV, AAD bytesField }
		if err := eachMember(r.Parameters, func(k, v []byte) {
			switch {
			case keyIs(k, "iv"):
				p.IV.UnmarshalJSON(v)
			case keyIs(k, "aad"):
				p.AAD.UnmarshalJSON(v)
			}
		}); err != nil {
			return api.Unprocessable("invalid type for field `parameters`: expected struct variant Parameters::Aead")
		}
		if err := p.IV.state.Check("iv", expBase64); err != nil {
			return err
		}
		if err := p.AAD.state.Check("aad", expBase64); err != nil {
			return err
		}
		r.iv, r.aad = p.IV.b, p.AAD.b
	case mechRSAPKCS1, mechRSANoPadding:
		// A unit variant: "parameters" absent or null.
		if len(r.Parameters) != 0 && string(r.Parameters) != "null" {
			return api.Unprocessable("invalid type for field `parameters`: expected unit variant %s", r.Algorithm.Value)
		}
	default:
		return unknownVariant(r.Algorithm.Value, mechAEAD, mechRSAPKCS1, mechRSANoPadding)
	}
	if dataField == "plaintext" {
		return r.Plaintext.state.Check("plaintext", expBase64)
	}
	return r.Ciphertext.state.Check("ciphertext", expBase64)
}

// data is the plaintext (encrypt) or ciphertext (decrypt).
func (r *cryptRequest) data(dataField string) []byte {
	if dataField == "plaintext" {
		return r.Plaintext.b
	}
	return r.Ciphertext.b
}

func unknownVariant(got string, want ...string) error {
	return api.Unprocessable("unknown variant `%s`, expected one of `%s`", got, strings.Join(want, "`, `"))
}
