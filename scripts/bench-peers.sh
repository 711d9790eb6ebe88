#!/usr/bin/env bash
# bench-peers.sh — Keyway measured beside NGINX and HAProxy in one run of the
# peers harness (../shared/peers, README.md there): the same inbound mTLS →
# outbound mTLS job, the same certificates, upstream and load generator, so
# that the ratio of CPU per request between Keyway and NGINX means
# something on a shared machine. `make bench-peers` runs it.
#
# It runs the harness's setup.sh (idempotent: Debian's nginx-light and
# haproxy, certificates, the upstream and load generator; Caddy is left
# out), starts the local stack (keyway-dev) on ports of its own, applies the
# harness's Keyway manifest (keyway/render.sh: a Listener on 127.0.0.1:8446,
# the upstream as a Service with a tls-outbound binding, a Route) with the
# stack's keywayctl context, runs bench-all.sh with Keyway as an extra
# target, stops everything it started, and writes the summary to
# $OUT/summary.md (and $OUT/<timestamp>-summary.md), followed by the
# Keyway/NGINX and Keyway/HAProxy ratios of CPU µs per request, and the
# upstream's own CPU per request behind each target.
#
# Env (all optional):
#   PEERS=../shared/peers   the harness
#   KEYWAY_BIN=bin          keyway-dev, keyway-proxy, keyway-policy, keyway-secrets, keywayctl
#   ROUNDS=3  QUIET_WAIT=30  DURATION=10  MODES="h1 h2 newconn"  RETRIES=2   passed to bench-all.sh
#                           (RETRIES: re-runs of a window that other load on the machine
#                           overlapped; on a machine that is never quiet, 0 saves the time)
#   OUT=bin/bench-peers     where the summary goes
#   BENCH_TIMEOUT           seconds bench-all.sh may take (default from ROUNDS, QUIET_WAIT, DURATION)
#   KEYWAY_PORT=8446        the benchmark Listener's port (the harness's convention)
#   DEV_PORT_BASE=27000     keyway-dev's own ports are BASE+0..9, away from `make run`'s
#   KEYWAY_GOMAXPROCS=""    more Keyway targets, one stack each, measured in the same run: for each
#                           value N, "keyway-pN" runs with GOMAXPROCS=N on KEYWAY_PORT+1, +2, ...
#                           (its keyway-dev on DEV_PORT_BASE+10, +20, ...)
#   KEYWAY_VARIANTS=""      more Keyway targets, each NAME=VAR=value[,VAR=value...]: "keyway-NAME"
#                           runs with that environment, after the GOMAXPROCS ones; e.g.
#                           KEYWAY_VARIANTS="nethttp2=KEYWAY_INBOUND_HTTP2=net/http" measures
#                           net/http's h2 server beside package h2 in the same run
#   KEYWAY_WORKERS=""       more Keyway targets in NGINX's model: for each value N (2 to 4),
#                           "keyway-wN" runs N nodes of GOMAXPROCS=1 on one Listener port
#                           (SO_REUSEPORT; each its own process and configuration watch), as
#                           NGINX runs worker_processes N; after the variants
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
PEERS=${PEERS:-$ROOT/../shared/peers}
KEYWAY_BIN=${KEYWAY_BIN:-$ROOT/bin}
ROUNDS=${ROUNDS:-3}
QUIET_WAIT=${QUIET_WAIT:-30}
DURATION=${DURATION:-10}
MODES=${MODES:-"h1 h2 newconn"}
RETRIES=${RETRIES:-2}
OUT=${OUT:-$ROOT/bin/bench-peers}
KEYWAY_PORT=${KEYWAY_PORT:-8446}
DEV_PORT_BASE=${DEV_PORT_BASE:-27000}
export PEERS_STATE=${PEERS_STATE:-/tmp/peers}

log() { echo "[bench-peers $(date +%H:%M:%S)] $*" >&2; }
die() { echo "bench-peers: $*" >&2; exit 1; }

KEYWAY_GOMAXPROCS=${KEYWAY_GOMAXPROCS:-}
KEYWAY_VARIANTS=${KEYWAY_VARIANTS:-}
KEYWAY_WORKERS=${KEYWAY_WORKERS:-}
for w in $KEYWAY_WORKERS; do
  [[ "$w" =~ ^[2-4]$ ]] || die "KEYWAY_WORKERS: $w is not 2 to 4"
done
for v in $KEYWAY_VARIANTS; do
  [[ "$v" =~ ^[a-z0-9]{1,16}=KEYWAY_[A-Z0-9_]+=[^,=[:space:]]+(,KEYWAY_[A-Z0-9_]+=[^,=[:space:]]+)*$ ]] ||
    die "KEYWAY_VARIANTS: $v is not NAME=KEYWAY_VAR=value[,KEYWAY_VAR=value...] (NAME: 1 to 16 of a-z, 0-9)"
done
for v in ROUNDS QUIET_WAIT DURATION RETRIES KEYWAY_PORT DEV_PORT_BASE; do
  [[ "${!v}" =~ ^[0-9]+$ ]] || die "$v=${!v} is not a whole number"
done
for g in $KEYWAY_GOMAXPROCS; do
  [[ "$g" =~ ^[0-9]+$ ]] && [ "$g" -ge 1 ] && [ "$g" -le 256 ] || die "KEYWAY_GOMAXPROCS: $g is not 1 to 256"
done
[ $(($(wc -w <<<"$KEYWAY_GOMAXPROCS") + $(wc -w <<<"$KEYWAY_VARIANTS") + $(wc -w <<<"$KEYWAY_WORKERS"))) -le 4 ] || die "KEYWAY_GOMAXPROCS, KEYWAY_VARIANTS and KEYWAY_WORKERS: give at most 4 values in all"
[ "$ROUNDS" -ge 1 ] && [ "$ROUNDS" -le 10 ] || die "ROUNDS=$ROUNDS: give 1 to 10"
[ "$DURATION" -ge 1 ] && [ "$DURATION" -le 120 ] || die "DURATION=$DURATION: give 1 to 120 seconds"
[ "$QUIET_WAIT" -le 600 ] || die "QUIET_WAIT=$QUIET_WAIT: give at most 600 seconds"
[ "$RETRIES" -le 5 ] || die "RETRIES=$RETRIES: give 0 to 5"
[ "$DEV_PORT_BASE" -ge 1024 ] && [ "$DEV_PORT_BASE" -le 65000 ] || die "DEV_PORT_BASE=$DEV_PORT_BASE: give 1024 to 65000"
[ -f "$PEERS/README.md" ] && [ -x "$PEERS/bench-all.sh" ] ||
  die "no peers harness at $PEERS (README.md, bench-all.sh): give its folder with PEERS=..."
PEERS=$(cd "$PEERS" && pwd)
for b in keyway-dev keyway-proxy keyway-policy keyway-secrets keywayctl; do
  [ -x "$KEYWAY_BIN/$b" ] || die "$KEYWAY_BIN/$b is missing: run make build, or give the binaries' folder with KEYWAY_BIN=..."
done
KEYWAY_BIN=$(cd "$KEYWAY_BIN" && pwd)
# What the binaries were built from is not known here: the checkout's state
# at the start is recorded, for binaries built from it (make bench-peers).
CHECKOUT=$(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo unknown)
# Every target's modes, rounds and retries, plus the quiet waits, and the
# stack's start; past it the run is stopped.
BENCH_TIMEOUT=${BENCH_TIMEOUT:-$((600 + ROUNDS * (4 + $(wc -w <<<"$KEYWAY_GOMAXPROCS $KEYWAY_VARIANTS $KEYWAY_WORKERS")) * (QUIET_WAIT + $(wc -w <<<"$MODES") * (1 + RETRIES) * (DURATION + 2 + QUIET_WAIT))))}
[[ "$BENCH_TIMEOUT" =~ ^[0-9]+$ ]] || die "BENCH_TIMEOUT=$BENCH_TIMEOUT is not a whole number"

port_busy() { ss -Hltn "sport = :$1" 2>/dev/null | grep -q LISTEN; }
port_busy "$KEYWAY_PORT" && die "port $KEYWAY_PORT is taken: free it or give KEYWAY_PORT=..."

log "setup: $PEERS/setup.sh (installs nginx-light and haproxy once; certificates; upstream and load generator)"
"$PEERS/setup.sh" >&2
CERTS=$PEERS_STATE/certs-ecdsa

DATA=$(mktemp -d /tmp/keyway-bench-peers.XXXXXX)
STACK_PIDS=()
NODE_PIDS=() # the nodes started beside a stack's own (KEYWAY_WORKERS)
stop_stack() {
  local pid
  for pid in "${NODE_PIDS[@]}" "${STACK_PIDS[@]}"; do
    if kill -0 "$pid" 2>/dev/null; then
      log "stopping keyway-dev (pid $pid)"
      kill -TERM "$pid" 2>/dev/null || true
      for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
      if kill -0 "$pid" 2>/dev/null; then
        log "keyway-dev (pid $pid) ignored SIGTERM for 20 s: SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
      fi
    fi
    wait "$pid" 2>/dev/null || true
  done
  STACK_PIDS=()
  NODE_PIDS=()
}
cleanup() {
  local rc=$?
  stop_stack
  if [ "$rc" = 0 ]; then rm -rf "$DATA"; else log "kept $DATA (keyway-dev.log) for a look"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# start_stack NAME BASE PORT [VAR=value ...]: a keyway-dev stack of its own
# (data in $DATA/NAME, ports BASE..BASE+9, the environment given) serving
# the harness's manifest on 127.0.0.1:PORT.
start_stack() {
  local name=$1 base=$2 port=$3 dir="$DATA/$1" pid i
  shift 3
  p() { echo "127.0.0.1:$((base + $1))"; }
  port_busy "$port" && die "port $port is taken: free it or give KEYWAY_PORT=..."
  mkdir -p "$dir"
  log "starting keyway-dev for $name${*:+ ($*)} from $KEYWAY_BIN, data $dir, ports $base..$((base + 9))"
  env "$@" "$KEYWAY_BIN/keyway-dev" --bin "$KEYWAY_BIN" --data "$dir" \
    --nats-port "$base" --policy "$(p 1)" --proxy "$(p 2)" --proxy-admin "$(p 3)" \
    --proxy-tls "$(p 4)" --upstream "$(p 5)" --secrets "$(p 6)" --secrets-internal "$(p 7)" \
    --keywayctl-config "$dir/keywayctl.yaml" >"$dir/keyway-dev.log" 2>&1 </dev/null &
  pid=$!
  STACK_PIDS+=("$pid")
  for i in $(seq 1 900); do
    grep -q '^Keyway is running' "$dir/keyway-dev.log" && break
    kill -0 "$pid" 2>/dev/null || { tail -20 "$dir/keyway-dev.log" >&2; die "keyway-dev exited before it was ready (log above)"; }
    [ "$i" = 900 ] && { tail -20 "$dir/keyway-dev.log" >&2; die "keyway-dev not ready after 180 s (log above)"; }
    sleep 0.2
  done
  log "keyway-dev ready; applying $PEERS/keyway/render.sh's manifest (Listener on 127.0.0.1:$port)"
  "$PEERS/keyway/render.sh" "$CERTS" "$port" >"$dir/bench.yaml"
  timeout 120 "$KEYWAY_BIN/keywayctl" --keywayconfig "$dir/keywayctl.yaml" --context keyway-dev \
    apply --wait -f "$dir/bench.yaml" >&2 || die "keywayctl apply of the benchmark manifest failed"
  for i in $(seq 1 100); do
    port_busy "$port" && break
    [ "$i" = 100 ] && die "the node does not listen on 127.0.0.1:$port after the apply"
    sleep 0.1
  done
}

# more_nodes NAME PORT COUNT BASE [VAR=value ...]: COUNT-1 more keyway-proxy
# processes beside the node of the stack serving 127.0.0.1:PORT, with its
# arguments but proxy and admin ports of their own (BASE, BASE+1, ...) and
# their own node ids; the Listener's port is bound with SO_REUSEPORT, so
# the kernel spreads its connections over them all.
more_nodes() {
  local name=$1 port=$2 count=$3 base=$4 pid cwd i j args
  shift 4
  pid=$(ss -Hltnp "sport = :$port" 2>/dev/null | grep -o 'pid=[0-9]*' | cut -d= -f2 | head -1)
  [ -n "$pid" ] || die "$name: no node listens on 127.0.0.1:$port"
  mapfile -d '' args <"/proc/$pid/cmdline"
  cwd=$(readlink "/proc/$pid/cwd")
  for i in $(seq 2 "$count"); do
    (cd "$cwd" && exec env "$@" "${args[@]}" --listen "127.0.0.1:$((base + 2 * i))" \
      --admin-listen "127.0.0.1:$((base + 2 * i + 1))" --node-id "$name-$i") \
      >"$DATA/$name/node-$i.log" 2>&1 </dev/null &
    NODE_PIDS+=("$!")
    for j in $(seq 1 300); do
      [ "$(ss -Hltnp "sport = :$port" 2>/dev/null | grep -o 'pid=[0-9]*' | sort -u | wc -l)" -ge "$i" ] && break
      [ "$j" = 300 ] && { tail -20 "$DATA/$name/node-$i.log" >&2; die "$name: node $i does not listen on 127.0.0.1:$port after 60 s (log above)"; }
      sleep 0.2
    done
  done
  log "$name: $count nodes serve 127.0.0.1:$port"
}

start_stack keyway "$DEV_PORT_BASE" "$KEYWAY_PORT"
TARGETS="keyway=127.0.0.1:$KEYWAY_PORT"
n=0
for g in $KEYWAY_GOMAXPROCS; do
  n=$((n + 1))
  start_stack "keyway-p$g" $((DEV_PORT_BASE + 10 * n)) $((KEYWAY_PORT + n)) "GOMAXPROCS=$g"
  TARGETS="$TARGETS keyway-p$g=127.0.0.1:$((KEYWAY_PORT + n))"
done
for v in $KEYWAY_VARIANTS; do
  n=$((n + 1))
  name=${v%%=*}
  IFS=, read -r -a vars <<<"${v#*=}"
  start_stack "keyway-$name" $((DEV_PORT_BASE + 10 * n)) $((KEYWAY_PORT + n)) "${vars[@]}"
  TARGETS="$TARGETS keyway-$name=127.0.0.1:$((KEYWAY_PORT + n))"
done
for w in $KEYWAY_WORKERS; do
  n=$((n + 1))
  start_stack "keyway-w$w" $((DEV_PORT_BASE + 10 * n)) $((KEYWAY_PORT + n)) GOMAXPROCS=1
  more_nodes "keyway-w$w" $((KEYWAY_PORT + n)) "$w" $((DEV_PORT_BASE + 500 + 10 * n)) GOMAXPROCS=1
  TARGETS="$TARGETS keyway-w$w=127.0.0.1:$((KEYWAY_PORT + n))"
done

log "bench-all.sh: direct, nginx, haproxy, $TARGETS; ROUNDS=$ROUNDS QUIET_WAIT=$QUIET_WAIT DURATION=$DURATION MODES=\"$MODES\" RETRIES=$RETRIES; at most ${BENCH_TIMEOUT}s"
# RECORD=0: the harness's own folder may be read-only; the summary is copied to $OUT.
(cd "$PEERS" && PEERS="nginx haproxy" EXTRA_TARGETS="$TARGETS" ROUNDS=$ROUNDS \
  QUIET_WAIT=$QUIET_WAIT DURATION=$DURATION MODES="$MODES" RETRIES=$RETRIES RECORD=0 \
  timeout --signal=TERM --kill-after=30 "$BENCH_TIMEOUT" ./bench-all.sh 2>&1 >"$DATA/bench-all.out") |
  tee "$DATA/bench-all.err" >&2 ||
  die "bench-all.sh failed or ran past ${BENCH_TIMEOUT}s (output in $DATA)"
stop_stack

RES=$(sed -n 's/.*results: \([^ ]*\) (results.jsonl.*/\1/p' "$DATA/bench-all.err" | tail -1)
[ -n "$RES" ] && [ -s "$RES/summary.md" ] || die "bench-all.sh wrote no summary (output in $DATA)"
mkdir -p "$OUT"
TS=$(basename "$RES")
{
  cat "$RES/summary.md"
  echo
  echo "### Keyway against the peers in this run (target CPU µs per request, medians; lower is better)"
  echo
  python3 - "$RES/results.jsonl" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
clean = {(r["label"], r["mode_name"]) for r in rows if not r.get("contaminated")}
us = {}
for r in rows:
    k = (r["label"], r["mode_name"])
    if r.get("contaminated") and k in clean:
        continue
    if r["rps"]:
        us.setdefault(k, []).append(r["target_cpu_cores"] / r["rps"] * 1e6)
med = {k: statistics.median(v) for k, v in us.items()}
print("| target | mode | keyway | nginx | haproxy | keyway / nginx | keyway / haproxy |")
print("|---|---|---:|---:|---:|---:|---:|")
targets = sorted({l for l, _ in med if l == "keyway" or l.startswith("keyway-")})
for t in targets:
    for m in ["h1", "h2", "newconn"]:
        k, n, h = med.get((t, m)), med.get(("nginx", m)), med.get(("haproxy", m))
        if k is None:
            continue
        f = lambda x: "–" if x is None else "%.0f" % x
        q = lambda a, b: "–" if a is None or not b else "%.2f×" % (a / b)
        print("| %s | %s | %s | %s | %s | %s | %s |" % (t, m, f(k), f(n), f(h), q(k, n), q(k, h)))
PY
  echo
  echo "### The upstream's CPU per request behind each target (a bare Go HTTPS server; medians, µs)"
  echo
  echo "The same server costs more per request the less busy it is; \"direct\" is it alone, at the load"
  echo "generator's full rate. scripts/bench-go-floor.sh measures it at other connection counts."
  echo
  python3 - "$RES/results.jsonl" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
up, rps = {}, {}
for r in rows:
    k = (r["label"], r["mode_name"])
    if r["mode_name"] not in ("h1", "h2") or not r["rps"] or r.get("contaminated"):
        continue
    # Measured directly, the upstream is the target: its CPU is the target's.
    cores = r["target_cpu_cores"] if r["label"] == "direct" else r.get("upstream_cpu_cores")
    if cores is None:
        continue
    up.setdefault(k, []).append(cores / r["rps"] * 1e6)
    rps.setdefault(k, []).append(r["rps"])
print("| behind | h1 µs/req | h1 req/s | h2 µs/req | h2 req/s |")
print("|---|---:|---:|---:|---:|")
for t in sorted({l for l, _ in up}, key=lambda l: (l != "direct", l)):
    cells = []
    for m in ("h1", "h2"):
        k = (t, m)
        cells += ["%.0f" % statistics.median(up[k]), "%.0f" % statistics.median(rps[k])] if k in up else ["–", "–"]
    print("| %s | %s |" % (t, " | ".join(cells)))
PY
  echo
  echo "Command: make bench-peers ROUNDS=$ROUNDS QUIET_WAIT=$QUIET_WAIT RETRIES=$RETRIES DURATION=$DURATION MODES=\"$MODES\"; Keyway from $KEYWAY_BIN (checkout $CHECKOUT at the start); harness results in $RES."
} >"$OUT/$TS-summary.md"
cp "$OUT/$TS-summary.md" "$OUT/summary.md"
cat "$OUT/summary.md"
log "summary: $OUT/summary.md (and $OUT/$TS-summary.md)"
