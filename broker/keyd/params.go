package keyd

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/asn1"
	"encoding/base64"
	"fmt"
	"math/big"

	"github.com/warden-iot/warden/broker/api"
)

// Public parameter names of K8.
const (
	paramAlgorithm   = "algorithm"
	paramECCurveOID  = "ec-curve-oid"
	paramECPoint     = "ec-point"
	paramRSAModulus  = "rsa-modulus"
	paramRSAExponent = "rsa-exponent"
)

func knownParameter(name string) bool {
	switch name {
	case paramAlgorithm, paramECCurveOID, paramECPoint, paramRSAModulus, paramRSAExponent:
		return true
	}
	return false
}

// curveOIDs are the DER encodings (tag included, as aziot's
// openssl2::EcCurve::as_oid_der) of the named curves' OIDs.
var curveOIDs = map[elliptic.Curve][]byte{}

func init() {
	for c, oid := range map[elliptic.Curve]asn1.ObjectIdentifier{
		elliptic.P256(): {1, 2, 840, 10045, 3, 1, 7},
		elliptic.P384(): {1, 3, 132, 0, 34},
		elliptic.P521(): {1, 3, 132, 0, 35},
	} {
		der, err := asn1.Marshal(oid)
		if err != nil {
			panic(err)
		}
		curveOIDs[c] = der
	}
}

// publicParameter returns parameter name of pub as keyd sends it: the
// algorithm name, or base64 of the curve OID (DER), of the compressed SEC1
// point, of the big-endian modulus or exponent. A parameter the key does
// not have is aziot's 400 `a parameter has an invalid value`.
func publicParameter(pub crypto.PublicKey, name string) (string, error) {
	b64 := base64.StdEncoding.EncodeToString
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		switch name {
		case paramAlgorithm:
			return "ECDSA", nil
		case paramECCurveOID:
			if der, ok := curveOIDs[k.Curve]; ok {
				return b64(der), nil
			}
			return "", api.InvalidParameter("", nil)
		case paramECPoint:
			return b64(elliptic.MarshalCompressed(k.Curve, k.X, k.Y)), nil //nolint:staticcheck // public point encoding
		}
	case *rsa.PublicKey:
		switch name {
		case paramAlgorithm:
			return "RSA", nil
		case paramRSAModulus:
			return b64(k.N.Bytes()), nil
		case paramRSAExponent:
			return b64(big.NewInt(int64(k.E)).Bytes()), nil
		}
	default:
		if name == paramAlgorithm {
			return "", &api.Error{Status: 400, Message: "a parameter has an invalid value",
				Err: fmt.Errorf("key is neither RSA nor EC: %T", pub)}
		}
	}
	return "", api.InvalidParameter("", nil)
}
