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
harness=$(realpath "${1:-../anchors-run}")
runs=${2:-20}
data=$harness/build/data

default=$(realpath "$(cargo bench --bench anchors --no-run 2>&1 \
  | sed -n 's/.*Executable benches\/anchors.rs (\(.*\))$/\1/p' | tail -n 1)")
echo "build: $default" >&2

before=$(ls "$harness/results" 2>/dev/null || true)
for _ in $(seq "$runs"); do
  PY_ANCHORS="tflite ort" RS_ANCHORS="" NATIVE=0 EXTRA_BENCH="$default $data" \
    "$harness/run.sh" > /dev/null
done
new=()
for run in $(ls "$harness/results"); do
  if [[ -d $harness/results/$run ]] && ! grep -qx "$run" <<< "$before"; then
    new+=("$harness/results/$run")
  fi
done
python3 scripts/bench_table.py "${new[@]}"
