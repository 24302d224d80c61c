# Tests of keyd, certd, identityd and tpmd as aziot authorizes them.
# Fixtures (principals, ok) are in authz_test.rego.
package warden.authz_test

import data.warden.authz

keyd_cases := [
	# ID operations: root
	{"note": "root loads any key", "uid": 0, "service": "keyd", "op": "load", "res": "key:whatever", "allow": true, "reason": "uid 0 (root)"},
	{"note": "root creates any key", "uid": 0, "service": "keyd", "op": "create", "res": "key:a/b.c:d", "allow": true},
	{"note": "root moves with a source", "uid": 0, "service": "keyd", "op": "move", "res": "key:b", "details": {"from": "a"}, "allow": true},
	# ID operations: globs
	{"note": "exact glob", "uid": 1000, "service": "keyd", "op": "load", "res": "key:device-id", "allow": true, "reason": "keys glob \"device-id\" matching device-id"},
	{"note": "exact glob is not a prefix", "uid": 1000, "service": "keyd", "op": "load", "res": "key:device-id2", "allow": false, "reason": "uid 1000 has no principal whose keys match device-id2"},
	{"note": "star glob create", "uid": 1000, "service": "keyd", "op": "create", "res": "key:agent-1", "allow": true},
	{"note": "star crosses / . :", "uid": 1000, "service": "keyd", "op": "import", "res": "key:agent-x/y.z:w", "allow": true},
	{"note": "no match", "uid": 1000, "service": "keyd", "op": "load", "res": "key:other", "allow": false, "reason": "uid 1000 has no principal whose keys match other"},
	{"note": "certs globs do not grant keys", "uid": 1000, "service": "keyd", "op": "load", "res": "key:agent/x", "allow": false},
	{"note": "question mark one char", "uid": 1005, "service": "keyd", "op": "load", "res": "key:abc", "allow": true},
	{"note": "question mark matches slash", "uid": 1005, "service": "keyd", "op": "load", "res": "key:a/c", "allow": true},
	{"note": "question mark matches dot", "uid": 1005, "service": "keyd", "op": "load", "res": "key:a.c", "allow": true},
	{"note": "question mark not empty", "uid": 1005, "service": "keyd", "op": "load", "res": "key:ac", "allow": false},
	{"note": "second entry of the uid", "uid": 1005, "service": "keyd", "op": "create", "res": "key:x/any:thing", "allow": true},
	{"note": "metacharacters literal", "uid": 1006, "service": "keyd", "op": "load", "res": "key:lit[1]{a,b}\\", "allow": true},
	{"note": "no char class", "uid": 1006, "service": "keyd", "op": "load", "res": "key:lit1a\\", "allow": false},
	{"note": "unlisted uid", "uid": 2000, "service": "keyd", "op": "load", "res": "key:device-id", "allow": false, "reason": "uid 2000 has no principal whose keys match device-id"},
	{"note": "identity daemon has no keys", "uid": 1001, "service": "keyd", "op": "load", "res": "key:device-id", "allow": false},
	{"note": "ID op on a non-key resource", "uid": 0, "service": "keyd", "op": "load", "res": "cert:x", "allow": false},
	# move checks both keys
	{"note": "move both match", "uid": 1000, "service": "keyd", "op": "move", "res": "key:agent-2", "details": {"from": "agent-1"}, "allow": true},
	{"note": "move source does not match", "uid": 1000, "service": "keyd", "op": "move", "res": "key:agent-2", "details": {"from": "other"}, "allow": false, "reason": "keys match other (the source of the move)"},
	{"note": "move destination does not match", "uid": 1000, "service": "keyd", "op": "move", "res": "key:other", "details": {"from": "agent-1"}, "allow": false, "reason": "keys match other"},
	{"note": "move without source", "uid": 0, "service": "keyd", "op": "move", "res": "key:b", "allow": false},
	# handle operations are open
	{"note": "delete by handle", "uid": 2000, "service": "keyd", "op": "delete", "res": "key:device-id", "allow": true, "reason": "possession of the handle"},
	{"note": "parameters by handle", "uid": 2000, "service": "keyd", "op": "parameters", "res": "key:device-id", "allow": true},
	{"note": "derive by handle", "uid": 2000, "service": "keyd", "op": "derive", "res": "key:device-id", "allow": true},
	{"note": "export by handle", "uid": 2000, "service": "keyd", "op": "export", "res": "key:device-id", "allow": true},
	{"note": "sign by handle", "uid": 2000, "service": "keyd", "op": "sign", "res": "key:device-id", "allow": true},
	{"note": "encrypt by handle", "uid": 2000, "service": "keyd", "op": "encrypt", "res": "key:device-id", "allow": true},
	{"note": "decrypt by handle", "uid": 2000, "service": "keyd", "op": "decrypt", "res": "key:device-id", "allow": true},
	{"note": "unknown keyd op", "uid": 0, "service": "keyd", "op": "frobnicate", "res": "key:x", "allow": false, "reason": "no rule allows keyd frobnicate on key:x for uid 0"},
]

test_keyd[tc.note] if {
	some tc in keyd_cases
	ok(tc)
}

# The same cases through the fast path (every configured glob plain), but
# those whose globs are not plain (uid 1006).
test_keyd_plain_globs[tc.note] if {
	some case in keyd_cases
	case.uid != 1006
	tc := object.union(case, {"plain_globs": true})
	ok(tc)
}

# The operation sets (used by mint for wildcard resources) agree with the
# literal sets of the rules: every ID operation needs a principal and is
# root's, every handle operation is open, and nothing else is allowed.
op_set_cases := array.concat(
	array.concat(
		[c |
			some op in authz.keyd_id_ops
			some c in [
				{"note": sprintf("keyd %s root", [op]), "uid": 0, "service": "keyd", "op": op, "res": "key:k", "details": {"from": "j"}, "allow": true},
				{"note": sprintf("keyd %s unlisted", [op]), "uid": 2000, "service": "keyd", "op": op, "res": "key:k", "details": {"from": "j"}, "allow": false},
			]
		],
		[{"note": sprintf("keyd %s open", [op]), "uid": 2000, "service": "keyd", "op": op, "res": "key:k", "allow": true} | some op in authz.keyd_handle_ops],
	),
	array.concat(
		array.concat(
			[c |
				some op in authz.certd_id_ops
				some c in [
					{"note": sprintf("certd %s root", [op]), "uid": 0, "service": "certd", "op": op, "res": "cert:c", "allow": true},
					{"note": sprintf("certd %s unlisted", [op]), "uid": 2000, "service": "certd", "op": op, "res": "cert:c", "allow": false},
				]
			],
			[{"note": sprintf("identityd %s daemon", [op]), "uid": 1001, "service": "identityd", "op": op, "res": "identity:module:m", "allow": true} | some op in authz.identity_ops],
		),
		array.concat(
			[{"note": sprintf("tpmd %s open", [op]), "uid": 2000, "service": "tpmd", "op": op, "res": "tpm:authkey", "allow": true} | some op in authz.tpmd_ops],
			[{"note": sprintf("keyd %s by root: allowed iff a keyd op", [op]), "uid": 0, "service": "keyd", "op": op, "res": "key:k", "details": {"from": "j"}, "allow": op in (authz.keyd_id_ops | authz.keyd_handle_ops)} |
				some op in {"create", "import", "load", "move", "delete", "parameters", "derive", "export", "sign", "encrypt", "decrypt", "verify", "list"}
			],
		),
	),
)

test_operation_sets_agree[tc.note] if {
	some tc in op_set_cases
	ok(tc)
}

certd_cases := [
	{"note": "root creates", "uid": 0, "service": "certd", "op": "create", "res": "cert:x", "allow": true},
	{"note": "glob with slash and colon", "uid": 1000, "service": "certd", "op": "create", "res": "cert:agent/module/m:1:server", "allow": true},
	{"note": "import by glob", "uid": 1000, "service": "certd", "op": "import", "res": "cert:agent/a", "allow": true},
	{"note": "delete by glob", "uid": 1000, "service": "certd", "op": "delete", "res": "cert:agent/a", "allow": true},
	{"note": "delete no match", "uid": 1000, "service": "certd", "op": "delete", "res": "cert:other", "allow": false, "reason": "uid 1000 has no principal whose certs match other"},
	{"note": "keys globs do not grant certs", "uid": 1000, "service": "certd", "op": "create", "res": "cert:device-id", "allow": false},
	{"note": "question glob", "uid": 1005, "service": "certd", "op": "create", "res": "cert:c1", "allow": true},
	{"note": "question glob too long", "uid": 1005, "service": "certd", "op": "create", "res": "cert:c12", "allow": false},
	{"note": "get is open", "uid": 2000, "service": "certd", "op": "get", "res": "cert:anything", "allow": true},
	{"note": "unknown certd op", "uid": 0, "service": "certd", "op": "renew", "res": "cert:x", "allow": false},
]

test_certd[tc.note] if {
	some tc in certd_cases
	ok(tc)
}

identityd_cases := [
	# Daemon: a principal without idtype
	{"note": "daemon get device", "uid": 1001, "service": "identityd", "op": "get", "res": "identity:device", "allow": true, "reason": "identity daemon"},
	{"note": "daemon get any module", "uid": 1001, "service": "identityd", "op": "get", "res": "identity:module:other", "allow": true},
	{"note": "daemon list", "uid": 1001, "service": "identityd", "op": "list", "res": "identity:module:*", "allow": true},
	{"note": "daemon create", "uid": 1001, "service": "identityd", "op": "create", "res": "identity:module:m", "allow": true},
	{"note": "daemon update", "uid": 1001, "service": "identityd", "op": "update", "res": "identity:module:m", "allow": true},
	{"note": "daemon delete", "uid": 1001, "service": "identityd", "op": "delete", "res": "identity:module:m", "allow": true},
	{"note": "daemon reprovision", "uid": 1001, "service": "identityd", "op": "reprovision", "res": "identity:device", "allow": true},
	{"note": "daemon unknown op", "uid": 1001, "service": "identityd", "op": "frob", "res": "identity:device", "allow": false},
	{"note": "daemon and host process entries: daemon", "uid": 1007, "service": "identityd", "op": "create", "res": "identity:module:x", "allow": true},
	{"note": "named keyd principal is a daemon", "uid": 1000, "service": "identityd", "op": "list", "res": "identity:module:*", "allow": true},
	# HostProcess
	{"note": "host process gets own module", "uid": 1002, "service": "identityd", "op": "get", "res": "identity:module:hp1", "allow": true, "reason": "host process hp1"},
	{"note": "host process other module", "uid": 1002, "service": "identityd", "op": "get", "res": "identity:module:other", "allow": false, "reason": "uid 1002 is a host process"},
	{"note": "module host process no device", "uid": 1002, "service": "identityd", "op": "get", "res": "identity:device", "allow": false},
	{"note": "host process list", "uid": 1002, "service": "identityd", "op": "list", "res": "identity:module:*", "allow": false},
	{"note": "host process create own", "uid": 1002, "service": "identityd", "op": "create", "res": "identity:module:hp1", "allow": false},
	{"note": "host process update own", "uid": 1002, "service": "identityd", "op": "update", "res": "identity:module:hp1", "allow": false},
	{"note": "host process delete own", "uid": 1002, "service": "identityd", "op": "delete", "res": "identity:module:hp1", "allow": false},
	{"note": "host process reprovision", "uid": 1002, "service": "identityd", "op": "reprovision", "res": "identity:device", "allow": false},
	{"note": "host process trust bundle", "uid": 1002, "service": "identityd", "op": "trust_bundle", "res": "identity:trust-bundle", "allow": true},
	{"note": "host process provisioning", "uid": 1002, "service": "identityd", "op": "provisioning", "res": "identity:device", "allow": true},
	{"note": "local host process gets own module", "uid": 1003, "service": "identityd", "op": "get", "res": "identity:module:hp2", "allow": true},
	{"note": "device host process gets device", "uid": 1004, "service": "identityd", "op": "get", "res": "identity:device", "allow": true, "reason": "idtype device"},
	{"note": "device host process not its module", "uid": 1004, "service": "identityd", "op": "get", "res": "identity:module:hpdev", "allow": false},
	{"note": "empty idtype host process", "uid": 1008, "service": "identityd", "op": "get", "res": "identity:module:hp8", "allow": false},
	{"note": "empty idtype trust bundle", "uid": 1008, "service": "identityd", "op": "trust_bundle", "res": "identity:trust-bundle", "allow": true},
	# LocalRoot: uid 0 not listed
	{"note": "local root create", "uid": 0, "service": "identityd", "op": "create", "res": "identity:module:m", "allow": true, "reason": "local root"},
	{"note": "local root list", "uid": 0, "service": "identityd", "op": "list", "res": "identity:module:*", "allow": true},
	{"note": "local root reprovision", "uid": 0, "service": "identityd", "op": "reprovision", "res": "identity:device", "allow": true},
	# root listed as a host process
	{"note": "root host process own module", "uid": 0, "principals": root_host_process, "service": "identityd", "op": "get", "res": "identity:module:rootmod", "allow": true},
	{"note": "root host process device", "uid": 0, "principals": root_host_process, "service": "identityd", "op": "get", "res": "identity:device", "allow": false},
	{"note": "root host process create", "uid": 0, "principals": root_host_process, "service": "identityd", "op": "create", "res": "identity:module:x", "allow": false},
	{"note": "root host process trust bundle", "uid": 0, "principals": root_host_process, "service": "identityd", "op": "trust_bundle", "res": "identity:trust-bundle", "allow": true},
	{"note": "root host process keeps keyd root", "uid": 0, "principals": root_host_process, "service": "keyd", "op": "load", "res": "key:x", "allow": true},
	# Unknown
	{"note": "unknown trust bundle", "uid": 2000, "service": "identityd", "op": "trust_bundle", "res": "identity:trust-bundle", "allow": true, "reason": "open to every caller"},
	{"note": "unknown provisioning", "uid": 2000, "service": "identityd", "op": "provisioning", "res": "identity:device", "allow": true},
	{"note": "unknown get device", "uid": 2000, "service": "identityd", "op": "get", "res": "identity:device", "allow": false, "reason": "uid 2000 is not an identity principal"},
	{"note": "unknown list", "uid": 2000, "service": "identityd", "op": "list", "res": "identity:module:*", "allow": false},
	{"note": "keys-only principal is not a daemon", "uid": 1005, "service": "identityd", "op": "get", "res": "identity:device", "allow": false},
]

test_identityd[tc.note] if {
	some tc in identityd_cases
	ok(tc)
}

tpmd_cases := [
	{"note": "keys open", "uid": 2000, "service": "tpmd", "op": "keys", "res": "tpm:keys", "allow": true, "reason": "socket permissions"},
	{"note": "import open", "uid": 2000, "service": "tpmd", "op": "import", "res": "tpm:authkey", "allow": true},
	{"note": "sign open", "uid": 2000, "service": "tpmd", "op": "sign", "res": "tpm:authkey", "allow": true},
	{"note": "unknown tpmd op", "uid": 0, "service": "tpmd", "op": "clear", "res": "tpm:authkey", "allow": false},
]

test_tpmd[tc.note] if {
	some tc in tpmd_cases
	ok(tc)
}
