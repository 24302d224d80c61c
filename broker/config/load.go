package config

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"

	"github.com/BurntSushi/toml"
)

// Load reads the configuration file path and its drop-ins (DropIns), merges
// them, applies the defaults and validates the result. A missing base file
// is an error.
func Load(path string) (*Config, error) {
	dropins, err := DropIns(path)
	if err != nil {
		return nil, err
	}
	return LoadFiles(path, dropins)
}

// LoadFiles is Load with an explicit list of drop-ins, applied in the order
// given. Every file is first checked on its own (syntax, unknown keys,
// types), so that errors name the file they are in; then the files are
// merged and the result is validated. All problems found in the files are
// returned, joined; each is an *Error. A file that cannot be read is an
// error wrapping the os error.
func LoadFiles(base string, dropins []string) (*Config, error) {
	var srcs []source
	for _, file := range append([]string{base}, dropins...) {
		b, err := os.ReadFile(file)
		if err != nil {
			return nil, fmt.Errorf("config: %w", err)
		}
		srcs = append(srcs, source{file, b})
	}
	return load(srcs)
}

// source is the name and content of one configuration file.
type source struct {
	name string
	data []byte
}

// load checks each source on its own, merges them in order, then builds and
// validates the Config.
func load(srcs []source) (*Config, error) {
	merged := map[string]any{}
	og := origins{}
	var errs []error
	for _, src := range srcs {
		m, err := parse(src)
		if err == nil {
			err = checkFile(src.name, m)
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		merge(merged, m, nil, src.name, og)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return build(merged, og)
}

// parse parses one TOML file.
func parse(src source) (map[string]any, error) {
	var m map[string]any
	if _, err := toml.Decode(string(src.data), &m); err != nil {
		var pe toml.ParseError
		if errors.As(err, &pe) {
			// Position.Line counts an error at a newline on the next line;
			// the byte offset does not.
			line := 1 + bytes.Count(src.data[:min(max(pe.Position.Start, 0), len(src.data))], []byte("\n"))
			return nil, &Error{File: src.name, Line: line, Key: pe.LastKey, Err: syntaxError{pe, secretKey(pe.LastKey)}}
		}
		return nil, &Error{File: src.name, Err: err}
	}
	if m == nil {
		m = map[string]any{}
	}
	return m, nil
}

// syntaxError is a TOML syntax error; it unwraps to the toml.ParseError.
// In a secret's value (secret) the parser's message, which quotes what it
// found (an unquoted password), is not shown.
type syntaxError struct {
	pe     toml.ParseError
	secret bool
}

func (e syntaxError) Error() string {
	if e.secret {
		return "TOML syntax error in a secret's value (not shown; is it quoted?)"
	}
	return "TOML syntax error: " + e.pe.Message
}

func (e syntaxError) Unwrap() error { return e.pe }

// secretKey reports whether the dotted key k is, or is inside, a key whose
// value EncodeRedacted hides.
func secretKey(k string) bool {
	for _, part := range strings.Split(k, ".") {
		if secretKeys[part] {
			return true
		}
	}
	return false
}

// checkFile decodes one file's document on its own, to report unknown keys
// and wrong types with the file's name. It also puts m in canonical form
// (aliases renamed, flattened keys moved into their table) for the merge.
func checkFile(file string, m map[string]any) error {
	var scratch Config
	scratch.setDefaults()
	d := decoder{reporter: reporter{file: file}}
	d.value(nil, m, reflect.ValueOf(&scratch).Elem())
	return d.err()
}

// build decodes the merged document, completes the defaults and validates.
func build(merged map[string]any, og origins) (*Config, error) {
	c := new(Config)
	c.setDefaults()
	d := decoder{reporter: reporter{origins: og}, final: true}
	d.value(nil, merged, reflect.ValueOf(c).Elem())
	if err := d.err(); err != nil {
		return nil, err
	}
	if c.Warden.BrokerSocket == "" {
		c.Warden.BrokerSocket = filepath.Join(c.Warden.SocketDir, "broker.sock")
	}
	if err := c.validate(og); err != nil {
		return nil, err
	}
	return c, nil
}
