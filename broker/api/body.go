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
	if ct := r.Header.Get("Content-Type"); ct != "" {
		mt, _, err := mime.ParseMediaType(ct)
		isJSON = err == nil && mt == "application/json"
	}
	if r.Method == http.MethodPut && !isJSON {
		return &Error{Status: http.StatusUnsupportedMediaType, Message: "request body must be application/json"}
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBodyBytes))
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
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(v); err != nil {
		return &Error{Status: http.StatusUnprocessableEntity, Message: jsonErrorText(err)}
	}
	if dec.More() {
		return &Error{Status: http.StatusUnprocessableEntity, Message: "trailing characters after the JSON value"}
	}
	return nil
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

func jsonErrorText(err error) string {
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syn):
		return fmt.Sprintf("invalid JSON at offset %d: %v", syn.Offset, syn)
	case errors.As(err, &typ):
		if typ.Field != "" {
			return fmt.Sprintf("invalid type for field %q: expected %s, found JSON %s", typ.Field, typ.Type, typ.Value)
		}
		return fmt.Sprintf("invalid type: expected %s, found JSON %s", typ.Type, typ.Value)
	case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
		return "EOF while parsing a JSON value"
	}
	return "invalid JSON: " + err.Error()
}
