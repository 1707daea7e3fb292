"""TFLite + XNNPACK on the anchor harness's layers with `relu6` after both stages, as MobileNet
runs them, for `scripts/activation_runs.sh`. Run with the harness's Python (its `.venv`), which
has TensorFlow, Keras and LiteRT:

    python scripts/activation_anchors.py <harness> prepare        # models and references
    python scripts/activation_anchors.py <harness> time <tag>     # CSV rows, one per layer
    python scripts/activation_anchors.py <harness> summary <csv>  # the tables of BENCHMARKS.md

`prepare` writes, next to the harness's data (`build/data`), `<layer>_ydw_relu6.bin` and
`<layer>_y_relu6.bin`: relu6 of the float64 depthwise reference, and relu6 of its pointwise
product, stored as f32; and `build/tflite/<layer>_full_relu6.tflite`: Keras `DepthwiseConv2D`
and `Conv2D` with `activation="relu6"`, which the converter fuses into the two operators
(XNNPACK clamps in its kernels). `time` checks each model's output against the reference and
times `invoke` with the harness's own loop (warm-up 0.15 s, then 0.5 s and at least 15 calls),
printing `anchor,layer,part,median_us,min_us,gflops` rows with anchor
`tflite-xnnpack-relu6-<tag>`. The `anchors` bench prints ours with `ACTIVATION=relu6`.
"""
import collections
import os
import statistics
import sys

import numpy as np


def harness_modules(harness):
    sys.path.insert(0, os.path.join(harness, "py"))
    import common
    import gen
    return common, gen


def prepare(common, gen):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import tensorflow as tf

    os.makedirs(common.TFLITE_DIR, exist_ok=True)
    for layer in common.LAYERS:
        name, h, w, c, out, s = layer
        x, wdw, wpw = (common.load(layer, what).astype(np.float64) for what in ("x", "wdw", "wpw"))
        ydw = np.clip(gen.reference_dw(x, wdw, s), 0.0, 6.0)
        y = np.clip(ydw.reshape(-1, c) @ wpw, 0.0, 6.0).reshape(ydw.shape[0], ydw.shape[1], out)
        for what, a in (("ydw_relu6", ydw), ("y_relu6", y)):
            a.astype("<f4").tofile(os.path.join(common.DATA, f"{name}_{what}.bin"))

        inp = keras.Input(shape=(h, w, c), batch_size=1, dtype="float32")
        d = keras.layers.DepthwiseConv2D(common.K, strides=s, padding="same", use_bias=False,
                                         activation="relu6")
        p = keras.layers.Conv2D(out, 1, padding="same", use_bias=False, activation="relu6")
        model = keras.Model(inp, p(d(inp)))
        d.set_weights([wdw.reshape(common.K, common.K, c, 1).astype(np.float32)])
        p.set_weights([wpw.reshape(1, 1, c, out).astype(np.float32)])
        blob = tf.lite.TFLiteConverter.from_keras_model(model).convert()
        with open(model_path(common, name), "wb") as f:
            f.write(blob)
    print(f"relu6 references in {common.DATA}, models in {common.TFLITE_DIR}", file=sys.stderr)


def model_path(common, name):
    return os.path.join(common.TFLITE_DIR, f"{name}_full_relu6.tflite")


def time_layers(common, tag):
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    anchor = f"tflite-xnnpack-relu6-{tag}"
    for layer in common.selected_layers():
        name, _, _, _, out, _ = layer
        it = Interpreter(model_path=model_path(common, name), num_threads=1,
                         experimental_op_resolver_type=OpResolverType.AUTO)
        it.allocate_tensors()
        ii = it.get_input_details()[0]["index"]
        oi = it.get_output_details()[0]["index"]
        it.set_tensor(ii, np.ascontiguousarray(common.load(layer, "x")[None]))
        it.invoke()
        ref = np.fromfile(os.path.join(common.DATA, f"{name}_y_relu6.bin"), dtype="<f4")
        got = it.get_tensor(oi)[0].reshape(-1)
        rel = float(np.max(np.abs(got.astype(np.float64) - ref))) / float(np.max(np.abs(ref)))
        if rel > 1e-4:
            sys.exit(f"{anchor} {name}: error {rel:.2e} of max |ref| against the relu6 reference")
        print(f"{anchor} {name}: max error / max |ref| {rel:.2e}", file=sys.stderr)
        print(common.csv_row(anchor, layer, "full", common.time_fn(it.invoke)), flush=True)


def summary(common, path):
    """Median over the runs of each run's median, and the fastest call, per layer."""
    rows = collections.defaultdict(lambda: collections.defaultdict(list))
    with open(path) as f:
        for line in f:
            anchor, layer, part, median, fastest, _ = line.strip().split(",")
            if part != "full" or "relu6" not in anchor:
                continue
            who = "XNNPACK" if anchor.startswith("tflite") else "separable"
            rows[layer][who].append((float(median), float(fastest)))
    print("| layer | TFLite + XNNPACK | separable | ours / XNNPACK (median) | ours / XNNPACK (fastest) |")
    print("|---|---:|---:|---:|---:|")
    sums = [0.0, 0.0]
    for layer in (l[0] for l in common.LAYERS):
        if "XNNPACK" not in rows[layer] or "separable" not in rows[layer]:
            continue
        cells = []
        for who in ("XNNPACK", "separable"):
            med = statistics.median(m for m, _ in rows[layer][who])
            fast = min(f for _, f in rows[layer][who])
            cells.append((med, fast))
        (xm, xf), (om, of) = cells
        if layer != "seed":
            sums[0] += xm
            sums[1] += om
        us = (lambda v: f"{v:.2f}") if layer == "seed" else (lambda v: f"{v:,.0f}")
        print(f"| {layer} | {us(xm)} / {us(xf)} | {us(om)} / {us(of)} | {om / xm:.2f} | "
              f"{of / xf:.2f} |")
    runs = len(rows["mb1"]["separable"])
    print(f"\n{runs} runs; mb1 to mb13 summed by the medians: ours / XNNPACK "
          f"{sums[1] / sums[0]:.2f}. Cells: median / fastest call, µs.")


def main():
    harness, command = sys.argv[1], sys.argv[2]
    common, gen = harness_modules(harness)
    if command == "prepare":
        prepare(common, gen)
    elif command == "time":
        time_layers(common, sys.argv[3])
    elif command == "summary":
        summary(common, sys.argv[3])
    else:
        sys.exit(f"unknown command {command}: prepare, time or summary")


if __name__ == "__main__":
    main()
