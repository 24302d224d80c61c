# The broker's own API: the tokens service and admin (DESIGN.md §3).
#
# uid 0 may mint any capability and hand tokens to any uid; any other caller
# may mint only capabilities that this policy already allows it without a
# token, and may attenuate only to itself.
package warden.authz

# ------------------------------------------------------------------ mint

api_grant contains msg if {
	input.action.service == "tokens"
	input.action.operation == "mint"
	msg := mint_grant
}

mint_grant := "uid 0 (root) may mint any capability" if {
	input.caller.uid == 0
} else := sprintf("uid %d may mint these capabilities: it is allowed each of them without a token", [uid]) if {
	is_array(input.action.details.capabilities)
	count(input.action.details.capabilities) > 0
	every cap in input.action.details.capabilities {
		well_formed(cap)
	}
	count(unmintable) == 0
}

# well_formed: a capability is {"resource": string, "ops": [string]}.
well_formed(cap) if {
	is_string(cap.resource)
	is_array(cap.ops)
	every op in cap.ops {
		is_string(op)
	}
}

# unmintable lists the requested "op on resource" pairs the caller may not
# do without a token.
unmintable := [sprintf("%v on %v", [op, object.get(cap, "resource", null)]) |
	some cap in input.action.details.capabilities
	some op in object.get(cap, "ops", [])
	not cap_mintable(cap, op)
]

cap_mintable(cap, op) if mintable(cap.resource, op)

# mintable holds when the caller may do op on every resource that the
# capability resource res covers, without a token.
mintable(res, op) if {
	not endswith(res, "*")
	allowed_without_token(service_of(res), op, res)
}

mintable(res, op) if {
	endswith(res, "*")
	wild_grant(service_of(res), op, trim_suffix(res, "*"))
}

# allowed_without_token: this policy allows the caller op on res without a
# token: grant holds and deny does not, evaluated on that action.
# (A move is checked as a move of res onto itself: a token for it must also
# cover the source key when used.)
allowed_without_token(svc, op, res) if {
	action := {
		"service": svc, "operation": op, "resource": res,
		"api_version": input.action.api_version,
		"details": hypothetical_details(svc, op, res),
	}
	count(grant) > 0 with input.action as action with input.token as null
	count(deny) == 0 with input.action as action with input.token as null
}

hypothetical_details(svc, op, res) := {"from": trim_prefix(res, "key:")} if {
	svc == "keyd"
	op == "move"
} else := {}

# service_of is the service that owns a capability resource.
service_of(res) := "keyd" if startswith(res, "key:")

service_of(res) := "certd" if startswith(res, "cert:")

service_of(res) := "identityd" if startswith(res, "identity:")

service_of(res) := "tpmd" if startswith(res, "tpm:")

# wild_grant: the caller may do op on every resource starting with prefix.
# Open operations cover any pattern; ID operations need a glob that covers
# the whole prefix (glob_covers_prefix); identity wildcards are only for
# identity daemons and local root.
wild_grant("keyd", op, _) if op in keyd_handle_ops

wild_grant("keyd", op, prefix) if {
	op in keyd_id_ops
	startswith(prefix, "key:")
	id_prefix_grant("keys", trim_prefix(prefix, "key:"))
}

wild_grant("certd", "get", _)

wild_grant("certd", op, prefix) if {
	op in certd_id_ops
	startswith(prefix, "cert:")
	id_prefix_grant("certs", trim_prefix(prefix, "cert:"))
}

wild_grant("identityd", op, _) if {
	op in identity_ops
	identity_class in {"daemon", "localroot"}
}

wild_grant("tpmd", op, _) if op in tpmd_ops

service_why_not := "mint needs at least one capability" if {
	input.action.service == "tokens"
	input.action.operation == "mint"
	count(object.get(input.action.details, "capabilities", [])) == 0
} else := sprintf("uid %d may mint only capabilities it is allowed without a token, not: %s", [uid, concat(", ", unmintable)]) if {
	input.action.service == "tokens"
	input.action.operation == "mint"
}

# ------------------------------------------------------------- attenuate

api_grant contains msg if {
	input.action.service == "tokens"
	input.action.operation == "attenuate"
	msg := attenuate_grant
}

# attenuate_target is the uid the child token is for (details.uid), the
# caller itself when absent or null.
attenuate_target := input.action.details.uid if {
	input.action.details.uid != null
} else := uid

attenuate_grant := "uid 0 (root) may hand tokens to any uid" if {
	input.caller.uid == 0
} else := sprintf("uid %d attenuates a token for itself", [uid]) if {
	attenuate_target == uid
}

service_why_not := sprintf("uid %d may attenuate tokens only for itself, not for uid %v", [uid, attenuate_target]) if {
	input.action.service == "tokens"
	input.action.operation == "attenuate"
}

# ---------------------------------------------------------------- revoke

api_grant contains msg if {
	input.action.service == "tokens"
	input.action.operation == "revoke"
	msg := revoke_grant
}

# details.token_uid is the uid the token is bound to, null when the caller
# revoked by id only (then only root may revoke).
revoke_grant := "uid 0 (root) may revoke any token" if {
	input.caller.uid == 0
} else := sprintf("uid %d revokes its own token", [uid]) if {
	input.action.details.token_uid == uid
}

service_why_not := sprintf("uid %d may revoke only its own tokens, by token (not by id alone)", [uid]) if {
	input.action.service == "tokens"
	input.action.operation == "revoke"
}

# ------------------------------------------------------- open operations

# introspect and jwks reveal nothing a token holder does not already have.
api_grant contains "tokens introspect is open to every caller" if {
	input.action.service == "tokens"
	input.action.operation == "introspect"
}

api_grant contains "tokens jwks is open to every caller" if {
	input.action.service == "tokens"
	input.action.operation == "jwks"
}

api_grant contains "admin health is open to every caller" if {
	input.action.service == "admin"
	input.action.operation == "health"
}
