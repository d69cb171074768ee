"""Data modalities: one package per kind of data behind the contract of :mod:`plantops.modalities.base`.

A use case's modality follows from its YAML (``UseCase.modality``: ``images`` with an ``inspection``
section, else ``tags``), so existing files need no new field. Importing this package is light.

Adding a modality: write ``plantops/modalities/<name>/`` with a :class:`~plantops.modalities.base.Modality`
subclass in its ``__init__`` and the work in modules beside it, then add the class to
:data:`MODALITIES` (or :func:`register` it). The contract tests (``tests/test_modalities.py``) run over
every registered modality; docs/adding-a-modality.md walks through one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from plantops.modalities.base import Modality, NoFeatures, TrainingRows
from plantops.modalities.images import Images
from plantops.modalities.tags import Tags

if TYPE_CHECKING:
    from plantops.config import UseCase

__all__ = ["MODALITIES", "Modality", "NoFeatures", "TrainingRows", "UnknownModality", "modality_of", "register"]

MODALITIES: dict[str, type[Modality]] = {m.name: m for m in (Tags, Images)}


class UnknownModality(KeyError):
    def __str__(self) -> str:
        return f"unknown modality {self.args[0]!r}; expected one of {sorted(MODALITIES)}"


def register(modality: type[Modality]) -> type[Modality]:
    """Add a modality to the registry (usable as a class decorator)."""
    MODALITIES[modality.name] = modality
    return modality


def modality_of(use_case: UseCase) -> Modality:
    """The use case's modality, bound to it."""
    for modality in MODALITIES.values():
        if modality.suits(use_case):
            return modality(use_case)
    raise UnknownModality(use_case.modality)
