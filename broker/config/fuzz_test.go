package config

import (
	"bytes"
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

// FuzzLoad: arbitrary bytes as the base file and as a drop-in never panic;
// they load or give *Errors. What loads encodes, and the encoding loads back
// as the same configuration. (The files are kept in memory: LoadFiles only
// reads them before doing the same.)
func FuzzLoad(f *testing.F) {
	golden, _ := filepath.Glob("testdata/golden/*.toml")
	for _, g := range golden {
		b, err := os.ReadFile(g)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b, []byte(""))
		f.Add([]byte(""), b)
	}
	f.Add([]byte("[[principal]]\nuid = 1\nname = \"a\"\n"), []byte("[[principal]]\nuid = 2\nname = \"a\"\n"))
	f.Add([]byte("parent_hostname = \"a\"\n[cert_issuance.est]\nusername = \"u\"\n"), []byte("[cert_issuance.est.auth]\npassword = \"p\"\n"))
	f.Add([]byte("[preloaded_certs]\na = \"file:///a\"\n"), []byte("[preloaded_certs]\na = [\"b\"]\n"))

	f.Fuzz(func(t *testing.T, base, dropin []byte) {
		cfg, err := load([]source{{"config.toml", base}, {"config.d/10-dropin.toml", dropin}})
		if err != nil {
			if len(configErrors(err)) == 0 {
				t.Fatalf("error without an *Error: %v", err)
			}
			return
		}
		var buf bytes.Buffer
		if err := cfg.Encode(&buf); err != nil {
			t.Fatalf("loaded config does not encode: %v", err)
		}
		again, err := load([]source{{"encoded.toml", buf.Bytes()}})
		if err != nil {
			t.Fatalf("encoded config does not load: %v\n%s", err, buf.String())
		}
		if !reflect.DeepEqual(cfg, again) {
			t.Fatalf("round trip changed the config:\n%+v\n%+v\n%s", cfg, again, buf.String())
		}
		if err := cfg.EncodeRedacted(&bytes.Buffer{}); err != nil {
			t.Fatal(err)
		}
	})
}
