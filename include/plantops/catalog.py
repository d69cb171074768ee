"""Named plug-ins looked up by name: model kinds and data modalities.

The config checks a YAML's ``model.kind`` and ``modality`` against the plug-ins that exist, and the
plug-ins take the parsed config (``UseCase``). So that neither imports the other (no import cycle),
the config asks this module, which loads the plug-in package by its dotted name on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

# What the plug-in packages export: the registry (a dict by name) and, for kinds, the parameter check.
PROVIDERS = {"kinds": ("plantops.kinds", "KINDS"), "modalities": ("plantops.modalities", "MODALITIES")}


def provider(what: str) -> Any:
    """The plug-in package of ``what`` (``kinds``, ``modalities``), imported on first use."""
    return importlib.import_module(PROVIDERS[what][0])


def registered(what: str) -> dict[str, Any]:
    """The registered plug-ins of ``what`` by name (the package's registry itself, not a copy)."""
    module, attr = PROVIDERS[what]
    return getattr(importlib.import_module(module), attr)
