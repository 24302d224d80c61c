#!/usr/bin/env bash
# `make run`: start the DPS + IoT Hub emulator and wardend with the sample
# config (DPS symmetric-key group enrollment, a host-process principal with a
# module identity), sockets in a temp folder; wait until the device is
# provisioned, print its identity and how to use it, and serve until Ctrl-C.
set -euo pipefail
bin=$(realpath "${1:?bin dir}")
dir=$(mktemp -d /tmp/warden-run.XXXXXX)
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done; echo; echo "wardend and the emulator stopped; their files are in $dir"' EXIT
trap 'exit 0' INT TERM

# The emulator, with one group enrollment whose key only the emulator and
# wardend's key store know.
head -c 32 /dev/urandom > "$dir/group.key"
printf '{"groups":[{"name":"warden-sample","primaryKey":"%s"}]}\n' "$(base64 -w0 < "$dir/group.key")" > "$dir/enrollments.json"
"$bin/warden-emulator" -listen 127.0.0.1:0 -enrollments "$dir/enrollments.json" -ca-out "$dir/emulator-ca.pem" \
  -poll-delay 1 > "$dir/emulator.json" 2> "$dir/emulator.log" &
pids+=($!)
for _ in $(seq 1 100); do [ -s "$dir/emulator.json" ] && break; sleep 0.1; done
[ -s "$dir/emulator.json" ] || { cat "$dir/emulator.log"; echo "the emulator failed to start" >&2; exit 1; }
url=$(sed -n 's/.*"url":"\([^"]*\)".*/\1/p' "$dir/emulator.json")
scope=$(sed -n 's/.*"idScope":"\([^"]*\)".*/\1/p' "$dir/emulator.json")

sha() { sha256sum "$1" | cut -d' ' -f1; }
sed -e "s|@DIR@|$dir|g" -e "s|@UID@|$(id -u)|g" -e "s|@BIN@|$bin|g" -e "s|@EMULATOR_URL@|$url|g" \
  -e "s|@ID_SCOPE@|$scope|g" -e "s|@DPS_SHA256@|$(sha "$bin/modules/dps.wasm")|g" \
  -e "s|@HUB_SHA256@|$(sha "$bin/modules/hub.wasm")|g" examples/config.toml > "$dir/config.toml"

# wardend provisions the device before it opens its sockets.
"$bin/wardend" -c "$dir/config.toml" 2> "$dir/wardend.log" &
pid=$!
pids=("$pid" "${pids[@]}")
for _ in $(seq 1 600); do
  "$bin/wardenctl" health -c "$dir/config.toml" >/dev/null 2>&1 && break
  kill -0 $pid 2>/dev/null || { cat "$dir/wardend.log"; echo "wardend failed to start" >&2; exit 1; }
  sleep 0.1
done
"$bin/wardenctl" health -c "$dir/config.toml" >/dev/null || { cat "$dir/wardend.log"; exit 1; }

ids="curl -s --unix-socket $dir/run/identityd.sock"
identity=$($ids 'http://identityd.sock/identities/identity?api-version=2020-09-01')
field() { sed -n "s/.*\"$1\":\"\([^\"]*\)\".*/\1/p" <<<"$identity"; }
hub=$(field hubName) device=$(field deviceId)

cat <<MSG
The DPS + IoT Hub emulator serves $url (log: $dir/emulator.log).
wardend (pid $pid) provisioned the device through DPS (group enrollment) and
created your module identity on the hub. Config: $dir/config.toml   Log: $dir/wardend.log

Device $device on hub $hub. Your module identity (GET /identities/identity as uid $(id -u)):
  $identity

Try, in another terminal:
  export PATH=$bin:\$PATH CFG=$dir/config.toml
  wardenctl identity get -c \$CFG                 # your module identity (identityd I1)
  SAS=\$(wardenctl identity sas -c \$CFG)           # a module SAS token, signed by keyd on the derived handle
  curl -s --cacert $dir/emulator-ca.pem -H "Authorization: \$SAS" "https://$hub/devices/$device/modules/sample-agent/twin?api-version=2021-04-12"
  # the same under a capability token scoped to just this identity and its key:
  CAP=\$(wardenctl token mint -c \$CFG --raw --ttl 10m --cap identity:module:sample-agent=get --cap key:aziot_identityd_master_id=sign)
  wardenctl identity sas -c \$CFG --token "\$CAP"
  wardenctl token introspect -c \$CFG --token "\$CAP"
  curl -s --unix-socket $dir/run/identityd.sock 'http://identityd.sock/identities/provisioning?api-version=2021-12-01'
  wardenctl health -c \$CFG
  ls $dir/state/identity            # device_info, prev_state, module backups
  tail -f $dir/decisions.log

Ctrl-C stops both.
MSG
wait $pid
