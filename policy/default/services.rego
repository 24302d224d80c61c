# The aziot services: keyd, certd, identityd and tpmd, authorized as aziot
# does (aziot-api.md §3.2, §5.1, §6.3, §7), without a capability token.
#
# The tokens service evaluates grant on a hypothetical action (without a
# token) to decide which capabilities a caller may mint (tokens.rego), so
# every grant rule here is honoured by minting too.
#
# The operation sets below name each service's operations; the rules spell
# them out as literals (which OPA's rule index can use), and the tests check
# that the two agree.
package warden.authz

# -------------------------------------------------------------------- keyd

# keyd operations that name a key ID: uid 0 or a matching keys glob.
keyd_id_ops := {"create", "import", "load", "move"}

# keyd operations on a key handle: open, the handle is the capability.
keyd_handle_ops := {"delete", "parameters", "derive", "export", "sign", "encrypt", "decrypt"}

grant contains msg if {
	input.action.service == "keyd"
	input.action.operation in {"create", "import", "load"}
	input.caller.uid == 0
	startswith(input.action.resource, "key:")
	msg := concat("", ["uid 0 (root) may use any key: keyd ", input.action.operation, " on ", input.action.resource])
}

# By a keys glob. This is the hot path (IoT Edge loads keys all the time),
# hence two rules without function calls: when every configured glob is
# plain (data.warden.plain_globs, set by the broker), glob.match reads it as
# aziot's wildmatch; otherwise each glob is escaped first (glob_literal).
grant contains msg if {
	input.action.service == "keyd"
	input.action.operation in {"create", "import", "load"}
	data.warden.plain_globs == true
	startswith(input.action.resource, "key:")
	id := trim_prefix(input.action.resource, "key:")
	some p in data.warden.principals[caller_key]
	some g in p.keys
	glob.match(g, null, id)
	msg := concat("", ["uid ", caller_key, " has keys glob \"", g, "\" matching ", id])
}

grant contains msg if {
	not data.warden.plain_globs
	input.action.service == "keyd"
	input.action.operation in {"create", "import", "load"}
	startswith(input.action.resource, "key:")
	id := trim_prefix(input.action.resource, "key:")
	some p in caller_principals
	some g in p.keys
	glob.match(glob_literal(g), null, id)
	msg := concat("", ["uid ", caller_key, " has keys glob \"", g, "\" matching ", id])
}

# A move needs both keys: the destination (the resource) and the source,
# details.from (aziot checks both). Without details.from it is refused.
grant contains msg if {
	input.action.service == "keyd"
	input.action.operation == "move"
	startswith(input.action.resource, "key:")
	msg := id_grant("keys", trim_prefix(input.action.resource, "key:"))
	id_grant("keys", input.action.details.from)
}

grant contains msg if {
	input.action.service == "keyd"
	input.action.operation in {"delete", "parameters", "derive", "export", "sign", "encrypt", "decrypt"}
	msg := concat("", ["keyd ", input.action.operation, " acts on a key handle: possession of the handle is the capability"])
}

# (why_not is evaluated only when nothing was granted.)
service_why_not := concat("", ["uid ", caller_key, " has no principal whose keys match ", trim_prefix(input.action.resource, "key:")]) if {
	input.action.service == "keyd"
	input.action.operation in {"create", "import", "load"}
	startswith(input.action.resource, "key:")
} else := concat("", ["uid ", caller_key, " has no principal whose keys match ", trim_prefix(input.action.resource, "key:")]) if {
	input.action.service == "keyd"
	input.action.operation == "move"
	startswith(input.action.resource, "key:")
	not keyd_move_destination_granted
} else := sprintf("uid %s has no principal whose keys match %v (the source of the move)", [caller_key, object.get(input.action.details, "from", "<missing details.from>")]) if {
	input.action.service == "keyd"
	input.action.operation == "move"
}

keyd_move_destination_granted if id_grant("keys", trim_prefix(input.action.resource, "key:"))

# ------------------------------------------------------------------- certd

# certd operations that name a cert ID: uid 0 or a matching certs glob.
certd_id_ops := {"create", "import", "delete"}

grant contains "certd get is open to every caller" if {
	input.action.service == "certd"
	input.action.operation == "get"
}

grant contains msg if {
	input.action.service == "certd"
	input.action.operation in {"create", "import", "delete"}
	startswith(input.action.resource, "cert:")
	msg := id_grant("certs", trim_prefix(input.action.resource, "cert:"))
}

service_why_not := sprintf("uid %d has no principal whose certs match %s", [uid, trim_prefix(input.action.resource, "cert:")]) if {
	input.action.service == "certd"
	input.action.operation in certd_id_ops
}

# --------------------------------------------------------------- identityd

identity_ops := {"get", "reprovision", "provisioning", "list", "create", "update", "delete", "trust_bundle"}

# The caller's identityd principals: entries with a name or an idtype. An
# entry with only keys/certs is a keyd/certd principal, as in aziot, whose
# identityd principals always have a name.
identity_principals := [p |
	some p in caller_principals
	is_identity_principal(p)
]

is_identity_principal(p) if p.name != ""

is_identity_principal(p) if has_idtype(p)

has_idtype(p) if is_array(p.idtype)

# identity_class is aziot's caller class (§6.3). Host process is checked
# before root, so root listed with an idtype is a host process.
identity_class := "daemon" if {
	some p in identity_principals
	not has_idtype(p)
} else := "hostprocess" if {
	count(identity_principals) > 0
} else := "localroot" if {
	input.caller.uid == 0
} else := "unknown"

grant contains "identityd provisioning is open to every caller" if {
	input.action.service == "identityd"
	input.action.operation == "provisioning"
}

grant contains "identityd trust_bundle is open to every caller" if {
	input.action.service == "identityd"
	input.action.operation == "trust_bundle"
}

grant contains msg if {
	input.action.service == "identityd"
	input.action.operation in {"get", "reprovision", "list", "create", "update", "delete"}
	identity_class in {"daemon", "localroot"}
	msg := identity_class_grant[identity_class]
}

identity_class_grant := {
	"daemon": sprintf("uid %d is an identity daemon (a principal without idtype): identityd allows it everything", [uid]),
	"localroot": "uid 0 is local root (not a listed principal): identityd allows it everything",
}

grant contains msg if {
	input.action.service == "identityd"
	input.action.operation == "get"
	startswith(input.action.resource, "identity:module:")
	identity_class == "hostprocess"
	m := trim_prefix(input.action.resource, "identity:module:")
	some p in identity_principals
	p.name == m
	some t in p.idtype
	t in {"module", "local"}
	msg := sprintf("uid %d is host process %s: get on its own module identity", [uid, m])
}

grant contains msg if {
	input.action.service == "identityd"
	input.action.operation == "get"
	input.action.resource == "identity:device"
	identity_class == "hostprocess"
	some p in identity_principals
	"device" in p.idtype
	msg := sprintf("uid %d is a host process with idtype device: get on the device identity", [uid])
}

service_why_not := sprintf("uid %d is a host process: identityd %s on %s is not allowed to it", [uid, input.action.operation, input.action.resource]) if {
	input.action.service == "identityd"
	identity_class == "hostprocess"
} else := sprintf("uid %d is not an identity principal: identityd allows it only trust_bundle and provisioning", [uid]) if {
	input.action.service == "identityd"
	identity_class == "unknown"
}

# -------------------------------------------------------------------- tpmd

# tpmd is open: aziot relies on the socket's permissions alone.
tpmd_ops := {"keys", "import", "sign"}

grant contains msg if {
	input.action.service == "tpmd"
	input.action.operation in {"keys", "import", "sign"}
	msg := concat("", ["tpmd ", input.action.operation, " is open (aziot relies on socket permissions)"])
}
