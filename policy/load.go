package policy

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"slices"
	"strconv"
	"strings"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/util"
)

// Data files a policy directory may hold beside its *.rego files. Their
// content is an object merged at the root of data.
var dataFiles = []string{"data.json", "data.yaml", "data.yml"}

// bundle is one load of a policy source: parsed modules, data, revision.
type bundle struct {
	source   string // "policy dir /etc/warden/policy" or "embedded default policy"
	files    []string
	modules  map[string]*ast.Module
	data     ast.Object // from data.json / data.yaml; nil when absent
	revision string
}

// loadDir loads the policy directory dir; a missing or empty dir is an error.
func loadDir(dir string) (*bundle, error) {
	fi, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("policy dir %s: %w", dir, err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("policy dir %s: not a directory", dir)
	}
	return loadBundle(os.DirFS(dir), "policy dir "+dir)
}

// loadBundle reads the *.rego and data files directly in fsys (not in
// subdirectories; names starting with "." are skipped, as editors' lock and
// swap files are), parses them and digests them into a revision.
func loadBundle(fsys fs.FS, source string) (*bundle, error) {
	entries, err := fs.ReadDir(fsys, ".")
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", source, err)
	}
	b := &bundle{source: source, modules: map[string]*ast.Module{}}
	h := sha256.New()
	for _, ent := range entries { // fs.ReadDir sorts by name: the digest is stable
		name := ent.Name()
		isRego := strings.HasSuffix(name, ".rego")
		if strings.HasPrefix(name, ".") || ent.IsDir() || !(isRego || slices.Contains(dataFiles, name)) {
			continue
		}
		src, err := fs.ReadFile(fsys, name)
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", path.Join(source, name), err)
		}
		var n [8]byte
		binary.BigEndian.PutUint64(n[:], uint64(len(src)))
		h.Write([]byte(name))
		h.Write([]byte{0})
		h.Write(n[:])
		h.Write(src)
		b.files = append(b.files, name)
		if !isRego {
			if b.data != nil {
				return nil, fmt.Errorf("%s: both %s and another data file: keep one", source, name)
			}
			if b.data, err = parseData(src); err != nil {
				return nil, fmt.Errorf("%s: %s: %w", source, name, err)
			}
			continue
		}
		m, err := ast.ParseModuleWithOpts(name, string(src), ast.ParserOptions{RegoVersion: ast.RegoV1, ProcessAnnotation: true})
		if err != nil {
			return nil, fmt.Errorf("%s: parse %s: %w", source, name, err)
		}
		b.modules[name] = m
	}
	if len(b.modules) == 0 {
		return nil, fmt.Errorf("%s has no *.rego file (to start, copy the default policy there: policy/default/*.rego, also policy.DefaultPolicy())", source)
	}
	b.revision = "sha256:" + hex.EncodeToString(h.Sum(nil))[:16]
	return b, nil
}

// parseData parses a data file (JSON or YAML) that must hold an object.
func parseData(src []byte) (ast.Object, error) {
	var x any
	if err := util.Unmarshal(src, &x); err != nil {
		return nil, fmt.Errorf("parse data: %w", err)
	}
	if _, ok := x.(map[string]any); !ok {
		return nil, errors.New("parse data: the document must be an object")
	}
	v, err := ast.InterfaceToValue(x)
	if err != nil {
		return nil, fmt.Errorf("parse data: %w", err)
	}
	return v.(ast.Object), nil
}

var (
	termWarden     = ast.StringTerm("warden")
	termPrincipals = ast.StringTerm("principals")
	termPlainGlobs = ast.StringTerm("plain_globs")
)

// storeData is the root data document: the directory's data with
// data.warden.principals set from ps, and data.warden.plain_globs true when
// no keys/certs glob holds a character that glob.match reads differently
// from aziot's wildmatch (see plainGlob). The data files may not define
// either: they come from the configuration.
func storeData(dirData ast.Object, ps []Principal) (ast.Object, error) {
	pv, err := principalsValue(ps)
	if err != nil {
		return nil, err
	}
	root := ast.NewObject()
	warden := ast.NewObject()
	if dirData != nil {
		root = dirData.Copy()
		if w := root.Get(termWarden); w != nil {
			obj, ok := w.Value.(ast.Object)
			if !ok {
				return nil, errors.New("policy data: warden must be an object")
			}
			for _, k := range []*ast.Term{termPrincipals, termPlainGlobs} {
				if obj.Get(k) != nil {
					return nil, fmt.Errorf("policy data: warden.%s comes from the configuration ([[principal]]); do not set it in a data file", string(k.Value.(ast.String)))
				}
			}
			warden = obj.Copy()
		}
	}
	warden.Insert(termPrincipals, ast.NewTerm(pv))
	warden.Insert(termPlainGlobs, ast.InternedTerm(plainGlobs(ps)))
	root.Insert(termWarden, ast.NewTerm(warden))
	return root, nil
}

// principalsValue indexes ps by uid: {"<uid>": [principal, …]}, each array in
// configuration order, so that a decision looks up one uid and never
// iterates over all principals.
func principalsValue(ps []Principal) (ast.Object, error) {
	byUID := map[uint32][]*ast.Term{}
	var order []uint32
	for i := range ps {
		t, err := principalTerm(&ps[i])
		if err != nil {
			return nil, fmt.Errorf("principal %d (uid %d): %w", i, ps[i].UID, err)
		}
		if _, seen := byUID[ps[i].UID]; !seen {
			order = append(order, ps[i].UID)
		}
		byUID[ps[i].UID] = append(byUID[ps[i].UID], t)
	}
	obj := ast.NewObjectWithCapacity(len(order))
	for _, uid := range order {
		obj.Insert(ast.StringTerm(strconv.FormatUint(uint64(uid), 10)), ast.ArrayTerm(byUID[uid]...))
	}
	return obj, nil
}

// principalTerm renders p as in JSON: empty name and nil lists are absent
// (an idtype of [] is kept: in aziot it makes a host process).
func principalTerm(p *Principal) (*ast.Term, error) {
	items := [][2]*ast.Term{ast.Item(ast.StringTerm("uid"), ast.InternedTerm(p.UID))}
	if p.Name != "" {
		items = append(items, ast.Item(ast.StringTerm("name"), ast.StringTerm(p.Name)))
	}
	if p.IDType != nil {
		items = append(items, ast.Item(ast.StringTerm("idtype"), stringsTerm(p.IDType)))
	}
	if p.LocalID != nil {
		v, err := ast.InterfaceToValue(p.LocalID)
		if err != nil {
			return nil, fmt.Errorf("localid: %w", err)
		}
		items = append(items, ast.Item(ast.StringTerm("localid"), ast.NewTerm(v)))
	}
	if p.Keys != nil {
		items = append(items, ast.Item(ast.StringTerm("keys"), stringsTerm(p.Keys)))
	}
	if p.Certs != nil {
		items = append(items, ast.Item(ast.StringTerm("certs"), stringsTerm(p.Certs)))
	}
	return ast.ObjectTerm(items...), nil
}

// plainGlob reports whether glob.match with no delimiters reads g exactly as
// aziot's wildmatch does: g has none of the gobwas/glob metacharacters that
// wildmatch takes literally ([ ] { } \). "*" and "?" mean the same in both.
func plainGlob(g string) bool { return !strings.ContainsAny(g, `[]{}\`) }

func plainGlobs(ps []Principal) bool {
	for i := range ps {
		for _, g := range ps[i].Keys {
			if !plainGlob(g) {
				return false
			}
		}
		for _, g := range ps[i].Certs {
			if !plainGlob(g) {
				return false
			}
		}
	}
	return true
}

func stringsTerm(ss []string) *ast.Term {
	ts := make([]*ast.Term, len(ss))
	for i, s := range ss {
		ts[i] = ast.StringTerm(s)
	}
	return ast.ArrayTerm(ts...)
}
