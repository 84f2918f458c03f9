"""Test DAG: every case of the meter sync in one run, against the emulator.

Run by tests/meters/test_operator_dags.py with ``airflow dags test``, after the example meters were
synced, an aggregation was put on ``api_calls.requests``, a custom field on ``data_transfer`` and
an unused meter ``legacy_events`` was created. Definition paths are relative to this file's folder.

First, tasks that write nothing (a dry run and three hard failures); then, once all of them are
done, the writing tasks one after another: an update, an update that meets a concurrent edit, and
a ``delete_missing`` sync that deletes the unused meter.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any
from unittest import mock

from airflow.sdk import DAG

from airflow_provider_m3ter.client.meter_definitions import MeterDefinition
from airflow_provider_m3ter.client.meter_diff import SERVER_FIELDS
from airflow_provider_m3ter.client.meter_sync import UPDATE, MeterApi, MeterPlan
from airflow_provider_m3ter.operators import meters
from airflow_provider_m3ter.operators.meters import M3terSyncMetersOperator

if TYPE_CHECKING:
    from airflow.sdk import Context

# What the concurrent writer leaves on the meter, so the test can see its edit survived.
CONCURRENT_CUSTOM_FIELDS = {"edited_in": "console"}


class ConcurrentEditSyncOperator(M3terSyncMetersOperator):
    """The sync, with another writer editing each meter it plans to update between plan and apply.

    The edit goes through m3ter's API like a Console edit (whole meter, its current ``version``), so
    the planned version is stale when the sync writes: m3ter answers 409 and the sync must re-read
    and re-plan that meter once.
    """

    def execute(self, context: Context) -> dict[str, Any]:
        """Run the real sync with the edit slipped in right after its plan is made."""
        plan_meter_sync = meters.plan_meter_sync

        def plan_then_edit(
            client: MeterApi, definitions: Sequence[MeterDefinition], **kwargs: Any
        ) -> MeterPlan:
            plan = plan_meter_sync(client, definitions, **kwargs)
            for change in plan.of(UPDATE):
                assert change.current is not None  # updates always hold the stored meter
                body = {k: v for k, v in change.current.items() if k not in SERVER_FIELDS}
                body.update(customFields=CONCURRENT_CUSTOM_FIELDS, version=change.current["version"])
                client.request("PUT", f"meters/{change.current['id']}", json=body)
            return plan

        # The operator module's own name is what execute() calls: swap it for this task only.
        with mock.patch.object(meters, "plan_meter_sync", plan_then_edit):
            return super().execute(context)


with DAG(
    dag_id="m3ter_meter_sync_checks",
    schedule=None,
    start_date=datetime(2026, 1, 1, tzinfo=timezone.utc),
    catchup=False,
    tags=["test"],
    default_args={"retries": 2, "retry_delay": timedelta(seconds=1)},
):
    # Plans an update and a create, writes nothing.
    dry_run = M3terSyncMetersOperator(task_id="dry_run", definitions="definitions/changed.yaml", dry_run=True)
    # m3ter's "request breaks configuration" 400: a final failure naming meter, field, aggregation.
    breaks_configuration = M3terSyncMetersOperator(
        task_id="breaks_configuration", definitions=["definitions/without_requests.yaml"]
    )
    # Local validation: fails before any call, naming file, meter and field.
    invalid_definitions = M3terSyncMetersOperator(
        task_id="invalid_definitions", definitions="definitions/invalid.yaml"
    )
    # delete_missing would delete api_calls, which an aggregation uses: fails before any write
    # (although legacy_events, also missing, could be deleted).
    delete_blocked = M3terSyncMetersOperator(
        task_id="delete_blocked", definitions="definitions/others_only.yaml", delete_missing=True
    )

    # The writing tasks run only after all of the above, whatever their outcome ("all_done").
    update = M3terSyncMetersOperator(
        task_id="update", definitions="definitions/data_transfer_v2.yaml", trigger_rule="all_done"
    )
    # Another writer edits storage between plan and apply: one 409, one re-read, then the update.
    update_after_conflict = ConcurrentEditSyncOperator(
        task_id="update_after_conflict",
        definitions="definitions/storage_renamed.yaml",
        trigger_rule="all_done",
    )
    # Every meter but legacy_events is in the definitions: it is deleted, the rest is unchanged.
    delete_unused = M3terSyncMetersOperator(
        task_id="delete_unused",
        definitions=[
            "definitions/api_calls.yaml",
            "definitions/data_transfer_v2.yaml",
            "definitions/storage_renamed.yaml",
        ],
        delete_missing=True,
        trigger_rule="all_done",
    )
    [dry_run, breaks_configuration, invalid_definitions, delete_blocked] >> update
    update >> update_after_conflict >> delete_unused
