package control

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/warden-iot/warden/broker/api"
	"github.com/warden-iot/warden/capabilities"
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
