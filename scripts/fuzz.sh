#!/usr/bin/env bash
# Runs one fuzz target for a bounded time (nightly toolchain and cargo-fuzz needed):
#
#   scripts/fuzz.sh wal_recovery 600     # target, seconds (default 600)
#
# Starts from fuzz/regressions/<target>/ (the kept inputs) and a corpus in
# fuzz/corpus/<target>/ (not committed). Prints libFuzzer's last status line (executions,
# coverage) and exits non-zero on a crash, whose input is left in fuzz/artifacts/<target>/:
# once fixed, copy it to fuzz/regressions/<target>/ so `cargo test` replays it
# (tests/fuzz_regressions.rs). Each input is limited to 64 KiB, one allocation to 256 MiB and
# the process to 1 GiB: an input that makes the code allocate more is a crash too.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
target=${1:?usage: scripts/fuzz.sh TARGET [SECONDS]}
seconds=${2:-600}
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  echo "fuzz: needs a nightly toolchain and cargo-fuzz (cargo install cargo-fuzz --locked)"
  exit 1
fi
mkdir -p "corpus/$target" "regressions/$target"
# wal_recovery writes a log directory per input: on tmpfs when there is one (fsync is cheap).
if [ -z "${TMPDIR:-}" ] && [ -d /dev/shm ] && [ -w /dev/shm ]; then export TMPDIR=/dev/shm; fi
log=$(mktemp)
set +e
cargo +nightly fuzz run -O "$target" "corpus/$target" "regressions/$target" -- \
  -max_total_time="$seconds" -max_len=65536 -malloc_limit_mb=256 -rss_limit_mb=1024 \
  -print_final_stats=1 2>&1 | tee "$log" | grep -E '^#[0-9]+.*(pulse|DONE)|SUMMARY|panicked|ERROR' 
rc=${PIPESTATUS[0]}
set -e
echo "fuzz $target: $(grep -E '^stat::number_of_executed_units' "$log" | awk '{print $2}') executions" \
  "in ${seconds} s, exit $rc"
grep -E '^stat::' "$log" || true
rm -f "$log"
exit "$rc"
