package keyd

import (
	"errors"

	"github.com/warden-iot/warden/broker/api"
)

// Hot request bodies (sign, encrypt, decrypt, and those carrying only a
// handle) are decoded by walking their members here rather than through
// encoding/json's reflection. encoding/json has validated the whole value
// before it calls UnmarshalJSON, so the walker may assume
// well-formed JSON; it still never reads out of bounds on anything else.

var errNotObject = errors.New("not a JSON object")

// eachMember calls f with the raw key content (between the quotes, escapes
// left as they are) and the raw value of each member of the object b.
func eachMember(b []byte, f func(key, value []byte)) error {
	i := skipSpace(b, 0)
	if i >= len(b) || b[i] != '{' {
		return errNotObject
	}
	i = skipSpace(b, i+1)
	if i < len(b) && b[i] == '}' {
		return nil
	}
	for i < len(b) {
		if b[i] != '"' {
			return errNotObject
		}
		end := skipString(b, i)
		if end < 0 {
			return errNotObject
		}
		key := b[i+1 : end-1]
		i = skipSpace(b, end)
		if i >= len(b) || b[i] != ':' {
			return errNotObject
		}
		i = skipSpace(b, i+1)
		vend := skipValue(b, i)
		if vend < 0 {
			return errNotObject
		}
		f(key, b[i:vend])
		i = skipSpace(b, vend)
		if i >= len(b) {
			return errNotObject
		}
		switch b[i] {
		case ',':
			i = skipSpace(b, i+1)
		case '}':
			return nil
		default:
			return errNotObject
		}
	}
	return errNotObject
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// skipString returns the index after the string starting at b[i] == '"',
// or -1.
func skipString(b []byte, i int) int {
	for i++; i < len(b); i++ {
		switch b[i] {
		case '\\':
			i++
		case '"':
			return i + 1
		}
	}
	return -1
}

// skipValue returns the index after the value starting at b[i], or -1.
func skipValue(b []byte, i int) int {
	if i >= len(b) {
		return -1
	}
	switch b[i] {
	case '"':
		return skipString(b, i)
	case '{', '[':
		depth := 0
		for ; i < len(b); i++ {
			switch b[i] {
			case '"':
				j := skipString(b, i)
				if j < 0 {
					return -1
				}
				i = j - 1
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return i + 1
				}
			}
		}
		return -1
	}
	// A number, true, false or null: up to the next delimiter.
	j := i
	for j < len(b) && b[j] != ',' && b[j] != '}' && b[j] != ']' && b[j] != ' ' && b[j] != '\t' && b[j] != '\n' && b[j] != '\r' {
		j++
	}
	if j == i {
		return -1
	}
	return j
}

// keyIs reports whether the raw key content equals name (keys with escapes
// are compared after unquoting).
func keyIs(raw []byte, name string) bool {
	if string(raw) == name {
		return true
	}
	for _, c := range raw {
		if c == '\\' {
			s, ok := api.Unquote(raw)
			return ok && s == name
		}
	}
	return false
}

// UnmarshalJSON decodes K11's body without reflection.
func (r *signRequest) UnmarshalJSON(b []byte) error {
	return eachMember(b, func(k, v []byte) {
		switch {
		case keyIs(k, "keyHandle"):
			r.KeyHandle.UnmarshalJSON(v)
		case keyIs(k, "algorithm"):
			r.Algorithm.UnmarshalJSON(v)
		case keyIs(k, "parameters"):
			r.Parameters = nil
			if string(v) == "null" {
				return
			}
			p := &signParams{}
			if eachMember(v, func(k, v []byte) {
				switch {
				case keyIs(k, "digest"):
					p.Digest.UnmarshalJSON(v)
				case keyIs(k, "message"):
					p.Message.UnmarshalJSON(v)
				}
			}) != nil {
				p.Digest.state, p.Message.state = wrongType, wrongType
			}
			r.Parameters = p
		}
	})
}

// UnmarshalJSON decodes K12's and K13's body without reflection.
func (r *cryptRequest) UnmarshalJSON(b []byte) error {
	return eachMember(b, func(k, v []byte) {
		switch {
		case keyIs(k, "keyHandle"):
			r.KeyHandle.UnmarshalJSON(v)
		case keyIs(k, "algorithm"):
			r.Algorithm.UnmarshalJSON(v)
		case keyIs(k, "parameters"):
			r.Parameters = append(r.Parameters[:0], v...)
		case keyIs(k, "plaintext"):
			r.Plaintext.UnmarshalJSON(v)
		case keyIs(k, "ciphertext"):
			r.Ciphertext.UnmarshalJSON(v)
		}
	})
}

// UnmarshalJSON decodes a body carrying a handle without reflection.
func (r *handleRequest) UnmarshalJSON(b []byte) error {
	return eachMember(b, func(k, v []byte) {
		if keyIs(k, "keyHandle") {
			r.KeyHandle.UnmarshalJSON(v)
		}
	})
}
