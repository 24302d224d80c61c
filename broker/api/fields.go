package api

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"unicode/utf8"
)

// Request bodies are decoded as aziot's serde types are: unknown members
// are ignored, a missing or mistyped member is a 422 whose message is worded
// as serde's ("missing field `keyId`"). Decoding never fails inside
// encoding/json for a member's value: each field records what it saw
// (FieldState) and Check turns that into the 422, so that the wording is
// Warden's and not the JSON package's. keyd and certd share these types.

// FieldState is what a member of a request body held.
type FieldState uint8

// The states of a member.
const (
	FieldAbsent FieldState = iota
	FieldNull
	FieldPresent
	FieldWrongType // not the JSON type expected
	FieldBadValue  // the right JSON type, an unusable value
)

// Check returns the 422 for a required member name that should hold
// expected ("a string"), or nil when it is present.
func (f FieldState) Check(name, expected string) error {
	switch f {
	case FieldPresent:
		return nil
	case FieldAbsent:
		return Unprocessable("missing field `%s`", name)
	case FieldNull:
		return Unprocessable("invalid type: null, expected %s (field `%s`)", expected, name)
	case FieldBadValue:
		return Unprocessable("invalid value for field `%s`: expected %s", name, expected)
	}
	return Unprocessable("invalid type for field `%s`: expected %s", name, expected)
}

// CheckOptional is Check for a member that may be absent or null.
func (f FieldState) CheckOptional(name, expected string) error {
	if f == FieldAbsent || f == FieldNull {
		return nil
	}
	return f.Check(name, expected)
}

// Unprocessable is a 422 with a serde-worded message.
func Unprocessable(format string, args ...any) *Error {
	return &Error{Status: http.StatusUnprocessableEntity, Message: fmt.Sprintf(format, args...)}
}

// String is a JSON string member.
type String struct {
	Value string
	State FieldState
}

// UnmarshalJSON records the string, or that the value was not one.
func (f *String) UnmarshalJSON(b []byte) error {
	// Fast path: encoding/json has already checked the token, so a string
	// of valid UTF-8 needs only its escapes undone (clients' JSON encoders
	// escape the "&" of every handle as \u0026).
	if n := len(b); n >= 2 && b[0] == '"' && b[n-1] == '"' {
		if s, ok := Unquote(b[1 : n-1]); ok {
			f.Value, f.State = s, FieldPresent
			return nil
		}
	}
	switch {
	case string(b) == "null":
		f.State = FieldNull
	case json.Unmarshal(b, &f.Value) == nil:
		f.State = FieldPresent
	default:
		f.State = FieldWrongType
	}
	return nil
}

// Check is State.Check for a required string member.
func (f String) Check(name string) error { return f.State.Check(name, "a string") }

// Unquote undoes the escapes of the content of a JSON string that
// encoding/json has validated. ok is false for what it leaves to
// encoding/json: invalid UTF-8 and \u escapes outside the ASCII range.
func Unquote(raw []byte) (string, bool) {
	i := bytes.IndexByte(raw, '\\')
	if i < 0 {
		return string(raw), utf8.Valid(raw)
	}
	out := make([]byte, i, len(raw))
	copy(out, raw[:i])
	for ; i < len(raw); i++ {
		c := raw[i]
		if c != '\\' {
			out = append(out, c)
			continue
		}
		if i+1 >= len(raw) {
			return "", false
		}
		i++
		switch raw[i] {
		case '"', '\\', '/':
			out = append(out, raw[i])
		case 'b':
			out = append(out, '\b')
		case 'f':
			out = append(out, '\f')
		case 'n':
			out = append(out, '\n')
		case 'r':
			out = append(out, '\r')
		case 't':
			out = append(out, '\t')
		case 'u':
			if i+4 >= len(raw) {
				return "", false
			}
			v, err := strconv.ParseUint(string(raw[i+1:i+5]), 16, 16)
			if err != nil || v >= 0x80 {
				return "", false
			}
			out = append(out, byte(v))
			i += 4
		default:
			return "", false
		}
	}
	if !utf8.Valid(out) {
		return "", false
	}
	return string(out), true
}
