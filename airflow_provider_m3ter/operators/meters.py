"""``M3terSyncMetersOperator``: meters as code, with a plan, a dry run and a safe apply."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from airflow_provider_m3ter.client.meter_apply import apply_meter_plan
from airflow_provider_m3ter.client.meter_definitions import (
    DefinitionsSource,
    MeterDefinitionError,
    load_meter_definitions,
)
from airflow_provider_m3ter.client.meter_sync import BLOCKED, plan_meter_sync
from airflow_provider_m3ter.compat import AirflowFailException
from airflow_provider_m3ter.hooks.m3ter import M3terHook
from airflow_provider_m3ter.links import M3terConsoleLink, link_task_to_console
from airflow_provider_m3ter.manual_runs import IntervalTemplatesGuard

if TYPE_CHECKING:
    from airflow.sdk import Context

__all__ = ["M3terSyncMetersOperator"]


class M3terSyncMetersOperator(IntervalTemplatesGuard, BaseOperator):
    """Make m3ter's meters match definitions kept as code (YAML/JSON files or a Python list).

    The task validates every definition locally (all problems reported at once, each naming its
    file, meter code and field), reads the current meters with as few list calls as m3ter allows,
    logs the plan as a table (create / update with a field-level diff / unchanged / delete), and
    then applies it: creates, then updates (the whole entity with its current ``version``, so
    nothing the definitions leave out is lost; one re-read and re-plan on a version conflict),
    then deletes. Running it again with the same definitions writes nothing.

    Returns (XCom) a compact summary: codes per action, the diff of each update, and with
    ``dry_run=False`` what was applied.

    :param definitions: a YAML/JSON file, a glob (``meters/*.yaml``) or a directory, or a list of
        those and/or meter mappings. Relative paths are resolved against ``base_dir``. (templated)
    :param m3ter_conn_id: the m3ter connection. (templated)
    :param dry_run: plan and log only; make no write call at all.
    :param delete_missing: also delete meters that are not in the definitions. Every meter of the
        organization is then read; a meter that an aggregation uses is never deleted, and the task
        fails before any write, naming the meter and its aggregations.
    :param base_dir: folder for relative paths; default: the folder of the DAG file.
    """

    template_fields: Sequence[str] = ("definitions", "m3ter_conn_id")
    operator_extra_links = (M3terConsoleLink(),)
    ui_color = "#e8f0fe"

    def __init__(
        self,
        *,
        definitions: DefinitionsSource,
        m3ter_conn_id: str = M3terHook.default_conn_name,
        dry_run: bool = False,
        delete_missing: bool = False,
        base_dir: str | os.PathLike[str] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.definitions = definitions
        self.m3ter_conn_id = m3ter_conn_id
        # Stored under another name: BaseOperator.dry_run() is a method Airflow itself calls.
        self.plan_only = dry_run
        self.delete_missing = delete_missing
        self.base_dir = base_dir

    def _definitions_folder(self) -> Path:
        """Where relative definition paths start: ``base_dir``, else the DAG file's folder."""
        if self.base_dir is not None:
            return Path(self.base_dir)
        dag = self.get_dag()
        fileloc = getattr(dag, "fileloc", None)
        return Path(fileloc).parent if fileloc else Path.cwd()

    def execute(self, context: Context) -> dict[str, Any]:
        """Validate, plan, log the plan, and (unless ``dry_run``) apply it."""
        try:
            definitions = load_meter_definitions(self.definitions, base_dir=self._definitions_folder())
        except MeterDefinitionError as error:
            # Bad input: another try with the same files cannot succeed.
            raise AirflowFailException(str(error)) from error
        self.log.info("Loaded %d meter definition(s)", len(definitions))
        hook = M3terHook(m3ter_conn_id=self.m3ter_conn_id)
        with hook.translate_errors():
            client = hook.get_client()
            # the "m3ter Console" link: the organization's meters
            link_task_to_console(context, client.settings, "meter", log=self.log)
            try:
                plan = plan_meter_sync(client, definitions, delete_missing=self.delete_missing)
            except MeterDefinitionError as error:  # an unknown product code
                raise AirflowFailException(str(error)) from error
            self.log.info("%s", plan.format_table())
            outcome: dict[str, Any] = {"dry_run": self.plan_only, **plan.to_dict()}
            if self.plan_only:
                self.log.info("Dry run: nothing written; applying this plan takes %d write(s)", plan.writes)
                if plan.of(BLOCKED):
                    self.log.warning("Applying this plan would fail: aggregations use meters it deletes")
                return outcome
            result = apply_meter_plan(client, plan)
        self.log.info(
            "Meter sync applied: %d created, %d updated, %d deleted, %d unchanged",
            len(result.created),
            len(result.updated),
            len(result.deleted),
            len(plan.of("unchanged")) + len(result.converged),
        )
        outcome["applied"] = result.to_dict()
        return outcome
