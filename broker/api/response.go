package api

import (
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// responseWriter buffers an answer so that Server writes it whole, with
// its Content-Length, in one write. One per connection, reset per request.
type responseWriter struct {
	req    *http.Request
	header http.Header
	status int
	body   []byte
	out    []byte
	close  bool // the connection closes after this answer
	keys   []string
}

// maxKeptBuffer bounds the buffers a connection keeps between requests.
const maxKeptBuffer = 64 << 10

func (w *responseWriter) reset(req *http.Request) {
	w.req, w.status, w.close = req, 0, false
	if w.header == nil {
		w.header = make(http.Header, 4)
	} else {
		clear(w.header)
	}
	if cap(w.body) > maxKeptBuffer {
		w.body = nil
	}
	if cap(w.out) > maxKeptBuffer {
		w.out = nil
	}
	w.body = w.body[:0]
}

// Header returns the answer's header map.
func (w *responseWriter) Header() http.Header { return w.header }

// WriteHeader sets the status; a second call is ignored, as net/http's.
// Informational (1xx) statuses are not sent.
func (w *responseWriter) WriteHeader(code int) {
	if code < 100 || code > 999 {
		panic(fmt.Sprintf("invalid WriteHeader code %v", code))
	}
	if w.status != 0 || code < 200 {
		return
	}
	w.status = code
}

// Write appends to the body.
func (w *responseWriter) Write(p []byte) (int, error) {
	if err := w.startBody(); err != nil {
		return 0, err
	}
	w.body = append(w.body, p...)
	return len(p), nil
}

// WriteString appends to the body.
func (w *responseWriter) WriteString(s string) (int, error) {
	if err := w.startBody(); err != nil {
		return 0, err
	}
	w.body = append(w.body, s...)
	return len(s), nil
}

// startBody sends 200 unless a status was set, and refuses a body the
// status does not allow.
func (w *responseWriter) startBody() error {
	if w.status == 0 {
		w.WriteHeader(http.StatusOK)
	}
	if !bodyAllowed(w.status) {
		return http.ErrBodyNotAllowed
	}
	return nil
}

func bodyAllowed(status int) bool {
	return status >= 200 && status != http.StatusNoContent && status != http.StatusNotModified
}

// finish returns the whole answer: status line, headers, body.
func (w *responseWriter) finish() []byte {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	h := w.header
	hasBody := bodyAllowed(w.status)
	if hasBody && len(w.body) > 0 && h["Content-Type"] == nil {
		h["Content-Type"] = []string{http.DetectContentType(w.body)}
	}
	for _, v := range h["Connection"] {
		if strings.EqualFold(strings.TrimSpace(v), "close") {
			w.close = true
		}
	}
	if w.req.Close {
		w.close = true
	}
	b := append(w.out[:0], "HTTP/1.1 "...)
	b = append(b, statusLine(w.status)...)
	b = append(b, "\r\n"...)
	w.keys = w.keys[:0]
	for k := range h {
		switch k {
		case "Content-Length", "Date", "Connection", "Transfer-Encoding":
			continue // the server's own
		}
		w.keys = append(w.keys, k)
	}
	slices.Sort(w.keys)
	for _, k := range w.keys {
		for _, v := range h[k] {
			b = appendHeader(b, k, v)
		}
	}
	b = append(b, "Date: "...)
	b = append(b, httpDate()...)
	b = append(b, "\r\n"...)
	if hasBody {
		b = append(b, "Content-Length: "...)
		b = strconv.AppendInt(b, int64(len(w.body)), 10)
		b = append(b, "\r\n"...)
	}
	if w.close {
		b = append(b, "Connection: close\r\n"...)
	}
	b = append(b, "\r\n"...)
	if hasBody && w.req.Method != http.MethodHead {
		b = append(b, w.body...)
	}
	w.out = b
	return b
}

// appendHeader appends "k: v\r\n", with line breaks in v turned to spaces
// as net/http does, so a value cannot start a header of its own.
func appendHeader(b []byte, k, v string) []byte {
	b = append(b, k...)
	b = append(b, ": "...)
	for i := 0; i < len(v); i++ {
		c := v[i]
		if c == '\r' || c == '\n' {
			c = ' '
		}
		b = append(b, c)
	}
	return append(b, "\r\n"...)
}

var statusLines [600]string

func init() {
	for code := range statusLines {
		if t := http.StatusText(code); t != "" {
			statusLines[code] = strconv.Itoa(code) + " " + t
		}
	}
}

// statusLine is "200 OK"; a code without a text is "299 status code 299",
// as net/http writes it.
func statusLine(code int) string {
	if code < len(statusLines) && statusLines[code] != "" {
		return statusLines[code]
	}
	return strconv.Itoa(code) + " status code " + strconv.Itoa(code)
}

type formattedDate struct {
	unix int64
	text string
}

var lastDate atomic.Pointer[formattedDate]

// httpDate is the current time in http.TimeFormat, formatted once a second.
func httpDate() string {
	now := time.Now()
	if d := lastDate.Load(); d != nil && d.unix == now.Unix() {
		return d.text
	}
	d := &formattedDate{unix: now.Unix(), text: now.UTC().Format(http.TimeFormat)}
	lastDate.Store(d)
	return d.text
}
