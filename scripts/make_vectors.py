#!/usr/bin/env python3
"""Generate reference vectors for depthwise-separable convolution layers.

Writes two JSON files under tests/data/:

* pytorch_vectors.json    -- computed with torch.nn.Conv2d (CPU)
* tensorflow_vectors.json -- computed with tf.nn.depthwise_conv2d + tf.nn.conv2d

Layer semantics (one case):

    input  x : H x W x C (batch 1, channels last, HWC row-major)
    depthwise: KHxKW kernel, stride SHxSW, dilation DHxDW, depth multiplier M;
               output channel c*M+m reads input channel c
               (PyTorch Conv2d(C, C*M, (KH, KW), groups=C))
               + optional bias, then activation none | relu | relu6
    pointwise: 1x1 conv C*M -> N, + optional bias, then activation

    padding "valid"   : none
    padding "same"    : TensorFlow 'SAME': out = ceil(in / stride),
                        total = max((out - 1) * stride + (k - 1) * dilation + 1 - in, 0),
                        top/left = total // 2, bottom/right = total - total // 2
    padding [PH, PW]  : symmetric explicit zero padding (PyTorch padding=(PH, PW))

Every case is recomputed with a direct float64 numpy implementation and the
script aborts if the framework result disagrees.  All randomness comes from
numpy generators seeded from the case name, so reruns give byte-identical files.

Usage:
    python scripts/make_vectors.py [--only torch|tensorflow] [--out-dir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import zlib
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
SCRIPT_PATH = "scripts/make_vectors.py"
ACTIVATIONS = ("none", "relu", "relu6")
BIASES = ("none", "pointwise", "both")


# --------------------------------------------------------------------------
# Case description
# --------------------------------------------------------------------------


def pair(v):
    if isinstance(v, (list, tuple)):
        assert len(v) == 2
        return [int(v[0]), int(v[1])]
    return [int(v), int(v)]


def case(
    name,
    input,
    output,
    kernel=3,
    stride=1,
    dilation=1,
    multiplier=1,
    padding="same",
    bias="none",
    dact="none",
    pact="none",
    dtype="f32",
    x_scale=1.0,
    w_scale=1.0,
    torch_check=False,
):
    """Describe one case.  x_scale / w_scale stretch the U[-1, 1] data."""
    assert bias in BIASES and dact in ACTIVATIONS and pact in ACTIVATIONS
    assert dtype in ("f32", "f64")
    if not isinstance(padding, str):
        padding = pair(padding)
    else:
        assert padding in ("same", "valid")
    return {
        "name": name,
        "dtype": dtype,
        "input": [int(d) for d in input],
        "output": int(output),
        "kernel": pair(kernel),
        "stride": pair(stride),
        "dilation": pair(dilation),
        "multiplier": int(multiplier),
        "padding": padding,
        "bias": bias,
        "depthwise_activation": dact,
        "pointwise_activation": pact,
        "_x_scale": x_scale,
        "_w_scale": w_scale,
        "_torch_check": torch_check,
    }


# --------------------------------------------------------------------------
# Shape arithmetic
# --------------------------------------------------------------------------


def same_pads(size, k, s, d):
    """TensorFlow 'SAME' padding along one axis -> (before, after, out)."""
    out = -(-size // s)
    total = max((out - 1) * s + (k - 1) * d + 1 - size, 0)
    return total // 2, total - total // 2, out


def pads_and_output(spec):
    """Return ((top, bottom), (left, right)), (OH, OW) for a case."""
    H, W, _ = spec["input"]
    KH, KW = spec["kernel"]
    SH, SW = spec["stride"]
    DH, DW = spec["dilation"]
    pad = spec["padding"]
    if pad == "same":
        t, b, oh = same_pads(H, KH, SH, DH)
        l, r, ow = same_pads(W, KW, SW, DW)
        return ((t, b), (l, r)), (oh, ow)
    if pad == "valid":
        ph, pw = 0, 0
    else:
        ph, pw = pad
    oh = (H + 2 * ph - DH * (KH - 1) - 1) // SH + 1
    ow = (W + 2 * pw - DW * (KW - 1) - 1) // SW + 1
    return ((ph, ph), (pw, pw)), (oh, ow)


# --------------------------------------------------------------------------
# Data generation
# --------------------------------------------------------------------------


def rng_for(spec):
    return np.random.default_rng(zlib.crc32(spec["name"].encode("utf-8")))


def np_dtype(spec):
    return np.float32 if spec["dtype"] == "f32" else np.float64


def make_data(spec, tf_layout=False):
    """Random parameters for a case.

    Returns a dict of numpy arrays in the case dtype:
      x  : (H, W, C)
      dw : (C*M, 1, KH, KW)   PyTorch layout
      dwb: (C*M,) or None
      pw : (N, C*M, 1, 1)     PyTorch layout
      pwb: (N,) or None
    With tf_layout=True the filters are drawn in TensorFlow layout
    ((KH, KW, C, M) and (1, 1, C*M, N)) and converted, so the conversion is
    exercised by the script.
    """
    rng = rng_for(spec)
    dt = np_dtype(spec)
    H, W, C = spec["input"]
    N = spec["output"]
    KH, KW = spec["kernel"]
    M = spec["multiplier"]
    CM = C * M
    xs, ws = spec["_x_scale"], spec["_w_scale"]

    def uni(shape, scale):
        return (rng.uniform(-1.0, 1.0, size=shape) * scale).astype(dt)

    x = uni((H, W, C), xs)
    if tf_layout:
        dw_tf = uni((KH, KW, C, M), ws)
        dw = tf_dw_to_torch(dw_tf)
    else:
        dw = uni((CM, 1, KH, KW), ws)
    dwb = uni((CM,), ws) if spec["bias"] == "both" else None
    if tf_layout:
        pw_tf = uni((1, 1, CM, N), ws)
        pw = tf_pw_to_torch(pw_tf)
    else:
        pw = uni((N, CM, 1, 1), ws)
    pwb = uni((N,), ws) if spec["bias"] != "none" else None
    return {"x": x, "dw": dw, "dwb": dwb, "pw": pw, "pwb": pwb}


def tf_dw_to_torch(f):
    """(KH, KW, C, M) -> (C*M, 1, KH, KW); channel c*M+m <- f[:, :, c, m]."""
    KH, KW, C, M = f.shape
    out = np.ascontiguousarray(f.transpose(2, 3, 0, 1).reshape(C * M, 1, KH, KW))
    # Spot-check the documented index mapping.
    for c in range(C):
        for m in range(M):
            assert np.array_equal(out[c * M + m, 0], f[:, :, c, m])
    return out


def torch_dw_to_tf(w, multiplier):
    """(C*M, 1, KH, KW) -> (KH, KW, C, M)."""
    CM, _, KH, KW = w.shape
    C = CM // multiplier
    return np.ascontiguousarray(w.reshape(C, multiplier, KH, KW).transpose(2, 3, 0, 1))


def tf_pw_to_torch(f):
    """(1, 1, C*M, N) -> (N, C*M, 1, 1)."""
    return np.ascontiguousarray(f.transpose(3, 2, 0, 1))


def torch_pw_to_tf(w):
    """(N, C*M, 1, 1) -> (1, 1, C*M, N)."""
    return np.ascontiguousarray(w.transpose(2, 3, 1, 0))


# --------------------------------------------------------------------------
# Reference implementation (float64, direct formula)
# --------------------------------------------------------------------------


def act_np(v, name):
    if name == "none":
        return v
    if name == "relu":
        return np.maximum(v, 0.0)
    if name == "relu6":
        return np.minimum(np.maximum(v, 0.0), 6.0)
    raise ValueError(name)


def reference(spec, data):
    """Direct float64 evaluation; returns (y_dw_pre, y_dw, y_pre, y), all HWC."""
    H, W, C = spec["input"]
    N = spec["output"]
    KH, KW = spec["kernel"]
    SH, SW = spec["stride"]
    DH, DW = spec["dilation"]
    M = spec["multiplier"]
    ((pt, _pb), (pl, _pr)), (OH, OW) = pads_and_output(spec)
    x = data["x"].astype(np.float64)
    dw = data["dw"].astype(np.float64)
    pw = data["pw"].astype(np.float64)
    dwb = None if data["dwb"] is None else data["dwb"].astype(np.float64)
    pwb = None if data["pwb"] is None else data["pwb"].astype(np.float64)

    ydw = np.zeros((OH, OW, C * M), dtype=np.float64)
    for oh in range(OH):
        for ow in range(OW):
            for c in range(C):
                for m in range(M):
                    oc = c * M + m
                    acc = 0.0
                    for kh in range(KH):
                        ih = oh * SH + kh * DH - pt
                        if ih < 0 or ih >= H:
                            continue
                        for kw in range(KW):
                            iw = ow * SW + kw * DW - pl
                            if iw < 0 or iw >= W:
                                continue
                            acc += x[ih, iw, c] * dw[oc, 0, kh, kw]
                    if dwb is not None:
                        acc += dwb[oc]
                    ydw[oh, ow, oc] = acc
    ydw_act = act_np(ydw, spec["depthwise_activation"])

    y = np.zeros((OH, OW, N), dtype=np.float64)
    for oh in range(OH):
        for ow in range(OW):
            for n in range(N):
                acc = 0.0
                for k in range(C * M):
                    acc += ydw_act[oh, ow, k] * pw[n, k, 0, 0]
                if pwb is not None:
                    acc += pwb[n]
                y[oh, ow, n] = acc
    return ydw, ydw_act, y, act_np(y, spec["pointwise_activation"])


def check_activation_coverage(spec, ydw_pre, y_pre):
    """relu6 cases must clip on both sides; relu cases must clip something."""
    for stage, pre, key in (
        ("depthwise", ydw_pre, "depthwise_activation"),
        ("pointwise", y_pre, "pointwise_activation"),
    ):
        a = spec[key]
        if a in ("relu", "relu6"):
            assert (pre < 0).any(), f"{spec['name']}: no negative {stage} pre-activation"
            assert (pre > 0).any(), f"{spec['name']}: no positive {stage} pre-activation"
        if a == "relu6":
            assert (pre > 6).any(), f"{spec['name']}: no {stage} pre-activation above 6"


def assert_close(spec, what, got, want):
    got = np.asarray(got, dtype=np.float64)
    want = np.asarray(want, dtype=np.float64)
    assert got.shape == want.shape, (spec["name"], what, got.shape, want.shape)
    scale = max(1.0, float(np.max(np.abs(want))) if want.size else 1.0)
    rel = 1e-4 if spec["dtype"] == "f32" else 1e-10
    err = float(np.max(np.abs(got - want))) if want.size else 0.0
    if not err <= rel * scale:
        raise AssertionError(
            f"{spec['name']}: {what} differs from reference: max abs diff {err:.3e} "
            f"> {rel:g} * {scale:.3g}"
        )
    return err


# --------------------------------------------------------------------------
# PyTorch
# --------------------------------------------------------------------------


def torch_compute(spec, data, use_same_keyword=True):
    """Run the layer with torch.nn.Conv2d; returns (y_dw, y) as HWC numpy arrays."""
    import torch
    import torch.nn.functional as F

    tdt = torch.float32 if spec["dtype"] == "f32" else torch.float64
    H, W, C = spec["input"]
    N = spec["output"]
    KH, KW = spec["kernel"]
    M = spec["multiplier"]
    stride = tuple(spec["stride"])
    dilation = tuple(spec["dilation"])
    ((pt, pb), (pl, pr)), _ = pads_and_output(spec)

    x = torch.from_numpy(np.ascontiguousarray(data["x"].transpose(2, 0, 1))[None]).to(tdt)
    pre_pad = None
    if spec["padding"] == "same":
        if use_same_keyword and stride == (1, 1):
            conv_pad = "same"
        else:
            conv_pad = 0
            pre_pad = (pl, pr, pt, pb)
    elif spec["padding"] == "valid":
        conv_pad = 0
    else:
        conv_pad = tuple(spec["padding"])

    dwc = torch.nn.Conv2d(
        C,
        C * M,
        (KH, KW),
        stride=stride,
        padding=conv_pad,
        dilation=dilation,
        groups=C,
        bias=spec["bias"] == "both",
    ).to(tdt)
    pwc = torch.nn.Conv2d(C * M, N, 1, bias=spec["bias"] != "none").to(tdt)
    with torch.no_grad():
        dwc.weight.copy_(torch.from_numpy(data["dw"]))
        if dwc.bias is not None:
            dwc.bias.copy_(torch.from_numpy(data["dwb"]))
        pwc.weight.copy_(torch.from_numpy(data["pw"]))
        if pwc.bias is not None:
            pwc.bias.copy_(torch.from_numpy(data["pwb"]))

        h = x if pre_pad is None else F.pad(x, pre_pad)
        h = dwc(h)
        h = torch_act(h, spec["depthwise_activation"])
        ydw = h
        y = torch_act(pwc(h), spec["pointwise_activation"])

    def hwc(t):
        arr = t[0].permute(1, 2, 0).contiguous().numpy()
        assert arr.dtype == np_dtype(spec)
        return arr

    return hwc(ydw), hwc(y)


def torch_act(t, name):
    import torch
    import torch.nn.functional as F

    if name == "none":
        return t
    if name == "relu":
        return torch.relu(t)
    if name == "relu6":
        return F.relu6(t)
    raise ValueError(name)


# --------------------------------------------------------------------------
# TensorFlow
# --------------------------------------------------------------------------


def tf_compute(spec, data):
    """Run the layer with tf.nn.depthwise_conv2d + tf.nn.conv2d (NHWC)."""
    import tensorflow as tf

    tdt = tf.float32 if spec["dtype"] == "f32" else tf.float64
    SH, SW = spec["stride"]
    DH, DW = spec["dilation"]
    M = spec["multiplier"]
    pad = spec["padding"]
    assert isinstance(pad, str), "TensorFlow cases use 'same' or 'valid'"

    x = tf.constant(data["x"][None], dtype=tdt)
    dw_filter = tf.constant(torch_dw_to_tf(data["dw"], M), dtype=tdt)
    pw_filter = tf.constant(torch_pw_to_tf(data["pw"]), dtype=tdt)

    h = tf.nn.depthwise_conv2d(
        x,
        dw_filter,
        strides=[1, SH, SW, 1],
        padding=pad.upper(),
        dilations=[DH, DW],
        data_format="NHWC",
    )
    if data["dwb"] is not None:
        h = tf.nn.bias_add(h, tf.constant(data["dwb"], dtype=tdt))
    h = tf_act(h, spec["depthwise_activation"])
    ydw = h
    y = tf.nn.conv2d(h, pw_filter, strides=[1, 1, 1, 1], padding="VALID")
    if data["pwb"] is not None:
        y = tf.nn.bias_add(y, tf.constant(data["pwb"], dtype=tdt))
    y = tf_act(y, spec["pointwise_activation"])
    ydw = ydw.numpy()[0]
    y = y.numpy()[0]
    assert ydw.dtype == np_dtype(spec) and y.dtype == np_dtype(spec)
    return ydw, y


def tf_act(t, name):
    import tensorflow as tf

    if name == "none":
        return t
    if name == "relu":
        return tf.nn.relu(t)
    if name == "relu6":
        return tf.nn.relu6(t)
    raise ValueError(name)


# --------------------------------------------------------------------------
# Case lists
# --------------------------------------------------------------------------


def pytorch_cases():
    c = case
    return [
        # The seed layer.
        c("seed_5x5x3_k3_same", (5, 5, 3), 4, padding="same"),
        c("seed_5x5x3_k3_valid", (5, 5, 3), 4, padding="valid"),
        # Kernel sizes.
        c("k1_valid_6x6x8", (6, 6, 8), 5, kernel=1, padding="valid"),
        c("k1_same_s2_7x9x3", (7, 9, 3), 4, kernel=1, stride=2, padding="same"),
        c("k2_valid_6x7x3", (6, 7, 3), 4, kernel=2, padding="valid"),
        c("k2_same_6x7x3", (6, 7, 3), 4, kernel=2, padding="same"),
        c("k5_same_7x9x3", (7, 9, 3), 4, kernel=5, padding="same"),
        c("k5_valid_7x9x3", (7, 9, 3), 2, kernel=5, padding="valid"),
        c("k7_same_9x9x3", (9, 9, 3), 4, kernel=7, padding="same"),
        c("k7_valid_11x9x1", (11, 9, 1), 3, kernel=7, padding="valid"),
        c("k3x5_same_7x9x3", (7, 9, 3), 4, kernel=(3, 5), padding="same"),
        c("k3x5_valid_7x9x3", (7, 9, 3), 4, kernel=(3, 5), padding="valid"),
        # Strides.
        c("s2_same_7x9x3", (7, 9, 3), 4, stride=2, padding="same"),
        c("s2_same_8x8x3", (8, 8, 3), 4, stride=2, padding="same"),
        c("s2_valid_11x6x8", (11, 6, 8), 5, stride=2, padding="valid"),
        c("s3_same_11x6x3", (11, 6, 3), 4, stride=3, padding="same"),
        c("s3_valid_k5_11x9x1", (11, 9, 1), 2, kernel=5, stride=3, padding="valid"),
        c("s2x1_same_7x9x3", (7, 9, 3), 4, stride=(2, 1), padding="same"),
        c("s2x1_valid_k3x5_7x9x3", (7, 9, 3), 3, kernel=(3, 5), stride=(2, 1), padding="valid"),
        # Dilation.
        c("d2_same_9x9x3", (9, 9, 3), 4, dilation=2, padding="same"),
        c("d2_valid_9x9x3", (9, 9, 3), 4, dilation=2, padding="valid"),
        c("d2_s2_same_11x6x3", (11, 6, 3), 4, dilation=2, stride=2, padding="same"),
        c("d2x1_pad1_7x9x3", (7, 9, 3), 4, dilation=(2, 1), padding=(1, 1)),
        # Explicit padding.
        c("pad1_k3_7x9x3", (7, 9, 3), 4, padding=(1, 1)),
        c("pad1_s2_k3_11x6x3", (11, 6, 3), 4, stride=2, padding=(1, 1)),
        c("pad2x0_k3_7x9x3", (7, 9, 3), 4, padding=(2, 0)),
        c("pad0x3_k3x5_7x9x3", (7, 9, 3), 4, kernel=(3, 5), padding=(0, 3)),
        # Depth multiplier.
        c("m2_same_7x9x3", (7, 9, 3), 4, multiplier=2, padding="same"),
        c("m3_valid_7x9x3", (7, 9, 3), 5, multiplier=3, padding="valid"),
        c("m2_s2_same_bias_both_8x8x3", (8, 8, 3), 4, multiplier=2, stride=2, padding="same", bias="both"),
        c("m3_c1_same_7x9x1", (7, 9, 1), 4, multiplier=3, padding="same", bias="pointwise"),
        # Bias.
        c("bias_pointwise_5x5x3", (5, 5, 3), 4, padding="same", bias="pointwise"),
        c("bias_both_5x5x3", (5, 5, 3), 4, padding="same", bias="both"),
        # Activations.
        c("relu_dw_7x9x3", (7, 9, 3), 4, padding="same", bias="both", dact="relu"),
        c("relu_pw_7x9x3", (7, 9, 3), 4, padding="same", bias="pointwise", pact="relu"),
        c("relu_both_7x9x3", (7, 9, 3), 4, padding="same", bias="both", dact="relu", pact="relu"),
        c(
            "mobilenetv2_relu6_dw_s2_8x8x8",
            (8, 8, 8),
            5,
            stride=2,
            padding="same",
            bias="both",
            dact="relu6",
            w_scale=3.0,
            x_scale=2.0,
        ),
        c("relu6_pw_7x9x3", (7, 9, 3), 4, padding="same", bias="pointwise", pact="relu6", w_scale=3.0, x_scale=2.0),
        c(
            "relu6_both_7x9x3",
            (7, 9, 3),
            4,
            padding="same",
            bias="both",
            dact="relu6",
            pact="relu6",
            w_scale=3.0,
            x_scale=2.0,
        ),
        # Degenerate inputs and channel counts.
        c("in1x1_k1_c8", (1, 1, 8), 4, kernel=1, padding="valid", bias="pointwise"),
        c("in1x1_k3_same_c3", (1, 1, 3), 2, padding="same", bias="both"),
        c("c17_same_5x5x17", (5, 5, 17), 8, padding="same", bias="pointwise"),
        c("c1_valid_11x6x1", (11, 6, 1), 3, padding="valid"),
        # float64.
        c("f64_same_7x9x3", (7, 9, 3), 4, padding="same", bias="both", dact="relu", dtype="f64"),
        c("f64_k5_s2_m2_same_11x6x3", (11, 6, 3), 4, kernel=5, stride=2, multiplier=2, padding="same", dtype="f64"),
        c(
            "f64_pad2x0_relu6_7x9x8",
            (7, 9, 8),
            3,
            padding=(2, 0),
            bias="both",
            dact="relu6",
            pact="relu6",
            dtype="f64",
            w_scale=3.0,
            x_scale=2.0,
        ),
        c("f64_seed_valid_5x5x3", (5, 5, 3), 4, padding="valid", dtype="f64"),
    ]


def tensorflow_cases():
    c = case
    return [
        # Stride 2 / 3 with asymmetric SAME padding.
        c("tf_s2_same_8x8x3", (8, 8, 3), 4, stride=2, padding="same", torch_check=True),
        c("tf_s2_same_7x10x3", (7, 10, 3), 4, stride=2, padding="same"),
        c("tf_s3_same_11x6x3", (11, 6, 3), 4, stride=3, padding="same", torch_check=True),
        c("tf_s3_same_k5_10x8x3", (10, 8, 3), 4, kernel=5, stride=3, padding="same"),
        c("tf_s2x1_same_8x9x3", (8, 9, 3), 4, stride=(2, 1), padding="same"),
        # Even kernels with SAME.
        c("tf_k2_same_6x7x3", (6, 7, 3), 4, kernel=2, padding="same", torch_check=True),
        c("tf_k4_same_7x8x3", (7, 8, 3), 4, kernel=4, padding="same"),
        c("tf_k2_s2_same_7x8x3", (7, 8, 3), 4, kernel=2, stride=2, padding="same"),
        c("tf_k4_s2_same_9x8x3", (9, 8, 3), 4, kernel=4, stride=2, padding="same", torch_check=True),
        # Non-square kernel, stride 2.
        c("tf_k3x5_s2_same_8x9x3", (8, 9, 3), 4, kernel=(3, 5), stride=2, padding="same"),
        # Dilation with SAME at stride 1.
        c("tf_d2_same_9x9x3", (9, 9, 3), 4, dilation=2, padding="same", torch_check=True),
        c("tf_d2_k4_same_9x8x3", (9, 8, 3), 4, kernel=4, dilation=2, padding="same"),
        # Depth multiplier.
        c("tf_m2_s2_same_8x8x3", (8, 8, 3), 5, multiplier=2, stride=2, padding="same", bias="both", torch_check=True),
        c("tf_m2_k4_same_6x7x3", (6, 7, 3), 4, kernel=4, multiplier=2, padding="same", bias="pointwise"),
        # MobileNetV2-like block and a VALID reference.
        c(
            "tf_mobilenetv2_relu6_dw_s2_8x8x8",
            (8, 8, 8),
            5,
            stride=2,
            padding="same",
            bias="both",
            dact="relu6",
            w_scale=3.0,
            x_scale=2.0,
        ),
        c("tf_s2_valid_8x9x3", (8, 9, 3), 4, stride=2, padding="valid", bias="pointwise", pact="relu"),
    ]


# --------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------


def flat(arr):
    """Flatten row-major to a list of Python floats holding the exact values."""
    if arr is None:
        return None
    return [float(v) for v in np.asarray(arr).reshape(-1)]


def public(spec):
    return {k: v for k, v in spec.items() if not k.startswith("_")}


def dump(path, generator, cases):
    """Write one case per block, one field per line, arrays on a single line."""
    lines = ["{"]
    lines.append(f'  "generator": {json.dumps(generator)},')
    lines.append(f'  "script": {json.dumps(SCRIPT_PATH)},')
    lines.append('  "cases": [')
    for i, obj in enumerate(cases):
        lines.append("    {")
        items = list(obj.items())
        for j, (k, v) in enumerate(items):
            sep = "," if j + 1 < len(items) else ""
            lines.append(f"      {json.dumps(k)}: {json.dumps(v, allow_nan=False)}{sep}")
        lines.append("    }" + ("," if i + 1 < len(cases) else ""))
    lines.append("  ]")
    lines.append("}")
    text = "\n".join(lines) + "\n"
    json.loads(text)  # well-formed
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    print(f"wrote {path} ({len(cases)} cases, {len(text.encode('utf-8'))} bytes)")


def build_case(spec, ydw, y, data):
    (_, (OH, OW)) = pads_and_output(spec)
    N = spec["output"]
    CM = spec["input"][2] * spec["multiplier"]
    assert ydw.shape == (OH, OW, CM) and y.shape == (OH, OW, N)
    obj = public(spec)
    obj.update(
        {
            "x": flat(data["x"]),
            "dw_weight": flat(data["dw"]),
            "dw_bias": flat(data["dwb"]),
            "pw_weight": flat(data["pw"]),
            "pw_bias": flat(data["pwb"]),
            "y_depthwise": flat(ydw),
            "y": flat(y),
        }
    )
    return obj


def validate_specs(specs):
    names = set()
    for spec in specs:
        name = spec["name"]
        assert name not in names, f"duplicate case name {name}"
        names.add(name)
        assert name.replace("_", "").isalnum() and name == name.lower(), name
        assert name[0].isalpha(), name
        (_, (oh, ow)) = pads_and_output(spec)
        assert oh > 0 and ow > 0, f"{name}: empty output"


def summary(spec, err_dw, err_y, extra=""):
    (((pt, pb), (pl, pr)), (oh, ow)) = pads_and_output(spec)
    H, W, C = spec["input"]
    pads = f" tblr=({pt},{pb},{pl},{pr})" if spec["padding"] == "same" else ""
    print(
        f"  ok {spec['name']:<36} {spec['dtype']} in {H}x{W}x{C} -> {oh}x{ow}x{spec['output']} "
        f"k{spec['kernel']} s{spec['stride']} d{spec['dilation']} m{spec['multiplier']} "
        f"pad={spec['padding']}{pads} bias={spec['bias']} act={spec['depthwise_activation']}/"
        f"{spec['pointwise_activation']}  max|diff| dw={err_dw:.1e} y={err_y:.1e}{extra}"
    )


def run_pytorch(out_dir):
    import warnings

    import torch

    # padding='same' with an even kernel warns about an internal padded copy.
    warnings.filterwarnings("ignore", message="Using padding='same' with even kernel")
    torch.manual_seed(0)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    specs = pytorch_cases()
    validate_specs(specs)
    print(f"torch {torch.__version__}: {len(specs)} cases")
    cases = []
    for spec in specs:
        data = make_data(spec)
        ydw, y = torch_compute(spec, data)
        if spec["padding"] == "same" and spec["stride"] == [1, 1]:
            # padding='same' was used: confirm it equals the explicit TF split.
            ydw2, y2 = torch_compute(spec, data, use_same_keyword=False)
            assert np.array_equal(ydw, ydw2) and np.array_equal(y, y2), (
                f"{spec['name']}: torch padding='same' differs from F.pad with the TF split"
            )
        ydw_pre, ydw_ref, y_pre, y_ref = reference(spec, data)
        check_activation_coverage(spec, ydw_pre, y_pre)
        e1 = assert_close(spec, "y_depthwise", ydw, ydw_ref)
        e2 = assert_close(spec, "y", y, y_ref)
        summary(spec, e1, e2)
        cases.append(build_case(spec, ydw, y, data))
    dump(out_dir / "pytorch_vectors.json", f"torch {torch.__version__}", cases)


def run_tensorflow(out_dir):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    tf.config.threading.set_inter_op_parallelism_threads(1)
    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.experimental.enable_op_determinism()
    tf.random.set_seed(0)
    specs = tensorflow_cases()
    validate_specs(specs)
    print(f"tensorflow {tf.__version__}: {len(specs)} cases")
    cases = []
    n_cross = 0
    for spec in specs:
        data = make_data(spec, tf_layout=True)
        ydw, y = tf_compute(spec, data)
        ydw_pre, ydw_ref, y_pre, y_ref = reference(spec, data)
        check_activation_coverage(spec, ydw_pre, y_pre)
        e1 = assert_close(spec, "y_depthwise", ydw, ydw_ref)
        e2 = assert_close(spec, "y", y, y_ref)
        extra = ""
        if spec["_torch_check"]:
            tdw, ty = torch_compute(spec, data, use_same_keyword=False)
            c1 = assert_close(spec, "torch y_depthwise vs tf", tdw, ydw)
            c2 = assert_close(spec, "torch y vs tf", ty, y)
            extra = f"  torch cross-check {max(c1, c2):.1e}"
            n_cross += 1
        summary(spec, e1, e2, extra)
        cases.append(build_case(spec, ydw, y, data))
    assert n_cross >= 3
    dump(out_dir / "tensorflow_vectors.json", f"tensorflow {tf.__version__}", cases)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", choices=("torch", "tensorflow"), help="generate one file only")
    ap.add_argument(
        "--out-dir",
        type=Path,
        default=REPO_ROOT / "tests" / "data",
        help="output directory (default: tests/data in the repository)",
    )
    args = ap.parse_args(argv)
    if args.only in (None, "torch"):
        run_pytorch(args.out_dir)
    if args.only in (None, "tensorflow"):
        run_tensorflow(args.out_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
