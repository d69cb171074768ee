"""``cell_pretrained``: the HED VGG16 weights loaded tensor by tensor, the network computing edges,
the embedding cache reused across trainings (counted, not timed), and the operating point chosen on
the fit cells only. The contract itself (fit, score, evaluate, gate, MLflow round trip, params)
runs in ``tests/test_vision_kinds.py``. Small and cheap: 48 real cells at 30 x 30."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest

from plantops.kinds import _cell_pretrained_model as cp

SIZE = 30


@pytest.fixture(scope="module")
def backbone():
    return cp.load_backbone()


def test_every_conv_tensor_is_loaded_from_the_weights_file(backbone):
    import h5py

    vgg, loaded = backbone
    # 13 conv layers, a kernel and a bias each: every one, equal to the file's, shape and values.
    assert len(loaded) == 26 and len({t.key for t in loaded}) == 26
    with h5py.File(cp.weights_path(), "r") as file:
        for tensor in loaded:
            layer = vgg.get_layer(tensor.layer)
            value = layer.get_weights()[int(tensor.key[-1])]
            assert value.shape == tensor.shape == file[tensor.key].shape
            np.testing.assert_array_equal(value, file[tensor.key][()])
        # Not the untrained initialisation: the first kernel is the file's, not Glorot noise.
        assert np.abs(vgg.get_layer("block1_conv1").get_weights()[0]).max() > 0.3


def test_a_wrong_weights_file_is_refused_naming_the_tensor(tmp_path):
    import h5py

    bad = tmp_path / "bad.weights.h5"
    shutil.copy(cp.weights_path(), bad)
    with h5py.File(bad, "a") as file:
        del file["block3/layers/conv2d_1/vars/0"]
        file["block3/layers/conv2d_1/vars/0"] = np.zeros((3, 3, 128, 256), dtype=np.float32)
    with pytest.raises(cp.WeightsProblem, match=r"bad\.weights\.h5: block3/layers/conv2d_1/vars/0 has shape"):
        cp.load_backbone(bad)


def test_the_loaded_network_sees_a_crack(backbone):
    """HED's first side output (a 1x1 convolution of block1_conv2, from the same file) fires on a
    dark line through a flat cell and not on the flat part: the loaded weights compute edges."""
    import h5py
    import keras

    vgg, _ = backbone
    image = np.full((64, 64), 150.0, dtype=np.float32)
    image[:, 30:33] = 40.0  # a crack, top to bottom
    x = np.repeat(image[None, ..., None], 3, axis=-1) - cp.MEAN_BGR
    conv = keras.Model(vgg.input, vgg.get_layer("block1_conv2").output).predict(x, verbose=0)[0]
    with h5py.File(cp.weights_path(), "r") as file:
        kernel, bias = file["dsn1/vars/0"][()][0, 0, :, 0], file["dsn1/vars/1"][()][0]
    edge = 1 / (1 + np.exp(-(conv @ kernel + bias)))
    near, flat = edge[8:56, 28:35].mean(), edge[8:56, 5:20].mean()
    assert near > flat + 0.2, (near, flat)


@pytest.fixture(scope="module")
def cells() -> pd.DataFrame:
    from plantops.image_features import downsample
    from plantops.sources import elpv

    labels = elpv.labels().sort_values("cell_id")
    picked = pd.concat([g.head(12) for _, g in labels.groupby("label", sort=True)]).sort_values("cell_id")
    return pd.DataFrame([{"cell_id": c.cell_id, "label": c.label, "module_type": c.module_type, "size": SIZE,
                          "pixels": downsample(elpv.read(c.file), SIZE).ravel()}
                         for c in picked.itertuples(index=False)]).reset_index(drop=True)


@pytest.mark.parametrize(("params", "folder", "width"), [
    ({}, f"{cp.MODEL_ID}/{SIZE}x1", 2 * (512 + 512)),  # mean and max of conv4_3, conv5_3
    ({"backbone": cp.EFFICIENTNET, "input_side": 64}, f"{cp.EFFICIENTNET}/{SIZE}to64x1", 1280 + 112 + 192),
], ids=[cp.MODEL_ID, cp.EFFICIENTNET])
def test_a_second_training_computes_no_embedding(cells, plantops_home, params, folder, width):
    fit, classes = cells.iloc[:40], cells["label"].to_numpy()[:40]
    before = cp.COMPUTED
    first = cp.CellPretrained(cv_folds=3, **params).fit(fit, classes)
    assert cp.COMPUTED - before == 40 and first.n_features_ == width
    cache = plantops_home / "cache" / "embeddings"
    assert len(list((cache / folder).glob("*.npy"))) == 40
    # Each backbone keeps its own folder: an embedding of one is never read for the other.
    assert [p.name for p in cache.iterdir()] == [folder.split("/")[0]]
    second = cp.CellPretrained(cv_folds=3, C=0.01, **params).fit(fit, classes)
    first.predict_proba(fit)
    assert cp.COMPUTED - before == 40  # the retrain and the scores read the cache
    # New cells are embedded, the known ones are not; the cached and the fresh embedding agree.
    second.predict_proba(cells)
    assert cp.COMPUTED - before == 48
    images = np.stack([np.asarray(p, dtype=np.float32).reshape(SIZE, SIZE) for p in cells["pixels"][:8]])
    args = (1, params["backbone"], params["input_side"]) if params else (1,)
    cached = cp.embeddings(images, *args)
    np.testing.assert_allclose(cached, cp._embed(images, *args), rtol=1e-4, atol=1e-5)
    # The cells' embeddings differ (for EfficientNet at 64 the head is 2 x 2 and a third of its channels
    # stay 0 on grey cells).
    assert (cached.std(axis=0) > 0).mean() > 0.5


def test_the_operating_point_is_chosen_on_the_fit_cells_only(cells, plantops_home):
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    fit = cells.iloc[:40]
    classes = fit["label"].to_numpy()
    model = cp.CellPretrained(cv_folds=3, defect_recall_target=0.9).fit(fit, classes)
    # The same threshold from the fit cells' own cross-validated predictions, nothing else.
    cv = StratifiedKFold(3, shuffle=True, random_state=0)
    proba = cross_val_predict(model._head(), model.embed(fit), classes, cv=cv, method="predict_proba")
    defective = classes >= 2
    expected = cp.operating_threshold(proba[:, 2:].sum(axis=1), defective, 0.9)
    assert model.reject_threshold_ == pytest.approx(expected)
    assert (proba[defective, 2:].sum(axis=1) > model.reject_threshold_).mean() >= 0.9
    # A lower defect-recall target rejects less: a threshold no lower.
    lax = cp.CellPretrained(cv_folds=3, defect_recall_target=0.5).fit(fit, classes)
    assert lax.reject_threshold_ >= model.reject_threshold_


def test_operating_threshold_reaches_the_target():
    p = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.1, 0.2])
    defective = np.array([1, 1, 1, 1, 1, 0, 0], dtype=bool)
    t = cp.operating_threshold(p, defective, 0.8)  # 4 of 5 rejected: just below 0.6
    assert 0.5 < t < 0.6 and (p[defective] > t).sum() == 4
    assert (p[defective] > cp.operating_threshold(p, defective, 1.0)).all()
    with pytest.raises(ValueError, match="no defective cell"):
        cp.operating_threshold(p, np.zeros(7, dtype=bool), 0.9)
