#!/usr/bin/env bash
# Scale with data (issue "Performance"): link creation (64 clients) and warm /m/
# (100 KB JPEG, wrk -c64) with SMALL links stored against LARGE links stored
# (defaults 1,000 and 1,000,000); start-up time on the large store; store bytes per
# link. Each rate is a median of ROUNDS runs. Loopback only; stops what it started.
#
#   scripts/bench-scale.sh        # DURATION=10s (in seconds) ROUNDS=3 SMALL=1000 LARGE=1000000
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}
SMALL=${SMALL:-1000}
LARGE=${LARGE:-1000000}
source scripts/bench/common.sh
start_nginx origin

# one round on PORT -> "creates/s get_req/s server_cpu_us_per_create"
round_of() {
  local port=$1 m c g before after u
  m=$(mkid "$port" /media/img-100k.jpg)
  # GET first: a create run leaves checkpoints and writeback behind it.
  g=$(wrk_case "http://127.0.0.1:$port$m" "$ML_PID" | awk '{print $1}')
  before=$(cpu_ticks "$ML_PID")
  c=$($LOAD "${LOADER[@]}" create --server "http://127.0.0.1:$port" --token bench --concurrency 64 --duration "$DURATION" 2>/dev/null | tail -1 | awk -F'|' '{print $4}' | awk '{print $1}')
  after=$(cpu_ticks "$ML_PID")
  # The server's CPU per create (all its threads): steadier than the rate, which
  # also moves with the disk's fsync times and with where the merges fall.
  u=$(python3 -c "print(round(($after-$before)/$(getconf CLK_TCK)*1e6/max($c*${DURATION%s},1),1))")
  sleep 2
  echo "$c $g $u"
}
preload() { # port n: n links in arrays of 1,000 (the harness's --preload), 0 s of load after
  $LOAD "${LOADER[@]}" create --server "http://127.0.0.1:$1" --token bench --preload "$2" --concurrency 1 --duration 0s 2>&1 | grep preloaded >&2
}

# The small store starts fresh each round: a 10 s create run adds ~100k links.
# The large store is preloaded once. Small and large rounds alternate, and swap order
# each round, so a machine whose speed drifts during the script moves both alike
# (all small rounds first, then all large ones, put 0.85x and 1.16x on one machine).
sc=(); sg=(); su=(); lc=(); lg=(); lu=()
small_round() { # round number
  say "round $1: store with $SMALL links"
  start_ml 18093 --data-dir "$RUN/small-$1"
  preload 18093 "$SMALL"
  read -r c g u < <(round_of 18093); sc+=("$c"); sg+=("$g"); su+=("$u")
  kill "$ML_PID"; wait "$ML_PID" 2>/dev/null || true
}
large_round() { # round number
  # A fresh process each round, as for the small store: a round's GETs then never
  # share the CPU with the previous round's checkpoint (a stop folds the WAL back).
  say "round $1: store with $LARGE links"
  start_ml 18094 --data-dir "$RUN/large"
  read -r c g u < <(round_of 18094); lc+=("$c"); lg+=("$g"); lu+=("$u")
  kill "$ML_PID"; wait "$ML_PID" 2>/dev/null || true
}
say "store with $LARGE links"
start_ml 18094 --data-dir "$RUN/large"
preload 18094 "$LARGE"
kill "$ML_PID"; wait "$ML_PID" 2>/dev/null || true
for r in $(seq 1 "$ROUNDS"); do
  if (( r % 2 )); then small_round "$r"; large_round "$r"; else large_round "$r"; small_round "$r"; fi
done
small_c=$(median "${sc[@]}"); small_g=$(median "${sg[@]}"); small_u=$(median "${su[@]}")
large_c=$(median "${lc[@]}"); large_g=$(median "${lg[@]}"); large_u=$(median "${lu[@]}")
links=$(python3 -c "import sqlite3; print(sqlite3.connect('file:$RUN/large/medialink.db?mode=ro', uri=True).execute('select count(*) from links').fetchone()[0])")
bytes=$(du -cb "$RUN"/large/medialink.db* | tail -1 | cut -f1)

say "start-up on the large store"
starts=()
for _ in 1 2 3; do
  t0=$(date +%s%N)
  start_ml 18094 --data-dir "$RUN/large"
  t1=$(date +%s%N)
  starts+=("$(( (t1 - t0) / 1000000 ))")
  kill "$ML_PID"; wait "$ML_PID" 2>/dev/null || true
done

echo
echo "Machine: $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), $(uname -r); medialink on CPU 0, load on CPU 1; $DURATION runs, medians of $ROUNDS."
echo
echo "| links stored | creates/s (64 clients, durable) | server CPU µs per create | warm GET 100 KB req/s |"
echo "|---:|---:|---:|---:|"
printf '| %s | %.0f | %.1f | %.0f |\n' "$SMALL" "$small_c" "$small_u" "$small_g"
printf '| %s (%s after the runs) | %.0f | %.1f | %.0f |\n' "$LARGE" "$links" "$large_c" "$large_u" "$large_g"
python3 -c "print(f'| ratio | {$large_c/$small_c:.2f}x | {$small_u/$large_u:.2f}x (small/large) | {$large_g/$small_g:.2f}x |')"
echo
echo "Start-up to a /healthz answer on the $links-link store: ${starts[*]} ms."
python3 -c "print(f'Store: {$bytes:,} bytes for {$links:,} links (SQLite file + WAL), {$bytes/$links:.0f} bytes per link.')"
