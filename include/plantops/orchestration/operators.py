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


class SparkSubmit(BaseOperator):
    """spark-submit an application through the Spark provider's ``SparkSubmitHook``.

    The provider's ``SparkSubmitOperator`` module imports the cncf.kubernetes provider (the
    kubernetes client, ~5 s) at import, i.e. on every DAG parse. This operator has the same
    templated fields for what plantops uses and imports the hook only when the task runs; the hook
    builds the command, runs spark-submit, streams its log and raises on a non-zero exit.
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
