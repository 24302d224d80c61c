package api

// validSubset reports whether b is one JSON object whose member values are
// strings, null or such objects (JSON whitespace allowed): a subset of what
// json.Valid accepts, checked in one tight pass. Every hot body (keyd's
// sign, encrypt, decrypt, handle-only) is in it, and json.Valid costs about
// a microsecond for a key handle's few hundred bytes. false only means "not
// in the subset": the caller then asks json.Valid.
func validSubset(b []byte) bool {
	i, ok := subsetObject(b, skipWS(b, 0), 0)
	return ok && skipWS(b, i) == len(b)
}

// maxSubsetDepth bounds the nesting the subset accepts.
const maxSubsetDepth = 8

func subsetObject(b []byte, i, depth int) (int, bool) {
	if depth > maxSubsetDepth || i >= len(b) || b[i] != '{' {
		return 0, false
	}
	if i = skipWS(b, i+1); i < len(b) && b[i] == '}' {
		return i + 1, true
	}
	for {
		var ok bool
		if i, ok = subsetString(b, i); !ok {
			return 0, false
		}
		if i = skipWS(b, i); i >= len(b) || b[i] != ':' {
			return 0, false
		}
		if i = skipWS(b, i+1); i >= len(b) {
			return 0, false
		}
		switch b[i] {
		case '"':
			i, ok = subsetString(b, i)
		case '{':
			i, ok = subsetObject(b, i, depth+1)
		case 'n':
			i, ok = i+4, len(b)-i >= 4 && string(b[i:i+4]) == "null"
		default:
			return 0, false
		}
		if !ok {
			return 0, false
		}
		if i = skipWS(b, i); i >= len(b) {
			return 0, false
		}
		switch b[i] {
		case ',':
			i = skipWS(b, i+1)
		case '}':
			return i + 1, true
		default:
			return 0, false
		}
	}
}

// subsetString returns the index after the string at b[i], checked as JSON
// checks strings: no control characters, only JSON's escapes.
func subsetString(b []byte, i int) (int, bool) {
	if i >= len(b) || b[i] != '"' {
		return 0, false
	}
	for i++; i < len(b); i++ {
		switch c := b[i]; {
		case c == '"':
			return i + 1, true
		case c < 0x20:
			return 0, false
		case c == '\\':
			if i++; i >= len(b) {
				return 0, false
			}
			switch b[i] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
			case 'u':
				if len(b)-i < 5 || !isHex(b[i+1]) || !isHex(b[i+2]) || !isHex(b[i+3]) || !isHex(b[i+4]) {
					return 0, false
				}
				i += 4
			default:
				return 0, false
			}
		}
	}
	return 0, false
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func skipWS(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}
