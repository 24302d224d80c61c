package cloud

import (
	"strings"
	"testing"
	"unicode/utf8"
)

func TestCut(t *testing.T) {
	if got := Cut("short"); got != "short" {
		t.Fatalf("Cut(short) = %q", got)
	}
	for _, s := range []string{strings.Repeat("a", 5000), strings.Repeat("é", 5000), "a" + strings.Repeat("€", 300)} {
		got := Cut(s)
		if len(got) > maxQuoted+len("…") || !utf8.ValidString(got) || !strings.HasSuffix(got, "…") || !strings.HasPrefix(s, strings.TrimSuffix(got, "…")) {
			t.Fatalf("Cut(%.20q…) = %q", s, got)
		}
	}
}
