package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"os"
	"reflect"
	"strings"
)

// MaxBodyBytes bounds a request body; aziot's payloads are small.
const MaxBodyBytes = 1 << 20

// ErrNoBody is returned by ReadJSON when the request has no body (or, for
// POST and DELETE, a body that is not JSON, which aziot ignores).
var ErrNoBody = errors.New("no request body")

// ReadJSON decodes the request body into v following aziot's rules:
// POST/DELETE bodies are JSON when Content-Type is absent or
// application/json and ignored otherwise; an empty one is no body. PUT must
// be absent or application/json (else 415) and is always parsed, so an empty
// PUT body is a 422. Malformed JSON is 422; a body read past the server's
// read deadline is 408; a body over MaxBodyBytes is 413.
func ReadJSON(w http.ResponseWriter, r *http.Request, v any) error {
	isJSON := true
	if ct := r.Header.Get("Content-Type"); ct != "" && ct != "application/json" {
		mt, _, err := mime.ParseMediaType(ct)
		isJSON = err == nil && mt == "application/json"
	}
	if r.Method == http.MethodPut && !isJSON {
		return &Error{Status: http.StatusUnsupportedMediaType, Message: "request body must be application/json"}
	}
	body, err := readBody(w, r)
	if err != nil {
		var tooBig *http.MaxBytesError
		switch {
		case errors.As(err, &tooBig):
			return &Error{Status: http.StatusRequestEntityTooLarge, Message: fmt.Sprintf("request body exceeds %d bytes", tooBig.Limit)}
		case errors.Is(err, os.ErrDeadlineExceeded):
			return &Error{Status: http.StatusRequestTimeout, Message: "timed out reading the request body"}
		}
		return &Error{Status: http.StatusBadRequest, Message: "could not read the request body", Err: err}
	}
	if r.Method != http.MethodPut && (len(body) == 0 || !isJSON) {
		return ErrNoBody
	}
	// The common case in one pass over a valid body; the Decoder below
	// only words the error of an invalid one.
	if u, ok := v.(json.Unmarshaler); ok {
		// What json.Unmarshal would do for it, without its second scan.
		if (validSubset(body) || json.Valid(body)) && u.UnmarshalJSON(bytes.TrimSpace(body)) == nil {
			return nil
		}
	} else if json.Unmarshal(body, v) == nil {
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(v); err != nil {
		return &Error{Status: http.StatusUnprocessableEntity, Message: jsonErrorText("", err)}
	}
	// Decode succeeded, so what Unmarshal refused is what follows the value
	// (even a stray "}", which dec.More would not report).
	return &Error{Status: http.StatusUnprocessableEntity, Message: "trailing characters after the JSON value"}
}

// readBody reads the whole body, at most MaxBodyBytes, into a buffer sized
// by Content-Length when the client sent one.
func readBody(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	body := http.MaxBytesReader(w, r.Body, MaxBodyBytes)
	n := r.ContentLength
	if n < 0 || n > MaxBodyBytes {
		return io.ReadAll(body)
	}
	b := make([]byte, n, n+1)
	if _, err := io.ReadFull(body, b); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	return b, nil
}

// RequireJSON is ReadJSON for routes that need a body: no body is 400
// "missing request body".
func RequireJSON(w http.ResponseWriter, r *http.Request, v any) error {
	err := ReadJSON(w, r, v)
	if errors.Is(err, ErrNoBody) {
		return MissingBody()
	}
	return err
}

// UnprocessableJSON is the 422 for JSON that does not decode, in JSON's
// words: where (field, a dotted path, prefixes the decoder's; "" for the
// body) and what was expected. encoding/json's own text names Go types
// (identityd.typeBody, uint8), which mean nothing to a caller.
func UnprocessableJSON(field string, err error) *Error {
	return &Error{Status: http.StatusUnprocessableEntity, Message: jsonErrorText(field, err)}
}

func jsonErrorText(field string, err error) string {
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syn):
		return fmt.Sprintf("invalid JSON at offset %d: %v", syn.Offset, syn)
	case errors.As(err, &typ):
		if typ.Field != "" {
			field = strings.TrimPrefix(field+"."+typ.Field, ".")
		}
		if field != "" {
			return fmt.Sprintf("invalid type for field %q: expected %s, found JSON %s", field, jsonType(typ.Type), typ.Value)
		}
		return fmt.Sprintf("invalid type: expected %s, found JSON %s", jsonType(typ.Type), typ.Value)
	case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
		return "EOF while parsing a JSON value"
	}
	return "invalid JSON: " + err.Error()
}

// jsonType names the JSON a Go type decodes from.
func jsonType(t reflect.Type) string {
	if t == nil {
		return "a JSON value"
	}
	switch t.Kind() {
	case reflect.Pointer:
		return jsonType(t.Elem())
	case reflect.Struct, reflect.Map:
		return "an object"
	case reflect.Slice:
		if t.Elem().Kind() == reflect.Uint8 {
			return "a base64 string"
		}
		return "an array"
	case reflect.Array:
		return "an array"
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "a boolean"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		return "an integer"
	case reflect.Float32, reflect.Float64:
		return "a number"
	}
	return "a JSON value"
}
