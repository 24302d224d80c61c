package tpm

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/google/go-tpm/tpm2/transport"
	"github.com/google/go-tpm/tpm2/transport/linuxtpm"
)

// DefaultSWTPMPort is the port of "swtpm" without one, as in tpm2-tss.
const DefaultSWTPMPort = 2321

// defaultDevices are tried in order for "device" without a path, as
// tpm2-tss's device TCTI does: the kernel resource manager first.
var defaultDevices = []string{"/dev/tpmrm0", "/dev/tpm0"}

// TCTI is a parsed [tpm] tcti value: where the TPM is and how to talk to it.
type TCTI struct {
	// Kind is "device" (a character device) or "swtpm" (swtpm's server
	// socket, TCP or Unix).
	Kind string
	// Path is the device ("" tries /dev/tpmrm0 then /dev/tpm0) or, for
	// swtpm, the Unix socket.
	Path string
	// Addr is swtpm's TCP address, host:port, when Path is empty.
	Addr string
	raw  string
}

// ParseTCTI parses a tcti value as aziot and tpm2-tss spell it: "device",
// "device:/dev/tpmrm0", "swtpm", "swtpm:host=H,port=P" (TCP) and
// "swtpm:path=/run/swtpm.sock" (Unix socket, which tpm2-tss lacks). An
// empty value is tpm2-tss's default search, here the devices of "device".
// The Microsoft simulator ("mssim") and tpm2-abrmd ("tabrmd") are refused
// with what to use instead.
func ParseTCTI(s string) (TCTI, error) {
	name, conf, _ := strings.Cut(strings.TrimSpace(s), ":")
	t := TCTI{raw: s}
	switch name {
	case "", "device":
		t.Kind, t.Path = "device", conf
		return t, nil
	case "swtpm":
		t.Kind = "swtpm"
		host, port := "localhost", strconv.Itoa(DefaultSWTPMPort)
		if conf != "" {
			for _, kv := range strings.Split(conf, ",") {
				k, v, ok := strings.Cut(kv, "=")
				switch {
				case !ok:
					return t, fmt.Errorf("tcti %q: %q is not key=value (keys: host, port, path)", s, kv)
				case k == "host":
					host = v
				case k == "port":
					if n, err := strconv.ParseUint(v, 10, 16); err != nil || n == 0 {
						return t, fmt.Errorf("tcti %q: port %q is not a TCP port", s, v)
					}
					port = v
				case k == "path":
					t.Path = v
				default:
					return t, fmt.Errorf("tcti %q: unknown key %q (keys: host, port, path)", s, k)
				}
			}
		}
		if t.Path != "" && (strings.Contains(conf, "host=") || strings.Contains(conf, "port=")) {
			return t, fmt.Errorf("tcti %q: path (Unix socket) and host/port (TCP) exclude each other", s)
		}
		if t.Path == "" {
			t.Addr = net.JoinHostPort(host, port)
		}
		return t, nil
	case "mssim":
		return t, fmt.Errorf("tcti %q: the Microsoft simulator protocol is not supported; run swtpm and use swtpm:host=…,port=…", s)
	case "abrmd", "tabrmd":
		return t, fmt.Errorf("tcti %q: tpm2-abrmd is not supported (it needs D-Bus); use the kernel resource manager, device:/dev/tpmrm0", s)
	}
	return t, fmt.Errorf("tcti %q: unknown TCTI %q (want device, device:PATH, swtpm:host=H,port=P or swtpm:path=SOCKET)", s, name)
}

// String returns the tcti value as configured.
func (t TCTI) String() string { return t.raw }

// where names the endpoint for messages.
func (t TCTI) where() string {
	switch {
	case t.Kind == "swtpm" && t.Path != "":
		return "swtpm Unix socket " + t.Path
	case t.Kind == "swtpm":
		return "swtpm at " + t.Addr
	case t.Path != "":
		return "TPM device " + t.Path
	}
	return "TPM device " + strings.Join(defaultDevices, " or ")
}

// resourceManaged reports whether the TPM behind t isolates and flushes
// each connection's transient objects and sessions (the kernel resource
// manager does; swtpm and /dev/tpm0 do not).
func (t TCTI) resourceManaged(path string) bool {
	return t.Kind == "device" && strings.Contains(path, "tpmrm")
}

// open connects to the TPM. It returns the transport and the device path
// opened (for devices). Errors that mean "there is no TPM here" wrap
// ErrNoTPM and say what to check.
func (t TCTI) open(timeout time.Duration) (transport.TPMCloser, string, error) {
	if t.Kind == "swtpm" {
		network, addr := "tcp", t.Addr
		if t.Path != "" {
			network, addr = "unix", t.Path
		}
		c, err := net.DialTimeout(network, addr, timeout)
		if err != nil {
			return nil, "", fmt.Errorf("%w: cannot connect to %s: %w; is swtpm running with --server type=%s? check [tpm] tcti",
				ErrNoTPM, t.where(), err, map[string]string{"tcp": "tcp", "unix": "unixio"}[network])
		}
		return &streamTPM{conn: c, timeout: timeout}, "", nil
	}
	paths := defaultDevices
	if t.Path != "" {
		paths = []string{t.Path}
	}
	var errs []error
	for _, p := range paths {
		tp, err := linuxtpm.Open(p)
		if err == nil {
			return tp, p, nil
		}
		errs = append(errs, deviceError(p, err))
	}
	return nil, "", errors.Join(errs...)
}

// deviceError explains a failure to open a TPM device.
func deviceError(path string, err error) error {
	switch {
	case errors.Is(err, os.ErrNotExist):
		return fmt.Errorf("%w: %s does not exist: is the TPM enabled in firmware and its driver (tpm_crb, tpm_tis) loaded? or set [tpm] tcti", ErrNoTPM, path)
	case errors.Is(err, os.ErrPermission):
		return fmt.Errorf("%w: %s: permission denied: run wardend as root or in the group owning the device (usually tss)", ErrNoTPM, path)
	case errors.Is(err, syscall.EBUSY):
		return fmt.Errorf("%w: %s is in use by another process (tpm2-abrmd?); use the resource manager /dev/tpmrm0", ErrNoTPM, path)
	case errors.Is(err, linuxtpm.ErrFileIsNotDevice):
		return fmt.Errorf("%w: %s is not a character device; for swtpm use swtpm:path=%s", ErrNoTPM, path, path)
	}
	return fmt.Errorf("%w: open %s: %w", ErrNoTPM, path, err)
}

// maxResponse bounds a TPM response; real ones stay under 4 KiB.
const maxResponse = 64 << 10

// maxCommand bounds a command sent to swtpm: libtpms's MAX_COMMAND_SIZE
// (also the kernel's TPM_BUFSIZE). swtpm takes each read() of its socket as
// one command, so the rest of a longer one would run as commands of their
// own (with the caller's bytes) and their answers be read as those of the
// commands that follow.
const maxCommand = 4096

// streamTPM sends TPM commands over swtpm's server socket (TCP or Unix),
// which carries raw command and response buffers back to back. It reads
// each response by the size in its header, so a response split across
// reads is not cut short, and bounds every exchange by timeout.
type streamTPM struct {
	conn    net.Conn
	timeout time.Duration
}

// Warning codes after which the TPM expects the command again.
const (
	rcYielded = 0x908
	rcTesting = 0x90A
	rcRetry   = 0x922
)

// Send writes cmd and returns the TPM's whole response. A TPM that answers
// TPM_RC_RETRY, TPM_RC_YIELDED or TPM_RC_TESTING is sent the command again
// after 1, 2, 4, … ms, for up to about 2 s (as tpm2-tss does).
func (s *streamTPM) Send(cmd []byte) ([]byte, error) {
	if len(cmd) > maxCommand {
		return nil, fmt.Errorf("command of %d bytes exceeds the TPM's maximum command size (%d)", len(cmd), maxCommand)
	}
	for wait := time.Millisecond; ; wait *= 2 {
		rsp, err := s.exchange(cmd)
		if err != nil {
			return nil, err
		}
		switch binary.BigEndian.Uint32(rsp[6:10]) {
		case rcRetry, rcYielded, rcTesting:
			if wait <= time.Second {
				time.Sleep(wait)
				continue
			}
		}
		return rsp, nil
	}
}

// exchange sends cmd once and reads the response.
func (s *streamTPM) exchange(cmd []byte) ([]byte, error) {
	if s.timeout > 0 {
		s.conn.SetDeadline(time.Now().Add(s.timeout))
	}
	if _, err := s.conn.Write(cmd); err != nil {
		return nil, fmt.Errorf("send command: %w", err)
	}
	var hdr [10]byte
	if _, err := io.ReadFull(s.conn, hdr[:]); err != nil {
		return nil, fmt.Errorf("read response header: %w", err)
	}
	size := binary.BigEndian.Uint32(hdr[2:6])
	if size < uint32(len(hdr)) || size > maxResponse {
		return nil, fmt.Errorf("response size %d out of range", size)
	}
	rsp := make([]byte, size)
	copy(rsp, hdr[:])
	if _, err := io.ReadFull(s.conn, rsp[len(hdr):]); err != nil {
		return nil, fmt.Errorf("read response: %w", err)
	}
	return rsp, nil
}

// Close closes the connection.
func (s *streamTPM) Close() error { return s.conn.Close() }
