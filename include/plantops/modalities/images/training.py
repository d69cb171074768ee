"""Training of a visual inspection use case's classifier: image-feature rows with the inspectors'
labels, the use case's kind and the kinds it names side by side, the same gate and registry as
every other use case (:mod:`plantops.stages.training`).

The held-out cells are a fixed quarter chosen per cell, by the SHA-256 of its id: a cell is held
out or not for good, whenever it arrives, so a champion trained last month never saw a cell its
challenger is judged on, and the two are compared on exactly the same cells. Over a few hundred
cells this holds out ~25 % of every class and module type (each a binomial share; the counts are
in the run's metrics). The published figures on the elpv data use one stratified split of all
2,624 cells instead: ``python -m bench.run --only vision`` measures the kinds on that one.

A cell inspected more than once (a re-inspection) counts once, with its newest image. With a
``reference_start`` (an engineer's "retrain from a new reference" after a camera or lighting
change) only cells captured from then on are used, for fitting and for the held-out comparison.
"""

from __future__ import annotations

import hashlib
import logging
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

    from plantops.config import UseCase

log = logging.getLogger(__name__)

HOLDOUT_SHARE = 0.25
REFERENCE_CELLS = 1000  # the drift reference: image statistics and the model's outputs on fit cells


class NotEnoughLabels(ValueError):
    pass


def is_held_out(cell_id: str, share: float = HOLDOUT_SHARE) -> bool:
    """Whether a cell belongs to the fixed held-out quarter (the first 8 bytes of the SHA-256 of
    its id, as a fraction of 2**64, below ``share``)."""
    digest = hashlib.sha256(str(cell_id).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < share


def labelled_cells(features: pd.DataFrame, labels: pd.DataFrame, reference_start: Any = None) -> pd.DataFrame:
    """One row per labelled cell (its newest image), with ``defect_probability`` and ``label``
    (class 0..3) from the inspectors, captured at or after ``reference_start`` when given."""
    import pandas as pd

    from plantops.kinds.base import class_index

    rows = features
    if reference_start is not None:
        rows = rows[pd.to_datetime(rows["captured_at"], utc=True) >= pd.Timestamp(reference_start)]
    rows = rows.sort_values("captured_at").drop_duplicates("cell_id", keep="last")
    known = labels[["cell_id", "defect_probability"]]
    rows = rows.drop(columns=[c for c in ("defect_probability", "label") if c in rows.columns])
    merged = rows.merge(known, on="cell_id", how="inner")
    merged["label"] = [class_index(p) for p in merged["defect_probability"]]
    return merged.sort_values("cell_id").reset_index(drop=True)


def split(cells: pd.DataFrame) -> Any:
    """The :class:`~plantops.kinds.base.ImageSplit` of labelled cells: fit and the fixed held-out quarter."""
    from plantops.kinds.base import ImageSplit
    from plantops.splits import holdout_mask

    held = holdout_mask(cells).to_numpy(dtype=bool)  # stratified by label and module_type
    return ImageSplit(fit=cells[~held].reset_index(drop=True), holdout=cells[held].reset_index(drop=True))


def train_inspection(use_case: UseCase, features: pd.DataFrame, labels: pd.DataFrame,
                     reference_start: Any = None, run_tags: dict[str, str] | None = None) -> dict[str, Any]:
    """Train, log, register and (maybe) promote the use case's classifier; the result is the same
    dict as :func:`plantops.stages.training.train_and_register` returns."""
    import numpy as np
    import pandas as pd

    from plantops.image_features import STATS
    from plantops.kinds import get_kind
    from plantops.splits import describe as holdout_rule
    from plantops.stages import registry
    from plantops.modalities.images.scoring import CONFUSIONS_TAG, log_confusion
    from plantops.stages.training import (
        MODEL,
        _decide_and_record, _flat_metrics, _log_and_register, _registered_by_this_run, _stored_result,
        evaluate_side_by_side,
    )

    name = use_case.model_name(None)
    kind = get_kind(use_case)
    cells = labelled_cells(features, labels, reference_start)
    data = split(cells)
    minimum = use_case.model.min_train_rows
    if len(data.fit) < minimum or data.fit["label"].nunique() < 2:
        since = "" if reference_start is None else f" captured at or after {pd.Timestamp(reference_start)}"
        raise NotEnoughLabels(
            f"model {name}: {len(data.fit)} labelled cells to fit on{since} (classes "
            f"{sorted(data.fit['label'].unique().tolist())}, {len(data.holdout)} more held out); "
            f"model.min_train_rows is {minimum} and two classes at least are needed. Wait for the "
            "inspectors' labels or lower model.min_train_rows.")

    client = registry.configure()
    tags = {str(k): str(v) for k, v in (run_tags or {}).items()}
    existing = _registered_by_this_run(name, tags)
    if existing is not None and existing.tags.get("decision"):
        return _stored_result(existing)
    model = kind.fit(kind.build(), data.fit) if existing is None else registry.load_version(name, existing.version)
    evaluations = evaluate_side_by_side(use_case, kind, model, data)
    log.info("model %s (%s): %s", name, kind.name, {k: _flat_metrics(v) for k, v in evaluations.items()})
    if existing is None:
        captured = pd.to_datetime(cells["captured_at"], utc=True)
        params = {
            "input_size": use_case.inspection.input_size,
            "holdout": holdout_rule(),
            "fit_start": captured.min().isoformat(),
            "fit_end": captured.max().isoformat(),
            "reference_start": "none" if reference_start is None else pd.Timestamp(reference_start).isoformat(),
        }
        held_defective = int(np.isin(kind.classes(data.holdout), kind.defective_classes()).sum())
        metrics = {"n_fit_rows": len(data.fit), "n_holdout": len(data.holdout), "n_holdout_defective": held_defective}
        # The drift reference: the fit cells' image statistics and the model's outputs on them.
        step = np.unique(np.linspace(0, len(data.fit) - 1, min(len(data.fit), REFERENCE_CELLS)).astype(int))
        sample = data.fit.iloc[step]
        scored = kind.score(model, sample)
        reference = pd.concat([sample[["cell_id", *STATS]].reset_index(drop=True),
                               scored[["defect_probability", "predicted_class"]].reset_index(drop=True)], axis=1)
        version, run_id = _log_and_register(client, use_case, name, kind, model, evaluations, params, metrics,
                                            reference, tags)
    else:
        version, run_id = str(existing.version), existing.run_id
    if existing is None or not existing.tags.get(CONFUSIONS_TAG):
        # Before the decision tag, so a version is only ever complete with its confusions.
        log_confusion(client, use_case, name, kind, version, run_id, model, data,
                      confusion=evaluations[MODEL]["confusion"])
    return _decide_and_record(client, use_case, name, kind, version, run_id, evaluations, data, reference_start)
