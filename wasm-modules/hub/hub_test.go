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
	"testing"
	"time"

	"github.com/warden-iot/warden/conformance/emulator"
	"github.com/warden-iot/warden/hsm"
	"github.com/warden-iot/warden/identity"
	"github.com/warden-iot/warden/policy"
	"github.com/warden-iot/warden/wasm-modules/guest"
	"github.com/warden-iot/warden/wasm-modules/host"
	"github.com/warden-iot/warden/wasm-modules/hub/hubjob"
)

type allowAll struct{}

func (allowAll) Decide(context.Context, *policy.Input) (policy.Decision, error) {
	return policy.Decision{Allow: true}, nil
}

type trust []byte

func (t trust) Get(context.Context, string) ([]byte, error) { return t, nil }
func (trust) Put(context.Context, string, []byte) error     { return nil }

func TestRegistry(t *testing.T) {
	emu, err := emulator.New(emulator.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := emu.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer emu.Close()
	wasm := filepath.Join(t.TempDir(), "hub.wasm")
	cmd := exec.Command("go", "build", "-trimpath", "-o", wasm, ".")
	cmd.Env = append(os.Environ(), "GOOS=wasip1", "GOARCH=wasm")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	h, err := host.New(host.Options{Certs: trust(emu.CACertPEM()), Decider: allowAll{}, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close(context.Background())
	if err := h.Load(context.Background(), []host.ModuleConfig{{Name: "hub", Path: wasm, Egress: []string{"localhost"}, SHA256: sha256File(t, wasm)}}); err != nil {
		t.Fatal(err)
	}
	dev, err := emu.AddHubDevice(emulator.HubDevice{DeviceID: "d1"})
	if err != nil {
		t.Fatal(err)
	}
	k, _ := base64.StdEncoding.DecodeString(dev.PrimaryKey)
	sr := identity.EncodeSR(identity.HubAudience(dev.IoTHub, "d1"))
	se := time.Now().Add(time.Hour).Unix()
	m := hmac.New(sha256.New, k)
	m.Write(identity.StringToSign(sr, se))
	tok := identity.Token(sr, m.Sum(nil), se, "")
	key := base64.StdEncoding.EncodeToString([]byte("0123456789abcdef0123456789abcdef"))
	steps := []struct {
		name  string
		job   hubjob.Job
		fault *emulator.Fault
		code  string
		check func(*hubjob.Result) string
	}{
		{"create", hubjob.Job{Op: hubjob.OpCreate, ModuleID: "m1"}, nil, "", func(r *hubjob.Result) string {
			var m struct{ GenerationID string }
			json.Unmarshal(r.Module, &m)
			return map[bool]string{true: "", false: "no generationId"}[m.GenerationID != ""]
		}},
		{"set keys", hubjob.Job{Op: hubjob.OpSetKeys, ModuleID: "m1", PrimaryKey: key, SecondaryKey: key}, nil, "", func(*hubjob.Result) string {
			if ms := emu.Modules(dev.IoTHub, "d1"); len(ms) != 1 || ms[0].Authentication.SymmetricKey.PrimaryKey != key {
				return fmt.Sprintf("hub modules = %+v", ms)
			}
			return ""
		}},
		{"get", hubjob.Job{Op: hubjob.OpGet, ModuleID: "m1"}, nil, "", nil},
		{"list", hubjob.Job{Op: hubjob.OpList}, nil, "", func(r *hubjob.Result) string {
			return map[bool]string{true: "", false: "want one module"}[len(r.Modules) == 1]
		}},
		{"500 is network", hubjob.Job{Op: hubjob.OpList}, &emulator.Fault{Op: emulator.OpModuleList, Status: 500}, hubjob.CodeNetwork, nil},
		{"delete", hubjob.Job{Op: hubjob.OpDelete, ModuleID: "m1"}, nil, "", nil},
		{"get deleted", hubjob.Job{Op: hubjob.OpGet, ModuleID: "m1"}, nil, hubjob.CodeNotFound, nil},
		{"bad token", hubjob.Job{Op: hubjob.OpList, Authorization: "SharedAccessSignature sr=x&sig=y&se=1"}, nil, hubjob.CodeAuth, nil},
	}
	for _, native := range []bool{false, true} {
		for _, st := range steps {
			t.Run(fmt.Sprintf("%s/native=%v", st.name, native), func(t *testing.T) {
				emu.ClearFaults()
				if st.fault != nil {
					emu.InjectFault(*st.fault)
				}
				defer emu.ClearFaults()
				j := st.job
				j.URL, j.DeviceID, j.TLS = "https://"+dev.IoTHub, "d1", &guest.TLSOptions{TrustCertIDs: []string{"ca"}}
				if j.Authorization == "" {
					j.Authorization = tok
				}
				in, _ := json.Marshal(j)
				var res *host.Result
				if native {
					res, err = h.RunNative(context.Background(), "hub", handle, in)
				} else {
					res, err = h.Run(context.Background(), "hub", in)
				}
				var ge *guest.Error
				if st.code != "" {
					if !errors.As(err, &ge) || ge.Code != st.code {
						t.Fatalf("err = %v, want code %s", err, st.code)
					}
					return
				}
				if err != nil {
					t.Fatal(err)
				}
				var out hubjob.Result
				json.Unmarshal(res.Output, &out)
				if st.check != nil {
					if msg := st.check(&out); msg != "" {
						t.Fatal(msg)
					}
				}
			})
		}
	}
}

// TestRegistryWithKeyID: the module mints a fresh SAS token for each
// request with the device key in the key store (keys.hmac).
func TestRegistryWithKeyID(t *testing.T) {
	ctx := context.Background()
	emu, err := emulator.New(emulator.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := emu.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer emu.Close()
	wasm := filepath.Join(t.TempDir(), "hub.wasm")
	cmd := exec.Command("go", "build", "-trimpath", "-o", wasm, ".")
	cmd.Env = append(os.Environ(), "GOOS=wasip1", "GOARCH=wasm")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	keys, err := hsm.Open(ctx, hsm.Config{HomeDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer keys.Close()
	dev, err := emu.AddHubDevice(emulator.HubDevice{DeviceID: "d1"})
	if err != nil {
		t.Fatal(err)
	}
	k, _ := base64.StdEncoding.DecodeString(dev.PrimaryKey)
	if err := keys.ImportKey(ctx, "device-id", k, hsm.UsageSign); err != nil {
		t.Fatal(err)
	}
	wrong, _ := base64.StdEncoding.DecodeString(emulator.NewKey())
	if err := keys.ImportKey(ctx, "wrong", wrong, hsm.UsageSign); err != nil {
		t.Fatal(err)
	}
	h, err := host.New(host.Options{Certs: trust(emu.CACertPEM()), Keys: keys, Decider: allowAll{}, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close(ctx)
	if err := h.Load(ctx, []host.ModuleConfig{{Name: "hub", Path: wasm, Egress: []string{"localhost"}, SHA256: sha256File(t, wasm)}}); err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		name string
		job  hubjob.Job
		code string
	}{
		{"create", hubjob.Job{Op: hubjob.OpCreate, ModuleID: "m1", KeyID: "device-id", HubName: dev.IoTHub}, ""},
		{"list", hubjob.Job{Op: hubjob.OpList, KeyID: "device-id", HubName: dev.IoTHub}, ""},
		{"delete", hubjob.Job{Op: hubjob.OpDelete, ModuleID: "m1", KeyID: "device-id", HubName: dev.IoTHub}, ""},
		{"wrong key", hubjob.Job{Op: hubjob.OpList, KeyID: "wrong", HubName: dev.IoTHub}, hubjob.CodeAuth},
		{"missing key", hubjob.Job{Op: hubjob.OpList, KeyID: "missing", HubName: dev.IoTHub}, guest.CodeNotFound},
		{"no hub name", hubjob.Job{Op: hubjob.OpList, KeyID: "device-id"}, guest.CodeInvalid},
	}
	for _, native := range []bool{false, true} {
		for _, st := range steps {
			t.Run(fmt.Sprintf("%s/native=%v", st.name, native), func(t *testing.T) {
				j := st.job
				j.URL, j.DeviceID, j.TLS = "https://"+dev.IoTHub, "d1", &guest.TLSOptions{TrustCertIDs: []string{"ca"}}
				in, _ := json.Marshal(j)
				var err error
				if native {
					_, err = h.RunNative(ctx, "hub", handle, in)
				} else {
					_, err = h.Run(ctx, "hub", in)
				}
				var ge *guest.Error
				if st.code != "" {
					if !errors.As(err, &ge) || ge.Code != st.code {
						t.Fatalf("err = %v, want code %s", err, st.code)
					}
					return
				}
				if err != nil {
					t.Fatal(err)
				}
			})
		}
	}
}

func sha256File(t *testing.T, p string) string {
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%x", sha256.Sum256(b))
}
