package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"strings"
)

// Error is an error with the HTTP status and the message aziot sends for it.
// Handlers return it; WriteError renders it as {"message": …}.
type Error struct {
	Status  int
	Message string
	// Err is the cause, rendered after Message as aziot's cause chain when
	// Chain is set, and otherwise only logged.
	Err   error
	Chain bool
}

func (e *Error) Error() string {
	if e.Err != nil {
		return e.Message + ": " + e.Err.Error()
	}
	return e.Message
}

func (e *Error) Unwrap() error { return e.Err }

// Body returns the message exactly as sent to the client: Message, then,
// when Chain is set, each cause after "\ncaused by: ".
func (e *Error) Body() string {
	if !e.Chain || e.Err == nil {
		return e.Message
	}
	var b strings.Builder
	b.WriteString(e.Message)
	for c := e.Err; c != nil; c = errors.Unwrap(c) {
		b.WriteString("\ncaused by: ")
		b.WriteString(causeText(c))
	}
	return b.String()
}

// causeText is c's own message without the text of the errors it wraps, so
// that a chain built with fmt.Errorf("…: %w") prints each link once.
func causeText(c error) string {
	s := c.Error()
	if inner := errors.Unwrap(c); inner != nil {
		s = strings.TrimSuffix(s, inner.Error())
		s = strings.TrimSuffix(s, ": ")
	}
	return s
}

// Errorf-style constructors for the framework's errors, worded as aziot's.

// BadRequest is 400 with msg.
func BadRequest(msg string) *Error { return &Error{Status: http.StatusBadRequest, Message: msg} }

// NotFound is aziot's 404 for an unknown route.
func NotFound() *Error { return &Error{Status: http.StatusNotFound, Message: "not found"} }

// MethodNotAllowed is aziot's answer to a known path with another method (400, not 405).
func MethodNotAllowed() *Error { return BadRequest("method not allowed") }

// MissingBody is 400 for a route that needs a body and got none.
func MissingBody() *Error { return BadRequest("missing request body") }

// InvalidParameter is 400 `parameter "<name>" has an invalid value` with
// cause's chain appended; an empty name gives `a parameter has an invalid value`.
func InvalidParameter(name string, cause error) *Error {
	msg := "a parameter has an invalid value"
	if name != "" {
		msg = `parameter "` + name + `" has an invalid value`
	}
	return &Error{Status: http.StatusBadRequest, Message: msg, Err: cause, Chain: true}
}

// Unauthorized is 401 with msg (each service has its own wording).
func Unauthorized(msg string) *Error { return &Error{Status: http.StatusUnauthorized, Message: msg} }

// Internal is 500 "internal error"; cause is logged, never sent.
func Internal(cause error) *Error {
	return &Error{Status: http.StatusInternalServerError, Message: "internal error", Err: cause}
}

type errorBody struct {
	Message string `json:"message"`
}

// WriteError writes err in aziot's shape. An error that is not an *Error is
// an internal error: logged with its detail, sent as "internal error".
func WriteError(w http.ResponseWriter, r *http.Request, logger *slog.Logger, err error) {
	var e *Error
	if !errors.As(err, &e) {
		e = Internal(err)
	}
	if e.Status >= 500 && logger != nil {
		logger.Error("request failed", "method", r.Method, "path", r.URL.Path, "err", err)
	}
	WriteJSON(w, e.Status, errorBody{Message: e.Body()})
}

// WriteJSON writes v as a JSON body with status.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	b, err := marshal(v)
	if err != nil {
		status, b = http.StatusInternalServerError, []byte(`{"message":"internal error"}`)
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	w.WriteHeader(status)
	w.Write(b)
}

// NoContent writes 204 with an empty body.
func NoContent(w http.ResponseWriter) { w.WriteHeader(http.StatusNoContent) }

// marshal is json.Marshal as serde_json writes: <, > and & as they are,
// not as \u003c, \u003e and \u0026 (a key handle holds "&sig=", a PEM or
// a message may hold the others), and no newline after the value.
func marshal(v any) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(b.Bytes(), []byte("\n")), nil
}
