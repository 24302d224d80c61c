// Package apitest holds the checks that the broker services' tests share:
// what every answer of an aziot socket must look like.
package apitest

import (
	"encoding/json"
	"net/http"
	"testing"
)

// CheckAnswer fails t unless an answer is a success (200, 201 or 204) or
// aziot's error: a 4xx (a 5xx is the server's fault, never the caller's)
// whose body is exactly {"message": "<non-empty>"}. what names the request
// in the failure.
func CheckAnswer(t testing.TB, what string, status int, body string) {
	t.Helper()
	switch {
	case status == http.StatusOK, status == http.StatusCreated, status == http.StatusNoContent:
		return
	case status < 400 || status >= 500:
		t.Fatalf("%s: status %d %s", what, status, body)
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(body), &m); err != nil || len(m) != 1 {
		t.Fatalf("%s: error body %s is not {\"message\"}", what, body)
	}
	if msg, ok := m["message"].(string); !ok || msg == "" {
		t.Fatalf("%s: empty message: %s", what, body)
	}
}
