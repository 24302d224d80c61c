package api

import (
	"bufio"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/go-chi/chi/v5"
)

// Server serves an http.Handler over HTTP/1.1 on the broker's Unix sockets.
//
// Requests are parsed by net/http's ReadRequest and handlers are ordinary
// http.Handlers; what differs from http.Server is the connection loop. A
// connection is served by one goroutine that reads a request, runs the
// handler, and writes the buffered answer with one write: no background
// read per request to watch for a hang-up, no per-request cancelable
// context, no chunked answers. On keyd's signing path this cuts the
// server's own CPU per request from ~10 µs to ~6 µs (docs/decisions.md,
// "Connection loop").
//
// Answers always carry Content-Length (as aziot's hyper servers send
// them), a Date, and the handler's headers.
type Server struct {
	Handler http.Handler
	// ReadTimeout bounds reading one request, from its first byte to the
	// end of its body. IdleTimeout closes a connection that waits that long
	// for its next request. Zero means no limit.
	ReadTimeout time.Duration
	IdleTimeout time.Duration
	Logger      *slog.Logger

	mu        sync.Mutex
	listeners map[net.Listener]struct{}
	conns     map[*serverConn]struct{}
	closing   atomic.Bool
}

// maxHeaderBytes bounds a request line and its headers (as net/http's
// DefaultMaxHeaderBytes).
const maxHeaderBytes = 1 << 20

// maxDiscard is how much of a body the handler left unread is drained to
// keep the connection; a longer rest closes it.
const maxDiscard = 256 << 10

// Serve accepts connections on ln until Shutdown; it then returns
// http.ErrServerClosed.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.closing.Load() {
		s.mu.Unlock()
		return http.ErrServerClosed
	}
	if s.listeners == nil {
		s.listeners, s.conns = map[net.Listener]struct{}{}, map[*serverConn]struct{}{}
	}
	s.listeners[ln] = struct{}{}
	s.mu.Unlock()
	var backoff time.Duration
	for {
		nc, err := ln.Accept()
		if err != nil {
			if s.closing.Load() {
				return http.ErrServerClosed
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) {
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				s.logger().Warn("accept failed; retrying", "err", err, "in", backoff)
				time.Sleep(backoff)
				continue
			}
			return err
		}
		backoff = 0
		c := &serverConn{srv: s, nc: nc}
		if !s.track(c) {
			nc.Close()
			return http.ErrServerClosed
		}
		go c.serve()
	}
}

func (s *Server) logger() *slog.Logger {
	if s.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return s.Logger
}

func (s *Server) track(c *serverConn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing.Load() {
		return false
	}
	s.conns[c] = struct{}{}
	return true
}

func (s *Server) untrack(c *serverConn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
}

// Shutdown stops accepting, closes idle connections, and waits for the
// requests in flight to finish (their connections are then closed) or for
// ctx to be done.
func (s *Server) Shutdown(ctx context.Context) error {
	s.closing.Store(true)
	s.mu.Lock()
	for ln := range s.listeners {
		ln.Close()
	}
	s.mu.Unlock()
	poll := time.Millisecond
	for {
		if s.closeIdle() {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(poll):
		}
		poll = min(2*poll, 100*time.Millisecond)
	}
}

// closeIdle closes the idle connections and reports whether none is left.
func (s *Server) closeIdle() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		if c.idle.Load() {
			c.nc.Close()
		}
	}
	return len(s.conns) == 0
}

// serverConn is one connection.
type serverConn struct {
	srv  *Server
	nc   net.Conn
	idle atomic.Bool // waiting for a request (Shutdown may close it)
	r    connReader
	br   *bufio.Reader
	w    responseWriter

	// The read deadline in force, and whether it is a request's (else the
	// idle one). Deadlines are timers in the runtime's poller; moving one
	// earlier can wake a sleeping thread, so they move only when needed.
	deadline    time.Time
	reqDeadline bool
}

// connReader is what the connection's bufio.Reader reads: the connection,
// within a byte limit (the header limit while a request is parsed), and
// with the request's read deadline set at its first read from the
// connection. A request that arrived whole with its first byte (the usual
// case: one write from the client) never needs it.
type connReader struct {
	c      *serverConn
	remain int64
	arm    bool // set the request deadline before the next read
}

func (r *connReader) Read(p []byte) (int, error) {
	if r.remain <= 0 {
		return 0, io.EOF
	}
	if r.arm {
		r.arm = false
		r.c.setDeadline(time.Now().Add(r.c.srv.ReadTimeout), true)
	}
	if int64(len(p)) > r.remain {
		p = p[:r.remain]
	}
	n, err := r.c.nc.Read(p)
	r.remain -= int64(n)
	return n, err
}

func (c *serverConn) setDeadline(t time.Time, request bool) {
	c.nc.SetReadDeadline(t)
	c.deadline, c.reqDeadline = t, request
}

// awaitIdle sets the idle deadline unless the one in force is recent
// enough: a connection is closed after between 7/8 of IdleTimeout and
// IdleTimeout without a request.
func (c *serverConn) awaitIdle() {
	t := c.srv.IdleTimeout
	switch {
	case t > 0:
		now := time.Now()
		if c.reqDeadline || c.deadline.Sub(now) < t-t/8 {
			c.setDeadline(now.Add(t), false)
		}
	case c.reqDeadline:
		c.setDeadline(time.Time{}, false)
	}
}

func (c *serverConn) serve() {
	defer func() {
		c.nc.Close()
		c.srv.untrack(c)
	}()
	// chi allocates a routing context and a copy of the request for every
	// request unless it finds one in the request's context, as it does
	// under a parent router; the connection's, reset per request, serves.
	rctx := chi.NewRouteContext()
	ctx := context.WithValue(ConnContext(context.Background(), c.nc), chi.RouteCtxKey, rctx)
	c.r.c = c
	c.br = bufio.NewReaderSize(&c.r, 4096)
	for {
		c.idle.Store(true)
		if c.srv.closing.Load() {
			return
		}
		c.awaitIdle()
		c.r.remain, c.r.arm = maxHeaderBytes, false
		if _, err := c.br.Peek(1); err != nil {
			return
		}
		c.idle.Store(false)
		c.r.arm = c.srv.ReadTimeout > 0
		req, err := http.ReadRequest(c.br)
		if err != nil {
			c.refuse(err)
			return
		}
		c.r.remain = 1<<63 - 1 // the handler bounds the body it reads
		rctx.Reset()
		if !c.serveRequest(ctx, req) {
			return
		}
	}
}

// refuse answers a request that could not be parsed, then the connection
// is closed.
func (c *serverConn) refuse(err error) {
	if c.r.remain <= 0 { // the header limit, seen by ReadRequest as an early EOF
		c.srv.logger().Debug("request headers too large")
		io.WriteString(c.nc, "HTTP/1.1 "+statusLine(http.StatusRequestHeaderFieldsTooLarge)+"\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n"+statusLine(http.StatusRequestHeaderFieldsTooLarge))
		return
	}
	if errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) || errors.Is(err, io.ErrUnexpectedEOF) {
		return
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return
	}
	c.srv.logger().Debug("malformed HTTP request", "err", err)
	io.WriteString(c.nc, "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n400 Bad Request")
}

// serveRequest runs the handler and writes its answer; it reports whether
// the connection may carry another request.
func (c *serverConn) serveRequest(ctx context.Context, req *http.Request) (keep bool) {
	req.RemoteAddr = c.nc.RemoteAddr().String()
	req = req.WithContext(ctx)
	if expect := req.Header.Get("Expect"); expect != "" {
		if !req.ProtoAtLeast(1, 1) || !strings.EqualFold(expect, "100-continue") {
			io.WriteString(c.nc, "HTTP/1.1 "+statusLine(http.StatusExpectationFailed)+"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
			return false
		}
		req.Body = &continueReader{body: req.Body, conn: c.nc}
	}
	w := &c.w
	w.reset(req)
	if !c.run(w, req) {
		return false
	}
	if _, err := c.nc.Write(w.finish()); err != nil {
		return false
	}
	if cr, ok := req.Body.(*continueReader); ok && !cr.sent {
		// The client still waits for "100 Continue" before it sends the
		// body nobody read: the connection cannot carry another request.
		return false
	}
	// A rest of the body the handler did not read is drained, within
	// reason, to reach the next request. A body that failed (a malformed
	// chunk, a read timeout) or goes on leaves the stream at no request
	// boundary: the connection closes, and the body is not closed, as
	// closing it would read all the rest.
	if _, err := io.CopyN(io.Discard, req.Body, maxDiscard+1); err != io.EOF {
		return false
	}
	req.Body.Close()
	return !req.Close && !w.close && !c.srv.closing.Load()
}

// run calls the handler; a panic is logged and the connection closed
// without an answer, as http.Server does.
func (c *serverConn) run(w *responseWriter, req *http.Request) (ok bool) {
	defer func() {
		if v := recover(); v != nil {
			if v != http.ErrAbortHandler {
				c.srv.logger().Error("panic serving a request", "path", req.URL.Path, "panic", v, "stack", string(debug.Stack()))
			}
			ok = false
		}
	}()
	c.srv.Handler.ServeHTTP(w, req)
	return true
}

// continueReader sends "100 Continue" before the first read of a body
// whose client waits for it (curl does for bodies over 1 KiB).
type continueReader struct {
	body io.ReadCloser
	conn net.Conn
	sent bool
}

func (r *continueReader) Read(p []byte) (int, error) {
	if !r.sent {
		r.sent = true
		if _, err := io.WriteString(r.conn, "HTTP/1.1 100 Continue\r\n\r\n"); err != nil {
			return 0, err
		}
	}
	return r.body.Read(p)
}

func (r *continueReader) Close() error { return r.body.Close() }
