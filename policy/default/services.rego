# The aziot services: keyd, certd, identityd and tpmd, as aziot authorizes them
# (aziot-api.md §3.2, §5.1, §6.3, §7).
#
# base_grant(service, op, resource) is the reason the caller may do op on
# resource *without* a token, or undefined. It serves the requests themselves
# and the tokens service's mint check (a caller may mint only what it could
# do without a token).
package warden.authz

grant contains msg if {
	msg := base_grant(input.action.service, input.action.operation, input.action.resource)
	move_source_allowed
}

# -------------------------------------------------------------------- keyd

# keyd operations that name a key ID: uid 0 or a matching keys glob.
keyd_id_ops := {"create", "import", "load", "move"}

# keyd operations on a key handle: open, the handle is the capability.
keyd_handle_ops := {"delete", "parameters", "derive", "export", "sign", "encrypt", "decrypt"}

base_grant("keyd", op, _) := sprintf("keyd %s acts on a key handle: possession of the handle is the capability", [op]) if {
	op in keyd_handle_ops
}

base_grant("keyd", op, res) := id_grant("keys", trim_prefix(res, "key:")) if {
	op in keyd_id_ops
	startswith(res, "key:")
}

# A move also needs the source key, action.details.from (aziot checks both).
default move_source_allowed := true

move_source_allowed := false if {
	input.action.service == "keyd"
	input.action.operation == "move"
	not move_source_granted
}

# (A call in `not` whose argument is undefined does not make `not` true in
# Rego: such checks go through a helper rule.)
move_source_granted if id_grant("keys", input.action.details.from)

keyd_destination_granted if base_grant("keyd", input.action.operation, input.action.resource)

service_why_not := sprintf("uid %d has no principal whose keys match %s", [uid, trim_prefix(input.action.resource, "key:")]) if {
	input.action.service == "keyd"
	input.action.operation in keyd_id_ops
	not keyd_destination_granted
} else := sprintf("uid %d has no principal whose keys match %s (the source of the move)", [uid, object.get(input.action.details, "from", "<missing>")]) if {
	input.action.service == "keyd"
	input.action.operation == "move"
}

# ------------------------------------------------------------------- certd

certd_id_ops := {"create", "import", "delete"}

base_grant("certd", "get", _) := "certd get is open to every caller"

base_grant("certd", op, res) := id_grant("certs", trim_prefix(res, "cert:")) if {
	op in certd_id_ops
	startswith(res, "cert:")
}

service_why_not := sprintf("uid %d has no principal whose certs match %s", [uid, trim_prefix(input.action.resource, "cert:")]) if {
	input.action.service == "certd"
	input.action.operation in certd_id_ops
}

# --------------------------------------------------------------- identityd

identity_ops := {"get", "reprovision", "provisioning", "list", "create", "update", "delete", "trust_bundle"}

# The caller's identityd principals: entries with a name or an idtype (an
# entry with only keys/certs is a keyd/certd principal, as in aziot, where
# identityd principals always have a name).
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
	uid == 0
} else := "unknown"

base_grant("identityd", "provisioning", _) := "identityd provisioning is open to every caller"

base_grant("identityd", "trust_bundle", _) := "identityd trust_bundle is open to every caller"

base_grant("identityd", op, _) := sprintf("uid %d is an identity daemon (a principal without idtype): identityd allows it everything", [uid]) if {
	not op in {"provisioning", "trust_bundle"}
	op in identity_ops
	identity_class == "daemon"
}

base_grant("identityd", op, _) := "uid 0 is local root (not a listed principal): identityd allows it everything" if {
	not op in {"provisioning", "trust_bundle"}
	op in identity_ops
	identity_class == "localroot"
}

base_grant("identityd", "get", res) := sprintf("uid %d is host process %s: get on its own module identity", [uid, m]) if {
	identity_class == "hostprocess"
	startswith(res, "identity:module:")
	m := trim_prefix(res, "identity:module:")
	some p in identity_principals
	p.name == m
	some t in p.idtype
	t in {"module", "local"}
}

base_grant("identityd", "get", "identity:device") := sprintf("uid %d is a host process with idtype device: get on the device identity", [uid]) if {
	identity_class == "hostprocess"
	some p in identity_principals
	"device" in p.idtype
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

base_grant("tpmd", op, _) := sprintf("tpmd %s is open (aziot relies on socket permissions)", [op]) if {
	op in tpmd_ops
}
