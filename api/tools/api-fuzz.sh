#!/usr/bin/env bash
# Property-based attack on the REST API from its own OpenAPI document (schemathesis, from
# PyPI): a node is started on free loopback ports with a temporary data dir, then schemathesis
# runs as root, as a viewer and without credentials, SECONDS/3 each, with its conformance
# checks and ours (api_fuzz_checks.py): no 5xx but 503, every error in the envelope, nothing
# but the public operations answers without credentials, a viewer changes nothing.
#
#   api-fuzz.sh [SECONDS]      (default 60; `make api-fuzz` runs 600, `make test` 30)
#   REALMQ_BIN                 the node binary (default: the debug build)
#   API_FUZZ_DIR               where the schemathesis venv lives
set -euo pipefail
cd "$(dirname "$0")"
BUDGET=${1:-60}
BIN=${REALMQ_BIN:-${CARGO_TARGET_DIR:-$HOME/.cache/realmq-target}/debug/realmq}
VENV=${API_FUZZ_DIR:-$HOME/.cache/realmq-api-fuzz}/venv
if ! "$VENV/bin/schemathesis" --version >/dev/null 2>&1; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check 'schemathesis==4.32.5'
fi

DIR=$(mktemp -d)
PID=
cleanup() { [ -n "$PID" ] && kill "$PID" 2>/dev/null; rm -rf "$DIR"; }
trap cleanup EXIT
read -r MQTT API CLUSTER < <(python3 - <<'PY'
import socket
socks = [socket.socket() for _ in range(3)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))
PY
)
# Random logins must not lock the fuzzer's own address out (failed_login_limit).
printf '[api]\nfailed_login_limit = 1000000\n[mqtt]\nsys_interval = 0\n' > "$DIR/realmq.toml"
"$BIN" --config "$DIR/realmq.toml" --data-dir "$DIR/data" --mqtt-addr "127.0.0.1:$MQTT" \
  --api-addr "127.0.0.1:$API" --cluster-addr "127.0.0.1:$CLUSTER" --ws-addr "" > "$DIR/node.log" 2>&1 &
PID=$!
BASE="http://127.0.0.1:$API"
for _ in $(seq 1 100); do
  curl -sf "$BASE/api/v1/ready" >/dev/null 2>&1 && break
  sleep 0.2
done
curl -sf "$BASE/api/v1/ready" >/dev/null || { cat "$DIR/node.log"; echo "api-fuzz: the node did not start"; exit 1; }
curl -sf -u root:123456 -X POST "$BASE/api/v1/users" -H 'Content-Type: application/json' \
  -d '{"username":"fuzz-viewer","password":"fuzz-viewer","role":"viewer"}' >/dev/null

CHECKS=not_a_server_error,status_code_conformance,content_type_conformance
CHECKS=$CHECKS,only_503_among_server_errors,errors_use_the_envelope,role_is_respected
STATUS=0
for ROLE in root viewer anonymous; do
  case $ROLE in
    root) AUTH=(-a root:123456) ;;
    viewer) AUTH=(-a fuzz-viewer:fuzz-viewer) ;;
    anonymous) AUTH=() ;;
  esac
  echo "api-fuzz: as $ROLE for $((BUDGET / 3)) s"
  if ! SCHEMATHESIS_HOOKS=api_fuzz_checks API_FUZZ_ROLE=$ROLE "$VENV/bin/schemathesis" run \
      "$BASE/api/v1/openapi.json" "${AUTH[@]}" --max-time $((BUDGET / 3)) -c "$CHECKS" \
      --seed 1 -w 1 --generation-database none --warnings off > "$DIR/$ROLE.out" 2>&1; then
    cat "$DIR/$ROLE.out"
    STATUS=1
  fi
  grep -E "generated|passed|failures" "$DIR/$ROLE.out" | tail -1
done
kill -0 "$PID" 2>/dev/null || { echo "api-fuzz: the node died"; cat "$DIR/node.log"; exit 1; }
if grep -q "panicked" "$DIR/node.log"; then
  grep -A5 "panicked" "$DIR/node.log"; echo "api-fuzz: the node panicked"; exit 1
fi
[ $STATUS = 0 ] && echo "api-fuzz: PASS" || echo "api-fuzz: FAIL"
exit $STATUS
