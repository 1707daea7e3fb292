#!/usr/bin/env python3
"""Export a small MobileNet v1 body and Keras/TFLite layer cases for the import tests.

Writes four files under tests/data/ (or --out-dir):

* mobilenet_v1_025.safetensors
    The PyTorch state dict of the 13 depthwise-separable blocks of MobileNet v1 with width
    multiplier 0.25, as a model in eval() mode holds it: for block i (0..12)
      features.{i}.depthwise.weight       [C, 1, 3, 3]  F16 (see "Weights" below)
      features.{i}.depthwise_bn.weight    [C]           F32 (gamma)
      features.{i}.depthwise_bn.bias      [C]           F32 (beta)
      features.{i}.depthwise_bn.running_mean, running_var  [C]  F32
      features.{i}.depthwise_bn.num_batches_tracked        []   I64
      features.{i}.pointwise.weight       [N, C, 1, 1]  F16
      features.{i}.pointwise_bn.*         [N]           as above
* mobilenet_v1_025_folded.safetensors
    The same network with each BatchNorm2d folded into the convolution before it, F32:
      features.{i}.depthwise.weight [C, 1, 3, 3], features.{i}.depthwise.bias [C],
      features.{i}.pointwise.weight [N, C, 1, 1], features.{i}.pointwise.bias [N]
* mobilenet_v1_025_io.safetensors
    F32 tensors in PyTorch's NCHW layout: `input` [1, 8, 32, 32] and, for each block,
    `features.{i}.output` [1, N, OH, OW], computed by the eval() model in float32.
* keras_tflite.safetensors
    Layers computed by TensorFlow, with their weights in TensorFlow's layouts (F32, NHWC):
      keras_separable.*   keras.layers.SeparableConv2D(5, (3, 2), strides 2, padding "same",
                          depth_multiplier 2, use_bias=True) on 1 x 8 x 7 x 3:
                          depthwise_kernel (3, 2, 3, 2), pointwise_kernel (1, 1, 6, 5), bias (5,)
      keras_layers.*      keras.layers.DepthwiseConv2D((2, 3), depth_multiplier 2, use_bias=True,
                          padding "valid", activation relu) then Conv2D(4, 1, use_bias=True) on
                          1 x 5 x 6 x 3: depthwise_kernel (2, 3, 3, 2), depthwise_bias (6,),
                          pointwise_kernel (1, 1, 6, 4), pointwise_bias (4,)
      tflite.*            the keras_layers model converted by tf.lite.TFLiteConverter and run by
                          the TFLite interpreter; the weights as the .tflite file stores them:
                          depthwise_weight [1, 2, 3, 6] (DEPTHWISE_CONV_2D), depthwise_bias [6],
                          pointwise_weight [4, 1, 1, 6] (CONV_2D, OHWI), pointwise_bias [4]
      each case also has `input` (1, H, W, C) and `output` (1, OH, OW, N).

Network: block i is
    Conv2d(C, C, 3, stride, padding=1, groups=C, bias=False) -> BatchNorm2d(C) -> ReLU
    -> Conv2d(C, N, 1, bias=False) -> BatchNorm2d(N) -> ReLU
with (C, N, stride) = (8, 16, 1), (16, 32, 2), (32, 32, 1), (32, 64, 2), (64, 64, 1),
(64, 128, 2), 5 x (128, 128, 1), (128, 256, 2), (256, 256, 1), on a 32 x 32 x 8 input.
`padding=1` at stride 2 is PyTorch's alignment, not TensorFlow's "same": the Rust layers are
declared with `padding: 1`.

Weights: the convolution weights are drawn from He-normal distributions and rounded to float16,
so that the F16 file holds exactly the weights the float32 model ran with (and the raw file is
half the size). The BatchNorm parameters are random: gamma in [0.5, 1.5], beta ~ N(0, 0.1), and
running statistics near those a trained model would hold (each channel's mean on the input,
shifted by N(0, 0.2) standard deviations, and its variance scaled by [0.5, 2]), so activations
stay of order one through the 13 blocks and folding changes every weight.

The script checks, before writing: the folded network against the eval() model; the Keras
layouts against PyTorch convolutions fed the same weights converted as the Rust crate documents
(depthwise (KH, KW, C, M) -> [C*M, 1, KH, KW] with channel c*M+m, pointwise (1, 1, C*M, N) ->
[N, C*M, 1, 1]); and the TFLite interpreter's output against Keras. All randomness comes from
seeded generators, so reruns write byte-identical files. Run from the repository root:

    python3 -m venv .venv && .venv/bin/pip install -r scripts/requirements.txt
    .venv/bin/python scripts/export_pytorch.py [--out-dir DIR]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from safetensors.numpy import save as save_numpy  # noqa: E402
from safetensors.torch import save as save_torch  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parent.parent
SEED = 20240531
EPS = 1e-5
INPUT_HW = 32
BLOCKS = [(8, 16, 1), (16, 32, 2), (32, 32, 1), (32, 64, 2), (64, 64, 1), (64, 128, 2)]
BLOCKS += [(128, 128, 1)] * 5 + [(128, 256, 2), (256, 256, 1)]


# --------------------------------------------------------------------------
# MobileNet v1 0.25 body (PyTorch)
# --------------------------------------------------------------------------


class Block(torch.nn.Module):
    def __init__(self, c: int, n: int, stride: int):
        super().__init__()
        self.depthwise = torch.nn.Conv2d(c, c, 3, stride, padding=1, groups=c, bias=False)
        self.depthwise_bn = torch.nn.BatchNorm2d(c, eps=EPS)
        self.pointwise = torch.nn.Conv2d(c, n, 1, bias=False)
        self.pointwise_bn = torch.nn.BatchNorm2d(n, eps=EPS)

    def forward(self, x):
        x = torch.relu(self.depthwise_bn(self.depthwise(x)))
        return torch.relu(self.pointwise_bn(self.pointwise(x)))


class Body(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.features = torch.nn.Sequential(*(Block(c, n, s) for c, n, s in BLOCKS))

    def forward(self, x):
        outputs = []
        for block in self.features:
            x = block(x)
            outputs.append(x)
        return outputs


def f16_grid(a: np.ndarray) -> np.ndarray:
    """Rounds to the nearest float16 and back to float32."""
    return a.astype(np.float16).astype(np.float32)


def init_body(rng: np.random.Generator, x: torch.Tensor) -> Body:
    """Random weights; BatchNorm statistics near those of `x`'s activations, perturbed."""
    body = Body()
    with torch.no_grad():
        for block in body.features:
            for conv, bn in ((block.depthwise, block.depthwise_bn), (block.pointwise, block.pointwise_bn)):
                shape = tuple(conv.weight.shape)
                fan_in = shape[1] * shape[2] * shape[3]
                w = rng.normal(0.0, np.sqrt(2.0 / fan_in), size=shape)
                conv.weight.copy_(torch.from_numpy(f16_grid(w)))
                # Statistics as training would leave them: close to the batch's, not equal.
                y = conv(x).double()
                mean, var = y.mean(dim=(0, 2, 3)).numpy(), y.var(dim=(0, 2, 3)).numpy()
                ch = shape[0]
                mean = mean + rng.normal(0.0, 0.2, ch) * np.sqrt(var)
                var = var * rng.uniform(0.5, 2.0, ch)
                bn.weight.copy_(torch.from_numpy(rng.uniform(0.5, 1.5, ch).astype(np.float32)))
                bn.bias.copy_(torch.from_numpy(rng.normal(0.0, 0.1, ch).astype(np.float32)))
                bn.running_mean.copy_(torch.from_numpy(mean.astype(np.float32)))
                bn.running_var.copy_(torch.from_numpy(var.astype(np.float32)))
                bn.num_batches_tracked.fill_(1000)
                x = torch.relu(bn.eval()(conv(x)))
    return body.eval()


def fold(conv: torch.nn.Conv2d, bn: torch.nn.BatchNorm2d):
    """Folds `bn` into `conv` (which has no bias), in float64, returns float32 (weight, bias).

    scale = gamma / sqrt(running_var + eps); weight' = weight * scale[out];
    bias' = beta - running_mean * scale.
    """
    w = conv.weight.detach().double()
    gamma, beta = bn.weight.detach().double(), bn.bias.detach().double()
    mean, var = bn.running_mean.double(), bn.running_var.double()
    scale = gamma / torch.sqrt(var + bn.eps)
    return (w * scale[:, None, None, None]).float(), (beta - mean * scale).float()


def folded_body(body: Body) -> tuple[torch.nn.Module, dict]:
    """The folded network (Conv2d with bias, ReLU) and its state dict."""
    layers, state = [], {}
    for i, block in enumerate(body.features):
        c, n = block.depthwise.in_channels, block.pointwise.out_channels
        dw = torch.nn.Conv2d(c, c, 3, block.depthwise.stride, padding=1, groups=c, bias=True)
        pw = torch.nn.Conv2d(c, n, 1, bias=True)
        for name, conv, src, bn in (
            ("depthwise", dw, block.depthwise, block.depthwise_bn),
            ("pointwise", pw, block.pointwise, block.pointwise_bn),
        ):
            weight, bias = fold(src, bn)
            with torch.no_grad():
                conv.weight.copy_(weight)
                conv.bias.copy_(bias)
            state[f"features.{i}.{name}.weight"] = weight.contiguous()
            state[f"features.{i}.{name}.bias"] = bias.contiguous()
        layers += [dw, torch.nn.ReLU(), pw, torch.nn.ReLU()]
    return torch.nn.Sequential(*layers).eval(), state


def export_mobilenet(out_dir: Path) -> None:
    rng = np.random.default_rng(SEED)
    x = torch.from_numpy(rng.uniform(-1.0, 1.0, (1, 8, INPUT_HW, INPUT_HW)).astype(np.float32))
    body = init_body(rng, x)
    with torch.no_grad():
        outputs = body(x)
        # Each block in float64 from the float32 model's input to it, bounding the float32
        # model's own rounding, and the whole chain in float64.
        inputs = [x] + outputs[:-1]
        per_block = [b.double()(i.double()) for b, i in zip(body.features, inputs)]
        chain64 = body(x.double())
        body.float()
        folded, folded_state = folded_body(body)
        # Each folded block (dw, relu, pw, relu) fed the eval() model's input to that block.
        folded_out = [folded[4 * i:4 * i + 4](inp) for i, inp in enumerate(inputs)]

    for i, (o, o64) in enumerate(zip(outputs, per_block)):
        err = (o.double() - o64).abs().max().item() / max(1.0, o64.abs().max().item())
        assert err < 1e-5, f"block {i}: float32 block differs from float64 by {err}"
        print(f"block {i:2}: output {tuple(o.shape)}, max |y| {o.abs().max().item():.3f}, "
              f"nonzero {(o > 0).double().mean().item():.2f}, f32 vs f64 (relative) {err:.1e}")
    # Not a check: per-channel BatchNorm after a depthwise stage amplifies small differences,
    # so chained float32 and float64 drift apart over 13 blocks even though each block agrees.
    err = (outputs[-1].double() - chain64[-1]).abs().max().item()
    print(f"13 blocks chained, float32 vs float64: max |diff| {err:.1e}")
    for i, (o, f) in enumerate(zip(outputs, folded_out)):
        err = (f - o).abs().max().item()
        assert err < 1e-5 * max(1.0, o.abs().max().item()), f"block {i}: folded differs by {err}"
    print(f"folded blocks vs eval() blocks: max |diff| {err:.1e} (last block)")

    raw = {}
    for k, v in body.state_dict().items():
        v = v.detach().contiguous()
        if k.endswith(("depthwise.weight", "pointwise.weight")):
            # Exact: the weights are on the float16 grid.
            assert torch.equal(v.half().float(), v), k
            v = v.half()
        raw[k] = v
    io = {"input": x.contiguous()}
    for i, o in enumerate(outputs):
        io[f"features.{i}.output"] = o.contiguous()

    # One key: safetensors writes the metadata map in no fixed order.
    meta = {"generator": f"scripts/export_pytorch.py, torch {torch.__version__.split('+')[0]}"}
    write(out_dir / "mobilenet_v1_025.safetensors", save_torch(raw, metadata=meta))
    write(out_dir / "mobilenet_v1_025_folded.safetensors", save_torch(folded_state, metadata=meta))
    write(out_dir / "mobilenet_v1_025_io.safetensors", save_torch(io, metadata=meta))


# --------------------------------------------------------------------------
# Keras and TFLite layouts (TensorFlow)
# --------------------------------------------------------------------------


def keras_dw_to_torch(k: np.ndarray) -> np.ndarray:
    """(KH, KW, C, M) -> [C*M, 1, KH, KW], channel c*M+m <- k[:, :, c, m]."""
    kh, kw, c, m = k.shape
    return np.ascontiguousarray(k.reshape(kh, kw, c * m).transpose(2, 0, 1)[:, None])


def keras_pw_to_torch(k: np.ndarray) -> np.ndarray:
    """(1, 1, C*M, N) -> [N, C*M, 1, 1]."""
    return np.ascontiguousarray(k[0, 0].T[:, :, None, None])


def torch_separable(x_nhwc, dw, dwb, pw, pwb, stride, padding, dact):
    """A separable layer in PyTorch from PyTorch-layout weights; NHWC in and out, float64."""
    x = torch.from_numpy(x_nhwc.astype(np.float64)).permute(0, 3, 1, 2)
    c = x.shape[1]
    if padding is not None:
        x = torch.nn.functional.pad(x, padding)  # (left, right, top, bottom)
    y = torch.nn.functional.conv2d(
        x, torch.from_numpy(dw.astype(np.float64)),
        None if dwb is None else torch.from_numpy(dwb.astype(np.float64)),
        stride=stride, groups=c)
    if dact:
        y = torch.relu(y)
    y = torch.nn.functional.conv2d(
        y, torch.from_numpy(pw.astype(np.float64)),
        None if pwb is None else torch.from_numpy(pwb.astype(np.float64)))
    return y.permute(0, 2, 3, 1).numpy()


def export_tensorflow(out_dir: Path) -> None:
    import tensorflow as tf

    tf.keras.utils.set_random_seed(SEED)
    rng = np.random.default_rng(SEED + 1)

    def uni(*shape):
        return rng.uniform(-1.0, 1.0, shape).astype(np.float32)

    tensors = {}

    # SeparableConv2D: one bias, after the pointwise stage.
    x = uni(1, 8, 7, 3)
    dk, pk, b = uni(3, 2, 3, 2), uni(1, 1, 6, 5), uni(5)
    layer = tf.keras.layers.SeparableConv2D(
        5, (3, 2), strides=2, padding="same", depth_multiplier=2, use_bias=True)
    layer.build((1, 8, 7, 3))
    assert [tuple(w.shape) for w in layer.get_weights()] == [dk.shape, pk.shape, b.shape]
    layer.set_weights([dk, pk, b])
    y = layer(x).numpy()
    # TensorFlow SAME, stride 2: 8 rows, kernel 3 and 7 columns, kernel 2 both pad 0 before
    # and 1 after.
    want = torch_separable(x, keras_dw_to_torch(dk), None, keras_pw_to_torch(pk), b,
                           (2, 2), (0, 1, 0, 1), False)
    check("keras SeparableConv2D vs PyTorch", y, want)
    tensors.update({
        "keras_separable.input": x, "keras_separable.output": y,
        "keras_separable.depthwise_kernel": dk, "keras_separable.pointwise_kernel": pk,
        "keras_separable.bias": b,
    })

    # DepthwiseConv2D (with bias, ReLU) then a 1 x 1 Conv2D (with bias).
    x = uni(1, 5, 6, 3)
    dk, db, pk, pb = uni(2, 3, 3, 2), uni(6), uni(1, 1, 6, 4), uni(4)
    inp = tf.keras.Input((5, 6, 3), batch_size=1)
    dw = tf.keras.layers.DepthwiseConv2D((2, 3), depth_multiplier=2, use_bias=True,
                                         activation="relu")
    pw = tf.keras.layers.Conv2D(4, 1, use_bias=True)
    model = tf.keras.Model(inp, pw(dw(inp)))
    assert [tuple(w.shape) for w in dw.get_weights()] == [dk.shape, db.shape]
    dw.set_weights([dk, db])
    pw.set_weights([pk, pb])
    y = model(x).numpy()
    want = torch_separable(x, keras_dw_to_torch(dk), db, keras_pw_to_torch(pk), pb,
                           (1, 1), None, True)
    check("keras DepthwiseConv2D + Conv2D vs PyTorch", y, want)
    tensors.update({
        "keras_layers.input": x, "keras_layers.output": y,
        "keras_layers.depthwise_kernel": dk, "keras_layers.depthwise_bias": db,
        "keras_layers.pointwise_kernel": pk, "keras_layers.pointwise_bias": pb,
    })

    # The same model through the TFLite converter and interpreter.
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    # The reference kernels, without the XNNPACK delegate (which would take over both ops).
    interpreter = tf.lite.Interpreter(
        model_content=converter.convert(),
        experimental_op_resolver_type=tf.lite.experimental.OpResolverType.BUILTIN_REF)
    interpreter.allocate_tensors()
    ops = {op["op_name"]: op for op in interpreter._get_ops_details()}
    assert set(ops) == {"DEPTHWISE_CONV_2D", "CONV_2D"}, sorted(ops)

    def op_tensor(op, i):
        return np.array(interpreter.get_tensor(ops[op]["inputs"][i]), dtype=np.float32)

    tfl_dw, tfl_db = op_tensor("DEPTHWISE_CONV_2D", 1), op_tensor("DEPTHWISE_CONV_2D", 2)
    tfl_pw, tfl_pb = op_tensor("CONV_2D", 1), op_tensor("CONV_2D", 2)
    assert tfl_dw.shape == (1, 2, 3, 6) and tfl_pw.shape == (4, 1, 1, 6), (tfl_dw.shape, tfl_pw.shape)
    # The documented relations: TFLite's depthwise filter is Keras's with (C, M) flattened,
    # its CONV_2D filter is OHWI, i.e. PyTorch's [N, C*M, 1, 1] element for element.
    assert np.array_equal(tfl_dw.reshape(-1), dk.reshape(-1))
    assert np.array_equal(tfl_pw.reshape(-1), keras_pw_to_torch(pk).reshape(-1))
    assert np.array_equal(tfl_db, db) and np.array_equal(tfl_pb, pb)
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
    interpreter.invoke()
    y_tfl = np.array(interpreter.get_tensor(interpreter.get_output_details()[0]["index"]))
    check("TFLite vs Keras", y_tfl, y)
    tensors.update({
        "tflite.input": x, "tflite.output": y_tfl,
        "tflite.depthwise_weight": tfl_dw, "tflite.depthwise_bias": tfl_db,
        "tflite.pointwise_weight": tfl_pw, "tflite.pointwise_bias": tfl_pb,
    })

    meta = {"generator": f"scripts/export_pytorch.py, tensorflow {tf.__version__}"}
    tensors = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in tensors.items()}
    write(out_dir / "keras_tflite.safetensors", save_numpy(tensors, metadata=meta))


def check(what: str, got: np.ndarray, want: np.ndarray, tol: float = 1e-5) -> None:
    assert got.shape == want.shape, (what, got.shape, want.shape)
    err = float(np.abs(got.astype(np.float64) - want).max())
    assert err < tol, f"{what}: max |diff| {err}"
    print(f"{what}: max |diff| {err:.1e}")


def write(path: Path, data: bytes) -> None:
    path.write_bytes(data)
    print(f"wrote {path} ({len(data)} bytes)")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out-dir", type=Path, default=REPO_ROOT / "tests" / "data")
    args = ap.parse_args(argv)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    export_mobilenet(args.out_dir)
    export_tensorflow(args.out_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
