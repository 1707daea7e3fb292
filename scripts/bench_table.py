"""Prints BENCHMARKS.md's tables from one or more runs of the anchor harness.

    python scripts/bench_table.py results/<run A> [results/<run B> ...]

Each run directory holds `anchors.csv` (rows `anchor,layer,part,median_us,min_us,gflops`, ours
among them as `separable` and `separable-native`, see benches/anchors.rs) and `limits.csv`
(`limit,fma_avx512_peak_gflops,<value>` ...). Times are the median over runs of each run's
median; the FMA peak is the median over runs too. Then the fastest call of each over all the
runs, and the depthwise stage alone.
"""
import csv
import statistics
import sys
from collections import defaultdict

LAYERS = ["seed", "mb1", "mb2", "mb3", "mb5", "mb7", "mb13"]
ANCHORS = [
    ("tflite-xnnpack", "TFLite + XNNPACK"),
    ("torch-cl", "PyTorch oneDNN (channels-last)"),
    ("ort", "ONNX Runtime"),
    ("tract-native", "tract (native)"),
    ("candle", "candle"),
]
OURS = [("separable", "separable"), ("separable-native", "separable, target-cpu=native")]


def load(runs):
    times = defaultdict(list)
    peaks = []
    for run in runs:
        with open(f"{run}/anchors.csv") as f:
            for row in csv.DictReader(f):
                try:
                    times[(row["anchor"], row["layer"], row["part"])].append(float(row["median_us"]))
                except (KeyError, ValueError):
                    continue
        with open(f"{run}/limits.csv") as f:
            for row in csv.reader(f):
                if len(row) == 3 and row[1] == "fma_avx512_peak_gflops":
                    peaks.append(float(row[2]))
    return {k: statistics.median(v) for k, v in times.items()}, statistics.median(peaks)


def flops(layer, part):
    # (H, W, C, N, stride) of the harness's layers; 3 x 3, SAME.
    shapes = {
        "seed": (5, 5, 3, 4, 1), "mb1": (112, 112, 32, 64, 1), "mb2": (112, 112, 64, 128, 2),
        "mb3": (56, 56, 128, 128, 1), "mb5": (28, 28, 256, 256, 1), "mb7": (14, 14, 512, 512, 1),
        "mb13": (7, 7, 1024, 1024, 1),
    }
    h, w, c, n, s = shapes[layer]
    oh, ow = -(-h // s), -(-w // s)
    dw, pw = oh * ow * c * 9, oh * ow * c * n
    return 2 * {"dw": dw, "pw": pw, "full": dw + pw}[part]


def main(runs):
    t, peak = load(runs)
    print(f"Runs: {', '.join(runs)}; AVX-512 FMA peak measured in the same runs: {peak:.1f} GFLOP/s\n")
    print("Full layer (depthwise + pointwise), median µs per call:\n")
    head = [label for _, label in ANCHORS] + [label for _, label in OURS]
    print("| layer | " + " | ".join(head) + " | ours / fastest anchor | GFLOP/s | % of peak |")
    print("|---|" + "---:|" * (len(head) + 3))
    for layer in LAYERS:
        anchors = [t.get((a, layer, "full")) for a, _ in ANCHORS]
        ours = [t.get((a, layer, "full")) for a, _ in OURS]
        fastest = min(v for v in anchors if v is not None)
        mine = ours[0]
        cells = [f"{v:,.2f}" if v is not None and v < 10 else (f"{v:,.0f}" if v is not None else "–") for v in anchors + ours]
        gf = flops(layer, "full") / mine / 1e3
        print(f"| {layer} | " + " | ".join(cells) + f" | {mine / fastest:.2f} | {gf:.1f} | {100 * gf / peak:.0f}% |")
    print("\nPointwise stage alone, median µs per call and share of the FMA peak:\n")
    print("| layer | TFLite + XNNPACK | separable | separable GFLOP/s | % of peak |")
    print("|---|---:|---:|---:|---:|")
    for layer in LAYERS[1:]:
        x = t.get(("tflite-xnnpack", layer, "pw"))
        mine = t.get(("separable", layer, "pw"))
        gf = flops(layer, "pw") / mine / 1e3
        print(f"| {layer} | {x:,.0f} | {mine:,.0f} | {gf:.1f} | {100 * gf / peak:.0f}% |")


def fastest_calls(runs):
    """The fastest call of each implementation over all runs (the least disturbed one)."""
    best = defaultdict(lambda: float("inf"))
    for run in runs:
        with open(f"{run}/anchors.csv") as f:
            for row in csv.DictReader(f):
                try:
                    key = (row["anchor"], row["layer"], row["part"])
                    best[key] = min(best[key], float(row["min_us"]))
                except (KeyError, ValueError):
                    continue
    shown = ANCHORS[:3]
    print("\nFastest call over all runs, full layer, µs:\n")
    head = [label for _, label in shown] + [label for _, label in OURS]
    print("| layer | " + " | ".join(head) + " | ours / fastest anchor |")
    print("|---|" + "---:|" * (len(head) + 1))
    for layer in LAYERS:
        anchors = [best[(a, layer, "full")] for a, _ in ANCHORS if (a, layer, "full") in best]
        cells = [best.get((a, layer, "full")) for a, _ in shown + OURS]
        text = ["–" if v is None else f"{v:,.2f}" if v < 10 else f"{v:,.0f}" for v in cells]
        print(f"| {layer} | " + " | ".join(text) + f" | {cells[3] / min(anchors):.2f} |")
    return best


def depthwise(runs, best):
    """The depthwise stage alone: XNNPACK's and ours, median and fastest call."""
    t, _ = load(runs)
    print("\nDepthwise stage alone, median / fastest call, µs:\n")
    print("| layer | TFLite + XNNPACK | separable | ours / XNNPACK (median) |")
    print("|---|---:|---:|---:|")
    for layer in LAYERS[1:]:
        x, mine = t[("tflite-xnnpack", layer, "dw")], t[("separable", layer, "dw")]
        bx, bm = best[("tflite-xnnpack", layer, "dw")], best[("separable", layer, "dw")]
        print(f"| {layer} | {x:,.0f} / {bx:,.0f} | {mine:,.0f} / {bm:,.0f} | {mine / x:.2f} |")


def per_run(runs):
    """Ours / fastest anchor on every layer, run by run: how far the medians move."""
    print("\nOurs / fastest anchor, full layer, in each run:\n")
    print("| run | " + " | ".join(LAYERS) + " | all seven: sum of ours / sum of fastest |")
    print("|---|" + "---:|" * (len(LAYERS) + 1))
    for run in runs:
        t, _ = load([run])
        cells, ours_sum, best_sum = [], 0.0, 0.0
        for layer in LAYERS:
            anchors = [t.get((a, layer, "full")) for a, _ in ANCHORS]
            fastest = min(v for v in anchors if v is not None)
            mine = t[("separable", layer, "full")]
            cells.append(f"{mine / fastest:.2f}")
            ours_sum += mine
            best_sum += fastest
        name = run.rstrip("/").split("/")[-1]
        print(f"| {name} | " + " | ".join(cells) + f" | {ours_sum / best_sum:.2f} |")


if __name__ == "__main__":
    main(sys.argv[1:])
    per_run(sys.argv[1:])
    depthwise(sys.argv[1:], fastest_calls(sys.argv[1:]))
