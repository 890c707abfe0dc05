# Sourced by .ci/run and scripts/bench/common.sh.
# stop_pids PID...: SIGTERM each, then wait (at most 5 s) until none is left, so the
# caller can remove their files afterwards (medialink folds its WAL back on SIGTERM).
stop_pids() {
  local p alive
  for p in "$@"; do kill "$p" 2>/dev/null || true; done
  for _ in $(seq 1 100); do
    alive=0
    for p in "$@"; do kill -0 "$p" 2>/dev/null && alive=1; done
    [ "$alive" = 0 ] && return 0
    sleep 0.05
  done
  return 0
}
