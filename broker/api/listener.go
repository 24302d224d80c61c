package api

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// DefaultMaxRequests is aziot's default per-uid connection limit per socket.
const DefaultMaxRequests = 10

// Listener accepts Unix connections, reads each peer's credentials and
// enforces aziot's per-uid limit of simultaneous connections: a connection
// over the limit is closed at once, with no HTTP response.
type Listener struct {
	inner  net.Listener
	name   string
	logger *slog.Logger
	max    atomic.Int64

	mu     sync.Mutex
	perUID map[uint32]int
}

// NewListener wraps l (which must yield *net.UnixConn) for the socket called
// name (used in logs), allowing max simultaneous connections per uid.
func NewListener(l net.Listener, name string, max int, logger *slog.Logger) *Listener {
	ln := &Listener{inner: l, name: name, logger: logger, perUID: map[uint32]int{}}
	ln.SetMaxRequests(max)
	return ln
}

// SetMaxRequests changes the per-uid limit; n < 1 means DefaultMaxRequests.
func (l *Listener) SetMaxRequests(n int) {
	if n < 1 {
		n = DefaultMaxRequests
	}
	l.max.Store(int64(n))
}

// Accept returns the next connection within its uid's limit. Connections
// whose credentials cannot be read are closed and skipped.
func (l *Listener) Accept() (net.Conn, error) {
	for {
		c, err := l.inner.Accept()
		if err != nil {
			return nil, err
		}
		uc, ok := c.(*net.UnixConn)
		if !ok {
			c.Close()
			return nil, fmt.Errorf("socket %s: accepted a %T, want a Unix connection", l.name, c)
		}
		peer, err := ReadPeer(uc)
		if err != nil {
			l.logger.Warn("closing connection without credentials", "socket", l.name, "err", err)
			c.Close()
			continue
		}
		if !l.acquire(peer.UID) {
			l.logger.Info("Max simultaneous connections reached for user "+strconv.FormatUint(uint64(peer.UID), 10),
				"socket", l.name, "uid", peer.UID, "pid", peer.PID)
			c.Close()
			continue
		}
		return &PeerConn{UnixConn: uc, Peer: peer, release: func() { l.release(peer.UID) }}, nil
	}
}

func (l *Listener) acquire(uid uint32) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if int64(l.perUID[uid]) >= l.max.Load() {
		return false
	}
	l.perUID[uid]++
	return true
}

func (l *Listener) release(uid uint32) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.perUID[uid] <= 1 {
		delete(l.perUID, uid)
		return
	}
	l.perUID[uid]--
}

// Close closes the underlying listener.
func (l *Listener) Close() error { return l.inner.Close() }

// Addr returns the underlying listener's address.
func (l *Listener) Addr() net.Addr { return l.inner.Addr() }

// PeerConn is an accepted connection with its peer's credentials. Closing it
// frees its slot in the per-uid limit.
type PeerConn struct {
	*net.UnixConn
	Peer    Peer
	release func()
	once    sync.Once
}

// Close closes the connection and releases its slot once.
func (c *PeerConn) Close() error {
	err := c.UnixConn.Close()
	c.once.Do(c.release)
	return err
}

// Listen returns a listener for the socket at path. A socket passed by
// systemd (LISTEN_FDS) whose name (LISTEN_FDNAMES) is name or which is
// bound to path is used as is; otherwise what is at path (a stale socket, a
// file or an empty directory; not a socket in use) is removed, a new one
// bound, and its mode set to 0660 (group gid when gid >= 0).
func Listen(path, name string, gid int) (net.Listener, error) {
	if l, err := systemdListener(path, name); l != nil || err != nil {
		return l, err
	}
	if fi, err := os.Lstat(path); err == nil {
		// A socket something still listens on is another wardend's: taking
		// it over would leave that one's callers to this one.
		if fi.Mode().Type() == os.ModeSocket {
			if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
				c.Close()
				return nil, fmt.Errorf("socket %s: %s is in use (is another wardend running?)", name, path)
			}
		}
		// os.Remove takes a file or an empty directory, never what a
		// directory holds (a mistyped path could name the state directory).
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("socket %s: remove stale %s: %w", name, path, err)
		}
	}
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("socket %s: %w", name, err)
	}
	l.(*net.UnixListener).SetUnlinkOnClose(true)
	if gid >= 0 {
		if err := os.Chown(path, -1, gid); err != nil {
			l.Close()
			return nil, fmt.Errorf("socket %s: set group %d: %w", name, gid, err)
		}
	}
	if err := os.Chmod(path, 0o660); err != nil {
		l.Close()
		return nil, fmt.Errorf("socket %s: chmod: %w", name, err)
	}
	return l, nil
}

// systemdListener returns the socket systemd passed for name or path, or
// nil when the process was not socket-activated (or not for this socket).
// The path counts as much as the name: systemd names a socket after its
// unit unless told otherwise, and one socket passed without a name is not
// every service's (the first to ask would take it, close it, and leave the
// next a closed descriptor).
func systemdListener(path, name string) (net.Listener, error) {
	if os.Getenv("LISTEN_PID") != strconv.Itoa(os.Getpid()) {
		return nil, nil
	}
	n, err := strconv.Atoi(os.Getenv("LISTEN_FDS"))
	if err != nil || n < 1 {
		return nil, nil
	}
	names := strings.Split(os.Getenv("LISTEN_FDNAMES"), ":")
	fd := -1
	for i := 0; i < n && fd < 0; i++ {
		if i < len(names) && names[i] == name || boundTo(3+i, path) {
			fd = 3 + i
		}
	}
	if fd < 0 {
		return nil, nil
	}
	f := os.NewFile(uintptr(fd), name)
	l, err := net.FileListener(f)
	f.Close()
	if err != nil {
		return nil, fmt.Errorf("socket %s: systemd fd %d: %w", name, fd, err)
	}
	if _, ok := l.(*net.UnixListener); !ok {
		l.Close()
		return nil, errors.New("socket " + name + ": systemd fd is not a Unix socket")
	}
	return l, nil
}

// boundTo reports whether fd is a Unix socket bound to path.
func boundTo(fd int, path string) bool {
	sa, err := unix.Getsockname(fd)
	if err != nil {
		return false
	}
	u, ok := sa.(*unix.SockaddrUnix)
	return ok && u.Name != "" && filepath.Clean(u.Name) == filepath.Clean(path)
}

// ConnContext is an http.Server ConnContext that puts the peer of an
// accepted PeerConn into the request context.
func ConnContext(ctx context.Context, c net.Conn) context.Context {
	if pc, ok := c.(*PeerConn); ok {
		return WithPeer(ctx, pc.Peer)
	}
	return ctx
}
