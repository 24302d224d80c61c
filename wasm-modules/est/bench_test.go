package main

import (
	"context"
	"fmt"
	"testing"

	"github.com/warden-iot/warden/wasm-modules/est/estjob"
	"github.com/warden-iot/warden/wasm-modules/est/estpeer"
)

// BenchmarkESTEnroll is one EST enrollment (GET cacerts + POST
// simpleenroll with HTTP Basic over loopback TLS to the GlobalSign
// est v1.0.7 server) through the WASM module, beside the same module
// source built natively and run in-process against the same host calls
// (host.RunNative: same policy decisions, egress check, TLS in the host).
// It prints the ratio.
func BenchmarkESTEnroll(b *testing.B) {
	r := newRig(b, estpeer.Options{})
	job := &estjob.Job{Op: estjob.OpEnroll, URL: r.est.URL("basic"), CSR: deviceCSR(b, "bench-device"),
		Username: "estuser", Password: "estpwd", TrustCertIDs: []string{"est-ca"}, MaxWaitSeconds: 10}
	ctx := context.Background()
	per := map[bool]float64{}
	for _, native := range []bool{false, true} {
		name := "wasm"
		if native {
			name = "native"
		}
		if _, err := r.run(ctx, native, job); err != nil { // warm: compile, connections
			b.Fatal(err)
		}
		b.Run(name, func(b *testing.B) {
			for b.Loop() {
				if _, err := r.run(ctx, native, job); err != nil {
					b.Fatal(err)
				}
			}
			ms := float64(b.Elapsed().Microseconds()) / 1000 / float64(b.N)
			b.ReportMetric(ms, "ms/enroll")
			per[native] = ms
		})
	}
	// What a job costs before its first host call: instantiate, the Go
	// runtime's and packages' init, read the job, fail fast.
	var startup float64
	b.Run("wasm-startup", func(b *testing.B) {
		bad := &estjob.Job{Op: "none", URL: job.URL}
		for b.Loop() {
			if _, err := r.run(ctx, false, bad); err == nil {
				b.Fatal("an unknown op succeeded")
			}
		}
		startup = float64(b.Elapsed().Microseconds()) / 1000 / float64(b.N)
		b.ReportMetric(startup, "ms/job")
	})
	if per[false] > 0 && per[true] > 0 {
		fmt.Printf("EST enrollment (cacerts + simpleenroll, Basic, loopback TLS, GlobalSign est v1.0.7): WASM module %.2f ms "+
			"(of which %.2f ms instance start-up), same source native in-process %.2f ms, ratio %.2f\n",
			per[false], startup, per[true], per[false]/per[true])
	}
}
