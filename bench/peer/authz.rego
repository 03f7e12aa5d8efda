# The peer PDP of bench/peer.bench.ts: what people would run instead of the sidecar — nginx
# `auth_request` asking Open Policy Agent with an in-memory policy. It decides the benchmark's
# route the way the sidecar does (policies/routes.yaml, policies/model.fga):
#   GET /api/v1/works  needs works_read on publisher:{X-Publisher-Id}, which the roles viewer,
#   editor, manager, admin and api_user give.
# The access token is verified like the sidecar does (RFC 9068 profile): ES256 signature against
# the issuer's JWKS (the same JWKS document the sidecar fetches, loaded as data.jwks), issuer,
# audience, expiry, `typ: at+jwt`. The membership comes from OPA's in-memory data
# (data.memberships[publisher][user] = role), loaded with the same memberships the bench writes to
# the OpenFGA store.
#
# Input (nginx sends it as the v0 data API's body, https://www.openpolicyagent.org/docs/rest-api):
#   {"token": "<JWT>", "publisher": "<uuid>", "method": "GET", "path": "/api/v1/works"}
# `allow` is undefined unless allowed: POST /v0/data/peer/authz/allow answers 200 `true`, or 404
# (undefined document), which nginx turns into 403.
package peer.authz

# Role → the permissions it gives (the part of the model this route needs).
grants := {
	"viewer": {"works_read"},
	"editor": {"works_read"},
	"manager": {"works_read"},
	"admin": {"works_read"},
	"api_user": {"works_read"},
}

# Route rules (method, path → permission on the publisher).
permission := "works_read" if {
	input.method == "GET"
	input.path == "/api/v1/works"
}

# The verified claims; undefined for a token that is not valid.
claims := payload if {
	[valid, header, payload] := io.jwt.decode_verify(input.token, {
		"cert": data.jwks,
		"alg": "ES256",
		"iss": data.issuer,
		"aud": data.audience,
	})
	valid
	header.typ == "at+jwt"
}

allow if {
	role := data.memberships[input.publisher][claims.sub]
	permission in grants[role]
}
