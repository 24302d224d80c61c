#!/usr/bin/env bash
# Installs what Warden's tests need. Idempotent; fails loudly.
set -euo pipefail
bin=$(realpath -m "${1:?bin dir}")
opa_version=${2:?opa version}
mkdir -p "$bin"

die() { echo "deps: $*" >&2; exit 1; }

command -v go >/dev/null || die "go is not on PATH"

# The standard OPA CLI, to run the default policy's Rego tests unchanged.
if [ ! -x "$bin/opa" ] || ! "$bin/opa" version 2>/dev/null | grep -q "^Version: ${opa_version#v}$"; then
  echo "deps: building opa $opa_version (once; a few minutes on a cold cache)"
  GOBIN="$bin" GOFLAGS=-buildvcs=false go install "github.com/open-policy-agent/opa@$opa_version" \
    || die "could not build the opa CLI $opa_version from the Go module proxy"
fi
"$bin/opa" version | head -1
