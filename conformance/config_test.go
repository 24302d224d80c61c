package conformance

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestBadConfigRefused: wardend does not start on a broken config, and both
// it and `wardenctl config check` name the key and the file.
func TestBadConfigRefused(t *testing.T) {
	cases := []struct {
		name, base, dropin string
		want               []string // substrings of the error besides the file
	}{
		{"unknown top-level key", "hostnme = \"x\"\n", "", []string{"hostnme"}},
		{"unknown key in warden.tokens", "[warden.tokens]\nmax_tll = \"1h\"\n", "", []string{"max_tll"}},
		{"unknown key in a principal", "[[principal]]\nuid = 1\nkees = [\"a\"]\n", "", []string{"kees"}},
		{"uid of the wrong type", "[[principal]]\nuid = \"root\"\n", "", []string{"uid"}},
		{"bad duration", "[warden.tokens]\nmax_ttl = \"forever\"\n", "", []string{"max_ttl"}},
		{"default ttl over max", "[warden.tokens]\ndefault_ttl = \"2h\"\nmax_ttl = \"1h\"\n", "", []string{"default_ttl"}},
		{"duplicate principal name", "[[principal]]\nuid = 1\nname = \"x\"\n[[principal]]\nuid = 2\nname = \"x\"\n", "", []string{"name"}},
		{"bad idtype", "[[principal]]\nuid = 1\nname = \"m\"\nidtype = [\"robot\"]\n", "", []string{"idtype"}},
		{"unknown aziot_keys parameter", "[aziot_keys]\nhome = \"/x\"\n", "", []string{"home"}},
		{"auth_key_index out of range", "[tpm]\nauth_key_index = 0x800000\n", "", []string{"auth_key_index"}},
		{"cloud timeout under 70", "cloud_timeout_sec = 5\n", "", []string{"cloud_timeout_sec"}},
		{"incomplete aziot_max_requests", "[aziot_max_requests]\nkeyd = 5\n", "", []string{"aziot_max_requests"}},
		{"bad preloaded key URI", "[preloaded_keys]\ndevice-id = \"http://x\"\n", "", []string{"device-id"}},
		{"TOML syntax error", "[warden\n", "", nil},
		{"wrong type in a drop-in", "", "[warden]\nstate_dir = 5\n", []string{"state_dir"}},
		{"unknown key in a drop-in", "", "[warden.policy]\ndirectory = \"/x\"\n", []string{"directory"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			cfg := filepath.Join(dir, "config.toml")
			os.WriteFile(cfg, []byte(c.base), 0o600)
			file := "config.toml"
			if c.dropin != "" {
				os.Mkdir(filepath.Join(dir, "config.d"), 0o700)
				os.WriteFile(filepath.Join(dir, "config.d", "50-site.toml"), []byte(c.dropin), 0o600)
				file = "50-site.toml"
			}
			want := append([]string{file}, c.want...)

			_, stderr, code := wardenctl(t, "config", "check", "-c", cfg)
			if code != 1 {
				t.Errorf("wardenctl config check exit %d, want 1", code)
			}
			for _, w := range want {
				if !strings.Contains(stderr, w) {
					t.Errorf("wardenctl error %q does not name %q", stderr, w)
				}
			}

			cmd := exec.Command(filepath.Join(binDir, "wardend"), "-c", cfg)
			var out strings.Builder
			cmd.Stderr = &out
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() { done <- cmd.Wait() }()
			select {
			case err := <-done:
				if err == nil {
					t.Fatalf("wardend exited 0 on a bad config")
				}
			case <-time.After(30 * time.Second):
				cmd.Process.Kill()
				t.Fatalf("wardend is running on a bad config")
			}
			for _, w := range want {
				if !strings.Contains(out.String(), w) {
					t.Errorf("wardend error %q does not name %q", out.String(), w)
				}
			}
		})
	}
}

// TestConfigCheckPrintsMergedConfig: drop-ins merge into what `config check` prints.
func TestConfigCheckPrintsMergedConfig(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "config.toml")
	os.WriteFile(cfg, []byte("[[principal]]\nuid = 1000\nname = \"a\"\n"), 0o600)
	os.Mkdir(filepath.Join(dir, "config.d"), 0o700)
	os.WriteFile(filepath.Join(dir, "config.d", "10-b.toml"), []byte("[[principal]]\nuid = 1001\nname = \"b\"\n"), 0o600)
	out, stderr, code := wardenctl(t, "config", "check", "-c", cfg)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	if !strings.Contains(out, `"a"`) || !strings.Contains(out, `"b"`) {
		t.Fatalf("merged config lacks a principal:\n%s", out)
	}
}
