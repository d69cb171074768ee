"""A modality's pieces of the Plant ML page (``plugins/plantops_plugin.py``), and the few HTML
helpers the page and the pieces share.

The plugin draws what every use case has (the champion, approvals, the monitor's days, charts,
quarantine, pipeline health) from the view dict of :func:`plantops.stages.overview.use_case_view`;
where the page shows a modality's own evidence it asks the modality's :class:`Page`
(``Modality.page()``, picked by the view's ``modality``) and never which modality it has:

- ``section(v)``: a section of its own after the champion (an inspection line's latest day), or "";
- ``evidence_headers`` and ``evidence(day)``: the timeline's columns of the model's outputs on a
  judged day (alarms and their top tags; rejects and the rejected cells);
- ``chart(v)``: the charts' part for the latest scored day (a score against its limit), or "".

The rate bar's word ("Alarm rate", "Reject rate") is the modality's ``words.output``. Every value
rendered is escaped with :func:`e`. Importing this module is light (the standard library only).
"""

from __future__ import annotations

import html
import math
from typing import Any


def e(value: Any) -> str:
    """Escaped text of a value; None as an em dash."""
    return "&mdash;" if value is None else html.escape(str(value), quote=True)


def pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0%}"


def num(value: float | None, fmt: str = ".3g") -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, fmt)


def link(href: str | None, text: str, top: bool = True, here: bool = False) -> str:
    """A link; pages of the Airflow UI open in the whole window (the view sits in the UI's frame),
    reports and MLflow in a new tab, and the view's own pages (``here``) in the frame itself."""
    if not href:
        return e(text)
    target = "" if here else ' target="_top"' if top else ' target="_blank" rel="noopener"'
    return f'<a href="{e(href)}"{target}>{e(text)}</a>'


class Page:
    """How the Plant ML page draws one modality's pieces of the view (see the module docstring)."""

    # The timeline's two columns of the model's outputs: their count, and what they were.
    evidence_headers: tuple[str, str]

    def section(self, v: dict[str, Any]) -> str:
        """The modality's own section after the champion; "" when it has none."""
        return ""

    def evidence(self, day: dict[str, Any]) -> str:
        """The second evidence cell of a judged day (``overview.timeline``'s entry): what the model
        flagged that day, escaped HTML."""
        raise NotImplementedError

    def chart(self, v: dict[str, Any]) -> str:
        """The charts' part for the latest scored day, or "" when the modality shows it elsewhere."""
        raise NotImplementedError
