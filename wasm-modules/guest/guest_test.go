package guest

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"
)

// fakeHost records calls and answers them from a table.
type fakeHost struct {
	calls []string
	reqs  []json.RawMessage
	key   *ecdsa.PrivateKey
}

func (f *fakeHost) Call(ctx context.Context, op string, req []byte) ([]byte, error) {
	f.calls = append(f.calls, op)
	f.reqs = append(f.reqs, append(json.RawMessage(nil), req...))
	switch op {
	case OpKeysPublic, OpKeysCreateKeyPair:
		der, _ := x509.MarshalPKIXPublicKey(&f.key.PublicKey)
		return json.Marshal(PublicKeyResponse{PublicKey: der})
	case OpKeysSign:
		var r SignRequest
		json.Unmarshal(req, &r)
		if f.key == nil {
			return json.Marshal(SignResponse{Signature: []byte("sig")})
		}
		sig, err := f.key.Sign(rand.Reader, r.Digest, crypto.SHA256)
		if err != nil {
			return nil, err
		}
		return json.Marshal(SignResponse{Signature: sig})
	case OpCertsGet:
		return nil, Errorf(CodeNotFound, "no cert")
	case OpLog, OpClockSleep, OpCertsPut:
		return nil, nil
	}
	return nil, Errorf(CodeDenied, "op %s denied", op)
}

func TestInvoke(t *testing.T) {
	tests := []struct {
		name     string
		h        Handler
		want     string
		wantCode string
	}{
		{"value", func(ctx context.Context, job json.RawMessage) (any, error) {
			return map[string]any{"job": job}, nil
		}, `{"job":{"n":1}}`, ""},
		{"nil result", func(context.Context, json.RawMessage) (any, error) { return nil, nil }, `null`, ""},
		{"plain error", func(context.Context, json.RawMessage) (any, error) { return nil, errors.New("boom") }, "", CodeModule},
		{"coded error", func(context.Context, json.RawMessage) (any, error) { return nil, Errorf("retry", "later") }, "", "retry"},
		{"wrapped coded error", func(context.Context, json.RawMessage) (any, error) {
			return nil, fmt.Errorf("enroll: %w", Errorf("retry", "later"))
		}, "", "retry"},
		{"panic", func(context.Context, json.RawMessage) (any, error) { panic("oops") }, "", CodePanic},
		{"unmarshalable", func(context.Context, json.RawMessage) (any, error) { return func() {}, nil }, "", CodeModule},
		{"host error passes through", func(ctx context.Context, _ json.RawMessage) (any, error) {
			_, err := GetCert(ctx, "x")
			return nil, err
		}, "", CodeNotFound},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out, err := Invoke(context.Background(), &fakeHost{}, tc.h, json.RawMessage(`{"n":1}`))
			if tc.wantCode != "" {
				var e *Error
				if !errors.As(err, &e) || e.Code != tc.wantCode {
					t.Fatalf("err = %v, want code %s", err, tc.wantCode)
				}
				return
			}
			if err != nil || string(out) != tc.want {
				t.Fatalf("got %s, %v; want %s", out, err, tc.want)
			}
		})
	}
}

func TestNoHostNatively(t *testing.T) {
	_, err := HTTPDo(context.Background(), &HTTPRequest{Method: "GET", URL: "https://x"})
	if !errors.Is(err, ErrNoHost) {
		t.Fatalf("err = %v, want ErrNoHost", err)
	}
}

func TestSignerMakesCSR(t *testing.T) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	f := &fakeHost{key: key}
	ctx := WithCaller(context.Background(), f)
	s, err := Signer(ctx, "device-id")
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "d"}}, s)
	if err != nil {
		t.Fatal(err)
	}
	csr, _ := x509.ParseCertificateRequest(der)
	if err := csr.CheckSignature(); err != nil {
		t.Fatal(err)
	}
	if strings.Join(f.calls, ",") != OpKeysPublic+","+OpKeysSign {
		t.Fatalf("calls = %v", f.calls)
	}
	var r SignRequest
	json.Unmarshal(f.reqs[1], &r)
	if r.KeyID != "device-id" || r.Hash != "SHA-256" || r.PSS {
		t.Fatalf("sign request = %+v", r)
	}
}

func TestSignPSSRequest(t *testing.T) {
	f := &fakeHost{}
	ctx := WithCaller(context.Background(), f)
	d := sha256.Sum256([]byte("x"))
	Sign(ctx, "k", d[:], &rsa.PSSOptions{Hash: crypto.SHA256, SaltLength: rsa.PSSSaltLengthEqualsHash})
	var r SignRequest
	json.Unmarshal(f.reqs[0], &r)
	if !r.PSS || r.SaltLength != -1 || r.Hash != "SHA-256" {
		t.Fatalf("sign request = %+v", r)
	}
	if _, err := Sign(ctx, "k", d[:], crypto.SHA1); err == nil {
		t.Fatal("SHA-1 accepted")
	}
}

func TestHashNames(t *testing.T) {
	for _, h := range []crypto.Hash{0, crypto.SHA256, crypto.SHA384, crypto.SHA512} {
		n, err := HashName(h)
		if err != nil {
			t.Fatal(err)
		}
		if back, err := ParseHashName(n); err != nil || back != h {
			t.Fatalf("%v → %q → %v, %v", h, n, back, err)
		}
	}
	if _, err := ParseHashName("MD5"); err == nil {
		t.Fatal("MD5 parsed")
	}
}

func TestLogger(t *testing.T) {
	f := &fakeHost{}
	ctx := WithCaller(context.Background(), f)
	l := Logger(ctx).With("job", 7).WithGroup("est")
	l.Warn("enrolled", "status", 200, slog.Duration("took", time.Second), slog.Group("tls", "v", "1.3"), "err", errors.New("x"))
	var r LogRequest
	json.Unmarshal(f.reqs[0], &r)
	want := map[string]any{"job": float64(7), "est.status": float64(200), "est.took": "1s", "est.tls.v": "1.3", "est.err": "x"}
	if r.Level != "warn" || r.Msg != "enrolled" || fmt.Sprint(r.Attrs) != fmt.Sprint(want) {
		t.Fatalf("log request = %+v", r)
	}
	for _, l := range []string{"debug", "info", "warn", "error"} {
		if levelName(ParseLevel(l)) != l {
			t.Fatalf("level %s does not round-trip", l)
		}
	}
}

func TestSleep(t *testing.T) {
	f := &fakeHost{}
	ctx, cancel := context.WithCancel(WithCaller(context.Background(), f))
	if err := Sleep(ctx, 0); err != nil || len(f.calls) != 0 {
		t.Fatalf("Sleep(0) = %v, calls %v", err, f.calls)
	}
	if err := Sleep(ctx, 1500*time.Microsecond); err != nil {
		t.Fatal(err)
	}
	var r SleepRequest
	json.Unmarshal(f.reqs[0], &r)
	if r.Milliseconds != 1 {
		t.Fatalf("ms = %d", r.Milliseconds)
	}
	cancel()
	var e *Error
	if err := Sleep(ctx, time.Second); !errors.As(err, &e) || e.Code != CodeDeadline {
		t.Fatalf("after cancel: %v", err)
	}
}
