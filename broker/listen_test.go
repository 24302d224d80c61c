package broker

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"github.com/warden-iot/warden/broker/config"
)

// testConfig writes a configuration with its state and sockets under a
// temp dir, plus extra TOML (in [warden] unless it opens a table), and
// loads it.
func testConfig(t *testing.T, extra string) (*config.Config, string) {
	t.Helper()
	dir := t.TempDir()
	path := filepath.Join(dir, "config.toml")
	text := fmt.Sprintf("[warden]\nstate_dir = %q\nsocket_dir = %q\n%s", filepath.Join(dir, "state"), filepath.Join(dir, "run"), extra)
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	return cfg, dir
}

// TestSocketPathIsADirectory: a socket path that names a directory with
// contents (broker_socket = "/etc/warden", a policy directory…) is an
// error; the directory and its files stay. Before, the directory was
// removed with everything in it and the socket put in its place.
func TestSocketPathIsADirectory(t *testing.T) {
	cfg, dir := testConfig(t, "")
	full := filepath.Join(dir, "policy")
	if err := os.Mkdir(full, 0o700); err != nil {
		t.Fatal(err)
	}
	keep := filepath.Join(full, "authz.rego")
	if err := os.WriteFile(keep, []byte("package warden.authz\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg.Warden.BrokerSocket = full
	b, err := New(context.Background(), cfg, slog.New(slog.DiscardHandler))
	if err == nil {
		b.close()
		t.Fatalf("New listened on %s, a directory with files", full)
	}
	if _, serr := os.Stat(keep); serr != nil {
		t.Fatalf("New: %v; the directory's file is gone: %v", err, serr)
	}
	// An empty directory in the way (a bind mount made it) is replaced.
	empty := filepath.Join(dir, "empty.sock")
	if err := os.Mkdir(empty, 0o700); err != nil {
		t.Fatal(err)
	}
	cfg.Warden.BrokerSocket = empty
	b, err = New(context.Background(), cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer b.close()
	if fi, err := os.Lstat(empty); err != nil || fi.Mode().Type() != os.ModeSocket {
		t.Fatalf("%s: %v, %v; want the broker socket", empty, fi, err)
	}
}
