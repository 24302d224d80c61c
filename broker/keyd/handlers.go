package keyd

import (
	"encoding/base64"
	"net/http"

	"github.com/warden-iot/warden/broker/api"
	"github.com/warden-iot/warden/hsm"
)

// writeField writes the 200 body {"<name>":"<value>"}. Values are handles,
// base64 or algorithm names: they need no escaping, and are written as
// aziot (serde_json) writes them — "&" and "=" as they are, not \u0026.
func writeField(w http.ResponseWriter, name, value string) {
	for i := 0; i < len(value); i++ {
		if c := value[i]; c < 0x20 || c == '"' || c == '\\' || c >= 0x7f {
			api.WriteJSON(w, http.StatusOK, map[string]string{name: value})
			return
		}
	}
	b := make([]byte, 0, len(name)+len(value)+8)
	b = append(b, `{"`...)
	b = append(b, name...)
	b = append(b, `":"`...)
	b = append(b, value...)
	b = append(b, `"}`...)
	writeBody(w, b)
}

// writeBody writes a 200 with the JSON body b (api.Server adds its
// Content-Length).
func writeBody(w http.ResponseWriter, b []byte) {
	w.Header()["Content-Type"] = contentTypeJSON
	w.WriteHeader(http.StatusOK)
	w.Write(b)
}

// contentTypeJSON is shared by every answer (the server only reads it).
var contentTypeJSON = []string{"application/json"}

// writeBytes writes {"<name>":"<base64 of data>"}.
func writeBytes(w http.ResponseWriter, name string, data []byte) {
	b := make([]byte, 0, len(name)+base64.StdEncoding.EncodedLen(len(data))+8)
	b = append(b, `{"`...)
	b = append(b, name...)
	b = append(b, `":"`...)
	b = base64.StdEncoding.AppendEncode(b, data)
	b = append(b, `"}`...)
	writeBody(w, b)
}

// decode reads the JSON body into v (aziot's 400/415/422 rules) and runs check.
func decode[T any](w http.ResponseWriter, r *http.Request, v *T, check func(*T) error) error {
	if err := api.RequireJSON(w, r, v); err != nil {
		return err
	}
	return check(v)
}

// K1: POST /key — create if not exists, or import (overwriting) with keyBytes.
func (s *Server) createKey(w http.ResponseWriter, r *http.Request) {
	var req createKeyRequest
	if err := decode(w, r, &req, (*createKeyRequest).check); err != nil {
		api.WriteError(w, r, s.log, err)
		return
	}
	id := req.KeyID.Value
	imp := req.KeyBytes.state == present
	op := OpCreate
	if imp {
		op = OpImport
	}
	if err := s.authorize(r, op, id, nil); err != nil {
		api.WriteError(w, r, s.log, err)
		return
	}
	if err := checkID("id", id); err != nil {
		api.WriteError(w, r, s.log, err)
		return
	}
	var err error
	if imp {
		err = s.keys.ImportKey(r.Context(), id, req.KeyBytes.b, req.usage)
		clear(req.KeyBytes.b)
	} else {
		err = s.keys.CreateKey(r.Context(), id, req.usage)
	}
	if err != nil {
		api.WriteError(w, r, s.log, storeError(err))
		return
	}
	s.writeHandle(w, r, hsm.KeyRef{Kind: hsm.KindKey, ID: id})
}

// K4: POST /keypair — create if not exists.
func (s *Server) createKeyPair(w http.ResponseWriter, r *http.Request) {
	var req createKeyPairRequest
	if err := decode(w, r, &req, (*createKeyPairRequest).check); err != nil {
		api.WriteError(w, r, s.log, err)
		return
	}
	id := req.KeyID.Value
	if err := s.authorize(r, OpCreate, id, nil); err != nil {
		api.WriteError(w, r, s.log, err)
		return
	}
	if err := checkID("id", id); err != nil {
		api.WriteError(w, r, s.log, err)
		return
	}
	// Absent or null: keyd's default. Present: aziot's parse, where an
	// empty or all-unknown list leaves no algorithm (a 400).
	algs := hsm.ParsePreferredAlgorithms("")
	if req.PreferredAlgorithms.State == present {
		algs = nil
		if req.PreferredAlgorithms.Value != "" {
			algs = hsm.ParsePreferredAlgorithms(req.PreferredAlgorithms.Value)
		}
	}
	if err := s.keys.CreateKeyPair(r.Context(), id, algs); err != nil {
		api.WriteError(w, r, s.log, storeError(err))
		return
	}
	s.writeHandle(w, r, hsm.KeyRef{Kind: hsm.KindKeyPair, ID: id})
}

// K2: GET /key/{keyId}.
func (s *Server) loadKey(w http.ResponseWriter, r *http.Request) {
	s.load(w, r, hsm.KindKey)
}

// K5: GET /keypair/{keyId}.
func (s *Server) loadKeyPair(w http.ResponseWriter, r *http.Request) {
	s.load(w, r, hsm.KindKeyPair)
}

func (s *Server) load(w http.ResponseWriter, r *http.Request, kind hsm.KeyKind) {
	id := api.PathParam(r, "keyId")
	if err := s.authorize(r, OpLoad, id, nil); err != nil {
		api.WriteError(w, r, s.log, err)
		return
	}
	if err := checkID("id", id); err != nil {
		api.WriteError(w, r, s.log, err)
		return
	}
	var err error
	if kind == hsm.KindKey {
		err = s.keys.LoadKey(r.Context(), id)
	} else {
		err = s.keys.LoadKeyPair(r.Context(), id)
	}
	if err != nil {
		api.WriteError(w, r, s.log, storeError(err))
		return
	}
	s.writeHandle(w, r, hsm.KeyRef{Kind: kind, ID: id})
}

func (s *Server) writeHandle(w http.ResponseWriter, r *http.Request, ref hsm.KeyRef) {
	h, err := s.issue(r.Context(), ref)
	if err != nil {
		api.WriteError(w, r, s.log, err)
		return
	}
	writeField(w, "keyHandle", h)
}

// K6: POST /keypair/{keyId} — move the key pair "from" to keyId.
func (s *Server) moveKeyPair(w http.ResponseWriter, r *http.Request) { s.move(w, r, true) }

// POST /key/{keyId}: aziot's move route serves both types and refuses "key".
func (s *Server) moveKey(w http.ResponseWriter, r *http.Request) { s.move(w, r, false) }

func (s *Server) move(w http.ResponseWriter, r *http.Request, keyPair bool) {
	var req moveRequest
	if err := decode(w, r, &req, (*moveRequest).check); err != nil {
		api.WriteError(w, r, s.log, err)
		return
	}
	to, from := api.PathParam(r, "keyId"), req.From.Value
	switch {
	case from == to:
		api.WriteError(w, r, s.log, errMoveIdentical)
		return
	case !keyPair:
		api.WriteError(w, r, s.log, errInvalidTypeKey)
		return
	}
	// As aziot: the source is authorized first, then the destination. The
	// source check is the move of "from" onto itself, so that a policy
	// (and a token) must grant "move" on both keys.
	details := map[string]any{"from": from}
	if err := s.authorize(r, OpMove, from, details); err != nil {
		api.WriteError(w, r, s.log, err)
		return
	}
	if err := s.authorize(r, OpMove, to, details); err != nil {
		api.WriteError(w, r, s.log, err)
		return
	}
	if err := checkID("from", from); err != nil {
		api.WriteError(w, r, s.log, err)
		return
	}
	if err := checkID("to", to); err != nil {
		api.WriteError(w, r, s.log, err)
		return
	}
	if err := s.keys.MoveKeyPair(r.Context(), from, to); err != nil {
		api.WriteError(w, r, s.log, storeError(err))
		return
	}
	api.NoContent(w)
}

// K3: DELETE /key.
func (s *Server) deleteKey(w http.ResponseWriter, r *http.Request) {
	s.delete(w, r, hsm.KindKey)
}

// K7: DELETE /keypair.
func (s *Server) deleteKeyPair(w http.ResponseWriter, r *http.Request) {
	s.delete(w, r, hsm.KindKeyPair)
}

func (s *Server) delete(w http.ResponseWriter, r *http.Request, kind hsm.KeyKind) {
	var req handleRequest
	if err := decode(w, r, &req, (*handleRequest).check); err != nil {
		api.WriteError(w, r, s.log, err)
		return
	}
	res, err := s.handleOp(r, OpDelete, req.KeyHandle.Value, "", "")
	if err != nil {
		api.WriteError(w, r, s.log, err)
		return
	}
	if res.ref.Kind != kind {
		cause := errNotKey
		if kind == hsm.KindKeyPair {
			cause = errNotKeyPair
		}
		api.WriteError(w, r, s.log, api.InvalidParameter("handle", cause))
		return
	}
	if kind == hsm.KindKey {
		err = s.keys.DeleteKey(r.Context(), res.keyID)
	} else {
		err = s.keys.DeleteKeyPair(r.Context(), res.keyID)
	}
	if err != nil {
		api.WriteError(w, r, s.log, storeError(err))
		return
	}
	api.NoContent(w)
}

// K9: POST /derivedkey — a handle for HMAC-SHA256(base, derivationData).
func (s *Server) deriveKey(w http.ResponseWriter, r *http.Request) {
	var req deriveRequest
	if err := decode(w, r, &req, (*deriveRequest).check); err != nil {
		api.WriteError(w, r, s.log, err)
		return
	}
	base, err := s.resolve(r.Context(), req.BaseKeyHandle.Value)
	if err != nil {
		api.WriteError(w, r, s.log, err)
		return
	}
	if base.ref.Kind == hsm.KindDerived {
		api.WriteError(w, r, s.log, api.InvalidParameter("handle", errNested))
		return
	}
	if err := s.authorizeHandle(r, OpDerive, base.keyID, "", ""); err != nil {
		api.WriteError(w, r, s.log, err)
		return
	}
	s.writeHandle(w, r, hsm.KeyRef{Kind: hsm.KindDerived, Base: req.BaseKeyHandle.Value, Data: req.DerivationData.b})
}

// K10: POST /derivedkey/export — the derived key's bytes (aziot's one
// export of key material; the policy operation "export" gates it).
func (s *Server) exportDerivedKey(w http.ResponseWriter, r *http.Request) {
	var req handleRequest
	if err := decode(w, r, &req, (*handleRequest).check); err != nil {
		api.WriteError(w, r, s.log, err)
		return
	}
	res, err := s.handleOp(r, OpExport, req.KeyHandle.Value, "", "")
	if err != nil {
		api.WriteError(w, r, s.log, err)
		return
	}
	if res.ref.Kind != hsm.KindDerived {
		api.WriteError(w, r, s.log, api.InvalidParameter("handle", errNotDerived))
		return
	}
	key, err := s.keys.DeriveKey(r.Context(), res.keyID, res.ref.Data)
	if err != nil {
		api.WriteError(w, r, s.log, storeError(err))
		return
	}
	writeBytes(w, "key", key)
	clear(key)
}

// K8: POST /parameters/{parameterName} — public parameters of a key pair.
func (s *Server) parameters(w http.ResponseWriter, r *http.Request) {
	var req handleRequest
	if err := decode(w, r, &req, (*handleRequest).check); err != nil {
		api.WriteError(w, r, s.log, err)
		return
	}
	name := api.PathParam(r, "parameterName")
	res, err := s.handleOp(r, OpParameters, req.KeyHandle.Value, "parameter", name)
	if err != nil {
		api.WriteError(w, r, s.log, err)
		return
	}
	if res.ref.Kind != hsm.KindKeyPair {
		api.WriteError(w, r, s.log, api.InvalidParameter("handle", errNotKeyPair))
		return
	}
	if !knownParameter(name) {
		api.WriteError(w, r, s.log, errInvalidArgument)
		return
	}
	pub, err := s.keys.PublicKey(r.Context(), res.keyID)
	if err != nil {
		api.WriteError(w, r, s.log, storeError(err))
		return
	}
	v, err := publicParameter(pub, name)
	if err != nil {
		api.WriteError(w, r, s.log, err)
		return
	}
	writeField(w, "value", v)
}

// K11: POST /sign.
func (s *Server) sign(w http.ResponseWriter, r *http.Request) {
	var req signRequest
	if err := decode(w, r, &req, (*signRequest).check); err != nil {
		api.WriteError(w, r, s.log, err)
		return
	}
	mech := req.Algorithm.Value
	res, err := s.handleOp(r, OpSign, req.KeyHandle.Value, "algorithm", mech)
	if err != nil {
		api.WriteError(w, r, s.log, err)
		return
	}
	ctx := r.Context()
	var sig []byte
	switch {
	case res.ref.Kind == hsm.KindKeyPair && mech == mechECDSA:
		sig, err = s.keys.SignECDSA(ctx, res.keyID, req.data)
	case res.ref.Kind == hsm.KindKey && mech == mechHMACSHA256:
		sig, err = s.keys.HMACSHA256(ctx, res.keyID, req.data)
	case res.ref.Kind == hsm.KindDerived && mech == mechHMACSHA256:
		var key []byte
		if key, err = s.keys.DeriveKey(ctx, res.keyID, res.ref.Data); err == nil {
			sig = hsm.DerivedHMACSHA256(key, req.data)
			clear(key)
		}
	default:
		api.WriteError(w, r, s.log, api.InvalidParameter("mechanism", errMechanism))
		return
	}
	if err != nil {
		api.WriteError(w, r, s.log, storeError(err))
		return
	}
	writeBytes(w, "signature", sig)
}

// K12: POST /encrypt.
func (s *Server) encrypt(w http.ResponseWriter, r *http.Request) { s.crypt(w, r, "plaintext") }

// K13: POST /decrypt (AEAD only).
func (s *Server) decrypt(w http.ResponseWriter, r *http.Request) { s.crypt(w, r, "ciphertext") }

func (s *Server) crypt(w http.ResponseWriter, r *http.Request, dataField string) {
	var req cryptRequest
	if err := api.RequireJSON(w, r, &req); err != nil {
		api.WriteError(w, r, s.log, err)
		return
	}
	if err := req.check(dataField); err != nil {
		api.WriteError(w, r, s.log, err)
		return
	}
	enc := dataField == "plaintext"
	op := OpDecrypt
	if enc {
		op = OpEncrypt
	}
	mech := req.Algorithm.Value
	res, err := s.handleOp(r, op, req.KeyHandle.Value, "algorithm", mech)
	if err != nil {
		api.WriteError(w, r, s.log, err)
		return
	}
	ctx, data, kind := r.Context(), req.data(dataField), res.ref.Kind
	var out []byte
	switch {
	case kind == hsm.KindKey && mech == mechAEAD && enc:
		out, err = s.keys.Encrypt(ctx, res.keyID, req.iv, req.aad, data)
	case kind == hsm.KindKey && mech == mechAEAD:
		out, err = s.keys.Decrypt(ctx, res.keyID, req.iv, req.aad, data)
	case kind == hsm.KindDerived && mech == mechAEAD:
		var key []byte
		if key, err = s.keys.DeriveKey(ctx, res.keyID, res.ref.Data); err == nil {
			if enc {
				out, err = hsm.DerivedEncrypt(key, req.iv, req.aad, data)
			} else {
				out, err = hsm.DerivedDecrypt(key, req.iv, req.aad, data)
			}
			clear(key)
		}
	case kind == hsm.KindKeyPair && enc && mech == mechRSAPKCS1:
		out, err = s.keys.RSAPrivate(ctx, res.keyID, hsm.RSAPKCS1, data)
	case kind == hsm.KindKeyPair && enc && mech == mechRSANoPadding:
		out, err = s.keys.RSAPrivate(ctx, res.keyID, hsm.RSANoPadding, data)
	default:
		api.WriteError(w, r, s.log, api.InvalidParameter("mechanism", errMechanism))
		return
	}
	if err != nil {
		api.WriteError(w, r, s.log, storeError(err))
		return
	}
	if enc {
		writeBytes(w, "ciphertext", out)
	} else {
		writeBytes(w, "plaintext", out)
	}
}
