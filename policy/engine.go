// Package policy decides every Warden request with OPA: the input document
// (Input), the principals as policy data, the embedded default policy that
// reproduces aziot's authorization, reload on change, and the decision log.
//
// The hot path is lock-free: Decide loads an immutable prepared state through
// an atomic pointer; Reload and SetPrincipals build a new state and swap it.
package policy

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/metrics"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/storage/inmem"
)

// Query is the document the broker evaluates for every request.
const Query = "data.warden.authz.decision"

// DefaultPackage is the package of the default policy.
const DefaultPackage = "warden.authz"

//go:embed default/*.rego
var defaultFS embed.FS

// DefaultPolicy returns the embedded default policy files (*.rego, tests
// included), e.g. for wardenctl, the docs, or to seed a policy dir.
func DefaultPolicy() fs.FS {
	sub, err := fs.Sub(defaultFS, "default")
	if err != nil { // cannot happen: "default" is a valid path in defaultFS
		panic(fmt.Sprintf("policy: embedded default policy: %v", err))
	}
	return sub
}

// Options configure an Engine.
type Options struct {
	// Dir is the policy directory: its *.rego files (tests included) and an
	// optional data.json or data.yaml. They replace the embedded default
	// policy entirely. "" means the embedded default policy only.
	Dir string
	// Principals become data.warden.principals, an object keyed by the
	// decimal uid whose values are arrays of that uid's principals.
	Principals []Principal
	// Logger receives reload and decision-log messages; nil means slog.Default().
	Logger *slog.Logger
	// DecisionLog, when set, receives one entry per decision.
	DecisionLog *DecisionLog
}

// Engine evaluates the policy. It is safe for concurrent use.
type Engine struct {
	dir  string
	log  *slog.Logger
	dlog *DecisionLog

	mu    sync.Mutex // serialises Reload and SetPrincipals (never taken by Decide)
	state atomic.Pointer[state]
}

// state is one immutable prepared policy: swapped whole, never modified.
type state struct {
	pq         rego.PreparedEvalQuery
	compiler   *ast.Compiler
	bundle     *bundle
	principals []Principal
	revision   string
}

// New loads, compiles and prepares the policy once. It fails when the policy
// directory is missing or empty, when the policy does not compile, or when
// it does not define data.warden.authz.decision.
func New(ctx context.Context, opts Options) (*Engine, error) {
	e := &Engine{dir: opts.Dir, log: opts.Logger, dlog: opts.DecisionLog}
	if e.log == nil {
		e.log = slog.Default()
	}
	b, err := e.load()
	if err != nil {
		return nil, err
	}
	st, err := build(ctx, b, nil, clonePrincipals(opts.Principals))
	if err != nil {
		return nil, err
	}
	e.state.Store(st)
	e.log.Info("policy loaded", "source", b.source, "revision", st.revision, "files", len(b.files))
	return e, nil
}

// load reads the policy files from Dir or the embedded default.
func (e *Engine) load() (*bundle, error) {
	if e.dir == "" {
		return loadBundle(DefaultPolicy(), "embedded default policy")
	}
	return loadDir(e.dir)
}

// build compiles b (unless compiler is given, already compiled from b) and
// prepares the decision query over a store holding b's data and principals.
func build(ctx context.Context, b *bundle, compiler *ast.Compiler, ps []Principal) (*state, error) {
	if compiler == nil {
		var err error
		if compiler, err = compile(b); err != nil {
			return nil, err
		}
	}
	data, err := storeData(b.data, ps)
	if err != nil {
		return nil, err
	}
	pq, err := rego.New(
		rego.Query(Query),
		rego.Compiler(compiler),
		rego.Store(inmem.NewFromASTObject(data)),
		// Keep results as AST: Decide reads the object directly.
		rego.GenerateJSON(func(t *ast.Term, _ *rego.EvalContext) (any, error) { return t, nil }),
	).PrepareForEval(ctx)
	if err != nil {
		return nil, fmt.Errorf("prepare %s from %s: %w", Query, b.source, err)
	}
	return &state{pq: pq, compiler: compiler, bundle: b, principals: ps, revision: b.revision}, nil
}

// unsafeBuiltins may not appear in a policy: a decision must not wait for
// the network, nor let a policy reach it.
var unsafeBuiltins = map[string]struct{}{
	ast.HTTPSend.Name:        {},
	ast.NetLookupIPAddr.Name: {},
}

// compile compiles the modules of b and checks that they define the decision.
func compile(b *bundle) (*ast.Compiler, error) {
	c := ast.NewCompiler().WithDefaultRegoVersion(ast.RegoV1).WithUnsafeBuiltins(unsafeBuiltins)
	if c.Compile(b.modules); c.Failed() {
		return nil, fmt.Errorf("compile policy %s: %w", b.source, c.Errors)
	}
	if len(c.GetRulesExact(ast.MustParseRef(Query))) == 0 {
		return nil, fmt.Errorf("compile policy %s: no rule defines %s (package %s, rule decision)", b.source, Query, DefaultPackage)
	}
	return c, nil
}

// clonePrincipals copies p so that the caller may reuse its slices: Reload
// rebuilds the data from the copy.
func clonePrincipals(p []Principal) []Principal {
	out := make([]Principal, len(p))
	for i, x := range p {
		x.IDType = slices.Clone(x.IDType)
		x.Keys = slices.Clone(x.Keys)
		x.Certs = slices.Clone(x.Certs)
		out[i] = x
	}
	return out
}

// Revision identifies the loaded policy files: "sha256:" and the first 16
// hex digits of a digest over their names and contents.
func (e *Engine) Revision() string { return e.state.Load().revision }

// SetPrincipals replaces data.warden.principals (a configuration reload).
// The policy is not re-read; on error the old data stays in force.
func (e *Engine) SetPrincipals(ctx context.Context, p []Principal) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	old := e.state.Load()
	st, err := build(ctx, old.bundle, old.compiler, clonePrincipals(p))
	if err != nil {
		return fmt.Errorf("set principals: %w", err)
	}
	e.state.Store(st)
	e.log.Info("policy principals updated", "principals", len(p), "revision", st.revision)
	return nil
}

// Reload re-reads Dir. A policy that fails to load or compile is rejected:
// the old one keeps deciding, the error is logged and returned. Unchanged
// files (same revision) are not recompiled.
func (e *Engine) Reload(ctx context.Context) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	old := e.state.Load()
	b, err := e.load()
	if err == nil && b.revision == old.revision {
		return nil
	}
	var st *state
	if err == nil {
		st, err = build(ctx, b, nil, old.principals)
	}
	if err != nil {
		e.log.Error("policy reload rejected; the previous policy stays in force",
			"dir", e.dir, "revision", old.revision, "err", err)
		return fmt.Errorf("reload policy: %w", err)
	}
	e.state.Store(st)
	e.log.Info("policy reloaded", "dir", e.dir, "revision", st.revision, "previous", old.revision, "files", len(b.files))
	return nil
}

// ErrDecisionLog marks a refusal because the decision log cannot be written
// and the log is configured to fail closed.
var ErrDecisionLog = errors.New("decision log unavailable")

// Decide evaluates data.warden.authz.decision for in. An evaluation error, or
// a decision that is not {"allow": bool, "reasons": [string]}, denies and
// returns the error. With a decision log, one entry is recorded per call; a
// fail-closed log that cannot be written denies with an error wrapping
// ErrDecisionLog.
func (e *Engine) Decide(ctx context.Context, in *Input) (Decision, error) {
	start := time.Now()
	st := e.state.Load()
	d, err := st.decide(ctx, in)
	if e.dlog == nil {
		return d, err
	}
	entry := NewDecisionEntry(in, d, time.Since(start), err)
	if lerr := e.dlog.Record(entry); lerr != nil {
		d.Allow = false
		d.Reasons = append(d.Reasons, "denied: "+ErrDecisionLog.Error())
		if err == nil {
			err = fmt.Errorf("%w: %w", ErrDecisionLog, lerr)
		}
	}
	return d, err
}

// noMetrics spares every evaluation the allocation of its own metrics.
var noMetrics = metrics.NoOp()

var (
	termAllow   = ast.StringTerm("allow")
	termReasons = ast.StringTerm("reasons")
)

func (st *state) decide(ctx context.Context, in *Input) (Decision, error) {
	d := Decision{Revision: st.revision}
	if in == nil {
		return deny(d, errors.New("decide: nil input"))
	}
	if err := ctx.Err(); err != nil {
		return deny(d, fmt.Errorf("decide: %w", err))
	}
	iv, err := inputValue(in)
	if err != nil {
		return deny(d, err)
	}
	rs, err := st.pq.Eval(ctx, rego.EvalParsedInput(iv), rego.EvalMetrics(noMetrics))
	if err != nil {
		return deny(d, fmt.Errorf("evaluate %s (policy %s): %w", Query, st.revision, err))
	}
	if len(rs) == 0 || len(rs[0].Expressions) == 0 {
		return deny(d, fmt.Errorf("evaluate %s (policy %s): undefined", Query, st.revision))
	}
	t, _ := rs[0].Expressions[0].Value.(*ast.Term)
	obj, ok := termValue(t).(ast.Object)
	if !ok {
		return deny(d, fmt.Errorf("evaluate %s (policy %s): decision is %v, want an object", Query, st.revision, termValue(t)))
	}
	allow, ok := termValue(obj.Get(termAllow)).(ast.Boolean)
	if !ok {
		return deny(d, fmt.Errorf("evaluate %s (policy %s): decision.allow is not a boolean", Query, st.revision))
	}
	if arr, ok := termValue(obj.Get(termReasons)).(*ast.Array); ok {
		d.Reasons = make([]string, 0, arr.Len())
		for i := range arr.Len() {
			if s, ok := arr.Elem(i).Value.(ast.String); ok {
				d.Reasons = append(d.Reasons, string(s))
			} else {
				d.Reasons = append(d.Reasons, arr.Elem(i).String())
			}
		}
	}
	d.Allow = bool(allow)
	return d, nil
}

func termValue(t *ast.Term) ast.Value {
	if t == nil {
		return nil
	}
	return t.Value
}

// deny is the decision when no decision could be made: refused, with err.
func deny(d Decision, err error) (Decision, error) {
	d.Allow = false
	d.Reasons = []string{"denied: policy error: " + err.Error()}
	return d, err
}
