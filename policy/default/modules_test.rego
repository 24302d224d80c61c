# Tests of the module rules (modules.rego): host calls and the broker.sock
# module API. Fixtures (principals, ok) are in authz_test.rego.
package warden.authz_test

import data.warden.authz

est_digest := "sha256:1111111111111111111111111111111111111111111111111111111111111111"

dps_digest := "sha256:2222222222222222222222222222222222222222222222222222222222222222"

# module_input is the input of a host call by module m (null: no module).
module_input(tc) := {
	"caller": {"uid": object.get(tc, "uid", 0), "gid": 0, "pid": 1, "exe": "/usr/bin/wardend", "principal": ""},
	"token": null,
	"action": {"service": "modules", "operation": tc.op, "resource": tc.res, "api_version": "", "details": object.get(tc, "details", {})},
	"module": object.get(tc, "module", null),
	"time": "2026-12-01T12:00:00Z",
}

module_decide(tc) := d if {
	d := authz.decision with input as module_input(tc)
		with data.warden.principals as principals
		with data.warden.modules as object.get(tc, "modules", {})
}

module_ok(tc) if {
	d := module_decide(tc)
	d.allow == tc.allow
	count(d.reasons) > 0
	reason_ok(d, tc)
}

est := {"name": "est", "digest": est_digest}

dps := {"name": "dps", "digest": dps_digest}

# A security team's restrictions, as a data.json would give them.
restricted := {
	"est": {
		"host_calls": {
			"http.do": ["url:est.example.org:443", "url:*.est.example.org:443"],
			"keys.sign": ["est-*", "key:est-*"],
			"keys.public": ["key:est-*"],
			"keys.hmac": ["key:est-*"],
			"certs.get": ["cert:est-*"],
			"certs.put": ["cert:est-*"],
		},
		"digests": [est_digest],
	},
	"dps": {"digests": ["sha256:3333333333333333333333333333333333333333333333333333333333333333"]},
	"sas": {"host_calls": {"keys.hmac": ["key:device-id"], "http.do": ["url:*"]}},
}

module_cases := [
	# default: a configured module may use every host call
	{"note": "http.do", "module": est, "op": "http.do", "res": "url:est.example.org:443", "allow": true, "reason": "module est may make host call http.do"},
	{"note": "keys.sign", "module": est, "op": "keys.sign", "res": "key:device-id", "allow": true},
	{"note": "keys.create_keypair", "module": dps, "op": "keys.create_keypair", "res": "key:x", "allow": true},
	{"note": "keys.public", "module": dps, "op": "keys.public", "res": "key:x", "allow": true},
	{"note": "keys.hmac", "module": dps, "op": "keys.hmac", "res": "key:device-id", "allow": true, "reason": "module dps may make host call keys.hmac"},
	{"note": "certs.get", "module": est, "op": "certs.get", "res": "cert:x", "allow": true},
	{"note": "certs.put", "module": est, "op": "certs.put", "res": "cert:x", "allow": true},
	{"note": "tpm.keys", "module": dps, "op": "tpm.keys", "res": "tpm:keys", "allow": true},
	{"note": "tpm.import_auth_key", "module": dps, "op": "tpm.import_auth_key", "res": "tpm:authkey", "allow": true},
	{"note": "tpm.sign", "module": dps, "op": "tpm.sign", "res": "tpm:authkey", "allow": true},
	{"note": "clock.sleep", "module": dps, "op": "clock.sleep", "res": "clock", "allow": true},
	{"note": "log", "module": dps, "op": "log", "res": "log", "allow": true},
	# no module: no grant
	{"note": "host call without a module", "op": "keys.sign", "res": "key:x", "allow": false, "reason": "without a module"},
	{"note": "host call with an empty module name", "module": {"name": "", "digest": ""}, "op": "keys.sign", "res": "key:x", "allow": false},
	{"note": "unknown host call", "module": est, "op": "fs.read", "res": "file:/etc/shadow", "allow": false, "reason": "no rule allows modules fs.read"},
	# restricted by data.warden.modules
	{"note": "listed call and resource", "module": est, "modules": restricted, "op": "http.do", "res": "url:est.example.org:443", "allow": true},
	{"note": "listed wildcard resource", "module": est, "modules": restricted, "op": "http.do", "res": "url:a.est.example.org:443", "allow": true},
	{"note": "listed call, other url", "module": est, "modules": restricted, "op": "http.do", "res": "url:evil.org:443", "allow": false, "reason": "module est may not make host call http.do on url:evil.org:443"},
	{"note": "listed call, other port", "module": est, "modules": restricted, "op": "http.do", "res": "url:est.example.org:8443", "allow": false},
	{"note": "listed key glob", "module": est, "modules": restricted, "op": "keys.sign", "res": "key:est-identity", "allow": true},
	{"note": "key outside the glob", "module": est, "modules": restricted, "op": "keys.sign", "res": "key:device-id", "allow": false},
	{"note": "listed hmac key glob", "module": est, "modules": restricted, "op": "keys.hmac", "res": "key:est-sas", "allow": true},
	{"note": "hmac key outside the glob", "module": est, "modules": restricted, "op": "keys.hmac", "res": "key:device-id", "allow": false, "reason": "module est may not make host call keys.hmac on key:device-id"},
	{"note": "hmac with the listed key", "module": {"name": "sas", "digest": dps_digest}, "modules": restricted, "op": "keys.hmac", "res": "key:device-id", "allow": true},
	{"note": "hmac with another key", "module": {"name": "sas", "digest": dps_digest}, "modules": restricted, "op": "keys.hmac", "res": "key:master", "allow": false},
	{"note": "keys.sign unlisted though keys.hmac is", "module": {"name": "sas", "digest": dps_digest}, "modules": restricted, "op": "keys.sign", "res": "key:device-id", "allow": false, "reason": "not in data.warden.modules.sas.host_calls"},
	{"note": "unlisted call", "module": est, "modules": restricted, "op": "tpm.sign", "res": "tpm:authkey", "allow": false, "reason": "not in data.warden.modules.est.host_calls"},
	{"note": "unlisted log", "module": est, "modules": restricted, "op": "clock.sleep", "res": "clock", "allow": false},
	{"note": "another build of est", "module": {"name": "est", "digest": dps_digest}, "modules": restricted, "op": "http.do", "res": "url:est.example.org:443", "allow": false, "reason": "is not in data.warden.modules.est.digests"},
	{"note": "digests only: unlisted build", "module": dps, "modules": restricted, "op": "tpm.sign", "res": "tpm:authkey", "allow": false, "reason": "module dps build"},
	{"note": "restrictions of another module do not apply", "module": {"name": "hub", "digest": dps_digest}, "modules": restricted, "op": "tpm.sign", "res": "tpm:authkey", "allow": true},
	# broker.sock module API
	{"note": "root lists", "uid": 0, "op": "list", "res": "modules", "allow": true, "reason": "uid 0 (root) may list modules"},
	{"note": "root reloads", "uid": 0, "op": "reload", "res": "modules", "allow": true},
	{"note": "root runs", "uid": 0, "op": "run", "res": "module:est", "allow": true},
	{"note": "others may not list", "uid": 1000, "op": "list", "res": "modules", "allow": false, "reason": "uid 1000 may not list modules: only uid 0 may"},
	{"note": "others may not reload", "uid": 1000, "op": "reload", "res": "modules", "allow": false},
	{"note": "others may not run", "uid": 1001, "op": "run", "res": "module:est", "allow": false},
	{"note": "sign with the token key", "module": dps, "op": "keys.sign", "res": "key:warden-token-signing-key", "allow": false, "reason": "reserved for the broker"},
	{"note": "hmac with the validation key", "module": dps, "op": "keys.hmac", "res": "key:handle-validation-key", "allow": false, "reason": "reserved for the broker"},
	{"note": "token key as TLS client key", "module": est, "op": "keys.sign", "res": "key:warden-token-signing-key", "details": {"purpose": "tls-client"}, "allow": false},
	{"note": "token key even when listed", "module": {"name": "sas", "digest": dps_digest}, "modules": {"sas": {"host_calls": {"keys.sign": ["*"]}}}, "op": "keys.sign", "res": "key:warden-token-signing-key", "allow": false},
]

test_modules[tc.note] if {
	some tc in module_cases
	module_ok(tc)
}

# A deny rule of a security team wins over the default grant.
test_modules_deny_rule if {
	d := authz.decision with input as module_input({"module": est, "op": "keys.sign", "res": "key:device-id"})
		with data.warden.principals as principals
		with authz.deny as {"est may not sign"}
	not d.allow
	"denied: est may not sign" in d.reasons
}

# A deny rule on keys.hmac wins over the default grant.
test_modules_deny_hmac if {
	d := authz.decision with input as module_input({"module": dps, "op": "keys.hmac", "res": "key:device-id"})
		with data.warden.principals as principals
		with authz.deny as {"dps may not use the device key"}
	not d.allow
}

# Host calls never become mintable: a token for them is refused.
test_modules_not_mintable if {
	not authz.mintable("key:x", "keys.sign") with input as input_of({"uid": 1000, "service": "tokens", "op": "mint", "res": "tokens"})
		with data.warden.principals as principals
	not authz.mintable("key:x", "keys.hmac") with input as input_of({"uid": 1000, "service": "tokens", "op": "mint", "res": "tokens"})
		with data.warden.principals as principals
}
