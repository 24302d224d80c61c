package config

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Error is one problem found in the configuration: the file it is in, the key
// it concerns and what is wrong. Load and LoadFiles return every problem they
// find, joined with errors.Join; use errors.As to get the first *Error.
type Error struct {
	// File is the file the key is in. When a merged table was built from
	// several files it lists them, separated by ", ". It is empty when the
	// problem cannot be attributed to a file.
	File string
	// Line is the line of a TOML syntax error, or 0.
	Line int
	// Key is the dotted path of the key, e.g. "warden.tokens.max_ttl" or
	// "principal[2].uid" (array indexes count from 0 within File).
	Key string
	// Err says what is wrong.
	Err error
}

// Error formats the problem as "file[:line]: key: what".
func (e *Error) Error() string {
	var b strings.Builder
	if e.File != "" {
		b.WriteString(e.File)
		if e.Line > 0 {
			b.WriteString(":" + strconv.Itoa(e.Line))
		}
		b.WriteString(": ")
	}
	if e.Key != "" {
		b.WriteString(e.Key + ": ")
	}
	b.WriteString(e.Err.Error())
	return b.String()
}

// Unwrap returns the underlying error.
func (e *Error) Unwrap() error { return e.Err }

// maxErrors bounds how many problems one load reports.
const maxErrors = 50

// seg is one step of a key path: a table key, or an array index when idx >= 0.
type seg struct {
	key string
	idx int
}

// keyPath is the location of a value in the TOML document.
type keyPath []seg

// k returns the path of key name inside p.
func (p keyPath) k(name string) keyPath {
	return append(p[:len(p):len(p)], seg{key: name, idx: -1})
}

// i returns the path of element n of the array at p.
func (p keyPath) i(n int) keyPath {
	return append(p[:len(p):len(p)], seg{idx: n})
}

// String renders p as a TOML dotted key with [n] for array elements.
func (p keyPath) String() string {
	var b strings.Builder
	for n, s := range p {
		if s.idx >= 0 {
			b.WriteString("[" + strconv.Itoa(s.idx) + "]")
			continue
		}
		if n > 0 {
			b.WriteByte('.')
		}
		b.WriteString(quoteKey(s.key))
	}
	return b.String()
}

// quoteKey quotes a key the way TOML needs it when it is not a bare key.
func quoteKey(k string) string {
	if k == "" {
		return `""`
	}
	for _, r := range k {
		if !(r >= 'A' && r <= 'Z' || r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '_' || r == '-') {
			return strconv.Quote(k)
		}
	}
	return k
}

// origin records which files a merged value came from, and for array elements
// the element's path within its own file.
type origin struct {
	files []string
	local string
}

// origins maps keyPath.String() of merged values to where they came from.
type origins map[string]*origin

// addFile records that file contributed the value at p.
func (o origins) addFile(p keyPath, file string) {
	key := p.String()
	og := o[key]
	if og == nil {
		og = &origin{}
		o[key] = og
	}
	for _, f := range og.files {
		if f == file {
			return
		}
	}
	og.files = append(og.files, file)
}

// set records that the value at p now comes only from file, at local.
func (o origins) set(p keyPath, file string, local keyPath) {
	o[p.String()] = &origin{files: []string{file}, local: local.String()}
}

// forget drops what was recorded for the value at p and inside it.
func (o origins) forget(p keyPath) {
	key := p.String()
	for k := range o {
		if k == key || strings.HasPrefix(k, key+".") || strings.HasPrefix(k, key+"[") {
			delete(o, k)
		}
	}
}

// locate returns the files of the innermost recorded value enclosing p and
// p's key as written in that file.
func (o origins) locate(p keyPath) (file, key string) {
	full := p.String()
	for n := len(p); n > 0; n-- {
		prefix := p[:n].String()
		og := o[prefix]
		if og == nil {
			continue
		}
		key = full
		if og.local != "" {
			key = og.local + strings.TrimPrefix(full, prefix)
		}
		return strings.Join(og.files, ", "), key
	}
	return "", full
}

// reporter collects errors for one pass. With file set every error is in that
// file; otherwise errors are attributed through the merge origins.
type reporter struct {
	file    string
	origins origins
	errs    []error
}

// addf records a problem with the value at p.
func (r *reporter) addf(p keyPath, format string, args ...any) {
	r.add(p, fmt.Errorf(format, args...))
}

// add records err for the value at p.
func (r *reporter) add(p keyPath, err error) {
	if len(r.errs) >= maxErrors {
		return
	}
	e := &Error{File: r.file, Key: p.String(), Err: err}
	if r.file == "" && r.origins != nil {
		e.File, e.Key = r.origins.locate(p)
	}
	r.errs = append(r.errs, e)
}

// err returns the collected errors joined, or nil.
func (r *reporter) err() error {
	return errors.Join(r.errs...)
}
