#!/usr/bin/env bash
# Puts our layers in the same runs as the shared anchor harness, several times, and prints
# BENCHMARKS.md's tables from those runs.
#
#   scripts/bench_runs.sh [harness dir (default ../anchors-run)] [runs (default 4)]
#
# The harness (`../shared/bench-anchors`, copied to a writable place first, see its README)
# pins everything to one core and measures the machine's FMA peak and bandwidth in each run.
# Ours join each run through its EXTRA_BENCH hook: the default build (row `separable`) and a
# `-C target-cpu=native` build (row `separable-native`), both from `benches/anchors.rs`. After
# the runs, the default binary runs once more without pinning for the `rayon` parallel rows,
# once per forced instruction set (`ISA=avx2`, `ISA=portable`), pinned, and twelve times on
# mb1 alone, not pinned, for the parallel speed-up (`scripts/parallel_speedup.py`).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/harness.sh
source scripts/harness.sh
runs=${2:-4}
default=$(realpath "$(binary cargo bench --features rayon --bench anchors --no-run)")
native=$(realpath "$(RUSTFLAGS="-C target-cpu=native" CARGO_TARGET_DIR=target-native \
  binary cargo bench --features rayon --bench anchors --no-run)")
echo "default build: $default" >&2
echo "native build: $native" >&2

list=$(mktemp)
harness_runs "$runs" env EXTRA_BENCH="$default $data; $native $data native" \
  "$harness/run.sh" > "$list"
mapfile -t new < "$list"

extra=$harness/results/separable-extra.csv
echo "anchor,layer,part,median_us,min_us,gflops" > "$extra"
LAYERS=mb1,mb2,mb3 "$default" "$data" >> "$extra"
for isa in avx2 portable; do
  ISA=$isa taskset -c 1 "$default" "$data" "$isa" >> "$extra"
done

# Twelve passes of mb1, one core and both, for the speed-up of the parallel forward.
parallel=$harness/results/separable-parallel.csv
: > "$parallel"
for pass in $(seq 12); do
  LAYERS=mb1 "$default" "$data" "pass$pass" >> "$parallel"
done

python3 scripts/bench_table.py "${new[@]}"
echo
python3 scripts/parallel_speedup.py "$parallel"
echo
echo "Extra rows (parallel on every core; forced instruction sets, pinned): $extra"
cat "$extra"
