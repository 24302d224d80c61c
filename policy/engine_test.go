package policy

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"
)

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// testPrincipals mirror the Rego tests' fixtures (policy/default/authz_test.rego).
var testPrincipals = []Principal{
	{UID: 1000, Name: "agent", Keys: []string{"device-id", "agent-*"}, Certs: []string{"agent/*"}},
	{UID: 1001, Name: "aziot-edge"},
	{UID: 1002, Name: "hp1", IDType: []string{"module"}},
	{UID: 1003, Name: "hp2", IDType: []string{"local"}, LocalID: map[string]any{"type": "x509", "attributes": "server"}},
	{UID: 1004, Name: "hpdev", IDType: []string{"device"}},
	{UID: 1005, Keys: []string{"a?c"}},
	{UID: 1005, Keys: []string{"x*"}, Certs: []string{"c?"}},
}

func newTestEngine(t testing.TB, opts Options) *Engine {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = quietLogger()
	}
	e, err := New(context.Background(), opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return e
}

func in(uid uint32, service, op, res string) *Input {
	return &Input{
		Caller: Caller{UID: uid, GID: uid, PID: 4242, Exe: "/usr/bin/test"},
		Action: Action{Service: service, Operation: op, Resource: res, APIVersion: "2021-05-01"},
		Time:   time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC),
	}
}

func withDetails(x *Input, d map[string]any) *Input { x.Action.Details = d; return x }

func withToken(x *Input, caps ...Capability) *Input {
	x.Token = &Token{ID: "tok-1", Subject: "uid:2000", Expiry: 1790000000, Capabilities: caps}
	return x
}

func TestDecide(t *testing.T) {
	e := newTestEngine(t, Options{Principals: testPrincipals})
	caps := func(cs ...map[string]any) map[string]any {
		l := make([]any, len(cs))
		for i, c := range cs {
			l[i] = c
		}
		return map[string]any{"capabilities": l, "ttl_seconds": 60}
	}
	cases := []struct {
		name   string
		in     *Input
		allow  bool
		reason string // substring of some reason
	}{
		// keyd
		{"keyd root load", in(0, "keyd", "load", "key:anything"), true, "uid 0 (root)"},
		{"keyd glob create", in(1000, "keyd", "create", "key:agent-1/x.y:z"), true, `keys glob "agent-*"`},
		{"keyd no match", in(1000, "keyd", "load", "key:other"), false, "uid 1000 has no principal whose keys match other"},
		{"keyd question mark", in(1005, "keyd", "import", "key:a/c"), true, ""},
		{"keyd second entry", in(1005, "keyd", "load", "key:x1"), true, ""},
		{"keyd handle sign open", in(2000, "keyd", "sign", "key:device-id"), true, "possession of the handle"},
		{"keyd move", withDetails(in(1000, "keyd", "move", "key:agent-2"), map[string]any{"from": "agent-1"}), true, ""},
		{"keyd move foreign source", withDetails(in(1000, "keyd", "move", "key:agent-2"), map[string]any{"from": "x"}), false, "source of the move"},
		{"keyd unknown op", in(0, "keyd", "frob", "key:x"), false, "no rule allows keyd frob"},
		// certd
		{"certd glob", in(1000, "certd", "create", "cert:agent/module/m:1:server"), true, ""},
		{"certd no match", in(1000, "certd", "delete", "cert:x"), false, "certs match x"},
		{"certd get open", in(2000, "certd", "get", "cert:x"), true, ""},
		// identityd
		{"identity daemon", in(1001, "identityd", "create", "identity:module:m"), true, "identity daemon"},
		{"host process own module", in(1002, "identityd", "get", "identity:module:hp1"), true, ""},
		{"host process other module", in(1002, "identityd", "get", "identity:module:x"), false, "host process"},
		{"local host process", in(1003, "identityd", "get", "identity:module:hp2"), true, ""},
		{"device host process", in(1004, "identityd", "get", "identity:device"), true, ""},
		{"local root", in(0, "identityd", "reprovision", "identity:device"), true, "local root"},
		{"unknown trust bundle", in(2000, "identityd", "trust_bundle", "identity:trust-bundle"), true, ""},
		{"unknown provisioning", in(2000, "identityd", "provisioning", "identity:device"), true, ""},
		{"unknown get", in(2000, "identityd", "get", "identity:device"), false, "not an identity principal"},
		{"keys-only principal not daemon", in(1005, "identityd", "list", "identity:module:*"), false, ""},
		// tpmd
		{"tpmd sign open", in(2000, "tpmd", "sign", "tpm:authkey"), true, ""},
		{"tpmd keys open", in(2000, "tpmd", "keys", "tpm:keys"), true, ""},
		// token rule
		{"token covers load", withToken(in(2000, "keyd", "load", "key:device-id"), Capability{Resource: "key:dev*", Ops: []string{"load"}}), true, "token tok-1 covers keyd load on key:device-id"},
		{"token wrong op", withToken(in(2000, "keyd", "load", "key:device-id"), Capability{Resource: "key:device-id", Ops: []string{"sign"}}), false, ""},
		// tokens service
		{"mint own", withDetails(in(1000, "tokens", "mint", "tokens"), caps(map[string]any{"resource": "key:device-id", "ops": []any{"load", "sign"}})), true, ""},
		{"mint foreign", withDetails(in(1000, "tokens", "mint", "tokens"), caps(map[string]any{"resource": "key:x", "ops": []any{"load"}})), false, "load on key:x"},
		{"mint pattern", withDetails(in(1000, "tokens", "mint", "tokens"), caps(map[string]any{"resource": "key:agent-sub*", "ops": []string{"create"}})), true, ""},
		{"mint wide pattern", withDetails(in(1000, "tokens", "mint", "tokens"), caps(map[string]any{"resource": "key:*", "ops": []string{"create"}})), false, ""},
		{"mint root", withDetails(in(0, "tokens", "mint", "tokens"), caps(map[string]any{"resource": "*", "ops": []string{"x"}})), true, ""},
		{"attenuate self", withDetails(in(1000, "tokens", "attenuate", "tokens"), map[string]any{"uid": int64(1000)}), true, ""},
		{"attenuate other", withDetails(in(1000, "tokens", "attenuate", "tokens"), map[string]any{"uid": int64(1001)}), false, "only for itself"},
		{"attenuate root", withDetails(in(0, "tokens", "attenuate", "tokens"), map[string]any{"uid": uint32(7)}), true, ""},
		{"revoke own", withDetails(in(1000, "tokens", "revoke", "tokens"), map[string]any{"id": "j", "token_uid": int64(1000)}), true, ""},
		{"revoke by id", withDetails(in(1000, "tokens", "revoke", "tokens"), map[string]any{"id": "j", "token_uid": nil}), false, ""},
		{"introspect", in(2000, "tokens", "introspect", "tokens"), true, ""},
		{"health", in(2000, "admin", "health", "broker"), true, ""},
		{"unknown service", in(0, "frobd", "x", "y"), false, "no rule allows"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d, err := e.Decide(context.Background(), tc.in)
			if err != nil {
				t.Fatalf("Decide: %v", err)
			}
			if d.Allow != tc.allow {
				t.Fatalf("allow = %v, want %v (reasons %q)", d.Allow, tc.allow, d.Reasons)
			}
			if len(d.Reasons) == 0 {
				t.Fatalf("no reasons")
			}
			if tc.reason != "" && !strings.Contains(strings.Join(d.Reasons, "\n"), tc.reason) {
				t.Fatalf("reasons %q lack %q", d.Reasons, tc.reason)
			}
			if d.Revision != e.Revision() || !strings.HasPrefix(d.Revision, "sha256:") {
				t.Fatalf("revision %q, engine %q", d.Revision, e.Revision())
			}
		})
	}
}

func TestDecideErrorsDeny(t *testing.T) {
	e := newTestEngine(t, Options{})
	d, err := e.Decide(context.Background(), nil)
	if err == nil || d.Allow {
		t.Fatalf("nil input: allow=%v err=%v", d.Allow, err)
	}
	bad := withDetails(in(0, "keyd", "load", "key:x"), map[string]any{"f": func() {}})
	if d, err := e.Decide(context.Background(), bad); err == nil || d.Allow {
		t.Fatalf("unconvertible details: allow=%v err=%v", d.Allow, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if d, err := e.Decide(ctx, in(0, "keyd", "load", "key:x")); err == nil || d.Allow {
		t.Fatalf("cancelled context: allow=%v err=%v", d.Allow, err)
	}
}

func TestSetPrincipals(t *testing.T) {
	e := newTestEngine(t, Options{})
	ctx := context.Background()
	req := in(1000, "keyd", "load", "key:device-id")
	if d, _ := e.Decide(ctx, req); d.Allow {
		t.Fatal("allowed before the principal exists")
	}
	if err := e.SetPrincipals(ctx, testPrincipals); err != nil {
		t.Fatal(err)
	}
	if d, err := e.Decide(ctx, req); err != nil || !d.Allow {
		t.Fatalf("after SetPrincipals: %+v %v", d, err)
	}
	if err := e.SetPrincipals(ctx, []Principal{{UID: 1, LocalID: make(chan int)}}); err == nil {
		t.Fatal("unconvertible localid accepted")
	}
	if d, _ := e.Decide(ctx, req); !d.Allow {
		t.Fatal("a rejected SetPrincipals replaced the data")
	}
}

func TestPrincipalsIndex(t *testing.T) {
	obj, err := principalsValue(testPrincipals)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"1000": [{"certs": ["agent/*"], "keys": ["device-id", "agent-*"], "name": "agent", "uid": 1000}], ` +
		`"1001": [{"name": "aziot-edge", "uid": 1001}], "1002": [{"idtype": ["module"], "name": "hp1", "uid": 1002}], ` +
		`"1003": [{"idtype": ["local"], "localid": {"attributes": "server", "type": "x509"}, "name": "hp2", "uid": 1003}], ` +
		`"1004": [{"idtype": ["device"], "name": "hpdev", "uid": 1004}], ` +
		`"1005": [{"keys": ["a?c"], "uid": 1005}, {"certs": ["c?"], "keys": ["x*"], "uid": 1005}]}`
	if got := obj.String(); got != want {
		t.Fatalf("principals data\n got %s\nwant %s", got, want)
	}
}

// Globs with characters that glob.match reads differently from aziot's
// wildmatch ([ ] { } \) are matched literally: the broker then clears
// data.warden.plain_globs and the policy escapes every glob.
func TestDecideGlobMetacharacters(t *testing.T) {
	ps := append(slices.Clone(testPrincipals), Principal{UID: 1006, Keys: []string{`lit[1]{a,b}\*`}})
	e := newTestEngine(t, Options{Principals: ps})
	for _, tc := range []struct {
		uid   uint32
		res   string
		allow bool
	}{
		{1006, `key:lit[1]{a,b}\`, true},
		{1006, `key:lit[1]{a,b}\/more`, true},
		{1006, `key:lit1a\`, false},
		{1006, `key:lita\`, false},
		{1000, "key:agent-7", true}, // plain globs still match on the exact path
		{1000, "key:other", false},
	} {
		if got := allowed(t, e, in(tc.uid, "keyd", "load", tc.res)); got != tc.allow {
			t.Errorf("uid %d load %s: allow=%v, want %v", tc.uid, tc.res, got, tc.allow)
		}
	}
	if plainGlobs(ps) || !plainGlobs(testPrincipals) {
		t.Fatal("plainGlobs is wrong")
	}
}

func TestDecisionUndefinedOrMalformed(t *testing.T) {
	for name, src := range map[string]string{
		"not an object": "package warden.authz\n\ndecision := true\n",
		"allow string":  "package warden.authz\n\ndecision := {\"allow\": \"yes\", \"reasons\": []}\n",
		"undefined":     "package warden.authz\n\ndecision := {\"allow\": true, \"reasons\": []} if input.never\n",
	} {
		t.Run(name, func(t *testing.T) {
			dir := writePolicy(t, t.TempDir(), map[string]string{"p.rego": src})
			e := newTestEngine(t, Options{Dir: dir})
			d, err := e.Decide(context.Background(), in(0, "keyd", "load", "key:x"))
			if err == nil || d.Allow {
				t.Fatalf("allow=%v err=%v", d.Allow, err)
			}
		})
	}
}

func TestNewErrors(t *testing.T) {
	ctx := context.Background()
	missing := t.TempDir() + "/nope"
	for name, tc := range map[string]struct {
		dir   string
		files map[string]string
		want  string
	}{
		"missing dir":    {dir: missing, want: missing},
		"empty dir":      {files: map[string]string{}, want: "has no *.rego file"},
		"syntax error":   {files: map[string]string{"a.rego": "package warden.authz\n\ndecision := {"}, want: "parse a.rego"},
		"compile error":  {files: map[string]string{"a.rego": "package warden.authz\n\ndecision := x\n"}, want: "compile policy"},
		"no decision":    {files: map[string]string{"a.rego": "package warden.authz\n\nallow := true\n"}, want: "no rule defines data.warden.authz.decision"},
		"http.send":      {files: map[string]string{"a.rego": okPolicy + "\nx := http.send({\"method\": \"GET\", \"url\": \"http://x\"})\n"}, want: "http.send"},
		"bad data":       {files: map[string]string{"a.rego": okPolicy, "data.json": "[1]"}, want: "must be an object"},
		"data principal": {files: map[string]string{"a.rego": okPolicy, "data.json": `{"warden": {"principals": {}}}`}, want: "comes from the configuration"},
		"data flag":      {files: map[string]string{"a.rego": okPolicy, "data.json": `{"warden": {"plain_globs": true}}`}, want: "warden.plain_globs comes from"},
		"two data files": {files: map[string]string{"a.rego": okPolicy, "data.json": `{}`, "data.yaml": "a: 1\n"}, want: "keep one"},
	} {
		t.Run(name, func(t *testing.T) {
			dir := tc.dir
			if dir == "" {
				dir = writePolicy(t, t.TempDir(), tc.files)
			}
			_, err := New(ctx, Options{Dir: dir, Logger: quietLogger()})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to contain %q", err, tc.want)
			}
		})
	}
}

func TestDataFile(t *testing.T) {
	src := "package warden.authz\n\ndecision := {\"allow\": input.caller.uid in data.admins, \"reasons\": [\"data\"]}\n"
	dir := writePolicy(t, t.TempDir(), map[string]string{"a.rego": src, "data.yaml": "admins: [7]\nwarden:\n  other: 1\n"})
	e := newTestEngine(t, Options{Dir: dir})
	if d, err := e.Decide(context.Background(), in(7, "x", "y", "z")); err != nil || !d.Allow {
		t.Fatalf("%+v %v", d, err)
	}
	if d, _ := e.Decide(context.Background(), in(8, "x", "y", "z")); d.Allow {
		t.Fatal("uid 8 allowed")
	}
}

func TestDecisionLogFailClosedDenies(t *testing.T) {
	w := &failingWriter{err: errors.New("disk full")}
	dl := NewDecisionLog(w, DecisionLogOptions{FailClosed: true, Logger: quietLogger()})
	defer dl.Close()
	e := newTestEngine(t, Options{DecisionLog: dl})
	ctx := context.Background()
	req := in(0, "keyd", "load", "key:x")
	if d, err := e.Decide(ctx, req); err != nil || !d.Allow {
		t.Fatalf("first decision: %+v %v", d, err)
	}
	waitFor(t, func() bool { return dl.Err() != nil })
	d, err := e.Decide(ctx, req)
	if d.Allow || !errors.Is(err, ErrDecisionLog) {
		t.Fatalf("with a failing fail-closed log: allow=%v err=%v", d.Allow, err)
	}
}

// waitFor polls cond until it holds or 10 s pass.
func waitFor(t testing.TB, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 10s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}
