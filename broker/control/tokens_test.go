package control

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/asn1"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"log/slog"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/warden-iot/warden/broker/api"
	"github.com/warden-iot/warden/broker/keyd"
	"github.com/warden-iot/warden/capabilities"
	"github.com/warden-iot/warden/hsm"
	"github.com/warden-iot/warden/policy"
)

// fullQuota is an Authority whose every uid has filled its revocation
// quota: RevokeToken fails; Revoke (uncounted) works.
type fullQuota struct{ *capabilities.Authority }

func (fullQuota) RevokeToken(context.Context, *capabilities.Claims) error {
	return capabilities.ErrTooManyRevocations
}

// TestRevokeQuota: a uid revoking its own token is held to its quota (429
// when full); root revoking that uid's token is not, so that a full quota
// never keeps root from revoking a stolen token.
func TestRevokeQuota(t *testing.T) {
	ctx := context.Background()
	discard := slog.New(slog.DiscardHandler)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	auth, err := capabilities.NewAuthority(key, capabilities.Options{Logger: discard})
	if err != nil {
		t.Fatal(err)
	}
	engine, err := policy.New(ctx, policy.Options{Logger: discard})
	if err != nil {
		t.Fatal(err)
	}
	h := New(fullQuota{auth}, api.NewGuard(auth, engine, discard, nil), discard, engine.Revision).Service().Handler()
	tok, _, err := auth.Mint(ctx, "", 1000, []capabilities.Capability{{Resource: "key:k", Ops: []string{"sign"}}}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		uid  uint32
		want int
	}{{1000, http.StatusTooManyRequests}, {0, http.StatusNoContent}} {
		r := httptest.NewRequest("POST", "/tokens/revoke?api-version=2026-12-01", strings.NewReader(`{"token":"`+tok+`"}`))
		r = r.WithContext(api.WithPeer(r.Context(), api.Peer{UID: tc.uid, GID: tc.uid, PID: 1}))
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code != tc.want {
			t.Errorf("uid %d revokes uid 1000's token: %d %s, want %d", tc.uid, w.Code, w.Body, tc.want)
		}
	}
}

// TestTokenKeyOutOfReach: the broker's token key lives in the key store
// that keyd serves, but no keyd caller may use it, whatever its keys globs
// or its token's scope. Whoever can sign with it forges capability tokens
// for any uid and scope: a token for "key:*" load and sign, or a principal
// with the keys glob "*", would become every right a token can carry.
func TestTokenKeyOutOfReach(t *testing.T) {
	ctx := context.Background()
	discard := slog.New(slog.DiscardHandler)
	const tokenKeyID = capabilities.TokenKeyID
	keys, err := hsm.Open(ctx, hsm.Config{HomeDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { keys.Close() })
	if err := keys.CreateKeyPair(ctx, tokenKeyID, []hsm.Algorithm{hsm.ECP256}); err != nil {
		t.Fatal(err)
	}
	signer, err := keys.Signer(ctx, tokenKeyID)
	if err != nil {
		t.Fatal(err)
	}
	auth, err := capabilities.NewAuthority(signer, capabilities.Options{Logger: discard})
	if err != nil {
		t.Fatal(err)
	}
	const uidAllKeys, uidTokenOnly = 1000, 2000
	engine, err := policy.New(ctx, policy.Options{Logger: discard,
		Principals: []policy.Principal{{UID: uidAllKeys, Name: "backup", Keys: []string{"*"}}}})
	if err != nil {
		t.Fatal(err)
	}
	keydH := keyd.New(keys, hsm.NewHandles(keys), api.NewGuard(auth, engine, discard, nil), discard, keyd.Options{}).Service().Handler()
	call := func(uid uint32, tok, method, target string, body any) (int, map[string]any) {
		var r *http.Request
		if body == nil {
			r = httptest.NewRequest(method, target, nil)
		} else {
			b, _ := json.Marshal(body)
			r = httptest.NewRequest(method, target, bytes.NewReader(b))
			r.Header.Set("Content-Type", "application/json")
		}
		if tok != "" {
			r.Header.Set("Authorization", "Bearer "+tok)
		}
		r = r.WithContext(api.WithPeer(r.Context(), api.Peer{UID: uid, GID: uid, PID: 1}))
		w := httptest.NewRecorder()
		keydH.ServeHTTP(w, r)
		var m map[string]any
		json.Unmarshal(w.Body.Bytes(), &m)
		return w.Code, m
	}
	loadSign, _, err := auth.Mint(ctx, "", uidTokenOnly, []capabilities.Capability{{Resource: "key:*", Ops: []string{"load", "sign"}}}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		uid  uint32
		tok  string
	}{
		{"principal with keys glob *", uidAllKeys, ""},
		{"token for key:* load and sign", uidTokenOnly, loadSign},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, m := call(tc.uid, tc.tok, "GET", "/keypair/"+tokenKeyID+"?api-version=2021-05-01", nil)
			if status == http.StatusUnauthorized {
				return
			}
			handle, _ := m["keyHandle"].(string)
			if status != http.StatusOK || handle == "" {
				t.Fatalf("load of the token key: %d %v, want 401", status, m)
			}
			// Show what the handle is worth: a token for every cert and
			// identity, signed through keyd.
			now := time.Now().Unix()
			hdr, _ := json.Marshal(map[string]any{"alg": "ES256", "typ": capabilities.TokenType})
			cl, _ := json.Marshal(map[string]any{"iss": "warden", "aud": "warden", "sub": "forged", "iat": now, "nbf": now, "exp": now + 600,
				"jti": "forgedforgedforgedforg", "cnf": map[string]any{"uid": tc.uid},
				"cap": []map[string]any{{"res": "cert:*", "ops": []string{"create", "import", "delete"}}, {"res": "identity:*", "ops": []string{"create", "delete", "reprovision"}}}})
			input := base64.RawURLEncoding.EncodeToString(hdr) + "." + base64.RawURLEncoding.EncodeToString(cl)
			d := sha256.Sum256([]byte(input))
			status, m = call(tc.uid, tc.tok, "POST", "/sign?api-version=2021-05-01", map[string]any{"keyHandle": handle, "algorithm": "ECDSA", "parameters": map[string]any{"digest": d[:]}})
			der, _ := base64.StdEncoding.DecodeString(fmt.Sprint(m["signature"]))
			var sig struct{ R, S *big.Int }
			if _, err := asn1.Unmarshal(der, &sig); status != http.StatusOK || err != nil {
				t.Fatalf("keyd handed out the token key (load 200) but sign failed: %d %v", status, m)
			}
			raw := make([]byte, 64)
			sig.R.FillBytes(raw[:32])
			sig.S.FillBytes(raw[32:])
			forged := input + "." + base64.RawURLEncoding.EncodeToString(raw)
			if c, err := auth.Verify(ctx, forged, tc.uid); err == nil {
				t.Fatalf("keyd lets uid %d sign with the token key: a forged token for %v verifies", tc.uid, c.Capabilities)
			}
			t.Fatalf("keyd lets uid %d load and sign with the token key", tc.uid)
		})
	}
}
