#!/usr/bin/env bash
# bench-go-floor.sh — what a bare Go HTTPS server costs per request at the
# request rates the peers harness runs the gateways at: the harness's own
# upstream (../shared/peers/upstream, a Go server answering 64 bytes over
# mTLS) under its load generator at a few connection counts, rounds
# alternating, its CPU per request from /proc. A Go process's CPU per
# request depends on how busy it is (threads sleep and wake when work runs
# out); this puts a number on it beside `make bench-peers`.
#
# Env: PEERS=../shared/peers  CONNS="32 8 1"  ROUNDS=2  DURATION=5
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PEERS=${PEERS:-$ROOT/../shared/peers}
CONNS=${CONNS:-"32 8 1"}
ROUNDS=${ROUNDS:-2}
DURATION=${DURATION:-5}
export PEERS_STATE=${PEERS_STATE:-/tmp/peers}
die() { echo "bench-go-floor: $*" >&2; exit 1; }
for v in ROUNDS DURATION; do
  [[ "${!v}" =~ ^[0-9]+$ ]] && [ "${!v}" -ge 1 ] && [ "${!v}" -le 60 ] || die "$v=${!v} is not 1 to 60"
done
for c in $CONNS; do
  [[ "$c" =~ ^[0-9]+$ ]] && [ "$c" -ge 1 ] && [ "$c" -le 256 ] || die "CONNS: $c is not 1 to 256"
done

"$PEERS/setup.sh" >&2
"$PEERS/run-upstream.sh" start >&2
trap '"$PEERS/run-upstream.sh" stop >&2 || true' EXIT
UP=$(tr -dc '0-9' </tmp/peers-upstream.pid)
LOAD=$PEERS_STATE/bin/load
ticks() { awk '{print $14 + $15}' "/proc/$UP/stat"; }
TCK=$(getconf CLK_TCK)

echo "| round | connections | req/s | upstream CPU µs/req | p99 ms |"
echo "|---:|---:|---:|---:|---:|"
for r in $(seq 1 "$ROUNDS"); do
  for c in $CONNS; do
    t0=$(ticks)
    out=$(timeout $((DURATION + 30)) "$LOAD" -addr 127.0.0.1:9443 -sni upstream.test \
      -certs "$PEERS_STATE/certs-ecdsa" -c "$c" -json -d "${DURATION}s")
    t1=$(ticks)
    python3 -c '
import json, sys
j = json.loads(sys.argv[1]); t = (int(sys.argv[2]) - int(sys.argv[3])) / int(sys.argv[4])
print("| %s | %s | %.0f | %.1f | %.2f |" % (sys.argv[5], sys.argv[6], j["rps"], t * 1e6 / j["requests"], j["p99_ms"]))
' "$out" "$t1" "$t0" "$TCK" "$r" "$c"
  done
done
