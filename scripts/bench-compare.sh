#!/usr/bin/env bash
# Side-by-side throughput of medialink against its peers on this machine (issue
# "Performance"): nginx serving the file, nginx proxy_cache (warm), nginx proxy
# without cache (cold), and medialink warm / cold, plus link creation. The cold cases
# also run the proxy floor (benches/proxy_floor.rs): a bare proxy on medialink's own
# stack, to tell the stack's cost from medialink's.
#
#   scripts/bench-compare.sh            # DURATION=10s ROUNDS=3 CONNS=64
#   ML_BIN=... LOAD_BIN=... FLOOR_BIN=... scripts/bench-compare.sh   # reuse builds
#   ONLY=cold scripts/bench-compare.sh  # only the cases whose name matches (a regex;
#                                       # "creation" names link creation)
#
# Servers are pinned to CPU 0 and wrk to CPU 1 when there are 2+ CPUs; every case
# runs ROUNDS times alternating between peers; the table shows medians, p50/p99
# latency, server CPU time per request (utime+stime from /proc, the fair measure
# when wrk itself is the bottleneck) and the ratio medialink/peer.
# It installs what it can (apt-get, pip) or says exactly what is missing, and stops
# only the processes it started. Loopback only.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}
ONLY=${ONLY:-}
wanted() { [[ -z $ONLY || $1 =~ $ONLY ]]; }
CONNS=${CONNS:-64}
source scripts/bench/common.sh
: > "$RUN/results.txt"
start_nginx origin
start_nginx proxy
start_ml 18090
start_ml 18091 --cache-bytes 0
# The floors, by port: a bare hyper proxy streaming, collecting, through medialink's
# fetcher, and with medialink's checks of the bytes (benches/proxy_floor.rs).
declare -A FLOORS=([18093]=stream [18094]=collect [18095]=fetcher [18096]=verified)
if wanted "cold 100 KB JPEG" || wanted "cold 1 MB JPEG"; then
  FLOOR=$(floor_bin) || { say "the proxy floor (benches/proxy_floor.rs) did not build"; exit 1; }
  for port in "${!FLOORS[@]}"; do start_floor "$port" "${FLOORS[$port]}"; done
fi
declare -A WARM COLD
for f in img-100k.jpg img-1m.jpg audio-300k.ogg; do
  WARM[$f]=$(mkid 18090 "/media/$f"); COLD[$f]=$(mkid 18091 "/media/$f")
done
for p in /m/abc123.jpg /m/big456.jpg /m/aud789.ogg; do curl -sf -o /dev/null "http://127.0.0.1:18080$p"; done

# --- measurement ----------------------------------------------------------------
pid_of_port() { ss -ltnpH "sport = :$1" | sed -n 's/.*pid=\([0-9]*\).*/\1/p' | sort -u; }
server_pids() { # port -> the serving processes (nginx: its workers)
  local pids; pids=$(pid_of_port "$1")
  for p in $pids; do pgrep -P "$p" || true; echo "$p"; done | sort -u
}
run_case() { # url port -> "req/s p50_ms p99_ms cpu_us_per_req"
  # shellcheck disable=SC2046
  wrk_case "$1" $(server_pids "$2")
}

measure() { # case-name, then pairs of label url port
  local name=$1; shift
  wanted "$name" || return 0
  local -a specs=("$@")
  for round in $(seq 1 "$ROUNDS"); do
    # alternate the order each round so neither peer always runs first
    local n=$(( ${#specs[@]} / 3 )) i
    for k in $(seq 0 $((n - 1))); do
      if (( round % 2 )); then i=$k; else i=$((n - 1 - k)); fi
      local label=${specs[$((i*3))]} url=${specs[$((i*3+1))]} port=${specs[$((i*3+2))]}
      say "  $name / $label / round $round"
      echo "$name|$label|$(run_case "$url" "$port")" >> "$RUN/results.txt"
    done
  done
}

M=http://127.0.0.1:18090; C=http://127.0.0.1:18091
measure "warm 100 KB JPEG" nginx-static http://127.0.0.1:18081/media/img-100k.jpg 18081 nginx-proxy_cache http://127.0.0.1:18080/m/abc123.jpg 18080 medialink "$M${WARM[img-100k.jpg]}" 18090
measure "warm 1 MB JPEG" nginx-static http://127.0.0.1:18081/media/img-1m.jpg 18081 nginx-proxy_cache http://127.0.0.1:18080/m/big456.jpg 18080 medialink "$M${WARM[img-1m.jpg]}" 18090
measure "warm 300 KB OGG" nginx-static http://127.0.0.1:18081/media/audio-300k.ogg 18081 nginx-proxy_cache http://127.0.0.1:18080/m/aud789.ogg 18080 medialink "$M${WARM[audio-300k.ogg]}" 18090
floors() { # origin path -> the floors' specs for measure, in port order
  local port
  for port in $(printf '%s\n' "${!FLOORS[@]}" | sort -n); do
    echo "hyper-floor-${FLOORS[$port]} http://127.0.0.1:$port$1 $port"
  done
}
# shellcheck disable=SC2046
measure "cold 100 KB JPEG" nginx-no-cache http://127.0.0.1:18082/m/abc123.jpg 18082 medialink-cache-0 "$C${COLD[img-100k.jpg]}" 18091 $(floors /media/img-100k.jpg)
# shellcheck disable=SC2046
measure "cold 1 MB JPEG" nginx-no-cache http://127.0.0.1:18082/m/big456.jpg 18082 medialink-cache-0 "$C${COLD[img-1m.jpg]}" 18091 $(floors /media/img-1m.jpg)

if wanted "link creation"; then
  say "link creation (load harness, durable before 201), $ROUNDS rounds"
  # one harness run -> its table line; the median line of ROUNDS runs by rate
  harness() { $LOAD "${LOADER[@]}" "$@" --server "$M" --token bench --duration "$DURATION" 2>/dev/null | tail -1; }
  median_line() { python3 -c "
import sys
lines = [l for l in sys.argv[1:] if l]
lines.sort(key=lambda l: float(l.split('|')[3].split()[0]))
print(lines[len(lines) // 2] if lines else '| (no result) |')" "$@"; }
  c1=(); c64=(); cb=()
  for round in $(seq 1 "$ROUNDS"); do
    say "  creation / round $round"
    c1+=("$(harness create --concurrency 1)")
    c64+=("$(harness create --concurrency 64)")
    cb+=("$(harness batch --concurrency 4 --batch 1000)")
  done
  create1=$(median_line "${c1[@]}"); create64=$(median_line "${c64[@]}"); batch=$(median_line "${cb[@]}")
fi

# --- the table ------------------------------------------------------------------
echo
echo "Machine: $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), $(uname -r); servers on CPU 0, wrk on CPU 1; wrk -t1 -c$CONNS -d$DURATION; medians of $ROUNDS alternating rounds."
echo
python3 - "$RUN/results.txt" <<'PY'
import statistics, sys
from collections import OrderedDict
runs = OrderedDict()
for line in open(sys.argv[1]):
    name, label, vals = line.rstrip("\n").split("|")
    runs.setdefault(name, OrderedDict()).setdefault(label, []).append([float(v) for v in vals.split()])
print("| case | server | req/s | p50 ms | p99 ms | server CPU µs/req | medialink/peer req/s | medialink/peer CPU per req (lower is better) |")
print("|---|---|---:|---:|---:|---:|---:|---:|")
for name, peers in runs.items():
    med = {label: [statistics.median(col) for col in zip(*rows)] for label, rows in peers.items()}
    ml = next(l for l in med if l.startswith("medialink"))
    for label, (rps, p50, p99, cpu) in med.items():
        if label == ml:
            r1 = r2 = "—"
        else:
            r1 = f"{med[ml][0] / rps:.2f}x"
            r2 = f"{med[ml][3] / max(cpu, 0.01):.2f}x"
        print(f"| {name} | {label} | {rps:,.0f} | {p50:.2f} | {p99:.2f} | {cpu:.1f} | {r1} | {r2} |")
PY
wanted "link creation" || exit 0
echo
echo "Link creation (each link durable before its 201; median of $ROUNDS runs):"
echo
echo '| mode | clients | rate | p50 | p99 | errors |'
echo '|---|---|---:|---:|---:|---:|'
echo "$create1"; echo "$create64"; echo "$batch"
