"""plantops Airflow plugin: the "Plant ML" view, the Evidently reports and the decision store, inside the Airflow UI.

Mounted by the api-server at ``/plantops``; every route requires a logged-in Airflow user (the
same session cookie or bearer token as the REST API), and shows only the use cases whose DAGs the
user may read (a site's people: their site's; :class:`Readable`); another site's use case, report,
heat map or decisions is a 403:

- ``/plantops/view/``                        every use case and asset: champion, last decision, health
- ``/plantops/view/<use_case>[?asset=]``     one use case (one asset of a fleet): the champion and its
  held-out metrics, the monitor's days (branch, rule, reason, drift, alarms and their tags, plant
  events, feedback, report, run, approval), pending approvals, quarantine, pipeline health, charts;
  for a visual inspection line also its latest inspection day (counts per class, the rejected cells
  with their heat maps and the inspectors' late labels) and the champion's confusions
- ``/plantops/view/data`` and ``/plantops/view/<use_case>/data``   the same as JSON
- ``/plantops/reports/<use_case>/<monitor run>[/<asset>]/drift.html``  the monitor run's drift report
- ``/plantops/reports/<use_case>/heatmaps/v<version>/<run>/<cell>.png``  a rejected cell's heat map
- ``/plantops/decisions/<use_case>``          the latest decision records (JSON)

It also registers a listener that notes on each monitor run the day it judges and the branch taken
(:mod:`plantops.orchestration.runnotes`), so the UI's run list shows the days.

The view is an *external view* with a ``url_route``: the UI lists "Plant ML" in its navigation and
shows the page in a frame inside its own shell. It is server-rendered HTML with a little inline CSS
and inline SVG charts drawn here in Python, not a React app, on purpose: no npm build step in a
repository of DAGs (nothing to rebuild when a field is added, nothing to pin beside Airflow's own
bundle), the same login as the rest of the api-server (a FastAPI dependency, no separate token
handling in a browser bundle), and the page arrives complete in one response (no API round trips
after load), which keeps it within a second on the demo state. Data access lives in
:mod:`plantops.stages.overview` (plain dicts, tested without a browser); this module only renders,
and escapes every value it renders. Where the page shows a modality's own evidence (an inspection
line's day, what the model flagged on a judged day, the latest scored day's chart) the modality's
:class:`plantops.modalities.page.Page` draws it: this module never asks which modality it has.
"""

from __future__ import annotations

from urllib.parse import quote

from airflow.plugins_manager import AirflowPlugin
from fastapi import Depends, FastAPI, HTTPException
from fastapi.responses import FileResponse, HTMLResponse

from plantops.modalities.page import Page, e, link, num, pct
from plantops.settings import get_settings

try:  # the auth dependency lives in airflow-core's API server
    from airflow.api_fastapi.core_api.security import get_user
except ImportError:  # pragma: no cover - an api-server always has it
    get_user = None

app = FastAPI(title="plantops", dependencies=[Depends(get_user)] if get_user else [])


class Readable:
    """The use cases the signed-in user may read: those whose DAGs the auth manager lets them read
    (a site's people: their site's; the MLOps role and Admin: all). ``everything`` also covers
    use cases that have no DAG (a broken YAML): only a user who may read every DAG sees those."""

    def __init__(self, use_cases: set[str] | None) -> None:
        self.use_cases = use_cases

    @property
    def everything(self) -> bool:
        return self.use_cases is None

    def __call__(self, use_case: str) -> bool:
        return self.use_cases is None or use_case in self.use_cases


def readable(user: Any = Depends(get_user) if get_user else None) -> Readable:
    """The signed-in user's :class:`Readable`, from the auth manager of the api-server."""
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.models.resource_details import DagDetails

    manager = get_auth_manager()
    # A DAG id no use case has: only a user authorized on every DAG may read it.
    if manager.is_authorized_dag(method="GET", user=user, details=DagDetails(id="plantops.any-dag")):
        return Readable(None)
    return Readable({dag_id.rsplit("__", 1)[0] for dag_id in manager.get_authorized_dag_ids(user=user)})


def _require(allowed: Readable, use_case: str) -> None:
    if not allowed(use_case):
        raise HTTPException(status_code=403, detail=f"not allowed to read use case {use_case!r} (another site's)")


@app.get("/reports/{use_case}/{path:path}")
def drift_report(use_case: str, path: str, allowed: Readable = Depends(readable)) -> FileResponse:
    """A drift report under the reports folder: ``<run>/drift.html``, or ``<run>/<asset>/drift.html`` in a fleet;
    or an inspection explanation image: ``heatmaps/v<version>/<run>/<cell>.png``, ``confusion/v<version>.png``."""
    _require(allowed, use_case)
    root = get_settings().reports_root.resolve()
    target = (root / use_case / path).resolve()
    image = target.suffix == ".png" and path.split("/", 1)[0] in ("heatmaps", "confusion")
    if root not in target.parents or (target.name != "drift.html" and not image) or not target.is_file():
        raise HTTPException(status_code=404, detail=f"no drift report for {use_case}/{path}")
    return FileResponse(target, media_type="image/png" if image else "text/html")


@app.get("/decisions/{use_case}")
def latest_decisions(use_case: str, kind: str | None = None, limit: int = 20,
                     allowed: Readable = Depends(readable)) -> list[dict]:
    from plantops.stages import decisions

    _require(allowed, use_case)
    return decisions.latest(use_case, kind=kind, limit=min(max(limit, 1), 200))


@app.get("/view/data")
def index_data(allowed: Readable = Depends(readable)) -> dict:
    from plantops.stages import overview

    return overview.index(allowed, broken=allowed.everything)


@app.get("/view/{use_case}/data")
def use_case_data(use_case: str, asset: str | None = None, days: int = 14,
                  allowed: Readable = Depends(readable)) -> dict:
    _require(allowed, use_case)
    return _view(use_case, asset, days)


@app.get("/view/", response_class=HTMLResponse)
@app.get("/view", response_class=HTMLResponse, include_in_schema=False)
def index_page(allowed: Readable = Depends(readable)) -> HTMLResponse:
    from plantops.stages import overview

    return HTMLResponse(render_index(overview.index(allowed, broken=allowed.everything)))


@app.get("/view/{use_case}", response_class=HTMLResponse)
def use_case_page(use_case: str, asset: str | None = None, days: int = 14,
                  allowed: Readable = Depends(readable)) -> HTMLResponse:
    _require(allowed, use_case)
    return HTMLResponse(render_use_case(_view(use_case, asset, days)))


def _view(use_case: str, asset: str | None, days: int) -> dict:
    from plantops.config import ConfigError
    from plantops.stages import overview

    try:
        return overview.use_case_view(use_case, asset, min(max(days, 1), 90))
    except ConfigError as exc:
        raise HTTPException(status_code=404, detail=str(exc)) from exc


# -- rendering -----------------------------------------------------------------------------------

CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:16px;color:#1a202c;background:#fff}
h1{font-size:20px;margin:0 0 4px}h2{font-size:16px;margin:20px 0 6px;border-bottom:1px solid #e2e8f0}
table{border-collapse:collapse;margin:4px 0}td,th{border:1px solid #e2e8f0;padding:3px 6px;text-align:left;vertical-align:top}
th{background:#f7fafc}.muted{color:#718096}.num{text-align:right;font-variant-numeric:tabular-nums}
.b{display:inline-block;padding:0 6px;border-radius:8px;font-weight:600;font-size:12px}
.b-ok{background:#c6f6d5}.b-upset{background:#fed7d7}.b-retrain{background:#feebc8}.b-approval{background:#e9d8fd}
.b-warn{background:#fefcbf}.small{font-size:12px}a{color:#2b6cb0}svg{background:#fafafa;border:1px solid #e2e8f0}
ul{margin:0;padding-left:16px}
"""


def badge(branch: str | None) -> str:
    kind = {"ok": "ok", "upset": "upset", "retrain": "retrain", "approval": "approval", "promoted": "ok",
            "refused": "upset", "timed_out": "warn"}.get(branch or "", "warn")
    return f'<span class="b b-{kind}">{e(branch)}</span>'


def page(title: str, body: str) -> str:
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{e(title)}</title>"
            f"<style>{CSS}</style></head><body>{body}</body></html>")


def render_index(data: dict) -> str:
    rows = []
    for uc in data["use_cases"]:
        last = uc["last_decision"]
        h = uc["health"]
        health = ("n/a: " + e(h["error"])) if not h["available"] else (
            (f"paused: {e(', '.join(h['paused']))}; " if h["paused"] else "")
            + (f"{h['queued']} queued; " if h["queued"] else "")
            + (f"stuck: {e(', '.join(h['stuck']))}" if h["stuck"] else "") or "ok")
        rows.append(
            f"<tr><td>{link(uc['path'], uc['use_case'], here=True)}</td><td>{e(uc['asset'])}</td>"
            f"<td>{e(uc['plant'])}</td><td>{e(uc['champion_version'] and 'v' + uc['champion_version'])}</td>"
            f"<td>{'&mdash;' if last is None else e(last['day']) + ' ' + badge(last['branch'])}</td>"
            f"<td class='small'>{'' if last is None else e(last['reason'])}</td>"
            f"<td class='small'>{link(last['report_path'], 'drift report', top=False) if last and last['report_path'] else ''}</td>"
            f"<td>{uc['pending_approvals'] or ''}</td><td class='small'>{health}</td></tr>")
    broken = "".join(f"<li><b>{e(stem)}</b>: {e(err)}</li>" for stem, err in data["broken"].items())
    body = ("<h1>Plant ML</h1><p class='muted'>Every use case and asset: its champion model, the monitor's last "
            "decision, approvals waiting, and the health of its DAGs.</p>"
            "<table><tr><th>use case</th><th>asset</th><th>plant</th><th>champion</th><th>last decision</th>"
            "<th>why</th><th>last report</th><th>approvals waiting</th><th>pipeline</th></tr>" + "".join(rows) + "</table>"
            + (f"<h2>Broken use cases</h2><ul>{broken}</ul>" if broken else ""))
    return page("Plant ML", body)


def render_use_case(v: dict) -> str:
    from plantops.modalities import MODALITIES

    modality = MODALITIES[v["modality"]]
    pieces = modality.page()  # the modality draws its own evidence; the rest is every use case's
    parts = [f"<p class='small'>{link('/plantops/view/', '← all use cases', here=True)}</p>",
             f"<h1>{e(v['use_case'])}{' / ' + e(v['asset']) if v['is_fleet'] else ''}</h1>"
             f"<p class='muted'>{e(v['plant'])}. {e(v['description'])}</p>"]
    if v["is_fleet"]:
        parts.append("<p>Assets: " + " · ".join(
            f"<b>{e(a)}</b>" if a == v["asset"] else link(f"/plantops/view/{quote(v['use_case'])}?asset={quote(a)}", a, here=True)
            for a in v["assets"]) + "</p>")
    parts += [_champion(v["champion"]), pieces.section(v), _pending(v), _timeline(v["timeline"], pieces),
              _charts(v, pieces, modality.words.output), _landing(v), _health(v["health"])]
    return page(f"Plant ML: {v['use_case']}", "".join(parts))


# Held-out metrics in the champion's table: a detector's or regression's, then a classifier's.
METRICS = ("far", "detection_rate", "detection_delay", "rmse", "mae",
           "accuracy", "balanced_accuracy", "defect_recall", "false_reject_rate")


def _champion(c: dict | None) -> str:
    if c is None:
        return "<h2>Champion</h2><p>No champion yet: no training has been recorded in the decision store.</p>"
    run = link(c["mlflow_link"], c["mlflow_run_id"], top=False) if c["mlflow_link"] else e(c["mlflow_run_id"])
    evaluations = list(c["metrics"])
    names = [m for m in METRICS if any(m in c["metrics"][ev] for ev in evaluations)]
    table = ("<table><tr><th>held-out</th>" + "".join(f"<th>{e(n)}</th>" for n in names) + "</tr>" + "".join(
        f"<tr><td>{'<b>champion</b>' if ev == 'model' else e(ev)}</td>"
        + "".join(f"<td class='num'>{num(c['metrics'][ev].get(n))}</td>" for n in names) + "</tr>"
        for ev in evaluations) + "</table>") if evaluations else "<p>No held-out metrics recorded.</p>"
    promoted = (f"promoted {e(c['promoted_at'][:16])}Z by train run {link(c['train_run_path'], c['train_run_id'])}"
                f" (trigger: {e(c['trigger'])}{'; approved by ' + e(c['approved_by']) if c['approved_by'] else ''}"
                f"{'; reference from ' + e(c['reference_start']) if c['reference_start'] else ''})<br>why: {e(c['reason'])}"
                if c["promoted_at"] else "its promotion is older than the decision store")
    last = c["last_training"]
    return (f"<h2>Champion: {e(c['registered_model'])} v{e(c['version'])} <span class='muted small'>"
            f"({e(c['model_kind'])})</span></h2><p>{promoted}<br>MLflow run: {run}<br>"
            f"<span class='small muted'>last training {e(last['at'][:16])}Z: v{e(last['version'])} "
            f"{e(last['branch'])}: {e(last['reason'])}</span></p>{table}")


def _pending(v: dict) -> str:
    items = v["pending_approvals"]
    if not items:
        return "<h2>Approvals waiting</h2><p>None.</p>"
    rows = "".join(f"<tr><td>{e(p['day'])}</td><td>{e(p['rule'])}</td><td class='small'>{e(p['reason'])}</td>"
                   f"<td>{link(p['required_actions_path'], 'answer')}</td></tr>" for p in items)
    return (f"<h2>Approvals waiting ({len(items)})</h2><p>{link(v['required_actions_path'], 'Required Actions')} "
            "(assigned process engineers answer there)</p><table><tr><th>day</th><th>rule</th><th>question</th>"
            f"<th></th></tr>{rows}</table>")


def _timeline(days: list[dict], pieces: Page) -> str:
    """The monitor's days; the modality's page names what the model flagged on each (alarm tags,
    rejected cells with their heat maps)."""
    if not days:
        return "<h2>Monitor decisions</h2><p>No monitor decision yet.</p>"
    rows = []
    for d in days:
        alarms = "n/a (nothing scored)" if d["alarms"] is None else f"{d['alarms']} of {d['n_predictions']} ({pct(d['alarm_rate'])})"
        flagged = pieces.evidence(d)
        drifted = ", ".join(f"{e(t['tag'])} {num(t['score'], '.2f')} ({num(t['shift_sd'], '+.1f')} sd)"
                            for t in d["drifted_tags"])
        events = "".join(f"<li>{e((x['ts'] or '')[:16])} {e(x['kind'])} by {e(x['author'])}: {e(x['description'])}</li>"
                         for x in d["plant_events"])
        feedback = "".join(f"<li>{e(f['kind'])} by {e(f['author'])}: {e(f['comment'])}</li>" for f in d["feedback"])
        a = d["approval"]
        approval = "" if a is None else (
            f"<br>approval: {link(a['required_actions_path'], 'waiting for an answer')}" if a["pending"] else
            f"<br>approval: {badge(a['branch'])} {e(a['chosen'])} by {e(a['by'])}: {e(a['reason'])} "
            f"({link(a['required_actions_path'], 'form')})")
        trains = "".join(f"<br>training {link(t['run_path'], t['run_id'])}: {e(t['branch'])} v{e(t['version'])}"
                         for t in d["trainings"])
        rows.append(
            f"<tr><td><b>{e(d['day'])}</b>{'<br>' + e(d['asset']) if d['asset'] else ''}</td>"
            f"<td>{badge(d['branch'])}<br><span class='small'>{e(d['rule'])}"
            f"{' / ' + e(d['guardrail']) if d['guardrail'] else ''}</span></td>"
            f"<td class='small'>{e(d['reason'])}{approval}{trains}</td>"
            f"<td class='num'>{pct(d['drift_share'])}<br><span class='small'>{e(d['n_drifted'])} of {e(d['n_columns'])}</span></td>"
            f"<td class='small'>{drifted}</td><td class='small'>{alarms}</td><td class='small'>{flagged}</td>"
            f"<td class='small'>{'<ul>' + events + '</ul>' if events else '&mdash;'}</td>"
            f"<td class='small'>{'<ul>' + feedback + '</ul>' if feedback else '&mdash;'}</td>"
            f"<td class='small'>{link(d['report_path'], 'drift report', top=False) if d['report_path'] else 'no report'}"
            f"<br>{link(d['run_path'], 'run')}{' (' + str(d['runs_that_day']) + ' runs)' if d['runs_that_day'] > 1 else ''}</td></tr>")
    return ("<h2>Monitor decisions, day by day</h2><table><tr><th>day judged</th><th>branch / rule</th><th>reason</th>"
            "<th>drift share</th><th>most drifted (score, shift)</th>"
            + "".join(f"<th>{e(h)}</th>" for h in pieces.evidence_headers)
            + "<th>plant events</th><th>feedback</th><th>links</th></tr>" + "".join(rows) + "</table>")


def bars_svg(days: list[dict], width: int = 640, height: int = 160) -> str:
    """Alarm rate and drift share per day (oldest left), two bars per day, 0-100 %."""
    days = list(reversed(days))
    if not days:
        return ""
    left, bottom, top = 36, 20, 10
    inner_w, inner_h = width - left - 10, height - bottom - top
    slot = inner_w / len(days)
    out = [f'<svg role="img" aria-label="alarm rate and drift share per day" width="{width}" height="{height}">']
    for frac in (0, 0.5, 1):
        y = top + inner_h * (1 - frac)
        out.append(f'<line x1="{left}" x2="{width - 10}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e2e8f0"/>'
                   f'<text x="2" y="{y + 4:.1f}" font-size="10">{frac:.0%}</text>')
    for i, d in enumerate(days):
        x = left + i * slot
        for j, (value, colour, name) in enumerate(((d["alarm_rate"], "#e53e3e", "alarm rate"),
                                                   (d["drift_share"], "#3182ce", "drift share"))):
            if value is None:
                continue
            h = inner_h * max(0.0, min(1.0, value))
            out.append(f'<rect x="{x + slot * (0.15 + 0.35 * j):.1f}" y="{top + inner_h - h:.1f}" '
                       f'width="{slot * 0.33:.1f}" height="{h:.1f}" fill="{colour}">'
                       f'<title>{e(d["day"])} {name} {pct(value)}</title></rect>')
        out.append(f'<text x="{x + slot / 2:.1f}" y="{height - 5}" font-size="10" text-anchor="middle">'
                   f'{e(d["day"][5:])}</text>')
    out.append("</svg>")
    return "".join(out)


def _charts(v: dict, pieces: Page, output: str) -> str:
    """The rate of the model's outputs (``output``: the modality's word, alarm or reject) and drift
    per judged day, then the modality's chart of its latest scored day."""
    parts = ["<h2>Charts</h2>"]
    if v["timeline"]:
        parts.append(f"<p class='small'>{e(output.capitalize())} rate (<span style='color:#e53e3e'>red"
                     "</span>) and drift share (<span style='color:#3182ce'>blue</span>) per judged day</p>"
                     + bars_svg(v["timeline"]))
    scored = pieces.chart(v)
    if not scored and not v["timeline"]:
        scored = "<p>No monitor decision yet.</p>"
    parts.append(scored)
    return "".join(parts)


def _landing(v: dict) -> str:
    q = "".join(f"<tr><td>{e(x['file'])}</td><td class='small'>{e(x['reason'])}</td>"
                f"<td class='small'>{e((x['quarantined_at'] or '')[:16])}</td></tr>" for x in v["quarantined"])
    r = "".join(
        f"<tr><td>{e(x['file'])}</td><td>{e(x['status'])}</td><td class='num'>{e(x['rows_rejected'])} of {e(x['rows_in'])}</td>"
        f"<td class='num'>{e(x['values_rejected'])}</td><td class='small'>"
        + "; ".join(f"{e(tag)}: " + ", ".join(f"{e(reason)} ×{e(n)}" for reason, n in reasons.items())
                    for tag, reasons in (x["rejected_values"] or {}).items())
        + f"</td><td class='small'>{e(x['reason'])}</td></tr>" for x in v["rejected"])
    return ("<h2>Quarantine and rejected rows</h2>"
            + (f"<table><tr><th>quarantined file</th><th>reason</th><th>since</th></tr>{q}</table>" if q
               else "<p>No file in quarantine.</p>")
            + (f"<table><tr><th>landed file</th><th>status</th><th>rows rejected</th><th>values rejected</th>"
               f"<th>rejected values by tag</th><th>reason</th></tr>{r}</table>" if r else ""))


def _health(h: dict) -> str:
    if not h["available"]:
        return f"<h2>Pipeline health</h2><p>Airflow's metadata DB could not be read: {e(h['error'])}</p>"
    rows = []
    for d in h["dags"]:
        ok = d["last_success"]
        last = d["last_run"]
        state = ("not parsed yet" if not d["known"] else "<span class='b b-warn'>paused</span>" if d["paused"] else "active")
        rows.append(f"<tr><td>{link(d['path'], d['dag_id'])}</td><td>{state}</td>"
                    f"<td class='small'>{'never' if ok is None else link(ok['path'], (ok['end'] or '')[:16])}</td>"
                    f"<td class='small'>{'&mdash;' if last is None else link(last['path'], last['state'])}</td>"
                    f"<td class='num'>{d['queued'] or ''}</td><td class='num'>{d['running'] or ''}</td>"
                    f"<td class='small'>{e(d['stuck']) if d['stuck'] else ''}</td></tr>")
    return ("<h2>Pipeline health</h2><table><tr><th>DAG</th><th>state</th><th>last success</th><th>last run</th>"
            "<th>queued</th><th>running</th><th>cannot start because</th></tr>" + "".join(rows) + "</table>")


def _listeners() -> list:
    from plantops.orchestration import preload, runnotes

    return [runnotes.listener(), preload.listener()]


class PlantopsPlugin(AirflowPlugin):
    name = "plantops"
    # In the scheduler: monitor runs get a note naming the day they judge (plantops.orchestration.runnotes),
    # and a LocalExecutor's scheduler imports the task libraries once for every task it forks
    # (plantops.orchestration.preload).
    listeners = _listeners()
    fastapi_apps = [{"app": app, "url_prefix": "/plantops", "name": "plantops view, reports and decisions"}]
    # In the UI's navigation; with a url_route the UI shows the page in a frame at /plugin/plant-ml.
    external_views = [{"name": "Plant ML", "href": "/plantops/view/", "destination": "nav",
                       "url_route": "plant-ml", "nav_top_level": True}]
