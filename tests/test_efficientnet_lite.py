"""``cell_pretrained`` with ``backbone: efficientnet_lite0``: the legacy torch file read without torch
(every tensor consumed once, shapes as the architecture says), the network computing ImageNet labels
of known photographs and activations alive in every stage. Small: one 224 batch of two photographs.
The embedding cache's reuse runs over both backbones in ``tests/test_cell_pretrained.py``."""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from plantops.kinds import _cell_pretrained_model as cp
from plantops.kinds import _efficientnet_lite as enet
from plantops.kinds import _torch_legacy

SIZE = 30


@pytest.fixture(scope="module")
def state() -> dict[str, np.ndarray]:
    return _torch_legacy.load_state_dict(enet.weights_path())


def test_the_torch_file_is_read_without_torch(state):
    assert len(state) == 296 and sum(v.size for v in state.values()) == 4_694_073
    assert state["_fc.weight"].shape == (1000, 1280) and state["_fc.weight"].dtype == np.float32
    assert state["_conv_stem.weight"].shape == (32, 3, 3, 3)
    assert state["_bn0.num_batches_tracked"].dtype == np.int64 and state["_bn0.num_batches_tracked"].shape == ()
    # Trained values, not an initialisation: BatchNorm statistics away from (0, 1), kernels varied.
    # (A few channels are dead, variance exactly 0, in the expand and depthwise layers alike.)
    variances = np.concatenate([state[k] for k in state if k.endswith("running_var")])
    assert (variances >= 0).all() and (variances > 0).mean() > 0.98 and abs(np.median(variances) - 1) > 0.1
    assert 0.01 < float(state["_fc.weight"].std()) < 1.0
    import sys
    assert "torch" not in sys.modules


def test_every_tensor_is_consumed_exactly_once_with_its_shape(state):
    params, consumed = enet.load_params()
    assert len(consumed) == len(set(consumed)) == 296 and set(consumed) == set(state)
    expected = enet.expected_shapes()
    assert expected.keys() == state.keys()
    assert all(tuple(state[k].shape) == expected[k] for k in state)
    # 16 MBConv blocks with the Lite0 kernels; no squeeze-excite tensor anywhere.
    assert [b.kernel for b in enet.blocks()] == [3, 3, 3, 5, 5, 3, 3, 3, 5, 5, 5, 5, 5, 5, 5, 3]
    assert not any("_se_" in k for k in state)
    # The BatchNorm fold: the stem's first output channel is the file's kernel scaled by gamma/sqrt(var+eps).
    kernel, bias = params["stem"]
    scale = state["_bn0.weight"][0] / np.sqrt(state["_bn0.running_var"][0] + 1e-3)
    np.testing.assert_allclose(kernel[..., 0], state["_conv_stem.weight"][0].transpose(1, 2, 0) * scale, rtol=1e-5)
    assert bias[0] == pytest.approx(state["_bn0.bias"][0] - state["_bn0.running_mean"][0] * scale, rel=1e-5)


def test_a_wrong_tensor_or_a_foreign_global_is_refused(state, monkeypatch, tmp_path):
    wrong = dict(state)
    wrong["_blocks.3._depthwise_conv.weight"] = np.zeros((144, 1, 3, 3), dtype=np.float32)
    monkeypatch.setattr(_torch_legacy, "load_state_dict", lambda path: wrong)
    with pytest.raises(enet.WeightsProblem, match=r"_blocks\.3\._depthwise_conv\.weight has shape \(144, 1, 3, 3\)"):
        enet.load_params()
    extra = {**state, "_blocks.3._se_reduce.weight": np.zeros(1, dtype=np.float32)}
    monkeypatch.setattr(_torch_legacy, "load_state_dict", lambda path: extra)
    with pytest.raises(enet.WeightsProblem, match="1 tensors EfficientNet-Lite0 does not read"):
        enet.load_params()
    monkeypatch.undo()
    # A pickle that names any other global is data we do not run.
    evil = tmp_path / "evil.pth"
    with evil.open("wb") as file:
        for obj in (_torch_legacy.MAGIC, _torch_legacy.PROTOCOL, {"little_endian": True}):
            pickle.dump(obj, file, protocol=2)
        pickle.dump(Path("x"), file, protocol=2)
    with pytest.raises(_torch_legacy.TorchFileProblem, match=r"evil\.pth: .*names pathlib"):
        _torch_legacy.load_state_dict(evil)
    truncated = tmp_path / "truncated.pth"
    shutil.copy(enet.weights_path(), truncated)
    with truncated.open("r+b") as file:
        file.truncate(truncated.stat().st_size - 100)
    with pytest.raises(_torch_legacy.TorchFileProblem, match="truncated"):
        _torch_legacy.load_state_dict(truncated)


def _photo(name: str) -> np.ndarray:
    """A scikit-learn sample photograph (in its wheel), centre-cropped and resized to 224."""
    import sklearn
    from PIL import Image

    with Image.open(Path(sklearn.__file__).parent / "datasets" / "images" / name) as image:
        w, h = image.size
        s = min(w, h)
        box = ((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s)
        return np.asarray(image.convert("RGB").crop(box).resize((224, 224), Image.BICUBIC), dtype=np.float32)


def test_the_network_names_known_photographs_and_every_stage_is_alive():
    """ImageNet classes 698 (palace) and 985 (daisy) for scikit-learn's china.jpg and flower.jpg,
    the same under a mirror; with symmetric instead of TF "SAME" padding or ImageNet mean/std the
    mirror changed some top-1s (checked once when the padding was chosen)."""
    params, net = enet.network()
    photos = np.stack([_photo("china.jpg"), _photo("flower.jpg")])
    out = net(params, enet.normalise(np.concatenate([photos, photos[:, :, ::-1]])))
    logits = np.asarray(out["logits"])
    assert logits.argmax(axis=1).tolist() == [698, 985, 698, 985]
    proba = np.exp(logits - logits.max(axis=1, keepdims=True))
    proba /= proba.sum(axis=1, keepdims=True)
    assert (proba.max(axis=1) > 0.1).all(), proba.max(axis=1)
    for stage in [f"stage{i}" for i in range(1, 8)] + ["head"]:
        a = np.asarray(out[stage])
        # Varied over positions and channels, finite, not saturated (ReLU6) everywhere.
        assert np.isfinite(a).all() and a.std() > 0.1, stage
        assert (a.reshape(-1, a.shape[-1]).std(axis=0) > 1e-3).mean() > 0.5, stage
        assert (a == 6.0).mean() < 0.5, stage
    assert out["head"].shape[1:] == (7, 7, 1280) and out["stage5"].shape[1:] == (14, 14, 112)


def test_input_side_is_an_efficientnet_parameter():
    from plantops.kinds.cell_pretrained import Params

    assert Params(backbone="efficientnet_lite0", input_side=128).input_side == 128
    with pytest.raises(ValueError, match="input_side applies to backbone efficientnet_lite0 only"):
        Params(input_side=128)
    with pytest.raises(ValueError, match="backbone"):
        Params(backbone="resnet50")
