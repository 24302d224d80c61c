#!/usr/bin/env bash
# `make run`: start wardend with the sample config, sockets in a temp folder,
# print how to call it, and serve until Ctrl-C.
set -euo pipefail
bin=$(realpath "${1:?bin dir}")
dir=$(mktemp -d /tmp/warden-run.XXXXXX)
sed -e "s|@DIR@|$dir|g" -e "s|@UID@|$(id -u)|g" examples/config.toml > "$dir/config.toml"

"$bin/wardend" -c "$dir/config.toml" 2> "$dir/wardend.log" &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; echo; echo "wardend stopped; its files are in $dir"' EXIT
trap 'exit 0' INT TERM

for _ in $(seq 1 300); do
  "$bin/wardenctl" health -c "$dir/config.toml" >/dev/null 2>&1 && break
  kill -0 $pid 2>/dev/null || { cat "$dir/wardend.log"; echo "wardend failed to start" >&2; exit 1; }
  sleep 0.1
done
"$bin/wardenctl" health -c "$dir/config.toml" >/dev/null || { cat "$dir/wardend.log"; exit 1; }

cat <<MSG
wardend is serving (pid $pid). Config: $dir/config.toml   Log: $dir/wardend.log
Sockets: $(cd "$dir/run" && echo *.sock)  in $dir/run

Try, in another terminal:
  export PATH=$bin:\$PATH CFG=$dir/config.toml
  wardenctl health -c \$CFG
  wardenctl token mint -c \$CFG --cap key:app-1=load,sign --ttl 5m
  TOKEN=\$(wardenctl token mint -c \$CFG --cap 'identity:*=trust_bundle' --raw)
  wardenctl token introspect -c \$CFG --token "\$TOKEN"
  curl --unix-socket $dir/run/identityd.sock -H "Authorization: Bearer \$TOKEN" 'http://identityd.sock/trust-bundle?api-version=2020-09-01'
  curl --unix-socket $dir/run/keyd.sock 'http://keyd.sock/nothing?api-version=2021-05-01'
  wardenctl token revoke -c \$CFG --token "\$TOKEN"
  tail -f $dir/decisions.log

Ctrl-C stops it.
MSG
wait $pid
