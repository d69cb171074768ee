"""The model-kind contract: what training, the promotion gate, scoring, monitoring and explanations
ask of a model, and nothing else.

A kind is one module in :mod:`plantops.kinds` with a :class:`ModelKind` subclass. It names its
parameter block (a pydantic model: ``model.params`` in the use case's YAML, checked with the file
and field named on error) and its estimator class; the estimator is a scikit-learn-style object
(``fit``, ``score_samples``, ``predict``, ``contributions``, fitted ``columns_``, ``mean_``,
``scale_``) whose state is plain arrays, so MLflow saves it with skops. The base class gives every
kind, from those few pieces:

- ``score``: per row an anomaly score (1.0 = alarm threshold) and the alarm, plus the expected
  value and residual for a kind that predicts a target;
- ``tag_contributions``: per row and tag, the tag's non-negative part of the score, which the
  explanations (per version, per alarm, per monitor window) rank;
- ``evaluate`` and ``gate``: held-out metrics on the same rows for challenger, champion and
  baselines, and the rule that promotes;
- ``drift_columns``: the columns the monitor compares with the champion's reference sample.

A :class:`ClassifierKind` (``output = "classifier"``, visual inspection) reads image-feature rows
(``pixels``, ``size``, the image statistics) instead of tag columns, and keeps the same methods:
``score`` gives the predicted class and the defect probability beside ``score``/``alarm`` (1.0 = the
reject threshold), ``evaluate`` the held-out four-class accuracy and the defect recall and
false-reject rate at the operating point, ``gate`` compares those.

The modules that use a kind never ask which kind they have: they call these methods. Kind modules
import only the light core at import time (DAG parsing validates ``model.params``); numpy, pandas
and scikit-learn are imported inside the methods.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field

from plantops.features import base_columns, feature_columns

if TYPE_CHECKING:
    import pandas as pd

    from plantops.config import UseCase

# Rows from the fault onset to the first of this many consecutive alarms: the detection delay.
CONSECUTIVE_ALARMS = 3


@dataclass(frozen=True)
class TrainingData:
    """Rows of the wide feature frame (``asset``, ``ts``, features), split for one training run
    (built by :func:`plantops.stages.training.select_training_data`; what ``evaluate`` reads).

    ``series``: every row, sorted by asset and time, with a fresh index; the three sets below are
    rows of it (same index), so a temporal model can score the series in order and be judged on
    the held-out rows in their context. ``fit``: the fit window minus fault-labelled and held-out
    rows. ``holdout_normal``: the last 30 % (in time) of the rows labelled normal (of the unlabelled
    rows when no row is labelled normal). ``holdout_faults``: the rows inside fault labels, with
    their ``label`` column.
    """

    fit: pd.DataFrame
    holdout_normal: pd.DataFrame
    holdout_faults: pd.DataFrame
    series: pd.DataFrame


class KindParams(BaseModel):
    """Base of every kind's parameter block (``model.params``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")


def far_limit(target: float) -> float:
    """The false-alarm rate a challenger may show on held-out normal rows: 1.5x the target, plus
    half a point for the sampling noise of a few hundred autocorrelated rows."""
    return target * 1.5 + 0.005


class ModelKind:
    """One kind of model behind the contract (see the module docstring)."""

    name: ClassVar[str]
    summary: ClassVar[str]
    # "detector": the score is an anomaly statistic; "regression": it is a residual of a predicted target;
    # "classifier": it is a defect probability over the reject threshold (image rows, ClassifierKind).
    output: ClassVar[Literal["detector", "regression", "classifier"]] = "detector"
    params_model: ClassVar[type[KindParams]] = KindParams
    # Dotted path of the estimator class: skops loads only classes it is told to trust.
    estimator: ClassVar[str]

    def __init__(self, use_case: UseCase, params: KindParams | None = None) -> None:
        self.use_case = use_case
        if params is None:
            model = use_case.model
            params = self.params_model.model_validate(
                model.params if model.kind == self.name else model.compare_params.get(self.name, {}))
        self.params = params

    # -- what each kind provides ----------------------------------------------------------------

    def build(self) -> Any:
        """A new, unfitted estimator configured from the use case."""
        raise NotImplementedError

    def baselines(self) -> dict[str, Any]:
        """Classic references fitted on the same rows and evaluated beside the model (unfitted)."""
        return {}

    def drift_columns(self) -> list[str]:
        """The feature columns drift is measured on (default: every tag's per-bucket mean)."""
        return base_columns(self.use_case.tag_names)

    def log_params(self, model: Any) -> dict[str, Any]:
        """Kind-specific fitted facts for the MLflow run's parameters."""
        return {}

    # -- shared behaviour -------------------------------------------------------------------------

    @classmethod
    def estimator_class(cls) -> type:
        module, _, name = cls.estimator.rpartition(".")
        return getattr(importlib.import_module(module), name)

    def fit(self, estimator: Any, rows: pd.DataFrame) -> Any:
        return estimator.fit(rows)

    def context_rows(self, model: Any) -> int:
        """Rows before the first row to score that a temporal model needs to be warm."""
        return int(getattr(model, "context_rows_", 0) or 0)

    @staticmethod
    def model_input(model: Any, rows: pd.DataFrame) -> pd.DataFrame:
        """The columns the model reads, plus ``asset`` and ``ts`` (temporal kinds restart at gaps)."""
        keys = [c for c in ("asset", "ts") if c in rows.columns]
        return rows[keys + [c for c in model.columns_ if c not in keys]]

    def score(self, model: Any, rows: pd.DataFrame) -> pd.DataFrame:
        """Per row (index of ``rows``): ``score`` (1.0 = threshold), ``alarm`` (0/1), and for a
        regression kind ``expected`` and ``residual`` of its target (NaN otherwise)."""
        import numpy as np
        import pandas as pd

        X = self.model_input(model, rows)
        scores = np.asarray(model.score_samples(X), dtype=float)
        out = pd.DataFrame({"score": scores, "alarm": (scores > 1.0).astype(int)}, index=rows.index)
        out["expected"] = np.nan
        out["residual"] = np.nan
        if hasattr(model, "predict_expected"):
            out["expected"] = model.predict_expected(X)
            out["residual"] = model.residuals(X)
        return out

    def tag_contributions(self, model: Any, rows: pd.DataFrame) -> pd.DataFrame:
        """Per row and tag, the tag's part of the score: the estimator's per-column contributions
        summed over the tag's columns (``<tag>``, ``<tag>__rmean``, ``<tag>__rstd``)."""
        parts = model.contributions(self.model_input(model, rows))
        return by_tag(parts[[c for c in parts.columns if c in model.columns_]].clip(lower=0))

    def evaluate(self, model: Any, data: Any) -> dict[str, Any]:
        """Held-out metrics on ``data`` (:class:`TrainingData`): the
        false-alarm rate on held-out normal rows, the detection rate and delay per fault label
        and their unweighted means (each fault counts once), NaN where the held-out set has no
        rows of that kind. A regression kind adds its target's errors on the held-out normal rows.

        The model scores the whole series (``data.series``) in time order, so a temporal model sees
        each held-out row with its history, as it would in the plant."""
        import numpy as np

        scored = self.score(model, data.series) if len(data.series) else None
        alarm = None if scored is None else scored["alarm"]
        normal = data.holdout_normal.index
        far = float(alarm.loc[normal].mean()) if len(normal) else math.nan
        rates: dict[str, float] = {}
        delays: dict[str, float] = {}
        faults = data.holdout_faults
        if len(faults):
            for label, rows in faults.groupby("label", sort=True):
                hits = alarm.loc[rows.index].to_numpy()
                rates[str(label)] = float(hits.mean())
                delays[str(label)] = _median_delay(rows, hits, self.use_case.features.bucket_seconds)
        finite_delays = [d for d in delays.values() if not math.isnan(d)]
        result = {
            "far": far,
            "detection_rate": float(np.mean(list(rates.values()))) if rates else math.nan,
            "detection_rates": rates,
            "detection_delay": float(np.median(finite_delays)) if finite_delays else math.nan,
            "detection_delays": delays,
            "n_fit": len(data.fit),
            "n_holdout_normal": len(normal),
            "n_holdout_faults": len(faults),
        }
        if self.output == "regression":
            result.update(self.regression_errors(model, data.holdout_normal) if len(normal)
                          else {"rmse": math.nan, "mae": math.nan})
        return result

    def regression_errors(self, model: Any, rows: pd.DataFrame) -> dict[str, float]:
        """RMSE and MAE of the predicted target on ``rows`` (finite residuals)."""
        import numpy as np

        residual = np.asarray(model.residuals(self.model_input(model, rows)), dtype=float)
        residual = residual[np.isfinite(residual)]
        if not len(residual):
            return {"rmse": math.nan, "mae": math.nan}
        return {"rmse": float(np.sqrt(np.mean(residual**2))), "mae": float(np.mean(np.abs(residual)))}

    def gate(self, challenger: dict[str, Any], champion: dict[str, Any] | None,
             champion_version: str | None, new_normal: dict[str, Any] | None = None) -> tuple[bool, str]:
        """Promote the challenger over the champion? Both were evaluated on the same held-out rows.
        Without a champion, or with one that cannot score today's features, the challenger wins.
        ``new_normal`` (``since``, ``rows``, ``champion_far``): the champion on the held-out normal
        rows of today's plant, those after a declared reference start or confirmed normal since the
        champion was trained. Beyond the false-alarm limit there it is no longer valid and loses to a
        challenger within the limit on all held-out normal rows, however their detection rates
        compare; otherwise the kind's :meth:`compare` decides."""
        if champion_version is None:
            return True, "no champion to compare with"
        if champion is None:
            return True, f"champion v{champion_version} cannot score the current features"
        limit = far_limit(self.use_case.model.false_alarm_rate)
        far = challenger.get("far", math.nan)
        if new_normal is not None and new_normal["champion_far"] > limit and not math.isnan(far) and far <= limit:
            # Today's normal operation (after a declared new reference, or confirmed normal by people
            # since the champion was trained) is the ground truth: a model that false-alarms on it no
            # longer describes the plant.
            return True, (f"champion v{champion_version} is no longer valid: false-alarm rate "
                          f"{new_normal['champion_far']:.4f} on {new_normal['rows']} held-out normal rows since "
                          f"{new_normal['since']} > limit {limit:.4f}; challenger {far:.4f} on all held-out normal "
                          f"rows <= {limit:.4f}")
        return self.compare(challenger, champion, champion_version, limit)

    def compare(self, challenger: dict[str, Any], champion: dict[str, Any], champion_version: str,
                limit: float) -> tuple[bool, str]:
        """Detectors: within the false-alarm limit and a higher mean detection rate (ties broken by a
        shorter median detection delay)."""
        target = self.use_case.model.false_alarm_rate
        far, rate = challenger["far"], challenger["detection_rate"]
        if math.isnan(far):
            return False, "held-out set lacks normal-labelled rows: nothing to compare on"
        if far > limit:
            return False, f"false-alarm rate {far:.4f} above the limit {limit:.4f} (target {target})"
        if math.isnan(rate):
            return False, "held-out set lacks fault-labelled rows: nothing to compare on"
        best = champion.get("detection_rate", math.nan)
        if math.isnan(best) or rate > best:
            return True, (f"detection rate {rate:.4f} > champion v{champion_version} {best:.4f} "
                          f"at false-alarm rate {far:.4f} <= {limit:.4f}")
        delay, best_delay = challenger.get("detection_delay", math.nan), champion.get("detection_delay", math.nan)
        if rate == best and not math.isnan(delay) and not math.isnan(best_delay) and delay < best_delay:
            return True, (f"detection rate {rate:.4f} equal to champion v{champion_version}, median delay "
                          f"{delay:g} < {best_delay:g} buckets")
        return False, f"detection rate {rate:.4f} not above champion v{champion_version} {best:.4f}"


class RegressionKind(ModelKind):
    """A kind that predicts a target tag from its drivers; the residual is the anomaly score."""

    output: ClassVar[Literal["detector", "regression", "classifier"]] = "regression"

    def compare(self, challenger: dict[str, Any], champion: dict[str, Any], champion_version: str,
                limit: float) -> tuple[bool, str]:
        """Within the false-alarm limit (or no worse than the champion's rate on the same rows) and
        a lower held-out RMSE of the target; labelled faults, where they exist, must not be detected
        less."""
        target = self.use_case.model.false_alarm_rate
        far, rmse = challenger["far"], challenger.get("rmse", math.nan)
        if math.isnan(far) or math.isnan(rmse):
            return False, "held-out set lacks normal rows with the target: nothing to compare on"
        champion_far, best = champion.get("far", math.nan), champion.get("rmse", math.nan)
        allowed = max(limit, champion_far) if not math.isnan(champion_far) else limit
        if far > allowed:
            return False, f"false-alarm rate {far:.4f} above {allowed:.4f} (limit {limit:.4f}, target {target})"
        rate, best_rate = challenger["detection_rate"], champion.get("detection_rate", math.nan)
        if not math.isnan(rate) and not math.isnan(best_rate) and rate < best_rate:
            return False, f"detection rate {rate:.4f} below champion v{champion_version} {best_rate:.4f}"
        if math.isnan(best) or rmse < best:
            return True, (f"held-out RMSE {rmse:.4g} < champion v{champion_version} {best:.4g} "
                          f"at false-alarm rate {far:.4f} <= {allowed:.4f}")
        return False, f"held-out RMSE {rmse:.4g} not below champion v{champion_version} {best:.4g}"


# The inspectors' defect probabilities, one per class index: what the elpv data, the inspectors'
# labels and the classifier kinds all mean by a class.
CLASS_PROBABILITIES = (0.0, 1 / 3, 2 / 3, 1.0)
# The degenerate-model guard of the classifier gate (ClassifierKind.degenerate).
MAX_TOP_CLASS_SHARE = 0.95
MIN_BALANCED_MARGIN = 0.05


def class_index(probability: float) -> int:
    """The class index (0..3) of a defect probability (0, 1/3, 2/3 or 1, within rounding)."""
    for index, value in enumerate(CLASS_PROBABILITIES):
        if abs(float(probability) - value) < 1e-3:
            return index
    raise ValueError(f"defect probability {probability!r} is not one of 0, 1/3, 2/3, 1")


class ClassifierParams(KindParams):
    """What every classifier kind shares: the operating point.

    ``defective_from``: a cell is defective when its inspector defect probability is at least this
    (default 2/3: classes 2 and 3; the 1/3 class is "probably fine"). ``reject_threshold``: the line
    rejects a cell when the model's defect probability (its probability that the cell is defective,
    see :meth:`ClassifierKind.score`) is above this. Below 0.5 because a missed defect costs more
    than a false reject (a defective cell in a module costs the module, a rejected good cell a
    re-inspection)."""

    defective_from: float = Field(default=2 / 3, gt=0.0, le=1.0)
    reject_threshold: float = Field(default=0.4, gt=0.0, lt=1.0)


class ImageSplit(NamedTuple):
    """Labelled image-feature rows split for one training run: ``fit`` and the fixed ``holdout``
    (each with ``label`` 0..3 or ``defect_probability``)."""

    fit: pd.DataFrame
    holdout: pd.DataFrame


class ClassifierKind(ModelKind):
    """A kind that classifies images into the four inspector classes (visual inspection).

    Rows are image-feature rows (``pixels``: ``size`` x ``size`` floats 0..1, row-major; ``size``;
    ``module_type``; the image statistics). The estimator has ``fit(rows, classes)``,
    ``predict_proba(rows)`` (n x 4, the class probabilities) and ``columns_`` (the columns it reads).
    """

    output: ClassVar[Literal["detector", "regression", "classifier"]] = "classifier"
    params_model: ClassVar[type[KindParams]] = ClassifierParams

    @staticmethod
    def classes(rows: pd.DataFrame) -> Any:
        """The class index (0..3) of each labelled row: ``label``, else the nearest class of
        ``defect_probability``."""
        import numpy as np

        if "label" in rows.columns:
            classes = rows["label"].to_numpy()
        elif "defect_probability" in rows.columns:
            probability = rows["defect_probability"].to_numpy(dtype=float)
            classes = np.abs(probability[:, None] - np.asarray(CLASS_PROBABILITIES)[None, :]).argmin(axis=1)
        else:
            raise ValueError("labelled image rows need a 'label' (0..3) or 'defect_probability' column; "
                             f"got {list(rows.columns)}")
        classes = np.asarray(classes, dtype=np.int64)
        if len(classes) and (classes.min() < 0 or classes.max() >= len(CLASS_PROBABILITIES)):
            raise ValueError(f"label must be a class index 0..{len(CLASS_PROBABILITIES) - 1}, got "
                             f"{sorted(set(classes.tolist()))}")
        return classes

    def defective_classes(self) -> list[int]:
        cut = self.params.defective_from - 1e-6
        return [k for k, p in enumerate(CLASS_PROBABILITIES) if p >= cut]

    def fit(self, estimator: Any, rows: pd.DataFrame) -> Any:
        return estimator.fit(rows, self.classes(rows))

    @staticmethod
    def model_input(model: Any, rows: pd.DataFrame) -> pd.DataFrame:
        """The columns the model reads, plus ``cell_id`` (named in errors about a row)."""
        keys = [c for c in ("cell_id",) if c in rows.columns]
        return rows[keys + [c for c in model.columns_ if c in rows.columns]]

    def drift_columns(self) -> list[str]:
        """The image statistics (a camera or lighting change moves them first)."""
        from plantops.image_features import STATS

        return list(STATS)

    def score(self, model: Any, rows: pd.DataFrame) -> pd.DataFrame:
        """Per row (index of ``rows``): ``p_class_0..3`` (class probabilities), ``predicted_class``
        (the most probable), ``defect_probability`` (the probability that the cell is defective: the
        summed probabilities of the classes at or above ``defective_from``), ``expected`` (the
        expected inspector defect probability, sum of p_k x 0, 1/3, 2/3, 1), ``score`` = defect
        probability / ``reject_threshold`` (1.0 = the threshold) and ``alarm`` (1 = reject, score
        above 1.0). ``residual`` is NaN (no target)."""
        import numpy as np
        import pandas as pd

        proba = np.asarray(model.predict_proba(self.model_input(model, rows)), dtype=float)
        defect = proba[:, self.defective_classes()].sum(axis=1)
        score = defect / self.threshold(model)
        out = pd.DataFrame({"score": score, "alarm": (score > 1.0).astype(int)}, index=rows.index)
        out["expected"] = proba @ np.asarray(CLASS_PROBABILITIES)
        out["residual"] = np.nan
        out["predicted_class"] = proba.argmax(axis=1).astype(int)
        out["defect_probability"] = defect
        for k in range(proba.shape[1]):
            out[f"p_class_{k}"] = proba[:, k]
        return out

    def threshold(self, model: Any) -> float:
        """The reject threshold on P(defective): the one the model chose on its fit cells
        (``reject_threshold_``, e.g. ``cell_pretrained``'s for a defect-recall target), else the
        kind's ``reject_threshold``."""
        return float(getattr(model, "reject_threshold_", self.params.reject_threshold))

    def tag_contributions(self, model: Any, rows: pd.DataFrame) -> pd.DataFrame:
        """The image is the one input: its part is the whole score (where on the cell: the
        explanations' heat maps)."""
        import pandas as pd

        return pd.DataFrame({"pixels": self.score(model, rows)["score"].clip(lower=0)}, index=rows.index)

    def evaluate(self, model: Any, data: Any) -> dict[str, Any]:
        """Held-out metrics on ``data.holdout`` (:class:`ImageSplit`, or a frame of held-out rows):

        - ``accuracy``: four-class accuracy, the share of held-out cells whose predicted class is
          the inspectors' (the figure Deitsch et al. 2019 report as average accuracy: 82.44 % SVM,
          88.42 % CNN); ``balanced_accuracy``: the mean of the per-class recalls (``recall``, by
          class index); ``confusion``: 4 x 4 counts, rows the true class, columns the predicted;
        - ``defect_recall``: the share of defective cells (``defective_from``) rejected;
          ``false_reject_rate``: the share of the other cells rejected; ``detection_rates``: the
          share rejected per defective class; ``far``/``detection_rate`` repeat the last two
          under the names the training stage logs.

        NaN where the held-out set has no cell to measure on."""
        import numpy as np

        holdout = data if hasattr(data, "columns") else data.holdout
        n_classes = len(CLASS_PROBABILITIES)
        confusion = np.zeros((n_classes, n_classes), dtype=int)
        rejected = np.zeros(0, dtype=bool)
        truth = np.zeros(0, dtype=int)
        if len(holdout):
            truth = self.classes(holdout)
            scored = self.score(model, holdout)
            np.add.at(confusion, (truth, scored["predicted_class"].to_numpy()), 1)
            rejected = scored["alarm"].to_numpy() == 1
        defective = np.isin(truth, self.defective_classes())
        support = confusion.sum(axis=1)
        recall = {str(k): (float(confusion[k, k] / support[k]) if support[k] else math.nan) for k in range(n_classes)}
        present = [r for r in recall.values() if not math.isnan(r)]

        def share(mask: Any) -> float:
            return float(rejected[mask].mean()) if mask.any() else math.nan

        defect_recall, false_reject = share(defective), share(~defective)
        result = {
            "accuracy": float(np.trace(confusion) / len(truth)) if len(truth) else math.nan,
            "balanced_accuracy": float(np.mean(present)) if present else math.nan,
            "recall": recall,
            "confusion": confusion.tolist(),
            "defect_recall": defect_recall,
            "false_reject_rate": false_reject,
            "far": false_reject,
            "detection_rate": defect_recall,
            "detection_rates": {f"class_{k}": share(truth == k) for k in self.defective_classes() if (truth == k).any()},
            "reject_threshold": self.threshold(model),
            # the share of held-out cells given the most predicted class (the degenerate-model guard)
            "top_class_share": float(confusion.sum(axis=0).max() / len(truth)) if len(truth) else math.nan,
            "n_fit": len(getattr(data, "fit", ())),
            "n_holdout": len(truth),
            "n_holdout_defective": int(defective.sum()),
        }
        # Why the gate would refuse this model ("" when it would not): kept with every evaluation, so
        # the decision record says it of a compared kind too.
        result["degenerate"] = self.degenerate(result) or ""
        return result

    def gate(self, challenger: dict[str, Any], champion: dict[str, Any] | None,
             champion_version: str | None, new_normal: dict[str, Any] | None = None) -> tuple[bool, str]:
        """Both evaluated on the same held-out cells. Promote when the defect recall at the
        operating point is not lower than the champion's (a missed defect is the costly error) and
        the four-class accuracy is higher; on equal accuracy, a higher defect recall wins. Without
        a champion, or with one that cannot score these rows, the challenger wins. ``new_normal``
        does not apply: inspectors' labels, not normal operation, judge a classifier.

        Before any comparison, a degenerate challenger (:meth:`degenerate`) is refused, even when
        there is no champion yet: a model that calls nearly every cell one class is not a model."""
        refused = self.degenerate(challenger)
        if refused is not None:
            return False, refused
        if champion_version is None:
            return True, "no champion to compare with"
        if champion is None:
            return True, f"champion v{champion_version} cannot score the current image rows"
        return self.compare(challenger, champion, champion_version, math.nan)

    @staticmethod
    def degenerate(evaluation: dict[str, Any]) -> str | None:
        """Why a held-out evaluation shows a degenerate model (None when it does not): one class
        predicted for more than :data:`MAX_TOP_CLASS_SHARE` of the held-out cells, or a balanced
        accuracy at most chance (1 / classes) + :data:`MIN_BALANCED_MARGIN`. Such a model can still
        score a high four-class accuracy on elpv (57 % of the cells are class 0)."""
        n_classes = len(CLASS_PROBABILITIES)
        share = evaluation.get("top_class_share", math.nan)
        confusion = evaluation.get("confusion")
        if (share is None or math.isnan(share)) and confusion is not None:
            counts = [sum(row[k] for row in confusion) for k in range(n_classes)]
            share = max(counts) / sum(counts) if sum(counts) else math.nan
        if share is not None and not math.isnan(share) and share > MAX_TOP_CLASS_SHARE:
            return (f"degenerate model refused: one class predicted for {share:.1%} of the held-out cells "
                    f"(> {MAX_TOP_CLASS_SHARE:.0%})")
        balanced = evaluation.get("balanced_accuracy", math.nan)
        floor = 1 / n_classes + MIN_BALANCED_MARGIN
        if balanced is not None and not math.isnan(balanced) and balanced <= floor:
            return (f"degenerate model refused: balanced accuracy {balanced:.4f} <= chance 1/{n_classes} + "
                    f"{MIN_BALANCED_MARGIN} = {floor:.4f}")
        return None

    def compare(self, challenger: dict[str, Any], champion: dict[str, Any], champion_version: str,
                limit: float) -> tuple[bool, str]:
        accuracy, recall = challenger.get("accuracy", math.nan), challenger.get("defect_recall", math.nan)
        if math.isnan(accuracy):
            return False, "held-out set lacks labelled cells: nothing to compare on"
        if math.isnan(recall):
            return False, "held-out set lacks defective cells: nothing to compare on"
        best, best_recall = champion.get("accuracy", math.nan), champion.get("defect_recall", math.nan)
        if not math.isnan(best_recall) and recall < best_recall:
            return False, (f"defect recall {recall:.4f} below champion v{champion_version} {best_recall:.4f} "
                           f"(four-class accuracy {accuracy:.4f} vs {best:.4f})")
        if math.isnan(best) or accuracy > best:
            return True, (f"four-class accuracy {accuracy:.4f} > champion v{champion_version} {best:.4f} "
                          f"at defect recall {recall:.4f} >= {best_recall:.4f}")
        if accuracy == best and not math.isnan(best_recall) and recall > best_recall:
            return True, (f"four-class accuracy {accuracy:.4f} equal to champion v{champion_version}, defect "
                          f"recall {recall:.4f} > {best_recall:.4f}")
        return False, f"four-class accuracy {accuracy:.4f} not above champion v{champion_version} {best:.4f}"


def _median_delay(rows: pd.DataFrame, alarms: Sequence[int], bucket_seconds: int) -> float:
    """Median over the label's episodes (runs of rows without a gap) of the rows from the episode's
    first row to the first of :data:`CONSECUTIVE_ALARMS` consecutive alarms; an episode never
    detected counts as its length."""
    import numpy as np
    import pandas as pd

    ts = pd.to_datetime(rows["ts"], utc=True).to_numpy()
    assets = rows["asset"].to_numpy() if "asset" in rows.columns else np.zeros(len(rows))
    alarms = np.asarray(alarms)
    gap = np.timedelta64(int(bucket_seconds * 3), "s")
    breaks = np.r_[True, (np.diff(ts) > gap) | (assets[1:] != assets[:-1])]
    episodes = np.cumsum(breaks)
    delays = []
    for k in np.unique(episodes):
        hits = alarms[episodes == k]
        run = np.convolve(hits, np.ones(CONSECUTIVE_ALARMS, dtype=int), mode="valid")
        first = np.flatnonzero(run == CONSECUTIVE_ALARMS)
        delays.append(float(first[0]) if len(first) else float(len(hits)))
    return float(np.median(delays)) if delays else math.nan


def by_tag(per_column: pd.DataFrame) -> pd.DataFrame:
    """Per-column parts summed per tag (``<tag>``, ``<tag>__rmean`` and ``<tag>__rstd`` are one tag)."""
    return per_column.T.groupby(lambda col: col.split("__")[0], sort=False).sum().T


def whole_row(use_case: UseCase) -> tuple[str, ...]:
    return tuple(feature_columns(use_case.tag_names))
