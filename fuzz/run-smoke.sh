#!/usr/bin/env bash
# Smoke-fuzzes every target for $FUZZ_SECONDS (default 30) each, seeded from fuzz/seeds/<target>.
# Exits non-zero if any target crashes (artifacts land in fuzz/artifacts/<target>/).
# Usage: fuzz/run-smoke.sh [target...]
set -uo pipefail

FUZZ_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$FUZZ_DIR"
FUZZ_SECONDS="${FUZZ_SECONDS:-30}"
export RUSTC_BOOTSTRAP=1
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$FUZZ_DIR/target}"

if ! command -v cargo-fuzz >/dev/null 2>&1; then
    echo "installing cargo-fuzz" >&2
    cargo install cargo-fuzz || exit 2
fi

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(frame_decoder snapshot_decoder segment_recovery stream_file_decoder id_files_damage)
fi

failed=()
for t in "${targets[@]}"; do
    echo "=== $t (${FUZZ_SECONDS}s) ==="
    mkdir -p "corpus/$t" "seeds/$t"
    log="$CARGO_TARGET_DIR/smoke-$t.log"
    mkdir -p "$CARGO_TARGET_DIR"
    # corpus/<t> is the (git-ignored) working corpus; seeds/<t> is read for initial inputs.
    cargo fuzz run "$t" "corpus/$t" "seeds/$t" -- \
        -max_total_time="$FUZZ_SECONDS" -print_final_stats=1 2>&1 | tee "$log" | grep -E \
        '^(#[0-9]+[[:space:]]+DONE|stat::number_of_executed_units|==[0-9]+==|SUMMARY|thread .* panicked|Test unit written|artifact_prefix)' 
    status=${PIPESTATUS[0]}
    if [ "$status" -ne 0 ]; then
        echo "!!! $t FAILED (exit $status), log: $log" >&2
        failed+=("$t")
    fi
done

if [ ${#failed[@]} -ne 0 ]; then
    echo "crashing targets: ${failed[*]}" >&2
    exit 1
fi
echo "all targets clean"
