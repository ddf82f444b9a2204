#!/usr/bin/env bash
# On a machine with a real GPU: the test suite against that adapter, then the GEMM, epoch and
# convolution benchmarks, and one summary table (about 8 minutes on a discrete GPU).
#
#   scripts/gpu_check.sh              everything
#   scripts/gpu_check.sh --no-tests   the benchmarks only
#
# WGTRAIN_ADAPTER picks the adapter (by default the best one: discrete first); GEMM_MAX sets
# the largest square GEMM (default 4096). Logs go to out/gpu_check/.
set -euo pipefail
cd "$(dirname "$0")/.."
out=out/gpu_check
mkdir -p "$out"
tests=1
[ "${1:-}" = "--no-tests" ] && tests=0

cargo build --release --all-targets --quiet
bin=target/release/examples
tests_line="not run"
if [ "$tests" = 1 ]; then
    if cargo test --release >"$out/tests.log" 2>&1; then status=passed; else status=FAILED; fi
    counts=$(grep -E '^test result' "$out/tests.log" | awk '{p+=$4; f+=$6} END {print p" passed, "f" failed"}')
    tests_line="$status ($counts; log: $out/tests.log)"
fi
"$bin/gemm_bench" --max "${GEMM_MAX:-4096}" --reps 5 | tee "$out/gemm.txt"
# The scalar-load tiles on the same shapes, to compare with the vec4 kernel the plan chose.
"$bin/gemm_bench" --max "${GEMM_MAX:-4096}" --reps 5 --path tiled | tee "$out/gemm_tiled.txt"
"$bin/epoch_bench" --epochs 3 | tee "$out/epoch.txt"
"$bin/conv_bench" --reps 3 | tee "$out/conv.txt"

adapter=$(sed -n 's/^adapter: //p' "$out/gemm.txt" | head -1)
echo
echo "== gpu_check summary =="
printf '%-34s %s\n' "adapter" "$adapter"
printf '%-34s %s\n' "test suite" "$tests_line"
while read -r name path gpu cpu ratio; do
    printf '%-34s %s GFLOP/s (%s path; CPU reference %s)\n' "GEMM $name" "$gpu" "$path" "$cpu"
done < <(grep -E '^[0-9]+\^3 ' "$out/gemm.txt" | awk '{print $1, $2, $3, $4, $5}')
while read -r name path gpu _; do
    printf '%-34s %s GFLOP/s (%s path)\n' "GEMM $name, scalar tiles" "$gpu" "$path"
done < <(grep -E '^[0-9]+\^3 ' "$out/gemm_tiled.txt" | awk '{print $1, $2, $3}')
grep -E '^784-' "$out/epoch.txt" | while read -r model device sps _; do
    printf '%-34s %s samples/s\n' "epoch $model ($device)" "$sps"
done
echo "(convolution figures: $out/conv.txt)"
