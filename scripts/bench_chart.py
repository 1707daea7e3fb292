"""Draws BENCHMARKS.md's chart: GFLOP/s of the full layer (depthwise + pointwise) per MobileNet
v1 layer and per implementation, from the CSVs of one or more anchor-harness runs (the median
over runs of each run's figure).

    python scripts/bench_chart.py results/<run>/anchors.csv [more runs' CSVs] docs/benchmarks.png

The CSV rows are `anchor,layer,part,median_us,min_us,gflops` (see benches/anchors.rs); only
`part == full` rows are drawn. Needs matplotlib (scripts/requirements.txt).
"""
import csv
import statistics
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

LAYERS = ["mb1", "mb2", "mb3", "mb5", "mb7", "mb13"]
ANCHORS = [
    ("separable", "separable (this crate)"),
    ("tflite-xnnpack", "TFLite + XNNPACK"),
    ("torch-cl", "PyTorch oneDNN, channels-last"),
    ("ort", "ONNX Runtime"),
    ("tract-native", "tract (native)"),
    ("candle", "candle"),
]


def main(csv_paths, png_path):
    runs = {}
    for csv_path in csv_paths:
        with open(csv_path) as f:
            for row in csv.DictReader(f):
                if row.get("part") == "full":
                    runs.setdefault((row["anchor"], row["layer"]), []).append(float(row["gflops"]))
    gflops = {key: statistics.median(values) for key, values in runs.items()}
    fig, ax = plt.subplots(figsize=(10, 4.5), dpi=120)
    width = 0.8 / len(ANCHORS)
    for i, (anchor, label) in enumerate(ANCHORS):
        values = [gflops.get((anchor, layer), 0.0) for layer in LAYERS]
        xs = [j + (i - (len(ANCHORS) - 1) / 2) * width for j in range(len(LAYERS))]
        ax.bar(xs, values, width, label=label)
    ax.set_xticks(range(len(LAYERS)))
    ax.set_xticklabels(LAYERS)
    ax.set_ylabel("GFLOP/s (dw + pw, 1 thread, f32)")
    ax.set_title(f"MobileNet v1 depthwise-separable layers, batch 1, one core (median of {len(csv_paths)} runs)")
    ax.legend(fontsize=8, ncol=2)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(png_path)


if __name__ == "__main__":
    main(sys.argv[1:-1], sys.argv[-1])
