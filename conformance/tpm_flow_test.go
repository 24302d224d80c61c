package conformance

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-tpm/tpm2"
	"github.com/warden-iot/warden/conformance/emulator"
	"github.com/warden-iot/warden/tpm/swtpmtest"
)

// tpmConfig is the [tpm] table pointing wardend at sw.
func tpmConfig(sw *swtpmtest.SWTPM, extra string) string {
	return fmt.Sprintf("\n[tpm]\ntcti = %q\n%s", sw.TCTI(), extra)
}

// tpmReq builds a tpmd request; body nil sends none.
func (d *daemon) tpmReq(method, path string, body any) request {
	r := request{Socket: d.socket("tpmd"), Method: method, Target: path + "?api-version=2020-09-01"}
	if body != nil {
		b, _ := json.Marshal(body)
		r.Body, r.Header = string(b), map[string]string{"Content-Type": "application/json"}
	}
	return r
}

// tpmKeys calls T1 and returns the EK and SRK, checking that both parse
// as TPM2B_PUBLIC of RSA keys.
func (d *daemon) tpmKeys(t *testing.T) (ek, srk []byte) {
	t.Helper()
	r := do(t, d.tpmReq("GET", "/get_tpm_keys", nil))
	var keys struct {
		EK  []byte `json:"endorsement_key"`
		SRK []byte `json:"storage_root_key"`
	}
	if err := json.Unmarshal(r.Body, &keys); r.Status != 200 || err != nil {
		t.Fatalf("T1: %d %s %v", r.Status, r.Body, err)
	}
	for name, b := range map[string][]byte{"EK": keys.EK, "SRK": keys.SRK} {
		pub, err := tpm2.Unmarshal[tpm2.TPM2BPublic](b)
		if err != nil {
			t.Fatalf("T1 %s is not a TPM2B_PUBLIC: %v", name, err)
		}
		if c, err := pub.Contents(); err != nil || c.Type != tpm2.TPMAlgRSA || len(b) != 2+len(pub.Bytes()) {
			t.Fatalf("T1 %s: %v %+v", name, err, c)
		}
	}
	return keys.EK, keys.SRK
}

// tpmImport calls T2 with blob and returns the response.
func (d *daemon) tpmImport(t *testing.T, blob []byte) response {
	t.Helper()
	return do(t, d.tpmReq("POST", "/import_auth_key", map[string]string{"key": base64.StdEncoding.EncodeToString(blob)}))
}

// tpmSign calls T3 and fails t unless the digest is a.Sign(data).
func (d *daemon) tpmSign(t *testing.T, a *emulator.TPMActivation, data []byte) {
	t.Helper()
	r, err := send(d.tpmReq("POST", "/sign_with_auth_key", map[string]string{"data": base64.StdEncoding.EncodeToString(data)}))
	if err != nil {
		t.Fatal(err)
	}
	if err := checkDigest(r, a, data); err != nil {
		t.Fatal(err)
	}
}

// checkDigest checks a T3 answer against the emulator's HMAC.
func checkDigest(r response, a *emulator.TPMActivation, data []byte) error {
	var out struct {
		Digest []byte `json:"digest"`
	}
	if err := json.Unmarshal(r.Body, &out); r.Status != 200 || err != nil {
		return fmt.Errorf("T3: %d %s %v", r.Status, r.Body, err)
	}
	if !bytes.Equal(out.Digest, a.Sign(data)) {
		return fmt.Errorf("T3 digest %x, emulator HMAC %x", out.Digest, a.Sign(data))
	}
	return nil
}

// sasData is what a device signs for DPS: sr + "\n" + se.
func sasData(i int) []byte {
	return fmt.Appendf(nil, "0ne00000000/registrations/warden-device\n%d", 1700000000+i)
}

// TestTPMProvisioning runs tpmd as DPS TPM attestation uses it, on swtpm
// over TCP and over a Unix socket: T1's EK matches tpm2_readpublic, T2
// imports the emulator's blob, T3 matches the emulator's HMAC; the key
// survives restarts of wardend and of swtpm; a second T2 replaces it; bad
// blobs are 500 "internal error" with the reason in the log, and the
// broker keeps serving.
func TestTPMProvisioning(t *testing.T) {
	for _, unix := range []bool{false, true} {
		t.Run(map[bool]string{false: "tcp", true: "unix"}[unix], func(t *testing.T) {
			sw := swtpmtest.Start(t, swtpmtest.Options{Unix: unix})
			d := startDaemon(t, tpmConfig(sw, ""))
			ek, srk := d.tpmKeys(t)
			if again, _ := d.tpmKeys(t); !bytes.Equal(ek, again) {
				t.Fatal("the EK changed between two T1 calls")
			}
			if !unix { // tpm2-tools' swtpm TCTI speaks TCP only
				d.stop() // swtpm serves one client at a time
				out := filepath.Join(sw.Dir, "ek.pub")
				sw.Tool("tpm2_readpublic", "-c", "0x81010001", "-o", out)
				if got, _ := os.ReadFile(out); !bytes.Equal(got, ek) {
					t.Fatalf("tpm2_readpublic 0x81010001 = %x\nT1 endorsement_key = %x", got, ek)
				}
				d.start()
			}

			first, err := emulator.NewTPMActivation(rand.Reader, ek, srk)
			if err != nil {
				t.Fatal(err)
			}
			if r := d.tpmImport(t, first.Blob); r.Status != 200 || string(r.Body) != "{}" {
				t.Fatalf("T2: %d %s", r.Status, r.Body)
			}
			d.tpmSign(t, first, sasData(0))

			d.stop()
			sw.Restart()
			d.start()
			d.tpmSign(t, first, sasData(1)) // both restarted, state kept
			sw.Restart()
			d.tpmSign(t, first, sasData(2)) // swtpm restarted under a running wardend

			second, err := emulator.NewTPMActivation(rand.Reader, ek, srk)
			if err != nil {
				t.Fatal(err)
			}
			if r := d.tpmImport(t, second.Blob); r.Status != 200 {
				t.Fatalf("second T2: %d %s", r.Status, r.Body)
			}
			d.tpmSign(t, second, sasData(3))

			for _, bad := range badBlobs(t, second.Blob) {
				r := d.tpmImport(t, bad.blob)
				if r.Status != 500 || string(r.Body) != `{"message":"internal error"}` {
					t.Fatalf("%s blob: %d %s", bad.name, r.Status, r.Body)
				}
				d.tpmSign(t, second, sasData(4)) // still serving, key unchanged
			}
			d.stop()
			logs := d.stderr.String()
			for _, bad := range badBlobs(t, second.Blob) {
				if !strings.Contains(logs, bad.log) {
					t.Errorf("%s blob: the log lacks %q", bad.name, bad.log)
				}
			}
			if !strings.Contains(logs, `msg="tpmd: could not import auth key"`) {
				t.Errorf("no tpmd error line in the log:\n%s", logs)
			}
			for _, line := range strings.Split(logs, "\n") {
				if strings.Contains(line, "tpmd: ") {
					t.Log(line)
				}
			}
		})
	}
}

// badBlob is an activation blob wardend must refuse, and what its log says.
type badBlob struct {
	name, log string
	blob      []byte
}

// badBlobs are unparseable, damaged and misdirected variants of good.
func badBlobs(t *testing.T, good []byte) []badBlob {
	t.Helper()
	damaged := bytes.Clone(good)
	credLen := int(damaged[0])<<8 | int(damaged[1])
	damaged[2+credLen-1] ^= 1 // last byte of the credential blob
	return []badBlob{
		{"garbage", "problem=bad_blob", []byte("this is not an activation blob")},
		{"damaged credential", "tpm_rc_name=TPM_RC_INTEGRITY", damaged},
		{"another TPM's", "tpm_command=TPM2_ActivateCredential", softwareTPMBlob(t)},
	}
}

var (
	softwareBlobOnce sync.Once
	softwareBlob     []byte
)

// softwareTPMBlob is a well-formed blob made for RSA keys that no TPM
// holds, as if DPS had registered another device.
func softwareTPMBlob(t *testing.T) []byte {
	softwareBlobOnce.Do(func() {
		var keys [2][]byte
		for i := range keys {
			priv, err := rsa.GenerateKey(rand.Reader, 2048)
			if err != nil {
				t.Fatal(err)
			}
			pub := tpm2.RSAEKTemplate
			pub.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgRSA, &tpm2.TPM2BPublicKeyRSA{Buffer: priv.N.Bytes()})
			keys[i] = tpm2.Marshal(tpm2.New2B(pub))
		}
		a, err := emulator.NewTPMActivation(rand.Reader, keys[0], keys[1])
		if err != nil {
			t.Fatal(err)
		}
		softwareBlob = a.Blob
	})
	return softwareBlob
}

// TestTPMConcurrentSign: 8 clients sign at once through tpmd.sock; every
// digest matches the emulator's HMAC.
func TestTPMConcurrentSign(t *testing.T) {
	sw := swtpmtest.Start(t, swtpmtest.Options{})
	d := startDaemon(t, tpmConfig(sw, ""))
	ek, srk := d.tpmKeys(t)
	a, err := emulator.NewTPMActivation(rand.Reader, ek, srk)
	if err != nil {
		t.Fatal(err)
	}
	if r := d.tpmImport(t, a.Blob); r.Status != 200 {
		t.Fatalf("T2: %d %s", r.Status, r.Body)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for c := range 8 {
		wg.Go(func() {
			for i := range 25 {
				data := sasData(c*1000 + i)
				r, err := send(d.tpmReq("POST", "/sign_with_auth_key", map[string]string{"data": base64.StdEncoding.EncodeToString(data)}))
				if err == nil {
					err = checkDigest(r, a, data)
				}
				if err != nil {
					errs <- fmt.Errorf("client %d request %d: %w", c, i, err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// TestTPMAbsent: wardend starts without a TPM at its tcti; tpmd answers 500
// "internal error" and logs what to check; the other sockets serve.
func TestTPMAbsent(t *testing.T) {
	d := startDaemon(t, "\n[tpm]\ntcti = \"device:/nonexistent/tpmrm0\"\n")
	r := do(t, d.tpmReq("GET", "/get_tpm_keys", nil))
	if r.Status != 500 || string(r.Body) != `{"message":"internal error"}` {
		t.Fatalf("T1 without a TPM: %d %s", r.Status, r.Body)
	}
	if r := do(t, request{Socket: d.socket("broker"), Method: "GET", Target: "/health?api-version=2026-12-01"}); r.Status != 200 {
		t.Fatalf("broker.sock after a TPM failure: %d %s", r.Status, r.Body)
	}
	d.stop()
	for _, want := range []string{"problem=no_tpm", "/nonexistent/tpmrm0 does not exist", `check="wardenctl check tpm"`} {
		if !strings.Contains(d.stderr.String(), want) {
			t.Errorf("log lacks %q:\n%s", want, d.stderr)
		}
	}
}

// TestTPMWardenctlCheck: `wardenctl check tpm` passes on a healthy swtpm
// (while wardend runs: it waits for wardend's idle connection to close),
// and fails naming the problem for a wrong hierarchy authorization, a
// foreign object at the auth key handle, and a missing TPM.
func TestTPMWardenctlCheck(t *testing.T) {
	sw := swtpmtest.Start(t, swtpmtest.Options{})
	d := startDaemon(t, tpmConfig(sw, ""))
	ek, srk := d.tpmKeys(t)
	a, err := emulator.NewTPMActivation(rand.Reader, ek, srk)
	if err != nil {
		t.Fatal(err)
	}
	d.tpmImport(t, a.Blob)
	out, stderr, code := wardenctl(t, "check", "-c", d.cfgPath, "tpm")
	if code != 0 || !strings.Contains(out, "HMAC key present") || strings.Contains(out, "error") {
		t.Fatalf("healthy: exit %d\n%s%s", code, out, stderr)
	}
	d.stop()

	ctxFile := filepath.Join(sw.Dir, "foreign.ctx")
	sw.Tool("tpm2_createprimary", "-C", "o", "-G", "ecc", "-c", ctxFile)
	sw.Tool("tpm2_evictcontrol", "-C", "o", "-c", ctxFile, "0x81000200")
	for _, tc := range []struct{ name, tpm, want string }{
		{"wrong owner auth", fmt.Sprintf("[tpm]\ntcti = %q\n[tpm.hierarchy_authorization]\nowner = \"wrong\"\n", sw.TCTI()),
			"set [tpm.hierarchy_authorization] owner"},
		{"foreign auth key", fmt.Sprintf("[tpm]\ntcti = %q\nauth_key_index = 0x200\n", sw.TCTI()),
			"auth key handle 0x81000200 holds a ECC storage key"},
		{"no TPM", "[tpm]\ntcti = \"swtpm:host=127.0.0.1,port=1\"\n", "is swtpm running"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := filepath.Join(newDir(t), "config.toml")
			if err := os.WriteFile(cfg, []byte(baseConfig(filepath.Dir(cfg))+tc.tpm), 0o600); err != nil {
				t.Fatal(err)
			}
			out, stderr, code := wardenctl(t, "check", "-c", cfg)
			if code != 1 || !strings.Contains(out, tc.want) {
				t.Fatalf("exit %d, want 1 and %q:\n%s%s", code, tc.want, out, stderr)
			}
		})
	}
}
