#!/usr/bin/env bash
# Runs every cargo-fuzz target for SECONDS each (default 600), one after another,
# and prints one line per target: seconds run, executions, and whether it crashed.
#
# Seeds live in fuzz/seeds/<target>/ (committed); the working corpus in
# fuzz/corpus/<target>/ (gitignored) grows from them. Logs go to fuzz/logs/.
# cargo-fuzz needs nightly flags; RUSTC_BOOTSTRAP=1 lets the stable toolchain take them.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]
set -uo pipefail
cd "$(dirname "$0")/../fuzz"

secs="${1:-600}"
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(canon_guard sniff range)

command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz
export RUSTC_BOOTSTRAP=1
mkdir -p logs

failed=0
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t"
  cp -n "seeds/$t"/* "corpus/$t/" 2>/dev/null || true
  log="logs/$t.log"
  start=$(date +%s)
  # -max_total_time stops libFuzzer cleanly; a crash stops it early with exit != 0
  # and leaves the input in artifacts/<target>/.
  nice -n 10 cargo fuzz run "$t" "corpus/$t" -- -max_total_time="$secs" -print_final_stats=1 >"$log" 2>&1
  rc=$?
  ran=$(( $(date +%s) - start ))
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
  if [ "$rc" -eq 0 ]; then
    verdict="no crash"
  else
    verdict="FAILED (exit $rc; see $log and fuzz/artifacts/$t/)"
    failed=1
  fi
  printf '%-12s ran %ss (incl. build), %s executions, %s\n' "$t" "$ran" "${execs:-?}" "$verdict" | tee -a logs/summary.txt
done
exit "$failed"
