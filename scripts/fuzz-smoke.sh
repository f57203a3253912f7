#!/usr/bin/env bash
# Fuzz smoke test: build every cargo-fuzz target and run each for a short,
# bounded time over the committed corpus (fuzz/corpus/<target>). Exits
# non-zero on the first crash, hang (per-input timeout), out-of-memory or
# failed property; the failing input is left in fuzz/artifacts/<target>/.
#
#   scripts/fuzz-smoke.sh                 # every target, 20 s each
#   FUZZ_SECONDS=60 scripts/fuzz-smoke.sh update_apply state_vector
#   FUZZ_REGRESSIONS=1 scripts/fuzz-smoke.sh   # also replay fuzz/regressions/
#
# The toolchain here is stable: RUSTC_BOOTSTRAP=1 lets cargo-fuzz pass its
# -Z flags. Sanitizer: none by default (FUZZ_SANITIZER=address to change);
# the targets assert their own properties, the sanitizer adds memory checks.
# New inputs found go to a scratch corpus, so the committed one is untouched.
set -euo pipefail

cd "$(dirname "$0")/.."
seconds="${FUZZ_SECONDS:-20}"
sanitizer="${FUZZ_SANITIZER:-none}"
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz-smoke: installing cargo-fuzz" >&2
    cargo install --locked cargo-fuzz
fi

if [ "$#" -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo fuzz list)
fi

start=$(date +%s)
cargo fuzz build --sanitizer "$sanitizer"
echo "fuzz-smoke: built in $(( $(date +%s) - start )) s" >&2

scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT

for target in "${targets[@]}"; do
    mkdir -p "$scratch/$target" "fuzz/corpus/$target"
    if [ "${FUZZ_REGRESSIONS:-0}" = 1 ]; then
        shopt -s nullglob
        reproducers=(fuzz/regressions/"$target"-*)
        shopt -u nullglob
        if [ "${#reproducers[@]}" -gt 0 ]; then
            echo "fuzz-smoke: $target: replaying ${#reproducers[@]} regression(s)" >&2
            cargo fuzz run --sanitizer "$sanitizer" "$target" "${reproducers[@]}" -- -runs=1
        fi
    fi
    echo "fuzz-smoke: $target for ${seconds} s" >&2
    log="$scratch/$target.log"
    if ! cargo fuzz run --sanitizer "$sanitizer" "$target" "$scratch/$target" "fuzz/corpus/$target" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 >"$log" 2>&1; then
        tail -n 80 "$log" >&2
        echo "fuzz-smoke: $target FAILED (input saved under fuzz/artifacts/$target/)" >&2
        exit 1
    fi
    grep -E '^(stat::number_of_executed_units|stat::average_exec_per_sec|Done )' "$log" | tr '\n' ' ' >&2
    echo >&2
done
echo "fuzz-smoke: all ${#targets[@]} targets passed in $(( $(date +%s) - start )) s" >&2
