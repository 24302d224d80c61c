package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/warden-iot/warden/wasm-modules/est/estjob"
	"github.com/warden-iot/warden/wasm-modules/guest"
)

const base = "https://est.test/.well-known/est"

// run invokes the module's handler natively against h.
func run(t *testing.T, h *fakeHost, job estjob.Job) (*estjob.Result, error) {
	t.Helper()
	in, _ := json.Marshal(job)
	out, err := guest.Invoke(context.Background(), h, handle, in)
	if err != nil {
		return nil, err
	}
	var res estjob.Result
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatal(err)
	}
	return &res, nil
}

func code(err error) string {
	var ge *guest.Error
	if errors.As(err, &ge) {
		return ge.Code
	}
	return ""
}

func TestEnroll(t *testing.T) {
	csr, pub := newCSR(t, "device")
	cases := []struct {
		name     string
		setup    func(s *fakeServer, h *fakeHost)
		job      estjob.Job
		wantCode string
		check    func(t *testing.T, res *estjob.Result, s *fakeServer, h *fakeHost)
	}{
		{
			name:  "basic auth",
			setup: func(s *fakeServer, h *fakeHost) { s.password = "pw" },
			job:   estjob.Job{Op: estjob.OpEnroll, URL: base, CSR: csr, Username: "estuser", Password: "pw"},
			check: func(t *testing.T, res *estjob.Result, s *fakeServer, h *fakeHost) {
				c, err := x509.ParseCertificate(res.Certs[0])
				if err != nil || !c.PublicKey.(*ecdsa.PublicKey).Equal(pub) || c.Subject.CommonName != "device" {
					t.Fatalf("enrolled %v %v", c, err)
				}
				if len(res.CACerts) != 1 || string(res.CACerts[0]) != string(s.ca.Raw) {
					t.Fatal("CA certs")
				}
				post := s.seen[len(s.seen)-1]
				if got := post.Header["Content-Type"]; got[0] != "application/pkcs10" || post.Header["Content-Transfer-Encoding"][0] != "base64" {
					t.Fatalf("headers %v", post.Header)
				}
				if lines := strings.Split(strings.TrimSpace(string(post.Body)), "\n"); len(lines[0]) != 64 {
					t.Fatalf("body not wrapped at 64: %q", lines[0])
				}
			},
		},
		{
			name:     "wrong password",
			setup:    func(s *fakeServer, h *fakeHost) { s.password = "pw" },
			job:      estjob.Job{Op: estjob.OpEnroll, URL: base, CSR: csr, Username: "estuser", Password: "nope"},
			wantCode: estjob.CodeServer,
		},
		{
			name:  "deferred twice, then issued",
			setup: func(s *fakeServer, h *fakeHost) { s.deferN = 2 },
			job:   estjob.Job{Op: estjob.OpEnroll, URL: base, CSR: csr, MaxWaitSeconds: 10},
			check: func(t *testing.T, res *estjob.Result, s *fakeServer, h *fakeHost) {
				if res.Deferrals != 2 || len(h.sleeps) != 2 || h.sleeps[0] != time.Second {
					t.Fatalf("deferrals %d sleeps %v", res.Deferrals, h.sleeps)
				}
			},
		},
		{
			name:     "deferred beyond the budget",
			setup:    func(s *fakeServer, h *fakeHost) { s.deferN, s.retryAfter = 1, "600" },
			job:      estjob.Job{Op: estjob.OpEnroll, URL: base, CSR: csr, MaxWaitSeconds: 60},
			wantCode: estjob.CodeDeferred,
		},
		{
			name: "Retry-After as an HTTP date",
			setup: func(s *fakeServer, h *fakeHost) {
				s.deferN, s.retryAfter = 1, time.Now().Add(3*time.Second).UTC().Format(timeFormat)
			},
			job: estjob.Job{Op: estjob.OpEnroll, URL: base, CSR: csr, MaxWaitSeconds: 10},
			check: func(t *testing.T, res *estjob.Result, s *fakeServer, h *fakeHost) {
				if len(h.sleeps) != 1 || h.sleeps[0] < time.Second || h.sleeps[0] > 3*time.Second {
					t.Fatalf("sleeps %v", h.sleeps)
				}
			},
		},
		{
			name: "bootstrap flow",
			setup: func(s *fakeServer, h *fakeHost) {
				s.requireClient = map[string]bool{"boot": true, "est-id": true}
				h.certs["boot"] = "bootstrap cert"
			},
			job: estjob.Job{Op: estjob.OpEnroll, URL: base, CSR: csr, IdentityCertID: "est-id", IdentityKeyID: "est-id",
				BootstrapCertID: "boot", BootstrapKeyID: "boot"},
			check: func(t *testing.T, res *estjob.Result, s *fakeServer, h *fakeHost) {
				if !res.IdentityIssued || h.keys["est-id"] == nil || !strings.Contains(h.certs["est-id"], "BEGIN CERTIFICATE") {
					t.Fatalf("identity not issued: %+v", res)
				}
				var clients []string
				for _, r := range s.seen {
					if r.Method == "POST" {
						clients = append(clients, r.TLS.ClientCertID)
					}
				}
				if strings.Join(clients, ",") != "boot,est-id" {
					t.Fatalf("enrollments authenticated by %v", clients)
				}
				id, _ := x509.ParseCertificate(mustPEM(t, h.certs["est-id"]))
				if id.Subject.CommonName != "device" || len(id.ExtKeyUsage) != 1 {
					t.Fatalf("identity cert %v", id.Subject)
				}
			},
		},
		{
			name:     "identity missing, no bootstrap",
			job:      estjob.Job{Op: estjob.OpEnroll, URL: base, CSR: csr, IdentityCertID: "est-id", IdentityKeyID: "est-id"},
			wantCode: estjob.CodeConfig,
		},
		{
			name: "existing identity",
			setup: func(s *fakeServer, h *fakeHost) {
				s.requireClient = map[string]bool{"est-id": true}
				h.certs["est-id"] = "identity"
			},
			job: estjob.Job{Op: estjob.OpEnroll, URL: base, CSR: csr, IdentityCertID: "est-id", IdentityKeyID: "est-id",
				BootstrapCertID: "boot", BootstrapKeyID: "boot"},
			check: func(t *testing.T, res *estjob.Result, s *fakeServer, h *fakeHost) {
				if res.IdentityIssued {
					t.Fatal("bootstrap flow ran with an existing identity")
				}
			},
		},
		{
			name:  "reenroll",
			setup: func(s *fakeServer, h *fakeHost) { s.requireClient = map[string]bool{"est-id": true} },
			job:   estjob.Job{Op: estjob.OpReenroll, URL: base + "/", CSR: csr, IdentityCertID: "est-id", IdentityKeyID: "est-id"},
			check: func(t *testing.T, res *estjob.Result, s *fakeServer, h *fakeHost) {
				if last := s.seen[len(s.seen)-1]; last.URL != base+"/simplereenroll" {
					t.Fatalf("URL %s", last.URL)
				}
			},
		},
		{
			name:     "wrong content type",
			setup:    func(s *fakeServer, h *fakeHost) { s.contentType = "text/plain" },
			job:      estjob.Job{Op: estjob.OpEnroll, URL: base, CSR: csr},
			wantCode: estjob.CodeResponse,
		},
		{
			name: "cacerts",
			job:  estjob.Job{Op: estjob.OpCACerts, URL: base},
			check: func(t *testing.T, res *estjob.Result, s *fakeServer, h *fakeHost) {
				if len(res.CACerts) != 1 || len(res.Certs) != 0 {
					t.Fatalf("%+v", res)
				}
			},
		},
		{name: "unknown op", job: estjob.Job{Op: "fullcmc", URL: base}, wantCode: guest.CodeInvalid},
		{name: "enroll without CSR", job: estjob.Job{Op: estjob.OpEnroll, URL: base}, wantCode: guest.CodeInvalid},
		{name: "no URL", job: estjob.Job{Op: estjob.OpEnroll}, wantCode: guest.CodeInvalid},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := newFakeServer(t)
			h := newFakeHost(t, s)
			if tc.setup != nil {
				tc.setup(s, h)
			}
			res, err := run(t, h, tc.job)
			if tc.wantCode != "" {
				if code(err) != tc.wantCode {
					t.Fatalf("err %v, want code %s", err, tc.wantCode)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tc.check != nil {
				tc.check(t, res, s, h)
			}
		})
	}
}

func mustPEM(t *testing.T, s string) []byte {
	t.Helper()
	b, _ := pem.Decode([]byte(s))
	if b == nil {
		t.Fatalf("no PEM in %q", s)
	}
	return b.Bytes
}

func TestRetryAfter(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	cases := []struct {
		in   string
		want time.Duration
	}{
		{"5", 5 * time.Second},
		{" 1 ", time.Second},
		{"0", time.Second},
		{"", defaultRetryAfter},
		{"soon", defaultRetryAfter},
		{"-3", defaultRetryAfter},
		{now.Add(90 * time.Second).Format(timeFormat), 90 * time.Second},
		{now.Add(-time.Hour).Format(timeFormat), time.Second},
	}
	for _, tc := range cases {
		if got := retryAfter(tc.in, now); got != tc.want {
			t.Errorf("retryAfter(%q) = %s, want %s", tc.in, got, tc.want)
		}
	}
}
