# Warden's default authorization policy: the decision and the shared helpers.
#
# The broker evaluates data.warden.authz.decision for every request. The
# decision is built from three kinds of rules:
#
#   grant     contains reason if { ... }  a reason to allow an aziot-service action
#   api_grant contains reason if { ... }  a reason to allow a broker API action
#   deny      contains reason if { ... }  a reason to refuse, which always wins
#
# allow is true iff some grant (or api_grant) holds and no deny does.
#   - grant: keyd, certd, identityd and tpmd as aziot authorizes them
#     (services.rego), and a capability token that covers the action (below);
#   - api_grant: the broker's own API, tokens and admin (tokens.rego). A
#     caller may mint a capability only if grant allows it without a token,
#     so grant may not depend on api_grant.
# Everything not granted is denied.
#
# Decisions must be cheap: rules start with `input.action.service == "…"`
# and the operation so that OPA's rule index evaluates only the rules of the
# requested operation, and the hot keyd rules avoid function calls.
#
# See docs/policy.md for the input document and data.warden.principals.
package warden.authz

# ---------------------------------------------------------------- decision

# decision is what the broker reads: {"allow": bool, "reasons": [string]}.
# When allowed, the reasons are the grants; when denied, the deny reasons
# (prefixed "denied: ") and, if nothing granted, why not.
decision := {"allow": true, "reasons": sort(grant)} if {
	count(grant) > 0
	count(deny) == 0
} else := {"allow": true, "reasons": sort(api_grant)} if {
	count(api_grant) > 0
	count(deny) == 0
} else := {"allow": false, "reasons": array.concat(denials, not_granted)}

# allow is the decision as a boolean, for policy authors and tests.
allow := decision.allow

denials := [concat("", ["denied: ", m]) | some m in deny]

not_granted := [] if {
	count(grant) + count(api_grant) > 0
} else := [why_not]

# why_not explains a refusal; the per-service files define service_why_not.
why_not := msg if {
	msg := service_why_not
} else := sprintf("no rule allows %s %s on %s for uid %d", [
	input.action.service, input.action.operation, input.action.resource, input.caller.uid,
])

# The default policy denies nothing that it grants: this rule (never true)
# only declares deny. Add deny rules to forbid what the grants would allow:
#   deny contains "keyd is closed for maintenance" if input.action.service == "keyd"
deny contains msg if {
	input.action.service == "-"
	msg := ""
}

# ------------------------------------------------------------ the caller

# uid is the caller's uid (SO_PEERCRED).
uid := input.caller.uid

# caller_principals are the configured principals of the caller's uid: one
# lookup in data.warden.principals, an object keyed by the decimal uid.
default caller_principals := []

caller_principals := ps if {
	ps := data.warden.principals[caller_key]
}

# caller_key is the caller's uid as a decimal string, its key in the data.
caller_key := format_int(input.caller.uid, 10)

# ------------------------------------------------------ the token rule

# A token that covers the action grants it, on the aziot services only (a
# token never grants the tokens or admin API). The broker refuses in Go any
# action that a present token does not cover; this rule only allows.
# (Two rules, for a capability naming the resource and for one ending in
# "*", to spare the hot path a call of resource_covers.)
grant contains msg if {
	input.action.service in {"keyd", "certd", "identityd", "tpmd"}
	some cap in input.token.capabilities
	cap.resource == input.action.resource
	input.action.operation in cap.ops
	token_covers_move_source
	msg := concat("", ["token ", input.token.id, " covers ", input.action.service, " ", input.action.operation, " on ", input.action.resource])
}

grant contains msg if {
	input.action.service in {"keyd", "certd", "identityd", "tpmd"}
	some cap in input.token.capabilities
	endswith(cap.resource, "*")
	startswith(input.action.resource, trim_suffix(cap.resource, "*"))
	input.action.operation in cap.ops
	token_covers_move_source
	msg := concat("", ["token ", input.token.id, " covers ", input.action.service, " ", input.action.operation, " on ", input.action.resource, " (", cap.resource, ")"])
}

# token_covers holds when a capability of the token grants op on res.
token_covers(op, res) if {
	some cap in input.token.capabilities
	op in cap.ops
	resource_covers(cap.resource, res)
}

# resource_covers: the capability resource equals res, or ends in "*" and
# res starts with what precedes the "*" (a "*" elsewhere is literal).
resource_covers(pattern, res) if pattern == res

resource_covers(pattern, res) if {
	endswith(pattern, "*")
	startswith(res, trim_suffix(pattern, "*"))
}

# A keyd move reads key details.from: a token must cover that key too.
default token_covers_move_source := true

token_covers_move_source := false if {
	input.action.service == "keyd"
	input.action.operation == "move"
	not token_covers_move_source_key
}

# (A call in `not` whose argument is undefined does not make `not` true in
# Rego: such checks go through a helper rule, as here.)
token_covers_move_source_key if token_covers("move", concat("", ["key:", input.action.details.from]))

# ------------------------------------------------------------- globs

# wildmatch is aziot's wildmatch: "*" matches any sequence (including "/"),
# "?" exactly one character, every other character only itself. glob.match
# with null delimiters has no separators; the glob metacharacters that
# wildmatch does not have ([ ] { } \) are escaped so they match literally.
# (Beware: glob.match with [] as delimiters means ["."], not "none".)
wildmatch(pattern, s) if glob.match(glob_literal(pattern), null, s)

glob_literal(pattern) := strings.replace_n(
	{"\\": "\\\\", "[": "\\[", "]": "\\]", "{": "\\{", "}": "\\}"},
	pattern,
) if {
	regex.match(`[\[\]{}\\]`, pattern)
} else := pattern

# id_grant: uid 0, or a principal of the caller with a `kind` ("keys" or
# "certs") glob matching id, may use id. Undefined otherwise. (The hot paths
# in services.rego spell this out inline: a function call costs.)
id_grant(kind, id) := concat("", ["uid 0 (root) may use ", kind, " id ", id]) if {
	input.caller.uid == 0
} else := sprintf("uid %d principal %q has %s glob %q matching %s", [input.caller.uid, m[0], kind, m[1], id]) if {
	matches := [[object.get(p, "name", ""), g] |
		some p in caller_principals
		some g in p[kind]
		glob.match(glob_literal(g), null, id)
	]
	m := matches[0]
}

# glob_covers_prefix: every id starting with prefix matches glob g. Sound,
# not complete: g is "*", or exactly prefix + "*", or q + "*" where q has no
# wildcard and prefix starts with q.
glob_covers_prefix(g, _) if g == "*"

glob_covers_prefix(g, prefix) if g == concat("", [prefix, "*"])

glob_covers_prefix(g, prefix) if {
	endswith(g, "*")
	q := trim_suffix(g, "*")
	not contains(q, "*")
	not contains(q, "?")
	startswith(prefix, q)
}

# id_prefix_grant: the caller may use every id that starts with prefix.
id_prefix_grant(kind, prefix) if {
	some p in caller_principals
	some g in p[kind]
	glob_covers_prefix(g, prefix)
}
