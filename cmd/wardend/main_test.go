package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/warden-iot/warden/internal/syncbuf"
)

// TestMain runs wardend's main instead of the tests when WARDEND_TEST_ARGS
// is set, so that a test can start the daemon as a process of its own.
func TestMain(m *testing.M) {
	if args := os.Getenv("WARDEND_TEST_ARGS"); args != "" {
		os.Args = append([]string{"wardend"}, strings.Fields(args)...)
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// TestSIGHUPWhileStarting: a SIGHUP that comes while wardend starts (a
// DPS registration can take minutes; `systemctl reload` right after
// `start` sends one) does not stop it: wardend starts, then reloads.
// Before, SIGHUP was caught only once the broker was up, and until then
// its default action killed the process. The start is held here by a
// decision log that is a FIFO, which opens only when a reader comes.
func TestSIGHUPWhileStarting(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "decisions")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	state, run := filepath.Join(dir, "state"), filepath.Join(dir, "run")
	cfg := filepath.Join(dir, "config.toml")
	text := fmt.Sprintf("[warden]\nstate_dir = %q\nsocket_dir = %q\n[warden.policy]\ndecision_log = %q\n", state, run, fifo)
	if err := os.WriteFile(cfg, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "WARDEND_TEST_ARGS=-c "+cfg)
	var stderr syncbuf.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		cmd.Process.Kill()
		<-exited
	}()
	waitFor := func(what string, ok func() bool) {
		t.Helper()
		for deadline := time.Now().Add(20 * time.Second); !ok(); time.Sleep(20 * time.Millisecond) {
			select {
			case err := <-exited:
				exited <- err
				t.Fatalf("waiting for %s: wardend exited: %v\n%s", what, err, stderr.String())
			default:
			}
			if time.Now().After(deadline) {
				t.Fatalf("waiting for %s: timed out\n%s", what, stderr.String())
			}
		}
	}
	// The token key is made before the decision log opens.
	waitFor("the key store", func() bool {
		ents, _ := os.ReadDir(filepath.Join(state, "keys"))
		return len(ents) > 0
	})
	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	// Give a signal that would kill wardend the time to: the FIFO then
	// lets a surviving one go on.
	time.Sleep(200 * time.Millisecond)
	r, err := os.OpenFile(fifo, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	waitFor("the reload", func() bool { return strings.Contains(stderr.String(), "configuration reloaded") })
	if _, err := os.Lstat(filepath.Join(run, "keyd.sock")); err != nil {
		t.Errorf("keyd.sock: %v", err)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		exited <- err
		if err != nil {
			t.Fatalf("wardend stopped with %v\n%s", err, stderr.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("wardend did not stop on SIGTERM\n%s", stderr.String())
	}
}
