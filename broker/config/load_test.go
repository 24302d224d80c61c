package config

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// writeConfig writes base as config.toml and each drop-in into config.d of a
// new temp dir, and returns the path of config.toml.
func writeConfig(t *testing.T, base string, dropins map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	path := filepath.Join(dir, "config.toml")
	if err := os.WriteFile(path, []byte(base), 0o600); err != nil {
		t.Fatal(err)
	}
	if len(dropins) > 0 {
		if err := os.Mkdir(DropInDir(path), 0o700); err != nil {
			t.Fatal(err)
		}
		for name, content := range dropins {
			if err := os.WriteFile(filepath.Join(DropInDir(path), name), []byte(content), 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
	return path
}

// configErrors returns every *Error in err's tree.
func configErrors(err error) []*Error {
	var out []*Error
	var walk func(error)
	walk = func(err error) {
		if e, ok := err.(*Error); ok {
			out = append(out, e)
			return
		}
		switch u := err.(type) {
		case interface{ Unwrap() []error }:
			for _, e := range u.Unwrap() {
				walk(e)
			}
		case interface{ Unwrap() error }:
			walk(u.Unwrap())
		}
	}
	walk(err)
	return out
}

func TestBadConfigs(t *testing.T) {
	const dropin = "50-site.toml"
	cases := []struct {
		name         string
		base, dropin string
		key          string // the *Error's Key
		msg          string // a further substring of the message
	}{
		{"unknown top-level key", `hostnme = "x"`, "", "hostnme", "did you mean hostname"},
		{"keys are case-sensitive", `Hostname = "x"`, "", "Hostname", "unknown key"},
		{"unknown key in warden.tokens", "[warden.tokens]\nmax_tll = \"1h\"", "", "warden.tokens.max_tll", "did you mean max_ttl"},
		{"unknown key in a principal", "[[principal]]\nuid = 1\n[[principal]]\nuid = 2\n[[principal]]\nuid = 3\nuidd = 4", "",
			"principal[2].uidd", "unknown key"},
		{"uid of the wrong type", "[[principal]]\nuid = \"x\"", "", "principal[0].uid", "want an integer, found a string"},
		{"negative uid", "[[principal]]\nuid = -1", "", "principal[0].uid", "out of range"},
		{"table of the wrong type", "warden = 5", "", "warden", "want a table"},
		{"datetime for a string", "hostname = 1979-05-27", "", "hostname", "found a datetime"},
		{"wrong type in a drop-in", "", "[warden]\nstate_dir = 5", "warden.state_dir", "want a string"},
		{"unknown key in a drop-in", "[[principal]]\nuid = 1", "[[principal]]\nuid = 2\n[[principal]]\nuid = 3\nkees = [\"a\"]",
			"principal[1].kees", "did you mean keys"},
		{"missing uid in a drop-in", "[[principal]]\nuid = 1\n[[principal]]\nuid = 2", "[[principal]]\nname = \"n\"",
			"principal[0].uid", "required"},
		{"bad duration", "[warden.tokens]\nmax_ttl = \"forever\"", "", "warden.tokens.max_ttl", "invalid duration"},
		{"default_ttl over max_ttl", "[warden.tokens]\ndefault_ttl = \"2h\"\nmax_ttl = \"1h\"", "", "warden.tokens.default_ttl", "longer than max_ttl"},
		{"default_ttl over max_ttl set in a drop-in", "[warden.tokens]\ndefault_ttl = \"30m\"", "[warden.tokens]\nmax_ttl = \"10m\"",
			"warden.tokens.default_ttl", "longer than max_ttl"},
		{"duplicate principal name", "[[principal]]\nuid = 1\nname = \"x\"\n[[principal]]\nuid = 2\nname = \"x\"", "",
			"principal[1].name", "duplicate principal name"},
		{"duplicate principal name across files", "[[principal]]\nuid = 1\nname = \"x\"", "[[principal]]\nuid = 2\nname = \"x\"",
			"principal[0].name", "also principal[0] in "},
		{"bad idtype", "[[principal]]\nuid = 1\nidtype = [\"robot\"]", "", "principal[0].idtype[0]", `not "robot"`},
		{"local without [localid]", "[[principal]]\nuid = 1\nname = \"m\"\nidtype = [\"local\"]", "", "principal[0].idtype[0]", "[localid]"},
		{"localid without local", "[localid]\ndomain = \"d\"\n[[principal]]\nuid = 1\nidtype = [\"module\"]\nlocalid = { type = \"x509\" }", "",
			"principal[0].localid", `only allowed with "local"`},
		{"bad localid attributes", "[localid]\ndomain = \"d\"\n[[principal]]\nuid = 1\nidtype = [\"local\"]\nlocalid = { type = \"x509\", attributes = \"both\" }", "",
			"principal[0].localid.attributes", "client"},
		{"module idtype without provisioning", "[provisioning]\nsource = \"none\"\n[[principal]]\nuid = 1\nidtype = [\"module\"]", "",
			"principal[0].idtype[0]", "none"},
		{"unknown [aziot_keys] key", "[aziot_keys]\nhome = \"/x\"", "", "aziot_keys.home", "homedir_path"},
		{"auth_key_index out of range", "[tpm]\nauth_key_index = 0x800000", "", "tpm.auth_key_index", "out of range"},
		{"cloud_timeout_sec under 70", "cloud_timeout_sec = 69", "", "cloud_timeout_sec", "at least 70"},
		{"cloud_timeout_sec past a day", "cloud_timeout_sec = 9223372036", "", "cloud_timeout_sec", "at most 86400"},
		{"bad threshold", "[cert_issuance.est.identity_auto_renew]\nthreshold = \"101%\"", "",
			"cert_issuance.est.identity_auto_renew.threshold", "less than 100"},
		{"bad retry in a drop-in", "", "[provisioning.attestation.identity_auto_renew]\nretry = \"1year\"",
			"provisioning.attestation.identity_auto_renew.retry", "invalid renewal policy"},
		{"incomplete aziot_max_requests", "[aziot_max_requests]\nkeyd = 5\ncertd = 5\ntpmd = 5", "", "aziot_max_requests.identityd", "required"},
		{"zero max_requests", "[aziot_max_requests]\nkeyd = 0\ncertd = 5\ntpmd = 5\nidentityd = 5", "", "aziot_max_requests.keyd", "at least 1"},
		{"bad preloaded key URI", "[preloaded_keys]\ndevice-id = \"http://x\"", "", "preloaded_keys.device-id", "file:// or pkcs11:"},
		{"pkcs11 key without library", "[preloaded_keys]\nk = \"pkcs11:slot-id=0;object=k\"", "", "preloaded_keys.k", "pkcs11_lib_path"},
		{"pkcs11 URI without slot", "[aziot_keys]\npkcs11_lib_path = \"/l.so\"\n[preloaded_keys]\nk = \"pkcs11:object=k\"", "",
			"preloaded_keys.k", "neither slot-id nor token"},
		{"bad preloaded cert", "[preloaded_certs]\nca = \"https://example.org/ca.pem\"", "", "preloaded_certs.ca", "file://"},
		{"preloaded cert of the wrong type", "[preloaded_certs]\nca = 5", "", "preloaded_certs.ca", "array of cert IDs"},
		{"bad module sha256", "[warden.modules.dps]\npath = \"/m/dps.wasm\"\nsha256 = \"abc\"", "", "warden.modules.dps.sha256", "64 hex"},
		{"module without integrity pin", "[warden.modules.dps]\npath = \"/m/dps.wasm\"", "", "warden.modules.dps", "sha256 or signature"},
		{"bad module egress", "[warden.modules.dps]\npath = \"/m/dps.wasm\"\nsignature = \"s\"\negress = [\"a.org:0\"]", "",
			"warden.modules.dps.egress[0]", "port"},
		{"bad module signature", "[warden.modules.dps]\npath = \"/m/dps.wasm\"\nsignature = \"c2ln\"\ntrusted_keys = [\"/k.pem\"]", "",
			"warden.modules.dps.signature", "64-byte Ed25519 signature"},
		{"module signature without trusted keys", "[warden.modules.dps]\npath = \"/m/dps.wasm\"\nsignature = \"/m/dps.wasm.sig\"", "",
			"warden.modules.dps.trusted_keys", "signature needs trusted_keys"},
		{"bad module trusted key", "[warden.modules.dps]\npath = \"/m/dps.wasm\"\nsignature = \"/m/dps.wasm.sig\"\ntrusted_keys = [\"k.pem\"]", "",
			"warden.modules.dps.trusted_keys[0]", "32-byte Ed25519 public key"},
		{"negative max_host_calls", "[warden.modules.dps]\npath = \"/m/dps.wasm\"\nsha256 = \"" + strings.Repeat("a", 64) + "\"\nmax_host_calls = -1", "",
			"warden.modules.dps.max_host_calls", "negative"},
		{"negative max_output_bytes", "[warden.modules.dps]\npath = \"/m/dps.wasm\"\nsha256 = \"" + strings.Repeat("a", 64) + "\"\nmax_output_bytes = -1", "",
			"warden.modules.dps.max_output_bytes", "negative"},
		{"socket_group past a 32-bit gid", "[warden]\nsocket_group = \"4294967296\"", "", "warden.socket_group", "out of range"},
		{"socket_group (gid_t)-1", "[warden]\nsocket_group = \"4294967295\"", "", "warden.socket_group", "out of range"},
		{"relative state_dir", "[warden]\nstate_dir = \"var/lib\"", "", "warden.state_dir", "absolute"},
		// wardend would listen on one socket twice (broker.sock then
		// unreachable), or replace the state directory, keys and all, by a
		// socket.
		{"broker_socket on an aziot socket", "[warden]\nsocket_dir = \"/run/w\"\nbroker_socket = \"/run/w/keyd.sock\"", "",
			"warden.broker_socket", "keyd socket"},
		{"broker_socket on the socket directory", "[warden]\nsocket_dir = \"/run/w\"\nbroker_socket = \"/run/w/\"", "",
			"warden.broker_socket", "socket_dir"},
		{"broker_socket on the state directory", "[warden]\nstate_dir = \"/var/lib/w\"\nbroker_socket = \"/var/lib/w\"", "",
			"warden.broker_socket", "state_dir"},
		{"broker_socket above the state directory", "[warden]\nstate_dir = \"/var/lib/w/state\"\nbroker_socket = \"/var/lib/w\"", "",
			"warden.broker_socket", "state_dir"},
		// Tokens live whole seconds: the token authority refuses less, and
		// wardend stopped at start without naming the key.
		{"default_ttl under a second", "[warden.tokens]\ndefault_ttl = \"500ms\"", "", "warden.tokens.default_ttl", "at least 1s"},
		{"max_ttl under a second", "[warden.tokens]\ndefault_ttl = \"1s\"\nmax_ttl = \"900ms\"", "", "warden.tokens.max_ttl", "at least 1s"},
		{"expiry_days zero", "[cert_issuance.dev]\nmethod = \"self_signed\"\nexpiry_days = 0", "", "cert_issuance.dev.expiry_days", "greater than 0"},
		{"expiry_days past a time.Duration", "[cert_issuance.dev]\nmethod = \"self_signed\"\nexpiry_days = 106752", "", "cert_issuance.dev.expiry_days", "at most 106751"},
		{"issuance method unknown", "[cert_issuance.dev]\nmethod = \"acme\"", "", "cert_issuance.dev.method", `not "acme"`},
		{"local_ca method without local CA", "[cert_issuance.dev]\nmethod = \"local_ca\"", "", "cert_issuance.dev.method", "[cert_issuance.local_ca]"},
		{"local CA issued by itself", "[cert_issuance.local_ca]\ncert = \"local-ca\"\npk = \"local-ca\"\n[cert_issuance.local-ca]\nmethod = \"local_ca\"", "",
			"cert_issuance.local-ca.method", "issued by itself"},
		{"EST without URL", "[cert_issuance.dev]\nmethod = \"est\"", "", "cert_issuance.dev.method", "EST URL is not configured"},
		{"EST auth set twice", "[cert_issuance.est]\nusername = \"a\"\npassword = \"b\"\n[cert_issuance.est.auth]\nusername = \"c\"", "",
			"cert_issuance.est.username", "set both"},
		{"alias set twice", "parent_hostname = \"a\"\nlocal_gateway_hostname = \"b\"", "", "parent_hostname", "alias"},
		{"missing provisioning source", "[provisioning]\nconnection_string = \"x\"", "", "provisioning.source", "required"},
		{"bad connection string", "[provisioning]\nsource = \"manual\"\nconnection_string = \"HostName=h;SharedAccessKey=YWJj\"", "",
			"provisioning.connection_string", "DeviceId"},
		{"bad symmetric key", "[provisioning]\nsource = \"dps\"\nglobal_endpoint = \"https://g.example/\"\nid_scope = \"s\"\n" +
			"[provisioning.attestation]\nmethod = \"symmetric_key\"\nregistration_id = \"r\"\nsymmetric_key = { value = \"not base64!\" }", "",
			"provisioning.attestation.symmetric_key.value", "base64"},
		{"key for the wrong attestation method", "[provisioning]\nsource = \"dps\"\nglobal_endpoint = \"https://g.example/\"\nid_scope = \"s\"\n" +
			"[provisioning.attestation]\nmethod = \"tpm\"\nregistration_id = \"r\"\nidentity_pk = \"file:///k.pem\"", "",
			"provisioning.attestation.identity_pk", `not used with method = "tpm"`},
		{"identity_cert of the wrong type", "[provisioning]\nsource = \"manual\"\niothub_hostname = \"h\"\ndevice_id = \"d\"\n" +
			"[provisioning.authentication]\nmethod = \"x509\"\nidentity_cert = 5", "",
			"provisioning.authentication.identity_cert", "issuance options"},
		{"unknown key in an issuance table", "[provisioning]\nsource = \"manual\"\niothub_hostname = \"h\"\ndevice_id = \"d\"\n" +
			"[provisioning.authentication]\nmethod = \"x509\"\nidentity_cert = { method = \"self_signed\", comon_name = \"x\" }", "",
			"provisioning.authentication.identity_cert.comon_name", "did you mean common_name"},
		{"DPS in nested mode", "local_gateway_hostname = \"gw\"\n[provisioning]\nsource = \"dps\"\nglobal_endpoint = \"https://g.example/\"\n" +
			"id_scope = \"s\"\n[provisioning.attestation]\nmethod = \"tpm\"\nregistration_id = \"r\"", "",
			"local_gateway_hostname", "nested mode"},
		{"TOML syntax error", "[warden.tokens]\nmax_ttl = \"1h\n", "", "warden.tokens.max_ttl", "TOML syntax error"},
		{"TOML syntax error in a drop-in", "", "[warden\n", "", "TOML syntax error"},
		{"duplicate key", "hostname = \"a\"\nhostname = \"b\"", "", "hostname", "already been defined"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var dropins map[string]string
			file := "config.toml"
			if c.dropin != "" {
				dropins = map[string]string{dropin: c.dropin}
				file = dropin
			}
			path := writeConfig(t, c.base, dropins)
			cfg, err := Load(path)
			if err == nil {
				t.Fatalf("loaded: %+v", cfg)
			}
			msg := err.Error()
			for _, want := range []string{file, c.key, c.msg} {
				if !strings.Contains(msg, want) {
					t.Errorf("error %q does not contain %q", msg, want)
				}
			}
			found := false
			for _, e := range configErrors(err) {
				if filepath.Base(e.File) == file && e.Key == c.key {
					found = true
				}
			}
			if !found {
				t.Errorf("no *Error with file %s and key %q in %q", file, c.key, msg)
			}
		})
	}
}

func TestSyntaxErrorLine(t *testing.T) {
	path := writeConfig(t, "hostname = \"a\"\n\n[warden\n", nil)
	_, err := Load(path)
	var e *Error
	if !errors.As(err, &e) || e.Line != 3 {
		t.Fatalf("error %v: want an *Error at line 3", err)
	}
	if !strings.Contains(err.Error(), "config.toml:3: ") {
		t.Errorf("error %q does not show file:line", err)
	}
}

func TestMissingBaseFile(t *testing.T) {
	_, err := Load(filepath.Join(t.TempDir(), "config.toml"))
	if !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("err = %v, want ErrNotExist", err)
	}
}

func TestEmptyConfigDefaults(t *testing.T) {
	cfg, err := Load(writeConfig(t, "", nil))
	if err != nil {
		t.Fatal(err)
	}
	want := &Config{
		CloudTimeoutSec: 70,
		CloudRetries:    1,
		TPM:             TPM{TCTI: "device", AuthKeyIndex: 0x100},
		Warden: Warden{
			StateDir:     "/var/lib/warden",
			SocketDir:    "/run/warden",
			BrokerSocket: "/run/warden/broker.sock",
			Tokens:       Tokens{DefaultTTL: Duration{15 * time.Minute}, MaxTTL: Duration{time.Hour}},
		},
	}
	if !reflect.DeepEqual(cfg, want) {
		t.Fatalf("got  %+v\nwant %+v", cfg, want)
	}
	for _, svc := range []string{"keyd", "certd", "identityd", "tpmd", "broker"} {
		if n := cfg.MaxRequests(svc); n != 10 {
			t.Errorf("MaxRequests(%s) = %d, want 10", svc, n)
		}
	}
	if p := cfg.SocketPath("keyd"); p != "/run/warden/keyd.sock" {
		t.Errorf("SocketPath(keyd) = %s", p)
	}
	if p := cfg.SocketPath("broker"); p != "/run/warden/broker.sock" {
		t.Errorf("SocketPath(broker) = %s", p)
	}
	if h := cfg.TPM.AuthKeyHandle(); h != 0x81000100 {
		t.Errorf("AuthKeyHandle = %#x", h)
	}
}

func TestSocketPaths(t *testing.T) {
	cfg, err := Load(writeConfig(t, "[warden]\nsocket_dir = \"/tmp/w\"\n", nil))
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.SocketPath("broker"); got != "/tmp/w/broker.sock" {
		t.Errorf("broker socket follows socket_dir: got %s", got)
	}
	if got := cfg.SocketPath("identityd"); got != "/tmp/w/identityd.sock" {
		t.Errorf("identityd socket: got %s", got)
	}
}

func TestMerge(t *testing.T) {
	base := `hostname = "base"
cloud_retries = 3
[warden]
state_dir = "/base/state"
[warden.tokens]
default_ttl = "1m"
[cert_issuance.est]
trusted_certs = ["file:///base.pem"]
[[principal]]
uid = 1
name = "base"
`
	path := writeConfig(t, base, map[string]string{
		"20-b.toml": "hostname = \"b\"\n[warden.tokens]\nmax_ttl = \"2h\"\n[[principal]]\nuid = 3\nname = \"b\"\n" +
			"[cert_issuance.est]\ntrusted_certs = [\"file:///b.pem\"]\n",
		"10-a.toml": "hostname = \"a\"\n[warden]\nsocket_dir = \"/a/run\"\n[[principal]]\nuid = 2\nname = \"a\"\n",
		"README":    "not toml at all [",
		"x.toml~":   "not toml at all [",
	})
	dir := DropInDir(path)
	if err := os.Mkdir(filepath.Join(dir, "sub.toml"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "sub.toml", "30-c.toml"), []byte("hostname = \"sub\""), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(dir, "10-a.toml"), filepath.Join(dir, "40-link.toml")); err != nil {
		t.Fatal(err)
	}

	files, err := DropIns(path)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, f := range files {
		names = append(names, filepath.Base(f))
	}
	if want := []string{"10-a.toml", "20-b.toml", "40-link.toml"}; !reflect.DeepEqual(names, want) {
		t.Fatalf("DropIns = %v, want %v", names, want)
	}

	// The symlink repeats 10-a's principal name: load without it first.
	cfg, err := LoadFiles(path, files[:2])
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Hostname != "b" {
		t.Errorf("hostname = %q, want the last drop-in's", cfg.Hostname)
	}
	if cfg.CloudRetries != 3 {
		t.Errorf("cloud_retries = %d, want the base's 3", cfg.CloudRetries)
	}
	w := cfg.Warden
	if w.StateDir != "/base/state" || w.SocketDir != "/a/run" || w.BrokerSocket != "/a/run/broker.sock" {
		t.Errorf("[warden] did not merge: %+v", w)
	}
	if w.Tokens.DefaultTTL.Duration != time.Minute || w.Tokens.MaxTTL.Duration != 2*time.Hour {
		t.Errorf("[warden.tokens] did not merge: %+v", w.Tokens)
	}
	var order []string
	for _, p := range cfg.Principals {
		order = append(order, p.Name)
	}
	if want := []string{"base", "a", "b"}; !reflect.DeepEqual(order, want) {
		t.Errorf("principals %v, want %v", order, want)
	}
	if got, want := cfg.CertIssuance.EST.TrustedCerts, []string{"file:///base.pem", "file:///b.pem"}; !reflect.DeepEqual(got, want) {
		t.Errorf("trusted_certs %v, want %v", got, want)
	}

	// Load follows the symlink, so principal "a" comes twice.
	_, err = Load(path)
	if err == nil || !strings.Contains(err.Error(), "40-link.toml: principal[0].name: duplicate principal name \"a\"") {
		t.Errorf("Load with the symlinked drop-in: %v", err)
	}
}

func TestMergeAliasAcrossFiles(t *testing.T) {
	// A drop-in's canonical key replaces the base's alias, as if both used one name.
	const dps = "[provisioning]\nsource = \"dps\"\nglobal_endpoint = \"https://g.example/\"\nscope_id = \"old\"\n" +
		"[provisioning.attestation]\nmethod = \"tpm\"\nregistration_id = \"r\"\n"
	cfg, err := Load(writeConfig(t, dps, map[string]string{"10.toml": "[provisioning]\nid_scope = \"new\"\n"}))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Provisioning.IDScope != "new" {
		t.Errorf("id_scope = %q, want the drop-in's", cfg.Provisioning.IDScope)
	}
	cfg, err = Load(writeConfig(t, "parent_hostname = \"old\"\n", map[string]string{"10.toml": "local_gateway_hostname = \"new\"\n"}))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.LocalGatewayHostname != "new" {
		t.Errorf("local_gateway_hostname = %q, want the drop-in's", cfg.LocalGatewayHostname)
	}
}

func TestFlattenedESTAuthMerges(t *testing.T) {
	path := writeConfig(t, "[cert_issuance.est]\nusername = \"u\"\npassword = \"p\"\n",
		map[string]string{"10.toml": "[cert_issuance.est.auth]\npassword = \"p2\"\n"})
	cfg, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if a := cfg.CertIssuance.EST.Auth; a.Username != "u" || a.Password != "p2" {
		t.Errorf("auth = %+v, want username from the base, password from the drop-in", a)
	}
}

func TestRoundTrip(t *testing.T) {
	files, err := filepath.Glob("testdata/golden/*.toml")
	if err != nil || len(files) == 0 {
		t.Fatal("no golden files", err)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			cfg, err := LoadFiles(f, nil)
			if err != nil {
				t.Fatal(err)
			}
			var buf bytes.Buffer
			if err := cfg.Encode(&buf); err != nil {
				t.Fatal(err)
			}
			again, err := LoadFiles(writeConfig(t, buf.String(), nil), nil)
			if err != nil {
				t.Fatalf("encoded config does not load: %v\n%s", err, buf.String())
			}
			if !reflect.DeepEqual(cfg, again) {
				t.Fatalf("round trip changed the config:\n%+v\n%+v\n%s", cfg, again, buf.String())
			}
		})
	}
}

func TestEncodeRedacted(t *testing.T) {
	cfg, err := LoadFiles("testdata/golden/manual-x509-est-custom.toml", nil)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := cfg.EncodeRedacted(&buf); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	for _, secret := range []string{"estpwd", "1234"} {
		if strings.Contains(out, secret) {
			t.Errorf("redacted output shows %q:\n%s", secret, out)
		}
	}
	if !strings.Contains(out, "estuser") || !strings.Contains(out, "pin-value=<redacted>") {
		t.Errorf("redacted output lost non-secrets:\n%s", out)
	}
}

// TestBadPKCS11URIHidesPIN: a pkcs11: URI the configuration refuses is
// quoted in the error, which wardend logs (at start and on SIGHUP), without
// its PIN, as EncodeRedacted shows it.
func TestBadPKCS11URIHidesPIN(t *testing.T) {
	for _, uri := range []string{
		"pkcs11:object=k?pin-value=s3cr3t",                   // neither slot-id nor token
		"pkcs11:slot-id=x;object=k?pin-value=s3cr3t",         // slot-id not a number
		"pkcs11:slot-id=0;object=k%zz?pin-value=s3cr3t",      // a bad escape in the path
		"pkcs11:slot-id=0;object=k?pin-value=s3cr3t%zz",      // a bad escape in the PIN
		"pkcs11:slot-id=0;object=k?pin%2Dvalue=s3cr3t&x=%zz", // the name escaped, another bad attribute
		"pkcs11:token=t;object=k;pin-value=s3cr3t;id",        // the PIN among the path attributes
		"PKCS11:slot-id=0;object=k?pin-value=s3cr3t",         // not the scheme's spelling
	} {
		cfg := "[aziot_keys]\npkcs11_lib_path = \"/l.so\"\npkcs11_base_slot = \"" + uri + "\"\n[preloaded_keys]\nk = \"" + uri + "\""
		_, err := Load(writeConfig(t, cfg, nil))
		if err == nil || !strings.Contains(err.Error(), "preloaded_keys.k") {
			t.Fatalf("%s: err = %v, want an error on preloaded_keys.k", uri, err)
		}
		if strings.Contains(err.Error(), "s3cr3t") {
			t.Errorf("%s: the error shows the PIN: %v", uri, err)
		}
	}
	// A certificate cannot come from PKCS#11.
	for _, uri := range []string{"pkcs11:slot-id=0;object=c?pin-value=s3cr3t", "pkcs11:slot-id=0;object=c?pin-value=s3cr3t%zz"} {
		_, err := Load(writeConfig(t, "[preloaded_certs]\nc = \""+uri+"\"", nil))
		if err == nil || !strings.Contains(err.Error(), "preloaded_certs.c") || strings.Contains(err.Error(), "s3cr3t") {
			t.Errorf("a pkcs11: certificate: err = %v, want one on preloaded_certs.c without the PIN", err)
		}
	}
}

// TestSyntaxErrorHidesSecret: a TOML syntax error in the value of a
// secret (an unquoted password or PIN) does not quote the value; wardend
// logs the error on SIGHUP. The key and the line are still named.
func TestSyntaxErrorHidesSecret(t *testing.T) {
	for _, c := range []struct{ text, key string }{
		{"[cert_issuance.est.auth]\npassword = hunter\n", "cert_issuance.est.auth.password"},
		{"[tpm.hierarchy_authorization]\nowner = hunter\n", "tpm.hierarchy_authorization.owner"},
		{"[provisioning.attestation]\nsymmetric_key = { value = hunter }\n", "provisioning.attestation.symmetric_key.value"},
		{"[cert_issuance.est.auth]\npassword = \"hunter\\q\"\n", "cert_issuance.est.auth.password"},
	} {
		_, err := Load(writeConfig(t, c.text, nil))
		if err == nil || !strings.Contains(err.Error(), "config.toml:2: "+c.key+": TOML syntax error") {
			t.Errorf("%q: err = %v, want a syntax error on %s at line 2", c.text, err, c.key)
			continue
		}
		for _, part := range []string{"hunter", `\q`} {
			if strings.Contains(err.Error(), part) {
				t.Errorf("%q: the error shows the secret: %v", c.text, err)
			}
		}
	}
	// Other keys keep the parser's words.
	_, err := Load(writeConfig(t, "hostname = my-device\n", nil))
	if err == nil || !strings.Contains(err.Error(), `found "my" instead`) {
		t.Errorf("err = %v, want the parser's message", err)
	}
}

// TestBadPINEscapeHidesPIN: a malformed percent escape in a pin-value
// among the path attributes is not quoted (the escape error quotes two
// bytes of the PIN), as for one in the query.
func TestBadPINEscapeHidesPIN(t *testing.T) {
	uri := "pkcs11:token=t;object=k;pin-value=12%G4"
	_, err := Load(writeConfig(t, "[aziot_keys]\npkcs11_lib_path = \"/l.so\"\n[preloaded_keys]\nk = \""+uri+"\"", nil))
	if err == nil || !strings.Contains(err.Error(), "preloaded_keys.k") {
		t.Fatalf("err = %v, want an error on preloaded_keys.k", err)
	}
	if strings.Contains(err.Error(), "G4") || strings.Contains(err.Error(), "12") {
		t.Errorf("the error shows part of the PIN: %v", err)
	}
}
