package config

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// DropInDir returns the drop-in directory of the configuration file base:
// <dir of base>/config.d.
func DropInDir(base string) string {
	return filepath.Join(filepath.Dir(base), "config.d")
}

// DropIns lists the drop-ins of the configuration file base: every regular
// file (or symlink to one) whose name ends in ".toml" directly inside
// DropInDir(base), in lexicographic order. Other files and subdirectories
// are ignored; a missing directory has no drop-ins.
func DropIns(base string) ([]string, error) {
	dir := DropInDir(base)
	entries, err := os.ReadDir(dir)
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("config: read drop-in directory: %w", err)
	}
	var files []string
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), ".toml") {
			continue
		}
		path := filepath.Join(dir, e.Name())
		fi, err := os.Stat(path)
		if err != nil {
			return nil, fmt.Errorf("config: drop-in: %w", err)
		}
		if fi.Mode().IsRegular() {
			files = append(files, path)
		}
	}
	slices.Sort(files) // os.ReadDir sorts already; keep the rule explicit
	return files, nil
}

// merge applies src, parsed from file, onto dst with aziot's rules: tables
// merge recursively, arrays concatenate, any other value replaces the old
// one. og records where each merged value came from, for error messages.
func merge(dst, src map[string]any, p keyPath, file string, og origins) {
	for _, k := range sortedKeys(src) {
		kp := p.k(k)
		sv := src[k]
		dv, existed := dst[k]
		if existed {
			if dm, ok := dv.(map[string]any); ok {
				if sm, ok := sv.(map[string]any); ok {
					og.addFile(kp, file)
					merge(dm, sm, kp, file, og)
					continue
				}
			}
			if da, ok := asArray(dv); ok {
				if sa, ok := asArray(sv); ok {
					dst[k] = append(da, sa...)
					og.addFile(kp, file)
					for i := range sa {
						og.set(kp.i(len(da)+i), file, kp.i(i))
					}
					continue
				}
			}
		}
		dst[k] = sv
		if existed {
			og.forget(kp)
		}
		og.set(kp, file, nil)
		if sa, ok := asArray(sv); ok {
			for i := range sa {
				og.set(kp.i(i), file, nil)
			}
		}
	}
}

// asArray returns a parsed TOML array as []any.
func asArray(v any) ([]any, bool) {
	switch a := v.(type) {
	case []any:
		return slices.Clip(a), true
	case []map[string]any:
		out := make([]any, len(a))
		for i, t := range a {
			out[i] = t
		}
		return out, true
	}
	return nil, false
}
