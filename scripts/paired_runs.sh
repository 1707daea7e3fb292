#!/usr/bin/env bash
# Many short harness runs with only the anchors that are fastest on some MobileNet v1 layer
# (TFLite + XNNPACK, ONNX Runtime), so that each of our layers is timed within a minute of
# theirs, then BENCHMARKS.md's tables over those runs.
#
#   scripts/paired_runs.sh [harness dir (default ../anchors-run)] [runs (default 20)]
#
# On a machine whose timings switch between states for seconds at a time, a full run
# (scripts/bench_runs.sh) times ours minutes after XNNPACK; these runs shorten the gap and
# give more runs in the same time, so the median of the per-run ratios is steadier.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/harness.sh
source scripts/harness.sh
runs=${2:-20}
default=$(realpath "$(binary cargo bench --bench anchors --no-run)")
echo "build: $default" >&2

list=$(mktemp)
harness_runs "$runs" env PY_ANCHORS="tflite ort" RS_ANCHORS="" NATIVE=0 EXTRA_BENCH="$default $data" \
  "$harness/run.sh" > "$list"
mapfile -t new < "$list"
python3 scripts/bench_table.py "${new[@]}"
