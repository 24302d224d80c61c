package client

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// server is a net/http server on a Unix socket that counts connections and
// can close the idle ones.
type server struct {
	path string
	srv  *http.Server

	mu    sync.Mutex
	conns map[net.Conn]http.ConnState
	total int
	idle  chan struct{} // a connection went idle
}

func newServer(t *testing.T, h http.HandlerFunc) *server {
	t.Helper()
	s := &server{path: filepath.Join(t.TempDir(), "s.sock"), conns: map[net.Conn]http.ConnState{}, idle: make(chan struct{}, 64)}
	l, err := net.Listen("unix", s.path)
	if err != nil {
		t.Fatal(err)
	}
	s.srv = &http.Server{Handler: h, ConnState: func(c net.Conn, st http.ConnState) {
		s.mu.Lock()
		defer s.mu.Unlock()
		switch st {
		case http.StateNew:
			s.total++
		case http.StateClosed, http.StateHijacked:
			delete(s.conns, c)
			return
		case http.StateIdle:
			select {
			case s.idle <- struct{}{}:
			default: // nobody waits for this one
			}
		}
		s.conns[c] = st
	}}
	go s.srv.Serve(l)
	t.Cleanup(func() { s.srv.Close() })
	return s
}

func (s *server) connections() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.total
}

// closeIdle waits for a connection to go idle, then closes every idle one
// behind the client's back.
func (s *server) closeIdle(t *testing.T) {
	t.Helper()
	select {
	case <-s.idle:
	case <-time.After(10 * time.Second):
		t.Fatal("no connection went idle")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for c, st := range s.conns {
		if st == http.StateIdle {
			c.Close()
		}
	}
}

func echo(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	json.NewEncoder(w).Encode(map[string]string{
		"method": r.Method, "uri": r.RequestURI, "auth": r.Header.Get("Authorization"),
		"ctype": r.Header.Get("Content-Type"), "body": string(b),
	})
}

func TestRequestShape(t *testing.T) {
	s := newServer(t, echo)
	c := New(s.path, "2020-09-01").WithToken("tok")
	defer c.Close()
	var got map[string]string
	if err := c.Do(context.Background(), http.MethodPost, "/keys/a%2Fb?x=1", map[string]int{"n": 1}, &got); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"method": "POST", "uri": "/keys/a%2Fb?x=1&api-version=2020-09-01", "auth": "Bearer tok", "ctype": "application/json", "body": `{"n":1}`}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %q, want %q", k, got[k], v)
		}
	}
	if err := c.Do(context.Background(), http.MethodGet, "/x", nil, &got); err != nil {
		t.Fatal(err)
	}
	if got["ctype"] != "" || got["body"] != "" || got["uri"] != "/x?api-version=2020-09-01" {
		t.Errorf("GET sent %v", got)
	}
	raw := json.RawMessage(`{"as":"is"}`)
	if err := c.Do(context.Background(), http.MethodPost, "/x", raw, &got); err != nil || got["body"] != string(raw) {
		t.Errorf("raw body: %v %q", err, got["body"])
	}
}

func TestKeepAlive(t *testing.T) {
	s := newServer(t, echo)
	c := New(s.path, "v")
	defer c.Close()
	for range 50 {
		if err := c.Do(context.Background(), http.MethodGet, "/", nil, nil); err != nil {
			t.Fatal(err)
		}
	}
	if n := s.connections(); n != 1 {
		t.Errorf("50 sequential requests used %d connections, want 1", n)
	}
}

func TestServerClosedIdleConnection(t *testing.T) {
	s := newServer(t, echo)
	c := New(s.path, "v")
	defer c.Close()
	for i := range 3 {
		var got map[string]string
		if err := c.Do(context.Background(), http.MethodPost, "/", map[string]int{"i": i}, &got); err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		s.closeIdle(t)
	}
	if n := s.connections(); n != 3 {
		t.Errorf("%d connections, want 3 (one per closed one)", n)
	}
}

func TestResponses(t *testing.T) {
	s := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/chunked":
			w.Write([]byte(`{"a":`))
			w.(http.Flusher).Flush()
			w.Write([]byte(`"b"}`))
		case "/close":
			w.Header().Set("Connection", "close")
			w.Write([]byte(`{"a":"c"}`))
		case "/error":
			w.WriteHeader(http.StatusBadRequest)
			w.Write([]byte(`{"message":"invalid handle"}`))
		case "/text-error":
			http.Error(w, "plain words", http.StatusForbidden)
		case "/empty":
			w.WriteHeader(http.StatusNoContent)
		case "/huge":
			w.Header().Set("Content-Length", "9000000")
			w.Write([]byte("{"))
		}
	})
	c := New(s.path, "v")
	defer c.Close()
	ctx := context.Background()
	var out map[string]string
	if err := c.Do(ctx, "GET", "/chunked", nil, &out); err != nil || out["a"] != "b" {
		t.Errorf("chunked: %v %v", err, out)
	}
	if err := c.Do(ctx, "GET", "/close", nil, &out); err != nil || out["a"] != "c" {
		t.Errorf("close: %v %v", err, out)
	}
	var ce *Error
	if err := c.Do(ctx, "GET", "/error", nil, &out); !errors.As(err, &ce) || ce.Status != 400 || ce.Message != "invalid handle" {
		t.Errorf("error: %v", err)
	}
	if err := c.Do(ctx, "GET", "/text-error", nil, &out); !errors.As(err, &ce) || ce.Status != 403 || ce.Message != "plain words" {
		t.Errorf("text error: %v", err)
	}
	if err := c.Do(ctx, "GET", "/empty", nil, &out); err != nil {
		t.Errorf("204: %v", err)
	}
	if err := c.Do(ctx, "GET", "/huge", nil, &out); err == nil || !strings.Contains(err.Error(), "too large") {
		t.Errorf("huge: %v", err)
	}
	if err := c.Do(ctx, "GET", "/chunked", nil, &out); err != nil {
		t.Errorf("after huge: %v", err)
	}
	// chunked, error, text-error and empty reuse connections; close and huge
	// do not: 1 + close's successor + huge's successor.
	if n := s.connections(); n != 3 {
		t.Errorf("%d connections, want 3", n)
	}
}

func TestContext(t *testing.T) {
	release, arrived := make(chan struct{}), make(chan struct{}, 2)
	s := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			arrived <- struct{}{}
			<-release
		}
		w.Write([]byte("{}"))
	})
	defer close(release)
	c := New(s.path, "v")
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := c.Do(ctx, "GET", "/slow", nil, nil); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("deadline: %v", err)
	}
	ctx, cancel = context.WithCancel(context.Background())
	<-arrived // the first /slow
	go func() { <-arrived; cancel() }()
	if err := c.Do(ctx, "GET", "/slow", nil, nil); !errors.Is(err, context.Canceled) {
		t.Errorf("cancel: %v", err)
	}
	// A connection that carried a deadline is clean when reused.
	ctx, cancel = context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for range 3 {
		if err := c.Do(ctx, "GET", "/fast", nil, nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Do(context.Background(), "GET", "/fast", nil, nil); err != nil {
		t.Fatal(err)
	}
}

func TestNoServer(t *testing.T) {
	c := New(filepath.Join(t.TempDir(), "none.sock"), "v")
	err := c.Do(context.Background(), "GET", "/", nil, nil)
	if err == nil || !strings.Contains(err.Error(), "none.sock") {
		t.Errorf("err = %v, want one naming the socket", err)
	}
}

func TestConcurrent(t *testing.T) {
	s := newServer(t, echo)
	c := New(s.path, "v")
	defer c.Close()
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 100 {
				var got map[string]string
				in := map[string]int{"g": g, "i": i}
				if err := c.Do(context.Background(), "POST", "/", in, &got); err != nil {
					errs <- err
					return
				}
				if b, _ := json.Marshal(in); got["body"] != string(b) {
					errs <- errors.New("answer of another request: " + got["body"])
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n := s.connections(); n > 8 {
		t.Errorf("%d connections for 8 goroutines", n)
	}
}

// TestNoRepeatOfReadPost: a POST the server read and then dropped without
// an answer is not sent again (it may have been acted on); a GET is.
func TestNoRepeatOfReadPost(t *testing.T) {
	var calls atomic.Int32
	s := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/drop" {
			calls.Add(1)
			panic(http.ErrAbortHandler) // net/http closes the connection without an answer
		}
		w.Write([]byte("{}"))
	})
	c := New(s.path, "v")
	defer c.Close()
	ctx := context.Background()
	if err := c.Do(ctx, "GET", "/warm", nil, nil); err != nil { // a reused connection next
		t.Fatal(err)
	}
	if err := c.Do(ctx, "POST", "/drop", map[string]int{"n": 1}, nil); err == nil {
		t.Fatal("POST dropped by the server succeeded")
	}
	if n := calls.Load(); n != 1 {
		t.Errorf("POST reached the handler %d times, want 1", n)
	}
	if err := c.Do(ctx, "GET", "/warm", nil, nil); err != nil {
		t.Fatal(err)
	}
	calls.Store(0)
	c.Do(ctx, "GET", "/drop", nil, nil)
	if n := calls.Load(); n != 2 {
		t.Errorf("GET reached the handler %d times, want 2 (sent again once)", n)
	}
}

// TestHead: the answer to HEAD has no body, whatever its Content-Length
// says; the connection then carries the next request.
func TestHead(t *testing.T) {
	s := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"a":"b"}`))
	})
	c := New(s.path, "v")
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	for range 2 {
		if b, err := c.Raw(ctx, http.MethodHead, "/", nil); err != nil || len(b) != 0 {
			t.Fatalf("HEAD: %q %v", b, err)
		}
	}
	var out map[string]string
	if err := c.Do(ctx, http.MethodGet, "/", nil, &out); err != nil || out["a"] != "b" {
		t.Fatalf("GET after HEAD: %v %v", out, err)
	}
	if n := s.connections(); n != 1 {
		t.Errorf("%d connections, want 1", n)
	}
}

// TestRequestFraming: a token, path or method that would break the
// request's framing (a line break, a space) is refused, not sent: an
// injected request would leave its answer on a pooled connection, to be
// read as the answer of the next request of any copy of the client.
func TestRequestFraming(t *testing.T) {
	s := newServer(t, echo)
	c := New(s.path, "v")
	defer c.Close()
	ctx := context.Background()
	if err := c.WithToken("t\r\n\r\nGET /injected HTTP/1.1\r\nHost: h").Do(ctx, http.MethodGet, "/a", nil, nil); err == nil {
		t.Error("a token with a line break was sent")
	}
	var got map[string]string
	if err := c.Do(ctx, http.MethodGet, "/b", nil, &got); err != nil || got["uri"] != "/b?api-version=v" {
		t.Fatalf("GET /b got the answer to %q (%v)", got["uri"], err)
	}
	for _, bad := range []struct{ method, path string }{{"GET", "/a b"}, {"GET", "/a\r\nX: y"}, {"G ET", "/a"}, {"", "/a"}} {
		if err := c.Do(ctx, bad.method, bad.path, nil, nil); err == nil {
			t.Errorf("%q %q was sent", bad.method, bad.path)
		}
		if err := c.Do(ctx, http.MethodGet, "/b", nil, &got); err != nil || got["uri"] != "/b?api-version=v" {
			t.Fatalf("after %q %q, GET /b got the answer to %q (%v)", bad.method, bad.path, got["uri"], err)
		}
	}
}

// TestHeaderLimit: an answer whose header never ends fails once it passes
// the header limit, rather than being read into memory until the
// context's deadline.
func TestHeaderLimit(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.sock")
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	const sent = 64 << 20
	go func() {
		nc, err := l.Accept()
		if err != nil {
			return
		}
		defer nc.Close()
		nc.Read(make([]byte, 4096))
		io.WriteString(nc, "HTTP/1.1 200 OK\r\nX-Big: ")
		for n, b := 0, []byte(strings.Repeat("a", 64<<10)); n < sent; n += len(b) {
			if _, err := nc.Write(b); err != nil {
				return
			}
		}
		time.Sleep(5 * time.Second) // an endless header, as far as the client can tell
	}()
	c := New(path, "v")
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	err = c.Do(ctx, http.MethodGet, "/", nil, nil)
	if err == nil || errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("an endless header: %v, want a failure before the deadline", err)
	}
}
