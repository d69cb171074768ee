"""Operators plantops adds on top of Airflow's."""

from __future__ import annotations

from typing import Any

from airflow.providers.standard.operators.hitl import HITLBranchOperator


class ApprovalBranchOperator(HITLBranchOperator):
    """A HITL branch whose answer (options, form fields, who, when) is kept in XCom ``response``.

    The stock operator returns only the branch it follows; the decision store needs the person and
    their reason, so the downstream tasks read them from here.
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
