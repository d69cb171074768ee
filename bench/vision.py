"""Visual inspection quality on elpv: ``cell_texture_svm``, ``cell_cnn``, ``cell_ensemble`` and ``cell_pretrained`` against Deitsch et al. 2019.

    PYTHONPATH=include:. .venv/bin/python -m bench.vision [--out bench/vision.json]
    python -m bench.run --only vision

The fixed split of :func:`plantops.splits.holdout_mask` (1,968 fit cells, 656 held out,
stratified by class and module type, as the published figures). Each kind is fitted through the
kind contract (``kind.fit(kind.build(), fit_rows)``, ``kind.evaluate``) on image-feature rows
built as the feature job builds them (:func:`plantops.image_features.downsample`):

- ``cell_texture_svm`` at ``--svm-size`` (150: its cross-validated features are as good there as
  at 300 and four times cheaper) and at the demo side;
- ``cell_cnn`` at ``--cnn-size`` for ``--cnn-epochs``, and at the demo side for
  ``--demo-cnn-epochs`` (the demo's 2-minute training budget); one timed epoch at each of
  ``--epoch-sizes`` (what a full-resolution training would cost on this machine);
- ``cell_ensemble``: the first two (SVM and CNN) with their class probabilities averaged
  (``cnn_weight`` 0.5, fixed in advance);
- ``cell_pretrained`` at ``--pretrained-size`` with each of ``--backbones`` (the frozen HED VGG16
  embedding at the rows' side, ImageNet EfficientNet-Lite0 with the rows resized to 224; cached under
  ``$PLANTOPS_HOME/cache/embeddings``; its operating point chosen on the fit cells for 90 % defect
  recall).

The kinds named by ``--repeat`` (default the SVM at ``--svm-size`` and every ``cell_pretrained``)
are also measured as mean ± sd over ``--repeats`` further stratified splits
(:func:`plantops.splits.holdout_mask` with ``seed`` 0..4).

Reported per model: held-out four-class accuracy (the published figures' measure), balanced
accuracy, per-class recall, the confusion matrix, defect recall and false-reject rate at the
kinds' default operating point (defective: inspector probability >= 2/3; reject: defect
probability > 0.4), and the fit time. Published: SVM 82.44 %, fine-tuned VGG-19 88.42 %.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

log = logging.getLogger("bench.vision")

PV_CELLS: dict[str, Any] = {
    "id": "pv_cells",
    "plant": "EL inspection line of solar-cell modules (elpv)",
    "inspection": {"folder": "pv_cells", "line": "el_line_1"},
    "model": {"kind": "cell_texture_svm", "params": {}},
    "approvers": [{"id": "qe1", "name": "Quality engineer"}],
}


def images() -> tuple[pd.DataFrame, np.ndarray]:
    from plantops.sources import elpv

    cells = elpv.labels()
    return cells, np.stack([elpv.read(f) for f in cells["file"]])


def rows_at(cells: pd.DataFrame, raw: np.ndarray, size: int) -> pd.DataFrame:
    from plantops.image_features import downsample

    return cells.assign(size=size, pixels=[downsample(image, size).ravel() for image in raw])


def run_kind(name: str, params: dict[str, Any], rows: pd.DataFrame, held: np.ndarray,
             keep: dict[str, Any] | None = None) -> dict[str, Any]:
    """Fit the kind on the fit rows and evaluate it on the held-out ones (``keep``: the fitted model
    and its fit time are kept there under the kind's name, for the ensemble)."""
    from plantops.config import UseCase
    from plantops.kinds import get_kind
    from plantops.kinds.base import ImageSplit

    use_case = UseCase.model_validate({**PV_CELLS, "model": {**PV_CELLS["model"], "kind": name, "params": params}})
    kind = get_kind(use_case)
    data = ImageSplit(rows[~held], rows[held])
    t0 = time.perf_counter()
    model = kind.fit(kind.build(), data.fit)
    fit_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    result = kind.evaluate(model, data)
    result.update(fit_seconds=round(fit_s, 1), score_seconds=round(time.perf_counter() - t0, 1),
                  size=int(model.size_), params=params, **kind.log_params(model))
    if hasattr(model, "history_"):
        result["history"] = model.history_
    if keep is not None:
        keep[name] = {"model": model, "size": int(model.size_), "fit_seconds": round(fit_s, 1)}
    log.info("%s at %d: accuracy %.4f, defect recall %.4f, false rejects %.4f, fit %.0f s", name, model.size_,
             result["accuracy"], result["defect_recall"], result["false_reject_rate"], fit_s)
    return result


def repeated_splits(name: str, params: dict[str, Any], rows: pd.DataFrame, repeats: int) -> dict[str, Any]:
    """The kind on ``repeats`` further stratified 25 % splits (seeds 0..repeats-1, stratified by class
    and module type like the fixed one): mean and standard deviation of each headline metric."""
    from plantops.splits import holdout_mask

    keys = ("accuracy", "balanced_accuracy", "defect_recall", "false_reject_rate")
    runs = [run_kind(name, params, rows, holdout_mask(rows, seed=seed).to_numpy()) for seed in range(repeats)]
    summary: dict[str, Any] = {"splits": repeats}
    for key in (*keys, "recall_2"):
        values = [r["recall"]["2"] if key == "recall_2" else r[key] for r in runs]
        summary[key] = {"mean": float(np.mean(values)), "sd": float(np.std(values, ddof=1)) if repeats > 1 else 0.0}
    return summary


def epoch_seconds(rows: pd.DataFrame, held: np.ndarray, size: int, share: int = 4) -> dict[str, Any]:
    """Two epochs of cell_cnn at ``size`` (no validation, no TTA) on every ``share``-th fit cell; the
    second epoch's time x ``share`` is the epoch over all 1,968 fit cells (the first compiles)."""
    from plantops.kinds._cell_cnn_model import CellCNN

    fit = rows[~held].iloc[::share]
    model = CellCNN(size=size, epochs=2, validation_share=0.0, tta=False)
    model.fit(fit, fit["label"].to_numpy())
    first, second = model.history_[0]["seconds"], model.history_[1]["seconds"] - model.history_[0]["seconds"]
    return {"size": size, "cells": len(fit), "first_epoch_s": first, "epoch_s": round(second, 1),
            "full_epoch_s_estimate": round(second * len(rows[~held]) / len(fit), 1)}


def ensemble_of(svm: dict[str, Any], cnn: dict[str, Any], holdout: pd.DataFrame, n_fit: int,
                weight: float = 0.5) -> dict[str, Any]:
    """``cell_ensemble`` made of the two members fitted above (the ensemble's own fit fits exactly
    these: same rows, parameters and seeds), evaluated through its kind; its fit time is theirs."""
    from plantops.config import UseCase
    from plantops.kinds import get_kind
    params = {"svm_size": svm["size"], "cnn_size": cnn["size"], "svm_C": svm["model"].C,
              "svm_vlad_clusters": svm["model"].vlad_clusters,
              "cnn_filters": list(cnn["model"].filters), "cnn_epochs": cnn["model"].epochs, "cnn_weight": weight}
    use_case = UseCase.model_validate({**PV_CELLS, "model": {**PV_CELLS["model"], "kind": "cell_ensemble",
                                                            "params": params}})
    kind = get_kind(use_case)
    model = kind.build()
    model.svm_, model.cnn_ = svm["model"], cnn["model"]
    model.size_ = math.lcm(svm["size"], cnn["size"])
    model.columns_, model.classes_ = ["pixels", "size"], np.arange(4)
    model.train_seconds_ = svm["fit_seconds"] + cnn["fit_seconds"]
    result = kind.evaluate(model, holdout)
    result["n_fit"] = n_fit
    result.update(fit_seconds=round(model.train_seconds_, 1), size=int(model.size_), params=params,
                  **kind.log_params(model))
    log.info("cell_ensemble: accuracy %.4f, defect recall %.4f, false rejects %.4f", result["accuracy"],
             result["defect_recall"], result["false_reject_rate"])
    return result


def main(argv: list[str] | None = None) -> dict[str, Any]:
    from plantops.sources import elpv
    from plantops.splits import holdout_mask

    parser = argparse.ArgumentParser(prog="bench.vision", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path)
    parser.add_argument("--svm-size", type=int, default=150, help="the SVM's bench side")
    parser.add_argument("--svm-params", type=json.loads, default={},
                        help="cell_texture_svm params as JSON for both SVM runs (e.g. "
                             "'{\"vlad_clusters\": 0}': the texture features alone, as before VLAD)")
    parser.add_argument("--demo-size", type=int, default=60)
    parser.add_argument("--cnn-size", type=int, default=60)
    parser.add_argument("--cnn-epochs", type=int, default=30)
    parser.add_argument("--cnn-params", type=json.loads, default={},
                        help="further cell_cnn params as JSON for the --cnn-size run (e.g. "
                             "'{\"shift\": 0.08, \"jitter\": 0.2}')")
    parser.add_argument("--demo-cnn-epochs", type=int, default=12)
    parser.add_argument("--epoch-sizes", default="150", help="comma-separated sides to time one CNN epoch at")
    parser.add_argument("--pretrained-size", type=int, default=150, help="cell_pretrained's bench side")
    parser.add_argument("--pretrained-params", type=json.loads, default={},
                        help="cell_pretrained params as JSON for every backbone (e.g. '{\"views\": 2}')")
    parser.add_argument("--backbones", default="hed_bsds500,efficientnet_lite0",
                        help="comma-separated cell_pretrained backbones, each run side by side")
    parser.add_argument("--backbone-params", type=json.loads, default={},
                        help="further cell_pretrained params per backbone as JSON (e.g. "
                             "'{\"efficientnet_lite0\": {\"C\": 0.01}}')")
    parser.add_argument("--repeats", type=int, default=5,
                        help="further stratified splits for the --repeat kinds' mean +- sd (0: none)")
    parser.add_argument("--repeat", default="svm,pretrained", help="comma-separated parts measured on the "
                        "repeated splits too: svm, pretrained")
    parser.add_argument("--skip", default="",
                        help="comma-separated parts to skip: svm, svm_demo, cnn, cnn_demo, ensemble, pretrained, "
                             "epochs")
    args = parser.parse_args(argv)
    skip = set(filter(None, args.skip.split(",")))
    repeat = set(filter(None, args.repeat.split(","))) if args.repeats else set()
    began = time.perf_counter()
    cells, raw = images()
    held = holdout_mask(cells).to_numpy()
    out: dict[str, Any] = {
        "split": {"fit": int((~held).sum()), "holdout": int(held.sum())},
        "published": {"svm": elpv.PUBLISHED_ACCURACY["svm"], "cnn": elpv.PUBLISHED_ACCURACY["cnn"]},
        "cores": os.cpu_count(), "results": {},
    }
    results = out["results"]
    at = {size: rows_at(cells, raw, size) for size in {args.svm_size, args.demo_size, args.cnn_size,
                                                       args.pretrained_size}}
    models: dict[str, Any] = {}
    if "svm" not in skip:
        key = f"cell_texture_svm@{args.svm_size}"
        results[key] = run_kind("cell_texture_svm", args.svm_params, at[args.svm_size], held, models)
        if "svm" in repeat:
            out.setdefault("repeated_splits", {})[key] = repeated_splits(
                "cell_texture_svm", args.svm_params, at[args.svm_size], args.repeats)
    demo_models: dict[str, Any] = {}
    if "svm_demo" not in skip and args.demo_size != args.svm_size:
        results[f"cell_texture_svm@{args.demo_size}"] = run_kind("cell_texture_svm", args.svm_params,
                                                                 at[args.demo_size], held,
                                                                 demo_models)
    if "cnn" not in skip:
        key = f"cell_cnn@{args.cnn_size}"
        results[key] = run_kind("cell_cnn", {"epochs": args.cnn_epochs, **args.cnn_params}, at[args.cnn_size],
                                held, models)
    if "cnn_demo" not in skip and args.demo_cnn_epochs != args.cnn_epochs:
        results[f"cell_cnn@{args.demo_size}, {args.demo_cnn_epochs} epochs"] = run_kind(
            "cell_cnn", {"epochs": args.demo_cnn_epochs}, at[args.demo_size], held)
    if "ensemble" not in skip and "cell_cnn" in models:
        for svm in (models.get("cell_texture_svm"), demo_models.get("cell_texture_svm")):
            if svm is None:
                continue
            # The smallest side both members read (150 and 60: the full 300); only the held-out cells.
            side = math.lcm(svm["size"], args.cnn_size)
            rows = at[side][held] if side in at else rows_at(cells[held], raw[held], side)
            results[f"cell_ensemble@{side} (SVM {svm['size']}, CNN {args.cnn_size})"] = ensemble_of(
                svm, models["cell_cnn"], rows, len(held[~held]))
    if "pretrained" not in skip:
        from plantops.kinds import _cell_pretrained_model as cp

        for backbone in filter(None, args.backbones.split(",")):
            # Embeddings are cached under PLANTOPS_HOME: the repeated splits compute none.
            params = {**args.pretrained_params, "backbone": backbone, **args.backbone_params.get(backbone, {})}
            key = f"cell_pretrained[{backbone}]@{args.pretrained_size}"
            computed, t0 = cp.COMPUTED, time.perf_counter()
            results[key] = run_kind("cell_pretrained", params, at[args.pretrained_size], held)
            fresh = cp.COMPUTED - computed
            out.setdefault("embedding_cost", {})[key] = {
                "images_embedded": fresh, "fit_and_score_seconds": round(time.perf_counter() - t0, 1),
                "note": "fit + score of the fixed split; includes the one-time embedding of every cell not cached"}
            if "pretrained" in repeat:
                out.setdefault("repeated_splits", {})[key] = repeated_splits(
                    "cell_pretrained", params, at[args.pretrained_size], args.repeats)
    if "epochs" not in skip:
        out["cnn_epoch_timing"] = [epoch_seconds(rows_at(cells, raw, int(s)), held, int(s))
                                   for s in args.epoch_sizes.split(",") if s]
    out["total_seconds"] = round(time.perf_counter() - began, 1)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(out, indent=2, default=float))
    return out


def table(out: dict[str, Any]) -> str:
    lines = ["| model | input | four-class accuracy | balanced | recall 0/⅓/⅔/1 | defect recall | false rejects "
             "| reject above | fit |",
             "|---|---|---:|---:|---|---:|---:|---:|---:|"]
    for key, r in out["results"].items():
        recall = "/".join(f"{r['recall'][str(k)]:.2f}" for k in range(4))
        lines.append(f"| {key} | {r['size']}x{r['size']} | {r['accuracy']:.2%} | "
                     f"{r['balanced_accuracy']:.2%} | {recall} | {r['defect_recall']:.2%} | "
                     f"{r['false_reject_rate']:.2%} | {r['reject_threshold']:.3f} | {r['fit_seconds']:.0f} s |")
    for key, r in out.get("repeated_splits", {}).items():
        lines.append(f"| {key}, {r['splits']} splits | mean ± sd | {r['accuracy']['mean']:.2%} ± {r['accuracy']['sd']:.2%} "
                     f"| {r['balanced_accuracy']['mean']:.2%} ± {r['balanced_accuracy']['sd']:.2%} "
                     f"| ⅔: {r['recall_2']['mean']:.2f} | {r['defect_recall']['mean']:.2%} ± {r['defect_recall']['sd']:.2%} "
                     f"| {r['false_reject_rate']['mean']:.2%} ± {r['false_reject_rate']['sd']:.2%} | | |")
    return "\n".join(lines)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    result = main()
    print(table(result))
