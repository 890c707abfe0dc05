#!/usr/bin/env bash
# Side-by-side throughput of medialink against its peers on this machine (issue
# "Performance"): nginx serving the file, nginx proxy_cache (warm), nginx proxy
# without cache (cold), and medialink warm / cold, plus link creation.
#
#   scripts/bench-compare.sh            # DURATION=10s ROUNDS=3 CONNS=64
#
# Servers are pinned to CPU 0 and wrk to CPU 1 when there are 2+ CPUs; every case
# runs ROUNDS times alternating between peers; the table shows medians, p50/p99
# latency, server CPU time per request (utime+stime from /proc, the fair measure
# when wrk itself is the bottleneck) and the ratio medialink/peer.
# It installs what it can (apt-get, pip) or says exactly what is missing, and stops
# only the processes it started. Loopback only.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-10s}
ROUNDS=${ROUNDS:-3}
CONNS=${CONNS:-64}
RUN=$(mktemp -d /tmp/medialink-bench.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  [ -f "$RUN/origin/nginx.pid" ] && kill "$(cat "$RUN/origin/nginx.pid")" 2>/dev/null || true
  [ -f "$RUN/proxy/nginx.pid" ] && kill "$(cat "$RUN/proxy/nginx.pid")" 2>/dev/null || true
}
trap cleanup EXIT
say() { printf '%s\n' "$*" >&2; }

# --- what we need ---------------------------------------------------------------
missing=()
for t in nginx wrk ffmpeg; do command -v $t >/dev/null || missing+=("$t"); done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    say "installing ${missing[*]}"
    pkgs=("${missing[@]/nginx/nginx-light}")
    DEBIAN_FRONTEND=noninteractive apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${pkgs[@]}" >/dev/null
  else
    say "missing: ${missing[*]} (Debian: apt-get install nginx-light wrk ffmpeg)"; exit 2
  fi
fi
python3 -c 'import PIL' 2>/dev/null || pip install -q pillow || { say "missing: Python Pillow (pip install pillow)"; exit 2; }
NGINX=$(command -v nginx)

CPUS=$(nproc)
if [ "$CPUS" -ge 2 ]; then SRV="taskset -c 0"; LOAD="taskset -c 1"; WORKERS=1; else SRV=""; LOAD=""; WORKERS=auto; fi

# --- media and peers --------------------------------------------------------------
BENCH_RUN=$RUN python3 scripts/bench/gen-media.py >&2
# nginx workers run unprivileged: they must be able to read the run folder.
chmod 755 "$RUN"; chmod -R a+rX "$RUN/media"
for role in origin proxy; do
  mkdir -p "$RUN/$role/tmp/body" "$RUN/$role/tmp/proxy"
  sed -e "s#@RUN@#$RUN#g" -e "s#@WORKERS@#$WORKERS#g" "scripts/bench/$role.conf.in" > "$RUN/$role/nginx.conf"
  $SRV "$NGINX" -c "$RUN/$role/nginx.conf" -p "$RUN/$role" -e "$RUN/$role/error.log" 2>/dev/null
done

# ML_BIN / LOAD_BIN reuse binaries already built (a fat-LTO build takes minutes).
if [ -n "${ML_BIN:-}" ]; then ML=$ML_BIN; else
  say "building medialink and the load harness (release)"
  cargo build --release --quiet --bin medialink
  ML=target/release/medialink
fi
if [ -n "${LOAD_BIN:-}" ]; then LOADER=("$LOAD_BIN"); else LOADER=(cargo bench --quiet --bench load --); fi
export CARGO_BIN_EXE_medialink=$ML
start_ml() { # port, extra args...
  local port=$1; shift
  $SRV "$ML" serve --listen "127.0.0.1:$port" --data-dir "$RUN/ml-$port" --api-token bench \
    --profile any --allow-upstream-cidr 127.0.0.1/32 --api-rate 0 "$@" > "$RUN/ml-$port.log" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && return; sleep 0.1; done
  say "medialink on $port did not start"; cat "$RUN/ml-$port.log" >&2; exit 1
}
start_ml 18090
start_ml 18091 --cache-bytes 0
mkid() { # port, origin path -> /m/ID.ext
  curl -sf "http://127.0.0.1:$1/api/v1/links" -H 'authorization: Bearer bench' \
    -d "{\"url\":\"http://127.0.0.1:18081$2\",\"verify\":true}" | python3 -c 'import json,sys; u=json.load(sys.stdin)["short_url"]; print(u[u.index("/m/"):])'
}
declare -A WARM COLD
for f in img-100k.jpg img-1m.jpg audio-300k.ogg; do
  WARM[$f]=$(mkid 18090 "/media/$f"); COLD[$f]=$(mkid 18091 "/media/$f")
done
for p in /m/abc123.jpg /m/big456.jpg /m/aud789.ogg; do curl -sf -o /dev/null "http://127.0.0.1:18080$p"; done

# --- measurement ----------------------------------------------------------------
pid_of_port() { ss -ltnpH "sport = :$1" | sed -n 's/.*pid=\([0-9]*\).*/\1/p' | sort -u; }
cpu_ticks() { local t=0; for p in "$@"; do for task in /proc/$p/task/*; do read -r -a s < "$task/stat"; t=$((t + s[13] + s[14])); done; done; echo $t; }
server_pids() { # port -> the serving processes (nginx: its workers)
  local pids; pids=$(pid_of_port "$1")
  for p in $pids; do pgrep -P "$p" || true; echo "$p"; done | sort -u
}
# one wrk run: prints "req/s p50_ms p99_ms cpu_us_per_req"
run_case() {
  local url=$1 port=$2 pids before after out rps p50 p99 reqs
  pids=$(server_pids "$port")
  before=$(cpu_ticks $pids)
  out=$($LOAD wrk -t1 -c"$CONNS" -d"$DURATION" --latency "$url")
  after=$(cpu_ticks $pids)
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  reqs=$(awk '/requests in/ {print $1}' <<<"$out")
  p50=$(awk '$1=="50%" {print $2}' <<<"$out"); p99=$(awk '$1=="99%" {print $2}' <<<"$out")
  local hz; hz=$(getconf CLK_TCK)
  local cpu_us; cpu_us=$(python3 -c "print(round(($after-$before)/$hz*1e6/max($reqs,1),1))")
  echo "$rps $(ms "$p50") $(ms "$p99") $cpu_us"
}
ms() { python3 -c "
s='$1'
v=float(s[:-2]) if s.endswith('ms') else float(s[:-2])/1000 if s.endswith('us') else float(s[:-1])*1000
print(round(v,2))"; }
median() { python3 -c "import statistics,sys; print(statistics.median(float(x) for x in sys.argv[1:]))" "$@"; }

measure() { # case-name, then pairs of label url port
  local name=$1; shift
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
measure "cold 100 KB JPEG" nginx-no-cache http://127.0.0.1:18082/m/abc123.jpg 18082 medialink-cache-0 "$C${COLD[img-100k.jpg]}" 18091
measure "cold 1 MB JPEG" nginx-no-cache http://127.0.0.1:18082/m/big456.jpg 18082 medialink-cache-0 "$C${COLD[img-1m.jpg]}" 18091

say "link creation (load harness, durable before 201)"
create1=$($LOAD "${LOADER[@]}" create --server "$M" --token bench --concurrency 1 --duration "$DURATION" 2>/dev/null | tail -1)
create64=$($LOAD "${LOADER[@]}" create --server "$M" --token bench --concurrency 64 --duration "$DURATION" 2>/dev/null | tail -1)
batch=$($LOAD "${LOADER[@]}" batch --server "$M" --token bench --concurrency 4 --batch 1000 --duration "$DURATION" 2>/dev/null | tail -1)

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
echo
echo "Link creation (each link durable before its 201):"
echo "$create1"; echo "$create64"; echo "$batch"
