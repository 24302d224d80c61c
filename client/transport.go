package client

import (
	"bufio"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// The transport is HTTP/1.1 over pooled keep-alive Unix connections, one
// request at a time per connection, run in the calling goroutine. It does
// what http.Transport would do for these sockets without its per-request
// hand-off to a reader and a writer goroutine, which on a signing request
// costs more CPU than the signature (docs/decisions.md, "Client
// transport"). Responses are parsed by net/http's own ReadResponse.

// maxIdle is how many idle connections a Client keeps. The broker serves at
// most max_requests (default 10) connections of one uid.
const maxIdle = 16

// maxResponseBytes bounds a response body.
const maxResponseBytes = 8 << 20

// maxHeaderBytes bounds a response's status line and headers (the
// server's limit on a request's).
const maxHeaderBytes = 1 << 20

// aLongTimeAgo is a deadline in the past: setting it interrupts blocked I/O.
var aLongTimeAgo = time.Unix(1, 0)

// pool is the idle connections of one socket, shared by a Client and the
// copies WithToken makes.
type pool struct {
	path string
	mu   sync.Mutex
	idle []*conn
}

// conn is one keep-alive connection.
type conn struct {
	nc       net.Conn
	r        connReader // what br reads
	br       *bufio.Reader
	wbuf     []byte // the request being written, reused
	deadline bool   // a deadline is set and must be cleared before reuse
}

func (p *pool) get() *conn {
	p.mu.Lock()
	defer p.mu.Unlock()
	if n := len(p.idle); n > 0 {
		c := p.idle[n-1]
		p.idle[n-1] = nil
		p.idle = p.idle[:n-1]
		return c
	}
	return nil
}

func (p *pool) put(c *conn) {
	if c.deadline {
		if c.nc.SetDeadline(time.Time{}) != nil {
			c.nc.Close()
			return
		}
		c.deadline = false
	}
	p.mu.Lock()
	if len(p.idle) < maxIdle {
		p.idle = append(p.idle, c)
		c = nil
	}
	p.mu.Unlock()
	if c != nil {
		c.nc.Close()
	}
}

func (p *pool) closeIdle() {
	p.mu.Lock()
	idle := p.idle
	p.idle = nil
	p.mu.Unlock()
	for _, c := range idle {
		c.nc.Close()
	}
}

func (p *pool) dial(ctx context.Context) (*conn, error) {
	var d net.Dialer
	nc, err := d.DialContext(ctx, "unix", p.path)
	if err != nil {
		return nil, err
	}
	c := &conn{nc: nc}
	c.r.nc = nc
	c.br = bufio.NewReaderSize(&c.r, 4096)
	return c, nil
}

var errHeaderTooLarge = errors.New("response header too large")

// connReader reads the connection within a byte limit: maxHeaderBytes
// while an answer's header is read (readBody bounds the body).
type connReader struct {
	nc     net.Conn
	remain int64
}

func (r *connReader) Read(p []byte) (int, error) {
	if r.remain <= 0 {
		return 0, errHeaderTooLarge
	}
	if int64(len(p)) > r.remain {
		p = p[:r.remain]
	}
	n, err := r.nc.Read(p)
	r.remain -= int64(n)
	return n, err
}

// request is what roundTrip sends: method, path (which may carry a query),
// the escaped api-version, an optional bearer token and JSON body.
type request struct {
	method, path, version, token string
	body                         []byte
}

// response is a whole answer.
type response struct {
	status int
	body   []byte
}

// roundTrip sends one request and reads the whole answer. A request that
// could not be written on a reused connection (the broker closes idle
// ones) is sent once more on a new connection, since the broker never saw
// it; a GET or HEAD is also sent again when the reused connection failed
// before any byte of an answer. A POST that may have been read is not
// repeated: it may have been acted on. (http.Transport's rules.)
func (p *pool) roundTrip(ctx context.Context, req *request) (response, error) {
	if req.method == "" || !framingSafe(req.method) || !framingSafe(req.path) || !framingSafe(req.token) {
		return response{}, errBadRequestField
	}
	for {
		c, reused := p.get(), true
		if c == nil {
			var err error
			if c, err = p.dial(ctx); err != nil {
				return response{}, err
			}
			reused = false
		}
		resp, retry, err := c.exchange(ctx, req)
		if err == nil {
			if resp.keep {
				p.put(c)
			} else {
				c.nc.Close()
			}
			return resp.response, nil
		}
		c.nc.Close()
		if errors.Is(err, os.ErrDeadlineExceeded) {
			// The connection's deadline is ctx's, and may fire before ctx's
			// own timer does.
			if _, ok := ctx.Deadline(); ok || ctx.Err() != nil {
				return response{}, cmp.Or(ctx.Err(), context.DeadlineExceeded)
			}
		}
		if ctx.Err() != nil {
			return response{}, ctx.Err()
		}
		if !retry || !reused {
			return response{}, err
		}
	}
}

type exchanged struct {
	response
	keep bool // the connection may carry another request
}

// exchange writes the request and reads the answer on c. retry reports
// that repeating the request on another connection is safe (see
// roundTrip).
func (c *conn) exchange(ctx context.Context, req *request) (r exchanged, retry bool, err error) {
	if dl, ok := ctx.Deadline(); ok {
		if err := c.nc.SetDeadline(dl); err != nil {
			return r, false, err
		}
		c.deadline = true
	}
	if ctx.Done() != nil {
		stop := context.AfterFunc(ctx, func() { c.nc.SetDeadline(aLongTimeAgo) })
		defer func() {
			if !stop() && err == nil {
				r.keep = false // the deadline was moved under the request
			}
		}()
	}
	c.wbuf = appendRequest(c.wbuf[:0], req)
	if _, err := c.nc.Write(c.wbuf); err != nil {
		return r, true, err
	}
	c.r.remain = maxHeaderBytes
	if _, err := c.br.Peek(1); err != nil {
		return r, req.method == http.MethodGet || req.method == http.MethodHead, err
	}
	var hreq *http.Request // ReadResponse reads a body unless told the request was HEAD
	if req.method == http.MethodHead {
		hreq = headRequest
	}
	resp, err := http.ReadResponse(c.br, hreq)
	if err != nil {
		return r, false, fmt.Errorf("read response: %w", err)
	}
	c.r.remain = 1<<63 - 1
	r.status = resp.StatusCode
	r.body, err = readBody(resp)
	if err != nil {
		return r, false, err
	}
	// A body that ran to the end of the stream leaves nothing to reuse.
	r.keep = !resp.Close && (resp.ContentLength >= 0 || len(resp.TransferEncoding) > 0 || resp.Body == http.NoBody)
	return r, false, nil
}

var errBadRequestField = errors.New("method, path or token holds a space or a control character")

// framingSafe reports whether s can be written into the request line or a
// header as it is: a space or a line break would end it and start what
// the caller did not mean to send (a header, a whole second request whose
// answer the next user of the connection would read).
func framingSafe(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c == 0x7f {
			return false
		}
	}
	return true
}

// headRequest tells ReadResponse that an answer is to HEAD (it only reads
// its Method).
var headRequest = &http.Request{Method: http.MethodHead}

// appendRequest appends req as HTTP/1.1 to b.
func appendRequest(b []byte, req *request) []byte {
	b = append(b, req.method...)
	b = append(b, ' ')
	b = append(b, req.path...)
	if strings.IndexByte(req.path, '?') >= 0 {
		b = append(b, "&api-version="...)
	} else {
		b = append(b, "?api-version="...)
	}
	b = append(b, req.version...)
	b = append(b, " HTTP/1.1\r\nHost: warden.sock\r\n"...)
	if req.token != "" {
		b = append(b, "Authorization: Bearer "...)
		b = append(b, req.token...)
		b = append(b, "\r\n"...)
	}
	if req.body != nil {
		b = append(b, "Content-Type: application/json\r\nContent-Length: "...)
		b = strconv.AppendInt(b, int64(len(req.body)), 10)
		b = append(b, "\r\n"...)
	}
	b = append(b, "\r\n"...)
	return append(b, req.body...)
}

var errTooLarge = errors.New("response body too large")

// readBody reads resp's whole body, at most maxResponseBytes.
func readBody(resp *http.Response) ([]byte, error) {
	defer resp.Body.Close()
	if resp.Body == http.NoBody { // 204, 304, an answer to HEAD (whose length is the GET's)
		return nil, nil
	}
	if n := resp.ContentLength; n >= 0 {
		if n > maxResponseBytes {
			return nil, errTooLarge
		}
		b := make([]byte, n)
		if _, err := io.ReadFull(resp.Body, b); err != nil {
			return nil, fmt.Errorf("read response: %w", err)
		}
		return b, nil
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes+1))
	if err != nil {
		return nil, fmt.Errorf("read response: %w", err)
	}
	if len(b) > maxResponseBytes {
		return nil, errTooLarge
	}
	return b, nil
}
