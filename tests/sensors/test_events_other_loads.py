"""``M3terIngestEventsSensor(other_loads="ignore")`` needs every checked load's uid namespace."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from airflow.sdk import DAG

from airflow_provider_m3ter.operators.file_upload import M3terFileUploadOperator
from airflow_provider_m3ter.operators.ingest import M3terIngestMeasurementsOperator
from airflow_provider_m3ter.sensors.events import M3terIngestEventsSensor

START = datetime(2024, 1, 1, tzinfo=timezone.utc)


def _context(dag: DAG) -> dict:
    return {"dag": dag, "dag_run": None, "data_interval_start": START}


def _sensor(**kwargs) -> M3terIngestEventsSensor:
    return M3terIngestEventsSensor(task_id="check", settle_seconds=1, timeout=60, **kwargs)


def test_the_namespaces_of_plain_ingest_and_upload_tasks_are_taken() -> None:
    with DAG("d", schedule=None, start_date=START) as dag:
        M3terIngestMeasurementsOperator(task_id="ingest", measurements=[])
        M3terIngestMeasurementsOperator(task_id="ingest_own", measurements=[], uid_namespace="fixed")
        M3terFileUploadOperator(task_id="upload", source_path="/x", file_name="x.json")
        check = _sensor(other_loads="ignore")
    check.prepare(_context(dag))
    assert check.uid_namespaces == ["d.ingest", "fixed", "d.upload"]


@pytest.mark.parametrize("shape", ["templated", "mapped"])
def test_ignore_refuses_a_load_whose_namespace_is_not_known(shape: str) -> None:
    with DAG("d", schedule=None, start_date=START) as dag:
        if shape == "templated":
            M3terIngestMeasurementsOperator(task_id="load", measurements=[], uid_namespace="n.{{ ds }}")
        else:
            M3terIngestMeasurementsOperator.partial(task_id="load").expand(measurements=[[], []])
        check = _sensor(other_loads="ignore")
    with pytest.raises(ValueError, match="load has none known"):
        check.prepare(_context(dag))
    # listing them is the way out; the default other_loads="fail" needs nothing
    listed = _sensor(other_loads="ignore", uid_namespaces=["n.2024-01-01"])
    listed.prepare(_context(dag))
    assert listed.uid_namespaces == ["n.2024-01-01"]
    counted = _sensor()
    counted.prepare(_context(dag))


def test_ignore_refuses_a_dag_without_loads() -> None:
    with DAG("d", schedule=None, start_date=START) as dag:
        check = _sensor(other_loads="ignore")
    with pytest.raises(ValueError, match="needs uid_namespaces or uids"):
        check.prepare(_context(dag))
    with pytest.raises(ValueError, match="'fail' or 'ignore'"):
        _sensor(other_loads="skip")
