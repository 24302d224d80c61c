# Shared fixtures of the default policy's tests, and tests of the decision
# itself. Run: opa test policy/default   (or go test ./policy/...)
#
# Each test_* rule is table-driven: test_x[tc.note] if { some tc in cases; ok(tc) },
# so `opa test -v` names every failing case by its note.
package warden.authz_test

import data.warden.authz

# principals is data.warden.principals for the tests: an object keyed by the
# decimal uid, each value the array of that uid's config entries.
principals := {
	# keyd/certd principal, also named (so an identity principal: a daemon)
	"1000": [{"uid": 1000, "name": "agent", "keys": ["device-id", "agent-*"], "certs": ["agent/*"]}],
	# IoT Edge: identity daemon (name, no idtype)
	"1001": [{"uid": 1001, "name": "aziot-edge"}],
	# host processes
	"1002": [{"uid": 1002, "name": "hp1", "idtype": ["module"]}],
	"1003": [{"uid": 1003, "name": "hp2", "idtype": ["local"], "localid": {"type": "x509", "attributes": "server"}}],
	"1004": [{"uid": 1004, "name": "hpdev", "idtype": ["device"]}],
	# two keys-only entries for one uid: merged; not an identity principal
	"1005": [{"uid": 1005, "keys": ["a?c"]}, {"uid": 1005, "keys": ["x*", "ab?*"], "certs": ["c?"]}],
	# glob metacharacters that aziot's wildmatch does not have
	"1006": [{"uid": 1006, "keys": ["lit[1]{a,b}\\"]}],
	# one host-process entry and one daemon entry for one uid: a daemon
	"1007": [{"uid": 1007, "name": "m7", "idtype": ["module"]}, {"uid": 1007, "name": "d7"}],
	# a host process with an empty idtype
	"1008": [{"uid": 1008, "name": "hp8", "idtype": []}],
}

# root listed as a host process (aziot checks host processes before root)
root_host_process := object.union(principals, {"0": [{"uid": 0, "name": "rootmod", "idtype": ["module"]}]})

# input_of builds the input document of a test case.
input_of(tc) := {
	"caller": {"uid": tc.uid, "gid": tc.uid, "pid": 4242, "exe": "/usr/bin/test", "principal": ""},
	"token": object.get(tc, "token", null),
	"action": {
		"service": tc.service,
		"operation": tc.op,
		"resource": tc.res,
		"api_version": "2021-05-01",
		"details": object.get(tc, "details", {}),
	},
	"module": null,
	"time": "2026-12-01T12:00:00Z",
}

# decide evaluates the decision of a test case. data.warden.plain_globs is
# false unless the case says otherwise (the broker sets it true when no
# configured glob has a [ ] { } \ character).
decide(tc) := d if {
	d := authz.decision with input as input_of(tc)
		with data.warden.principals as object.get(tc, "principals", principals)
		with data.warden.plain_globs as object.get(tc, "plain_globs", false)
}

# ok: the decision matches tc.allow, has reasons, and one of them contains
# tc.reason when the case gives one.
ok(tc) if {
	d := decide(tc)
	d.allow == tc.allow
	count(d.reasons) > 0
	reason_ok(d, tc)
}

reason_ok(_, tc) if not tc.reason

reason_ok(d, tc) if {
	some r in d.reasons
	contains(r, tc.reason)
}

# ------------------------------------------------------------------ tests

test_decision_shape if {
	d := decide({"uid": 0, "service": "keyd", "op": "load", "res": "key:x"})
	is_boolean(d.allow)
	is_array(d.reasons)
	object.keys(d) == {"allow", "reasons"}
}

test_deny_rule_wins if {
	d := authz.decision with input as input_of({"uid": 0, "service": "keyd", "op": "load", "res": "key:x"})
		with data.warden.principals as principals
		with authz.deny as {"maintenance window"}
	d.allow == false
	"denied: maintenance window" in d.reasons
}

test_no_principals_data if {
	# without data.warden.principals at all: root still has keyd, others not
	d0 := authz.decision with input as input_of({"uid": 0, "service": "keyd", "op": "load", "res": "key:x"})
	d0.allow
	d1 := authz.decision with input as input_of({"uid": 1000, "service": "keyd", "op": "load", "res": "key:x"})
	not d1.allow
}

test_plain_globs_undefined_is_exact if {
	# data without plain_globs (e.g. under `opa eval` with a data file): the
	# exact path decides
	d := authz.decision with input as input_of({"uid": 1006, "service": "keyd", "op": "load", "res": "key:lit[1]{a,b}\\"})
		with data.warden.principals as principals
	d.allow
	d1 := authz.decision with input as input_of({"uid": 1006, "service": "keyd", "op": "load", "res": "key:lit1a\\"})
		with data.warden.principals as principals
	not d1.allow
}

test_allow_is_decision_allow if {
	authz.allow with input as input_of({"uid": 0, "service": "keyd", "op": "load", "res": "key:x"})
	not authz.allow with input as input_of({"uid": 2000, "service": "keyd", "op": "load", "res": "key:x"})
}

unknown_cases := [
	{"note": "unknown service", "uid": 0, "service": "frobd", "op": "get", "res": "x", "allow": false, "reason": "no rule allows frobd get on x for uid 0"},
	{"note": "modules service has no default rule", "uid": 0, "service": "modules", "op": "http.do", "res": "module:dps", "allow": false},
	{"note": "admin op other than health", "uid": 0, "service": "admin", "op": "reload", "res": "broker", "allow": false},
	{"note": "admin health open", "uid": 2000, "service": "admin", "op": "health", "res": "broker", "allow": true, "reason": "admin health is open"},
	{"note": "empty operation", "uid": 0, "service": "keyd", "op": "", "res": "key:x", "allow": false},
]

test_unknown_denied[tc.note] if {
	some tc in unknown_cases
	ok(tc)
}

test_wildmatch[tc.note] if {
	some tc in [
		{"note": "star crosses slash", "p": "a*", "s": "a/b/c", "m": true},
		{"note": "star crosses dot and colon", "p": "m*:server", "s": "m.x/y:server", "m": true},
		{"note": "star matches empty", "p": "a*", "s": "a", "m": true},
		{"note": "question one char", "p": "a?c", "s": "a/c", "m": true},
		{"note": "question not zero chars", "p": "a?c", "s": "ac", "m": false},
		{"note": "question not two chars", "p": "a?c", "s": "abbc", "m": false},
		{"note": "exact", "p": "device-id", "s": "device-id", "m": true},
		{"note": "no implicit prefix", "p": "device-id", "s": "device-id2", "m": false},
		{"note": "brackets literal", "p": "k[12]", "s": "k[12]", "m": true},
		{"note": "brackets not a class", "p": "k[12]", "s": "k1", "m": false},
		{"note": "braces literal", "p": "{a,b}", "s": "{a,b}", "m": true},
		{"note": "braces not alternatives", "p": "{a,b}", "s": "a", "m": false},
		{"note": "backslash literal", "p": "a\\*", "s": "a\\xyz", "m": true},
		{"note": "case sensitive", "p": "Dev*", "s": "device", "m": false},
	]
	wm(tc.p, tc.s) == tc.m
}

wm(p, s) if authz.wildmatch(p, s)

else := false

test_wildmatch_false_is_undefined if {
	not authz.wildmatch("a?c", "ac")
}
