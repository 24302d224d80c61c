package policy

import (
	"context"
	"testing"

	"github.com/open-policy-agent/opa/v1/tester"
)

// TestRegoPolicyTests runs every Rego test of the default policy
// (policy/default/*_test.rego), as `opa test policy/default` does, and fails
// on any failure or error.
func TestRegoPolicyTests(t *testing.T) {
	results, err := tester.Run(context.Background(), "default")
	if err != nil {
		t.Fatalf("load the Rego tests: %v", err)
	}
	if len(results) == 0 {
		t.Fatal("no Rego tests found in policy/default")
	}
	cases, failed := 0, 0
	for _, r := range results {
		n := max(1, len(r.SubResults))
		cases += n
		if r.Error != nil {
			failed++
			t.Errorf("%s.%s (%s): error: %v", r.Package, r.Name, r.Location, r.Error)
			continue
		}
		if r.Fail {
			failed++
			t.Errorf("%s.%s (%s): FAIL\n%s", r.Package, r.Name, r.Location, r.SubResults)
		}
	}
	t.Logf("Rego tests: %d rules, %d cases, %d failed", len(results), cases, failed)
}
