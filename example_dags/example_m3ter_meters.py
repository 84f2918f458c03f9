"""Meters as code: the API platform's meters live in ``meters/*.yaml`` beside this file.

Every day the DAG plans the meters against m3ter and applies the plan, then ingests usage for
them. It always plans instead of skipping when the YAML is unchanged: a plan costs one list call
per 100 meters, a sync with nothing to do writes nothing, and an edit made in the m3ter Console
(drift) is put back on the next run, which a "files unchanged" short-circuit would miss.

To review a change first, run the same operator with ``dry_run=True`` (for example in CI or in a
separate DAG): it logs the plan and writes nothing.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from airflow.sdk import dag, task

from airflow_provider_m3ter.hooks.m3ter import M3terHook
from airflow_provider_m3ter.operators.ingest import M3terIngestMeasurementsOperator
from airflow_provider_m3ter.operators.meters import M3terSyncMetersOperator

PRODUCT = {"code": "api_platform", "name": "API platform"}
# One run's usage; ``run_usage`` stamps it with the run's time and the ingest operator derives
# stable uids. (The operator never renders templates inside measurements: data is sent as given.)
USAGE = [
    {
        "meter": "api_calls",
        "account": "acme",
        "who": {"api_key": "key-acme-1"},
        "what": {"endpoint": "/v1/search"},
        "where": {"region": "eu-west-1"},
        "measure": {"requests": 1200, "errors": 7},
    },
    {
        "meter": "api_calls",
        "account": "globex",
        "who": {"api_key": "key-globex-1"},
        "what": {"endpoint": "/v1/export"},
        "where": {"region": "us-east-1"},
        "measure": {"requests": 310, "errors": 0},
    },
    {
        "meter": "data_transfer",
        "account": "acme",
        "where": {"region": "eu-west-1"},
        "what": {"direction": "egress"},
        "measure": {"bytes": 52_000_000_000},
    },
    {
        "meter": "storage",
        "account": "globex",
        "what": {"storage_class": "standard"},
        "metadata": {"bucket": "globex-backups"},
        "measure": {"gb_hours": 2400},
    },
]


@dag(
    schedule="@daily",
    start_date=datetime(2026, 1, 1, tzinfo=timezone.utc),
    catchup=False,
    max_active_runs=1,
    tags=["m3ter", "example"],
    doc_md=__doc__,
)
def example_m3ter_meters() -> None:
    """Ensure the product, sync its meters from YAML, then ingest usage for them."""

    @task
    def ensure_product() -> str:
        """The meters belong to a product; create it if the organization does not have it yet.

        Products usually exist already (made once in the m3ter Console); this task keeps the
        example self-contained.
        """
        hook = M3terHook()
        for product in hook.paginate("products", params={"codes": [PRODUCT["code"]]}, page_size=200):
            if product.get("code") == PRODUCT["code"]:
                return str(product["id"])
        return str(hook.request("POST", "products", json=PRODUCT)["id"])

    sync_meters = M3terSyncMetersOperator(
        task_id="sync_meters",
        definitions="meters/*.yaml",  # relative to this file's folder
    )

    @task
    def run_usage(dag_run: Any = None) -> list[dict[str, Any]]:
        """This run's usage, stamped with the run's time (whole seconds, UTC)."""
        ts = dag_run.run_after.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        return [{**measurement, "ts": ts} for measurement in USAGE]

    ingest_usage = M3terIngestMeasurementsOperator(
        task_id="ingest_usage",
        measurements=run_usage(),
        unknown_accounts="allow",  # the demo's accounts are created by m3ter on first use
    )

    ensure_product() >> sync_meters >> ingest_usage


example_m3ter_meters()
