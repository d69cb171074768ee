"""Operators plantops adds on top of Airflow's."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.providers.standard.operators.hitl import HITLOperator
from airflow.sdk import BaseOperator


class ApprovalRequest(HITLOperator):
    """A HITL task whose answer (options, form fields, who, when) is kept in XCom ``response``.

    Mapped per asset (``expand_kwargs`` with each asset's subject and body); the task that follows
    reads every answer by map index, stores who decided what and why, and plans the trainings.
    """

    def execute_complete(self, context: Any, event: dict[str, Any]) -> Any:
        if "error" not in event:
            context["ti"].xcom_push(key="response", value={
                "chosen_options": list(event["chosen_options"]),
                "params_input": dict(event.get("params_input") or {}),
                "responded_by_user": event.get("responded_by_user"),
                "responded_at": str(event.get("responded_at")),
            })
        return super().execute_complete(context=context, event=event)


class SparkJob(BaseOperator):
    """Run a ``spark_jobs/`` application on the engine the Airflow connection ``conn_id`` names.

    Read when the task runs, so the same DAG runs warm or cold by connection only:

    - conn_type ``spark_connect`` (the Spark provider's ``SparkConnectHook``: host ``sc://127.0.0.1``,
      port): the application's ``main(application_args + ["--remote", url])`` runs in the task
      process as a thin client of the warm server, paying no JVM start. ``conf`` does not apply
      (the server's own conf does); ``env_vars`` are set for the call.
    - conn_type ``spark`` (host ``local[*]``, ``spark://host:port``, ...): spark-submit through the
      provider's ``SparkSubmitHook``, which builds the command, streams its log and raises on a
      non-zero exit.

    The provider's ``SparkSubmitOperator`` module imports the cncf.kubernetes provider (the
    kubernetes client, ~5 s) at import, i.e. on every DAG parse; this operator imports a hook
    (and, on Connect, pyspark) only when the task runs.
    """

    template_fields: Sequence[str] = ("application", "conf", "name", "application_args", "env_vars")
    template_fields_renderers = {"conf": "py", "env_vars": "py", "application_args": "py"}
    ui_color = "#ffd2a8"

    def __init__(
        self,
        *,
        application: str,
        conn_id: str = "spark_default",
        conf: dict[str, Any] | None = None,
        name: str = "airflow-spark",
        application_args: list[Any] | None = None,
        env_vars: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.application = application
        self.conn_id = conn_id
        self.conf = conf
        self.name = name
        self.application_args = application_args
        self.env_vars = env_vars
        self._hook: Any = None

    def execute(self, context: Any) -> None:
        from airflow.sdk import BaseHook

        conn_type = BaseHook.get_connection(self.conn_id).conn_type
        if conn_type == "spark_connect":
            self._run_connect()
        elif conn_type == "spark":
            self._run_submit()
        else:
            raise ValueError(f"connection {self.conn_id!r} has conn_type {conn_type!r}; expected 'spark' "
                             "(spark-submit) or 'spark_connect' (a Spark Connect server)")

    def _run_connect(self) -> None:
        import importlib.util
        import os

        from airflow.providers.apache.spark.hooks.spark_connect import SparkConnectHook

        from plantops.net import url_answers

        remote = SparkConnectHook(self.conn_id).get_connection_url()
        # Checked here: the Connect client itself would retry a refused port for minutes.
        if not url_answers(remote, 15002, timeout=5):
            raise RuntimeError(
                f"no Spark Connect server answers at {remote} (connection {self.conn_id!r}): start it with "
                "`make up` or `python -m plantops.environments.sparkconnect start`, or point the connection at "
                "spark-submit (conn_type 'spark')")
        spec = importlib.util.spec_from_file_location(f"plantops_job_{self.task_id}", self.application)
        if spec is None or spec.loader is None:
            raise FileNotFoundError(f"cannot load the Spark application {self.application}")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        if not callable(getattr(module, "main", None)):
            raise TypeError(f"{self.application} has no main(argv) to run over Spark Connect")
        args = [str(a) for a in self.application_args or []] + ["--remote", remote]
        self.log.info("running %s over Spark Connect at %s: %s", self.application, remote, args)
        env = {k: str(v) for k, v in (self.env_vars or {}).items()}
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        try:
            code = module.main(args)
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
        if code:
            raise RuntimeError(f"{self.application} over Spark Connect at {remote} exited with code {code}")

    def _run_submit(self) -> None:
        from airflow.providers.apache.spark.hooks.spark_submit import SparkSubmitHook

        self._hook = hook = SparkSubmitHook(
            conf=dict(self.conf or {}),
            conn_id=self.conn_id,
            name=self.name,
            application_args=list(self.application_args or []),
            env_vars=dict(self.env_vars or {}),
        )
        driver_id = hook.submit(self.application)
        # Standalone cluster mode: spark-submit returns once the driver is accepted; follow it to
        # the end as the provider's operator does, or a failed job would pass.
        if hook._should_track_driver_status and driver_id:
            try:
                hook._start_driver_status_tracking()
                if hook._driver_status != "FINISHED":
                    raise RuntimeError(f"Spark driver {driver_id} ended with status {hook._driver_status}")
            finally:
                hook._run_post_submit_commands()

    def on_kill(self) -> None:
        if self._hook is not None:
            self._hook.on_kill()

