package conformance

import (
	"context"
	"errors"
	"testing"

	"github.com/warden-iot/warden/client/keyd"
)

// TestKeydAuthorization: over the socket, as other uids. ID routes need uid
// 0 or a principal whose keys glob matches (uid A has ["a-*"]); handle
// routes are open to every uid; a capability token confines its bearer to
// the keys it names (a handle counts as the key it resolves to).
func TestKeydAuthorization(t *testing.T) {
	needRoot(t)
	forEachBackend(t, func(t *testing.T, b keydBackend) {
		k := startKeyd(t, b, "")
		bKey := k.handle(k.call("POST", "/key", map[string]any{"keyId": "b-1", "usage": "derive,sign"}))
		bPair := k.handle(k.call("POST", "/keypair", map[string]any{"keyId": "b-kp"}))
		aKey := k.handle(k.callAs(uidA, "POST", "/key", map[string]any{"keyId": "a-1", "usage": "derive,sign"}, nil))
		k.handle(k.callAs(uidA, "POST", "/keypair", map[string]any{"keyId": "a-kp"}, nil))
		refused := func(id string) string { return "user 1000 is not authorized to access the key " + id }
		hb := func(h string) map[string]string { return map[string]string{"keyHandle": h} }
		hmacBody := func(h string) map[string]any {
			return map[string]any{"keyHandle": h, "algorithm": "HMAC-SHA256", "parameters": map[string]any{"message": "AA=="}}
		}

		t.Run("uid A", func(t *testing.T) {
			runKeydCases(t, k, uidA, []keydCase{
				{"creates its key", "POST", "/key", map[string]any{"keyId": "a-2", "usage": "sign"}, 200, ""},
				{"refused b-1", "POST", "/key", map[string]any{"keyId": "b-1", "usage": "sign"}, 401, refused("b-1")},
				{"refused importing b-2", "POST", "/key", map[string]any{"keyId": "b-2", "usage": "sign", "keyBytes": "AAAA"}, 401, refused("b-2")},
				{"refused loading b-1", "GET", "/key/b-1", nil, 401, refused("b-1")},
				{"refused a key pair", "POST", "/keypair", map[string]any{"keyId": "b-kp2"}, 401, refused("b-kp2")},
				{"refused loading b-kp", "GET", "/keypair/b-kp", nil, 401, refused("b-kp")},
				{"loads its key pair", "GET", "/keypair/a-kp", nil, 200, ""},
				{"refused moving to b", "POST", "/keypair/b-x", map[string]any{"from": "a-kp"}, 401, refused("b-x")},
				{"refused moving from b", "POST", "/keypair/a-y", map[string]any{"from": "b-kp"}, 401, refused("b-kp")},
				{"moves between its keys", "POST", "/keypair/a-kp2", map[string]any{"from": "a-kp"}, 204, ""},
			})
		})
		t.Run("handle routes are open", func(t *testing.T) {
			// uid B has no keys at all; possession of a handle is the capability.
			derived := k.handle(k.callAs(uidB, "POST", "/derivedkey", map[string]any{"baseKeyHandle": bKey, "derivationData": "AQID"}, nil))
			runKeydCases(t, k, uidB, []keydCase{
				{"sign", "POST", "/sign", hmacBody(bKey), 200, ""},
				{"sign derived", "POST", "/sign", hmacBody(derived), 200, ""},
				{"export", "POST", "/derivedkey/export", hb(derived), 200, ""},
				{"parameters", "POST", "/parameters/ec-point", hb(bPair), 200, ""},
				{"but not ID routes", "GET", "/key/b-1", nil, 401, "user 1001 is not authorized to access the key b-1"},
				{"delete", "DELETE", "/keypair", hb(bPair), 204, ""},
			})
		})
		t.Run("token scoped to key:a-1", func(t *testing.T) {
			tok := decodeMinted(t, doAs(t, uidA, k.d.post("/tokens", map[string]any{"capabilities": caps("key:a-1", "sign", "derive")}, nil)))
			aDerived := k.handle(k.callAs(uidA, "POST", "/derivedkey", map[string]any{"baseKeyHandle": aKey, "derivationData": "AQ=="}, bearer(tok.Token)))
			cases := []struct {
				name   string
				body   any
				path   string
				status int
				msg    string
			}{
				{"signs with a-1's handle", hmacBody(aKey), "/sign", 200, ""},
				{"signs with a key derived from a-1", hmacBody(aDerived), "/sign", 200, ""},
				{"refused another key's handle", hmacBody(bKey), "/sign", 401, refused("b-1")},
				{"refused an operation it does not name", hb(aDerived), "/derivedkey/export", 401, refused("a-1")},
				{"refused an ID route", map[string]any{"keyId": "a-3", "usage": "sign"}, "/key", 401, refused("a-3")},
			}
			for _, tc := range cases {
				t.Run(tc.name, func(t *testing.T) {
					r := k.callAs(uidA, "POST", tc.path, tc.body, bearer(tok.Token))
					if r.Status != tc.status || (tc.msg != "" && r.message() != tc.msg) {
						t.Fatalf("%d %s, want %d %q", r.Status, r.Body, tc.status, tc.msg)
					}
				})
			}
			// The token is uid A's: on uid B's connection it is refused.
			if r := k.callAs(uidB, "POST", "/sign", hmacBody(aKey), bearer(tok.Token)); r.Status != 401 {
				t.Fatalf("uid B with A's token: %d %s", r.Status, r.Body)
			}
		})
	})
}

// TestKeydClientToken: client/keyd sends a capability token; the token
// confines the caller (here root) to the keys it names.
func TestKeydClientToken(t *testing.T) {
	k := startKeyd(t, keydBackends[0], "")
	c := keyd.New(k.recordingSocket())
	defer c.Close()
	ctx := context.Background()
	mine, err := c.CreateKey(ctx, "tok-1", "sign")
	if err != nil {
		t.Fatal(err)
	}
	other, err := c.CreateKey(ctx, "tok-2", "sign")
	if err != nil {
		t.Fatal(err)
	}
	tok := decodeMinted(t, do(t, k.d.post("/tokens", map[string]any{"capabilities": caps("key:tok-1", "sign")}, nil)))
	tc := c.WithToken(tok.Token)
	if _, err := tc.Sign(ctx, mine, keyd.HMACSHA256, []byte("m")); err != nil {
		t.Fatalf("sign with the token's key: %v", err)
	}
	_, err = tc.Sign(ctx, other, keyd.HMACSHA256, []byte("m"))
	var ce *keyd.Error
	if !errors.As(err, &ce) || ce.Status != 401 || ce.Message != "user 0 is not authorized to access the key tok-2" {
		t.Fatalf("sign with another key: %v, want 401 naming tok-2", err)
	}
	if _, err := c.Sign(ctx, other, keyd.HMACSHA256, []byte("m")); err != nil {
		t.Fatalf("without the token: %v", err)
	}
}
