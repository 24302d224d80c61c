package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
)

func testService() *Service {
	ok := func(w http.ResponseWriter, r *http.Request) {
		var body map[string]any
		err := RequireJSON(w, r, &body)
		if err != nil {
			WriteError(w, r, nil, err)
			return
		}
		WriteJSON(w, 200, map[string]any{"version": APIVersion(r), "id": PathParam(r, "id"), "body": body})
	}
	get := func(w http.ResponseWriter, r *http.Request) {
		WriteJSON(w, 200, map[string]string{"id": PathParam(r, "id")})
	}
	return &Service{
		Name:     "test",
		Versions: []string{"2020-09-01", "2021-05-01"},
		Routes: []Route{
			{Pattern: "/things/{id}", MinVersion: "2020-09-01", Handlers: map[string]http.HandlerFunc{"GET": get, "POST": ok, "PUT": ok}},
			{Pattern: "/new", MinVersion: "2021-05-01", Handlers: map[string]http.HandlerFunc{"GET": get}},
			{Pattern: "/old", MinVersion: "2020-09-01", MaxVersion: "2020-09-01", Handlers: map[string]http.HandlerFunc{"GET": get}},
		},
		Logger: slog.New(slog.DiscardHandler),
	}
}

func TestFramework(t *testing.T) {
	h := testService().Handler()
	cases := []struct {
		name, method, target, ctype, body string
		status                            int
		message                           string // exact message, "" = don't check
		contains                          string
	}{
		{"no api-version", "GET", "/things/a", "", "", 400, "api-version not specified", ""},
		{"unknown api-version", "GET", "/things/a?api-version=1999-01-01", "", "", 400, `invalid api-version "1999-01-01"`, ""},
		{"no api-version on unknown path", "GET", "/nope", "", "", 400, "api-version not specified", ""},
		{"unknown path", "GET", "/nope?api-version=2020-09-01", "", "", 404, "not found", ""},
		{"route only in newer version", "GET", "/new?api-version=2020-09-01", "", "", 404, "not found", ""},
		{"route in newer version", "GET", "/new?api-version=2021-05-01", "", "", 200, "", ""},
		{"route removed in newer version", "GET", "/old?api-version=2021-05-01", "", "", 404, "not found", ""},
		{"wrong method", "DELETE", "/things/a?api-version=2020-09-01", "", "", 400, "method not allowed", ""},
		{"unknown method", "PATCH", "/things/a?api-version=2020-09-01", "", "", 400, "method not allowed", ""},
		{"malformed JSON", "POST", "/things/a?api-version=2020-09-01", "application/json", "{nope", 422, "", "invalid JSON"},
		{"malformed JSON without content type", "POST", "/things/a?api-version=2020-09-01", "", "{nope", 422, "", ""},
		{"wrong JSON type", "POST", "/things/a?api-version=2020-09-01", "", "[1]", 422, "", "invalid type"},
		{"trailing data", "POST", "/things/a?api-version=2020-09-01", "", "{} {}", 422, "", ""},
		{"stray closing brace", "POST", "/things/a?api-version=2020-09-01", "", `{"k":"v"}}`, 422, "trailing characters after the JSON value", ""},
		{"text body ignored", "POST", "/things/a?api-version=2020-09-01", "text/plain", `{"a":1}`, 400, "missing request body", ""},
		{"empty POST", "POST", "/things/a?api-version=2020-09-01", "application/json", "", 400, "missing request body", ""},
		{"PUT text", "PUT", "/things/a?api-version=2020-09-01", "text/plain", `{}`, 415, "request body must be application/json", ""},
		{"PUT text on route without PUT", "PUT", "/new?api-version=2021-05-01", "text/plain", `{}`, 415, "request body must be application/json", ""},
		{"POST bad JSON on route without POST", "POST", "/new?api-version=2021-05-01", "", `{`, 422, "", ""},
		{"PUT empty body", "PUT", "/things/a?api-version=2020-09-01", "application/json", "", 422, "", ""},
		{"PUT json with charset", "PUT", "/things/a?api-version=2020-09-01", "application/json; charset=utf-8", `{}`, 200, "", ""},
		{"percent-encoded slash in capture", "GET", "/things/a%2Fb?api-version=2020-09-01", "", "", 200, "", `"id":"a/b"`},
		{"invalid UTF-8 in capture", "GET", "/things/%ff?api-version=2020-09-01", "", "", 404, "not found", ""},
		{"ok", "POST", "/things/x?api-version=2021-05-01", "application/json", `{"k":"v"}`, 200, "", `"version":"2021-05-01"`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var body io.Reader
			if tc.body != "" {
				body = strings.NewReader(tc.body)
			}
			r := httptest.NewRequest(tc.method, tc.target, body)
			if tc.ctype != "" {
				r.Header.Set("Content-Type", tc.ctype)
			}
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			if w.Code != tc.status {
				t.Fatalf("status = %d, want %d (body %s)", w.Code, tc.status, w.Body)
			}
			if ct := w.Header().Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type = %q", ct)
			}
			if tc.message != "" {
				want := fmt.Sprintf(`{"message":%q}`, tc.message)
				if got := strings.TrimSpace(w.Body.String()); got != want {
					t.Errorf("body = %s, want %s", got, want)
				}
			}
			if tc.contains != "" && !strings.Contains(w.Body.String(), tc.contains) {
				t.Errorf("body %s does not contain %s", w.Body, tc.contains)
			}
		})
	}
}

func TestErrorBodies(t *testing.T) {
	inner := errors.New("invalid handle")
	cases := []struct {
		err    error
		status int
		body   string
	}{
		{InvalidParameter("handle", inner), 400, `{"message":"parameter \"handle\" has an invalid value\ncaused by: invalid handle"}`},
		{InvalidParameter("handle", fmt.Errorf("could not parse: %w", inner)), 400,
			`{"message":"parameter \"handle\" has an invalid value\ncaused by: could not parse\ncaused by: invalid handle"}`},
		{InvalidParameter("", nil), 400, `{"message":"a parameter has an invalid value"}`},
		{Unauthorized("user 1000 is not authorized to access the key k"), 401, `{"message":"user 1000 is not authorized to access the key k"}`},
		{errors.New("disk on fire: /secret/path"), 500, `{"message":"internal error"}`},
		{Internal(errors.New("detail")), 500, `{"message":"internal error"}`},
	}
	for _, tc := range cases {
		w := httptest.NewRecorder()
		WriteError(w, httptest.NewRequest("GET", "/", nil), slog.New(slog.DiscardHandler), tc.err)
		if w.Code != tc.status || w.Body.String() != tc.body {
			t.Errorf("%v: got %d %s, want %d %s", tc.err, w.Code, w.Body, tc.status, tc.body)
		}
	}
}

func TestQueryValueMatchesParseQuery(t *testing.T) {
	for _, q := range []string{
		"", "api-version=2020-09-01", "a=1&api-version=x&api-version=y", "api-version", "api-version=",
		"api%2Dversion=v", "api-version=a%20b", "api-version=a+b", "api-version=%zz&api-version=ok",
		"api-version=a;b&api-version=c", "&&api-version=v&", "x=%zz", "api-version=%2",
	} {
		want, wantOK := url.Values{}, false
		if v, _ := url.ParseQuery(q); v != nil {
			want = v
			_, wantOK = v["api-version"]
		}
		got, ok := queryValue(q, "api-version")
		if ok != wantOK || (ok && got != want.Get("api-version")) {
			t.Errorf("queryValue(%q) = %q, %v; ParseQuery gives %q, %v", q, got, ok, want.Get("api-version"), wantOK)
		}
	}
}

func FuzzQueryValue(f *testing.F) {
	f.Add("a=1&api-version=2020-09-01")
	f.Add("api%2Dversion=%zz;&api-version=b+c")
	f.Fuzz(func(t *testing.T, q string) {
		v, _ := url.ParseQuery(q)
		vs, wantOK := v["api-version"]
		got, ok := queryValue(q, "api-version")
		if ok != wantOK || (ok && got != vs[0]) {
			t.Fatalf("queryValue(%q) = %q, %v; ParseQuery gives %q", q, got, ok, vs)
		}
	})
}

func TestValidSubset(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want bool
	}{
		{`{}`, true}, {` { } `, true}, {`{"a":"b"}`, true}, {`{"a":null,"b":{"c":"\u00e9\n"}}`, true},
		{"{\"a\":\"b\"}\n", true}, {`{"a":"b",}`, false}, {`{"a":1}`, false}, {`{"a":[]}`, false},
		{`{"a":"b"} {}`, false}, {`{"a":"\x"}`, false}, {`{"a":"\u12"}`, false}, {"{\"a\":\"\x01\"}", false},
		{`{"":}`, false}, {`{"a":nul}`, false}, {`{"a":nullx}`, false}, {`{"a"}`, false}, {`{a:"b"}`, false}, {`"s"`, false}, {``, false},
		{`{"a":{"b":{"c":{"d":{"e":{"f":{"g":{"h":{"i":{}}}}}}}}}}`, false}, // deeper than maxSubsetDepth
	} {
		if got := validSubset([]byte(tc.in)); got != tc.want {
			t.Errorf("validSubset(%q) = %v, want %v", tc.in, got, tc.want)
		}
	}
}

// FuzzValidSubset: whatever validSubset accepts, json.Valid accepts.
func FuzzValidSubset(f *testing.F) {
	f.Add(`{"keyHandle":"sr=x\u0026sig=y","algorithm":"ECDSA","parameters":{"digest":"AAAA"}}`)
	f.Add(`{"a":null,"b":{"c":"\""}}`)
	f.Fuzz(func(t *testing.T, in string) {
		if validSubset([]byte(in)) && !json.Valid([]byte(in)) {
			t.Fatalf("validSubset accepts %q, json.Valid does not", in)
		}
	})
}

// TestPathParamDecodedOnce: a capture is percent-decoded once, as aziot
// does, whatever else the path holds: an ID with "%" (IoT Hub allows it in
// device and module IDs) sent as url.PathEscape sends it comes back as is.
func TestPathParamDecodedOnce(t *testing.T) {
	h := testService().Handler()
	for _, id := range []string{"50%", "m%41", "a%2Fb", "%", "a/b%41", "é%e9", "plain"} {
		target := "/things/" + url.PathEscape(id) + "?api-version=2020-09-01"
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest("GET", target, nil))
		var got map[string]string
		json.Unmarshal(w.Body.Bytes(), &got)
		if w.Code != 200 || got["id"] != id {
			t.Errorf("GET %s: %d %s, want id %q", target, w.Code, w.Body, id)
		}
	}
}
