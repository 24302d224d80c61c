// Package swtpmtest runs swtpm, the software TPM, for tests: on a free
// 127.0.0.1 port or a Unix socket in a temporary directory, state kept in
// that directory across restarts, stopped by its pid at the end of the
// test. Without swtpm installed a test fails when the CI environment
// variable is set and is skipped otherwise (make deps installs it).
package swtpmtest

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// Options choose how swtpm serves.
type Options struct {
	// Unix serves on a Unix socket instead of TCP (go-tpm only:
	// tpm2-tools' swtpm TCTI cannot reach it).
	Unix bool
	// NoStartup leaves the TPM unstarted (no --flags startup-clear), as a
	// TPM before firmware ran TPM2_Startup.
	NoStartup bool
}

// SWTPM is a running swtpm.
type SWTPM struct {
	// Dir holds the TPM state, the log and, with Options.Unix, the socket.
	Dir string
	// Port is the TCP port (0 with Options.Unix); the control channel
	// listens on Port+1.
	Port int
	// Socket is the Unix socket ("" on TCP).
	Socket string

	t    testing.TB
	opts Options
	cmd  *exec.Cmd
	done chan struct{}
}

// Require fails (CI) or skips (elsewhere) t when swtpm is not installed.
func Require(t testing.TB) {
	t.Helper()
	if _, err := exec.LookPath("swtpm"); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("swtpm is not installed: make deps installs swtpm, swtpm-tools and tpm2-tools")
		}
		t.Skip("swtpm is not installed (apt-get install swtpm swtpm-tools tpm2-tools)")
	}
}

// Start starts swtpm with fresh state; it is stopped when t ends.
func Start(t testing.TB, opts Options) *SWTPM {
	t.Helper()
	Require(t)
	dir, err := os.MkdirTemp("", "warden-swtpm-")
	if err != nil {
		t.Fatal(err)
	}
	s := &SWTPM{Dir: dir, t: t, opts: opts}
	t.Cleanup(func() {
		s.Stop()
		if !t.Failed() {
			os.RemoveAll(dir)
		} else {
			t.Logf("swtpm state and log kept in %s", dir)
		}
	})
	if opts.Unix {
		s.Socket = filepath.Join(dir, "swtpm.sock")
	}
	s.start(false)
	return s
}

// TCTI is the [tpm] tcti that reaches this swtpm.
func (s *SWTPM) TCTI() string {
	if s.Socket != "" {
		return "swtpm:path=" + s.Socket
	}
	return fmt.Sprintf("swtpm:host=127.0.0.1,port=%d", s.Port)
}

// Pid returns the running swtpm's process id, 0 when stopped.
func (s *SWTPM) Pid() int {
	if s.cmd == nil {
		return 0
	}
	return s.cmd.Process.Pid
}

// start starts swtpm, on a new free port unless keepPort (a restart must
// keep the address its clients were given).
func (s *SWTPM) start(keepPort bool) {
	s.t.Helper()
	for attempt := 0; ; attempt++ {
		server, ctrl := "type=unixio,path="+s.Socket, "type=unixio,path="+s.Socket+".ctrl"
		if s.Socket == "" {
			if !keepPort {
				s.Port = freePorts(s.t)
			}
			server = fmt.Sprintf("type=tcp,port=%d,bindaddr=127.0.0.1", s.Port)
			ctrl = fmt.Sprintf("type=tcp,port=%d,bindaddr=127.0.0.1", s.Port+1)
		}
		flags := "not-need-init,startup-clear"
		if s.opts.NoStartup {
			flags = "not-need-init"
		}
		cmd := exec.Command("swtpm", "socket", "--tpm2", "--tpmstate", "dir="+s.Dir, "--server", server, "--ctrl", ctrl,
			"--flags", flags, "--log", "file="+filepath.Join(s.Dir, "swtpm.log")+",level=1")
		var stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stderr, &stderr
		if err := cmd.Start(); err != nil {
			s.t.Fatalf("start swtpm: %v", err)
		}
		s.cmd, s.done = cmd, make(chan struct{})
		go func() { cmd.Wait(); close(s.done) }()
		if s.waitReady() {
			return
		}
		s.Stop()
		if attempt == 4 {
			s.t.Fatalf("swtpm did not start: %s", stderr.String())
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// waitReady waits until swtpm accepts a connection (then closed at once,
// which swtpm takes as a client leaving) or exits.
func (s *SWTPM) waitReady() bool {
	network, addr := "tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(s.Port))
	if s.Socket != "" {
		network, addr = "unix", s.Socket
	}
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		select {
		case <-s.done:
			return false
		default:
		}
		if c, err := net.Dial(network, addr); err == nil {
			c.Close()
			return true
		}
	}
	return false
}

// Stop stops swtpm by its pid (SIGTERM, then SIGKILL after 5 s). The state
// stays in Dir.
func (s *SWTPM) Stop() {
	if s.cmd == nil {
		return
	}
	s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(5 * time.Second):
		s.cmd.Process.Kill()
		<-s.done
	}
	s.cmd = nil
}

// Restart stops swtpm and starts it again on the same port or socket with
// the same state.
func (s *SWTPM) Restart() {
	s.t.Helper()
	s.Stop()
	s.start(true)
}

// Tool runs a tpm2-tools command against this swtpm (TCP only) and
// returns its standard output; it fails t when the command fails. Without
// tpm2-tools, t fails in CI and is skipped elsewhere.
func (s *SWTPM) Tool(name string, args ...string) []byte {
	s.t.Helper()
	if _, err := exec.LookPath(name); err != nil {
		if os.Getenv("CI") != "" {
			s.t.Fatalf("%s is not installed: make deps installs tpm2-tools", name)
		}
		s.t.Skipf("%s is not installed (apt-get install tpm2-tools)", name)
	}
	if s.Socket != "" {
		s.t.Fatal("tpm2-tools cannot reach swtpm on a Unix socket")
	}
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), "TPM2TOOLS_TCTI="+s.TCTI())
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		s.t.Fatalf("%s %v: %v\n%s", name, args, err, stderr.String())
	}
	return stdout.Bytes()
}

// freePorts returns a TCP port P such that P and P+1 (the control
// channel, where tpm2-tss's swtpm TCTI looks for it) were free on
// 127.0.0.1 a moment ago.
func freePorts(t testing.TB) int {
	for range 100 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		p := l.Addr().(*net.TCPAddr).Port
		l2, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p+1)))
		l.Close()
		if err == nil {
			l2.Close()
			return p
		}
	}
	t.Fatal("no two consecutive free TCP ports on 127.0.0.1")
	return 0
}
