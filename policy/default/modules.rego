# WASM provisioning modules (DESIGN §5): their host calls, and the module
# API of broker.sock.
#
# Host calls. Every host call of a module but `log` is one decision with
#   input.action.service   "modules"
#   input.action.operation the host call: http.do, keys.sign,
#                          keys.create_keypair, keys.public, keys.hmac
#                          (HMAC-SHA256 with a symmetric key, e.g. a SAS
#                          token's signature), certs.get,
#                          certs.put, tpm.keys, tpm.import_auth_key,
#                          tpm.sign, clock.sleep
#   input.action.resource  url:<host:port>, key:<id>, cert:<id>,
#                          tpm:keys, tpm:authkey, clock
#   input.module           {"name": <configured name>, "digest": "sha256:<hex>"}
#   input.caller           the broker itself
# An http.do with TLS options is also a certs.get decision per certificate
# it uses (details.purpose "tls-trust" or "tls-client") and a keys.sign
# decision for the client key (details.purpose "tls-client").
#
# The host enforces, before asking: the module's egress allowlist for
# http.do, and the job's limits. By default a configured module may use
# every host call. A security team restricts modules in two ways:
#
#   data.warden.modules.<name>.host_calls: {"<op>": ["<resource glob>", …]}
#       when set, the module may make only the listed host calls, on
#       resources matching a glob ("*" any sequence, "?" one character);
#   data.warden.modules.<name>.digests: ["sha256:<hex>", …]
#       when set, only those builds of the module may make host calls;
#
# (in the policy directory's data.json), or with deny rules, e.g.
#   deny contains "est may not sign" if {
#       input.action.service == "modules"
#       input.module.name == "est"
#       input.action.operation == "keys.sign"
#   }
#
# broker.sock: GET /modules (list), POST /modules/reload (reload) and
# POST /modules/{name}/run (run, resource module:<name>): uid 0 only.
package warden.authz

# module_host_calls are the host calls that are policy decisions.
module_host_calls := {
	"http.do", "keys.sign", "keys.create_keypair", "keys.public", "keys.hmac", "certs.get", "certs.put",
	"tpm.keys", "tpm.import_auth_key", "tpm.sign", "clock.sleep", "log",
}

# ------------------------------------------------------------ host calls

api_grant contains msg if {
	input.action.service == "modules"
	input.action.operation in {
		"http.do", "keys.sign", "keys.create_keypair", "keys.public", "keys.hmac", "certs.get", "certs.put",
		"tpm.keys", "tpm.import_auth_key", "tpm.sign", "clock.sleep", "log",
	}
	is_string(input.module.name)
	input.module.name != ""
	msg := concat("", ["module ", input.module.name, " may make host call ", input.action.operation, " (a configured module may use every host call)"])
}

# A data.warden.modules entry with host_calls lists all the module may do.
deny contains msg if {
	input.action.service == "modules"
	input.action.operation in module_host_calls
	calls := data.warden.modules[input.module.name].host_calls
	not module_call_listed(calls)
	msg := sprintf("module %s may not make host call %s on %s: not in data.warden.modules.%s.host_calls", [
		input.module.name, input.action.operation, input.action.resource, input.module.name,
	])
}

# The broker's token key and the handle validation key share the key
# store: a module that could use them would forge capability tokens or key
# handles. Go refuses both before any policy is asked (api.Guard for keyd,
# host.Options.ReservedKeys for modules); this rule says so to a policy
# author and holds in `opa eval` too.
reserved_keys := {"key:warden-token-signing-key", "key:handle-validation-key"}

deny contains msg if {
	input.action.service == "modules"
	input.action.resource in reserved_keys
	msg := concat("", ["host call ", input.action.operation, " may not use ", input.action.resource, ", reserved for the broker"])
}

module_call_listed(calls) if {
	some g in calls[input.action.operation]
	wildmatch(g, input.action.resource)
}

# A data.warden.modules entry with digests admits only those builds.
deny contains msg if {
	input.action.service == "modules"
	input.action.operation in module_host_calls
	digests := data.warden.modules[input.module.name].digests
	not module_digest_listed(digests)
	msg := sprintf("module %s build %v is not in data.warden.modules.%s.digests", [
		input.module.name, input.module.digest, input.module.name,
	])
}

module_digest_listed(digests) if input.module.digest in digests

service_why_not := sprintf("host call %s on %s without a module: only modules make host calls", [input.action.operation, input.action.resource]) if {
	input.action.service == "modules"
	input.action.operation in module_host_calls
}

# ------------------------------------------------------- broker.sock API

module_admin_ops := {"list", "reload", "run"}

api_grant contains msg if {
	input.action.service == "modules"
	input.action.operation in {"list", "reload", "run"}
	input.caller.uid == 0
	msg := concat("", ["uid 0 (root) may ", input.action.operation, " modules"])
}

service_why_not := sprintf("uid %d may not %s modules: only uid 0 may", [uid, input.action.operation]) if {
	input.action.service == "modules"
	input.action.operation in module_admin_ops
}
