package pkcs11

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"sync"
	"testing"

	"github.com/miekg/pkcs11"

	"github.com/warden-iot/warden/hsm"
)

// BenchmarkSoftHSMSignDirect compares ECDSA P-256 signing through the
// Backend (URI parsing, session pool, handle cache, DER encoding) with the
// same token called directly through miekg/pkcs11, one session per goroutine
// (the baseline), and with Go's crypto/ecdsa (the in-process limit). ns/op is
// wall time per signature with g goroutines signing at once.
func BenchmarkSoftHSMSignDirect(b *testing.B) {
	backend, base := newTestBackend(b)
	ctx := context.Background()
	loc := base.WithObject("bench-ec").String()
	if err := backend.CreateKeyPair(ctx, loc, []hsm.Algorithm{hsm.ECP256}); err != nil {
		b.Fatal(err)
	}
	digest := sha256.Sum256([]byte("benchmark"))
	goKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)

	for _, g := range []int{1, 8} {
		b.Run(fmt.Sprintf("backend/goroutines=%d", g), func(b *testing.B) {
			parallel(b, g, func(int) func() error {
				return func() error {
					_, err := backend.SignECDSA(ctx, loc, digest[:])
					return err
				}
			})
		})
		b.Run(fmt.Sprintf("softhsm-direct/goroutines=%d", g), func(b *testing.B) {
			p := backend.p // the same loaded module; raw calls, no pool or cache
			sessions := make([]pkcs11.SessionHandle, g)
			keys := make([]pkcs11.ObjectHandle, g)
			for i := range g {
				s, err := p.OpenSession(slotOf(b, backend, base), pkcs11.CKF_SERIAL_SESSION|pkcs11.CKF_RW_SESSION)
				if err != nil {
					b.Fatal(err)
				}
				defer p.CloseSession(s)
				if err := p.Login(s, pkcs11.CKU_USER, testPIN); err != nil && code(err) != pkcs11.CKR_USER_ALREADY_LOGGED_IN {
					b.Fatal(err)
				}
				if err := p.FindObjectsInit(s, []*pkcs11.Attribute{
					pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_PRIVATE_KEY),
					pkcs11.NewAttribute(pkcs11.CKA_LABEL, "bench-ec"),
				}); err != nil {
					b.Fatal(err)
				}
				hs, _, err := p.FindObjects(s, 1)
				p.FindObjectsFinal(s)
				if err != nil || len(hs) != 1 {
					b.Fatal("find the key:", err)
				}
				sessions[i], keys[i] = s, hs[0]
			}
			m := []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_ECDSA, nil)}
			parallel(b, g, func(w int) func() error {
				s, h := sessions[w], keys[w]
				return func() error {
					if err := p.SignInit(s, m, h); err != nil {
						return err
					}
					_, err := p.Sign(s, digest[:])
					return err
				}
			})
		})
		b.Run(fmt.Sprintf("go-ecdsa/goroutines=%d", g), func(b *testing.B) {
			parallel(b, g, func(int) func() error {
				return func() error {
					_, err := ecdsa.SignASN1(rand.Reader, goKey, digest[:])
					return err
				}
			})
		})
	}
}

// slotOf returns the slot of base's token.
func slotOf(tb testing.TB, b *Backend, base *URI) uint {
	t, err := b.token(context.Background(), base)
	if err != nil {
		tb.Fatal(err)
	}
	return t.slot
}

// parallel runs b.N operations on g goroutines; newOp(w) makes worker w's
// operation. It reports signatures per second besides ns/op.
func parallel(b *testing.B, g int, newOp func(w int) func() error) {
	ops := make([]func() error, g)
	for w := range g {
		ops[w] = newOp(w)
	}
	var wg sync.WaitGroup
	errs := make(chan error, g)
	b.ResetTimer()
	for w := range g {
		n := b.N / g
		if w < b.N%g {
			n++
		}
		wg.Go(func() {
			for range n {
				if err := ops[w](); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	b.StopTimer()
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "signs/s")
}
