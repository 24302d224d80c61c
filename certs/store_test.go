package certs

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/warden-iot/warden/hsm"
)

// TestFileName: keyd's file naming (hsm.KeyFileName) with ".cer".
func TestFileName(t *testing.T) {
	for _, id := range []string{"device-id", "aziot-edged/module/m:1:server", "é", "x"} {
		want := strings.TrimSuffix(hsm.KeyFileName(id), ".key") + ".cer"
		if got := FileName(id); got != want {
			t.Errorf("FileName(%q) = %q, want %q", id, got, want)
		}
	}
}

// longID is a preloaded certificate ID too long for a file of its own.
var longID = strings.Repeat("p", 300)

func TestStore(t *testing.T) {
	dir := t.TempDir()
	pre := filepath.Join(dir, "pre.pem")
	os.WriteFile(pre, []byte("PRE\n"), 0o644)
	s, err := OpenStore(filepath.Join(dir, "certs"), map[string]Preloaded{
		"pre":          {Path: pre},
		"pre-missing":  {Path: filepath.Join(dir, "none.pem")},
		"bundle":       {Bundle: []string{"pre", "dyn", "absent", "bundle2"}},
		"bundle2":      {Bundle: []string{"pre"}},
		"empty-bundle": {Bundle: []string{"absent"}},
		longID:         {Path: pre},
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(s.Dir()); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("store dir: %v %v", fi.Mode(), err)
	}
	if err := s.Put("dyn", []byte("DYN")); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(filepath.Join(s.Dir(), FileName("dyn"))); err != nil || fi.Mode().Perm() != 0o644 {
		t.Fatalf("cert file mode: %v %v", fi, err)
	}
	cases := []struct {
		id      string
		want    string
		wantErr error
	}{
		{"dyn", "DYN", nil},
		{"pre", "PRE\n", nil},
		{"bundle", "PRE\nDYN\n", nil},
		{"absent", "", ErrNotFound},
		{"pre-missing", "", ErrNotFound},
		{"empty-bundle", "", ErrNotFound},
		{"", "", ErrInvalidID},
		{"a\x00b", "", ErrInvalidID},
		// 187 letters make a 256-byte file name; preloaded, the ID has a path.
		{strings.Repeat("c", 186), "", ErrNotFound},
		{strings.Repeat("c", 187), "", ErrInvalidID},
		{longID, "PRE\n", nil},
	}
	for _, tc := range cases {
		got, err := s.Get(tc.id)
		if !errors.Is(err, tc.wantErr) || string(got) != tc.want {
			t.Errorf("Get(%q) = %q, %v; want %q, %v", tc.id, got, err, tc.want, tc.wantErr)
		}
	}
	t.Run("writes go to the preloaded file", func(t *testing.T) {
		if err := s.Put("pre", []byte("NEW")); err != nil {
			t.Fatal(err)
		}
		if b, _ := os.ReadFile(pre); string(b) != "NEW" {
			t.Fatalf("preloaded file = %q", b)
		}
		if err := s.Delete("pre"); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(pre); !os.IsNotExist(err) {
			t.Fatalf("preloaded file not deleted: %v", err)
		}
	})
	t.Run("bundles are read-only", func(t *testing.T) {
		if err := s.Put("bundle", []byte("x")); !errors.Is(err, ErrBundle) {
			t.Fatalf("Put bundle: %v", err)
		}
		if err := s.Delete("bundle"); !errors.Is(err, ErrBundle) {
			t.Fatalf("Delete bundle: %v", err)
		}
	})
	t.Run("delete missing is fine", func(t *testing.T) {
		if err := s.Delete("never"); err != nil {
			t.Fatal(err)
		}
		if err := s.Delete("dyn"); err != nil || s.Exists("dyn") {
			t.Fatalf("delete dyn: %v", err)
		}
	})
	t.Run("reload preloaded", func(t *testing.T) {
		s.SetPreloaded(nil)
		if _, err := s.Get("bundle"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("bundle after reload: %v", err)
		}
	})
}

func TestErrNotFoundIsNotExist(t *testing.T) {
	s, _ := OpenStore(t.TempDir(), nil, nil)
	_, err := s.Get("x")
	if !errors.Is(err, ErrNotFound) || !errors.Is(err, os.ErrNotExist) || ErrNotFound.Error() != "not found" {
		t.Fatalf("%v", err)
	}
}

// TestOpenStoreRemovesTemps: a temp file a crash left between writing and
// renaming a certificate is removed when the store opens, as keyd does.
func TestOpenStoreRemovesTemps(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "certs")
	s, err := OpenStore(dir, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Put("dyn", []byte("DYN")); err != nil {
		t.Fatal(err)
	}
	temp := filepath.Join(dir, "."+FileName("dyn")+".tmp-123456")
	if err := os.WriteFile(temp, []byte("TORN"), 0o644); err != nil {
		t.Fatal(err)
	}
	if s, err = OpenStore(dir, nil, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(temp); !os.IsNotExist(err) {
		t.Fatalf("temp file left: %v", err)
	}
	if b, err := s.Get("dyn"); err != nil || string(b) != "DYN" {
		t.Fatalf("dyn = %q, %v", b, err)
	}
}
