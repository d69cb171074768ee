"""Telling people: e-mail to the operators, process engineers and MLOps team of a use case.

Each use case's ``notifications`` block (:class:`plantops.config.Notifications`) routes every
plant event (``upset``, ``quarantine``, ``approval``, ``timeout``, ``promotion``, ``failure``)
to audiences and gives each audience its addresses. Mail goes out through the SMTP provider's
hook with the connection named there (``plantops_smtp`` by default, from ``AIRFLOW_CONN_PLANTOPS_SMTP``
or a secrets backend).

- Task code calls :func:`send`. A mail server that is down or refuses the mail is logged and
  reported in the result, never raised: a broken mail server must not fail the pipeline.
- DAGs and tasks take :class:`PlantNotifier` as a callback (``on_failure_callback=[...]``), or
  :func:`failure_callback` in ``default_args`` for the ``failure`` audience.
- :func:`ui_link` and :func:`required_actions_link` point into the Airflow 3 UI at
  ``AIRFLOW__API__BASE_URL``, using the React UI's routes.
"""

from __future__ import annotations

import html
import logging
import os
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from airflow.sdk import BaseNotifier

if TYPE_CHECKING:
    from plantops.config import UseCase

log = logging.getLogger(__name__)

# An exception's text can be a whole traceback; a mail names it, the log has the rest.
MAX_ERROR_CHARS = 2000


def _base_url() -> str:
    return os.environ.get("AIRFLOW__API__BASE_URL", "http://localhost:8080").rstrip("/")


def _segment(value: object) -> str:
    # Run ids carry ':' and '+' (manual__2026-01-01T00:00:00+00:00): quote everything.
    return quote(str(value), safe="")


def ui_link(dag_id: str, run_id: str | None = None, task_id: str | None = None,
            map_index: int | None = None) -> str:
    """A page of the Airflow UI: the DAG, a run, a task across runs, or a task instance (its logs).

    Routes of the Airflow 3 React UI: ``/dags/<dag>``, ``/dags/<dag>/runs/<run>``,
    ``/dags/<dag>/tasks/<task>``, ``/dags/<dag>/runs/<run>/tasks/<task>`` and, for one mapped
    task instance, ``.../tasks/<task>/mapped/<map_index>``."""
    path = f"/dags/{_segment(dag_id)}"
    if run_id is not None:
        path += f"/runs/{_segment(run_id)}"
    if task_id is not None:
        path += f"/tasks/{_segment(task_id)}"
    if map_index is not None and map_index >= 0:
        if run_id is None or task_id is None:
            raise ValueError("map_index: a mapped task instance needs run_id and task_id too")
        path += f"/mapped/{int(map_index)}"
    return _base_url() + path


def required_actions_link(pending: bool = True) -> str:
    """The Required Actions page (human-in-the-loop tasks), by default only those awaiting an answer,
    as the UI's own "view all" button links to it."""
    return _base_url() + "/required_actions" + ("?response_received=false" if pending else "")


def _render(body: str, link: str | None) -> str:
    paragraphs = [p for p in body.strip().split("\n\n") if p.strip()]
    parts = ["<p>" + html.escape(p).replace("\n", "<br>\n") + "</p>" for p in paragraphs]
    if link:
        href = html.escape(link, quote=True)
        parts.append(f'<p>Open in Airflow: <a href="{href}">{html.escape(link)}</a></p>')
    return "<html><body>\n" + "\n".join(parts) + "\n</body></html>\n"


def send(use_case: UseCase, event: str, subject: str, body: str,
         link: str | None = None) -> dict[str, Any]:
    """Mail ``event`` to its audiences of the use case.

    Returns ``{"event", "to", "subject", "sent", "reason"}``. An event routed to no addresses sends
    nothing; a failed send (server down, mail refused, connection missing) is logged as a warning.
    Neither raises. An unknown event raises ValueError: a bug in the caller, not in the mail server."""
    from plantops.config import EVENTS

    if event not in EVENTS:
        raise ValueError(f"unknown event {event!r}; expected one of {list(EVENTS)}")
    config = use_case.notifications
    to = list(config.recipients_of(event))
    full_subject = f"[plantops {use_case.id}] {subject}"
    result: dict[str, Any] = {"event": event, "to": to, "subject": full_subject, "sent": False, "reason": ""}
    if not to:
        audiences = list(config.routes.get(event, ()))
        result["reason"] = (f"no recipients: event {event!r} goes to {audiences or 'no audience'}, "
                            f"and none of them has an address in use case {use_case.id}'s notifications")
        log.info("not mailing %s of %s: %s", event, use_case.id, result["reason"])
        return result

    from airflow.providers.smtp.hooks.smtp import SmtpHook

    try:
        with SmtpHook(smtp_conn_id=config.smtp_conn_id) as hook:
            # The hook sends one text/html part; it has no plain-text alternative.
            hook.send_email_smtp(
                to=to,
                subject=full_subject,
                html_content=_render(body, link),
                from_email=config.sender,
                custom_headers={"X-Plantops-Use-Case": use_case.id, "X-Plantops-Event": event},
            )
    except Exception as exc:  # noqa: BLE001 - any mail failure is reported, never raised
        result["reason"] = f"send failed via connection {config.smtp_conn_id!r}: {type(exc).__name__}: {exc}"
        log.warning("could not mail %s of %s to %s: %s", event, use_case.id, to, result["reason"])
        return result
    result.update(sent=True, reason=f"sent to {len(to)} address(es)")
    log.info("mailed %s of %s to %s: %s", event, use_case.id, to, full_subject)
    return result


def _context_link(context: Any) -> str | None:
    """The callback's task instance log (its failing try), else its DAG run; None if neither is known."""
    try:
        ti = context.get("task_instance") or context.get("ti")
        run_id = context.get("run_id") or getattr(ti, "run_id", None)
        if ti is not None and getattr(ti, "dag_id", None) and getattr(ti, "task_id", None) and run_id:
            map_index = getattr(ti, "map_index", None)
            link = ui_link(ti.dag_id, run_id, ti.task_id, map_index if isinstance(map_index, int) else None)
            try_number = getattr(ti, "try_number", None)
            # The task instance page opens on its logs; try_number picks the try, as Airflow's log_url does.
            if isinstance(try_number, int) and try_number > 0:
                return f"{link}?try_number={try_number}"
            return link
        dag_id = getattr(context.get("dag"), "dag_id", None) or context.get("dag_id")
        return ui_link(dag_id, run_id) if dag_id else None
    except Exception:  # noqa: BLE001 - a mail without a link beats no mail
        log.debug("no UI link from the callback context", exc_info=True)
        return None


class PlantNotifier(BaseNotifier):
    """Mail a plant event of a use case from a DAG or task callback.

    ``subject`` and ``body`` are Jinja templates rendered with the callback's context
    (``{{ run_id }}``, ``{{ ti.task_id }}``). Without a ``link``, the mail links the callback's task
    instance (its log), or its DAG run for a DAG-level callback.

        on_failure_callback=[PlantNotifier("tep_reactor", "failure", "{{ dag.dag_id }} failed", "...")]
    """

    template_fields = ("subject", "body")

    def __init__(self, use_case_id: str, event: str, subject: str, body: str,
                 link: str | None = None) -> None:
        from plantops.config import EVENTS

        super().__init__()
        # A typo in a DAG file fails the import of that DAG, not the mail hours later.
        if event not in EVENTS:
            raise ValueError(f"unknown event {event!r}; expected one of {list(EVENTS)}")
        self.use_case_id = use_case_id
        self.event = event
        self.subject = subject
        self.body = body
        self.link = link
        self._templates = (subject, body)

    def render_template_fields(self, context: Any, jinja_env: Any = None) -> None:
        # Airflow renders in place; one notifier object serves every map index (and, in one
        # process, every run): render from the templates each time, not from the last mail.
        self.subject, self.body = self._templates
        super().render_template_fields(context, jinja_env)

    def notify(self, context: Any) -> None:
        link = self.link or _context_link(context)
        from plantops.config import get_use_case

        # A notifier is given the use case's id by the DAG (templated, serialised): resolved here, once.
        send(get_use_case(self.use_case_id), self.event, self.subject, self.body, link)


def failure_callback(context: Any) -> None:
    """``default_args["on_failure_callback"]``: mail the ``failure`` audience of the DAG's use case
    (the dag_id's part before ``__``) which task failed, in which run and try, why, and a link to its log.

    Never raises: a callback that raises hides the failure it reports."""
    try:
        ti = context.get("task_instance") or context.get("ti")
        dag = context.get("dag")
        dag_id = getattr(ti, "dag_id", None) or context.get("dag_id") or getattr(dag, "dag_id", None)
        if not dag_id or "__" not in str(dag_id):
            log.warning("failure callback: no use case in dag_id %r (expected <use_case>__<stage>), "
                        "not mailing", dag_id)
            return
        use_case_id = str(dag_id).split("__", 1)[0]
        task_id = getattr(ti, "task_id", None) or "?"
        run_id = context.get("run_id") or getattr(ti, "run_id", None) or "?"
        try_number = getattr(ti, "try_number", None)
        map_index = getattr(ti, "map_index", None)
        exception = context.get("exception")
        if exception is None:
            error = "(none given)"
        elif isinstance(exception, BaseException):
            error = f"{type(exception).__name__}: {exception}"[:MAX_ERROR_CHARS]
        else:
            error = str(exception)[:MAX_ERROR_CHARS]
        lines = [f"Task {task_id} of DAG {dag_id} failed.", "", f"Run: {run_id}", f"Try: {try_number or '?'}"]
        if isinstance(map_index, int) and map_index >= 0:
            lines.append(f"Map index: {map_index}")
        lines += ["", f"Error: {error}"]
        from plantops.config import ConfigError, get_use_case

        try:  # a callback from Airflow names the use case by id: resolved here, once
            use_case = get_use_case(use_case_id)
        except (ConfigError, OSError) as exc:
            log.warning("failure callback: use case %r of %s does not load (%s), not mailing",
                        use_case_id, dag_id, exc)
            return
        subject = f"{dag_id}: task {task_id} failed"
        send(use_case, "failure", subject, "\n".join(lines), _context_link(context))
    except Exception:  # noqa: BLE001 - see the docstring
        log.warning("failure callback could not mail the failure", exc_info=True)
