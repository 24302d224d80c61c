package cloud

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/warden-iot/warden/wasm-modules/cloud/cloudtest"
	"github.com/warden-iot/warden/wasm-modules/guest"
)

// FuzzRetried gives Retried arbitrary host answers to its requests:
// responses, transport failures of any code, and host responses that are
// not JSON. It asserts: no panic; at most retries+1 attempts, each with
// its own Authorization; only a failure with a retryable code (not denied,
// invalid or deadline) is retried, after one wait of the delay; the
// outcome is the last attempt's, a failure being a *guest.Error.
func FuzzRetried(f *testing.F) {
	for _, s := range []struct {
		retries uint8
		script  string
	}{
		{0, "200\n{}"},
		{2, "!unavailable\n\n!failed\n\n204"},
		{3, "!unavailable\n\n!denied\n\n200"},
		{1, "~\n{\"status\":\"x\"}\n\n200"},
		{2, "!deadline\n\n200"},
		{1, "~\nnull"},
		{4, "!network\n\n~\n\n500 3\nbody"},
		{5, ""},
	} {
		f.Add(s.retries, s.script)
	}
	f.Fuzz(func(t *testing.T, n uint8, script string) {
		retries := int(n % 8)
		h := &cloudtest.Host{Answers: cloudtest.Parse(script), MaxCalls: 1000}
		answers := slices.Clone(h.Answers)
		tokens := 0
		auth := func(context.Context) (string, error) {
			tokens++
			return fmt.Sprint("token-", tokens), nil
		}
		ctx := guest.WithCaller(context.Background(), h)
		resp, err := Retried(ctx, retries, 7, &guest.HTTPRequest{Method: "GET", URL: "https://dps.example/"}, auth)
		checkRetried(t, retries, answers, h, resp, err)
	})
}

// checkRetried asserts FuzzRetried's promises for one run.
func checkRetried(t *testing.T, retries int, answers []cloudtest.Answer, h *cloudtest.Host, resp *guest.HTTPResponse, err error) {
	t.Helper()
	reqs := h.Requests()
	if len(reqs) == 0 || len(reqs) > retries+1 {
		t.Fatalf("%d attempts with %d retries", len(reqs), retries)
	}
	for i, r := range reqs {
		if want := fmt.Sprint("token-", i+1); !slices.Equal(r.Header["Authorization"], []string{want}) {
			t.Fatalf("attempt %d: Authorization %q, want %q", i, r.Header["Authorization"], want)
		}
		if i < len(reqs)-1 && !retryable(codeOf(answers, i)) {
			t.Fatalf("attempt %d (code %q) was retried", i, codeOf(answers, i))
		}
	}
	last := codeOf(answers, len(reqs)-1)
	if len(reqs) <= retries && retryable(last) {
		t.Fatalf("attempt %d (code %q) was not retried", len(reqs)-1, last)
	}
	if s := h.Sleeps(); len(s) != len(reqs)-1 || slices.ContainsFunc(s, func(d time.Duration) bool { return d != 7*time.Millisecond }) {
		t.Fatalf("waits %v for %d attempts", s, len(reqs))
	}
	var ge *guest.Error
	switch {
	case last == "" && (err != nil || resp == nil):
		t.Fatalf("a response was answered, got %v, %v", resp, err)
	case last != "" && (resp != nil || !errors.As(err, &ge) || ge.Code != last):
		t.Fatalf("the last attempt failed with %q, got %v, %v", last, resp, err)
	}
}

// codeOf is the error code answer i gives the module, "" for a response.
func codeOf(answers []cloudtest.Answer, i int) string {
	if i >= len(answers) {
		return guest.CodeDeadline
	}
	a := answers[i]
	switch {
	case a.Code != "":
		return a.Code
	case len(a.Raw) > 0 && json.Unmarshal(a.Raw, new(guest.HTTPResponse)) != nil:
		return guest.CodeFailed
	}
	return ""
}

func retryable(code string) bool {
	return code != "" && code != guest.CodeDenied && code != guest.CodeInvalid && code != guest.CodeDeadline
}
