#!/usr/bin/env bash
# wgtrain's epoch benchmark and the Burn baseline, alternated, so both see the same machine.
# Usage: bash baselines/compare.sh [ROUNDS]   (release builds of both; about 5 minutes a round
# on a 2-core lavapipe machine, most of it Burn)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
export XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-/tmp/xdg-$(id -u)}
mkdir -p "$XDG_RUNTIME_DIR" && chmod 700 "$XDG_RUNTIME_DIR"
cargo build --release --quiet --example epoch_bench
cargo build --release --quiet --manifest-path baselines/burn/Cargo.toml
for r in $(seq "$rounds"); do
    echo "== round $r: wgtrain"
    ./target/release/examples/epoch_bench --epochs 2 | tail -n +2
    echo "== round $r: burn"
    ./baselines/burn/target/release/burn_baseline --epochs 2 | grep -E ' 2 +[0-9]+ '
done
