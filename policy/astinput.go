package policy

import (
	"fmt"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
)

// Keys of the input document, built once and shared (terms are immutable).
var (
	kCaller       = ast.StringTerm("caller")
	kToken        = ast.StringTerm("token")
	kAction       = ast.StringTerm("action")
	kModule       = ast.StringTerm("module")
	kTime         = ast.StringTerm("time")
	kUID          = ast.StringTerm("uid")
	kGID          = ast.StringTerm("gid")
	kPID          = ast.StringTerm("pid")
	kExe          = ast.StringTerm("exe")
	kPrincipal    = ast.StringTerm("principal")
	kID           = ast.StringTerm("id")
	kSub          = ast.StringTerm("sub")
	kExp          = ast.StringTerm("exp")
	kCapabilities = ast.StringTerm("capabilities")
	kParent       = ast.StringTerm("parent")
	kResource     = ast.StringTerm("resource")
	kOps          = ast.StringTerm("ops")
	kService      = ast.StringTerm("service")
	kOperation    = ast.StringTerm("operation")
	kAPIVersion   = ast.StringTerm("api_version")
	kDetails      = ast.StringTerm("details")
	kName         = ast.StringTerm("name")
	kDigest       = ast.StringTerm("digest")
	nullTerm      = ast.NullTerm()
)

// inputValue renders in as the policy's input document directly as an AST
// value: the same document encoding/json would produce from Input, without
// the map[string]any round trip (EvalParsedInput is about 2x cheaper than
// EvalInput, go-facts §3). Two deliberate differences: a nil details map is
// rendered {} (so policies can index it without a null check) and time is
// RFC 3339 in UTC.
func inputValue(in *Input) (ast.Value, error) {
	details, err := detailsTerm(in.Action.Details)
	if err != nil {
		return nil, err
	}
	return ast.NewObject(
		ast.Item(kCaller, ast.ObjectTerm(
			ast.Item(kUID, ast.InternedTerm(in.Caller.UID)),
			ast.Item(kGID, ast.InternedTerm(in.Caller.GID)),
			ast.Item(kPID, ast.InternedTerm(in.Caller.PID)),
			ast.Item(kExe, ast.InternedTerm(in.Caller.Exe)),
			ast.Item(kPrincipal, ast.InternedTerm(in.Caller.Principal)),
		)),
		ast.Item(kToken, tokenTerm(in.Token)),
		ast.Item(kAction, ast.ObjectTerm(
			ast.Item(kService, ast.InternedTerm(in.Action.Service)),
			ast.Item(kOperation, ast.InternedTerm(in.Action.Operation)),
			ast.Item(kResource, ast.InternedTerm(in.Action.Resource)),
			ast.Item(kAPIVersion, ast.InternedTerm(in.Action.APIVersion)),
			ast.Item(kDetails, details),
		)),
		ast.Item(kModule, moduleTerm(in.Module)),
		ast.Item(kTime, ast.StringTerm(in.Time.UTC().Format(time.RFC3339Nano))),
	), nil
}

func tokenTerm(t *Token) *ast.Term {
	if t == nil {
		return nullTerm
	}
	caps := make([]*ast.Term, len(t.Capabilities))
	for i, c := range t.Capabilities {
		ops := make([]*ast.Term, len(c.Ops))
		for j, op := range c.Ops {
			ops[j] = ast.InternedTerm(op)
		}
		caps[i] = ast.ObjectTerm(
			ast.Item(kResource, ast.InternedTerm(c.Resource)),
			ast.Item(kOps, ast.ArrayTerm(ops...)),
		)
	}
	parent := nullTerm
	if t.Parent != nil {
		parent = ast.StringTerm(*t.Parent)
	}
	return ast.ObjectTerm(
		ast.Item(kID, ast.StringTerm(t.ID)),
		ast.Item(kSub, ast.StringTerm(t.Subject)),
		ast.Item(kExp, ast.InternedTerm(t.Expiry)),
		ast.Item(kCapabilities, ast.ArrayTerm(caps...)),
		ast.Item(kParent, parent),
	)
}

func moduleTerm(m *Module) *ast.Term {
	if m == nil {
		return nullTerm
	}
	return ast.ObjectTerm(
		ast.Item(kName, ast.StringTerm(m.Name)),
		ast.Item(kDigest, ast.StringTerm(m.Digest)),
	)
}

// detailsTerm converts the free-form details. Values that are not plain JSON
// types (structs, typed slices) go through a JSON round trip inside
// InterfaceToValue; one that cannot be converted at all is an error.
func detailsTerm(d map[string]any) (*ast.Term, error) {
	if len(d) == 0 {
		return ast.InternedEmptyObject, nil
	}
	items := make([][2]*ast.Term, 0, len(d))
	for k, v := range d {
		val, err := ast.InterfaceToValue(v)
		if err != nil {
			return nil, fmt.Errorf("input: action.details[%q]: %w", k, err)
		}
		items = append(items, ast.Item(ast.StringTerm(k), ast.NewTerm(val)))
	}
	return ast.ObjectTerm(items...), nil
}
