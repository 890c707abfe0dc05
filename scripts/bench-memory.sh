#!/usr/bin/env bash
# Memory (issue "Performance"): medialink with --cache-bytes CACHE serves N distinct
# 1 MB JPEGs (each a different file at the origin), every one fetched, verified and
# cached, twice over with PAR concurrent clients, so the cache fills and evicts.
# Prints peak RSS (VmHWM), and the cached bytes held in files (see src/zerocopy.rs).
#
#   scripts/bench-memory.sh        # N=1000 CACHE=256MiB PAR=32
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-1000}
CACHE=${CACHE:-256MiB}
PAR=${PAR:-32}
source scripts/bench/common.sh
# N distinct, whole JPEGs: the 1 MB one with its number appended after EOI (data
# after EOI is allowed, as phones' motion photos have).
mkdir -p "$RUN/media/many"
python3 - "$RUN/media" "$N" <<'PY'
import sys
base, n = sys.argv[1], int(sys.argv[2])
img = open(f"{base}/img-1m.jpg", "rb").read()
for i in range(n):
    open(f"{base}/many/{i}.jpg", "wb").write(img + b"medialink-%08d" % i)
PY
chmod -R a+rX "$RUN/media"
start_nginx origin
start_ml 18095 --cache-bytes "$CACHE"
python3 - "$N" > "$RUN/links.json" <<'PY'
import json, sys
print(json.dumps([{"url": f"http://127.0.0.1:18081/media/many/{i}.jpg", "kind": "image"} for i in range(int(sys.argv[1]))]))
PY
# Arrays of at most 1,000 links.
python3 - "$RUN/links.json" <<'PY' > "$RUN/urls.txt"
import json, sys, urllib.request
items = json.load(open(sys.argv[1]))
for k in range(0, len(items), 1000):
    req = urllib.request.Request("http://127.0.0.1:18095/api/v1/links", data=json.dumps(items[k:k+1000]).encode(),
        headers={"authorization": "Bearer bench", "content-type": "application/json"})
    for v in json.load(urllib.request.urlopen(req)):
        print(v["short_url"])
PY
rss() { awk '/^VmRSS/ {print $2}' "/proc/$ML_PID/status"; }
echo "RSS after start and $N links: $(( $(rss) / 1024 )) MiB" >&2
for pass in 1 2; do
  t0=$(date +%s)
  $LOAD xargs -P "$PAR" -n 1 curl -sf -o /dev/null < "$RUN/urls.txt"
  say "pass $pass: $N media served in $(( $(date +%s) - t0 )) s; RSS $(( $(rss) / 1024 )) MiB"
done
hwm=$(awk '/^VmHWM/ {print $2}' "/proc/$ML_PID/status")
files=$(find "/proc/$ML_PID/fd" -lname '*(deleted)' -printf '%l\n' 2>/dev/null | wc -l)
held=$(for f in /proc/$ML_PID/fd/*; do [[ $(readlink "$f") == *"(deleted)" ]] && stat -L -c %s "$f"; done 2>/dev/null | awk '{s+=$1} END {print s+0}')
served=$(curl -s "http://127.0.0.1:18095/metrics" | awk '/^medialink_cache_misses_total/ {print $2}')
echo
echo "| media (1 MB each) | --cache-bytes | cache misses served | peak RSS (VmHWM) | cached media held in files | peak RSS + files |"
echo "|---:|---:|---:|---:|---:|---:|"
python3 -c "print(f'| $N | $CACHE | ${served:-?} | {$hwm/1024:.0f} MiB | {$held/1048576:.0f} MiB in $files files | {($hwm*1024+$held)/1048576:.0f} MiB |')"
