#!/usr/bin/env python3
"""Write tests/data/embed_dtypes.safetensors: one small layer's weights in every float dtype.

The layer is `input: 4 x 4 x 2, output: 3, multiplier: 2, kernel: 3 x 2, bias: both`:
depthwise.weight [4, 1, 3, 2], depthwise.bias [4], pointwise.weight [3, 4, 1, 1] and
pointwise.bias [3], PyTorch's layouts. The same float64 values, drawn from a seeded generator,
are stored under the prefixes `f32.`, `f64.`, `f16.` and `bf16.` in that dtype (rounded to
nearest by PyTorch), so tests/embedded.rs can check that weights baked in at compile time
convert each dtype as the run-time loader does. Under `i64.` (integers) and `shape.` (a
depthwise weight of shape [4, 1, 2, 3]) are mistakes for the compile-fail tests. Reruns write a byte-identical file.

    .venv/bin/python scripts/make_embed_dtypes.py [--out tests/data/embed_dtypes.safetensors]
"""

import argparse

import torch
from safetensors.torch import save_file

SHAPES = {
    "depthwise.weight": (4, 1, 3, 2),
    "depthwise.bias": (4,),
    "pointwise.weight": (3, 4, 1, 1),
    "pointwise.bias": (3,),
}
DTYPES = {"f32": torch.float32, "f64": torch.float64, "f16": torch.float16, "bf16": torch.bfloat16}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="tests/data/embed_dtypes.safetensors")
    args = parser.parse_args()
    generator = torch.Generator().manual_seed(20261128)
    values = {
        name: torch.randn(shape, generator=generator, dtype=torch.float64)
        for name, shape in SHAPES.items()
    }
    tensors = {
        f"{prefix}.{name}": value.to(dtype).contiguous()
        for prefix, dtype in DTYPES.items()
        for name, value in values.items()
    }
    # Mistakes for the compile-fail tests (tests/ui/weights_*.rs): integer weights, and a
    # depthwise weight of the wrong shape.
    tensors.update({f"i64.{name}": torch.ones(shape, dtype=torch.int64) for name, shape in SHAPES.items()})
    tensors.update({f"shape.{name}": values[name].float() for name in SHAPES})
    tensors["shape.depthwise.weight"] = torch.zeros((4, 1, 2, 3), dtype=torch.float32)
    save_file(tensors, args.out)
    print(f"wrote {args.out}: {len(tensors)} tensors")


if __name__ == "__main__":
    main()
