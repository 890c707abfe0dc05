#!/usr/bin/env bash
# User-space instructions per /m/ answer, counted by valgrind's callgrind: the same
# count for the same binary and requests whatever else the machine runs, where rates
# on a shared VM move by 10-20% between runs. Use it to compare two builds.
#
#   scripts/bench-callgrind.sh                       # cold (--cache-bytes 0), 100 KB JPEG
#   CACHE=64MiB scripts/bench-callgrind.sh           # warm: every answer a cache hit
#   BIN=path/to/medialink N=2000 FILE=img-1m.jpg scripts/bench-callgrind.sh
#
# The server runs under callgrind; 200 requests over one kept-alive connection warm
# it up, the counters are zeroed, N more are counted. valgrind counts a `rep movsb`
# (glibc's memcpy and memset at these sizes) byte by byte, so copies weigh more here
# than in time. Loopback only.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-1000}
FILE=${FILE:-img-100k.jpg}
CACHE=${CACHE:-0}
command -v valgrind >/dev/null || { printf 'missing: valgrind (Debian: apt-get install valgrind)\n' >&2; exit 2; }
BIN=${BIN:-${ML_BIN:-}}
source scripts/bench/common.sh
[ -n "$BIN" ] || BIN=$ML
BIN=$(realpath "$BIN")
start_nginx origin
# start_ml runs "$ML": a wrapper puts valgrind in front of the binary.
cat > "$RUN/under-callgrind.sh" <<EOS
#!/bin/sh
exec valgrind --tool=callgrind --callgrind-out-file=$RUN/callgrind.out "$BIN" "\$@"
EOS
chmod +x "$RUN/under-callgrind.sh"
ML=$RUN/under-callgrind.sh SRV=""
start_ml 18096 --cache-bytes "$CACHE"
ID=$(mkid 18096 "/media/$FILE")
get() { python3 - "$ID" "$1" <<'PY'
import http.client, sys
c = http.client.HTTPConnection("127.0.0.1", 18096)
for _ in range(int(sys.argv[2])):
    c.request("GET", sys.argv[1]); r = c.getresponse(); r.read()
    assert r.status == 200, r.status
PY
}
get 200
callgrind_control -z "$ML_PID" >/dev/null
get "$N"
callgrind_control -d "$ML_PID" >/dev/null
# The dump of the counted interval is the first numbered file.
total=$(callgrind_annotate "$RUN/callgrind.out.1" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1; exit}')
echo "$(basename "$BIN") $FILE cache=$CACHE: $((total / N)) instructions per request (user space, $N requests)"
