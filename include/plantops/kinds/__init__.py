"""Model kinds: one module per kind behind the contract of :mod:`plantops.kinds.base`.

``model.kind`` in a use case's YAML picks one by name; ``model.params`` is checked by the kind's
own parameter block. Importing this package is light (pydantic only): the estimators, and numpy,
pandas and scikit-learn with them, load when a kind builds or loads a model.

Adding a kind: write ``plantops/kinds/<name>.py`` with a :class:`~plantops.kinds.base.ModelKind`
subclass (name, summary, parameter block, estimator path, ``build``; optionally ``baselines``,
``drift_columns``, ``gate``), its estimator in a private module beside it, and add the class to
:data:`KINDS` below. The contract tests (``tests/test_kinds.py``) then run over it as well.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from plantops.kinds.base import KindParams, ModelKind
from plantops.kinds.cell_cnn import CellCnn
from plantops.kinds.cell_ensemble import CellEnsemble
from plantops.kinds.cell_pretrained import CellPretrained
from plantops.kinds.cell_texture_svm import CellTextureSvm
from plantops.kinds.mspm_early import MspmEarly
from plantops.kinds.mspm_pca import MspmPca
from plantops.kinds.normal_behaviour import NormalBehaviour

if TYPE_CHECKING:
    from plantops.config import UseCase

KINDS: dict[str, type[ModelKind]] = {kind.name: kind for kind in (MspmPca, MspmEarly, NormalBehaviour,
                                                                  CellTextureSvm, CellCnn, CellEnsemble,
                                                                  CellPretrained)}


class UnknownKind(KeyError):
    def __str__(self) -> str:
        return f"unknown model kind {self.args[0]!r}; expected one of {sorted(KINDS)}"


def kind_class(name: str) -> type[ModelKind]:
    try:
        return KINDS[name]
    except KeyError:
        raise UnknownKind(name) from None


def get_kind(use_case: UseCase, name: str | None = None) -> ModelKind:
    """The use case's kind (or the named one, with its default parameters, e.g. a baseline kind)."""
    return kind_class(name or use_case.model.kind)(use_case)


def kind_of(use_case: UseCase, model: Any) -> ModelKind:
    """The kind a fitted model belongs to (a champion may be of another kind than the YAML's now)."""
    for kind in KINDS.values():
        if type(model).__module__ + "." + type(model).__name__ == kind.estimator:
            if kind.name == use_case.model.kind:
                return get_kind(use_case)
            # Another kind than the YAML's: the parameters the estimator was built with.
            fields = kind.params_model.model_fields
            return kind(use_case, kind.params_model.model_validate(
                {f: getattr(model, f) for f in fields if hasattr(model, f)}))
    raise UnknownKind(type(model).__name__)


def trusted_types() -> list[str]:
    """Every kind's estimator class: what skops may load from the registry."""
    return sorted({kind.estimator for kind in KINDS.values()})


def validate_params(name: str, params: dict[str, Any]) -> KindParams:
    return kind_class(name).params_model.model_validate(params)
