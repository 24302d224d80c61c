package conformance

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"testing"
	"time"
)

// knownRoute is, per socket, a path the socket serves and a method it does
// not serve on that path, for the route-dependent framework cases. Sockets
// whose routes arrive with later services are listed with "".
var knownRoute = map[string]struct{ path, otherMethod string }{
	"broker":    {"/health", "POST"},
	"identityd": {"/trust-bundle", "POST"},
	"keyd":      {"/sign", "GET"},
	"certd":     {"/certificates/x", "POST"},
	"tpmd":      {"/get_tpm_keys", "POST"},
}

// TestFrameworkCases runs the framework table of aziot-api.md §15.1 on every socket.
func TestFrameworkCases(t *testing.T) {
	d := startDaemon(t, "")
	for _, s := range sockets {
		t.Run(s.name, func(t *testing.T) {
			sock := d.socket(s.name)
			fi, err := os.Stat(sock)
			if err != nil {
				t.Fatal(err)
			}
			if fi.Mode().Perm() != 0o660 {
				t.Errorf("socket mode = %v, want 0660", fi.Mode().Perm())
			}
			type tc struct {
				name    string
				req     request
				status  int
				message string
			}
			v := "?api-version=" + s.version
			cases := []tc{
				{"no api-version", request{Method: "GET", Target: "/no/such/path"}, 400, "api-version not specified"},
				{"unknown api-version", request{Method: "GET", Target: "/no/such/path?api-version=1999-01-01"}, 400, `invalid api-version "1999-01-01"`},
				{"unknown path", request{Method: "GET", Target: "/no/such/path" + v}, 404, "not found"},
				{"unknown path, POST", request{Method: "POST", Target: "/no/such/path" + v, Body: "{}"}, 404, "not found"},
			}
			if k := knownRoute[s.name]; k.path != "" {
				json := map[string]string{"Content-Type": "application/json"}
				text := map[string]string{"Content-Type": "text/plain"}
				cases = append(cases,
					tc{"wrong method", request{Method: k.otherMethod, Target: k.path + v}, 400, "method not allowed"},
					tc{"malformed JSON", request{Method: "POST", Target: k.path + v, Header: json, Body: `{"a":`}, 422, ""},
					tc{"PUT text/plain", request{Method: "PUT", Target: k.path + v, Header: text, Body: "{}"}, 415, "request body must be application/json"},
					tc{"PUT empty JSON body", request{Method: "PUT", Target: k.path + v, Header: json}, 422, ""},
				)
			}
			for _, c := range cases {
				c.req.Socket = sock
				r := do(t, c.req)
				if r.Status != c.status {
					t.Errorf("%s: status %d, want %d (%s)", c.name, r.Status, c.status, r.Body)
					continue
				}
				if c.message != "" && r.message() != c.message {
					t.Errorf("%s: message %q, want %q", c.name, r.message(), c.message)
				}
				if r.message() == "" {
					t.Errorf("%s: body %s lacks {\"message\"}", c.name, r.Body)
				}
			}
		})
	}
	// A POST with a non-JSON body is treated as no body.
	r := do(t, request{Socket: d.socket("broker"), Method: "POST", Target: "/tokens?api-version=2026-12-01",
		Header: map[string]string{"Content-Type": "text/plain"}, Body: `{"capabilities":[]}`})
	if r.Status != 400 || r.message() != "missing request body" {
		t.Errorf("POST text/plain: %d %s, want 400 missing request body", r.Status, r.Body)
	}
	// identityd's route that exists only from 2021-12-01 on is a 404 before.
	r = do(t, request{Socket: d.socket("identityd"), Method: "GET", Target: "/identities/provisioning?api-version=2020-09-01"})
	if r.Status != 404 {
		t.Errorf("provisioning at 2020-09-01: %d, want 404", r.Status)
	}
}

// TestConnectionLimit: the 11th simultaneous connection of one uid is closed
// with no response, on every socket, while another uid is still served.
func TestConnectionLimit(t *testing.T) {
	d := startDaemon(t, "")
	for _, s := range sockets {
		t.Run(s.name, func(t *testing.T) {
			sock := d.socket(s.name)
			var held []net.Conn
			defer func() {
				for _, c := range held {
					c.Close()
				}
			}()
			// Hold 10 connections, each proven accepted by a round trip. A
			// connection of an earlier test client may still be counted for
			// a moment, so one refused here is retried until the deadline.
			deadline := time.Now().Add(10 * time.Second)
			for len(held) < 10 {
				c, err := net.Dial("unix", sock)
				if err != nil {
					t.Fatal(err)
				}
				if _, err := roundTrip(c, s.version); err != nil {
					c.Close()
					if time.Now().After(deadline) {
						t.Fatalf("connection %d: %v", len(held)+1, err)
					}
					time.Sleep(20 * time.Millisecond)
					continue
				}
				held = append(held, c)
			}
			over, err := net.Dial("unix", sock)
			if err != nil {
				t.Fatal(err)
			}
			defer over.Close()
			if resp, err := roundTrip(over, s.version); err == nil {
				t.Fatalf("11th connection answered: %d", resp.StatusCode)
			}
			if os.Getuid() == 0 {
				r := doAs(t, uidA, request{Socket: sock, Method: "GET", Target: "/x?api-version=" + s.version})
				if r.Status != 404 {
					t.Errorf("another uid while root is at its limit: %d, want 404", r.Status)
				}
			}
			held[0].Close()
			held = held[1:]
			deadline = time.Now().Add(10 * time.Second)
			for {
				c, err := net.Dial("unix", sock)
				if err != nil {
					t.Fatal(err)
				}
				_, err = roundTrip(c, s.version)
				c.Close()
				if err == nil {
					break
				}
				if time.Now().After(deadline) {
					t.Fatal("no slot freed after closing a connection")
				}
				time.Sleep(20 * time.Millisecond)
			}
		})
	}
}

func roundTrip(c net.Conn, version string) (*http.Response, error) {
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := fmt.Fprintf(c, "GET /x?api-version=%s HTTP/1.1\r\nHost: warden\r\n\r\n", version); err != nil {
		return nil, err
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return nil, err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp, nil
}
