package emulator

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"testing"
	"time"
)

// start runs an emulator for one test.
func start(t testing.TB, opts Options) *Emulator {
	t.Helper()
	em, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := em.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { em.Close() })
	return em
}

// reply is one HTTP answer.
type reply struct {
	status int
	header http.Header
	body   map[string]any
	raw    []byte
}

// call sends one request with an optional Authorization and JSON body.
func call(t testing.TB, c *http.Client, method, url, auth string, body any, hdr ...string) reply {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json; charset=utf-8")
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	r := reply{status: resp.StatusCode, header: resp.Header, raw: raw}
	if len(raw) > 0 && raw[0] == '{' {
		if err := json.Unmarshal(raw, &r.body); err != nil {
			t.Fatalf("%s %s: body %q: %v", method, url, raw, err)
		}
	}
	return r
}

// dpsSAS is an aziot-style DPS token.
func dpsSAS(t testing.TB, em *Emulator, regID, key string) string {
	t.Helper()
	tok, err := NewSASToken(key, em.IDScope()+"/registrations/"+regID, time.Now().Add(time.Minute), "registration")
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func regURL(em *Emulator, regID string) string {
	return fmt.Sprintf("%s/%s/registrations/%s/register?api-version=2021-06-01", em.URL(), em.IDScope(), regID)
}

func opURL(em *Emulator, regID, opID string) string {
	return fmt.Sprintf("%s/%s/registrations/%s/operations/%s?api-version=2021-06-01", em.URL(), em.IDScope(), regID, opID)
}

// provision registers and polls until the status is no longer assigning;
// it returns the final poll and the number of polls.
func provision(t testing.TB, em *Emulator, c *http.Client, regID, auth string, payload any) (reply, int) {
	t.Helper()
	body := map[string]any{"registrationId": regID}
	if payload != nil {
		body["payload"] = payload
	}
	r := call(t, c, "PUT", regURL(em, regID), auth, body)
	if r.status != 202 {
		t.Fatalf("register %s: %d %s", regID, r.status, r.raw)
	}
	opID, _ := r.body["operationId"].(string)
	for polls := 1; polls < 20; polls++ {
		p := call(t, c, "GET", opURL(em, regID, opID), auth, map[string]any{})
		if p.status != 202 || p.body["status"] != "assigning" {
			return p, polls
		}
		if st, _ := p.body["registrationState"].(map[string]any); st["registrationId"] != regID {
			t.Fatalf("assigning reply without registrationState.registrationId: %s", p.raw)
		}
	}
	t.Fatalf("%s: still assigning after 20 polls", regID)
	return reply{}, 0
}

// state is the registrationState of a poll reply.
func state(r reply) map[string]any {
	s, _ := r.body["registrationState"].(map[string]any)
	return s
}

// hubSAS is a device (or module) SAS for the emulator's default hub.
func hubSAS(t testing.TB, em *Emulator, resource, key string) string {
	t.Helper()
	tok, err := NewSASToken(key, em.HubHostname()+"/"+resource, time.Now().Add(time.Minute), "")
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func modURL(em *Emulator, dev, mod string) string {
	u := em.URL() + "/devices/" + dev + "/modules"
	if mod != "" {
		u += "/" + mod
	}
	return u + "?api-version=2017-11-08-preview"
}

var errTest = errTestT("refused by the test's allocation")

type errTestT string

func (e errTestT) Error() string { return string(e) }
