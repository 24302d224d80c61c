package api

import (
	"encoding/json"
	"testing"
)

// FuzzUnquote: Unquote agrees with encoding/json on every JSON string it
// accepts.
func FuzzUnquote(f *testing.F) {
	for _, s := range []string{`abc`, `sr=a\u0026sig=b`, `\"\\\/\b\f\n\r\t`, `\u00e9`, `é`, `\ud83d\ude00`, "\xff", `\`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, content string) {
		quoted := []byte(`"` + content + `"`)
		var want string
		if json.Unmarshal(quoted, &want) != nil {
			return // not a JSON string: encoding/json never passes it on
		}
		if got, ok := Unquote([]byte(content)); ok && got != want {
			t.Fatalf("Unquote(%q) = %q, encoding/json says %q", content, got, want)
		}
	})
}
