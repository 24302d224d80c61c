package emulator

import (
	"testing"
)

// BenchmarkProvision: one symmetric-key registration (PUT and one poll,
// Retry-After 0) over HTTPS with a kept-alive connection: the emulator's
// share of a provisioning bench.
func BenchmarkProvision(b *testing.B) {
	em, err := New(Options{})
	if err != nil {
		b.Fatal(err)
	}
	em.Start(b.Context())
	defer em.Close()
	en, _ := em.AddSymmetricEnrollment(SymmetricEnrollment{RegistrationID: "bench"})
	c := em.Client()
	auth := dpsSAS(b, em, "bench", en.PrimaryKey)
	b.ResetTimer()
	for b.Loop() {
		if r, _ := provision(b, em, c, "bench", auth, nil); r.status != 200 {
			b.Fatalf("%d %s", r.status, r.raw)
		}
	}
}
