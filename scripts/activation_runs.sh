#!/usr/bin/env bash
# TFLite + XNNPACK and ours on the harness's layers with `relu6` after both stages, in turn,
# pinned to core 1, several times, and the table of BENCHMARKS.md ("With an activation").
#
#   scripts/activation_runs.sh [harness dir (default ../anchors-run)] [runs (default 5)]
#
# The harness's own runs have no activation. This uses its data, its Python environment (run
# its run.sh once first) and its timing loop: `scripts/activation_anchors.py` makes the relu6
# models and references, and times XNNPACK; the `anchors` bench times ours with
# `ACTIVATION=relu6` (layers declared with `activation: relu6`).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/harness.sh
source scripts/harness.sh
runs=${2:-5}
py=$harness/.venv/bin/python
ours=$(realpath "$(binary cargo bench --bench anchors --no-run)")
"$py" scripts/activation_anchors.py "$harness" prepare >&2  # Keras prints to stdout
export OMP_NUM_THREADS=1 TF_NUM_INTRAOP_THREADS=1 TF_NUM_INTEROP_THREADS=1 TF_CPP_MIN_LOG_LEVEL=2
csv=$harness/results/relu6-$(date -u +%Y%m%dT%H%M%SZ).csv
for run in $(seq "$runs"); do
  taskset -c 1 "$py" scripts/activation_anchors.py "$harness" time "run$run" >> "$csv"
  ACTIVATION=relu6 taskset -c 1 "$ours" "$data" "relu6-run$run" | grep ',full,' >> "$csv"
done
echo "rows: $csv" >&2
"$py" scripts/activation_anchors.py "$harness" summary "$csv"
