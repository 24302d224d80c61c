package main

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/warden-iot/warden/conformance/emulator"
	"github.com/warden-iot/warden/hsm"
	"github.com/warden-iot/warden/identity"
	"github.com/warden-iot/warden/policy"
	"github.com/warden-iot/warden/wasm-modules/dps/dpsjob"
	"github.com/warden-iot/warden/wasm-modules/guest"
	"github.com/warden-iot/warden/wasm-modules/host"
)

type allowAll struct{}

func (allowAll) Decide(context.Context, *policy.Input) (policy.Decision, error) {
	return policy.Decision{Allow: true}, nil
}

type trust []byte

func (t trust) Get(context.Context, string) ([]byte, error) { return t, nil }
func (trust) Put(context.Context, string, []byte) error     { return nil }

// rig is an emulator and a module host running this module as WASM
// (built here) or natively.
type rig struct {
	emu  *emulator.Emulator
	host *host.Host
	keys *recordingKeys
}

// recordingKeys is a key store that records what keys.hmac signs.
type recordingKeys struct {
	*hsm.Keys
	mu     sync.Mutex
	signed []string
}

func (k *recordingKeys) HMACSHA256(ctx context.Context, id string, msg []byte) ([]byte, error) {
	k.mu.Lock()
	k.signed = append(k.signed, id+" "+string(msg))
	k.mu.Unlock()
	return k.Keys.HMACSHA256(ctx, id, msg)
}

func (k *recordingKeys) take() []string {
	k.mu.Lock()
	defer k.mu.Unlock()
	s := k.signed
	k.signed = nil
	return s
}

func newRig(tb testing.TB, opts emulator.Options) *rig {
	tb.Helper()
	emu, err := emulator.New(opts)
	if err != nil {
		tb.Fatal(err)
	}
	if err := emu.Start(context.Background()); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { emu.Close() })
	wasm := filepath.Join(tb.TempDir(), "dps.wasm")
	cmd := exec.Command("go", "build", "-trimpath", "-o", wasm, ".")
	cmd.Env = append(os.Environ(), "GOOS=wasip1", "GOARCH=wasm")
	if out, err := cmd.CombinedOutput(); err != nil {
		tb.Fatalf("build: %v\n%s", err, out)
	}
	store, err := hsm.Open(context.Background(), hsm.Config{HomeDir: tb.TempDir()})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { store.Close() })
	keys := &recordingKeys{Keys: store}
	h, err := host.New(host.Options{CacheDir: filepath.Join(os.TempDir(), "dps-test-module-cache"), Certs: trust(emu.CACertPEM()),
		Keys: keys, Decider: allowAll{}, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { h.Close(context.Background()) })
	if err := h.Load(context.Background(), []host.ModuleConfig{{Name: "dps", Path: wasm, Egress: []string{"localhost"},
		SHA256: sha256File(tb, wasm)}}); err != nil {
		tb.Fatal(err)
	}
	return &rig{emu: emu, host: h, keys: keys}
}

func sha256File(tb testing.TB, p string) string {
	b, err := os.ReadFile(p)
	if err != nil {
		tb.Fatal(err)
	}
	return fmt.Sprintf("%x", sha256.Sum256(b))
}

// job is a registration of regID signed with key (base64).
func (r *rig) job(regID, key string) *dpsjob.Job {
	k, _ := base64.StdEncoding.DecodeString(key)
	sr := identity.EncodeSR(identity.DPSAudience(r.emu.IDScope(), regID))
	se := time.Now().Add(time.Hour).Unix()
	m := hmac.New(sha256.New, k)
	m.Write(identity.StringToSign(sr, se))
	return &dpsjob.Job{Endpoint: r.emu.URL() + "/ignored/path", ScopeID: r.emu.IDScope(), RegistrationID: regID,
		Authorization: identity.Token(sr, m.Sum(nil), se, "registration"),
		TLS:           &guest.TLSOptions{TrustCertIDs: []string{"emulator-ca"}}, PollMS: -1, ThrottleMS: []int{5, 5, 5, 5}}
}

// keyJob is a registration of regID whose tokens the module mints with
// key (base64), imported into the key store as keyID.
func (r *rig) keyJob(tb testing.TB, regID, keyID, key string) *dpsjob.Job {
	tb.Helper()
	if key != "" {
		k, _ := base64.StdEncoding.DecodeString(key)
		if err := r.keys.ImportKey(context.Background(), keyID, k, hsm.UsageSign); err != nil {
			tb.Fatal(err)
		}
	}
	return &dpsjob.Job{Endpoint: r.emu.URL(), ScopeID: r.emu.IDScope(), RegistrationID: regID, KeyID: keyID,
		TLS: &guest.TLSOptions{TrustCertIDs: []string{"emulator-ca"}}, PollMS: -1, ThrottleMS: []int{5, 5, 5, 5}}
}

func (r *rig) run(ctx context.Context, native bool, job *dpsjob.Job) (*dpsjob.Result, error) {
	in, _ := json.Marshal(job)
	var res *host.Result
	var err error
	if native {
		res, err = r.host.RunNative(ctx, "dps", handle, in)
	} else {
		res, err = r.host.Run(ctx, "dps", in)
	}
	if err != nil {
		return nil, err
	}
	var out dpsjob.Result
	return &out, json.Unmarshal(res.Output, &out)
}

func code(err error) string {
	var ge *guest.Error
	if errors.As(err, &ge) {
		return ge.Code
	}
	return ""
}

func TestRegister(t *testing.T) {
	r := newRig(t, emulator.Options{RetryAfter: 0})
	en, _ := r.emu.AddSymmetricEnrollment(emulator.SymmetricEnrollment{RegistrationID: "dev-1",
		Assignment: emulator.Assignment{AssignAfterPolls: 2, Payload: json.RawMessage(`{"k":"v"}`)}})
	g, _ := r.emu.AddGroupEnrollment(emulator.GroupEnrollment{Name: "g"})
	derived, _ := emulator.DeriveDeviceKey(g.PrimaryKey, "dev-g")
	tests := []struct {
		name   string
		job    *dpsjob.Job
		fault  *emulator.Fault
		code   string
		polls  int
		device string
	}{
		{"individual, deferred assignment and payload", r.job("dev-1", en.PrimaryKey), nil, "", 3, "dev-1"},
		{"group", r.job("dev-g", derived), nil, "", 1, "dev-g"},
		{"wrong key", r.job("dev-1", emulator.NewKey()), nil, dpsjob.CodeAuth, 0, ""},
		{"429 twice then through", r.job("dev-g", derived), &emulator.Fault{Op: emulator.OpRegister, Status: 429, Count: 2}, "", 1, "dev-g"},
		{"429 storm", r.job("dev-g", derived), &emulator.Fault{Op: emulator.OpRegister, Status: 429}, dpsjob.CodeThrottled, 0, ""},
		{"500 on poll is network", r.job("dev-g", derived), &emulator.Fault{Op: emulator.OpPoll, Status: 500}, dpsjob.CodeNetwork, 0, ""},
		{"a dropped connection is retried (cloud_retries)", retrying(r.job("dev-g", derived)), &emulator.Fault{Op: emulator.OpRegister, Drop: true, Count: 1}, "", 1, "dev-g"},
		{"dropped connection is network", r.job("dev-g", derived), &emulator.Fault{Op: emulator.OpRegister, Drop: true}, dpsjob.CodeNetwork, 0, ""},
	}
	for _, native := range []bool{false, true} {
		for _, tc := range tests {
			t.Run(fmt.Sprintf("%s/native=%v", tc.name, native), func(t *testing.T) {
				r.emu.ClearFaults()
				if tc.fault != nil {
					r.emu.InjectFault(*tc.fault)
				}
				defer r.emu.ClearFaults()
				res, err := r.run(context.Background(), native, tc.job)
				if tc.code != "" {
					if code(err) != tc.code {
						t.Fatalf("err = %v (code %q), want code %q", err, code(err), tc.code)
					}
					return
				}
				if err != nil {
					t.Fatal(err)
				}
				if res.DeviceID != tc.device || res.AssignedHub == "" || res.Polls != tc.polls {
					t.Fatalf("result = %+v", res)
				}
				if tc.device == "dev-1" && string(res.Payload) != `{"k":"v"}` {
					t.Fatalf("payload = %s", res.Payload)
				}
			})
		}
	}
}

// TestRegisterWithKeyID: the module mints a fresh SAS token for each
// request (register, 429 retries, polls), valid 30 s, with the key in the
// key store (keys.hmac), as aziot does.
func TestRegisterWithKeyID(t *testing.T) {
	r := newRig(t, emulator.Options{RetryAfter: 0})
	en, _ := r.emu.AddSymmetricEnrollment(emulator.SymmetricEnrollment{RegistrationID: "Dev-K",
		Assignment: emulator.Assignment{AssignAfterPolls: 2}})
	g, _ := r.emu.AddGroupEnrollment(emulator.GroupEnrollment{Name: "gk"})
	derived, _ := emulator.DeriveDeviceKey(g.PrimaryKey, "dev-gk")
	individual := r.keyJob(t, "Dev-K", "device-id", en.PrimaryKey)
	group := r.keyJob(t, "dev-gk", "group-device-id", derived)
	for _, native := range []bool{false, true} {
		t.Run(fmt.Sprintf("individual, 429 twice/native=%v", native), func(t *testing.T) {
			r.keys.take()
			r.emu.InjectFault(emulator.Fault{Op: emulator.OpRegister, Status: 429, Count: 2})
			defer r.emu.ClearFaults()
			start := time.Now()
			res, err := r.run(context.Background(), native, individual)
			if err != nil {
				t.Fatal(err)
			}
			if res.DeviceID != "Dev-K" || res.Polls != 3 || res.Throttled != 2 {
				t.Fatalf("result = %+v", res)
			}
			signed := r.keys.take()
			// 3 register attempts (2 throttled) and 3 polls: a token each.
			if len(signed) != 6 {
				t.Fatalf("%d tokens minted, want 6: %q", len(signed), signed)
			}
			for _, m := range signed {
				sr, se, ok := strings.Cut(m, "\n")
				exp, _ := strconv.ParseInt(se, 10, 64)
				if !ok || sr != "device-id "+strings.ToLower(r.emu.IDScope())+"/registrations/dev-k" {
					t.Fatalf("signed %q", m)
				}
				if d := time.Unix(exp, 0).Sub(start); d < 29*time.Second || d > 32*time.Second {
					t.Fatalf("token valid %v after the start, want 30 s", d)
				}
			}
		})
		t.Run(fmt.Sprintf("group, derived key/native=%v", native), func(t *testing.T) {
			res, err := r.run(context.Background(), native, group)
			if err != nil || res.DeviceID != "dev-gk" {
				t.Fatalf("res %+v err %v", res, err)
			}
		})
		t.Run(fmt.Sprintf("missing key is not a network error/native=%v", native), func(t *testing.T) {
			_, err := r.run(context.Background(), native, r.keyJob(t, "Dev-K", "missing", ""))
			if code(err) != guest.CodeNotFound {
				t.Fatalf("err = %v (code %q), want %q", err, code(err), guest.CodeNotFound)
			}
		})
	}
	t.Run("wrong key", func(t *testing.T) {
		_, err := r.run(context.Background(), false, r.keyJob(t, "Dev-K", "wrong", emulator.NewKey()))
		if code(err) != dpsjob.CodeAuth {
			t.Fatalf("err = %v (code %q), want %q", err, code(err), dpsjob.CodeAuth)
		}
	})
}

// BenchmarkDPSProvision is one DPS symmetric-key registration (register +
// one poll, Retry-After 0) through the WASM module, beside the same source
// built natively and run in-process against the same host calls. It prints
// the ratio.
func BenchmarkDPSProvision(b *testing.B) {
	r := newRig(b, emulator.Options{RetryAfter: 0})
	en, _ := r.emu.AddSymmetricEnrollment(emulator.SymmetricEnrollment{RegistrationID: "bench"})
	job := r.job("bench", en.PrimaryKey)
	ctx := context.Background()
	per := map[bool]float64{}
	for _, native := range []bool{false, true} {
		name := map[bool]string{false: "wasm", true: "native"}[native]
		if _, err := r.run(ctx, native, job); err != nil {
			b.Fatal(err)
		}
		b.Run(name, func(b *testing.B) {
			for b.Loop() {
				if _, err := r.run(ctx, native, job); err != nil {
					b.Fatal(err)
				}
			}
			ms := float64(b.Elapsed().Microseconds()) / 1000 / float64(b.N)
			b.ReportMetric(ms, "ms/provision")
			per[native] = ms
		})
	}
	if per[false] > 0 && per[true] > 0 {
		fmt.Printf("DPS symmetric-key provisioning (register + poll, loopback TLS, emulator, Retry-After 0): WASM module %.2f ms, "+
			"same source native in-process %.2f ms, ratio %.2f\n", per[false], per[true], per[false]/per[true])
	}
}

func retrying(j *dpsjob.Job) *dpsjob.Job {
	j.Retries, j.RetryDelayMS = 1, 5
	return j
}
