package capabilities

import (
	"slices"
	"testing"
	"time"
)

func TestAttenuateScope(t *testing.T) {
	for _, tt := range withinCases {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, Options{})
			parent, _ := f.mint(t, 1000, tt.parent, 0)
			_, _, err := f.a.Attenuate(ctx, parent, 1000, tt.child, 0, 1000)
			if tt.want {
				wantErr(t, err, nil)
			} else {
				wantErr(t, err, ErrWiden)
			}
		})
	}
}

func TestAttenuate(t *testing.T) {
	f := newFixture(t, Options{MaxTTL: 2 * time.Hour})
	parent, p := f.mint(t, 1000, caps("key:*=sign,encrypt"), 10*time.Minute)
	start := f.clock.Now()
	child := caps("key:device-id=sign")
	tests := []struct {
		name      string
		token     string
		callerUID uint32
		caps      []Capability
		ttl       time.Duration
		toUID     uint32
		clock     time.Duration // moved before attenuating
		wantExp   time.Time
		want      error
	}{
		{name: "shorter ttl", token: parent, callerUID: 1000, caps: child, ttl: time.Minute, toUID: 1000,
			wantExp: start.Add(time.Minute)},
		{name: "longer ttl is cut to the parent's expiry", token: parent, callerUID: 1000, caps: child, ttl: time.Hour,
			toUID: 1000, wantExp: p.Expiry},
		{name: "default ttl is cut to the parent's expiry", token: parent, callerUID: 1000, caps: child, toUID: 1000,
			wantExp: p.Expiry},
		{name: "later attenuation still ends with the parent", token: parent, callerUID: 1000, caps: child,
			ttl: 5 * time.Minute, toUID: 1000, clock: 8 * time.Minute, wantExp: p.Expiry},
		{name: "to another uid", token: parent, callerUID: 1000, caps: child, ttl: time.Minute, toUID: 2000,
			wantExp: start.Add(time.Minute)},
		{name: "ttl over max", token: parent, callerUID: 1000, caps: child, ttl: 3 * time.Hour, toUID: 1000, want: ErrTTL},
		{name: "parent of another uid", token: parent, callerUID: 2000, caps: child, toUID: 2000, want: ErrWrongUID},
		{name: "parent expired", token: parent, callerUID: 1000, caps: child, toUID: 1000, clock: time.Hour, want: ErrExpired},
		{name: "parent forged", token: parent + "x", callerUID: 1000, caps: child, toUID: 1000, want: ErrInvalid},
		{name: "empty scope", token: parent, callerUID: 1000, toUID: 1000, want: ErrInvalidRequest},
		{name: "bad resource", token: parent, callerUID: 1000, caps: caps("key:a**=sign"), toUID: 1000, want: ErrInvalidRequest},
		{name: "wider scope", token: parent, callerUID: 1000, caps: caps("cert:*=get"), toUID: 1000, want: ErrWiden},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f.clock.t = start.Add(tt.clock)
			tok, c, err := f.a.Attenuate(ctx, tt.token, tt.callerUID, tt.caps, tt.ttl, tt.toUID)
			wantErr(t, err, tt.want)
			if err != nil {
				return
			}
			if !c.Expiry.Equal(tt.wantExp) {
				t.Fatalf("child expiry %v, want %v", c.Expiry, tt.wantExp)
			}
			if c.Subject != p.Subject || c.Parent != p.ID || !slices.Equal(c.Ancestors, []string{p.ID}) || c.UID != tt.toUID {
				t.Fatalf("child claims %+v", c)
			}
			v, err := f.a.Verify(ctx, tok, tt.toUID)
			if err != nil {
				t.Fatal(err)
			}
			if v.Parent != p.ID || !slices.Equal(v.Ancestors, []string{p.ID}) || !v.Covers("key:device-id", "sign") || v.Covers("key:device-id", "encrypt") {
				t.Fatalf("verified child claims %+v", v)
			}
			if tt.toUID != tt.callerUID {
				_, err := f.a.Verify(ctx, tok, tt.callerUID)
				wantErr(t, err, ErrWrongUID)
			}
		})
	}
}

func TestAttenuateChainDepth(t *testing.T) {
	f := newFixture(t, Options{})
	tok, _ := f.mint(t, 1, signCap, 0)
	for range maxChain {
		next, _, err := f.a.Attenuate(ctx, tok, 1, signCap, 0, 1)
		if err != nil {
			t.Fatal(err)
		}
		tok = next
	}
	_, _, err := f.a.Attenuate(ctx, tok, 1, signCap, 0, 1)
	wantErr(t, err, ErrInvalidRequest)
}

// TestRevokeChain revokes one token of a four-token chain and checks that it
// and its descendants fail and its ancestors do not, before and after a
// restart.
func TestRevokeChain(t *testing.T) {
	for revoked := range 4 {
		f := newFixture(t, Options{})
		tok, _ := f.mint(t, 1, caps("key:*=sign"), time.Hour)
		toks := []string{tok}
		var claims []*Claims
		for i := range 4 {
			c, err := f.a.Verify(ctx, toks[i], 1)
			if err != nil {
				t.Fatal(err)
			}
			claims = append(claims, c)
			if i < 3 {
				child, _, err := f.a.Attenuate(ctx, toks[i], 1, caps("key:*=sign"), 0, 1)
				if err != nil {
					t.Fatal(err)
				}
				toks = append(toks, child)
			}
		}
		if got := claims[3].Ancestors; !slices.Equal(got, []string{claims[0].ID, claims[1].ID, claims[2].ID}) {
			t.Fatalf("great-grandchild ancestors %v", got)
		}
		if err := f.a.Revoke(ctx, claims[revoked].ID, claims[revoked].Expiry); err != nil {
			t.Fatal(err)
		}
		for _, a := range []*Authority{f.a, f.restart(t)} {
			for i, tok := range toks {
				_, err := a.Verify(ctx, tok, 1)
				if i >= revoked {
					wantErr(t, err, ErrRevoked)
				} else {
					wantErr(t, err, nil)
				}
			}
		}
	}
}
