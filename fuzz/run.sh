#!/usr/bin/env bash
# Runs every fuzz target for SECONDS each (default 60), bounded by libFuzzer's
# -max_total_time, prints a summary (time, executions, coverage, corpus) and exits 1 when
# any target crashed (the input is in fuzz/artifacts/<target>/; reproduce it with
# `cargo +nightly fuzz run -s none <target> fuzz/artifacts/<target>/<file>`).
#
#   fuzz/run.sh [SECONDS] [TARGET...]
#
# Needs the nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`). Environment:
#   PARALLEL=N        targets run N at a time (default 1)
#   SANITIZER=S       cargo fuzz's sanitizer (default none: the crate forbids unsafe code,
#                     and without ASan builds and runs are about twice as fast)
#   FUZZ_WORK=DIR     where the growing corpora and logs go (default: under the target dir);
#                     the committed seeds in fuzz/corpus/<target> are read, never written
#   CARGO_TARGET_DIR  the build folder (default fuzz/target)
set -euo pipefail
cd "$(dirname "$0")"
secs="${1:-60}"
shift || true
parallel="${PARALLEL:-1}"
sanitizer="${SANITIZER:-none}"
target_dir="${CARGO_TARGET_DIR:-$PWD/target}"
work="${FUZZ_WORK:-$target_dir/fuzz-work}"
mkdir -p "$work/logs"

if [ $# -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo +nightly fuzz list)
fi

echo "building ${#targets[@]} fuzz targets (sanitizer: $sanitizer)..."
cargo +nightly fuzz build -s "$sanitizer" >"$work/logs/build.log" 2>&1 || {
    tail -40 "$work/logs/build.log"
    echo "fuzz build failed (log: $work/logs/build.log)"
    exit 1
}

run_one() {
    local t="$1"
    mkdir -p "$work/corpus/$t"
    local start=$SECONDS rc=0
    cargo +nightly fuzz run -s "$sanitizer" "$t" "$work/corpus/$t" "corpus/$t" -- \
        -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        >"$work/logs/$t.log" 2>&1 || rc=$?
    echo "$rc $((SECONDS - start))" >"$work/logs/$t.result"
}

running=0
for t in "${targets[@]}"; do
    echo "fuzzing $t for ${secs}s"
    run_one "$t" &
    running=$((running + 1))
    if [ "$running" -ge "$parallel" ]; then
        wait -n || true
        running=$((running - 1))
    fi
done
wait || true

failed=0
printf '\n%-16s %8s %12s %9s %7s %7s  %s\n' target seconds executions exec/s cov corpus result
for t in "${targets[@]}"; do
    log="$work/logs/$t.log"
    read -r rc took <"$work/logs/$t.result"
    execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1 || true)
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*' || true)
    corpus=$(find "$work/corpus/$t" -type f | wc -l)
    rate=$(( ${execs:-0} / (took > 0 ? took : 1) ))
    if [ "$rc" = 0 ]; then
        result=ok
    else
        result="CRASH (exit $rc; log $log)"
        failed=1
    fi
    printf '%-16s %8s %12s %9s %7s %7s  %s\n' "$t" "$took" "${execs:-?}" "$rate" "${cov:-?}" "$corpus" "$result"
done
if [ "$failed" = 1 ]; then
    echo
    grep -h -A3 -E '^(thread .* panicked|==[0-9]+== ERROR|SUMMARY)' "$work"/logs/*.log | head -40 || true
    ls -1 artifacts/*/ 2>/dev/null | head -20 || true
    exit 1
fi
