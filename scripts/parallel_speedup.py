"""Prints the speed-up of `forward_into_parallel` over `forward_into` from passes of the anchors
bench (benches/anchors.rs built with `--features rayon`, not pinned), as BENCHMARKS.md gives it.

    python scripts/parallel_speedup.py passes.csv

`passes.csv` holds the bench's rows (`anchor,layer,part,median_us,min_us,gflops`), each pass
tagged with its own anchor name (`separable-pass1`, ...), as `scripts/bench_runs.sh` writes
them. Within a pass the one-core and the parallel rows are timed one after the other; each pass
gives a speed-up by its medians and one by its fastest calls, and the summary is the median of
those over the passes.
"""
import csv
import statistics
import sys
from collections import defaultdict


def main(path):
    passes = defaultdict(dict)
    with open(path) as f:
        for row in csv.reader(f):
            if len(row) != 6 or row[2] not in ("full", "parallel"):
                continue
            try:
                passes[(row[0], row[1])][row[2]] = (float(row[3]), float(row[4]))
            except ValueError:
                continue
    by_layer = defaultdict(list)
    print("| pass | layer | one core (median / fastest, µs) | both cores | speed-up (median) | speed-up (fastest) |")
    print("|---|---|---:|---:|---:|---:|")
    for (name, layer), parts in passes.items():
        if "full" not in parts or "parallel" not in parts:
            continue
        (one_med, one_min), (par_med, par_min) = parts["full"], parts["parallel"]
        speedup = (one_med / par_med, one_min / par_min)
        by_layer[layer].append(speedup)
        print(f"| {name} | {layer} | {one_med:.0f} / {one_min:.0f} | {par_med:.0f} / {par_min:.0f} "
              f"| {speedup[0]:.2f} | {speedup[1]:.2f} |")
    print()
    for layer, speedups in by_layer.items():
        medians = [s[0] for s in speedups]
        fastest = [s[1] for s in speedups]
        print(f"{layer}: {len(speedups)} passes; speed-up by the medians {statistics.median(medians):.2f} "
              f"(median of the passes; {min(medians):.2f} to {max(medians):.2f}), "
              f"by the fastest calls {statistics.median(fastest):.2f} "
              f"({min(fastest):.2f} to {max(fastest):.2f})")


if __name__ == "__main__":
    main(sys.argv[1])
