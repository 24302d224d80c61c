package api

import (
	"bufio"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// startServer serves h on a Unix socket in a temp dir and returns its path.
func startServer(t *testing.T, s *Server) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "s.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(NewListener(ln, "test", DefaultMaxRequests, slog.New(slog.DiscardHandler))) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		s.Shutdown(ctx)
		if err := <-done; !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("Serve returned %v", err)
		}
	})
	return path
}

func testHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/echo":
			b, err := io.ReadAll(r.Body)
			if err != nil {
				http.Error(w, err.Error(), http.StatusRequestTimeout)
				return
			}
			w.Header().Set("Content-Type", "application/json")
			w.Write(b)
		case "/empty":
			w.WriteHeader(http.StatusNoContent)
			w.Write([]byte("ignored"))
		case "/panic":
			panic("boom")
		case "/ignore-body":
			w.Write([]byte("{}"))
		case "/header":
			w.Header().Set("X-Value", "a\r\nInjected: yes")
			w.Header().Add("X-Multi", "1")
			w.Header().Add("X-Multi", "2")
			w.WriteHeader(http.StatusCreated)
			w.WriteHeader(http.StatusInternalServerError) // ignored
		case "/peer":
			p, ok := PeerFromContext(r.Context())
			if !ok {
				w.WriteHeader(500)
				return
			}
			w.Write([]byte(p.Exe))
		default:
			w.Write([]byte("plain text"))
		}
	})
}

// exchange writes raw on a new connection and returns everything the
// server sends until it closes the connection or 2 s pass.
func exchange(t *testing.T, path, raw string) string {
	t.Helper()
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(c)
	return string(b)
}

func TestServerRaw(t *testing.T) {
	path := startServer(t, &Server{Handler: testHandler()})
	cases := []struct {
		name, raw string
		want      []string // substrings, in order
		not       []string
	}{
		{"keep-alive then close", "GET /x HTTP/1.1\r\nHost: h\r\n\r\nGET /x HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
			[]string{"HTTP/1.1 200 OK\r\n", "Content-Type: text/plain; charset=utf-8\r\n", "Date: ", "Content-Length: 10\r\n\r\nplain text",
				"HTTP/1.1 200 OK\r\n", "Connection: close\r\n\r\nplain text"}, nil},
		{"body and pipelining", "POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: 7\r\n\r\n{\"a\":1}GET /x HTTP/1.1\r\nConnection: close\r\n\r\n",
			[]string{"Content-Type: application/json\r\n", "Content-Length: 7\r\n\r\n{\"a\":1}", "plain text"}, nil},
		{"chunked request body", "POST /echo HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
			[]string{"Content-Length: 5\r\n", "\r\n\r\nabcde"}, nil},
		{"no content", "GET /empty HTTP/1.1\r\nConnection: close\r\n\r\n", []string{"HTTP/1.1 204 No Content\r\n"}, []string{"Content-Length", "ignored"}},
		{"head", "HEAD /x HTTP/1.1\r\nConnection: close\r\n\r\n", []string{"HTTP/1.1 200 OK\r\n", "Content-Length: 10\r\n"}, []string{"plain text"}},
		{"headers", "GET /header HTTP/1.1\r\nConnection: close\r\n\r\n",
			[]string{"HTTP/1.1 201 Created\r\n", "X-Multi: 1\r\nX-Multi: 2\r\n", "X-Value: a  Injected: yes\r\n"}, []string{"\nInjected"}},
		{"http/1.0 closes", "GET /x HTTP/1.0\r\n\r\n", []string{"HTTP/1.1 200 OK\r\n", "Connection: close\r\n", "plain text"}, nil},
		{"malformed", "NOT HTTP\r\n\r\n", []string{"HTTP/1.1 400 Bad Request\r\n", "Connection: close\r\n"}, nil},
		{"bad content-length", "POST /echo HTTP/1.1\r\nContent-Length: x\r\n\r\n", []string{"HTTP/1.1 400 Bad Request\r\n"}, nil},
		{"100-continue body never read", "POST /ignore-body HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n",
			[]string{"HTTP/1.1 200 OK\r\n", "\r\n\r\n{}"}, []string{"100 Continue"}},
		{"unknown expectation", "POST /echo HTTP/1.1\r\nExpect: magic\r\nContent-Length: 1\r\n\r\n", []string{"HTTP/1.1 417 Expectation Failed\r\n"}, []string{"200 OK"}},
		{"panic closes without answer", "GET /panic HTTP/1.1\r\n\r\n", nil, []string{"HTTP"}},
		{"peer in context", "GET /peer HTTP/1.1\r\nConnection: close\r\n\r\n", []string{"HTTP/1.1 200 OK\r\n"}, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := exchange(t, path, tc.raw)
			rest := got
			for _, w := range tc.want {
				i := strings.Index(rest, w)
				if i < 0 {
					t.Fatalf("answer lacks %q (in order):\n%s", w, got)
				}
				rest = rest[i+len(w):]
			}
			for _, n := range tc.not {
				if strings.Contains(got, n) {
					t.Errorf("answer has %q:\n%s", n, got)
				}
			}
		})
	}
}

func TestServerHeaderLimit(t *testing.T) {
	path := startServer(t, &Server{Handler: testHandler()})
	got := exchange(t, path, "GET /x HTTP/1.1\r\nX-Big: "+strings.Repeat("a", maxHeaderBytes+10)+"\r\n\r\n")
	if !strings.HasPrefix(got, "HTTP/1.1 431 Request Header Fields Too Large\r\n") {
		t.Errorf("got %.80q", got)
	}
}

// TestServerUnreadBody: a short unread body is drained and the connection
// kept; a long one closes the connection after the answer.
func TestServerUnreadBody(t *testing.T) {
	path := startServer(t, &Server{Handler: testHandler()})
	got := exchange(t, path, "POST /ignore-body HTTP/1.1\r\nContent-Length: 5\r\n\r\nhelloGET /x HTTP/1.1\r\nConnection: close\r\n\r\n")
	if strings.Count(got, "HTTP/1.1 200 OK") != 2 {
		t.Errorf("short body: %q", got)
	}
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	n := maxDiscard + 4096
	go func() {
		io.WriteString(c, "POST /ignore-body HTTP/1.1\r\nContent-Length: "+strconv.Itoa(n)+"\r\n\r\n")
		c.Write(make([]byte, n))
	}()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	if _, err := br.ReadByte(); !errors.Is(err, io.EOF) && !isReset(err) {
		t.Errorf("after an undrained body the connection stays open: %v", err)
	}
}

func isReset(err error) bool { return err != nil && strings.Contains(err.Error(), "reset") }

func TestServerExpectContinue(t *testing.T) {
	path := startServer(t, &Server{Handler: testHandler()})
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(c, "POST /echo HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n")
	br := bufio.NewReader(c)
	line, err := br.ReadString('\n')
	if err != nil || line != "HTTP/1.1 100 Continue\r\n" {
		t.Fatalf("before the body: %q %v", line, err)
	}
	br.ReadString('\n')
	io.WriteString(c, "ok")
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || string(b) != "ok" {
		t.Errorf("%d %q", resp.StatusCode, b)
	}
}

// TestServerTimeouts: a request slower than ReadTimeout (body or headers)
// fails or closes; a connection idle for IdleTimeout is closed.
func TestServerTimeouts(t *testing.T) {
	path := startServer(t, &Server{Handler: testHandler(), ReadTimeout: 200 * time.Millisecond, IdleTimeout: time.Second})
	dial := func() net.Conn {
		c, err := net.Dial("unix", path)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		c.SetDeadline(time.Now().Add(5 * time.Second))
		return c
	}
	c := dial()
	io.WriteString(c, "POST /echo HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil || resp.StatusCode != http.StatusRequestTimeout {
		t.Fatalf("slow body: %v %v", resp, err)
	}
	closedAfter := func(c net.Conn) time.Duration {
		start := time.Now()
		if _, err := c.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
			t.Errorf("read: %v, want EOF", err)
		}
		return time.Since(start)
	}
	slow := dial()
	io.WriteString(slow, "GET /x HTTP/1.1\r\nHost: h\r\n") // no end of headers
	if d := closedAfter(slow); d > 800*time.Millisecond {
		t.Errorf("headers that never end closed after %v, want about ReadTimeout", d)
	}
	if d := closedAfter(dial()); d < 800*time.Millisecond {
		t.Errorf("idle connection closed after %v, want about IdleTimeout", d)
	}
}

// TestServerShutdown: in-flight requests finish, idle connections close,
// new connections are refused.
func TestServerShutdown(t *testing.T) {
	release, started := make(chan struct{}), make(chan struct{})
	s := &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			close(started)
			<-release
		}
		w.Write([]byte("done"))
	})}
	path := filepath.Join(t.TempDir(), "s.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- s.Serve(ln) }()
	idle, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	io.WriteString(idle, "GET /fast HTTP/1.1\r\n\r\n")
	if resp, err := http.ReadResponse(bufio.NewReader(idle), nil); err != nil || resp.StatusCode != 200 {
		t.Fatal(resp, err)
	}
	busy, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	io.WriteString(busy, "GET /slow HTTP/1.1\r\n\r\n")
	<-started
	var shut atomic.Bool
	shutdown := make(chan error, 1)
	go func() {
		shutdown <- s.Shutdown(context.Background())
		shut.Store(true)
	}()
	idle.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := idle.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		t.Errorf("idle connection after Shutdown: %v", err)
	}
	if err := <-served; !errors.Is(err, http.ErrServerClosed) {
		t.Errorf("Serve: %v", err)
	}
	if shut.Load() {
		t.Error("Shutdown returned with a request in flight")
	}
	close(release)
	busy.SetDeadline(time.Now().Add(5 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(busy), nil)
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := io.ReadAll(resp.Body); string(b) != "done" {
		t.Errorf("in-flight answer %q", b)
	}
	if err := <-shutdown; err != nil {
		t.Errorf("Shutdown: %v", err)
	}
	if c, err := net.Dial("unix", path); err == nil {
		c.Close()
		t.Error("a connection was accepted after Shutdown")
	}
}

// TestServerCurl: curl, the tool operators reach aziot sockets with, gets
// answers through the server, including a body large enough for it to send
// "Expect: 100-continue".
func TestServerCurl(t *testing.T) {
	curl, err := exec.LookPath("curl")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("curl is required in CI (scripts/deps.sh installs it)")
		}
		t.Skip("no curl")
	}
	path := startServer(t, &Server{Handler: testHandler()})
	big := `{"k":"` + strings.Repeat("x", 4000) + `"}`
	for _, args := range [][]string{
		{"-sS", "--unix-socket", path, "http://localhost/echo", "-H", "Content-Type: application/json", "-d", big},
		{"-sS", "--unix-socket", path, "http://localhost/x", "http://localhost/echo", "-d", big},
	} {
		out, err := exec.Command(curl, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("curl %v: %v\n%s", args, err, out)
		}
		if !strings.HasSuffix(string(out), big) {
			t.Errorf("curl got %.100q", out)
		}
	}
}

// FuzzServeConn feeds arbitrary bytes to a connection: the server answers
// with HTTP/1.1 or closes, and never panics or hangs once the input ends.
func FuzzServeConn(f *testing.F) {
	f.Add("GET /x HTTP/1.1\r\nHost: h\r\n\r\n")
	f.Add("POST /echo HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}GET /x HTTP/1.0\r\n\r\n")
	f.Add("POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n")
	f.Add("POST /echo HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\nx")
	f.Add("GET /panic HTTP/1.1\r\n\r\n")
	s := &Server{Handler: testHandler(), ReadTimeout: time.Second, IdleTimeout: time.Second}
	f.Fuzz(func(t *testing.T, in string) {
		client, server := socketPair(t)
		c := &serverConn{srv: s, nc: server}
		done := make(chan struct{})
		go func() { c.serve(); close(done) }()
		go func() {
			io.WriteString(client, in)
			client.CloseWrite()
		}()
		client.SetDeadline(time.Now().Add(5 * time.Second))
		out, err := io.ReadAll(client)
		client.Close()
		if err != nil {
			t.Fatalf("reading the answer: %v", err)
		}
		if len(out) > 0 && !strings.HasPrefix(string(out), "HTTP/1.1 ") {
			t.Fatalf("answer %.60q", out)
		}
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatal("the connection loop did not end")
		}
	})
}

// socketPair returns the two ends of a connected Unix stream socket pair.
func socketPair(t *testing.T) (*net.UnixConn, *net.UnixConn) {
	t.Helper()
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	var ends [2]*net.UnixConn
	for i, fd := range fds {
		f := os.NewFile(uintptr(fd), "socketpair")
		c, err := net.FileConn(f)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		ends[i] = c.(*net.UnixConn)
	}
	return ends[0], ends[1]
}

// TestServerBodyErrorCloses: a body that could not be read to its end (a
// malformed chunk, a read timeout) leaves the connection at an unknown
// place in the stream: what follows must not be served as a request.
func TestServerBodyErrorCloses(t *testing.T) {
	path := startServer(t, &Server{Handler: testHandler(), ReadTimeout: 200 * time.Millisecond})
	for _, target := range []string{"/ignore-body", "/echo"} {
		got := exchange(t, path, "POST "+target+" HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nGET /smuggled HTTP/1.1\r\nConnection: close\r\n\r\n")
		if strings.Count(got, "HTTP/1.1 ") != 1 || strings.Contains(got, "plain text") {
			t.Errorf("%s, malformed chunk: the rest was served as a request:\n%s", target, got)
		}
	}
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(c, "POST /echo HTTP/1.1\r\nContent-Length: 27\r\n\r\nabc")
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusRequestTimeout {
		t.Fatalf("slow body: %v %v", resp, err)
	}
	io.Copy(io.Discard, resp.Body)
	// The rest of the body, which looks like a request.
	io.WriteString(c, "GET /x HTTP/1.1\r\nHost: h\r\n\r\n")
	if resp, err := http.ReadResponse(br, nil); err == nil {
		t.Errorf("the rest of a timed-out body was served as a request: %d", resp.StatusCode)
	}
}

// TestServerDrainLimit: after the answer, no more than maxDiscard of an
// unread body is read; a client that keeps sending finds the connection
// closed rather than read until the request's deadline.
func TestServerDrainLimit(t *testing.T) {
	path := startServer(t, &Server{Handler: testHandler(), ReadTimeout: 5 * time.Second})
	for _, framing := range []string{"Content-Length: 1000000000000\r\n", "Transfer-Encoding: chunked\r\n"} {
		c, err := net.Dial("unix", path)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(4 * time.Second))
		chunk := make([]byte, 32<<10)
		if strings.HasPrefix(framing, "Transfer") {
			chunk = append([]byte(strconv.FormatInt(int64(len(chunk)), 16)+"\r\n"), append(chunk, "\r\n"...)...)
		}
		io.WriteString(c, "POST /ignore-body HTTP/1.1\r\n"+framing+"\r\n")
		start := time.Now()
		var werr error
		for werr == nil && time.Since(start) < 2*time.Second {
			_, werr = c.Write(chunk)
		}
		if werr == nil {
			t.Errorf("%s: the server read a body it does not want for %v", strings.TrimSpace(framing), time.Since(start))
		}
	}
}
