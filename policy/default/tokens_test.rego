# Tests of the token rule and of the tokens service (mint, attenuate, revoke,
# introspect). Fixtures (principals, ok) are in authz_test.rego.
package warden.authz_test

# tok is a verified token as the broker puts it in input.token.
tok(caps) := {"id": "t1", "sub": "uid:2000", "exp": 1790000000, "capabilities": caps, "parent": null}

token_rule_cases := [
	{"note": "token grants an ID op", "uid": 2000, "token": tok([{"resource": "key:device-id", "ops": ["load"]}]), "service": "keyd", "op": "load", "res": "key:device-id", "allow": true, "reason": "token t1 covers keyd load on key:device-id"},
	{"note": "wildcard token", "uid": 2000, "token": tok([{"resource": "key:dev*", "ops": ["load"]}]), "service": "keyd", "op": "load", "res": "key:device-id", "allow": true},
	{"note": "star token", "uid": 2000, "token": tok([{"resource": "key:*", "ops": ["create"]}]), "service": "keyd", "op": "create", "res": "key:a/b", "allow": true},
	{"note": "wildcard token other prefix", "uid": 2000, "token": tok([{"resource": "key:dev*", "ops": ["load"]}]), "service": "keyd", "op": "load", "res": "key:other", "allow": false},
	{"note": "inner star is literal", "uid": 2000, "token": tok([{"resource": "key:a*b", "ops": ["load"]}]), "service": "keyd", "op": "load", "res": "key:axb", "allow": false},
	{"note": "op not in token", "uid": 2000, "token": tok([{"resource": "key:device-id", "ops": ["sign"]}]), "service": "keyd", "op": "load", "res": "key:device-id", "allow": false},
	{"note": "second capability", "uid": 2000, "token": tok([{"resource": "key:x", "ops": ["sign"]}, {"resource": "cert:c", "ops": ["create"]}]), "service": "certd", "op": "create", "res": "cert:c", "allow": true},
	{"note": "identity token", "uid": 2000, "token": tok([{"resource": "identity:module:*", "ops": ["get"]}]), "service": "identityd", "op": "get", "res": "identity:module:m1", "allow": true},
	{"note": "tpm token", "uid": 2000, "token": tok([{"resource": "tpm:authkey", "ops": ["sign"]}]), "service": "tpmd", "op": "sign", "res": "tpm:authkey", "allow": true},
	{"note": "token sign plus open rule", "uid": 2000, "token": tok([{"resource": "key:device-id", "ops": ["sign"]}]), "service": "keyd", "op": "sign", "res": "key:device-id", "allow": true, "reason": "token t1 covers keyd sign on key:device-id"},
	{"note": "null token", "uid": 2000, "token": null, "service": "keyd", "op": "load", "res": "key:device-id", "allow": false},
	{"note": "token not for tokens service", "uid": 2000, "token": tok([{"resource": "tokens", "ops": ["mint"]}]), "service": "tokens", "op": "mint", "res": "tokens", "details": {"capabilities": [{"resource": "key:x", "ops": ["load"]}]}, "allow": false},
	{"note": "star token not for tokens service", "uid": 2000, "token": tok([{"resource": "*", "ops": ["attenuate"]}]), "service": "tokens", "op": "attenuate", "res": "tokens", "details": {"uid": 1}, "allow": false},
	{"note": "token move covers both keys", "uid": 2000, "token": tok([{"resource": "key:dst", "ops": ["move"]}, {"resource": "key:src", "ops": ["move"]}]), "service": "keyd", "op": "move", "res": "key:dst", "details": {"from": "src"}, "allow": true},
	{"note": "token move source not covered", "uid": 2000, "token": tok([{"resource": "key:dst", "ops": ["move"]}]), "service": "keyd", "op": "move", "res": "key:dst", "details": {"from": "src"}, "allow": false},
	{"note": "token move without source", "uid": 2000, "token": tok([{"resource": "key:*", "ops": ["move"]}]), "service": "keyd", "op": "move", "res": "key:dst", "allow": false},
]

test_token_rule[tc.note] if {
	some tc in token_rule_cases
	ok(tc)
}

# mint(uid, caps) is a mint test case without note and expectation.
mint(uid, caps) := {"uid": uid, "service": "tokens", "op": "mint", "res": "tokens", "details": {"capabilities": caps, "ttl_seconds": 60}}

mint_cases := [
	object.union(mint(0, [{"resource": "*", "ops": ["anything"]}]), {"note": "root mints anything", "allow": true, "reason": "uid 0 (root) may mint"}),
	object.union(mint(0, [{"resource": "identity:module:*", "ops": ["get"]}]), {"note": "root host process mints identity wildcard", "principals": root_host_process, "allow": true}),
	object.union(mint(1000, [{"resource": "key:device-id", "ops": ["load", "sign"]}]), {"note": "own key", "allow": true, "reason": "uid 1000 may mint"}),
	object.union(mint(1000, [{"resource": "key:other", "ops": ["load"]}]), {"note": "not own key", "allow": false, "reason": "not: load on key:other"}),
	object.union(mint(1000, [{"resource": "key:device-id", "ops": ["load"]}, {"resource": "key:other", "ops": ["create"]}]), {"note": "one bad capability", "allow": false, "reason": "create on key:other"}),
	object.union(mint(1000, [{"resource": "key:agent-*", "ops": ["load"]}]), {"note": "pattern equal to glob", "allow": true}),
	object.union(mint(1000, [{"resource": "key:agent-sub/*", "ops": ["create"]}]), {"note": "pattern within star glob", "allow": true}),
	object.union(mint(1000, [{"resource": "key:*", "ops": ["load"]}]), {"note": "star pattern needs star glob", "allow": false}),
	object.union(mint(1000, [{"resource": "key:a*", "ops": ["load"]}]), {"note": "pattern wider than glob", "allow": false}),
	object.union(mint(1000, [{"resource": "key:device-id*", "ops": ["load"]}]), {"note": "exact glob does not cover a pattern", "allow": false}),
	object.union(mint(1000, [{"resource": "key:*", "ops": ["sign", "encrypt"]}]), {"note": "open ops cover any pattern", "allow": true}),
	object.union(mint(1005, [{"resource": "key:x/y*", "ops": ["load"]}]), {"note": "second entry star glob", "allow": true}),
	object.union(mint(1005, [{"resource": "key:x?*", "ops": ["load"]}]), {"note": "literal question mark in pattern prefix", "allow": true}),
	object.union(mint(1005, [{"resource": "key:abc*", "ops": ["load"]}]), {"note": "glob with ? before * is not trusted", "allow": false}),
	object.union(mint(1005, [{"resource": "key:abc", "ops": ["load"]}]), {"note": "literal id by question glob", "allow": true}),
	object.union(mint(1000, [{"resource": "cert:agent/*", "ops": ["create", "delete"]}]), {"note": "certs pattern", "allow": true}),
	object.union(mint(1000, [{"resource": "cert:*", "ops": ["get"]}]), {"note": "cert get open", "allow": true}),
	object.union(mint(1000, [{"resource": "cert:*", "ops": ["create"]}]), {"note": "cert star needs star glob", "allow": false}),
	object.union(mint(2000, [{"resource": "identity:trust-bundle", "ops": ["trust_bundle"]}]), {"note": "unknown mints trust bundle", "allow": true}),
	object.union(mint(2000, [{"resource": "identity:*", "ops": ["trust_bundle"]}]), {"note": "identity wildcard not for unknown", "allow": false}),
	object.union(mint(2000, [{"resource": "identity:device", "ops": ["get"]}]), {"note": "unknown cannot mint device get", "allow": false}),
	object.union(mint(1001, [{"resource": "identity:module:*", "ops": ["get", "list"]}]), {"note": "daemon mints identity wildcard", "allow": true}),
	object.union(mint(1002, [{"resource": "identity:module:hp1", "ops": ["get"]}]), {"note": "host process mints own module", "allow": true}),
	object.union(mint(1002, [{"resource": "identity:module:*", "ops": ["get"]}]), {"note": "host process identity wildcard", "allow": false}),
	object.union(mint(2000, [{"resource": "tpm:*", "ops": ["sign", "keys"]}]), {"note": "tpm open", "allow": true}),
	object.union(mint(1000, [{"resource": "foo:bar", "ops": ["get"]}]), {"note": "unknown resource kind", "allow": false}),
	object.union(mint(1000, [{"resource": "tokens", "ops": ["mint"]}]), {"note": "tokens resource", "allow": false}),
	object.union(mint(1000, [{"ops": ["load"]}]), {"note": "capability without resource", "allow": false}),
	object.union(mint(1000, [{"resource": 7, "ops": ["load"]}]), {"note": "non-string resource", "allow": false}),
	object.union(mint(1000, [{"resource": "key:device-id", "ops": "load"}]), {"note": "ops not an array", "allow": false}),
	object.union(mint(1000, [{"resource": "key:device-id", "ops": [1]}]), {"note": "op not a string", "allow": false}),
	object.union(mint(1000, {"a": {"resource": "key:device-id", "ops": ["load"]}}), {"note": "capabilities not an array", "allow": false}),
	object.union(mint(1000, []), {"note": "no capability", "allow": false, "reason": "at least one capability"}),
	{"note": "no details", "uid": 1000, "service": "tokens", "op": "mint", "res": "tokens", "allow": false},
]

test_mint[tc.note] if {
	some tc in mint_cases
	ok(tc)
}

tokens_cases := [
	{"note": "root attenuates to anyone", "uid": 0, "service": "tokens", "op": "attenuate", "res": "tokens", "details": {"uid": 1234}, "allow": true},
	{"note": "attenuate to self", "uid": 1000, "service": "tokens", "op": "attenuate", "res": "tokens", "details": {"uid": 1000}, "allow": true, "reason": "for itself"},
	{"note": "attenuate to other", "uid": 1000, "service": "tokens", "op": "attenuate", "res": "tokens", "details": {"uid": 1001}, "allow": false, "reason": "not for uid 1001"},
	{"note": "attenuate null uid is self", "uid": 1000, "service": "tokens", "op": "attenuate", "res": "tokens", "details": {"uid": null}, "allow": true},
	{"note": "attenuate no uid is self", "uid": 1000, "service": "tokens", "op": "attenuate", "res": "tokens", "allow": true},
	{"note": "root revokes by id", "uid": 0, "service": "tokens", "op": "revoke", "res": "tokens", "details": {"id": "x", "token_uid": null}, "allow": true},
	{"note": "revoke own token", "uid": 1000, "service": "tokens", "op": "revoke", "res": "tokens", "details": {"id": "x", "token_uid": 1000}, "allow": true},
	{"note": "revoke other token", "uid": 1000, "service": "tokens", "op": "revoke", "res": "tokens", "details": {"id": "x", "token_uid": 1001}, "allow": false, "reason": "only its own tokens"},
	{"note": "revoke by id only", "uid": 1000, "service": "tokens", "op": "revoke", "res": "tokens", "details": {"id": "x", "token_uid": null}, "allow": false},
	{"note": "introspect open", "uid": 2000, "service": "tokens", "op": "introspect", "res": "tokens", "allow": true},
	{"note": "jwks open", "uid": 2000, "service": "tokens", "op": "jwks", "res": "tokens", "allow": true},
	{"note": "unknown tokens op", "uid": 0, "service": "tokens", "op": "burn", "res": "tokens", "allow": false},
]

test_tokens[tc.note] if {
	some tc in tokens_cases
	ok(tc)
}
