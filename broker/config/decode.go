package config

import (
	"encoding"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"time"
)

// The decoder maps a parsed TOML document (the map[string]any that
// BurntSushi/toml produces) onto the Config structs. It is strict where the
// toml package is lenient: keys match the struct tags exactly (not
// case-insensitively), an unknown key is an error, and every error carries the
// full key path including array indexes.
//
// Struct tags: `toml:"name[,omitempty][,required][,flatten]"` and
// `alias:"other_name"`.
//   - required: the key must be present (checked on the merged document only,
//     because a table may be completed by a later drop-in);
//   - flatten: the keys of this table-valued field are also accepted directly
//     in the enclosing table; they are moved into the sub-table;
//   - alias: a second accepted name; the key is renamed to the canonical name.
//
// Renames happen in the parsed map itself, so that drop-ins merge on
// canonical names.

// tomlDecoder is implemented by types that accept several TOML shapes.
type tomlDecoder interface {
	decodeTOML(d *decoder, p keyPath, data any)
}

// defaulter is implemented by types with non-zero defaults; the decoder calls
// setDefaults on every value it allocates before filling it.
type defaulter interface {
	setDefaults()
}

type decoder struct {
	reporter
	// final is set for the merged document: required keys are checked.
	final bool
}

// field is one TOML key of a struct.
type field struct {
	name, alias string
	index       []int
	required    bool
	omitempty   bool
	flatten     bool
}

// fieldsOf lists the TOML keys of struct type t; anonymous embedded structs
// contribute their fields as if declared in t.
func fieldsOf(t reflect.Type) []field {
	var out []field
	for i := 0; i < t.NumField(); i++ {
		sf := t.Field(i)
		tag := sf.Tag.Get("toml")
		if sf.Anonymous && tag == "" {
			for _, f := range fieldsOf(sf.Type) {
				f.index = append([]int{i}, f.index...)
				out = append(out, f)
			}
			continue
		}
		if !sf.IsExported() || tag == "-" || tag == "" {
			continue
		}
		parts := strings.Split(tag, ",")
		f := field{name: parts[0], alias: sf.Tag.Get("alias"), index: []int{i}}
		for _, opt := range parts[1:] {
			switch opt {
			case "required":
				f.required = true
			case "omitempty":
				f.omitempty = true
			case "flatten":
				f.flatten = true
			}
		}
		out = append(out, f)
	}
	return out
}

func setDefaults(ptr reflect.Value) {
	if d, ok := ptr.Interface().(defaulter); ok {
		d.setDefaults()
	}
}

// sortedKeys returns the keys of m in order, so that errors are reported
// deterministically.
func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// value decodes data into rv, which must be settable.
func (d *decoder) value(p keyPath, data any, rv reflect.Value) {
	if rv.Kind() == reflect.Pointer {
		if rv.IsNil() {
			nv := reflect.New(rv.Type().Elem())
			setDefaults(nv)
			rv.Set(nv)
		}
		rv = rv.Elem()
	}
	switch v := rv.Addr().Interface().(type) {
	case tomlDecoder:
		v.decodeTOML(d, p, data)
		return
	case encoding.TextUnmarshaler:
		s, ok := data.(string)
		if !ok {
			d.typeErr(p, "a string", data)
			return
		}
		if err := v.UnmarshalText([]byte(s)); err != nil {
			d.add(p, err)
		}
		return
	}
	switch rv.Kind() {
	case reflect.Struct:
		d.table(p, data, rv)
	case reflect.Map:
		d.mapping(p, data, rv)
	case reflect.Slice:
		d.array(p, data, rv)
	case reflect.String:
		if s, ok := data.(string); ok {
			rv.SetString(s)
		} else {
			d.typeErr(p, "a string", data)
		}
	case reflect.Bool:
		if b, ok := data.(bool); ok {
			rv.SetBool(b)
		} else {
			d.typeErr(p, "a boolean", data)
		}
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		n, ok := data.(int64)
		switch {
		case !ok:
			d.typeErr(p, "an integer", data)
		case rv.OverflowInt(n):
			d.addf(p, "%d is out of range", n)
		default:
			rv.SetInt(n)
		}
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		n, ok := data.(int64)
		switch {
		case !ok:
			d.typeErr(p, "an integer", data)
		case n < 0 || rv.OverflowUint(uint64(n)):
			d.addf(p, "%d is out of range", n)
		default:
			rv.SetUint(uint64(n))
		}
	default:
		d.addf(p, "internal error: cannot decode into %s", rv.Type())
	}
}

// table decodes a TOML table into the struct rv.
func (d *decoder) table(p keyPath, data any, rv reflect.Value) {
	m, ok := data.(map[string]any)
	if !ok {
		d.typeErr(p, "a table", data)
		return
	}
	fields := fieldsOf(rv.Type())
	byName := make(map[string]*field, len(fields))
	for i := range fields {
		byName[fields[i].name] = &fields[i]
	}
	type move struct{ from, to, sub string }
	var moves []move
	for _, k := range sortedKeys(m) {
		if f := byName[k]; f != nil {
			d.value(p.k(k), m[k], rv.FieldByIndex(f.index))
			continue
		}
		if f := findAlias(fields, k); f != nil {
			if _, dup := m[f.name]; dup {
				d.addf(p.k(k), "%s and its alias %s are both set", f.name, k)
				continue
			}
			d.value(p.k(k), m[k], rv.FieldByIndex(f.index))
			moves = append(moves, move{from: k, to: f.name})
			continue
		}
		if f, sub := findFlattened(rv, fields, k); f != nil {
			if t, ok := m[f.name].(map[string]any); ok {
				if _, dup := t[sub.name]; dup {
					d.addf(p.k(k), "set both here and as %s", p.k(f.name).k(sub.name))
					continue
				}
			}
			d.value(p.k(k), m[k], rv.FieldByIndex(f.index).FieldByIndex(sub.index))
			moves = append(moves, move{from: k, to: f.name, sub: sub.name})
			continue
		}
		msg := "unknown key"
		if s := suggest(k, fields); s != "" {
			msg += fmt.Sprintf(" (did you mean %s?)", s)
		}
		d.addf(p.k(k), "%s", msg)
	}
	for _, mv := range moves {
		if mv.sub == "" {
			m[mv.to] = m[mv.from]
		} else {
			t, ok := m[mv.to].(map[string]any)
			if !ok {
				if _, present := m[mv.to]; present {
					continue // a type error has been reported
				}
				t = map[string]any{}
				m[mv.to] = t
			}
			t[mv.sub] = m[mv.from]
		}
		delete(m, mv.from)
	}
	if d.final {
		for _, f := range fields {
			if _, ok := m[f.name]; f.required && !ok {
				d.addf(p.k(f.name), "required key is missing")
			}
		}
	}
}

func findAlias(fields []field, k string) *field {
	for i := range fields {
		if fields[i].alias == k {
			return &fields[i]
		}
	}
	return nil
}

// findFlattened finds the flatten field of rv whose struct has key k.
func findFlattened(rv reflect.Value, fields []field, k string) (*field, *field) {
	for i := range fields {
		if !fields[i].flatten {
			continue
		}
		sub := fieldsOf(rv.FieldByIndex(fields[i].index).Type())
		for j := range sub {
			if sub[j].name == k {
				return &fields[i], &sub[j]
			}
		}
	}
	return nil, nil
}

// mapping decodes a TOML table into the map rv (string keys).
func (d *decoder) mapping(p keyPath, data any, rv reflect.Value) {
	m, ok := data.(map[string]any)
	if !ok {
		d.typeErr(p, "a table", data)
		return
	}
	if rv.IsNil() {
		rv.Set(reflect.MakeMapWithSize(rv.Type(), len(m)))
	}
	for _, k := range sortedKeys(m) {
		ev := reflect.New(rv.Type().Elem())
		setDefaults(ev)
		d.value(p.k(k), m[k], ev.Elem())
		rv.SetMapIndex(reflect.ValueOf(k).Convert(rv.Type().Key()), ev.Elem())
	}
}

// array decodes a TOML array into the slice rv.
func (d *decoder) array(p keyPath, data any, rv reflect.Value) {
	av := reflect.ValueOf(data)
	if data == nil || av.Kind() != reflect.Slice {
		d.typeErr(p, "an array", data)
		return
	}
	s := reflect.MakeSlice(rv.Type(), av.Len(), av.Len())
	for i := 0; i < av.Len(); i++ {
		setDefaults(s.Index(i).Addr())
		d.value(p.i(i), av.Index(i).Interface(), s.Index(i))
	}
	rv.Set(s)
}

func (d *decoder) typeErr(p keyPath, want string, data any) {
	d.addf(p, "wrong type: want %s, found %s", want, tomlType(data))
}

// tomlType names the TOML type of a parsed value.
func tomlType(v any) string {
	switch v.(type) {
	case string:
		return "a string"
	case int64:
		return "an integer"
	case float64:
		return "a float"
	case bool:
		return "a boolean"
	case time.Time:
		return "a datetime"
	case map[string]any:
		return "a table"
	case []map[string]any, []any:
		return "an array"
	}
	return fmt.Sprintf("%T", v)
}

// suggest returns the key of fields closest to k, if it is close enough to be
// a likely typo.
func suggest(k string, fields []field) string {
	best, bestDist := "", 3
	for _, f := range fields {
		for _, name := range []string{f.name, f.alias} {
			if name == "" {
				continue
			}
			if dist := editDistance(k, name); dist < bestDist {
				best, bestDist = name, dist
			}
		}
	}
	return best
}

// editDistance is the Levenshtein distance of a and b, in bytes.
func editDistance(a, b string) int {
	if len(a) > 64 || len(b) > 64 {
		return len(a) + len(b)
	}
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
