package atomicfile

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestWriteReplacesAndSetsMode(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "state.json")
	for _, content := range []string{"first", "second, longer content"} {
		if err := Write(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != content {
			t.Fatalf("content = %q, want %q", got, content)
		}
		fi, _ := os.Stat(p)
		if fi.Mode().Perm() != 0o600 {
			t.Fatalf("mode = %v, want 0600", fi.Mode().Perm())
		}
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Fatalf("temp files left behind: %v", entries)
	}
}

// TestWriteLongName: a target whose name is near the file system's 255
// bytes is written too: the temp file's name is cut to fit.
func TestWriteLongName(t *testing.T) {
	for _, n := range []int{200, 240, 255} {
		p := filepath.Join(t.TempDir(), strings.Repeat("k", n))
		if err := Write(p, []byte("x"), 0o600); err != nil {
			t.Fatalf("%d-byte name: %v", n, err)
		}
	}
}

func TestWriteMissingDir(t *testing.T) {
	if err := Write(filepath.Join(t.TempDir(), "no", "such"), []byte("x"), 0o600); err == nil {
		t.Fatal("want error for a missing directory")
	}
}

func TestRemoveTemps(t *testing.T) {
	dir := t.TempDir()
	for _, name := range []string{".a.key.tmp-123", ".b.tmp-9", "keep.key", ".hidden"} {
		os.WriteFile(filepath.Join(dir, name), []byte("x"), 0o600)
	}
	n, err := RemoveTemps(dir)
	if err != nil || n != 2 {
		t.Fatalf("RemoveTemps = %d, %v; want 2", n, err)
	}
	left, _ := os.ReadDir(dir)
	if len(left) != 2 {
		t.Fatalf("left %v", left)
	}
	if n, err := RemoveTemps(filepath.Join(dir, "missing")); n != 0 || err != nil {
		t.Fatalf("missing dir: %d %v", n, err)
	}
}
