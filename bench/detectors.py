"""Fault detectors side by side on the Tennessee Eastman test runs (Braatz data, bibmon wheel).

    PYTHONPATH=include:. .venv/bin/python -m bench.detectors [--json PATH]

prints a markdown table and writes JSON (default ``bench/detectors.json``).

Protocol
--------
Features
    Every TEP run becomes feature rows on its own (the runs are separate simulations, so no rolling
    window spans two of them) with :func:`plantops.features.wide_features_pandas`, the pipeline's
    contract: 3-minute buckets (``bucket_seconds`` 180, one sample per bucket), ``rolling_buckets``
    20. As in ``tests/test_training.py::_segment`` the first 20 rows of each run are dropped (their
    rolling statistics cover less than a full window), so a run of N samples gives rows for
    samples 20..N-1. All runs sit on one asset's time axis, one day apart, so a filter restarts at
    each run's start.
Fit
    ``d00.dat`` only (the normal training run; 500 samples in the wheel, 480 feature rows). Nothing
    of ``d00_te`` is seen by a fit: it is a separate normal simulation, kept whole for the
    false-alarm rate. Every detector is calibrated by its own ``fit`` to the use case's
    false-alarm target (``model.false_alarm_rate``).
Detectors, as ``tep_reactor`` trains them
    Built by the kinds from ``include/use_cases/tep_reactor.yaml``: ``early`` is ``mspm_early``
    with ``model.params``; ``mspm_pca`` and ``baseline`` (textbook PCA T²/Q on the 52 base tags)
    are the references every ``mspm_early`` training fits beside it (``MspmEarly.baselines``: the
    same explained variance). ``mspm_pca_own`` is ``mspm_pca`` as its own kind would be built from
    the YAML (``model.compare_params['mspm_pca']``, absent: the kind's defaults), for reference.
False-alarm rate (FAR)
    On the normal test run ``d00_te`` (rows for samples 20..959, 940 rows), and on the pre-onset
    rows (samples 20..159) of all 21 fault test runs. Both are reported.
Faults
    Each test run ``dNN_te`` (960 samples, fault from sample 160) is scored on its own feature rows,
    the whole run: filters see the pre-onset normal data first. Detection rate: share of alarmed
    rows from sample 160 on (800 rows). Detection delay: samples from the onset to the first of 3
    consecutive alarms; ``None`` if never (for the median, an undetected fault counts as the
    remaining 800 samples). Reported: mean detection rate over all 21 faults and over the 18
    without faults 3, 9 and 15 (known to be undetectable from these data), and the median delay
    over the 21 (and the 18).
Two comparisons
    ``own``: every detector at its own control limit (score > 1.0), FAR measured on ``d00_te``.
    ``equal FAR``: each detector's threshold set to the 95th percentile of its own scores on
    ``d00_te``, so every one alarms on 5 % of those rows. The threshold is chosen on ``d00_te``, so
    the FAR measured there is 5 % by construction, not a result: this comparison only makes the
    detection rates and delays comparable across detectors (nobody wins by alarming more).

"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from plantops.config import UseCase, load_use_case
from plantops.features import wide_features_pandas
from plantops.kinds.mspm_early import MspmEarly
from plantops.kinds.mspm_pca import MspmPca
from plantops.sources import tep

BUCKET_SECONDS = 180
ROLLING = 20
EQUAL_FAR = 0.05  # the equal-FAR comparison: every threshold at this quantile of its d00_te scores
CONSECUTIVE = 3
UNDETECTABLE = (3, 9, 15)
START = pd.Timestamp("2024-01-01", tz="UTC")
RUN_SPACING = 2000  # samples between run starts on the time axis (> 960 + a day's gap)
DEFAULT_JSON = Path(__file__).with_name("detectors.json")
USE_CASE = Path(__file__).resolve().parents[1] / "include" / "use_cases" / "tep_reactor.yaml"


def detectors(use_case: UseCase) -> dict[str, Any]:
    """The detectors as ``use_case`` trains them: its kind with ``model.params`` and the references
    its trainings fit beside it, plus ``mspm_pca`` as its own kind from ``model.compare_params``."""
    if use_case.model.kind != MspmEarly.name:
        raise ValueError(f"{USE_CASE.name}: model.kind is {use_case.model.kind!r}; this benchmark "
                         f"compares {MspmEarly.name!r} with its references")
    early = MspmEarly(use_case)
    references = early.baselines()
    return {
        "baseline": references["baseline"],
        "mspm_pca": references["mspm_pca"],
        "mspm_pca_own": MspmPca(use_case).build(),
        "early": early.build(),
    }


def run_features(values: np.ndarray, slot: int) -> pd.DataFrame:
    """The feature rows of one run (samples ROLLING..N-1), placed at its own slot in time."""
    n = len(values)
    ts = START + pd.to_timedelta((slot * RUN_SPACING + np.arange(n)) * tep.SAMPLE_SECONDS, unit="s")
    long = pd.DataFrame(values, columns=list(tep.TAGS)).assign(ts=ts).melt(
        id_vars="ts", var_name="tag", value_name="value"
    )
    long = long.assign(asset="tep_reactor", quality="good")
    wide = wide_features_pandas(long, list(tep.TAGS), BUCKET_SECONDS, ROLLING)
    return wide.iloc[ROLLING:].reset_index(drop=True)


def load_data() -> dict[str, pd.DataFrame]:
    data = {
        "d00": run_features(tep.load_run(0, False), 0),
        "d00_te": run_features(tep.load_run(0, True), 1),
    }
    for fault in tep.FAULTS:
        data[f"d{fault:02d}_te"] = run_features(tep.load_run(fault, True), 1 + fault)
    return data


def first_run(alarms: np.ndarray, k: int = CONSECUTIVE) -> int | None:
    """Index of the first of ``k`` consecutive alarms, or None."""
    if len(alarms) < k:
        return None
    hits = np.flatnonzero(np.convolve(alarms.astype(int), np.ones(k, dtype=int), "valid") == k)
    return int(hits[0]) if len(hits) else None


def summarise(normal: np.ndarray, runs: dict[int, np.ndarray], threshold: float) -> dict[str, Any]:
    onset = tep.FAULT_ONSET_TEST - ROLLING  # row of sample 160
    pre, rates, delays = [], {}, {}
    for fault, scores in runs.items():
        alarms = scores > threshold
        pre.append(alarms[:onset])
        post = alarms[onset:]
        rates[fault] = float(post.mean())
        delays[fault] = first_run(post)
    remaining = {f: (d if d is not None else len(runs[f]) - onset) for f, d in delays.items()}
    detectable = [f for f in runs if f not in UNDETECTABLE]
    return {
        "threshold": float(threshold),
        "far_d00_te": float((normal > threshold).mean()),
        "far_pre_onset": float(np.concatenate(pre).mean()),
        "detection_rate_21": float(np.mean(list(rates.values()))),
        "detection_rate_18": float(np.mean([rates[f] for f in detectable])),
        "median_delay_21": float(statistics.median(remaining.values())),
        "median_delay_18": float(statistics.median(remaining[f] for f in detectable)),
        "detection_rate": {str(f): round(v, 4) for f, v in rates.items()},
        "delay": {str(f): v for f, v in delays.items()},
    }


def evaluate(name: str, model: Any, data: dict[str, pd.DataFrame]) -> dict[str, Any]:
    fit_rows = data["d00"]
    start = time.perf_counter()
    model.fit(fit_rows)
    fit_seconds = time.perf_counter() - start
    start = time.perf_counter()
    normal = model.score_samples(data["d00_te"])
    runs = {f: model.score_samples(data[f"d{f:02d}_te"]) for f in tep.FAULTS}
    score_seconds = (time.perf_counter() - start) / (1 + len(runs))
    equal = float(np.quantile(normal, 1 - EQUAL_FAR))
    return {
        "detector": name,
        "params": {k: (list(v) if isinstance(v, (list, tuple)) else v) for k, v in model.get_params().items()
                   if k != "columns"},
        "n_columns": int(model.n_features_in_),
        "fit_rows": int(len(fit_rows)),
        "fit_seconds": round(fit_seconds, 3),
        "score_seconds_per_run": round(score_seconds, 4),
        "own": summarise(normal, runs, 1.0),
        "equal_far": summarise(normal, runs, equal),
    }


def markdown(results: list[dict[str, Any]]) -> str:
    lines = [
        "| detector | columns | comparison | FAR d00_te | FAR pre-onset | mean DR (21) | mean DR (18) "
        "| median delay (21) | median delay (18) | fit s |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for comparison, label in (("own", "own limit"), ("equal_far", f"equal FAR {EQUAL_FAR:.0%}")):
        for r in results:
            s = r[comparison]
            lines.append(
                f"| {r['detector']} | {r['n_columns']} | {label} | {s['far_d00_te']:.3f} | "
                f"{s['far_pre_onset']:.3f} | {s['detection_rate_21']:.3f} | {s['detection_rate_18']:.3f} | "
                f"{s['median_delay_21']:.0f} | {s['median_delay_18']:.0f} | {r['fit_seconds']:.2f} |"
            )
    lines += ["", f"Fit on d00 only. Equal FAR: each threshold is the {1 - EQUAL_FAR:.0%} quantile of the "
              f"detector's scores on d00_te, so its FAR on d00_te is {EQUAL_FAR:.0%} by construction; "
              "only its detection rates and delays are results.",
              "", "Params: " + "; ".join(
                  f"{r['detector']} explained_variance {r['params'].get('explained_variance')}"
                  + (f", ewma_lambda {r['params']['ewma_lambda']}" if "ewma_lambda" in r["params"] else "")
                  for r in results)]
    lines += ["", "Per fault, detection rate / delay in samples (- = never 3 alarms in a row):", ""]
    header = "| fault | " + " | ".join(f"{r['detector']} own | {r['detector']} eq" for r in results) + " |"
    lines += [header, "|---:|" + "---:|" * (2 * len(results))]
    for fault in tep.FAULTS:
        cells = []
        for r in results:
            for comparison in ("own", "equal_far"):
                s = r[comparison]
                delay = s["delay"][str(fault)]
                cells.append(f"{s['detection_rate'][str(fault)]:.2f} / {'-' if delay is None else delay}")
        lines.append(f"| {fault} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help="where to write the results")
    args = parser.parse_args(argv)
    began = time.perf_counter()
    data = load_data()
    features_seconds = time.perf_counter() - began
    use_case = load_use_case(USE_CASE)
    results = [evaluate(name, model, data) for name, model in detectors(use_case).items()]
    out = {
        "protocol": {
            "use_case": str(USE_CASE.relative_to(USE_CASE.parents[2])),
            "bucket_seconds": BUCKET_SECONDS, "rolling_buckets": ROLLING,
            "target_far": use_case.model.false_alarm_rate,
            "fit": "d00 only", "normal": "d00_te samples 20..959 (the whole run)",
            "equal_far": f"threshold = {1 - EQUAL_FAR:.2f} quantile of the score on d00_te; its FAR "
                         f"there is {EQUAL_FAR} by construction",
            "pre_onset": "samples 20..159 of each fault test run", "onset_sample": tep.FAULT_ONSET_TEST,
            "delay": f"first of {CONSECUTIVE} consecutive alarms; undetected = remaining samples "
                     "in the median",
            "undetectable": list(UNDETECTABLE),
        },
        "results": results,
        "features_seconds": round(features_seconds, 2),
        "total_seconds": round(time.perf_counter() - began, 2),
        "python": platform.python_version(),
    }
    print(markdown(results))
    print(f"\nfeatures {features_seconds:.1f} s, total {out['total_seconds']:.1f} s")
    args.json.write_text(json.dumps(out, indent=2) + "\n")
    return out


if __name__ == "__main__":
    main()
