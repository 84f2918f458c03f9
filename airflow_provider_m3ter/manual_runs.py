"""Runs without a data interval: a clear error instead of a crash or a silently empty load.

Airflow 3 triggers a manual run without a logical date by default (``airflow dags trigger``, the
UI's Trigger button, ``POST /dags/{id}/dagRuns`` with ``"logical_date": null``). Such a run has no
``logical_date``, ``ds``, ``ts`` or ``data_interval_start``/``data_interval_end``: Jinja renders
``{{ data_interval_start }}`` as an empty string (a query for that "interval" selects nothing and
the task succeeds having loaded nothing) and ``{{ data_interval_start.strftime(...) }}`` fails with
an error that does not say why.

:class:`IntervalTemplatesGuard` checks an operator's templated fields before rendering: when one
uses an interval variable the run does not have, the task fails at once (no retries) and says
what to do. Plain functions; the only Airflow import is the failure exception (through
:mod:`airflow_provider_m3ter.compat`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["INTERVAL_KEYS", "IntervalTemplatesGuard", "interval_variables_used", "missing_interval_error"]

# context keys that exist only in runs with a logical date (Airflow 3 task runner)
INTERVAL_KEYS = (
    "data_interval_start",
    "data_interval_end",
    "logical_date",
    "ds",
    "ds_nodash",
    "ts",
    "ts_nodash",
    "ts_nodash_with_tz",
)
_JINJA = re.compile(r"\{\{.*?\}\}|\{%.*?%\}", re.DOTALL)
_NAME = re.compile(r"\b(" + "|".join(INTERVAL_KEYS) + r")\b")


def interval_variables_used(values: Iterable[Any]) -> set[str]:
    """The interval variables named inside Jinja expressions of ``values`` (nested lists/dicts too).

    :param values: raw (unrendered) template field values.
    """
    found: set[str] = set()
    stack = list(values)
    while stack:
        value = stack.pop()
        if isinstance(value, str):
            for block in _JINJA.findall(value):
                found.update(_NAME.findall(block))
        elif isinstance(value, Mapping):
            stack.extend(value.keys())
            stack.extend(value.values())
        elif isinstance(value, (list, tuple, set)):
            stack.extend(value)
    return found


def missing_interval_error(task_id: str, used: Iterable[str]) -> str:
    """The message for a task whose templates need a data interval its run does not have."""
    names = ", ".join(sorted(used))
    return (
        f"{task_id}: this run has no data interval (a manual run without a logical date), but the "
        f"task's templates use {names}. Trigger it with a logical date (airflow dags trigger "
        "--logical-date 2024-05-01T00:00:00+00:00 <dag_id>, or 'logical_date' in the REST API's "
        "POST /dags/{dag_id}/dagRuns, or 'Logical date' in the UI's trigger form), or template "
        "from {{ dag_run.run_after }} instead"
    )


class IntervalTemplatesGuard:
    """Mixin for operators: refuse to render interval templates in a run without an interval.

    Put it before ``BaseOperator`` in the bases. Rendering is Airflow's; this only looks first.
    """

    task_id: str
    template_fields: Any

    def render_template_fields(self, context: Any, jinja_env: Any = None) -> None:
        """Fail clearly when a template uses an interval variable the run lacks; then render."""
        missing = {key for key in INTERVAL_KEYS if context.get(key) is None}
        if missing:
            used = interval_variables_used(getattr(self, name, None) for name in self.template_fields)
            if used & missing:
                from airflow_provider_m3ter.compat import AirflowFailException

                raise AirflowFailException(missing_interval_error(self.task_id, used & missing))
        super().render_template_fields(context, jinja_env)  # type: ignore[misc]
