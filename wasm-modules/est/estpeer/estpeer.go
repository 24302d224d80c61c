// Package estpeer starts the EST test peer for tests and benchmarks: the
// harness of tools/estserver (GlobalSign's EST server library, pinned at
// v1.0.7 in the separate tools module) on a free loopback port, stopped by
// its pid. It builds the harness once per process with the go toolchain
// into <repo>/bin/estserver (the build cache makes later builds fast).
package estpeer

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

var (
	buildOnce sync.Once
	buildPath string
	buildErr  error
)

// RepoRoot is the root of the Warden repository (from this file's path).
func RepoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", "..", ".."))
}

// Build builds the harness (once) and returns its path. WARDEN_ESTSERVER
// names a prebuilt binary instead.
func Build() (string, error) {
	buildOnce.Do(func() {
		if p := os.Getenv("WARDEN_ESTSERVER"); p != "" {
			buildPath = p
			return
		}
		// Test binaries of several packages may build at once, and one may
		// be running the binary: build to a private name, then rename over
		// bin/estserver (atomic; a running server keeps its inode).
		root := RepoRoot()
		buildPath = filepath.Join(root, "bin", "estserver")
		tmp := filepath.Join(root, "bin", ".estserver-"+strconv.Itoa(os.Getpid()))
		cmd := exec.Command("go", "build", "-o", tmp, "./estserver")
		cmd.Dir = filepath.Join(root, "tools")
		cmd.Env = append(os.Environ(), "GOWORK=off")
		if out, err := cmd.CombinedOutput(); err != nil {
			os.Remove(tmp)
			buildErr = fmt.Errorf("build tools/estserver: %v\n%s", err, out)
			return
		}
		if err := os.Rename(tmp, buildPath); err != nil {
			os.Remove(tmp)
			buildErr = fmt.Errorf("install %s: %w", buildPath, err)
		}
	})
	return buildPath, buildErr
}

// Options configure a server.
type Options struct {
	// Dir holds the CA (ca.pem, ca.key) and the log; a new temp dir when "".
	Dir string
	// Addr is the listen address; "" picks a free loopback port.
	Addr string
	// Lifetime of issued certificates; 0 is the harness default (90 days).
	Lifetime time.Duration
	// RetryAfter is the Retry-After (s) of deferred answers; 0 is 1.
	RetryAfter int
	// Username and Password for labels containing "basic".
	Username, Password string
	// ClientCAs are PEM files of bootstrap CAs trusted for client auth.
	ClientCAs []string
}

// Server is a running harness.
type Server struct {
	// Addr is host:port.
	Addr string
	// Dir holds ca.pem (the trust anchor of the server's TLS and of the
	// certificates it issues) and estserver.log.
	Dir  string
	opts Options
	cmd  *exec.Cmd
	done chan struct{}
}

// Start builds and starts a server and waits (up to 20 s) until it accepts
// connections; it is stopped at the test's cleanup.
func Start(t testing.TB, o Options) *Server {
	t.Helper()
	if o.Dir == "" {
		o.Dir = t.TempDir()
	}
	if err := os.MkdirAll(o.Dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if o.Username == "" {
		o.Username, o.Password = "estuser", "estpwd"
	}
	if o.RetryAfter == 0 {
		o.RetryAfter = 1
	}
	s := &Server{Dir: o.Dir, opts: o}
	if err := s.start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Stop)
	return s
}

func (s *Server) start() error {
	bin, err := Build()
	if err != nil {
		return err
	}
	o := s.opts
	addrFile := filepath.Join(s.Dir, "addr")
	os.Remove(addrFile)
	addr := o.Addr
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	args := []string{"-dir", s.Dir, "-addr", addr, "-addr-file", addrFile,
		"-username", o.Username, "-password", o.Password, "-retry-after", strconv.Itoa(o.RetryAfter)}
	if o.Lifetime > 0 {
		args = append(args, "-lifetime", o.Lifetime.String())
	}
	if len(o.ClientCAs) > 0 {
		args = append(args, "-client-ca", strings.Join(o.ClientCAs, ","))
	}
	logf, err := os.OpenFile(filepath.Join(s.Dir, "estserver.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("start estserver: %w", err)
	}
	s.cmd, s.done = cmd, make(chan struct{})
	go func() { cmd.Wait(); logf.Close(); close(s.done) }()
	deadline := time.Now().Add(20 * time.Second)
	for {
		if b, err := os.ReadFile(addrFile); err == nil && len(b) > 0 {
			s.Addr = string(b)
			if c, err := net.DialTimeout("tcp", s.Addr, time.Second); err == nil {
				c.Close()
				s.opts.Addr = s.Addr // a restart keeps the port
				return nil
			}
		}
		select {
		case <-s.done:
			return fmt.Errorf("estserver exited during start-up: %s", s.Log())
		default:
		}
		if time.Now().After(deadline) {
			s.Stop()
			return fmt.Errorf("estserver not ready after 20 s: %s", s.Log())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Stop sends SIGTERM to the server's pid and waits (SIGKILL after 5 s).
func (s *Server) Stop() {
	if s.cmd == nil || s.cmd.Process == nil {
		return
	}
	select {
	case <-s.done:
		return
	default:
	}
	s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(5 * time.Second):
		s.cmd.Process.Kill()
		<-s.done
	}
}

// Restart starts the server again on the same address with the same CA.
func (s *Server) Restart(ctx context.Context) error {
	s.Stop()
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := s.start()
		if err == nil || time.Now().After(deadline) || ctx.Err() != nil {
			return err
		}
		time.Sleep(100 * time.Millisecond) // the port may linger briefly
	}
}

// URL is the EST base URL with an optional label.
func (s *Server) URL(label string) string {
	u := "https://" + s.Addr + "/.well-known/est"
	if label != "" {
		u += "/" + label
	}
	return u
}

// CAFile is the path of the CA certificate (PEM).
func (s *Server) CAFile() string { return filepath.Join(s.Dir, "ca.pem") }

// CAPEM is the CA certificate (PEM).
func (s *Server) CAPEM() []byte {
	b, _ := os.ReadFile(s.CAFile())
	return b
}

// Log returns the server's log so far.
func (s *Server) Log() string {
	b, _ := os.ReadFile(filepath.Join(s.Dir, "estserver.log"))
	return string(b)
}
