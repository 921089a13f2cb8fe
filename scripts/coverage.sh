#!/usr/bin/env bash
# Line coverage of the test suite (README's test command, `cargo test --release`) with
# cargo-llvm-cov: an lcov file, cargo-llvm-cov's summary and a table per module.
#
#   scripts/coverage.sh                 # the whole suite (about as long as `cargo test --release`)
#   scripts/coverage.sh --test wal      # extra arguments go to `cargo llvm-cov` (a subset)
#
# Needs cargo-llvm-cov (`cargo install cargo-llvm-cov --locked`) and LLVM's llvm-cov and
# llvm-profdata: rustup's `llvm-tools` component, or Debian's llvm-19 (or newer), which reads
# the profiles of rustc 1.95 (LLVM 22). Where either is missing it says so and exits 0.
# Output in target/coverage/ (COVERAGE_OUT to change): lcov.info, summary.txt, modules.txt.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! cargo llvm-cov --version >/dev/null 2>&1; then
  echo "coverage: cargo-llvm-cov is not installed (cargo install cargo-llvm-cov --locked): skipped"
  exit 0
fi
if ! rustup component list --installed 2>/dev/null | grep -q '^llvm-tools'; then
  if [ -z "${LLVM_COV:-}" ] || [ -z "${LLVM_PROFDATA:-}" ]; then
    for dir in $(ls -d /usr/lib/llvm-*/bin 2>/dev/null | sort -t- -k2 -n -r); do
      v=$(basename "$(dirname "$dir")"); v=${v#llvm-}
      if [ "$v" -ge 19 ] && [ -x "$dir/llvm-cov" ] && [ -x "$dir/llvm-profdata" ]; then
        export LLVM_COV="$dir/llvm-cov" LLVM_PROFDATA="$dir/llvm-profdata"
        break
      fi
    done
  fi
  if [ -z "${LLVM_COV:-}" ]; then
    echo "coverage: no LLVM tools (rustup component add llvm-tools, or apt-get install llvm-19): skipped"
    exit 0
  fi
  echo "coverage: LLVM tools from $(dirname "$LLVM_COV")"
fi

out=${COVERAGE_OUT:-target/coverage}
mkdir -p "$out"
start=$(date +%s)
# Profiles of child processes (the `dcore` agents the system tests start) are kept too:
# cargo-llvm-cov builds the binary instrumented and sets LLVM_PROFILE_FILE for every process.
cargo llvm-cov clean --workspace
cargo llvm-cov --release --no-report "$@"
cargo llvm-cov report --release --lcov --output-path "$out/lcov.info"
cargo llvm-cov report --release --summary-only > "$out/summary.txt"
echo "coverage: tests took $(( $(date +%s) - start )) s"

# Lines per module (src/<module>/...; files at src/ top level as they are).
awk -F: '
  /^SF:/ { f = $2; sub(/.*\/src\//, "src/", f); n = split(f, p, "/");
           m = (n > 2) ? p[1] "/" p[2] "/" : f }
  /^LF:/ { lf[m] += $2; tlf += $2 }
  /^LH:/ { lh[m] += $2; tlh += $2 }
  END {
    printf "%-28s %8s %8s %7s\n", "module", "lines", "missed", "cover"
    for (m in lf) printf "%-28s %8d %8d %6.1f%%\n", m, lf[m], lf[m] - lh[m], 100 * lh[m] / lf[m] | "sort"
    close("sort")
    printf "%-28s %8d %8d %6.1f%%\n", "crate", tlf, tlf - tlh, 100 * tlh / tlf
  }' "$out/lcov.info" | tee "$out/modules.txt"
echo "coverage: $out/lcov.info, $out/summary.txt, $out/modules.txt"
