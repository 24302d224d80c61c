package policy

import (
	"context"
	"fmt"
	"testing"
)

// benchPrincipals are 1,000 principals, uids 1000..1999, each with two key
// globs: an exact ID and a prefix glob.
func benchPrincipals() []Principal {
	ps := make([]Principal, 0, 1000)
	for uid := uint32(1000); uid < 2000; uid++ {
		ps = append(ps, Principal{
			UID:  uid,
			Name: fmt.Sprintf("svc-%d", uid),
			Keys: []string{fmt.Sprintf("key-%d", uid), fmt.Sprintf("svc-%d/*", uid)},
		})
	}
	return ps
}

// BenchmarkDecide measures one decision of the default policy with 1,000
// principals: a keyd load allowed by a glob of a uid in the middle, a deny,
// and a sign allowed by a capability token. Run with -benchmem.
func BenchmarkDecide(b *testing.B) {
	e := newTestEngine(b, Options{Principals: benchPrincipals()})
	ctx := context.Background()
	cases := []struct {
		name  string
		in    *Input
		allow bool
	}{
		{"keyd-load-allow", in(1500, "keyd", "load", "key:svc-1500/device-id"), true},
		{"keyd-load-deny", in(1500, "keyd", "load", "key:svc-1501/device-id"), false},
		{"token-sign-allow", withToken(in(2500, "keyd", "sign", "key:device-id"),
			Capability{Resource: "key:device-id", Ops: []string{"sign"}}), true},
		{"token-load-allow", withToken(in(2500, "keyd", "load", "key:device-id"),
			Capability{Resource: "key:other", Ops: []string{"sign"}},
			Capability{Resource: "key:dev*", Ops: []string{"load", "sign"}}), true},
	}
	for _, tc := range cases {
		b.Run("principals=1000/"+tc.name, func(b *testing.B) {
			if d, err := e.Decide(ctx, tc.in); err != nil || d.Allow != tc.allow {
				b.Fatalf("decision %+v, err %v; want allow=%v", d, err, tc.allow)
			}
			b.ReportAllocs()
			for b.Loop() {
				if _, err := e.Decide(ctx, tc.in); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkDecideBaseline is the floor every decision pays whatever the
// policy: building the input and one OPA evaluation of a policy whose
// decision is a constant. BenchmarkDecide's figures read best as multiples
// of it (the machine's speed cancels out).
func BenchmarkDecideBaseline(b *testing.B) {
	dir := writePolicy(b, b.TempDir(), map[string]string{"a.rego": "package warden.authz\n\ndecision := {\"allow\": true, \"reasons\": [\"constant\"]}\n"})
	e := newTestEngine(b, Options{Dir: dir, Principals: benchPrincipals()})
	x := in(1500, "keyd", "load", "key:svc-1500/device-id")
	b.ReportAllocs()
	for b.Loop() {
		if _, err := e.Decide(context.Background(), x); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDecideParallel is keyd-load-allow from GOMAXPROCS goroutines:
// the hot path takes no lock of its own.
func BenchmarkDecideParallel(b *testing.B) {
	e := newTestEngine(b, Options{Principals: benchPrincipals()})
	x := in(1500, "keyd", "load", "key:svc-1500/device-id")
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := e.Decide(context.Background(), x); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkDecideLogged is keyd-load-allow with a decision log writing to a
// discarding writer: the cost Record adds to a decision.
func BenchmarkDecideLogged(b *testing.B) {
	dl := NewDecisionLog(discard{}, DecisionLogOptions{Logger: quietLogger()})
	defer dl.Close()
	e := newTestEngine(b, Options{Principals: benchPrincipals(), DecisionLog: dl})
	x := in(1500, "keyd", "load", "key:svc-1500/device-id")
	b.ReportAllocs()
	for b.Loop() {
		if _, err := e.Decide(context.Background(), x); err != nil {
			b.Fatal(err)
		}
	}
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }
