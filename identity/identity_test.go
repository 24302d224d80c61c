package identity

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestEncodeSR(t *testing.T) {
	tests := []struct{ in, want string }{
		{"example.azure-devices.net/devices/my-device", "example.azure-devices.net/devices/my-device"},
		{"0ab1234C5D6/registrations/my-device", "0ab1234c5d6/registrations/my-device"},
		{"hub:8443/devices/a b", "hub:8443/devices/a%20b"},
		{`h/devices/x"#<>?{}=` + "`", "h/devices/x%22%23%3C%3E%3F%7B%7D%3D%60"},
		{"h/devices/é", "h/devices/%C3%A9"},
		{"h/devices/a&b+c", "h/devices/a&b+c"},
	}
	for _, tc := range tests {
		if got := EncodeSR(tc.in); got != tc.want {
			t.Errorf("EncodeSR(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestToken(t *testing.T) {
	key := []byte("0123456789abcdef0123456789abcdef")
	tests := []struct {
		name, aud, skn, want string
	}{
		{"hub", HubAudience("example.azure-devices.net", "my-device"), "", "SharedAccessSignature sr=example.azure-devices.net/devices/my-device&sig="},
		{"dps", DPSAudience("0ab1234C5D6", "my-device"), "registration", "SharedAccessSignature sr=0ab1234c5d6/registrations/my-device&sig="},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			sr := EncodeSR(tc.aud)
			m := hmac.New(sha256.New, key)
			m.Write(StringToSign(sr, 1700000000))
			tok := Token(sr, m.Sum(nil), 1700000000, tc.skn)
			if !strings.HasPrefix(tok, tc.want) || !strings.Contains(tok, "&se=1700000000") ||
				strings.HasSuffix(tok, "&skn=registration") != (tc.skn != "") {
				t.Fatalf("token = %q", tok)
			}
			sig := tok[strings.Index(tok, "&sig=")+5 : strings.Index(tok, "&se=")]
			if strings.ContainsAny(sig, "+/=") {
				t.Fatalf("sig %q is not form-urlencoded", sig)
			}
		})
	}
	if string(ModuleKeyData("m", "g", true)) != "m:g:primary" || string(ModuleKeyData("m", "g", false)) != "m:g:secondary" {
		t.Fatal("module key data")
	}
}

func TestParseConnectionString(t *testing.T) {
	tests := []struct {
		in  string
		ok  bool
		hub string
	}{
		{"HostName=h.azure-devices.net;DeviceId=d1;SharedAccessKey=AAAA", true, "h.azure-devices.net"},
		{"DeviceId=d1;SharedAccessKey=AAAA;HostName=h;GatewayHostName=parent", true, "h"},
		{"HostName=h;DeviceId=d1", false, ""},
		{"HostName=h;DeviceId=d1;SharedAccessKey=*", false, ""},
		{"HostName=h;DeviceId=d1;SharedAccessKey=AAAA;Bogus=1", true, "h"},
	}
	for _, tc := range tests {
		c, err := ParseConnectionString(tc.in)
		if (err == nil) != tc.ok {
			t.Errorf("%q: err = %v", tc.in, err)
			continue
		}
		if tc.ok && (c.HostName != tc.hub || c.DeviceID != "d1") {
			t.Errorf("%q = %+v", tc.in, c)
		}
	}
}

func TestState(t *testing.T) {
	dir := t.TempDir()
	s, err := OpenState(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Device(); !errors.Is(err, ErrNoBackup) {
		t.Fatalf("fresh Device() = %v", err)
	}
	os.WriteFile(filepath.Join(dir, "device_info"), []byte("unprovisioned"), 0o600)
	if _, err := s.Device(); !errors.Is(err, ErrNoBackup) {
		t.Fatalf("unprovisioned Device() = %v", err)
	}
	d := &Device{HubName: "example.azure-devices.net", GatewayHost: "example.azure-devices.net", DeviceID: "my-device"}
	if err := s.SetDevice(d); err != nil {
		t.Fatal(err)
	}
	// The backup directory of aziot-api.md §8.5's example.
	want := filepath.Join(dir, "modules", "fdf196a2efcfa0b66c902b9752b36dcba4d7faa37057565a30dc5e7353c9f1a2-d0db066789a1abacafee5d79e45dfdf4e21a35802403df05fbfdb3c65de64a3a")
	if got := filepath.Dir(s.ModulePath(d, "m/1")); got != want {
		t.Fatalf("module dir = %s", got)
	}
	if !strings.HasPrefix(filepath.Base(s.ModulePath(d, "m/1")), "m_1-") {
		t.Fatalf("module file = %s", s.ModulePath(d, "m/1"))
	}
	m := &Module{ModuleID: "m/1", DeviceID: "my-device", GenerationID: "g1",
		Authentication: &Authentication{Type: "sas", SymmetricKey: &SymmetricKey{PrimaryKey: "secret"}}}
	if err := s.PutModule(d, m); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(s.ModulePath(d, "m/1"))
	if strings.Contains(string(b), "secret") {
		t.Fatal("a module backup holds its keys")
	}
	got, err := s.GetModule(d, "m/1")
	if err != nil || got.GenerationID != "g1" {
		t.Fatalf("GetModule = %+v, %v", got, err)
	}
	if ms, _ := s.Modules(d); len(ms) != 1 {
		t.Fatalf("Modules = %v", ms)
	}
	// An ID past IoT Hub's 128 characters still has a backup: its file
	// name stays under the file system's 255 bytes.
	long := &Module{ModuleID: strings.Repeat("m", 300), DeviceID: "my-device", GenerationID: "g2"}
	if err := s.PutModule(d, long); err != nil {
		t.Fatalf("PutModule(300-character ID): %v", err)
	}
	if got, err := s.GetModule(d, long.ModuleID); err != nil || got.GenerationID != "g2" {
		t.Fatalf("GetModule(300-character ID) = %+v, %v", got, err)
	}
	if err := s.DeleteModule(d, long.ModuleID); err != nil {
		t.Fatal(err)
	}
	if err := s.SetPrevState(&PrevState{HubName: d.HubName, DeviceID: d.DeviceID, Modules: []string{"b", "a"}}); err != nil {
		t.Fatal(err)
	}
	if p, err := s.PrevState(); err != nil || strings.Join(p.Modules, ",") != "a,b" {
		t.Fatalf("PrevState = %+v, %v", p, err)
	}
	// Another device wipes the previous device's backups.
	if err := s.SetDevice(&Device{HubName: "other", GatewayHost: "other", DeviceID: "my-device"}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetModule(d, "m/1"); err == nil {
		t.Fatal("the previous device's backup survived a device change")
	}
	if err := s.ClearDevice(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Device(); !errors.Is(err, ErrNoBackup) {
		t.Fatalf("after ClearDevice: %v", err)
	}
	if fi, _ := os.Stat(filepath.Join(dir, "modules")); fi.Mode().Perm() != 0o700 {
		t.Fatalf("modules dir mode %v", fi.Mode())
	}
}

// TestMint: a fresh token of aziot's format, signed by the callback, that
// expires TokenLifetime after now.
func TestMint(t *testing.T) {
	key := []byte("device key")
	now := time.Unix(1_700_000_000, 0)
	var signed []byte
	tok, err := Mint(DPSAudience("0ne00ABC", "Dev-1"), "registration", now, TokenLifetime, func(m []byte) ([]byte, error) {
		signed = m
		mac := hmac.New(sha256.New, key)
		mac.Write(m)
		return mac.Sum(nil), nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if string(signed) != "0ne00abc/registrations/dev-1\n1700000030" {
		t.Fatalf("signed %q", signed)
	}
	mac := hmac.New(sha256.New, key)
	mac.Write(signed)
	want := "SharedAccessSignature sr=0ne00abc/registrations/dev-1&sig=" + url.QueryEscape(base64.StdEncoding.EncodeToString(mac.Sum(nil))) + "&se=1700000030&skn=registration"
	if tok != want {
		t.Fatalf("token %q, want %q", tok, want)
	}
	if _, err := Mint(HubAudience("h", "d"), "", now, TokenLifetime, func([]byte) ([]byte, error) { return nil, errors.New("no key") }); err == nil {
		t.Fatal("a signing failure minted a token")
	}
}

// TestConnectionStringExtraComponents: components other than HostName,
// DeviceId and SharedAccessKey (GatewayHostName too) are ignored, as aziot's
// parser and the configuration's validation ignore them (docs/config.md):
// a connection string the configuration accepts must provision.
func TestConnectionStringExtraComponents(t *testing.T) {
	for _, in := range []string{
		"HostName=h;DeviceId=d1;SharedAccessKey=AAAA;ModuleId=m",
		"HostName=h;DeviceId=d1;SharedAccessKey=AAAA;x509=true",
		"HostName=h;DeviceId=d1;SharedAccessKey=AAAA;stray",
	} {
		c, err := ParseConnectionString(in)
		if err != nil || c.HostName != "h" || c.DeviceID != "d1" || len(c.SharedAccessKey) != 3 {
			t.Errorf("%q = %+v, %v", in, c, err)
		}
	}
	// What is refused is not quoted: a typo'd part may be the key itself.
	if _, err := ParseConnectionString("HostName=h;DeviceId=d1;SharedAccessKey:c2VjcmV0LWtleQ=="); err == nil ||
		strings.Contains(err.Error(), "c2VjcmV0LWtleQ") {
		t.Errorf("error %v", err)
	}
}
