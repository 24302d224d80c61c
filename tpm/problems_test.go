package tpm_test

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/warden-iot/warden/tpm"
	"github.com/warden-iot/warden/tpm/swtpmtest"
)

func TestParseTCTI(t *testing.T) {
	for _, tc := range []struct {
		in                 string
		kind, path, addr   string
		wantErr            string
		resourceManagedDev bool
	}{
		{in: "", kind: "device"},
		{in: "device", kind: "device"},
		{in: "device:/dev/tpmrm0", kind: "device", path: "/dev/tpmrm0"},
		{in: "swtpm", kind: "swtpm", addr: "localhost:2321"},
		{in: "swtpm:port=2400", kind: "swtpm", addr: "localhost:2400"},
		{in: "swtpm:host=127.0.0.1,port=2400", kind: "swtpm", addr: "127.0.0.1:2400"},
		{in: "swtpm:host=::1", kind: "swtpm", addr: "[::1]:2321"},
		{in: "swtpm:path=/run/swtpm.sock", kind: "swtpm", path: "/run/swtpm.sock"},
		{in: "swtpm:path=/x,port=1", wantErr: "exclude each other"},
		{in: "swtpm:port=http", wantErr: "not a TCP port"},
		{in: "swtpm:port=0", wantErr: "not a TCP port"},
		{in: "swtpm:speed=9", wantErr: `unknown key "speed"`},
		{in: "swtpm:2321", wantErr: "not key=value"},
		{in: "mssim:port=2321", wantErr: "use swtpm"},
		{in: "abrmd", wantErr: "device:/dev/tpmrm0"},
		{in: "tbs", wantErr: "unknown TCTI"},
	} {
		got, err := tpm.ParseTCTI(tc.in)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("%q: err %v, want %q", tc.in, err, tc.wantErr)
			}
			continue
		}
		if err != nil || got.Kind != tc.kind || got.Path != tc.path || got.Addr != tc.addr || got.String() != tc.in {
			t.Errorf("%q: %+v, %v", tc.in, got, err)
		}
	}
}

// TestNoTPM: nothing at the TCTI is ErrNoTPM with what to check, from every
// operation and from Check; the TPM object stays usable.
func TestNoTPM(t *testing.T) {
	sw := swtpmtest.Start(t, swtpmtest.Options{})
	sw.Stop() // its port is now closed
	for _, tc := range []struct{ tcti, want string }{
		{sw.TCTI(), "is swtpm running"},
		{"swtpm:path=" + filepath.Join(t.TempDir(), "none.sock"), "is swtpm running"},
		{"device:" + filepath.Join(t.TempDir(), "tpm0"), "does not exist"},
		{"device:/dev/null", "does not answer TPM commands"},
		{"device:" + t.TempDir(), "not a character device"},
	} {
		tp := tpm.New(tpm.Options{TCTI: tc.tcti})
		_, _, err := tp.Keys(context.Background())
		if !errors.Is(err, tpm.ErrNoTPM) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want ErrNoTPM saying %q", tc.tcti, err, tc.want)
		}
		f := tp.Check(context.Background())
		if len(f) != 1 || f[0].Level != tpm.LevelError || f[0].Subject != "connection" {
			t.Errorf("%s: check %+v", tc.tcti, f)
		}
		tp.Close()
	}
	if _, err := tpm.New(tpm.Options{TCTI: "mssim"}).SignWithAuthKey(context.Background(), nil); err == nil || !strings.Contains(err.Error(), "mssim") {
		t.Errorf("bad tcti: %v", err)
	}
}

// TestHierarchyAuth: wrong hierarchy authorization values are
// ErrHierarchyAuth naming the hierarchy; the right ones work for creating
// the keys and importing; Check reports each hierarchy.
func TestHierarchyAuth(t *testing.T) {
	sw := swtpmtest.Start(t, swtpmtest.Options{})
	sw.Tool("tpm2_changeauth", "-c", "owner", "owner-secret")
	sw.Tool("tpm2_changeauth", "-c", "endorsement", "endorsement-secret")
	right := tpm.Options{OwnerAuth: "owner-secret", EndorsementAuth: "endorsement-secret"}
	for _, tc := range []struct {
		name       string
		opts       tpm.Options
		hierarchy  string // the one refused, "" for none
		checkLevel map[string]string
	}{
		{"none configured", tpm.Options{}, "endorsement",
			map[string]string{"endorsement hierarchy": tpm.LevelError, "owner hierarchy": tpm.LevelError}},
		{"wrong owner", tpm.Options{OwnerAuth: "nope", EndorsementAuth: "endorsement-secret"}, "owner",
			map[string]string{"endorsement hierarchy": tpm.LevelOK, "owner hierarchy": tpm.LevelError}},
		{"wrong endorsement", tpm.Options{OwnerAuth: "owner-secret", EndorsementAuth: "nope"}, "endorsement",
			map[string]string{"endorsement hierarchy": tpm.LevelError, "owner hierarchy": tpm.LevelOK}},
		{"right", right, "",
			map[string]string{"endorsement hierarchy": tpm.LevelOK, "owner hierarchy": tpm.LevelOK}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tp := open(t, sw, tc.opts)
			for _, f := range tp.Check(context.Background()) {
				if want, ok := tc.checkLevel[f.Subject]; ok && f.Level != want {
					t.Errorf("check %s: %s %s, want %s", f.Subject, f.Level, f.Message, want)
				}
			}
			_, _, err := tp.Keys(context.Background())
			if tc.hierarchy == "" {
				if err != nil {
					t.Fatal(err)
				}
				a := activate(t, tp)
				if err := tp.ImportAuthKey(context.Background(), a.Blob); err != nil {
					t.Fatal(err)
				}
				return
			}
			if !errors.Is(err, tpm.ErrHierarchyAuth) || !strings.Contains(err.Error(), "[tpm.hierarchy_authorization] "+tc.hierarchy) {
				t.Fatalf("err = %v, want ErrHierarchyAuth for %s", err, tc.hierarchy)
			}
			tp.Close()
		})
	}
}

// TestHandleOccupied: foreign objects at the EK or the auth key handle are
// ErrHandleOccupied and are left alone; Check reports them.
func TestHandleOccupied(t *testing.T) {
	for _, tc := range []struct {
		name, hierarchy, handle, subject string
		op                               func(*tpm.TPM) error
	}{
		{"EK", "e", "0x81010001", "EK 0x81010001", func(tp *tpm.TPM) error {
			_, _, err := tp.Keys(context.Background())
			return err
		}},
		{"SRK", "o", "0x81000001", "SRK 0x81000001", func(tp *tpm.TPM) error {
			_, _, err := tp.Keys(context.Background())
			return err
		}},
		{"auth key", "o", "0x81000100", "auth key 0x81000100", func(tp *tpm.TPM) error {
			a := activate(t, tp)
			return tp.ImportAuthKey(context.Background(), a.Blob)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sw := swtpmtest.Start(t, swtpmtest.Options{})
			ctxFile := filepath.Join(sw.Dir, "foreign.ctx")
			sw.Tool("tpm2_createprimary", "-C", tc.hierarchy, "-G", "ecc", "-c", ctxFile)
			sw.Tool("tpm2_evictcontrol", "-C", "o", "-c", ctxFile, tc.handle)
			sw.Tool("tpm2_flushcontext", "-t")
			tp := open(t, sw, tpm.Options{})
			for _, f := range tp.Check(context.Background()) {
				if f.Subject == tc.subject && f.Level != tpm.LevelError {
					t.Errorf("check %s: %s %s", f.Subject, f.Level, f.Message)
				}
			}
			if err := tc.op(tp); !errors.Is(err, tpm.ErrHandleOccupied) || !strings.Contains(err.Error(), "ECC") {
				t.Fatalf("err = %v, want ErrHandleOccupied", err)
			}
			tp.Close()
			if out := sw.Tool("tpm2_readpublic", "-c", tc.handle); !strings.Contains(string(out), "ecc") {
				t.Fatalf("foreign object changed: %s", out)
			}
		})
	}
}

// TestCheckHealthy: a fresh TPM checks clean but for the missing auth key.
func TestCheckHealthy(t *testing.T) {
	sw := swtpmtest.Start(t, swtpmtest.Options{})
	tp := open(t, sw, tpm.Options{})
	levels := map[string]string{}
	for _, f := range tp.Check(context.Background()) {
		levels[f.Subject] = f.Level
		t.Logf("%-8s %-22s %s", f.Level, f.Subject, f.Message)
	}
	want := map[string]string{"connection": tpm.LevelOK, "endorsement hierarchy": tpm.LevelOK, "owner hierarchy": tpm.LevelOK,
		"EK 0x81010001": tpm.LevelOK, "SRK 0x81000001": tpm.LevelOK, "auth key 0x81000100": tpm.LevelWarning}
	for k, v := range want {
		if levels[k] != v {
			t.Errorf("%s: %q, want %q", k, levels[k], v)
		}
	}
}
