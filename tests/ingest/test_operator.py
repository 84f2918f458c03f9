"""The operator's construction-time checks, templating surface and DAG-parse behaviour."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from airflow_provider_m3ter.operators.ingest import M3terIngestMeasurementsOperator
from airflow_provider_m3ter.operators.mapping import SourceError
from airflow_provider_m3ter.operators.sources import FileSource, IterableSource, SqlSource

REPO = Path(__file__).resolve().parents[2]
M = {"meter": "m", "account": "a", "ts": "2024-05-01T00:00:00Z"}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, r"give exactly one source: measurements, source_path or sql \(got none\)"),
        ({"measurements": [M], "sql": "select 1"}, r"\(got measurements, sql\)"),
        ({"sql": "select 1"}, "sql needs sql_conn_id"),
        ({"source_path": "x.csv", "source_format": "xml"}, "source_format must be one of jsonl, json, csv"),
        ({"measurements": [M], "on_invalid": "ignore"}, "on_invalid must be 'fail' or 'skip', got 'ignore'"),
        ({"measurements": [M], "max_in_flight": 0}, "max_in_flight must be an integer from 1 to 16, got 0"),
        ({"measurements": [M], "max_in_flight": 17}, "max_in_flight must be an integer from 1 to 16"),
        ({"measurements": [M], "fetch_size": 0}, "fetch_size must be a positive integer"),
        ({"measurements": [M], "deduplicate": "yes"}, "deduplicate must be True or False, got 'yes'"),
        (
            {"source_path": "x.csv", "mapping": {"cust": "acount"}},
            "mapping for column 'cust': unknown mapping target 'acount'",
        ),
    ],
)
def test_bad_arguments_fail_at_construction_naming_the_task(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message) as caught:
        M3terIngestMeasurementsOperator(task_id="load_usage", **kwargs)
    assert str(caught.value).startswith("M3terIngestMeasurementsOperator('load_usage'): ")


def test_construction_does_no_io(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_network(*args, **kwargs):
        raise AssertionError("network used while building the operator")

    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr(socket.socket, "connect", no_network)
    operator = M3terIngestMeasurementsOperator(
        task_id="t", m3ter_conn_id="does_not_exist", source_path="/no/such/file.jsonl", on_invalid="skip"
    )
    assert operator.m3ter_conn_id == "does_not_exist"
    assert isinstance(operator.build_source(), FileSource)


def test_templated_fields_and_sources() -> None:
    assert set(M3terIngestMeasurementsOperator.template_fields) >= {"source_path", "sql", "sql_parameters"}
    sql = M3terIngestMeasurementsOperator(task_id="s", sql="select 1", sql_conn_id="db", meter="api")
    assert isinstance(sql.build_source(), SqlSource)
    text = M3terIngestMeasurementsOperator(task_id="j", measurements='[{"meter": "m"}]', account="acme")
    source = text.build_source()
    assert isinstance(source, IterableSource)
    assert [item for _, _, item in source.rows()] == [{"meter": "m", "account": "acme"}]
    with pytest.raises(SourceError, match="measurements must be a list of measurement objects, got dict"):
        M3terIngestMeasurementsOperator(task_id="d", measurements={"meter": "m"}).build_source()  # type: ignore[arg-type]


def test_example_dag_parses_without_errors(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from airflow_provider_m3ter.compat import RETRY_POLICY_SUPPORTED
    from tests.airflow_lines import dag_bag

    # the DAG file defaults this variable when it is missing; keep the test process clean
    monkeypatch.setenv("AIRFLOW_CONN_USAGE_DB", '{"conn_type": "sqlite", "host": "%s"}' % (tmp_path / "u.db"))

    bag = dag_bag(str(REPO / "example_dags" / "example_m3ter_ingest.py"))
    assert bag.import_errors == {}
    dag = bag.dags["example_m3ter_ingest"]
    assert {t.task_id for t in dag.tasks} == {
        "export_api_usage",
        "ingest_api_usage",
        "prepare_usage_db",
        "ingest_data_transfer",
    }
    ingest = dag.get_task("ingest_data_transfer")
    assert ingest.retries == 3
    # the example uses M3terRetryPolicy where Airflow has retry policies (3.3+)
    assert (getattr(ingest, "retry_policy", None) is not None) is RETRY_POLICY_SUPPORTED
    assert dag.catchup is False
