package api

import (
	"bufio"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestListenReplacesStaleSocketAndSetsMode(t *testing.T) {
	path := filepath.Join(t.TempDir(), "svc.sock")
	if err := os.WriteFile(path, []byte("stale"), 0o600); err != nil {
		t.Fatal(err)
	}
	l, err := Listen(path, "svc", -1)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o660 {
		t.Fatalf("mode = %v, want a socket with 0660", fi.Mode())
	}
}

// TestListenRefusesSocketInUse: a socket another process (another
// wardend) listens on is not taken over; its listener keeps working.
func TestListenRefusesSocketInUse(t *testing.T) {
	path := filepath.Join(t.TempDir(), "svc.sock")
	first, err := Listen(path, "svc", -1)
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	if l, err := Listen(path, "svc", -1); err == nil || !strings.Contains(err.Error(), "in use") {
		if l != nil {
			l.Close()
		}
		t.Fatalf("second Listen: %v, want in use", err)
	}
	go func() {
		if c, err := first.Accept(); err == nil {
			c.Close()
		}
	}()
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatalf("the first listener lost its socket: %v", err)
	}
	c.Close()
}

// TestPerUIDLimit: the connection over the limit is closed with no response;
// closing one frees a slot.
func TestPerUIDLimit(t *testing.T) {
	path := filepath.Join(t.TempDir(), "svc.sock")
	raw, err := Listen(path, "svc", -1)
	if err != nil {
		t.Fatal(err)
	}
	ln := NewListener(raw, "svc", 2, slog.New(slog.DiscardHandler))
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p, _ := PeerFromContext(r.Context())
		WriteJSON(w, 200, map[string]any{"uid": p.UID, "pid": p.PID})
	}), ConnContext: ConnContext}
	go srv.Serve(ln)
	defer srv.Close()

	dial := func() net.Conn {
		c, err := net.Dial("unix", path)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	get := func(c net.Conn) (string, error) {
		c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
			return "", err
		}
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			return "", err
		}
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1000))
		return string(b), nil
	}
	a, b := dial(), dial()
	for _, c := range []net.Conn{a, b} {
		if body, err := get(c); err != nil {
			t.Fatalf("within the limit: %v", err)
		} else if want := `"pid":`; !strings.Contains(body, want) {
			t.Fatalf("body %s lacks peer", body)
		}
	}
	over := dial()
	if body, err := get(over); err == nil {
		t.Fatalf("third connection got a response: %s", body)
	}
	over.Close()
	a.Close()
	// The slot is released when the server sees the close; retry until then.
	deadline := time.Now().Add(5 * time.Second)
	for {
		c := dial()
		_, err := get(c)
		c.Close()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("slot not released after a connection closed")
		}
		time.Sleep(10 * time.Millisecond)
	}
	b.Close()
}

// TestListenSystemd: a socket passed by systemd serves the service whose
// path it is bound to, found by that path when its name (LISTEN_FDNAMES)
// is not the service's (systemd's default is the unit's name) or missing;
// the other services bind their own paths. Run in a child process, whose
// fd 3 is the passed socket.
func TestListenSystemd(t *testing.T) {
	if dir := os.Getenv("WARDEN_TEST_SYSTEMD_DIR"); dir != "" {
		os.Setenv("LISTEN_PID", strconv.Itoa(os.Getpid()))
		for _, name := range []string{"broker", "keyd", "certd"} {
			path := filepath.Join(dir, name+".sock")
			l, err := Listen(path, name, -1)
			if err != nil {
				t.Fatalf("Listen %s: %v", name, err)
			}
			defer l.Close()
			if got := l.Addr().String(); got != path {
				t.Errorf("socket %s listens on %s", name, got)
			}
		}
		return
	}
	for _, names := range []string{"", "unknown", "wardend-keyd.socket", "other:keyd"} {
		dir := t.TempDir()
		ul, err := net.ListenUnix("unix", &net.UnixAddr{Name: filepath.Join(dir, "keyd.sock"), Net: "unix"})
		if err != nil {
			t.Fatal(err)
		}
		defer ul.Close()
		files := []*os.File{}
		if names == "other:keyd" { // two sockets: fd 3 for another unit, fd 4 keyd's
			other, err := net.ListenUnix("unix", &net.UnixAddr{Name: filepath.Join(t.TempDir(), "other.sock"), Net: "unix"})
			if err != nil {
				t.Fatal(err)
			}
			defer other.Close()
			f, _ := other.File()
			files = append(files, f)
		}
		f, err := ul.File()
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, f)
		cmd := exec.Command(os.Args[0], "-test.run=^TestListenSystemd$", "-test.count=1")
		cmd.Env = append(os.Environ(), "WARDEN_TEST_SYSTEMD_DIR="+dir, "LISTEN_FDS="+strconv.Itoa(len(files)), "LISTEN_FDNAMES="+names)
		cmd.ExtraFiles = files
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("LISTEN_FDNAMES=%q: %v\n%s", names, err, out)
		}
		for _, f := range files {
			f.Close()
		}
	}
}
