#!/usr/bin/env bash
# Installs what Warden's tests need. Idempotent; fails loudly.
set -euo pipefail
bin=$(realpath -m "${1:?bin dir}")
opa_version=${2:?opa version}
mkdir -p "$bin"

die() { echo "deps: $*" >&2; exit 1; }

command -v go >/dev/null || die "go is not on PATH"

# Debian packages: real peers (SoftHSM2 for PKCS#11, opensc's pkcs11-tool,
# openssl to verify signatures independently).
apt_pkgs=(softhsm2 opensc openssl swtpm swtpm-tools tpm2-tools curl)
missing=()
for p in "${apt_pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  [ "$(id -u)" = 0 ] || die "missing Debian packages ${missing[*]}: run make deps as root"
  echo "deps: installing ${missing[*]}"
  apt-get update -qq || die "apt-get update failed"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" \
    || die "apt-get install ${missing[*]} failed"
fi
[ -e /usr/lib/softhsm/libsofthsm2.so ] || die "SoftHSM2 module /usr/lib/softhsm/libsofthsm2.so not found"

# The official Azure IoT Node SDK (conformance/node, pinned by its
# lockfile) as a client of the DPS + IoT Hub emulator.
node_dir=$(dirname "$0")/../conformance/node
if [ ! -e "$node_dir/node_modules/.package-lock.json" ] || [ "$node_dir/package-lock.json" -nt "$node_dir/node_modules/.package-lock.json" ]; then
  command -v node >/dev/null || die "node is not on PATH (needed by conformance/node)"
  command -v npm >/dev/null || die "npm is not on PATH (needed by conformance/node)"
  echo "deps: npm ci in conformance/node"
  (cd "$node_dir" && npm ci --no-audit --no-fund --loglevel=error) || die "npm ci in conformance/node failed"
fi

# The standard OPA CLI, to run the default policy's Rego tests unchanged.
have=$("$bin/opa" version 2>/dev/null || true)
if ! grep -qx "Version: ${opa_version#v}" <<<"$have"; then
  echo "deps: building opa $opa_version (once; a few minutes on a cold cache)"
  GOBIN="$bin" GOFLAGS=-buildvcs=false go install "github.com/open-policy-agent/opa@$opa_version" \
    || die "could not build the opa CLI $opa_version from the Go module proxy"
fi
"$bin/opa" version | sed -n 1p
