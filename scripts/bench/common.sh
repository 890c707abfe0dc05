# Shared by the scripts/bench-*.sh scripts: tools, the run folder, the origin, and
# starting medialink. Source it after `cd` to the repository root; it sets RUN,
# SRV/LOAD (CPU pinning), ML (the medialink binary), LOADER (the load harness),
# and a trap that stops only what these scripts started, then removes the run folder
# (media, nginx caches and stores: up to a gigabyte after bench-scale) unless
# KEEP_RUN=1 asks to keep it for a look.
DURATION=${DURATION:-10s}
RUN=$(mktemp -d /tmp/medialink-bench.XXXXXX)
PIDS=()
source scripts/lib/stop.sh
source scripts/lib/local.sh
cleanup() {
  local all=("${PIDS[@]}") f pid
  for f in "$RUN/origin/nginx.pid" "$RUN/proxy/nginx.pid"; do
    # Read once: nginx removes its pid file as it exits.
    pid=$(cat "$f" 2>/dev/null) && all+=("$pid")
  done
  stop_pids "${all[@]}"
  if [ "${KEEP_RUN:-0}" = 1 ]; then say "run folder kept: $RUN"; else rm -rf "$RUN"; fi
}
trap cleanup EXIT
# A signal ends the script (and so runs `cleanup`) even when the command it
# interrupted exits normally; without these bash would go on to the next case.
trap 'exit 130' INT
trap 'exit 143' TERM
median() { python3 -c "import statistics,sys; print(statistics.median(float(x) for x in sys.argv[1:]))" "$@"; }

# --- what we need ---------------------------------------------------------------
missing=()
for t in nginx wrk ffmpeg curl; do command -v $t >/dev/null || missing+=("$t"); done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    say "installing ${missing[*]}"
    pkgs=("${missing[@]/nginx/nginx-light}")
    DEBIAN_FRONTEND=noninteractive apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${pkgs[@]}" >/dev/null
  else
    say "missing: ${missing[*]} (Debian: apt-get install nginx-light wrk ffmpeg curl)"; exit 2
  fi
fi
python3 -c 'import PIL' 2>/dev/null || pip install -q pillow || { say "missing: Python Pillow (pip install pillow)"; exit 2; }
NGINX=$(command -v nginx)

CPUS=$(nproc)
if [ "$CPUS" -ge 2 ]; then SRV="taskset -c 0"; LOAD="taskset -c 1"; WORKERS=1; else SRV=""; LOAD=""; WORKERS=auto; fi

# --- media and nginx --------------------------------------------------------------
BENCH_RUN=$RUN python3 scripts/bench/gen-media.py >&2
# nginx workers run unprivileged: they must be able to read the run folder.
chmod 755 "$RUN"; chmod -R a+rX "$RUN/media"
start_nginx() { # role: origin (static files on 18081) or proxy (18080 cached, 18082 not)
  mkdir -p "$RUN/$1/tmp/body" "$RUN/$1/tmp/proxy"
  sed -e "s#@RUN@#$RUN#g" -e "s#@WORKERS@#$WORKERS#g" "scripts/bench/$1.conf.in" > "$RUN/$1/nginx.conf"
  $SRV "$NGINX" -c "$RUN/$1/nginx.conf" -p "$RUN/$1" -e "$RUN/$1/error.log" 2>"$RUN/$1/start.err" || {
    say "nginx ($1) did not start (is something else on ports 18080-18082?):"; cat "$RUN/$1/start.err" >&2; exit 1; }
}

# ML_BIN / LOAD_BIN reuse binaries already built (a fat-LTO build takes minutes).
if [ -n "${ML_BIN:-}" ]; then ML=$ML_BIN; else
  say "building medialink and the load harness (release)"
  cargo build --release --quiet --bin medialink
  ML=target/release/medialink
fi
if [ -n "${LOAD_BIN:-}" ]; then LOADER=("$LOAD_BIN"); else LOADER=(cargo bench --quiet --bench load --); fi
export CARGO_BIN_EXE_medialink=$ML
# The proxy floor (benches/proxy_floor.rs), for the cold cases; FLOOR_BIN reuses a build.
floor_bin() {
  if [ -n "${FLOOR_BIN:-}" ]; then echo "$FLOOR_BIN"; return; fi
  say "building the proxy floor (bench profile)"
  cargo bench --no-run --quiet --bench proxy_floor --message-format=json | python3 -c '
import json, sys
exe = [m["executable"] for m in map(json.loads, sys.stdin)
       if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "proxy_floor" and m.get("executable")]
print(exe[-1])'
}
start_floor() { # port, mode: the proxy floor in front of the origin
  $SRV "$FLOOR" --listen "127.0.0.1:$1" --upstream http://127.0.0.1:18081 --mode "$2" >> "$RUN/floor-$1.log" 2>&1 &
  PIDS+=("$!")
  for _ in $(seq 1 200); do curl -sf -o /dev/null "http://127.0.0.1:$1/media/img-100k.jpg" && return; sleep 0.05; done
  say "the proxy floor ($2) on $1 did not start"; cat "$RUN/floor-$1.log" >&2; exit 1
}

start_ml() { # port, extra args...; data in $RUN/ml-PORT unless --data-dir is given
  local port=$1; shift
  local data=("--data-dir" "$RUN/ml-$port")
  [[ " $* " == *" --data-dir "* ]] && data=()
  $SRV "$ML" serve --listen "127.0.0.1:$port" "${data[@]}" --api-token bench \
    --profile any --allow-upstream-cidr 127.0.0.1/32 --api-rate 0 "$@" >> "$RUN/ml-$port.log" 2>&1 &
  ML_PID=$!
  PIDS+=("$ML_PID")
  for _ in $(seq 1 200); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && return; sleep 0.05; done
  say "medialink on $port did not start"; cat "$RUN/ml-$port.log" >&2; exit 1
}
mkid() { # port, origin path -> /m/ID.ext (verified, so the media is cached)
  curl -sf "http://127.0.0.1:$1/api/v1/links" -H 'authorization: Bearer bench' \
    -d "{\"url\":\"http://127.0.0.1:18081$2\",\"verify\":true}" | short_path
}
# one wrk run against URL, measuring PIDS' CPU: prints "req/s p50_ms p99_ms cpu_us_per_req"
cpu_ticks() { local t=0; for p in "$@"; do for task in /proc/$p/task/*; do read -r -a s < "$task/stat" || continue; t=$((t + s[13] + s[14])); done; done; echo $t; }
ms() { python3 -c "
s='$1'
v=float(s[:-2]) if s.endswith('ms') else float(s[:-2])/1000 if s.endswith('us') else float(s[:-1])*1000
print(round(v,2))"; }
wrk_case() { # url, pids...
  local url=$1; shift
  local before after out rps p50 p99 reqs hz cpu_us
  before=$(cpu_ticks "$@")
  out=$($LOAD wrk -t1 -c"${CONNS:-64}" -d"$DURATION" --latency "$url")
  after=$(cpu_ticks "$@")
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  reqs=$(awk '/requests in/ {print $1}' <<<"$out")
  p50=$(awk '$1=="50%" {print $2}' <<<"$out"); p99=$(awk '$1=="99%" {print $2}' <<<"$out")
  hz=$(getconf CLK_TCK)
  cpu_us=$(python3 -c "print(round(($after-$before)/$hz*1e6/max($reqs,1),1))")
  echo "$rps $(ms "$p50") $(ms "$p99") $cpu_us"
}
