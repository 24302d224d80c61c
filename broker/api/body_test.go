package api

import (
	"encoding/json"
	"net/http/httptest"
	"testing"
)

// TestJSONErrorText: a body of the wrong shape is worded in JSON's terms,
// with the field's path, never with Go's type names.
func TestJSONErrorText(t *testing.T) {
	type inner struct {
		N int `json:"n"`
	}
	type body struct {
		S     string            `json:"s"`
		B     []byte            `json:"b"`
		L     []string          `json:"l"`
		F     bool              `json:"f"`
		X     float64           `json:"x"`
		In    *inner            `json:"in"`
		M     map[string]string `json:"m"`
		Arr   [2]int            `json:"arr"`
		Plain int
	}
	for _, tc := range []struct{ field, in, want string }{
		{"", `[]`, `invalid type: expected an object, found JSON array`},
		{"", `{"s":1}`, `invalid type for field "s": expected a string, found JSON number`},
		{"", `{"b":{}}`, `invalid type for field "b": expected a base64 string, found JSON object`},
		{"", `{"l":"x"}`, `invalid type for field "l": expected an array, found JSON string`},
		{"", `{"f":"true"}`, `invalid type for field "f": expected a boolean, found JSON string`},
		{"", `{"x":[]}`, `invalid type for field "x": expected a number, found JSON array`},
		{"", `{"in":{"n":1.5}}`, `invalid type for field "in.n": expected an integer, found JSON number 1.5`},
		{"", `{"m":[]}`, `invalid type for field "m": expected an object, found JSON array`},
		{"", `{"arr":{}}`, `invalid type for field "arr": expected an array, found JSON object`},
		{"opts", `true`, `invalid type for field "opts": expected an object, found JSON bool`},
		{"opts", `{"in":{"n":"1"}}`, `invalid type for field "opts.in.n": expected an integer, found JSON string`},
		{"", `{"s":`, `invalid JSON at offset 5: unexpected end of JSON input`},
	} {
		var v body
		err := json.Unmarshal([]byte(tc.in), &v)
		if err == nil {
			t.Fatalf("%s decoded", tc.in)
		}
		if got := UnprocessableJSON(tc.field, err); got.Status != 422 || got.Message != tc.want {
			t.Errorf("%q in %q: %d %q, want 422 %q", tc.in, tc.field, got.Status, got.Message, tc.want)
		}
	}
}

// TestWriteJSONAsSerde: answers are written as aziot's serde_json writes
// them, byte for byte: no HTML escaping of &, < and > (a key handle holds
// "&sig="), no newline after the value.
func TestWriteJSONAsSerde(t *testing.T) {
	for _, tc := range []struct {
		v    any
		want string
	}{
		{map[string]string{"keyHandle": "sr=eyJ9&sig=AB+/=="}, `{"keyHandle":"sr=eyJ9&sig=AB+/=="}`},
		{errorBody{Message: "local identity for <m> & co"}, `{"message":"local identity for <m> & co"}`},
		{[]int{1}, `[1]`},
	} {
		w := httptest.NewRecorder()
		WriteJSON(w, 200, tc.v)
		if got := w.Body.String(); got != tc.want {
			t.Errorf("WriteJSON(%v) = %q, want %q", tc.v, got, tc.want)
		}
	}
}
