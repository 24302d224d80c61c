# Warden's default authorization policy: the decision and the shared helpers.
#
# The broker evaluates data.warden.authz.decision for every request. The
# decision is built from two kinds of rules:
#
#   grant contains reason if { ... }   a reason to allow (the "allow rules")
#   deny  contains reason if { ... }   a reason to refuse, which always wins
#
# allow is true iff some grant holds and no deny does. The per-service grants
# (keyd.rego, certd and identityd in services.rego, tokens.rego) reproduce
# aziot's authorization; a capability token that covers the action is one
# more grant. Everything not granted is denied.
#
# See docs/policy.md for the input document and data.warden.principals.
package warden.authz

# ---------------------------------------------------------------- decision

# decision is what the broker reads: {"allow": bool, "reasons": [string]}.
decision := {"allow": allow, "reasons": reasons}

default allow := false

# allow holds iff some grant holds and no deny does.
allow if {
	count(grant) > 0
	count(deny) == 0
}

# reasons explain the decision: the grants when allowed; otherwise the deny
# reasons (prefixed "denied: ") and, when nothing granted, why not.
reasons := sort(grant) if {
	allow
} else := array.concat(denials, not_granted)

denials := [sprintf("denied: %s", [m]) | some m in deny]

not_granted := [] if {
	count(grant) > 0
} else := [why_not]

# why_not explains a refusal; the per-service files define service_why_not.
why_not := msg if {
	msg := service_why_not
} else := sprintf("no rule allows %s %s on %s for uid %d", [
	input.action.service, input.action.operation, input.action.resource, input.caller.uid,
])

# deny is empty in the default policy: add `deny contains "why" if { ... }`
# rules to forbid what the grants would allow.
deny contains msg if {
	false
	msg := ""
}

# ------------------------------------------------------------ the caller

# uid is the caller's uid (SO_PEERCRED).
uid := input.caller.uid

# caller_principals are the configured principals of the caller's uid: one
# lookup in data.warden.principals, an object keyed by the decimal uid.
default caller_principals := []

caller_principals := ps if {
	ps := data.warden.principals[format_int(input.caller.uid, 10)]
}

# ------------------------------------------------------ the token rule

# Services whose resources a capability token can cover.
token_services := {"keyd", "certd", "identityd", "tpmd"}

# A token that covers the action grants it. (The broker refuses in Go any
# action that a present token does not cover; this rule only allows.)
grant contains msg if {
	input.action.service in token_services
	token_covers(input.action.operation, input.action.resource)
	token_covers_move_source
	msg := sprintf("token %s covers %s %s on %s", [
		input.token.id, input.action.service, input.action.operation, input.action.resource,
	])
}

# token_covers holds when a capability of the token grants op on res.
token_covers(op, res) if {
	some cap in input.token.capabilities
	op in cap.ops
	resource_covers(cap.resource, res)
}

# resource_covers: the capability resource equals res, or ends in "*" and
# res starts with what precedes the "*".
resource_covers(pattern, res) if pattern == res

resource_covers(pattern, res) if {
	endswith(pattern, "*")
	startswith(res, trim_suffix(pattern, "*"))
}

# A keyd move reads key `details.from`: a token must cover it too.
default token_covers_move_source := true

token_covers_move_source := false if {
	input.action.service == "keyd"
	input.action.operation == "move"
	not token_covers_move_source_key
}

token_covers_move_source_key if token_covers("move", move_source_resource)

move_source_resource := concat("", ["key:", input.action.details.from])

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
)

# id_grant: uid 0, or a principal of the caller with a `kind` ("keys" or
# "certs") glob matching id, may use id. Undefined otherwise.
id_grant(kind, id) := sprintf("uid 0 (root) may use %s id %s", [kind, id]) if {
	uid == 0
} else := matches[0] if {
	matches := [sprintf("uid %d principal %q has %s glob %q matching %s", [uid, object.get(p, "name", ""), kind, g, id]) |
		some p in caller_principals
		some g in p[kind]
		wildmatch(g, id)
	]
	count(matches) > 0
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
