package config

import (
	"encoding"
	"fmt"
	"io"
	"reflect"
	"regexp"

	"github.com/BurntSushi/toml"
)

// tomlEncoder is implemented by types that take several TOML shapes; it
// returns the value to encode in their place (nil to omit the key).
type tomlEncoder interface {
	encodeTOML() any
}

// Encode writes the configuration as TOML, defaults included. Loading the
// output gives the same Config. It includes secrets (keys, passwords, PINs);
// use EncodeRedacted to show a configuration to a person.
func (c *Config) Encode(w io.Writer) error {
	m, err := c.toMap()
	if err != nil {
		return err
	}
	return writeTOML(w, m)
}

// EncodeRedacted is Encode with secret values replaced by "<redacted>":
// passwords, symmetric key values, connection strings, TPM hierarchy
// passwords and PKCS#11 pin-value attributes. The output is for display; it
// does not load back as the same configuration.
func (c *Config) EncodeRedacted(w io.Writer) error {
	m, err := c.toMap()
	if err != nil {
		return err
	}
	redact(m)
	return writeTOML(w, m)
}

func (c *Config) toMap() (map[string]any, error) {
	v, err := encodeValue(reflect.ValueOf(c))
	if err != nil {
		return nil, fmt.Errorf("config: encode: %w", err)
	}
	m, _ := v.(map[string]any)
	if m == nil {
		m = map[string]any{}
	}
	return m, nil
}

func writeTOML(w io.Writer, m map[string]any) error {
	enc := toml.NewEncoder(w)
	enc.Indent = ""
	if err := enc.Encode(m); err != nil {
		return fmt.Errorf("config: encode: %w", err)
	}
	return nil
}

// encodeValue turns rv into plain TOML values (map[string]any, []any,
// string, int64, bool); nil means "omit". Nil pointers, maps and slices are
// omitted; empty non-nil maps and slices are kept, because for some keys
// (idtype) present-but-empty differs from absent.
func encodeValue(rv reflect.Value) (any, error) {
	if !rv.IsValid() {
		return nil, nil
	}
	switch rv.Kind() {
	case reflect.Pointer, reflect.Interface, reflect.Map, reflect.Slice:
		if rv.IsNil() {
			return nil, nil
		}
	}
	switch v := rv.Interface().(type) {
	case tomlEncoder:
		return encodeValue(reflect.ValueOf(v.encodeTOML()))
	case encoding.TextMarshaler:
		b, err := v.MarshalText()
		return string(b), err
	}
	switch rv.Kind() {
	case reflect.Pointer, reflect.Interface:
		return encodeValue(rv.Elem())
	case reflect.Struct:
		return encodeStruct(rv)
	case reflect.Map:
		m := make(map[string]any, rv.Len())
		for _, k := range rv.MapKeys() {
			ev, err := encodeValue(rv.MapIndex(k))
			if err != nil {
				return nil, err
			}
			if ev != nil {
				m[k.String()] = ev
			}
		}
		return m, nil
	case reflect.Slice:
		s := make([]any, 0, rv.Len())
		for i := 0; i < rv.Len(); i++ {
			ev, err := encodeValue(rv.Index(i))
			if err != nil {
				return nil, err
			}
			if ev != nil {
				s = append(s, ev)
			}
		}
		return s, nil
	case reflect.String:
		return rv.String(), nil
	case reflect.Bool:
		return rv.Bool(), nil
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return rv.Int(), nil
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32:
		return int64(rv.Uint()), nil
	}
	return nil, fmt.Errorf("cannot encode %s", rv.Type())
}

func encodeStruct(rv reflect.Value) (any, error) {
	m := map[string]any{}
	for _, f := range fieldsOf(rv.Type()) {
		fv := rv.FieldByIndex(f.index)
		if f.omitempty && isEmptyScalar(fv) {
			continue
		}
		ev, err := encodeValue(fv)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", f.name, err)
		}
		if sub, ok := ev.(map[string]any); ok && f.omitempty && fv.Kind() == reflect.Struct && len(sub) == 0 {
			continue
		}
		if ev != nil {
			m[f.name] = ev
		}
	}
	return m, nil
}

// isEmptyScalar reports a zero string, number, bool or text value (such as
// a zero Duration).
func isEmptyScalar(v reflect.Value) bool {
	switch v.Kind() {
	case reflect.String, reflect.Bool, reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return v.IsZero()
	case reflect.Struct:
		_, text := v.Interface().(encoding.TextMarshaler)
		return text && v.IsZero()
	}
	return false
}

// secretKeys are the keys whose values EncodeRedacted hides.
var secretKeys = map[string]bool{
	"password": true, "connection_string": true, "value": true, "endorsement": true, "owner": true,
}

var pinValue = regexp.MustCompile(`(pin-value=)[^&;]*`)

// redact replaces secret values in an encoded configuration.
func redact(v any) {
	switch t := v.(type) {
	case map[string]any:
		for k, e := range t {
			if s, ok := e.(string); ok {
				if secretKeys[k] {
					t[k] = "<redacted>"
				} else {
					t[k] = pinValue.ReplaceAllString(s, "${1}<redacted>")
				}
				continue
			}
			redact(e)
		}
	case []any:
		for i, e := range t {
			if s, ok := e.(string); ok {
				t[i] = pinValue.ReplaceAllString(s, "${1}<redacted>")
			} else {
				redact(e)
			}
		}
	}
}
