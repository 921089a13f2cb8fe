#!/usr/bin/env bash
# Mutation testing with cargo-mutants (crates.io, stable): each mutant is one small change to
# the code (a return value replaced, an operator swapped, a condition negated); a mutant the
# tests do not catch is a gap in the tests, or a change that makes no difference (equivalent).
#
#   scripts/mutants.sh cluster          # src/cluster/ (about 1,500 mutants: hours)
#   scripts/mutants.sh wal              # src/persistence/wal/
#   scripts/mutants.sh transport        # src/transport/frame.rs and crypto.rs
#   scripts/mutants.sh --in-diff [REV]  # only the lines changed since REV (default: main's
#                                       # merge base, or HEAD~1 on main), any module: the check
#                                       # before a stop
#   scripts/mutants.sh wal --iterate    # extra arguments go to cargo mutants
#
# Each group runs the tests that cover it (not the whole suite: the agent and test-bed tests
# take minutes per mutant), MUTANTS_TEST_ARGS replaces them. Results in mutants.out/ (cargo
# mutants' own: caught.txt, missed.txt, timeout.txt, unviable.txt, outcomes.json); the
# survivors and why they are left are in docs/testing.md. Builds use the `mutants` profile
# (Cargo.toml): this crate unoptimized and incremental (seconds a mutant), its dependencies
# optimized.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! cargo mutants --version >/dev/null 2>&1; then
  echo "mutants: cargo-mutants is not installed (cargo install cargo-mutants --locked)"
  exit 1
fi

fast_tests=(--lib --test codec --test hostile --test wal --test wal_crash --test wal_model
            --test store --test fuzz_regressions)
group=${1:-}
shift || true
files=()
case "$group" in
  cluster)
    files=(-f 'src/cluster/**')
    # tests/sim.rs takes ~45 s a mutant; run it on the survivors only:
    #   MUTANTS_TEST_ARGS="--lib --test codec --test hostile --test sim" \
    #     scripts/mutants.sh cluster --iterate
    tests=(--lib --test codec --test hostile) ;;
  wal)
    # faulty.rs is the tests' fault-injecting filesystem (feature `testing`), not the log: a
    # mutant there changes the tests, not the product (its own unit test checks it).
    files=(-f 'src/persistence/wal/**' -e src/persistence/wal/faulty.rs)
    tests=(--lib --test wal --test wal_crash --test wal_model --test store --test fuzz_regressions) ;;
  transport)
    files=(-f src/transport/frame.rs -f src/transport/crypto.rs)
    tests=(--lib --test codec --test fuzz_regressions) ;;
  --in-diff)
    base=${1:-}
    if [ -n "$base" ]; then shift; fi
    if [ -z "$base" ]; then
      if [ "$(git rev-parse --abbrev-ref HEAD)" = main ]; then base=HEAD~1
      else base=$(git merge-base HEAD main); fi
    fi
    diff=$(mktemp); trap 'rm -f "$diff"' EXIT
    git diff "$base" -- 'src/*.rs' > "$diff"
    if [ ! -s "$diff" ]; then echo "mutants: no change to src/ since $base"; exit 0; fi
    echo "mutants: lines of src/ changed since $base"
    files=(--in-diff "$diff")
    tests=("${fast_tests[@]}") ;;
  *)
    sed -n '2,/^set -euo/{/^#/p}' "$0"; exit 2 ;;
esac
if [ -n "${MUTANTS_TEST_ARGS:-}" ]; then read -r -a tests <<< "$MUTANTS_TEST_ARGS"; fi

test_args=()
# As cargo arguments, not test arguments: they then choose what is built as well as what runs
# (building all 20 test binaries for each mutant cost about a third of its time).
for t in "${tests[@]}"; do test_args+=(--cargo-arg="$t"); done
start=$(date +%s)
set +e
cargo mutants --profile mutants --timeout-multiplier 3 "${files[@]}" "${test_args[@]}" "$@"
rc=$?
set -e
echo "mutants: $(( ($(date +%s) - start) / 60 )) min; results in mutants.out/ (exit $rc:" \
  "0 all caught, 2 some missed, 3 some timed out)"
exit $rc
